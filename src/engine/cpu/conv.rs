//! CPU twin of `shaders/conv1d.wgsl`: causal dilated Conv1d forward and backward.
//!
//! Layout (PyTorch): `x [B, Cin, T]`, `w [Cout, Cin, K]`, `bias [Cout]`, `y [B, Cout, T]`.
//! Tap `j` looks back `s_j = (K-1-j) * dilation` steps:
//!
//! ```text
//! y[b,o,t] = bias[o] + sum_{c,j} w[o,c,j] * x[b,c,t-s_j]      (x at negative time = 0)
//! ```
//!
//! Per batch item `b` and tap `j` that is one matrix product on shifted views, with no copies:
//! `W_j = w[:, :, j]` is a `[Cout, Cin]` view with strides `(Cin*K, K)`, and
//!
//! ```text
//! forward:         y[b][:, s..T]    += W_j   @ x[b][:, 0..T-s]
//! backward input:  dx[b][:, 0..T-s] += W_j^T @ dy[b][:, s..T]
//! backward weight: W_j-grad         += dy[b][:, s..T] @ x[b][:, 0..T-s]^T
//! ```
//!
//! (the weight gradient of all taps at once when few taps fall in the padding: see
//! `weight_grad_range`).
//!
//! A tap with `s >= T` only ever sees the padding and contributes nothing (its weight gradient
//! stays zero). Work is split across batch items with rayon when it is large enough; the weight
//! gradient is reduced from per-chunk partial sums in a fixed order over chunks fixed by the batch
//! alone, so it depends neither on how rayon schedules the chunks nor on how many threads it has.

use super::matmul::sgemm;
use crate::engine::Conv1d;
use rayon::prelude::*;

/// Below this many multiply-adds a conv runs on one thread (rayon's overhead would dominate).
const PAR_MIN_MACS: usize = 1 << 18;

/// Multiply-adds of one pass over the whole batch (forward, backward-input and backward-weight
/// each cost about this much).
fn macs(c: &Conv1d) -> usize {
    c.batch * c.cout * c.cin * c.k * c.time
}

/// Look-back of tap `j` in time steps (saturating: a huge dilation only means "all padding").
fn shift(c: &Conv1d, j: usize) -> usize {
    (c.k - 1 - j).saturating_mul(c.dilation)
}

/// `y [B, Cout, T] = conv(x) + bias`; overwrites `y`. (Lengths checked by `contract::conv1d_fwd`, as
/// for the two backward passes.)
pub fn forward(x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32], c: Conv1d) {
    let (xs, ys) = (c.cin * c.time, c.cout * c.time);
    if ys == 0 {
        return;
    }
    let one = |b: usize, yb: &mut [f32]| {
        let xb = &x[b * xs..][..xs];
        for (o, row) in yb.chunks_exact_mut(c.time).enumerate() {
            row.fill(bias[o]);
        }
        for j in 0..c.k {
            let s = shift(&c, j);
            if s >= c.time {
                continue;
            }
            let n = c.time - s;
            sgemm(c.cout, c.cin, n, &w[j..], (c.cin * c.k, c.k), xb, (c.time, 1), &mut yb[s..], (c.time, 1), 1.0);
        }
    };
    let y = &mut y[..c.batch * ys];
    if macs(&c) < PAR_MIN_MACS {
        y.chunks_exact_mut(ys).enumerate().for_each(|(b, yb)| one(b, yb));
    } else {
        y.par_chunks_exact_mut(ys).enumerate().for_each(|(b, yb)| one(b, yb));
    }
}

/// `dx [B, Cin, T] (+)= d/dx` from `dy [B, Cout, T]`; `+=` when `accumulate`, else overwrites.
pub fn backward_input(dy: &[f32], w: &[f32], dx: &mut [f32], c: Conv1d, accumulate: bool) {
    let (xs, ys) = (c.cin * c.time, c.cout * c.time);
    if xs == 0 {
        return;
    }
    let one = |b: usize, dxb: &mut [f32]| {
        let dyb = &dy[b * ys..][..ys];
        if !accumulate {
            dxb.fill(0.0);
        }
        for j in 0..c.k {
            let s = shift(&c, j);
            if s >= c.time {
                continue;
            }
            let n = c.time - s;
            // W_j^T: element (c, o) = w[o, c, j], strides (K, Cin*K).
            sgemm(c.cin, c.cout, n, &w[j..], (c.k, c.cin * c.k), &dyb[s..], (c.time, 1), dxb, (c.time, 1), 1.0);
        }
    };
    let dx = &mut dx[..c.batch * xs];
    if macs(&c) < PAR_MIN_MACS {
        dx.chunks_exact_mut(xs).enumerate().for_each(|(b, dxb)| one(b, dxb));
    } else {
        dx.par_chunks_exact_mut(xs).enumerate().for_each(|(b, dxb)| one(b, dxb));
    }
}

