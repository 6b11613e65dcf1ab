//! A batch of pieces equals the same pieces generated one by one (issue 30).
//!
//! For every token model and each of its generation modes, five pieces with different primes
//! and sampling streams are generated as one batch and then one at a time with a generator of
//! one piece. On the CPU the logits of every step must be equal bit for bit, and so must the
//! tokens drawn (through [`generate_batch`] against [`generate_ids`], the functions `etude
//! generate` uses), including pieces that end early (a length in seconds). On the GPU (lavapipe)
//! the logits must agree to float tolerance.
//!
//! Piano-roll checkpoints (the sigmoid and the NADE head) are checked through the binary: the
//! pieces of `generate --count 3 --seed 5` are the files `--seed 5`, `6` and `7` write alone.
//!
//! The models are small random ones with weights scaled up (as in `tests/generate_incremental.rs`)
//! so that their outputs depend on the history; the products have 5 rows in the batch and 1
//! alone, so without rows computed alone ([`Backend::set_rows_alone`]) the CPU's blocked sgemm
//! (fused multiply-adds, another order) would give other bits (checked below: it does).

mod common;
#[path = "cli_common/mod.rs"]
mod cli_common;

use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::Backend;
use etude::generate::sample::{sample, SampleOptions};
use etude::generate::{generate_batch, generate_ids, Generator, Length, Mode};
use etude::model::any::{AnyModel, ModelConfig, Sizes};
use etude::model::Model;
use etude::music::tokens::Vocab;
use etude::rng::Rng;
use etude::run::Loaded;
use std::path::Path;

const WINDOW: usize = 8;
const PIECES: usize = 5;
const STEPS: usize = 24;
const SCALE: f32 = 3.0;

fn vocab() -> Vocab {
    let tokens: Vec<String> = (0..13).map(|i| format!("C{i}")).collect();
    Vocab::build(&[tokens], 1)
}

/// A random `name` model with `sizes`, weights scaled by [`SCALE`], as a loaded checkpoint.
fn loaded<B: Backend>(b: &B, name: &str, sizes: Sizes, seed: u64) -> Loaded {
    let vocab = vocab();
    let cfg = ModelConfig::from_name(name, vocab.len(), WINDOW, &sizes).unwrap();
    let mut model = AnyModel::new(b, &cfg, 1, WINDOW, &mut Rng::new(seed)).unwrap();
    for p in model.params_mut() {
        let v: Vec<f32> = p.value.to_vec(b).iter().map(|x| x * SCALE).collect();
        p.value.set(b, &v);
    }
    Loaded::from_model(b, &model, common::test_meta("test", cfg, vocab, WINDOW)).unwrap()
}

/// Every token model with small sizes, and the modes it generates in.
fn models() -> Vec<(&'static str, Sizes, Vec<Mode>)> {
    let lstm = Sizes { embed: Some(6), hidden: Some(12), layers: Some(2), dense: Some(10), ..Default::default() };
    let both = vec![Mode::Incremental, Mode::SlidingWindow];
    vec![
        ("lstm", lstm.clone(), both.clone()),
        ("lstm-seq", lstm, both.clone()),
        ("wavenet", Sizes { embed: Some(6), channels: Some(8), layers: Some(3), ..Default::default() }, vec![Mode::SlidingWindow]),
        (
            "wavenet-gated",
            Sizes { embed: Some(6), residual: Some(8), skip: Some(10), layers: Some(3), ..Default::default() },
            both.clone(),
        ),
        (
            "wavenet-gated",
            Sizes { embed: Some(6), residual: Some(8), skip: Some(10), layers: Some(3), attention: Some(2), attention_dim: Some(4), ..Default::default() },
            vec![Mode::SlidingWindow],
        ),
        ("transformer", Sizes { width: Some(16), heads: Some(2), ff: Some(24), layers: Some(2), ..Default::default() }, both),
    ]
}

/// `PIECES` primes of one window each.
fn primes(seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(seed);
    (0..PIECES).map(|_| (0..WINDOW).map(|_| 1 + rng.below(12) as u32).collect()).collect()
}

fn sampling() -> SampleOptions {
    SampleOptions { top_p: 0.95, banned: vec![0], ..Default::default() }
}

