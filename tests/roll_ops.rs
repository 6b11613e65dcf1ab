//! The piano-roll ops (issue 14, `src/engine/roll.rs`): the fused BCE-with-logits against a float64
//! hand computation, its gradient against finite differences, logits of +-80 staying finite, and
//! the embedding bag's forward and backward; every op on the GPU against the CPU twin on random
//! inputs whose sizes are off the workgroup multiples (64 rows for the BCE, 256 / 64 for the bag).

mod common;

use common::{gpu, numeric_grad, random_vec, upload, upload_ids};
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::{Bag, Bce};
use etude::engine::roll::RollOps;
use etude::engine::Backend;
use etude::rng::Rng;

/// Random 0/1 targets with about `p` ones.
fn targets(rng: &mut Rng, n: usize, p: f64) -> Vec<f32> {
    (0..n).map(|_| if rng.uniform() < p { 1.0 } else { 0.0 }).collect()
}

fn bce_cpu(logits: &[f32], y: &[f32], w: &[f32], n: usize, k: usize, scale: f32) -> (CpuBuf, CpuBuf) {
    let mut d = CpuBuf::zeros(n * k);
    let mut st = CpuBuf::zeros(n);
    CpuBackend::new().bce_logits(&CpuBuf::from(logits), &CpuBuf::from(y), &CpuBuf::from(w), &mut d, &mut st, Bce { n, k, grad_scale: scale });
    (d, st)
}

/// `-y log p - (1-y) log(1-p)` in float64 with `p = 1/(1+e^-x)`, written the naive way.
fn bce_f64(x: f32, y: f32) -> f64 {
    let (x, y) = (x as f64, y as f64);
    let p = 1.0 / (1.0 + (-x).exp());
    -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
}

#[test]
fn bce_values_match_a_float64_hand_computation() {
    let mut rng = Rng::new(1);
    let (n, k) = (7, 88);
    let logits: CpuBuf = (0..n * k).map(|_| rng.uniform_range(-6.0, 6.0)).collect();
    let y = targets(&mut rng, n * k, 0.1);
    let w: CpuBuf = (0..n).map(|i| if i == 3 { 0.0 } else { 1.0 }).collect();
    let (d, st) = bce_cpu(&logits, &y, &w, n, k, 0.25);
    for i in 0..n {
        let want: f64 = (0..k).map(|j| bce_f64(logits[i * k + j], y[i * k + j])).sum::<f64>() * w[i] as f64;
        assert!((st[i] as f64 - want).abs() <= 1e-5 * (1.0 + want), "row {i}: {} vs {want}", st[i]);
        for j in 0..k {
            let x = logits[i * k + j] as f64;
            let want = (1.0 / (1.0 + (-x).exp()) - y[i * k + j] as f64) * w[i] as f64 * 0.25;
            assert!((d[i * k + j] as f64 - want).abs() <= 1e-6, "dlogits[{i},{j}]: {} vs {want}", d[i * k + j]);
        }
    }
    // the masked row contributes nothing
    assert_eq!(st[3], 0.0);
    assert!(d[3 * k..4 * k].iter().all(|&v| v == 0.0));
    // a hand example: x = 0 costs ln 2 whatever the target; x = 2, y = 1 costs ln(1 + e^-2)
    let (_, st) = bce_cpu(&[0.0, 0.0, 2.0], &[0.0, 1.0, 1.0], &[1.0], 1, 3, 1.0);
    let want = 2.0 * 2f64.ln() + (1.0 + (-2f64).exp()).ln();
    assert!((st[0] as f64 - want).abs() < 1e-6, "{} vs {want}", st[0]);
}

#[test]
fn bce_gradient_matches_finite_differences() {
    let (n, k) = (5, 13);
    let mut rng = Rng::new(2);
    let mut logits: CpuBuf = random_vec(3, n * k).iter().map(|v| v * 4.0).collect();
    let y = targets(&mut rng, n * k, 0.3);
    let w: CpuBuf = (0..n).map(|i| if i == 1 { 0.0 } else { 1.0 }).collect();
    let scale = 1.0 / 4.0;
    let (d, _) = bce_cpu(&logits, &y, &w, n, k, scale);
    // The loss is sum(stats) * scale: its gradient is dlogits.
    let num = numeric_grad(&mut logits, 1e-2, |x| {
        let (_, st) = bce_cpu(x, &y, &w, n, k, scale);
        st.iter().map(|&v| v as f64).sum::<f64>() * scale as f64
    });
    for (i, (&a, &g)) in d.iter().zip(&num).enumerate() {
        assert!((a as f64 - g).abs() <= 1e-4 + 2e-3 * g.abs(), "dlogits[{i}]: analytic {a} numeric {g}");
    }
}

