//! The piano-roll models with the NADE head (issue 27, `src/model/roll_nade.rs`,
//! `src/layers/nade.rs`): every parameter's gradient of the exact NLL against central finite
//! differences of a float64 NLL (CPU, both sequence models, with and without dropout), the GPU
//! against the CPU on the same weights and batch, the host-side sampler's distribution against the
//! op's loss, `--max-keys`, and the checkpoint metadata (a sigmoid model's is unchanged; one
//! without a head loads as sigmoid); then train, eval and generate through the binary.

mod common;
#[path = "cli_common/mod.rs"]
mod cli_common;

use common::gpu;
use etude::data::roll::{to_json_gz, Frame, KEYS};
use etude::engine::cpu::CpuBackend;
use etude::engine::roll::RollOps;
use etude::engine::{Backend, Bce, Dropout};
use etude::model::roll::{RollConfig, RollModel};
use etude::model::roll_nade::{build_headed, NadeFrame, RollHead};
use etude::rng::Rng;
use etude::train::roll::{make_batch, Batch, RollMeta, RollTrainSettings, MODE};

const HEAD: RollHead = RollHead::Nade { hidden: 6 };

/// A model whose `nade.v` (zero at initialisation) is random, so every gradient flows.
fn model<B: RollOps + 'static>(b: &B, cfg: &RollConfig, cap: usize) -> Box<dyn RollModel<B>> {
    let mut m = build_headed(b, cfg, HEAD, cap, &mut Rng::new(3));
    let mut rng = Rng::new(77);
    for p in m.params_mut() {
        if p.name == "nade.v" {
            let v: Vec<f32> = (0..p.value.len()).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
            p.value.set(b, &v);
        }
    }
    m
}

/// The summed weighted NLL of a batch through `loss` (with the backward when asked).
fn loss<B: RollOps>(b: &B, m: &mut dyn RollModel<B>, batch: &Batch, backward: bool) -> f64 {
    let n = batch.batch * batch.time;
    let mut ids = b.alloc_ids(batch.ids.len());
    b.write_ids(&mut ids, &batch.ids);
    let (mut y, mut w) = (b.alloc(n * KEYS), b.alloc(n));
    b.write(&mut y, &batch.y);
    b.write(&mut w, &batch.w);
    let (mut d, mut st) = (b.alloc(n * KEYS), b.alloc_f32(n));
    m.forward(b, &ids, batch.slots, batch.batch, batch.time);
    m.loss(b, &y, &w, &mut d, &mut st, Bce { n, k: KEYS, grad_scale: if backward { 1.0 } else { 0.0 } });
    if backward {
        m.backward(b, &ids, batch.slots, &d, batch.batch, batch.time);
    }
    b.read(&st, n).iter().map(|&v| v as f64).sum()
}

/// The same NLL in float64 from the head's biases and weights (so that f32 rounding of the
/// ~rows x 88 x ln 2 total does not swamp the finite differences).
fn nll_f64(b: &CpuBackend, m: &mut dyn RollModel<CpuBackend>, batch: &Batch) -> f64 {
    let mut ids = b.alloc_ids(batch.ids.len());
    b.write_ids(&mut ids, &batch.ids);
    m.forward(b, &ids, batch.slots, batch.batch, batch.time);
    let mut total = 0.0;
    for row in 0..batch.batch * batch.time {
        if batch.w[row] == 0.0 {
            continue;
        }
        let f = m.joint_frames(b, &[row]).expect("a NADE model").remove(0);
        let hn = f.bh.len();
        let mut a: Vec<f64> = f.bh.iter().map(|&x| x as f64).collect();
        for i in 0..KEYS {
            let x = f.bv[i] as f64 + (0..hn).map(|c| f.v[i * hn + c] as f64 / (1.0 + (-a[c]).exp())).sum::<f64>();
            let y = batch.y[row * KEYS + i] as f64;
            total += batch.w[row] as f64 * (x.max(0.0) - x * y + (-x.abs()).exp().ln_1p());
            for (a, &w) in a.iter_mut().zip(&f.w[i * hn..][..hn]) {
                *a += y * w as f64;
            }
        }
    }
    total
}

