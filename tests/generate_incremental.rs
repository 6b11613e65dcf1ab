//! Generation gives exactly the tokens of full forward passes (CPU backend, small random models).
//!
//! * Incremental mode (LSTMs carry (h, c); the gated WaveNet keeps each block's past inputs in
//!   queues): after each greedy token, a model built for a window as long as the whole history,
//!   with the same parameters, run over that history, puts its maximum on that same token, and
//!   its logits equal the ones the generator chose from.
//! * Sliding-window mode (the simple WaveNet's only one): each token is the argmax of a forward
//!   pass over the last window, computed here in a batch of two windows (row 1), so the check
//!   does not share the generator's arena position.
//!
//! Tolerance: the full pass and the single steps compute the same sums in different shapes
//! (sgemm blocks, one row vs many), so logits agree to f32 rounding of sums of ~10 terms of size
//! ~1: 1e-5 absolute is ~100 ulp of headroom, far below the gaps between logits a real mistake
//! makes. When the top two full-pass logits are closer than that tolerance the argmax could
//! legitimately flip; the test asserts such near-ties do not occur, so it never passes vacuously.

mod common;

use etude::engine::cpu::CpuBackend;
use etude::engine::Backend;
use etude::generate::{generate_ids, Generator, Length, Mode};
use etude::model::any::{AnyModel, ModelConfig, Sizes};
use etude::data::dataset::Targets;
use etude::model::Model;
use etude::rng::Rng;
use etude::generate::sample::{argmax, SampleOptions};
use etude::music::tokens::Vocab;
use etude::run::Loaded;
use std::path::Path;

const V_TOKENS: usize = 15;
const WINDOW: usize = 8;
const GENERATED: usize = 30;
const TOL: f32 = 1e-5;
/// Factor on every initial weight (see [`loaded`]).
const SCALE: f32 = 3.0;

/// A vocabulary of `<unk>` and `V_TOKENS` tokens.
fn vocab() -> Vocab {
    let tokens: Vec<String> = (0..V_TOKENS).map(|i| format!("C{i}")).collect();
    Vocab::build(&[tokens], 1)
}

/// A randomly initialised `name` model (tiny sizes) wrapped as a loaded checkpoint.
fn loaded(b: &CpuBackend, name: &str, sizes: Sizes, seed: u64) -> Loaded {
    let vocab = vocab();
    let cfg = ModelConfig::from_name(name, vocab.len(), WINDOW, &sizes).unwrap();
    let mut model = AnyModel::new(b, &cfg, 1, WINDOW, &mut Rng::new(seed)).unwrap();
    // PyTorch's init gives a tiny model nearly constant, nearly uniform outputs, so greedy
    // generation repeats one token; larger weights make the choices depend on the history and
    // keep them far from ties.
    for p in model.params_mut() {
        let v: Vec<f32> = p.value.to_vec(b).iter().map(|x| x * SCALE).collect();
        p.value.set(b, &v);
    }
    let meta = common::test_meta("test", cfg, vocab, WINDOW);
    Loaded::from_model(b, &model, meta).unwrap()
}

/// `GENERATED` tokens after `prime` in `mode`, greedy or sampled (seeded); also returns the
/// logits each token was chosen from.
fn generate(b: &CpuBackend, l: &Loaded, mode: Mode, prime: &[u32], greedy: bool) -> (Vec<u32>, Vec<Vec<f32>>) {
    let opts = SampleOptions { greedy, top_p: 1.0, banned: vec![0], ..Default::default() };
    let mut gen = Generator::new(b, l, mode, Path::new("memory")).unwrap();
    assert_eq!(gen.mode(), mode);
    let ids = generate_ids(&mut gen, prime, Length::Tokens(GENERATED), &opts, &mut Rng::new(1), &|_| 0.0).unwrap();
    assert_eq!(ids.len(), GENERATED);
    // Replay the same choices through the step API to collect the logits.
    let mut gen = Generator::new(b, l, mode, Path::new("memory")).unwrap();
    gen.prime(prime).unwrap();
    let mut history = prime.to_vec();
    let mut logits = Vec::new();
    for &id in &ids {
        let row = gen.next_logits(&history);
        if greedy {
            assert_eq!(argmax(&row, &[0]) as u32, id, "the replay chose another token");
        }
        logits.push(row);
        history.push(id);
        gen.push(id).unwrap();
    }
    (ids, logits)
}

/// The logits of the token after `history[..n]`, from a forward pass of batch 2 over windows of
/// `window` tokens whose second row ends at `n` (the first row is filler).
fn full_pass(b: &CpuBackend, l: &Loaded, history: &[u32], n: usize, window: usize) -> Vec<f32> {
    let mut model = l.model(b, 2, window, Path::new("memory")).unwrap();
    let x: Vec<u32> = history[..window].iter().chain(&history[n - window..n]).copied().collect();
    let mut ids = b.alloc_ids(2 * window);
    b.write_ids(&mut ids, &x);
    model.forward(b, &ids, 2);
    let v = model.vocab();
    let row = match model.targets() {
        Targets::Last => 1,
        Targets::Every => 2 * window - 1,
    };
    b.read(&model.logits().buf, (row + 1) * v)[row * v..].to_vec()
}