#[test]
fn bce_is_finite_at_logits_of_80() {
    let logits = [80.0f32, -80.0, 80.0, -80.0, 1e4, -1e4];
    let y = [1.0f32, 0.0, 0.0, 1.0, 0.0, 1.0];
    let (d, st) = bce_cpu(&logits, &y, &[1.0], 1, 6, 1.0);
    assert!(d.iter().chain(&st).all(|v| v.is_finite()));
    // right answers cost ~0, wrong ones |x|
    let want = 80.0 + 80.0 + 1e4 + 1e4;
    assert!((st[0] - want).abs() < 1e-2, "{}", st[0]);
    let want_d = [0.0f32, 0.0, 1.0, -1.0, 1.0, -1.0];
    assert!(d.iter().zip(&want_d).all(|(a, b)| (a - b).abs() < 1e-6), "{d:?}");
    let g = gpu();
    let (mut dg, mut sg) = (g.alloc(6), g.alloc_f32(1));
    g.bce_logits(&upload(&logits), &upload(&y), &upload(&[1.0]), &mut dg, &mut sg, Bce { n: 1, k: 6, grad_scale: 1.0 });
    let (dg, sg) = (g.read(&dg, 6), g.read(&sg, 1));
    assert!(dg.iter().chain(&sg).all(|v| v.is_finite()));
    assert!((sg[0] - want).abs() < 1e-2, "gpu {}", sg[0]);
    assert!(dg.iter().zip(&want_d).all(|(a, b)| (a - b).abs() < 1e-6), "gpu {dg:?}");
}

#[test]
fn bce_gpu_matches_cpu_on_random_inputs() {
    let g = gpu();
    let mut rng = Rng::new(4);
    // rows around the workgroup of 64, k = 88 and odd widths
    for &(n, k, scale) in &[(1, 88, 3.0f32), (63, 88, 8.0), (65, 88, 1.0), (130, 7, 20.0), (1000, 88, 5.0), (3, 1, 80.0)] {
        let logits: CpuBuf = (0..n * k).map(|_| rng.uniform_range(-scale, scale)).collect();
        let y = targets(&mut rng, n * k, 0.2);
        let w: CpuBuf = (0..n).map(|_| if rng.uniform() < 0.8 { 1.0 } else { 0.0 }).collect();
        let gs = 1.0 / n as f32;
        let (d, st) = bce_cpu(&logits, &y, &w, n, k, gs);
        let (mut db, mut sb) = (g.alloc(n * k), g.alloc_f32(n));
        g.bce_logits(&upload(&logits), &upload(&y), &upload(&w), &mut db, &mut sb, Bce { n, k, grad_scale: gs });
        let (dg, sg) = (g.read(&db, n * k), g.read(&sb, n));
        for i in 0..n * k {
            assert!((dg[i] - d[i]).abs() <= 1e-6 + 1e-5 * d[i].abs(), "{n}x{k} dlogits[{i}]: gpu {} cpu {}", dg[i], d[i]);
        }
        for i in 0..n {
            // a sum of k terms, each exp/log a few ulp apart
            let tol = 1e-5 * (k as f32).sqrt() * (1.0 + st[i].abs()) + 1e-6;
            assert!((sg[i] - st[i]).abs() <= tol, "{n}x{k} stats[{i}]: gpu {} cpu {}", sg[i], st[i]);
        }
    }
}

/// Random bags: `slots` per row, each a key below `rows` or empty (u32::MAX), repeats allowed.
fn bags(rng: &mut Rng, n: usize, slots: usize, rows: usize) -> Vec<u32> {
    (0..n * slots).map(|_| if rng.uniform() < 0.3 { u32::MAX } else { rng.below(rows) as u32 }).collect()
}

