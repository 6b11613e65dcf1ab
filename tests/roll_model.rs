//! The piano-roll models (issue 14, `src/model/roll.rs`): every parameter's gradient of the
//! summed BCE against central finite differences (CPU), the GPU against the CPU on the same
//! weights and batch, causality (a frame's logits do not depend on later frames), and the
//! batch helpers of `src/train/roll.rs`.

mod common;

use common::gpu;
use etude::engine::cpu::CpuBackend;
use etude::engine::Bce;
use etude::engine::roll::RollOps;
use etude::engine::{Backend, Dropout};
use etude::rng::Rng;
use etude::data::roll::{Frame, KEYS};
use etude::model::roll::{build, RollConfig, RollModel};
use etude::train::roll::{chunks, make_batch, make_batch_shifted, Batch};

/// Loss = sum of the weighted BCE over the batch; returns it and leaves dlogits in `d`.
fn loss<B: RollOps>(b: &B, m: &mut dyn RollModel<B>, batch: &Batch, backward: bool) -> f64 {
    let n = batch.batch * batch.time;
    let mut ids = b.alloc_ids(batch.ids.len());
    b.write_ids(&mut ids, &batch.ids);
    let (mut y, mut w) = (b.alloc(n * KEYS), b.alloc(n));
    b.write(&mut y, &batch.y);
    b.write(&mut w, &batch.w);
    let (mut d, mut st) = (b.alloc(n * KEYS), b.alloc_f32(n));
    m.forward(b, &ids, batch.slots, batch.batch, batch.time);
    b.bce_logits(m.logits(), &y, &w, &mut d, &mut st, Bce { n, k: KEYS, grad_scale: 1.0 });
    if backward {
        m.backward(b, &ids, batch.slots, &d, batch.batch, batch.time);
        return b.read(&st, n).iter().map(|&v| v as f64).sum();
    }
    // For the finite differences: the loss in float64 from the logits, so that rounding the
    // ~n*88*ln 2 total to f32 does not swamp the differences.
    let logits = b.read(m.logits(), n * KEYS);
    let mut total = 0.0f64;
    for row in 0..n {
        for k in 0..KEYS {
            let (x, y) = (logits[row * KEYS + k] as f64, batch.y[row * KEYS + k] as f64);
            total += batch.w[row] as f64 * (x.max(0.0) - x * y + (-x.abs()).exp().ln_1p());
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
            let mut m = build(&c, &cfg, 32, &mut Rng::new(3));
            let d = (dropout > 0.0).then_some(Dropout { p: dropout, seed: 5, step: 2 });
            m.set_dropout(d);
            for p in m.params_mut() {
                let n = p.grad.len();
                c.fill(&mut p.grad.buf, n, 0.0);
            }
            loss(&c, m.as_mut(), &batch, true);
            let grads: Vec<Vec<f32>> = m.params().iter().map(|p| p.grad.buf.to_vec()).collect();
            assert_eq!(m.params().len(), grads.len());
            for (pi, g) in grads.iter().enumerate() {
                let name = m.params()[pi].name.clone();
                // a handful of entries of every parameter, the bag's active rows included
                let len = g.len();
                let picks: Vec<usize> = (0..6).map(|j| (j * 7919 + pi * 31) % len).collect();
                for &i in &picks {
                    let h = 1e-2f32;
                    let orig = m.params()[pi].value.buf[i];
                    m.params_mut()[pi].value.buf[i] = orig + h;
                    let up = loss(&c, m.as_mut(), &batch, false);
                    m.params_mut()[pi].value.buf[i] = orig - h;
                    let down = loss(&c, m.as_mut(), &batch, false);
                    m.params_mut()[pi].value.buf[i] = orig;
                    let num = (up - down) / (2.0 * h as f64);
                    let tol = 2e-3 + 5e-3 * num.abs();
                    assert!(
                        (g[i] as f64 - num).abs() <= tol,
                        "{} dropout {dropout} {name}[{i}]: analytic {} numeric {num}",
                        cfg.name(),
                        g[i]
                    );
                }
            }
            // the input projection's gradient is non-zero only on the rows of keys that occur
            let keys: std::collections::HashSet<u8> = seqs.iter().flat_map(|s| s[..s.len() - 1].iter().flatten().copied()).collect();
            let e = cfg.input_width();
            for k in 0..KEYS {
                let row = &grads[0][k * e..(k + 1) * e];
                if !keys.contains(&(k as u8)) {
                    assert!(row.iter().all(|&v| v == 0.0), "{}: row {k} of inp.weight has a gradient", cfg.name());
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
        let mut mc = build(&c, &cfg, 256, &mut Rng::new(4));
        let mut mg = build(g, &cfg, 256, &mut Rng::new(4));
        let lc = loss(&c, mc.as_mut(), &batch, true);
        let lg = loss(g, mg.as_mut(), &batch, true);
        common::assert_gpu_matches_cpu(cfg.name(), (lc, lg), &c, &mc.params(), g, &mg.params());
    }
}

#[test]
fn models_are_causal() {
    let c = CpuBackend::new();
    for cfg in common::tiny_roll_configs() {
        let mut rng = Rng::new(13);
        let a = common::random_frames(&mut rng, &[9]).remove(0);
        let mut b2 = a.clone();
        b2[6] = vec![1, 2, 3, 40];
        b2[8] = vec![];
        let mut m = build(&c, &cfg, 16, &mut Rng::new(1));
        let run = |m: &mut Box<dyn RollModel<CpuBackend>>, s: &[Frame]| {
            let batch = make_batch(&[s]);
            let mut ids = c.alloc_ids(batch.ids.len());
            c.write_ids(&mut ids, &batch.ids);
            m.forward(&c, &ids, batch.slots, 1, batch.time);
            m.logits()[..batch.time * KEYS].to_vec()
        };
        let (la, lb) = (run(&mut m, &a), run(&mut m, &b2));
        assert_eq!(la[..6 * KEYS], lb[..6 * KEYS], "{}: frames before 6 see the future", cfg.name());
        assert_ne!(la[6 * KEYS..7 * KEYS], lb[6 * KEYS..7 * KEYS], "{}: frame 6 is read", cfg.name());
    }
}

#[test]
fn parameter_counts_match_the_models() {
    let c = CpuBackend::new();
    for cfg in [
        RollConfig::Lstm { embed: 88, hidden: 200, layers: 1 },
        RollConfig::Lstm { embed: 16, hidden: 8, layers: 3 },
        RollConfig::WavenetGated { residual: 32, skip: 48, kernel: 3, layers: 4, stacks: 2 },
        RollConfig::WavenetGated { residual: 8, skip: 8, kernel: 2, layers: 1, stacks: 1 },
    ] {
        let m = build(&c, &cfg, 4, &mut Rng::new(0));
        let n: usize = m.params().iter().map(|p| p.value.len()).sum();
        assert_eq!(n, cfg.n_params(), "{cfg:?}");
    }
}

#[test]
fn batches_pad_and_mask_and_chunks_cover_every_frame_once() {
    let seqs: Vec<Vec<Frame>> = vec![vec![vec![0], vec![1, 2], vec![], vec![87]], vec![vec![5], vec![6]], vec![vec![9]]];
    let items: Vec<&[Frame]> = seqs.iter().map(|s| s.as_slice()).collect();
    let b = make_batch(&items);
    assert_eq!((b.batch, b.time, b.slots, b.rows), (3, 3, 2, 4));
    assert_eq!(b.w, vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(&b.ids[..6], &[0, u32::MAX, 1, 2, u32::MAX, u32::MAX]);
    assert_eq!(b.y[KEYS + 2], 0.0); // target of row 1 is the empty frame
    assert_eq!(b.y[2 * KEYS + 87], 1.0);
    assert_eq!(b.y[3 * KEYS + 6], 1.0);
    // chunks of at most 2 predicted frames, sharing one frame
    let long: Vec<Frame> = (0..6).map(|k| vec![k as u8]).collect();
    let c = chunks(std::slice::from_ref(&long), 2);
    let lens: Vec<usize> = c.iter().map(|x| x.len()).collect();
    assert_eq!(lens, vec![3, 3, 2]);
    assert_eq!(c.iter().map(|x| x.len() - 1).sum::<usize>(), 5);
    assert_eq!(c[1][0], vec![2]);
    // transposition: item 0 up 2 (key 87 leaves the keyboard), item 1 down 5 (key 5 -> 0, 6 -> 1)
    let t = make_batch_shifted(&items, &[2, -5]);
    assert_eq!(&t.ids[..6], &[2, u32::MAX, 3, 4, u32::MAX, u32::MAX]);
    assert!(t.y[2 * KEYS..3 * KEYS].iter().all(|&v| v == 0.0), "87 + 2 is dropped");
    assert_eq!(t.ids[3 * 2], 0);
    assert_eq!(t.y[3 * KEYS + 1], 1.0);
    assert_eq!(t.w, b.w);
}