/// The logits of every step of each piece and the tokens drawn, the pieces in one batch
/// (`batched`) or one generator of one piece each.
fn logits_and_tokens<B: Backend>(b: &B, l: &Loaded, mode: Mode, primes: &[Vec<u32>], batched: bool) -> (Vec<Vec<f32>>, Vec<Vec<u32>>) {
    let v = l.meta.vocab.len();
    let opts = sampling();
    let mut logits = vec![Vec::new(); primes.len()];
    let mut histories = primes.to_vec();
    let mut rngs: Vec<Rng> = (0..primes.len()).map(|i| Rng::new(100 + i as u64)).collect();
    let groups: Vec<Vec<usize>> = if batched { vec![(0..primes.len()).collect()] } else { (0..primes.len()).map(|i| vec![i]).collect() };
    for group in groups {
        let mut gen = Generator::batched(b, l, mode, Path::new("memory"), group.len()).unwrap();
        assert_eq!(gen.mode(), mode);
        let ps: Vec<Vec<u32>> = group.iter().map(|&i| primes[i].clone()).collect();
        gen.prime_all(&ps).unwrap();
        for _ in 0..STEPS {
            let views: Vec<&[u32]> = group.iter().map(|&i| histories[i].as_slice()).collect();
            let rows = gen.next_logits_all(&views);
            let mut ids = Vec::new();
            for (&i, row) in group.iter().zip(rows.chunks_exact(v)) {
                logits[i].extend_from_slice(row);
                let id = sample(row, &opts, &mut rngs[i]) as u32;
                histories[i].push(id);
                ids.push(id);
            }
            gen.push_all(&ids).unwrap();
        }
    }
    (logits, histories)
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn on_the_cpu_a_batch_equals_its_pieces_one_by_one_bit_for_bit() {
    let b = CpuBackend::new();
    for (seed, (name, sizes, modes)) in models().into_iter().enumerate() {
        let l = loaded(&b, name, sizes, 40 + seed as u64);
        let primes = primes(seed as u64);
        for mode in modes {
            let (alone, alone_tokens) = logits_and_tokens(&b, &l, mode, &primes, false);
            let (together, together_tokens) = logits_and_tokens(&b, &l, mode, &primes, true);
            for i in 0..PIECES {
                assert_eq!(bits(&together[i]), bits(&alone[i]), "{name} {mode:?}: piece {i}'s logits differ in a batch");
            }
            assert_eq!(together_tokens, alone_tokens, "{name} {mode:?}");
            // The pieces differ from each other (so the check compares something).
            assert_ne!(together_tokens[0][WINDOW..], together_tokens[1][WINDOW..], "{name} {mode:?}: pieces 0 and 1 are the same");
        }
    }
}

/// Pieces of a length in seconds end at different steps: each leaves the batch while the others
/// go on, and each is still the piece generated alone, through the functions `etude generate` uses.
#[test]
fn pieces_that_end_early_leave_the_batch_and_each_equals_its_piece_alone() {
    let b = CpuBackend::new();
    // "Seconds" = a sum of a positive weight per token over 10 (it never decreases as a piece
    // grows, as a real duration): the pieces reach 10 at different steps.
    let seconds_of = |ids: &[u32]| ids.iter().map(|&t| (t * t) % 17 + 1).sum::<u32>() as f64 / 10.0;
    let length = Length::Seconds(10.0);
    for (seed, (name, sizes, modes)) in models().into_iter().enumerate() {
        let l = loaded(&b, name, sizes, 40 + seed as u64);
        let primes = primes(10 + seed as u64);
        for mode in modes {
            let mut rngs: Vec<Rng> = (0..PIECES).map(|i| Rng::new(7 + i as u64)).collect();
            let mut gen = Generator::batched(&b, &l, mode, Path::new("memory"), PIECES).unwrap();
            let together = generate_batch(&mut gen, &primes, length, &sampling(), &mut rngs, &seconds_of).unwrap();
            drop(gen);
            let mut lengths = Vec::new();
            for (i, prime) in primes.iter().enumerate() {
                let mut gen = Generator::new(&b, &l, mode, Path::new("memory")).unwrap();
                let alone = generate_ids(&mut gen, prime, length, &sampling(), &mut Rng::new(7 + i as u64), &seconds_of).unwrap();
                assert_eq!(together[i], alone, "{name} {mode:?}: piece {i}");
                let before = seconds_of(&alone[..alone.len() - 1]);
                assert!(seconds_of(&alone) >= 10.0 && before < 10.0, "{name} {mode:?}: piece {i} ends at the first token past 10");
                lengths.push(alone.len());
            }
            lengths.sort_unstable();
            lengths.dedup();
            assert!(lengths.len() > 1, "{name} {mode:?}: every piece ended at the same step ({lengths:?}): {together:?}");
        }
    }
}

/// Without rows computed alone the CPU's products of 5 rows differ from those of 1 in their last
/// bits, which is what the tests above would catch.
#[test]
fn without_rows_alone_a_batch_of_products_differs_from_rows_one_by_one() {
    let b = CpuBackend::new();
    let (m, k, n) = (PIECES, 24, 40);
    let mut rng = Rng::new(3);
    let a: Vec<f32> = (0..m * k).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
    let w: Vec<f32> = (0..n * k).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
    let product = |rows_alone: bool| {
        b.set_rows_alone(rows_alone);
        let (abuf, wbuf) = (CpuBuf::from(&a[..]), CpuBuf::from(&w[..]));
        let mut batch = b.alloc(m * n);
        let mm = |m| etude::engine::MatMul { m, k, n, trans_a: false, trans_b: true, accumulate: false };
        b.matmul(&abuf, &wbuf, &mut batch, mm(m));
        let mut alone = Vec::new();
        for i in 0..m {
            let row = CpuBuf::from(&a[i * k..(i + 1) * k]);
            let mut c = b.alloc(n);
            b.matmul(&row, &wbuf, &mut c, mm(1));
            alone.extend(b.read(&c, n));
        }
        b.set_rows_alone(false);
        (b.read(&batch, m * n), alone)
    };
    let (batch, alone) = product(true);
    assert_eq!(bits(&batch), bits(&alone));
    let (batch, alone) = product(false);
    assert_ne!(bits(&batch), bits(&alone), "the blocked product happened to give the one-row bits");
    let worst = batch.iter().zip(&alone).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(worst < 1e-5, "but they are the same product: {worst}");
}

/// On the GPU the batch's logits equal its pieces' one by one to float tolerance (the tokens are
/// drawn from the batch's logits, so they are the same tokens in both runs unless a draw falls
/// within 1e-5 of a boundary: none does here, the check below would say).
#[test]
fn on_the_gpu_a_batch_equals_its_pieces_one_by_one_to_float_tolerance() {
    let g = common::gpu();
    for (seed, (name, sizes, modes)) in models().into_iter().enumerate() {
        let l = loaded(g, name, sizes, 40 + seed as u64);
        let primes = primes(seed as u64);
        for mode in modes {
            let (alone, alone_tokens) = logits_and_tokens(g, &l, mode, &primes, false);
            let (together, together_tokens) = logits_and_tokens(g, &l, mode, &primes, true);
            assert_eq!(together_tokens, alone_tokens, "{name} {mode:?}: a draw flipped");
            for i in 0..PIECES {
                let worst = together[i].iter().zip(&alone[i]).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
                assert!(worst <= 1e-4, "{name} {mode:?}: piece {i}'s logits differ by {worst}");
            }
        }
    }
}

/// Generating with an LSTM never packs its `W_hh` again after the first step (once per layer and
/// panel width): the weights do not change while composing.
#[test]
fn lstm_generation_never_repacks_w_hh() {
    let b = CpuBackend::new();
    let (name, sizes, _) = models().into_iter().next().unwrap();
    let l = loaded(&b, name, sizes, 40);
    let mut gen = Generator::batched(&b, &l, Mode::Incremental, Path::new("memory"), PIECES).unwrap();
    gen.prime_all(&primes(0)).unwrap();
    let after_prime = b.packs_made();
    assert!(after_prime >= 2, "two layers, packed at least once each: {after_prime}");
    for step in 0..STEPS {
        gen.push_all(&[(step % 12 + 1) as u32; PIECES]).unwrap();
    }
    assert_eq!(b.packs_made(), after_prime, "generation packed W_hh again");
}

/// Piano-roll checkpoints compose `--count` pieces in a batch, each the file its seed writes
/// alone, byte for byte (the LSTM with 88 sigmoids, the conv model with the NADE head), on the CPU.
#[test]
fn piano_roll_pieces_in_a_batch_are_their_seeds_pieces_alone() {
    roll_batch_equals_pieces_alone("cpu");
}

/// The same on the GPU (lavapipe here): every row of the GPU's products, of its convolutions and of
/// the NADE kernel (one workgroup per row) is computed alike whatever the batch, so the pieces are
/// equal byte for byte there too; a logit that differed in its last bit could flip a key whose
/// uniform draw fell within that bit of its probability, which did not happen here.
#[test]
fn on_the_gpu_piano_roll_pieces_in_a_batch_are_their_seeds_pieces_alone() {
    roll_batch_equals_pieces_alone("gpu");
}

fn roll_batch_equals_pieces_alone(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = Rng::new(4);
    let (train, valid) = (cli_common::random_roll_split(&mut rng, 10), cli_common::random_roll_split(&mut rng, 4));
    let data = d.join("toy.pianoroll.json.gz");
    std::fs::write(&data, etude::data::roll::to_json_gz(&[("train", &train[..]), ("valid", &valid[..])])).unwrap();
    let data = data.display().to_string();
    let runs: [(&str, &[&str]); 2] = [
        ("lstm", &["--embed", "8", "--hidden", "8"]),
        ("wavenet-gated", &["--residual", "8", "--skip", "8", "--layers", "3", "--head", "nade", "--nade-hidden", "5"]),
    ];
    for (model, sizes) in runs {
        let out = d.join(format!("run-{model}")).display().to_string();
        let mut args = vec!["train", "--data", &data, "--model", model, "--epochs", "1", "--batch", "4", "--backend", "cpu", "--out", &out];
        args.extend_from_slice(sizes);
        cli_common::etude_ok(&args, d);
        let ck = format!("{out}/best.safetensors");
        let gen = |seed: &str, count: &str, name: &str| {
            let mid = d.join(format!("{model}-{name}.mid")).display().to_string();
            let args = ["generate", "--model", &ck, "--length", "20", "--seed", seed, "--count", count, "--out", &mid, "--backend", backend];
            cli_common::etude_ok(&args, d);
        };
        gen("5", "3", "batch");
        let mut pieces = Vec::new();
        for (i, seed) in ["5", "6", "7"].into_iter().enumerate() {
            gen(seed, "1", &format!("alone{seed}"));
            let alone = std::fs::read(d.join(format!("{model}-alone{seed}.mid"))).unwrap();
            let batched = std::fs::read(d.join(format!("{model}-batch-{}.mid", i + 1))).unwrap();
            assert_eq!(batched, alone, "{model} on the {backend}: piece {} of the batch against --seed {seed} alone", i + 1);
            pieces.push(alone);
        }
        assert!(pieces[0] != pieces[1] || pieces[1] != pieces[2], "{model}: the three seeds wrote one piece");
    }
}

/// Rows alone is on while any generator lives: a second generator on the same backend, made and
/// dropped while the first composes, leaves it on for the first (whose batch still equals its
/// pieces one by one, bit for bit).
#[test]
fn rows_alone_stays_on_while_any_generator_lives() {
    let b = CpuBackend::new();
    let (name, sizes, _) = models().into_iter().last().unwrap();
    let l = loaded(&b, name, sizes, 45);
    let ps = primes(3);
    let (alone, _) = logits_and_tokens(&b, &l, Mode::Incremental, &ps, false);
    let v = l.meta.vocab.len();
    let mut gen = Generator::batched(&b, &l, Mode::Incremental, Path::new("memory"), PIECES).unwrap();
    drop(Generator::batched(&b, &l, Mode::Incremental, Path::new("memory"), 1).unwrap());
    gen.prime_all(&ps).unwrap();
    let mut rngs: Vec<Rng> = (0..PIECES).map(|i| Rng::new(100 + i as u64)).collect();
    let mut histories = ps.clone();
    let mut together = vec![Vec::new(); PIECES];
    for _ in 0..STEPS {
        let views: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
        let rows = gen.next_logits_all(&views);
        let mut ids = Vec::new();
        for (i, row) in rows.chunks_exact(v).enumerate() {
            together[i].extend_from_slice(row);
            let id = sample(row, &sampling(), &mut rngs[i]) as u32;
            histories[i].push(id);
            ids.push(id);
        }
        gen.push_all(&ids).unwrap();
    }
    for i in 0..PIECES {
        assert_eq!(bits(&together[i]), bits(&alone[i]), "piece {i}");
    }
}
