//! The CPU causal dilated Conv1d against a direct sum written here, and its three backward passes
//! against central finite differences.
mod common;

use common::{numeric_grad, random_vec};
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::{Backend, Conv1d};

/// The definition, summed in f64:
/// `y[b,o,t] = bias[o] + sum_{c,j} w[o,c,j] * x[b,c,t-(k-1-j)*d]`, zero at negative time.
fn naive_forward(x: &[f32], w: &[f32], bias: &[f32], c: Conv1d) -> Vec<f64> {
    let mut y = vec![0.0f64; c.batch * c.cout * c.time];
    for b in 0..c.batch {
        for o in 0..c.cout {
            for t in 0..c.time {
                let mut s = bias[o] as f64;
                for ci in 0..c.cin {
                    for j in 0..c.k {
                        let back = (c.k - 1 - j) * c.dilation;
                        if back <= t {
                            s += w[(o * c.cin + ci) * c.k + j] as f64 * x[(b * c.cin + ci) * c.time + t - back] as f64;
                        }
                    }
                }
                y[(b * c.cout + o) * c.time + t] = s;
            }
        }
    }
    y
}

fn conv(batch: usize, cin: usize, cout: usize, time: usize, k: usize, dilation: usize) -> Conv1d {
    Conv1d { batch, cin, cout, time, k, dilation }
}

/// Shapes covering kernel sizes 1, 2, 3, 5, dilations from 1 to past T (only padding), odd
/// channel counts, batch 1, and one shape big enough to take the multi-threaded path.
fn shapes() -> Vec<Conv1d> {
    vec![
        conv(1, 3, 5, 7, 1, 1),
        conv(2, 5, 3, 9, 2, 1),
        conv(1, 3, 3, 9, 2, 4),
        conv(3, 1, 7, 8, 3, 1),
        conv(2, 5, 5, 11, 3, 2),
        conv(1, 3, 1, 6, 3, 5),
        conv(2, 3, 5, 6, 3, 7),   // dilation > T: only tap 2 sees data
        conv(1, 2, 3, 5, 2, 512), // dilation far beyond T
        conv(2, 3, 4, 13, 5, 1),
        conv(1, 5, 3, 13, 5, 3), // tap 0 looks back 12 = T-1
        conv(2, 7, 3, 10, 5, 4), // taps 0..2 look back >= T
    ]
}

/// Shapes whose work (`batch*cout*cin*k*time` >= 2^18 multiply-adds) is above the CPU conv's
/// threading threshold, so the rayon paths (and the per-chunk weight-gradient reduction) run;
/// dilation 4 takes the all-taps-at-once weight gradient, dilation 32 (tap 0 in the padding)
/// the per-tap one; the third has `batch*cout*time` = 262144 outputs, enough for the bias
/// gradient's per-channel threads.
fn big_shapes() -> [Conv1d; 3] {
    [conv(8, 16, 16, 64, 3, 4), conv(8, 16, 16, 64, 3, 32), conv(16, 2, 128, 128, 1, 1)]
}

struct Data {
    x: CpuBuf,
    w: CpuBuf,
    bias: CpuBuf,
    /// Weights of the scalar test loss `L = sum(y * r)`, i.e. dL/dy.
    r: CpuBuf,
}

fn data(c: Conv1d, seed: u64) -> Data {
    Data {
        x: random_vec(seed, c.batch * c.cin * c.time),
        w: random_vec(seed + 1, c.cout * c.cin * c.k),
        bias: random_vec(seed + 2, c.cout),
        r: random_vec(seed + 3, c.batch * c.cout * c.time),
    }
}

fn forward(cpu: &CpuBackend, x: &[f32], w: &[f32], bias: &[f32], c: Conv1d) -> CpuBuf {
    let mut y = CpuBuf::filled(c.batch * c.cout * c.time, f32::NAN);
    cpu.conv1d_fwd(&CpuBuf::from(x), &CpuBuf::from(w), &CpuBuf::from(bias), &mut y, c);
    y
}