#[test]
fn gradients_match_finite_differences() {
    let c = CpuBackend::new();
    for cfg in common::tiny_roll_configs() {
        let mut rng = Rng::new(11);
        let seqs = common::random_frames(&mut rng, &[6, 4, 2]);
        let items: Vec<&[Frame]> = seqs.iter().map(|s| s.as_slice()).collect();
        let batch = make_batch(&items);
        for dropout in [0.0f32, 0.3] {
            let mut m = model(&c, &cfg, 32);
            m.set_dropout((dropout > 0.0).then_some(Dropout { p: dropout, seed: 5, step: 2 }));
            for p in m.params_mut() {
                let n = p.grad.len();
                c.fill(&mut p.grad.buf, n, 0.0);
            }
            let lossv = loss(&c, m.as_mut(), &batch, true);
            let exact = nll_f64(&c, m.as_mut(), &batch);
            assert!((lossv - exact).abs() <= 1e-5 * exact, "{}: loss {lossv} float64 {exact}", cfg.name());
            let grads: Vec<Vec<f32>> = m.params().iter().map(|p| p.grad.buf.to_vec()).collect();
            let names: Vec<String> = m.params().iter().map(|p| p.name.clone()).collect();
            assert_eq!(&names[..4], &["nade.hidden.weight", "nade.hidden.bias", "nade.w", "nade.v"]);
            for (pi, g) in grads.iter().enumerate() {
                let len = g.len();
                for i in (0..6).map(|j| (j * 7919 + pi * 31) % len) {
                    let h = 1e-2f32;
                    let orig = m.params()[pi].value.buf[i];
                    m.params_mut()[pi].value.buf[i] = orig + h;
                    let up = nll_f64(&c, m.as_mut(), &batch);
                    m.params_mut()[pi].value.buf[i] = orig - h;
                    let down = nll_f64(&c, m.as_mut(), &batch);
                    m.params_mut()[pi].value.buf[i] = orig;
                    let num = (up - down) / (2.0 * h as f64);
                    let tol = 2e-3 + 5e-3 * num.abs();
                    assert!((g[i] as f64 - num).abs() <= tol, "{} dropout {dropout} {}[{i}]: analytic {} numeric {num}", cfg.name(), names[pi], g[i]);
                }
            }
        }
    }
}

#[test]
fn gpu_matches_cpu_forward_and_backward() {
    let (c, g) = (CpuBackend::new(), gpu());
    for cfg in common::tiny_roll_configs() {
        let mut rng = Rng::new(12);
        let seqs = common::random_frames(&mut rng, &[70, 33, 5]);
        let items: Vec<&[Frame]> = seqs.iter().map(|s| s.as_slice()).collect();
        let batch = make_batch(&items);
        let (mut mc, mut mg) = (model(&c, &cfg, 256), model(g, &cfg, 256));
        let lc = loss(&c, mc.as_mut(), &batch, true);
        let lg = loss(g, mg.as_mut(), &batch, true);
        common::assert_gpu_matches_cpu(cfg.name(), (lc, lg), &c, &mc.params(), g, &mg.params());
    }
}

#[test]
fn the_sampler_draws_from_the_distribution_the_loss_scores() {
    // A 3-key NADE: the sampler's frequencies of the 8 frames against exp(-nll).
    let mut rng = Rng::new(5);
    let hn = 4;
    let r = |rng: &mut Rng, n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform_range(-2.0, 2.0)).collect() };
    let f = NadeFrame { bh: r(&mut rng, hn), bv: r(&mut rng, 3), w: r(&mut rng, 3 * hn), v: r(&mut rng, 3 * hn) };
    let frames: Vec<Frame> = (0..8u8).map(|m| (0..3u8).filter(|i| m >> i & 1 == 1).collect()).collect();
    let p: Vec<f64> = frames.iter().map(|fr| (-f.nll(fr)).exp()).collect();
    assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{p:?}");
    let draws = 40_000;
    let mut count = [0usize; 8];
    for _ in 0..draws {
        let s = f.sample(1.0, 0, &mut rng);
        count[frames.iter().position(|fr| *fr == s).unwrap()] += 1;
    }
    for m in 0..8 {
        let freq = count[m] as f64 / draws as f64;
        // 5 standard deviations of a binomial frequency
        let sd = (p[m] * (1.0 - p[m]) / draws as f64).sqrt();
        assert!((freq - p[m]).abs() <= 5.0 * sd + 1e-4, "frame {:?}: drawn {freq} p {}", frames[m], p[m]);
    }
    // --max-keys: at most N on, the lowest keys first
    let all_on = NadeFrame { bh: vec![0.0; hn], bv: vec![30.0; 88], w: vec![0.0; 88 * hn], v: vec![0.0; 88 * hn] };
    assert_eq!(all_on.sample(1.0, 3, &mut rng), vec![0, 1, 2]);
    assert_eq!(all_on.sample(1.0, 0, &mut rng).len(), 88);
}

