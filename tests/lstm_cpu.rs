//! The CPU LSTM recurrence (`lstm_fwd` / `lstm_bwd`) against a plain per-step implementation and
//! against central finite differences of a whole layer (input projection included), and the LSTM
//! models' one-step inference against their full-window forward.
mod common;

use common::{numeric_grad, random_vec};
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::{Backend, Lstm, LstmSaved, LstmSeqs, MatMul};
use etude::model::lstm::{LstmConfig, LstmModel};
use etude::model::Model;
use etude::rng::Rng;

/// (batch, time, input width, hidden): batch 1, T = 1, H not a multiple of 4 or 8, and a batch
/// that the CPU splits into uneven per-thread chunks.
const SHAPES: [(usize, usize, usize, usize); 6] = [(1, 1, 3, 5), (1, 4, 2, 3), (2, 3, 4, 5), (3, 5, 2, 7), (5, 2, 3, 4), (2, 6, 1, 9)];

fn sig(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The textbook LSTM, one batch row and one step at a time, in f64:
/// returns (hs, cs) [batch, time, H].
fn naive_lstm(xw: &[f32], w_hh: &[f32], h0: &[f32], c0: &[f32], batch: usize, time: usize, h: usize) -> (Vec<f64>, Vec<f64>) {
    let mut hs = vec![0.0; batch * time * h];
    let mut cs = vec![0.0; batch * time * h];
    for b in 0..batch {
        let mut hp: Vec<f64> = h0[b * h..(b + 1) * h].iter().map(|&v| v as f64).collect();
        let mut cp: Vec<f64> = c0[b * h..(b + 1) * h].iter().map(|&v| v as f64).collect();
        for t in 0..time {
            let mut a = vec![0.0f64; 4 * h];
            for (gi, a) in a.iter_mut().enumerate() {
                *a = xw[(b * time + t) * 4 * h + gi] as f64;
                for j in 0..h {
                    *a += w_hh[gi * h + j] as f64 * hp[j];
                }
            }
            for j in 0..h {
                let i = sig(a[j]);
                let f = sig(a[h + j]);
                let g = a[2 * h + j].tanh();
                let o = sig(a[3 * h + j]);
                cp[j] = f * cp[j] + i * g;
                hp[j] = o * cp[j].tanh();
                hs[(b * time + t) * h + j] = hp[j];
                cs[(b * time + t) * h + j] = cp[j];
            }
        }
    }
    (hs, cs)
}

#[test]
fn forward_matches_a_plain_per_step_lstm() {
    let be = CpuBackend::new();
    for (s, &(batch, time, _, h)) in SHAPES.iter().enumerate() {
        let seed = 100 + s as u64;
        // Pre-activations of size ~2 and weights ~0.5 drive the gates through their whole range.
        let xw: CpuBuf = random_vec(seed, batch * time * 4 * h).iter().map(|v| 2.0 * v).collect();
        let w_hh: CpuBuf = random_vec(seed + 1, 4 * h * h).iter().map(|v| 0.5 * v).collect();
        let h0 = random_vec(seed + 2, batch * h);
        let c0 = random_vec(seed + 3, batch * h);
        let n = batch * time * h;
        // Buffers longer than needed, as an arena would pass them.
        let (mut hs, mut cs, mut gates) = (CpuBuf::filled(n + 3, 9.0), CpuBuf::filled(n + 3, 9.0), CpuBuf::filled(4 * n + 3, 9.0));
        be.lstm_fwd(&xw, &w_hh, &h0, &c0, LstmSeqs { hs: &mut hs, cs: &mut cs, gates: &mut gates }, Lstm { batch, time, hidden: h });
        let (want_h, want_c) = naive_lstm(&xw, &w_hh, &h0, &c0, batch, time, h);
        // f32 evaluation of O(1) values through at most 6 steps: rounding stays below 1e-6;
        // 1e-5 is a wide margin that still catches any wrong index or gate.
        for i in 0..n {
            assert!((hs[i] as f64 - want_h[i]).abs() < 1e-5, "shape {:?}: h[{i}] {} vs {}", SHAPES[s], hs[i], want_h[i]);
            assert!((cs[i] as f64 - want_c[i]).abs() < 1e-5, "shape {:?}: c[{i}] {} vs {}", SHAPES[s], cs[i], want_c[i]);
        }
        assert_eq!(hs[n], 9.0, "wrote past the end of hs");
        // The stored gates are the activated ones: i, f, o in (0, 1), g in (-1, 1), and
        // o * tanh(c) reproduces h.
        for b in 0..batch {
            for t in 0..time {
                for j in 0..h {
                    let g = &gates[(b * time + t) * 4 * h..][..4 * h];
                    for k in [j, h + j, 3 * h + j] {
                        assert!(g[k] > 0.0 && g[k] < 1.0);
                    }
                    let at = (b * time + t) * h + j;
                    assert!((g[3 * h + j] * cs[at].tanh() - hs[at]).abs() < 1e-6);
                }
            }
        }
    }
}

/// A whole layer as the models run it: `xw = x W_ih^T + b_ih + b_hh` (one matmul, two bias adds),
/// then the recurrence. Returns hs [batch, time, H].
struct Layer {
    batch: usize,
    time: usize,
    inp: usize,
    h: usize,
    x: CpuBuf,
    w_ih: CpuBuf,
    w_hh: CpuBuf,
    b_ih: CpuBuf,
    b_hh: CpuBuf,
    h0: CpuBuf,
    c0: CpuBuf,
}

struct Saved {
    hs: CpuBuf,
    cs: CpuBuf,
    gates: CpuBuf,
}

impl Layer {
    fn dims(&self) -> Lstm {
        Lstm { batch: self.batch, time: self.time, hidden: self.h }
    }

    fn forward(&self, be: &CpuBackend) -> Saved {
        let (n, h) = (self.batch * self.time, self.h);
        let mut xw = CpuBuf::zeros(n * 4 * h);
        be.matmul(&self.x, &self.w_ih, &mut xw, MatMul { m: n, k: self.inp, n: 4 * h, trans_a: false, trans_b: true, accumulate: false });
        be.bias_add(&mut xw, &self.b_ih, n, 4 * h, 1);
        be.bias_add(&mut xw, &self.b_hh, n, 4 * h, 1);
        let mut s = Saved { hs: CpuBuf::zeros(n * h), cs: CpuBuf::zeros(n * h), gates: CpuBuf::zeros(n * 4 * h) };
        be.lstm_fwd(&xw, &self.w_hh, &self.h0, &self.c0, LstmSeqs { hs: &mut s.hs, cs: &mut s.cs, gates: &mut s.gates }, self.dims());
        s
    }

    /// The test loss `sum r * hs` (r fixed random weights), accumulated in f64.
    fn loss(&self, be: &CpuBackend, r: &[f32]) -> f64 {
        self.forward(be).hs.iter().zip(r).map(|(&h, &r)| h as f64 * r as f64).sum()
    }
}

#[test]
fn layer_gradients_match_finite_differences() {
    let be = CpuBackend::new();
    for (s, &(batch, time, inp, h)) in SHAPES.iter().enumerate() {
        let seed = 200 + 10 * s as u64;
        let scaled = |k: u64, n: usize, a: f32| -> CpuBuf { random_vec(seed + k, n).iter().map(|v| a * v).collect() };
        let layer = Layer {
            batch,
            time,
            inp,
            h,
            x: scaled(0, batch * time * inp, 1.0),
            w_ih: scaled(1, 4 * h * inp, 0.6),
            w_hh: scaled(2, 4 * h * h, 0.6),
            b_ih: scaled(3, 4 * h, 0.5),
            b_hh: scaled(4, 4 * h, 0.5),
            // A non-zero initial state exercises the h_{-1} = h0 term of dW_hh.
            h0: scaled(5, batch * h, 0.8),
            c0: scaled(6, batch * h, 0.8),
        };
        let r = scaled(7, batch * time * h, 1.0);
        let n = batch * time;

        // Analytic: dhs = r; BPTT gives dxw and dW_hh; the projection's gradients follow.
        let saved = layer.forward(&be);
        let mut dxw = CpuBuf::zeros(n * 4 * h);
        // dW_hh starts at 1 to check that lstm_bwd accumulates into it.
        let mut dw_hh = CpuBuf::filled(4 * h * h, 1.0);
        be.lstm_bwd(&layer.w_hh, LstmSaved { h0: &layer.h0, c0: &layer.c0, seqs: LstmSeqs { hs: &saved.hs, cs: &saved.cs, gates: &saved.gates } }, &r, &mut dxw, &mut dw_hh, layer.dims());
        dw_hh.iter_mut().for_each(|v| *v -= 1.0);
        let mut dw_ih = CpuBuf::zeros(4 * h * inp);
        be.matmul(&dxw, &layer.x, &mut dw_ih, MatMul { m: 4 * h, k: n, n: inp, trans_a: true, trans_b: false, accumulate: true });
        let mut db = CpuBuf::zeros(4 * h);
        be.bias_grad(&dxw, &mut db, n, 4 * h, 1);
        let mut dx = CpuBuf::zeros(n * inp);
        be.matmul(&dxw, &layer.w_ih, &mut dx, MatMul { m: n, k: 4 * h, n: inp, trans_a: false, trans_b: false, accumulate: false });

        // Numeric, with the helper's h = 1e-2 (see common::numeric_grad).
        let step = 1e-2;
        let probe = |get: fn(&mut Layer) -> &mut CpuBuf| -> Vec<f64> {
            let mut probe_layer = clone_layer(&layer);
            let mut v = get(&mut probe_layer).clone();
            numeric_grad(&mut v, step, |v| {
                *get(&mut probe_layer) = CpuBuf::from(v);
                probe_layer.loss(&be, &r)
            })
        };
        let num_x = probe(|l| &mut l.x);
        let num_w_ih = probe(|l| &mut l.w_ih);
        let num_w_hh = probe(|l| &mut l.w_hh);
        let num_b_ih = probe(|l| &mut l.b_ih);
        let num_b_hh = probe(|l| &mut l.b_hh);

        // Central differences with h = 1e-2 have truncation error h^2/6 |f'''| (relative ~1e-4
        // here) and f32 rounding of the loss ~1e-7 * |loss| / h (~1e-5 absolute for |loss| ~ 1);
        // the analytic f32 gradients are far more precise. The worst case seen over these shapes
        // is ~15% of 1e-4 + 2e-3 |numeric|; a wrong gate or index is off by O(|g|).
        let check = |name: &str, got: &[f32], want: &[f64]| {
            for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                let tol = 1e-4 + 2e-3 * w.abs();
                assert!((g as f64 - w).abs() <= tol, "shape {:?} {name}[{i}]: analytic {g}, numeric {w}", SHAPES[s]);
            }
        };
        check("x", &dx, &num_x);
        check("w_ih", &dw_ih, &num_w_ih);
        check("w_hh", &dw_hh, &num_w_hh);
        check("b_ih", &db, &num_b_ih);
        check("b_hh", &db, &num_b_hh);
    }
}