/// `L = sum(y * r)` in f64.
fn loss(cpu: &CpuBackend, x: &[f32], w: &[f32], bias: &[f32], r: &[f32], c: Conv1d) -> f64 {
    forward(cpu, x, w, bias, c).iter().zip(r).map(|(&y, &r)| y as f64 * r as f64).sum()
}

#[test]
fn forward_matches_direct_sum() {
    let cpu = CpuBackend::new();
    for (n, c) in shapes().into_iter().chain(big_shapes()).enumerate() {
        let d = data(c, 10 * n as u64);
        let got = forward(&cpu, &d.x, &d.w, &d.bias, c);
        let want = naive_forward(&d.x, &d.w, &d.bias, c);
        // Inputs in [-1, 1): a sum of cin*k + 1 <= 49 products of magnitude <= 1 in f32 is
        // within ~49 * 2^-24 * 49 ≈ 1.4e-4 of the f64 sum in the worst case; 1e-4 * terms is
        // far above the typical error yet far below a wrong tap (error ~0.1 or more).
        let tol = 1e-4 * (c.cin * c.k + 1) as f64 / 10.0;
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!((g as f64 - w).abs() <= tol, "{c:?}: y[{i}] = {g}, direct sum {w}");
        }
    }
}

#[test]
fn forward_with_dilation_past_the_window_sees_only_the_current_step() {
    // K=3, dilation 7 >= T=6: taps 0 and 1 read padding only, so changing them changes nothing.
    let cpu = CpuBackend::new();
    let c = conv(2, 3, 4, 6, 3, 7);
    let d = data(c, 99);
    let y = forward(&cpu, &d.x, &d.w, &d.bias, c);
    let mut w2 = d.w.clone();
    for (i, v) in w2.iter_mut().enumerate() {
        if i % 3 != 2 {
            *v += 5.0;
        }
    }
    assert_eq!(y, forward(&cpu, &d.x, &w2, &d.bias, c));
}

// Central differences of L = sum(y * r): L is linear in each of x, w and bias, so the
// difference quotient has no truncation error; what remains is f32 rounding of y (about
// 1e-7 * |y| per element, |y| <= ~8 here, over at most a few hundred elements), divided by
// 2h = 0.02: a few 1e-4 at worst. A wrong index or a missing tap is off by O(0.1..1).
const FD_H: f32 = 1e-2;
const FD_ABS: f64 = 2e-3;
const FD_REL: f64 = 1e-3;

fn assert_close(what: &str, c: Conv1d, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= FD_ABS + FD_REL * w.abs(), "{c:?}: {what}[{i}] = {g}, finite difference {w}");
    }
}

#[test]
fn backward_input_matches_finite_differences() {
    let cpu = CpuBackend::new();
    for (n, c) in shapes().into_iter().enumerate() {
        let mut d = data(c, 100 + 10 * n as u64);
        let mut dx = CpuBuf::filled(d.x.len(), f32::NAN);
        cpu.conv1d_bwd_input(&d.r, &d.w, &mut dx, c, false);
        let (w, bias, r) = (d.w.clone(), d.bias.clone(), d.r.clone());
        let num = numeric_grad(&mut d.x, FD_H, |x| loss(&cpu, x, &w, &bias, &r, c));
        assert_close("dx", c, &dx, &num);

        // accumulate = true adds to what is there; false overwrote the NaNs above.
        let mut acc = CpuBuf::filled(d.x.len(), 1.0f32);
        cpu.conv1d_bwd_input(&d.r, &d.w, &mut acc, c, true);
        for (a, g) in acc.iter().zip(&dx) {
            assert!((a - (g + 1.0)).abs() <= 1e-5 * (1.0 + g.abs()), "{c:?}: accumulate");
        }
    }
}

