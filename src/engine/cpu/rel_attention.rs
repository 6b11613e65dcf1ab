//! CPU twin of `shaders/rel_attention.wgsl`: causal multi-head attention with a learned relative
//! term, over token-major rows (see [`crate::engine::RelAttention`] for the math and layouts).
//!
//! Per (item b, head h) every step is a matrix product on strided views of the `qkv` rows (row
//! stride `3*H*D`), with `G[i, j] = q_i . k_j` and the relative logits `E[i, r] = q_i . rel[h, r]`
//! (both `[T, T]`, so the relative term costs no more memory than `p`; `E` is gathered along the
//! diagonals `r = i - j`, the "direct gather" alternative to Huang's skewing):
//!
//! ```text
//! forward:  s[i, j] = scale * (G[i, j] + E[i, i-j]) for j <= i;  p = row softmax;  out_i = sum_j p[i,j] v_j
//! backward: dP = dOut V^T;  dS = scale * p * (dP - rowsum(p * dP));  dE[i, r] = dS[i, i-r]
//!           dQ = dS K + dE Rel;   dK = dS^T Q;   dV = P^T dOut;   dRel += dE^T Q  (summed over b)
//! ```
//!
//! Items run in parallel with rayon when the work is large enough (each writes its own rows of
//! `out`, `p` and `dqkv`); the relative table's gradient is summed per item and the items' sums
//! added in order, so the result is the same whatever the thread count.

use super::matmul::sgemm;
use crate::engine::{RelAttention, RelDecode};
use rayon::prelude::*;

/// Below this many multiply-adds the items run on one thread.
const PAR_MIN_MACS: usize = 1 << 18;

fn parallel(a: &RelAttention) -> bool {
    a.batch > 1 && a.batch * a.heads * a.time * a.time * a.dim.max(1) >= PAR_MIN_MACS
}