/// Adds the weight gradient of batch items `batches` to `dw [Cout, Cin, K]`.
///
/// Two ways to the same sums, chosen by how much of the kernel sees data:
/// * mostly data (`useful >= 3/4`): the shifted inputs of all taps are laid out once per item as
///   `cols[(c, j), t] = x[b, c, t - s_j]` (zero in the padding), so the item's whole gradient is
///   one product `dw [Cout, Cin*K] += dy[b] [Cout, T] @ cols^T [T, Cin*K]` — K times wider than a
///   per-tap product, which amortises sgemm's packing of `dy` (about 1.3x faster at T = 128);
/// * mostly padding (large dilations): one product per live tap on shifted views,
///   `W_j-grad [Cout, Cin] += dy[b][:, s..T] @ x[b][:, 0..T-s]^T`, which multiplies no zeros.
fn weight_grad_range(x: &[f32], dy: &[f32], dw: &mut [f32], c: &Conv1d, batches: std::ops::Range<usize>) {
    let (xs, ys) = (c.cin * c.time, c.cout * c.time);
    let ck = c.cin * c.k;
    let live: usize = (0..c.k).map(|j| c.time.saturating_sub(shift(c, j))).sum();
    if 4 * live >= 3 * c.k * c.time {
        let mut cols = vec![0.0f32; ck * c.time];
        for b in batches {
            let (xb, dyb) = (&x[b * xs..][..xs], &dy[b * ys..][..ys]);
            for (row, col) in cols.chunks_exact_mut(c.time).enumerate() {
                let (ci, j) = (row / c.k, row % c.k);
                let s = shift(c, j).min(c.time);
                col[..s].fill(0.0);
                col[s..].copy_from_slice(&xb[ci * c.time..][..c.time - s]);
            }
            sgemm(c.cout, c.time, ck, dyb, (c.time, 1), &cols, (1, c.time), dw, (ck, 1), 1.0);
        }
    } else {
        for b in batches {
            let (xb, dyb) = (&x[b * xs..][..xs], &dy[b * ys..][..ys]);
            for j in 0..c.k {
                let s = shift(c, j);
                if s >= c.time {
                    continue;
                }
                // [Cout, T-s] @ [T-s, Cin]: dy shifted by s, x read transposed (strides (1, T)).
                sgemm(c.cout, c.time - s, c.cin, &dyb[s..], (c.time, 1), xb, (1, c.time), &mut dw[j..], (ck, c.k), 1.0);
            }
        }
    }
}

/// Number of batch chunks whose partial weight gradients are reduced in order (a constant, so
/// that the result does not depend on the thread count).
const WGRAD_CHUNKS: usize = 8;

/// `dw [Cout, Cin, K] += d/dw`, `dbias [Cout] += d/dbias` (both accumulate).
pub fn backward_weight(x: &[f32], dy: &[f32], dw: &mut [f32], dbias: &mut [f32], c: Conv1d) {
    let ys = c.cout * c.time;
    let wn = c.cout * c.cin * c.k;
    if c.batch == 0 || c.time == 0 {
        return;
    }

    // Bias: per channel, summed in f64 over batch and time (the same sums however the channels
    // are split between threads).
    let channel_sum = |o: usize, db: &mut f32| {
        let s: f64 =
            (0..c.batch).map(|b| dy[b * ys + o * c.time..][..c.time].iter().map(|&v| v as f64).sum::<f64>()).sum();
        *db += s as f32;
    };
    if c.batch * ys < PAR_MIN_MACS {
        dbias[..c.cout].iter_mut().enumerate().for_each(|(o, db)| channel_sum(o, db));
    } else {
        dbias[..c.cout].par_iter_mut().enumerate().for_each(|(o, db)| channel_sum(o, db));
    }

    if macs(&c) < PAR_MIN_MACS || c.batch < 2 {
        weight_grad_range(x, dy, &mut dw[..wn], &c, 0..c.batch);
        return;
    }
    // One partial dw per chunk of batch items, then summed in chunk order into dw. The chunks
    // depend on the batch alone, never on the pool's size: the sums, and so a whole training run,
    // are the same bits on 1 thread or 64.
    let chunk = c.batch.div_ceil(WGRAD_CHUNKS);
    let partials: Vec<Vec<f32>> = (0..c.batch.div_ceil(chunk))
        .into_par_iter()
        .map(|i| {
            let mut part = vec![0.0f32; wn];
            weight_grad_range(x, dy, &mut part, &c, i * chunk..((i + 1) * chunk).min(c.batch));
            part
        })
        .collect();
    for part in &partials {
        dw[..wn].iter_mut().zip(part).for_each(|(d, p)| *d += p);
    }
}