#[test]
fn backward_weight_and_bias_match_finite_differences() {
    let cpu = CpuBackend::new();
    for (n, c) in shapes().into_iter().enumerate() {
        let mut d = data(c, 200 + 10 * n as u64);
        // Both accumulate: start from 0.5 and subtract it afterwards.
        let mut dw = CpuBuf::filled(d.w.len(), 0.5f32);
        let mut db = CpuBuf::filled(d.bias.len(), 0.5f32);
        cpu.conv1d_bwd_weight(&d.x, &d.r, &mut dw, &mut db, c);
        let dw: CpuBuf = dw.iter().map(|v| v - 0.5).collect();
        let db: CpuBuf = db.iter().map(|v| v - 0.5).collect();

        let (x, bias, r) = (d.x.clone(), d.bias.clone(), d.r.clone());
        let num_w = numeric_grad(&mut d.w, FD_H, |w| loss(&cpu, &x, w, &bias, &r, c));
        assert_close("dw", c, &dw, &num_w);
        let w = d.w.clone();
        let num_b = numeric_grad(&mut d.bias, FD_H, |bias| loss(&cpu, &x, &w, bias, &r, c));
        assert_close("dbias", c, &db, &num_b);

        // Taps that look back T or more steps see only padding: their gradient is exactly 0.
        for j in 0..c.k {
            if (c.k - 1 - j) * c.dilation >= c.time {
                assert!(dw.iter().skip(j).step_by(c.k).all(|&g| g == 0.0), "{c:?}: padding-only tap {j}");
            }
        }
    }
}

/// On the threaded path, compare with exact f64 gradients (finite differences over 2304 weights
/// would be slow): dx[b,c,t] = sum_{o,j} w[o,c,j] r[b,o,t+s_j], dw[o,c,j] = sum_{b,t} r[b,o,t+s_j] x[b,c,t].
#[test]
fn threaded_backward_matches_direct_sums() {
    let cpu = CpuBackend::new();
    for c in big_shapes() {
        threaded_case(&cpu, c);
    }
}

#[allow(clippy::needless_range_loop)] // the direct sums read clearest with indices
fn threaded_case(cpu: &CpuBackend, c: Conv1d) {
    let d = data(c, 7);
    let mut dx = CpuBuf::zeros(d.x.len());
    cpu.conv1d_bwd_input(&d.r, &d.w, &mut dx, c, false);
    let mut dw = CpuBuf::zeros(d.w.len());
    let mut db = CpuBuf::zeros(c.cout);
    cpu.conv1d_bwd_weight(&d.x, &d.r, &mut dw, &mut db, c);

    let mut want_dx = vec![0.0f64; dx.len()];
    let mut want_dw = vec![0.0f64; dw.len()];
    let mut want_db = vec![0.0f64; c.cout];
    for b in 0..c.batch {
        for o in 0..c.cout {
            for t in 0..c.time {
                let r = d.r[(b * c.cout + o) * c.time + t] as f64;
                want_db[o] += r;
                for ci in 0..c.cin {
                    for j in 0..c.k {
                        let back = (c.k - 1 - j) * c.dilation;
                        if back <= t {
                            let xi = (b * c.cin + ci) * c.time + t - back;
                            let wi = (o * c.cin + ci) * c.k + j;
                            want_dx[xi] += d.w[wi] as f64 * r;
                            want_dw[wi] += d.x[xi] as f64 * r;
                        }
                    }
                }
            }
        }
    }
    // f32 sums of up to batch*time = 512 products of magnitude <= 1: 1e-3 is ~100x the typical
    // rounding error and ~100x below the size of a single missing product.
    let check = |what: &str, got: &[f32], want: &[f64]| {
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-3, "{c:?}: {what}[{i}] = {g}, direct sum {w}");
        }
    };
    check("dx", &dx, &want_dx);
    check("dw", &dw, &want_dw);
    check("dbias", &db, &want_db);
}

#[test]
#[should_panic(expected = "conv1d_fwd")]
fn short_buffer_panics_with_the_operation_name() {
    let cpu = CpuBackend::new();
    let c = conv(2, 3, 4, 8, 3, 1);
    let mut y = CpuBuf::zeros(2 * 4 * 8 - 1);
    cpu.conv1d_fwd(&CpuBuf::zeros(2 * 3 * 8), &CpuBuf::zeros(4 * 3 * 3), &CpuBuf::zeros(4), &mut y, c);
}