/// Masked softmax of row `i` of `s` (columns `0..=i` live, the rest written 0), in place.
fn softmax_row(row: &mut [f32], i: usize) {
    let live = &mut row[..=i];
    let mx = live.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f32;
    for v in live.iter_mut() {
        *v = (*v - mx).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    live.iter_mut().for_each(|v| *v *= inv);
    row[i + 1..].fill(0.0);
}

/// Writes `out [B, T, H*D]` and `p [B, H, T, T]` (lengths checked by `contract::rel_attention_fwd`).
pub fn forward(qkv: &[f32], rel: &[f32], out: &mut [f32], p: &mut [f32], a: RelAttention) {
    let (hh, d, t, scale) = (a.heads, a.dim, a.time, a.scale());
    let w = a.width();
    if a.batch == 0 || t == 0 || w == 0 {
        return;
    }
    let (row3, tt) = (3 * w, t * t);
    let item = |b: usize, ob: &mut [f32], pb: &mut [f32]| {
        let x = &qkv[b * t * row3..][..t * row3];
        let mut e = vec![0.0f32; tt];
        for h in 0..hh {
            let (q, k, v) = (&x[h * d..], &x[w + h * d..], &x[2 * w + h * d..]);
            let ph = &mut pb[h * tt..][..tt];
            let relh = &rel[h * a.window * d..][..t * d];
            // G [T, T] = Q K^T into p; E [T, T] = Q Rel_h^T.
            sgemm(t, d, t, q, (row3, 1), k, (1, row3), ph, (t, 1), 0.0);
            sgemm(t, d, t, q, (row3, 1), relh, (1, d), &mut e, (t, 1), 0.0);
            for i in 0..t {
                let (pr, er) = (&mut ph[i * t..][..t], &e[i * t..][..t]);
                for j in 0..=i {
                    pr[j] = scale * (pr[j] + er[i - j]);
                }
                softmax_row(pr, i);
            }
            // out [T, D] (row stride H*D) = P V.
            sgemm(t, t, d, ph, (t, 1), v, (row3, 1), &mut ob[h * d..], (w, 1), 0.0);
        }
    };
    let (out, p) = (&mut out[..a.out_len()], &mut p[..a.p_len()]);
    if parallel(&a) {
        out.par_chunks_mut(t * w).zip(p.par_chunks_mut(hh * tt)).enumerate().for_each(|(b, (ob, pb))| item(b, ob, pb));
    } else {
        out.chunks_mut(t * w).zip(p.chunks_mut(hh * tt)).enumerate().for_each(|(b, (ob, pb))| item(b, ob, pb));
    }
}

/// Writes `dqkv [B, T, 3*H*D]` and adds into `drel [H, W, D]` (lengths checked by
/// `contract::rel_attention_bwd`).
pub fn backward(qkv: &[f32], rel: &[f32], p: &[f32], dout: &[f32], dqkv: &mut [f32], drel: &mut [f32], a: RelAttention) {
    let (hh, d, t, scale) = (a.heads, a.dim, a.time, a.scale());
    let w = a.width();
    if a.batch == 0 || t == 0 || w == 0 {
        return;
    }
    let (row3, tt) = (3 * w, t * t);
    // Per item: its dqkv rows, and its share of the relative table's gradient [H, T, D].
    let item = |b: usize, gb: &mut [f32], part: &mut [f32]| {
        let x = &qkv[b * t * row3..][..t * row3];
        let go = &dout[b * t * w..][..t * w];
        let (mut ds, mut de) = (vec![0.0f32; tt], vec![0.0f32; tt]);
        for h in 0..hh {
            let (q, k, v) = (&x[h * d..], &x[w + h * d..], &x[2 * w + h * d..]);
            let ph = &p[(b * hh + h) * tt..][..tt];
            let relh = &rel[h * a.window * d..][..t * d];
            let goh = &go[h * d..];
            // dP [T, T] = dOut V^T, then dS in place; dE gathered from it.
            sgemm(t, d, t, goh, (w, 1), v, (1, row3), &mut ds, (t, 1), 0.0);
            de.fill(0.0);
            for i in 0..t {
                let (dr, pr) = (&mut ds[i * t..][..t], &ph[i * t..][..t]);
                let dot: f32 = dr[..=i].iter().zip(&pr[..=i]).map(|(g, p)| g * p).sum();
                for j in 0..=i {
                    dr[j] = scale * pr[j] * (dr[j] - dot);
                    de[i * t + (i - j)] = dr[j];
                }
                dr[i + 1..].fill(0.0);
            }
            // dQ = dS K + dE Rel_h;  dK = dS^T Q;  dV = P^T dOut (all [T, D], row stride 3*H*D).
            sgemm(t, t, d, &ds, (t, 1), k, (row3, 1), &mut gb[h * d..], (row3, 1), 0.0);
            sgemm(t, t, d, &de, (t, 1), relh, (d, 1), &mut gb[h * d..], (row3, 1), 1.0);
            sgemm(t, t, d, &ds, (1, t), q, (row3, 1), &mut gb[w + h * d..], (row3, 1), 0.0);
            sgemm(t, t, d, ph, (1, t), goh, (w, 1), &mut gb[2 * w + h * d..], (row3, 1), 0.0);
            // dRel_h [T, D] = dE^T Q.
            sgemm(t, t, d, &de, (1, t), q, (row3, 1), &mut part[h * t * d..], (d, 1), 0.0);
        }
    };
    let dqkv = &mut dqkv[..a.qkv_len()];
    let mut parts = vec![0.0f32; a.batch * hh * t * d];
    if parallel(&a) {
        dqkv.par_chunks_mut(t * row3).zip(parts.par_chunks_mut(hh * t * d)).enumerate().for_each(|(b, (gb, pt))| item(b, gb, pt));
    } else {
        dqkv.chunks_mut(t * row3).zip(parts.chunks_mut(hh * t * d)).enumerate().for_each(|(b, (gb, pt))| item(b, gb, pt));
    }
    for part in parts.chunks_exact(hh * t * d) {
        for h in 0..hh {
            let dst = &mut drel[h * a.window * d..][..t * d];
            dst.iter_mut().zip(&part[h * t * d..][..t * d]).for_each(|(g, s)| *g += s);
        }
    }
}

/// Writes `out [B, H*D]` (lengths checked by `contract::rel_attention_decode`). Each item
/// (piece) by itself, in parallel when the batch is large enough: an item's output does not
/// depend on the others, nor on the thread count.
pub fn decode(qkv: &[f32], kc: &[f32], vc: &[f32], rel: &[f32], out: &mut [f32], a: RelDecode) {
    let (hh, d, win, len) = (a.heads, a.dim, a.window, a.len);
    let (w, scale) = (a.width(), a.scale());
    let n = len.min(win);
    let first = len - n;
    // Position-major: each cached position's keys (then values) of every head are one row of
    // `w` floats, read once and in order (the ring is streamed, not strided through head by
    // head); each head's scores and output are the same sums in the same order as head by head.
    let item = |b: usize, o: &mut [f32], s: &mut Vec<f32>| {
        s.resize(hh * n, 0.0);
        let q = &qkv[b * 3 * w..][..w];
        let (kb, vb) = (&kc[b * win * w..][..win * w], &vc[b * win * w..][..win * w]);
        for idx in 0..n {
            let pos = first + idx;
            let k = &kb[(pos % win) * w..][..w];
            for h in 0..hh {
                let r = &rel[(h * win + (len - 1 - pos)) * d..][..d];
                s[h * n + idx] = scale * q_dot_k_plus_rel(&q[h * d..][..d], &k[h * d..][..d], r);
            }
        }
        for row in s.chunks_exact_mut(n) {
            softmax_row(row, n - 1);
        }
        o.fill(0.0);
        for idx in 0..n {
            let v = &vb[((first + idx) % win) * w..][..w];
            for h in 0..hh {
                let pv = s[h * n + idx];
                o[h * d..][..d].iter_mut().zip(&v[h * d..][..d]).for_each(|(o, v)| *o += pv * v);
            }
        }
    };
    let out = &mut out[..a.batch * w];
    if a.batch > 1 && a.batch * hh * n * d * 2 >= PAR_MIN_MACS {
        out.par_chunks_mut(w).enumerate().for_each_init(Vec::new, |s, (b, o)| item(b, o, s));
    } else {
        let mut s = Vec::new();
        out.chunks_mut(w).enumerate().for_each(|(b, o)| item(b, o, &mut s));
    }
}

/// `q . k + q . r` with eight partial sums (so that it vectorises; one position's score of
/// [`decode`]), added pairwise at the end, then the tail.
#[inline(always)]
fn q_dot_k_plus_rel(q: &[f32], k: &[f32], r: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (qc, kc, rc) = (q.chunks_exact(8), k.chunks_exact(8), r.chunks_exact(8));
    let tail: f32 = qc.remainder().iter().zip(kc.remainder().iter().zip(rc.remainder())).map(|(q, (k, r))| q * k + q * r).sum();
    for ((qs, ks), rs) in qc.zip(kc).zip(rc) {
        for l in 0..8 {
            lanes[l] += qs[l] * ks[l] + qs[l] * rs[l];
        }
    }
    let quads = [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
    (quads[0] + quads[2]) + (quads[1] + quads[3]) + tail
}