#[test]
fn bag_forward_is_the_sum_of_the_rows_and_its_backward_matches_finite_differences() {
    let c = CpuBackend::new();
    let (n, slots, e, rows) = (6, 4, 5, 9);
    let mut rng = Rng::new(5);
    let mut ids = bags(&mut rng, n, slots, rows);
    ids[0..4].copy_from_slice(&[u32::MAX; 4]); // an empty frame
    ids[4..8].copy_from_slice(&[2, 2, u32::MAX, 8]); // a repeated key
    let mut table = random_vec(6, rows * e);
    let mut out = CpuBuf::filled(n * e, 7.0);
    c.bag_fwd(&ids, &table, &mut out, Bag { n, slots, e });
    assert!(out[..e].iter().all(|&v| v == 0.0), "an empty frame gives zeros");
    for col in 0..e {
        let want = 2.0 * table[2 * e + col] + table[8 * e + col];
        assert!((out[e + col] - want).abs() < 1e-6);
    }
    let r = random_vec(7, n * e);
    let mut dtable = CpuBuf::zeros(rows * e);
    c.bag_bwd(&ids, &r, &mut dtable, Bag { n, slots, e }, rows);
    let num = numeric_grad(&mut table, 1e-2, |t| {
        let mut o = CpuBuf::zeros(n * e);
        c.bag_fwd(&ids, &CpuBuf::from(t), &mut o, Bag { n, slots, e });
        o.iter().zip(&r).map(|(&a, &b)| a as f64 * b as f64).sum()
    });
    for (i, (&a, &g)) in dtable.iter().zip(&num).enumerate() {
        assert!((a as f64 - g).abs() <= 1e-4 + 2e-3 * g.abs(), "dtable[{i}]: analytic {a} numeric {g}");
    }
    // the backward accumulates
    c.bag_bwd(&ids, &r, &mut dtable, Bag { n, slots, e }, rows);
    for (i, &g) in num.iter().enumerate() {
        assert!((dtable[i] as f64 - 2.0 * g).abs() <= 2e-4 + 4e-3 * g.abs(), "accumulated dtable[{i}]");
    }
}

#[test]
fn bag_gpu_matches_cpu_on_random_inputs() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(8);
    // (frames, slots, width, rows): widths off 64, products off 256, one frame, many frames
    for &(n, slots, e, rows) in &[(1, 1, 1, 1), (3, 5, 65, 88), (257, 12, 100, 88), (2000, 16, 33, 88), (70, 3, 256, 10)] {
        let ids = bags(&mut rng, n, slots, rows);
        let table = random_vec(rng.next_u64(), rows * e);
        let mut out = CpuBuf::zeros(n * e);
        c.bag_fwd(&ids, &table, &mut out, Bag { n, slots, e });
        let mut ob = g.alloc(n * e);
        let idb = upload_ids(&ids);
        g.bag_fwd(&idb, &upload(&table), &mut ob, Bag { n, slots, e });
        let og = g.read(&ob, n * e);
        for i in 0..n * e {
            assert!((og[i] - out[i]).abs() <= 1e-5 * (slots as f32), "fwd {n}x{slots}x{e}[{i}]: gpu {} cpu {}", og[i], out[i]);
        }
        let dout = random_vec(rng.next_u64(), n * e);
        let start = random_vec(rng.next_u64(), rows * e);
        let mut dt = start.clone();
        c.bag_bwd(&ids, &dout, &mut dt, Bag { n, slots, e }, rows);
        let mut dtb = upload(&start);
        g.bag_bwd(&idb, &upload(&dout), &mut dtb, Bag { n, slots, e }, rows);
        let dg = g.read(&dtb, rows * e);
        // sums of up to n*slots terms of at most 1, in another order
        let tol = 1e-5 * ((n * slots) as f32).sqrt() * 4.0 + 1e-5;
        for i in 0..rows * e {
            assert!((dg[i] - dt[i]).abs() <= tol * (1.0 + dt[i].abs()), "bwd {n}x{slots}x{e}[{i}]: gpu {} cpu {}", dg[i], dt[i]);
        }
    }
}