/// Check every generated token against a full pass, for greedy generation (the token is the
/// full pass's argmax) and for seeded sampling (whose tokens vary, so the history matters):
/// `window_of(n)` is the window of the pass for a history of `n` tokens.
fn check_against_full_passes(
    name: &str,
    l: &Loaded,
    b: &CpuBackend,
    prime: &[u32],
    mode: Mode,
    window_of: &dyn Fn(usize) -> usize,
) {
    for greedy in [true, false] {
        let (ids, logits) = generate(b, l, mode, prime, greedy);
        let history: Vec<u32> = prime.iter().chain(&ids).copied().collect();
        if !greedy {
            let distinct: std::collections::BTreeSet<u32> = ids.iter().copied().collect();
            assert!(distinct.len() >= 3, "{name}: sampled output {ids:?} hardly varies, a weak test");
        }
        for (k, (&id, got)) in ids.iter().zip(&logits).enumerate() {
            let n = prime.len() + k;
            let full = full_pass(b, l, &history, n, window_of(n));
            let worst = full.iter().zip(got).map(|(a, c)| (a - c).abs()).fold(0.0f32, f32::max);
            assert!(worst <= TOL, "{name} (greedy {greedy}): token {k}: logits differ from the full pass by {worst}");
            if greedy {
                let mut sorted: Vec<f32> = full.iter().skip(1).copied().collect();
                sorted.sort_by(|a, c| c.total_cmp(a));
                assert!(
                    sorted[0] - sorted[1] > 2.0 * TOL,
                    "{name}: token {k}: a near-tie ({sorted:?}) makes the check moot"
                );
                assert_eq!(
                    argmax(&full, &[0]) as u32,
                    id,
                    "{name}: token {k} of {ids:?} is not the full pass's argmax"
                );
            }
        }
    }
}

fn lstm_sizes() -> Sizes {
    Sizes { embed: Some(5), hidden: Some(7), layers: Some(2), dense: Some(6), ..Default::default() }
}

/// A prime shorter than the window (incremental generation does not need a full one).
const SHORT_PRIME: [u32; 5] = [3, 1, 4, 1, 5];

#[test]
fn incremental_lstm_equals_full_passes() {
    let b = CpuBackend::new();
    let l = loaded(&b, "lstm", lstm_sizes(), 11);
    check_against_full_passes("lstm", &l, &b, &SHORT_PRIME, Mode::Incremental, &|n| n);
}

#[test]
fn incremental_lstm_seq_equals_full_passes() {
    let b = CpuBackend::new();
    let l = loaded(&b, "lstm-seq", lstm_sizes(), 12);
    check_against_full_passes("lstm-seq", &l, &b, &SHORT_PRIME, Mode::Incremental, &|n| n);
}

#[test]
fn incremental_wavenet_gated_equals_full_passes() {
    let b = CpuBackend::new();
    // Dilations 1, 2, 4: a receptive field of 8 tokens, the training window, so the history
    // outgrows both while generating.
    let sizes = Sizes { embed: Some(5), residual: Some(6), skip: Some(7), layers: Some(3), ..Default::default() };
    let l = loaded(&b, "wavenet-gated", sizes, 13);
    check_against_full_passes("wavenet-gated", &l, &b, &SHORT_PRIME, Mode::Incremental, &|n| n);
}

#[test]
fn a_gated_wavenet_reaching_past_its_window_generates_with_the_sliding_window() {
    let b = CpuBackend::new();
    // Dilations 1, 2, 4 over two stacks: a receptive field of 15 tokens over a window of 8. In
    // training the second stack's widest taps only ever read zeros; one step per token would feed
    // them real tokens.
    let sizes = Sizes { embed: Some(5), residual: Some(6), skip: Some(7), layers: Some(3), stacks: Some(2), ..Default::default() };
    let wide = loaded(&b, "wavenet-gated", sizes.clone(), 13);
    assert_eq!(Mode::Auto.resolve(&wide.meta.model), Ok(Mode::SlidingWindow));
    let err = Mode::Incremental.resolve(&wide.meta.model).unwrap_err();
    assert!(err.contains("receptive field (15 tokens)") && err.contains("window (8 tokens)"), "{err}");
    assert!(err.contains("--sliding-window"), "{err}");
    // One stack fits the window: incremental is the default.
    let one = loaded(&b, "wavenet-gated", Sizes { stacks: Some(1), ..sizes }, 13);
    assert_eq!(Mode::Auto.resolve(&one.meta.model), Ok(Mode::Incremental));
    // The wide model's sliding window equals a forward pass on the last window.
    let prime: Vec<u32> = (0..WINDOW as u32 + 3).map(|i| 1 + (i * 7) % V_TOKENS as u32).collect();
    check_against_full_passes("wavenet-gated sliding", &wide, &b, &prime, Mode::SlidingWindow, &|_| WINDOW);
}

