//! The NADE head's op on the CPU (issue 27, `src/engine/nade.rs`): the forward's logits and loss
//! against a float64 computation written the naive way (each conditional's prefix summed afresh),
//! the backward against finite differences of the loss, the accumulation into dW and dV, outputs
//! pre-filled with garbage, and the special case V = 0, which is `bce_logits` of the visible biases.

mod common;

use common::{numeric_grad, random_vec};
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::nade::{Nade, NadeGrads, NadeIn};
use etude::engine::roll::RollOps;
use etude::engine::Bce;
use etude::rng::Rng;

/// One case's inputs, host side.
struct Case {
    n: usize,
    k: usize,
    h: usize,
    bh: Vec<f32>,
    bv: Vec<f32>,
    w: Vec<f32>,
    v: Vec<f32>,
    y: Vec<f32>,
    rw: Vec<f32>,
}

fn case(seed: u64, n: usize, k: usize, h: usize, p_on: f64) -> Case {
    let mut rng = Rng::new(seed);
    let mut r = |len: usize, s: f32| -> Vec<f32> { (0..len).map(|_| rng.uniform_range(-s, s)).collect() };
    let (bh, bv, w, v) = (r(n * h, 1.0), r(n * k, 2.0), r(k * h, 1.5), r(k * h, 1.5));
    let mut rng = Rng::new(seed + 1000);
    let y = (0..n * k).map(|_| if rng.uniform() < p_on { 1.0 } else { 0.0 }).collect();
    // weights 1, 0 (padding) and 0.5
    let rw = (0..n).map(|i| [1.0, 0.0, 0.5][i % 3]).collect();
    Case { n, k, h, bh, bv, w, v, y, rw }
}

fn bufs(c: &Case) -> [CpuBuf; 6] {
    [&c.bh, &c.bv, &c.w, &c.v, &c.y, &c.rw].map(|v| CpuBuf::from(v.as_slice()))
}

fn input(b: &[CpuBuf; 6]) -> NadeIn<'_, CpuBuf> {
    NadeIn { bh: &b[0], bv: &b[1], w: &b[2], v: &b[3], y: &b[4], rw: &b[5] }
}

/// Forward on the CPU: (logits, stats), both pre-filled with NaN.
fn fwd(c: &Case) -> (CpuBuf, CpuBuf) {
    let b = bufs(c);
    let (mut lg, mut st) = (CpuBuf::filled(c.n * c.k, f32::NAN), CpuBuf::filled(c.n, f32::NAN));
    CpuBackend::new().nade_fwd(input(&b), &mut lg, &mut st, Nade { n: c.n, k: c.k, h: c.h, grad_scale: 0.0 });
    (lg, st)
}

/// Backward on the CPU from the forward's logits: (dbh, dbv, dw, dv); dbh and dbv start as NaN,
/// dw and dv as `start_w`, `start_v`.
fn bwd(c: &Case, scale: f32, start_w: &[f32], start_v: &[f32]) -> [CpuBuf; 4] {
    let (lg, _) = fwd(c);
    let b = bufs(c);
    let mut dbh = CpuBuf::filled(c.n * c.h, f32::NAN);
    let mut dbv = CpuBuf::filled(c.n * c.k, f32::NAN);
    let (mut dw, mut dv) = (CpuBuf::from(start_w), CpuBuf::from(start_v));
    let g = NadeGrads { dbh: &mut dbh, dbv: &mut dbv, dw: &mut dw, dv: &mut dv };
    CpuBackend::new().nade_bwd(input(&b), &lg, g, Nade { n: c.n, k: c.k, h: c.h, grad_scale: scale });
    [dbh, dbv, dw, dv]
}

/// Row r's conditional logits in float64, each prefix summed afresh.
fn logits_f64(c: &Case, r: usize) -> Vec<f64> {
    let (k, h) = (c.k, c.h);
    (0..k)
        .map(|i| {
            let mut x = c.bv[r * k + i] as f64;
            for u in 0..h {
                let a = c.bh[r * h + u] as f64 + (0..i).map(|j| c.w[j * h + u] as f64 * c.y[r * k + j] as f64).sum::<f64>();
                x += c.v[i * h + u] as f64 / (1.0 + (-a).exp());
            }
            x
        })
        .collect()
}