fn clone_layer(l: &Layer) -> Layer {
    Layer {
        batch: l.batch,
        time: l.time,
        inp: l.inp,
        h: l.h,
        x: l.x.clone(),
        w_ih: l.w_ih.clone(),
        w_hh: l.w_hh.clone(),
        b_ih: l.b_ih.clone(),
        b_hh: l.b_hh.clone(),
        h0: l.h0.clone(),
        c0: l.c0.clone(),
    }
}

#[test]
fn empty_sizes_are_a_no_op_and_short_buffers_panic_with_the_op_name() {
    let be = CpuBackend::new();
    let (mut hs, mut cs, mut g) = (CpuBuf::from([]), CpuBuf::from([]), CpuBuf::from([]));
    be.lstm_fwd(&CpuBuf::zeros(0), &CpuBuf::zeros(16), &CpuBuf::zeros(0), &CpuBuf::zeros(0), LstmSeqs { hs: &mut hs, cs: &mut cs, gates: &mut g }, Lstm { batch: 0, time: 3, hidden: 2 });
    let short = std::panic::catch_unwind(|| {
        let be = CpuBackend::new();
        let (mut hs, mut cs, mut g) = (CpuBuf::zeros(4), CpuBuf::zeros(4), CpuBuf::zeros(16));
        be.lstm_fwd(&CpuBuf::zeros(15), &CpuBuf::zeros(16), &CpuBuf::zeros(2), &CpuBuf::zeros(2), LstmSeqs { hs: &mut hs, cs: &mut cs, gates: &mut g }, Lstm { batch: 1, time: 2, hidden: 2 });
    });
    let msg = short.expect_err("a short xw must panic");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("lstm_fwd") && msg.contains("xw"), "panic message: {msg}");
}

