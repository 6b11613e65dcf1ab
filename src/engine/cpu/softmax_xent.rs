//! Softmax with cross-entropy of the CPU backend: per row the loss, the hit and the gradient of
//! the logits, in three vectorised passes, blocks of rows across the pool.

use super::fastmath;
use crate::engine::Xent;
use rayon::prelude::*;

/// Elements of `[rows, V]` per parallel task of [`CpuBackend::softmax_xent`].
const SOFTMAX_BLOCK: usize = 1 << 13;

/// Lanes of the vectorised reductions below (one 512-bit register, or two 256-bit ones).
const LANES: usize = 16;

/// `max(x)` over 16 lanes (NaN ignored, as `f32::max` does), then the lanes pairwise.
#[inline(always)]
fn lane_max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for l in 0..LANES {
            lanes[l] = lanes[l].max(c[l]);
        }
    }
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// `sum(x)` over 16 lanes, then the lanes pairwise.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..LANES {
            lanes[l] += c[l];
        }
    }
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            lanes[l] += lanes[l + w];
        }
    }
    lanes[0] + tail
}

multiversion! {
    /// [`Backend::softmax_xent`] over a block of rows `logits [rows, v]` (targets already checked):
    /// per row the maximum, `d = e^{x - max}` and their sum (16-lane partial sums), then
    /// `d = d / sum * grad_scale` and `d[target] -= grad_scale`; the stats from the sum and the
    /// first position of the maximum. Three vectorised passes over the row, all in L1.
    fn softmax_xent_rows(logits: &[f32], targets: &[u32], dlogits: &mut [f32], stats: &mut [f32], v: usize, grad_scale: f32) {
        for ((row, d), (st, &target)) in logits.chunks_exact(v).zip(dlogits.chunks_exact_mut(v)).zip(stats.chunks_exact_mut(2).zip(targets)) {
            let target = target as usize;
            let max = lane_max(row);
            // The first maximum (0 when every logit is NaN, as a plain scan would give).
            let best = row.iter().position(|&x| x == max).unwrap_or(0);
            for (dj, &x) in d.iter_mut().zip(row) {
                *dj = fastmath::exp(x - max);
            }
            let sum = lane_sum(d);
            let scale = grad_scale / sum;
            for dj in d.iter_mut() {
                *dj *= scale;
            }
            d[target] -= grad_scale;
            st[0] = sum.ln() - (row[target] - max);
            st[1] = if best == target { 1.0 } else { 0.0 };
        }
    }
}

pub(super) fn softmax_xent(logits: &[f32], targets: &[u32], dlogits: &mut [f32], stats: &mut [f32], x: Xent) {
    let Xent { n, v, grad_scale } = x;
    let (logits, targets) = (&logits[..n * v], &targets[..n]);
    if v == 0 {
        return;
    }
    for &t in targets {
        assert!((t as usize) < v, "softmax_xent: target {t} outside {v} classes");
    }
    // Blocks of rows per task: enough work per task to pay for the hand-off.
    let rows = (SOFTMAX_BLOCK / v).max(1);
    dlogits[..n * v]
        .par_chunks_mut(rows * v)
        .zip(stats[..2 * n].par_chunks_mut(2 * rows))
        .enumerate()
        .for_each(|(blk, (d, st))| {
            let r0 = blk * rows;
            let nr = st.len() / 2;
            softmax_xent_rows(&logits[r0 * v..(r0 + nr) * v], &targets[r0..r0 + nr], d, st, v, grad_scale);
        });
}