/// `-log p(frame)`: the sum of the keys' `-log p(v_i | v_<i)`, written naively.
fn nll_f64(c: &Case, r: usize) -> f64 {
    logits_f64(c, r)
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let p = 1.0 / (1.0 + (-x).exp());
            if c.y[r * c.k + i] > 0.5 { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum()
}

#[test]
fn forward_matches_a_float64_computation() {
    // 88 keys, hidden sizes off every vector width, a row of no keys and one of all keys
    for &(n, h, seed) in &[(7, 13, 1u64), (4, 1, 2), (5, 70, 3)] {
        let mut c = case(seed, n, 88, h, 0.1);
        c.y[..88].fill(0.0);
        c.y[88..176].fill(1.0);
        let (lg, st) = fwd(&c);
        for r in 0..n {
            let want = logits_f64(&c, r);
            for i in 0..88 {
                let got = lg[r * 88 + i] as f64;
                assert!((got - want[i]).abs() <= 1e-5 * (1.0 + want[i].abs()), "h {h} logit[{r},{i}]: {got} vs {}", want[i]);
            }
            let want = c.rw[r] as f64 * nll_f64(&c, r);
            assert!((st[r] as f64 - want).abs() <= 2e-5 * (1.0 + want), "h {h} stats[{r}]: {} vs {want}", st[r]);
        }
        // the padding row costs nothing
        assert_eq!(st[1], 0.0);
    }
}

#[test]
fn the_loss_is_a_distribution_over_the_frames() {
    // k = 4 keys: p over all 16 frames sums to 1 (a joint distribution, not 4 coin flips)
    let (k, h) = (4, 3);
    let base = case(9, 1, k, h, 0.0);
    let mut total = 0.0;
    for m in 0..16u32 {
        let mut c = case(9, 1, k, h, 0.0);
        c.rw = vec![1.0];
        c.y = (0..k).map(|i| ((m >> i) & 1) as f32).collect();
        assert_eq!(c.bh, base.bh);
        let (_, st) = fwd(&c);
        total += (-(st[0] as f64)).exp();
    }
    assert!((total - 1.0).abs() < 1e-5, "sum of p over the 16 frames: {total}");
}

#[test]
fn with_v_zero_it_is_the_sigmoid_head() {
    let mut c = case(4, 9, 88, 17, 0.2);
    c.v.fill(0.0);
    let (lg, st) = fwd(&c);
    assert_eq!(&lg[..], &c.bv[..], "logits are the visible biases");
    let (mut d, mut st2) = (CpuBuf::zeros(c.n * 88), CpuBuf::zeros(c.n));
    let bce = Bce { n: c.n, k: 88, grad_scale: 0.5 };
    CpuBackend::new().bce_logits(&CpuBuf::from(&c.bv[..]), &CpuBuf::from(&c.y[..]), &CpuBuf::from(&c.rw[..]), &mut d, &mut st2, bce);
    for r in 0..c.n {
        assert!((st[r] - st2[r]).abs() <= 1e-5 * (1.0 + st2[r].abs()), "stats[{r}]: nade {} bce {}", st[r], st2[r]);
    }
    let zeros = vec![0.0; 88 * 17];
    let [dbh, dbv, dw, _] = bwd(&c, 0.5, &zeros, &zeros);
    assert_eq!(&dbv[..], &d[..], "dbv is bce_logits's dlogits");
    assert!(dbh.iter().all(|&v| v == 0.0) && dw.iter().all(|&v| v == 0.0), "nothing flows to the hidden side through V = 0");
}

/// Which input of a [`Case`] a finite difference moves.
type Pick = fn(&mut Case) -> &mut Vec<f32>;

/// Central differences of `loss` with respect to each value of one input of `case(seed, ...)`,
/// the field chosen by `pick`.
fn numeric(seed: u64, dims: (usize, usize, usize), step: f32, pick: Pick, loss: &dyn Fn(&Case) -> f64) -> Vec<f64> {
    let (n, k, h) = dims;
    let mut c = case(seed, n, k, h, 0.35);
    let mut x = pick(&mut c).clone();
    numeric_grad(&mut x, step, |x| {
        let mut c = case(seed, n, k, h, 0.35);
        *pick(&mut c) = x.to_vec();
        loss(&c)
    })
}

#[test]
fn backward_matches_finite_differences_and_accumulates() {
    let picks: [(&str, Pick); 4] =
        [("dbh", |c| &mut c.bh), ("dbv", |c| &mut c.bv), ("dw", |c| &mut c.w), ("dv", |c| &mut c.v)];
    for &(n, k, h, seed) in &[(4, 11, 5, 5u64), (3, 88, 3, 6), (2, 7, 66, 7), (2, 88, 9, 8)] {
        let c = case(seed, n, k, h, 0.35);
        let scale = 0.25f32;
        let zeros = vec![0.0; k * h];
        let grads = bwd(&c, scale, &zeros, &zeros);
        // the float64 reference's loss, differenced in float64 (exact to ~1e-9)
        let exact = |c: &Case| -> f64 { (0..c.n).map(|r| c.rw[r] as f64 * nll_f64(c, r)).sum::<f64>() * scale as f64 };
        // the op's own f32 loss: its rounding (~1e-6 of a sum of k keys) over the step limits it to few keys
        let op = |c: &Case| -> f64 { fwd(c).1.iter().map(|&v| v as f64).sum::<f64>() * scale as f64 };
        for ((name, pick), got) in picks.iter().zip(&grads) {
            let num = numeric(seed, (n, k, h), 1e-3, *pick, &exact);
            for (i, (&a, &g)) in got.iter().zip(&num).enumerate() {
                assert!((a as f64 - g).abs() <= 1e-5 + 1e-4 * g.abs(), "{n}x{k}x{h} {name}[{i}]: analytic {a} float64 numeric {g}");
            }
            if k <= 11 {
                let num = numeric(seed, (n, k, h), 1e-2, *pick, &op);
                for (i, (&a, &g)) in got.iter().zip(&num).enumerate() {
                    assert!((a as f64 - g).abs() <= 2e-4 + 3e-3 * g.abs(), "{n}x{k}x{h} {name}[{i}]: analytic {a} f32 numeric {g}");
                }
            }
        }
        let [dbh, dbv, dw, dv] = grads;
        // dW and dV accumulate onto what they held; dbh and dbv are written
        let (sw, sv) = (random_vec(seed + 50, k * h), random_vec(seed + 51, k * h));
        let [dbh2, dbv2, dw2, dv2] = bwd(&c, scale, &sw, &sv);
        assert_eq!(&dbh2[..], &dbh[..]);
        assert_eq!(&dbv2[..], &dbv[..]);
        for i in 0..k * h {
            assert!((dw2[i] - (sw[i] + dw[i])).abs() <= 1e-6 * (1.0 + dw[i].abs()), "accumulated dw[{i}]");
            assert!((dv2[i] - (sv[i] + dv[i])).abs() <= 1e-6 * (1.0 + dv[i].abs()), "accumulated dv[{i}]");
        }
    }
}

#[test]
fn many_rows_do_not_depend_on_the_thread_count() {
    let c = case(8, 300, 88, 40, 0.05);
    let zeros = vec![0.0; 88 * 40];
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(|| (fwd(&c), bwd(&c, 0.1, &zeros, &zeros)));
    let four = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap().install(|| (fwd(&c), bwd(&c, 0.1, &zeros, &zeros)));
    assert_eq!(&one.0 .0[..], &four.0 .0[..]);
    assert_eq!(&one.0 .1[..], &four.0 .1[..]);
    for (a, b) in one.1.iter().zip(&four.1) {
        assert_eq!(&a[..], &b[..]);
    }
}


#[test]
fn a_short_buffer_names_the_op_the_buffer_and_the_sizes() {
    let c = case(1, 2, 5, 3, 0.5);
    let mut b = bufs(&c);
    b[0] = CpuBuf::zeros(5);
    let (mut lg, mut st) = (CpuBuf::zeros(10), CpuBuf::zeros(2));
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        CpuBackend::new().nade_fwd(input(&b), &mut lg, &mut st, Nade { n: 2, k: 5, h: 3, grad_scale: 1.0 })
    }))
    .unwrap_err();
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert_eq!(msg, "nade_fwd: buffer `bh` holds 5 elements, expected n 2 x h 3 = 6");
}