/// Generation: feeding a window one token at a time with the carried state gives, at every step,
/// the logits the full-window forward gives at that step (`lstm-seq`: every row; `lstm`: the last).
#[test]
fn one_step_inference_matches_the_full_window_forward() {
    let be = CpuBackend::new();
    let (batch, window, vocab) = (3, 7, 11);
    for seq in [false, true] {
        let cfg = LstmConfig { vocab, embed: 5, hidden: 6, layers: 2, dense: 9, seq };
        let mut model = LstmModel::new(&be, cfg, batch, window, &mut Rng::new(17));
        let mut rng = Rng::new(5);
        let ids: Vec<u32> = (0..batch * window).map(|_| rng.below(vocab) as u32).collect();
        model.forward(&be, &ids, batch);
        let full = model.logits().to_vec(&be);

        let mut state = model.zero_state(&be, batch);
        for t in 0..window {
            let step_ids: Vec<u32> = (0..batch).map(|b| ids[b * window + t]).collect();
            let logits = model.step(&be, &step_ids, &mut state).to_vec(&be);
            for b in 0..batch {
                let want = match (seq, t + 1 == window) {
                    (true, _) => Some(&full[(b * window + t) * vocab..][..vocab]),
                    (false, true) => Some(&full[b * vocab..][..vocab]),
                    (false, false) => None,
                };
                if let Some(want) = want {
                    for (k, (&g, &w)) in logits[b * vocab..][..vocab].iter().zip(want).enumerate() {
                        // Same f32 operations in the same order, up to sgemm's blocking: 1e-5.
                        assert!((g - w).abs() < 1e-5, "seq={seq} t={t} b={b} logit {k}: step {g} vs full {w}");
                    }
                }
            }
        }
        // A reset state starts over: the first step's logits are those of a fresh state.
        state.reset(&be);
        let first: Vec<u32> = (0..batch).map(|b| ids[b * window]).collect();
        let again = model.step(&be, &first, &mut state).to_vec(&be);
        let mut fresh = model.zero_state(&be, batch);
        let want = model.step(&be, &first, &mut fresh).to_vec(&be);
        assert_eq!(again[..batch * vocab], want[..batch * vocab]);
    }
}