#[test]
fn a_gated_wavenet_with_attention_generates_with_the_sliding_window() {
    let b = CpuBackend::new();
    // A receptive field of 8 = the window (incremental without heads), plus 2 attention heads.
    let sizes = Sizes {
        embed: Some(5),
        residual: Some(6),
        skip: Some(7),
        layers: Some(3),
        attention: Some(2),
        attention_dim: Some(3),
        ..Default::default()
    };
    let l = loaded(&b, "wavenet-gated", sizes, 16);
    assert_eq!(Mode::Auto.resolve(&l.meta.model), Ok(Mode::SlidingWindow));
    let err = Mode::Incremental.resolve(&l.meta.model).unwrap_err();
    assert!(err.contains("attention") && err.contains("--sliding-window") && !err.contains('\n'), "{err}");
    let err = Generator::new(&b, &l, Mode::Incremental, Path::new("memory")).err().expect("refused");
    assert!(err.contains("--sliding-window"), "{err}");
    let prime: Vec<u32> = (0..WINDOW as u32 + 3).map(|i| 1 + (i * 7) % V_TOKENS as u32).collect();
    check_against_full_passes("wavenet-gated attention", &l, &b, &prime, Mode::SlidingWindow, &|_| WINDOW);
}

#[test]
fn sliding_window_wavenet_equals_forward_on_the_last_window() {
    let b = CpuBackend::new();
    let sizes = Sizes { embed: Some(5), channels: Some(6), layers: Some(3), dense: Some(7), ..Default::default() };
    let l = loaded(&b, "wavenet", sizes, 14);
    let prime: Vec<u32> = (0..WINDOW as u32 + 3).map(|i| 1 + (i * 7) % V_TOKENS as u32).collect();
    check_against_full_passes("wavenet", &l, &b, &prime, Mode::SlidingWindow, &|_| WINDOW);
    // It has no incremental mode, and says so.
    let err = Generator::new(&b, &l, Mode::Incremental, Path::new("memory")).err().expect("refused");
    assert!(err.contains("--sliding-window"), "{err}");
}

#[test]
fn sliding_window_lstm_equals_forward_on_the_last_window() {
    let b = CpuBackend::new();
    let l = loaded(&b, "lstm", lstm_sizes(), 15);
    let prime: Vec<u32> = (0..WINDOW as u32).map(|i| 1 + (i * 5) % V_TOKENS as u32).collect();
    check_against_full_passes("lstm sliding", &l, &b, &prime, Mode::SlidingWindow, &|_| WINDOW);
}

/// `--seconds` decodes the piece at geometrically growing lengths, not every few tokens: the
/// tokens decoded in all are a small multiple of the piece's length (they were about n^2/16, 4.4 s
/// for 10k tokens), the piece is cut at the first token that reaches the length, and it is the
/// piece `--length` gives for as many tokens. A length over the cap is an error, not a silent cut.
#[test]
fn a_length_in_seconds_costs_linear_decoding() {
    let b = CpuBackend::new();
    let l = loaded(&b, "lstm", lstm_sizes(), 15);
    let opts = SampleOptions { greedy: false, temperature: 1.0, top_k: 0, top_p: 1.0, banned: Vec::new() };
    let decoded = std::cell::Cell::new(0usize);
    // A quarter of a second per token: 1000.1 s are reached by the 4001st token.
    let seconds_of = |ids: &[u32]| {
        decoded.set(decoded.get() + ids.len());
        ids.len() as f64 * 0.25
    };
    let mut gen = Generator::new(&b, &l, Mode::Incremental, Path::new("test")).unwrap();
    let ids = generate_ids(&mut gen, &SHORT_PRIME, Length::Seconds(1000.1), &opts, &mut Rng::new(3), &seconds_of).unwrap();
    assert_eq!(ids.len(), 4001, "cut at the first token that reaches the length");
    assert!(decoded.get() < 20 * ids.len(), "{} tokens decoded for a piece of {}", decoded.get(), ids.len());
    let mut gen = Generator::new(&b, &l, Mode::Incremental, Path::new("test")).unwrap();
    let same = generate_ids(&mut gen, &SHORT_PRIME, Length::Tokens(4001), &opts, &mut Rng::new(3), &|_| 0.0).unwrap();
    assert_eq!(ids, same, "the checks do not change the tokens drawn");
    let mut gen = Generator::new(&b, &l, Mode::Incremental, Path::new("test")).unwrap();
    let too_long = Length::Tokens(etude::generate::MAX_TOKENS + 1);
    let err = generate_ids(&mut gen, &SHORT_PRIME, too_long, &opts, &mut Rng::new(3), &|_| 0.0).unwrap_err();
    assert!(err.contains("--length") && err.contains("100000"), "{err}");
}