#[test]
fn metadata_of_a_sigmoid_model_is_unchanged_and_old_checkpoints_load_as_sigmoid() {
    let cfg = RollConfig::Lstm { embed: 4, hidden: 3, layers: 1 };
    let meta = |head| RollMeta {
        mode: MODE.into(),
        config: cfg.clone(),
        settings: RollTrainSettings::for_test(),
        frame_quarters: 0.5,
        data: "x".into(),
        epoch: 1,
        valid_nll: None,
        params: 1,
        head,
    };
    let sig = serde_json::to_value(meta(RollHead::Sigmoid)).unwrap();
    assert!(sig.get("head").is_none(), "{sig}");
    let back: RollMeta = serde_json::from_value(sig).unwrap();
    assert_eq!(back.head, RollHead::Sigmoid);
    let nade = serde_json::to_value(meta(RollHead::Nade { hidden: 7 })).unwrap();
    assert_eq!(nade["head"], serde_json::json!({"head": "nade", "hidden": 7}));
    assert_eq!(serde_json::from_value::<RollMeta>(nade).unwrap().head, RollHead::Nade { hidden: 7 });
    // and the head's parameter count
    let c = CpuBackend::new();
    for cfg in common::tiny_roll_configs() {
        let m = build_headed(&c, &cfg, HEAD, 4, &mut Rng::new(0));
        let n: usize = m.params().iter().map(|p| p.value.len()).sum();
        assert_eq!(n, cfg.n_params() + HEAD.extra_params(&cfg), "{cfg:?}");
    }
}

#[test]
fn train_eval_and_generate_with_the_nade_head_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = Rng::new(2);
    let (train, valid) = (cli_common::random_roll_split(&mut rng, 10), cli_common::random_roll_split(&mut rng, 4));
    let data = d.join("toy.pianoroll.json.gz");
    std::fs::write(&data, to_json_gz(&[("train", &train[..]), ("valid", &valid[..])])).unwrap();
    let data = data.display().to_string();
    for model in ["lstm", "wavenet-gated"] {
        let out = d.join(format!("run-{model}")).display().to_string();
        let sizes: &[&str] = if model == "lstm" { &["--embed", "8", "--hidden", "8"] } else { &["--residual", "8", "--skip", "8", "--layers", "3"] };
        let mut args = vec!["train", "--data", &data, "--model", model, "--epochs", "2", "--batch", "4", "--backend", "cpu", "--out", &out];
        args.extend_from_slice(sizes);
        args.extend_from_slice(&["--head", "nade", "--nade-hidden", "5"]);
        let (_, err) = cli_common::etude_ok(&args, d);
        assert!(err.contains("NADE head of 5") && err.contains("epoch 2/2"), "{err}");
        let ck = format!("{out}/best.safetensors");
        let (json, _) = cli_common::etude_ok(&["eval", "--model", &ck, "--data", &data, "--split", "valid", "--json", "--backend", "cpu"], d);
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        let best = std::fs::read_to_string(format!("{out}/metrics.csv")).unwrap();
        let best: f64 = best.lines().skip(1).map(|l| l.split(',').nth(2).unwrap().parse::<f64>().unwrap()).fold(f64::INFINITY, f64::min);
        assert!((v["nll_per_frame"].as_f64().unwrap() - best).abs() < 1e-9, "eval {v} against the run's best {best}");
        let mid = d.join(format!("{model}.mid")).display().to_string();
        let (text, _) = cli_common::etude_ok(&["generate", "--model", &ck, "--length", "24", "--max-keys", "2", "--out", &mid, "--backend", "cpu"], d);
        assert!(text.contains("24 frames"), "{text}");
    }
    // the head's options are refused where they do not apply
    cli_common::etude_fails(&["train", "--data", &data, "--nade-hidden", "4", "--out", "x"], d, &["--nade-hidden applies to --head nade"]);
}