/// PyTorch's default initialisation: Embedding N(0, 1); every LSTM tensor U(-1/sqrt(H), 1/sqrt(H));
/// Linear weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the same seed gives the same model.
#[test]
fn initialisation_follows_pytorch_defaults_and_the_seed() {
    let be = CpuBackend::new();
    let cfg = LstmConfig { vocab: 50, embed: 40, hidden: 16, layers: 2, dense: 25, seq: false };
    let model = LstmModel::new(&be, cfg.clone(), 2, 3, &mut Rng::new(9));
    for p in model.params() {
        let v = p.value.to_vec(&be);
        let bound = if p.name.starts_with("lstm.") || p.name.starts_with("fc1.") {
            1.0 / 16f32.sqrt()
        } else if p.name.starts_with("fc2.") {
            1.0 / 25f32.sqrt()
        } else {
            // emb.weight: 2000 draws of N(0, 1): mean within 4 sigma/sqrt(n) = 0.09, variance within 0.15.
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
            assert!(mean.abs() < 0.09 && (var - 1.0).abs() < 0.15, "emb.weight: mean {mean}, variance {var}");
            continue;
        };
        let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        // Uniform draws fill the interval: with >= 25 values the largest |x| exceeds 0.5 bound
        // with probability 1 - 2^-25.
        assert!(max <= bound && max > 0.5 * bound, "{}: max |x| {max}, bound {bound}", p.name);
    }
    let same = LstmModel::new(&be, cfg.clone(), 2, 3, &mut Rng::new(9));
    let other = LstmModel::new(&be, cfg, 2, 3, &mut Rng::new(10));
    let all = |m: &LstmModel<CpuBackend>| m.params().iter().flat_map(|p| p.value.to_vec(&be)).collect::<Vec<f32>>();
    assert_eq!(all(&model), all(&same));
    assert_ne!(all(&model), all(&other));
}

#[test]
fn config_defaults_round_trip_and_validation() {
    let cfg = LstmConfig::new(300, true);
    assert_eq!((cfg.embed, cfg.hidden, cfg.layers, cfg.dense), (100, 128, 2, 256));
    let back: LstmConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    assert!(cfg.validate().is_ok());
    assert!(LstmConfig { hidden: 0, ..cfg }.validate().unwrap_err().contains("hidden"));
}

/// The CPU backend packs an LSTM's `W_hh` once per weight update: a second forward with the
/// same weights reuses the pack (same outputs, no new pack), and any write to the weights'
/// storage, through the tensor's own view or through a view of its whole arena (as Adam writes),
/// makes the next forward pack again and compute with the new weights (outputs equal a fresh
/// backend's).
#[test]
fn w_hh_is_packed_once_per_weight_update() {
    let (batch, time, h) = (3, 4, 6);
    let rv = |seed: u64, n: usize, scale: f32| -> Vec<f32> { random_vec(seed, n).iter().map(|v| v * scale).collect() };
    let xw = CpuBuf::from(rv(21, batch * time * 4 * h, 1.0));
    let (h0, c0) = (CpuBuf::from(rv(22, batch * h, 0.5)), CpuBuf::from(rv(23, batch * h, 0.5)));
    let l = Lstm { batch, time, hidden: h };
    let hs_of = |be: &CpuBackend, w_hh: &CpuBuf| {
        let (mut hs, mut cs, mut gates) = (CpuBuf::zeros(batch * time * h), CpuBuf::zeros(batch * time * h), CpuBuf::zeros(batch * time * 4 * h));
        be.lstm_fwd(&xw, w_hh, &h0, &c0, LstmSeqs { hs: &mut hs, cs: &mut cs, gates: &mut gates }, l);
        hs.to_vec()
    };
    let be = CpuBackend::new();
    // W_hh as a view inside an arena, after another tensor.
    let mut arena = CpuBuf::zeros(7 + 4 * h * h);
    let w1 = rv(24, 4 * h * h, 0.5);
    // SAFETY: the views are used one at a time below.
    let (mut whole, mut w_hh) = unsafe { (arena.view(0, 7 + 4 * h * h), arena.view(7, 4 * h * h)) };
    w_hh.copy_from_slice(&w1);
    let first = hs_of(&be, &w_hh);
    assert_eq!(be.packs_made(), 1);
    assert_eq!(hs_of(&be, &w_hh), first);
    assert_eq!(be.packs_made(), 1, "the same weights were packed again");
    assert_eq!(first, hs_of(&CpuBackend::new(), &CpuBuf::from(w1.clone())));
    // A write through the whole arena's view (Adam's way).
    whole[7..].iter_mut().for_each(|w| *w *= -0.5);
    let second = hs_of(&be, &w_hh);
    assert_eq!(be.packs_made(), 2, "new weights were not packed");
    let w2: Vec<f32> = w1.iter().map(|w| w * -0.5).collect();
    assert_eq!(second, hs_of(&CpuBackend::new(), &CpuBuf::from(w2.clone())));
    assert_ne!(second, first);
    // A write through the tensor's own view.
    w_hh.iter_mut().for_each(|w| *w += 0.25);
    let third = hs_of(&be, &w_hh);
    assert_eq!(be.packs_made(), 3);
    let w3: Vec<f32> = w2.iter().map(|w| w + 0.25).collect();
    assert_eq!(third, hs_of(&CpuBackend::new(), &CpuBuf::from(w3)));
    // A write elsewhere in the arena packs again too (the stamp is per storage): never stale.
    arena[0] = 1.0;
    assert_eq!(hs_of(&be, &w_hh), third);
    assert_eq!(be.packs_made(), 4);
}
