//! CPU twin of `shaders/attention.wgsl`: causal multi-head attention (see
//! [`crate::engine::Attention`] for the math).
//!
//! Layout: `q, k, v, out [B, H*D, T]`, so head `h` of item `b` is one contiguous `[D, T]` block
//! (index `b*H + h`); `p [B, H, T, T]`, one contiguous `[T, T]` block per (b, h). Per block every
//! step is a matrix product on strided views (no copies), with `G[t, i] = q_t . k_i` and
//! `s[t, j] = scale * G[t, j - shift]`:
//!
//! ```text
//! forward:  G  [T, T]  = Q^T K                         (Q, K as [D, T])
//!           p  [T, T]  = masked row softmax of scale * G shifted right by `shift`
//!           out[D, T]  = V P^T
//! backward: dP [T, T]  = dOut^T V;   dS = p * (dP - rowsum(p * dP))
//!           dv [D, T]  = dOut P
//!           dq [D, T]  = scale * K[:, 0..T-shift] dS[:, shift..]^T
//!           dk [D, T-shift] = scale * Q dS[:, shift..]   (the last `shift` columns 0)
//! ```
//!
//! The (b, h) blocks are independent: they run in parallel with rayon when the work is large
//! enough, each block summed the same way whatever the thread count.

use super::matmul::sgemm;
use crate::engine::{Attention, Qkv};
use rayon::prelude::*;

/// Below this many multiply-adds the blocks run on one thread.
const PAR_MIN_MACS: usize = 1 << 18;

/// Multiply-adds of one pass (one of the products above, over every block).
fn macs(a: &Attention) -> usize {
    a.batch * a.heads * a.time * a.time * a.dim.max(1)
}

/// Runs `f(block index, chunks...)` over the (b, h) blocks, in parallel when large enough.
fn for_blocks<F>(a: &Attention, chunks: Vec<(&mut [f32], usize)>, f: F)
where
    F: Fn(usize, &mut [&mut [f32]]) + Sync + Send,
{
    let n = a.batch * a.heads;
    // Split every output into its n per-block chunks, then regroup per block.
    let mut per_block: Vec<Vec<&mut [f32]>> = (0..n).map(|_| Vec::with_capacity(chunks.len())).collect();
    for (buf, len) in chunks {
        for (blk, c) in buf[..n * len].chunks_exact_mut(len).enumerate() {
            per_block[blk].push(c);
        }
    }
    if macs(a) < PAR_MIN_MACS {
        per_block.iter_mut().enumerate().for_each(|(i, c)| f(i, c));
    } else {
        per_block.par_iter_mut().enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Writes `out [B, H*D, T]` and `p [B, H, T, T]` (lengths checked by `contract::attention_fwd`).
pub fn forward(q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], p: &mut [f32], a: Attention) {
    let (nq, np) = (a.qkv_len(), a.p_len());
    let (d, t, shift, scale) = (a.dim, a.time, a.shift, a.scale());
    if nq == 0 && np == 0 {
        return;
    }
    let (dt, tt) = (d * t, t * t);
    for_blocks(&a, vec![(out, dt), (p, tt)], |blk, bufs| {
        let [ob, pb] = bufs else { unreachable!() };
        let (qb, kb, vb) = (&q[blk * dt..][..dt], &k[blk * dt..][..dt], &v[blk * dt..][..dt]);
        pb.fill(0.0);
        if shift >= t {
            ob.fill(0.0);
            return;
        }
        let m = t - shift; // key columns in use: i = j - shift in 0..m
        // G[t, i] for i < m, stored at p[t, shift + i] (row stride T); the mask is applied below.
        if d > 0 {
            sgemm(t, d, m, qb, (1, t), kb, (t, 1), &mut pb[shift..], (t, 1), 0.0);
        }
        for (row, pr) in pb.chunks_exact_mut(t).enumerate() {
            if row < shift {
                pr.fill(0.0); // no allowed key: p = 0 (the product above wrote G here)
                continue;
            }
            let live = &mut pr[shift..=row];
            let mx = live.iter().fold(f32::NEG_INFINITY, |mx, &g| mx.max(g * scale));
            let mut sum = 0.0f32;
            for x in live.iter_mut() {
                *x = (*x * scale - mx).exp();
                sum += *x;
            }
            let inv = 1.0 / sum;
            live.iter_mut().for_each(|x| *x *= inv);
            pr[row + 1..].fill(0.0);
        }
        // out [D, T] = V [D, T] @ P^T (P read with strides (1, T)).
        sgemm(d, t, t, vb, (t, 1), pb, (1, t), ob, (t, 1), 0.0);
    });
}

/// Writes `dq, dk, dv [B, H*D, T]` from `dout` and the saved `p` (lengths checked by
/// `contract::attention_bwd`).
pub fn backward(qkv: Qkv<&[f32]>, p: &[f32], dout: &[f32], grads: Qkv<&mut [f32]>, a: Attention) {
    let (Qkv { q, k, v }, Qkv { q: dq, k: dk, v: dv }) = (qkv, grads);
    let nq = a.qkv_len();
    let (d, t, shift, scale) = (a.dim, a.time, a.shift, a.scale());
    if nq == 0 {
        return;
    }
    let (dt, tt) = (d * t, t * t);
    for_blocks(&a, vec![(dq, dt), (dk, dt), (dv, dt)], |blk, bufs| {
        let [dqb, dkb, dvb] = bufs else { unreachable!() };
        let (qb, kb, vb) = (&q[blk * dt..][..dt], &k[blk * dt..][..dt], &v[blk * dt..][..dt]);
        let (pb, gb) = (&p[blk * tt..][..tt], &dout[blk * dt..][..dt]);
        // dv [D, T] = dOut [D, T] @ P [T, T]
        sgemm(d, t, t, gb, (t, 1), pb, (t, 1), dvb, (t, 1), 0.0);
        if shift >= t {
            dqb.fill(0.0);
            dkb.fill(0.0);
            return;
        }
        // dP [T, T] = dOut^T V, then dS in place, row by row (0 where p is masked).
        let mut ds = vec![0.0f32; tt];
        sgemm(t, d, t, gb, (1, t), vb, (t, 1), &mut ds, (t, 1), 0.0);
        for (row, (dr, pr)) in ds.chunks_exact_mut(t).zip(pb.chunks_exact(t)).enumerate() {
            if row < shift {
                dr.fill(0.0);
                continue;
            }
            let dot: f32 = dr[shift..=row].iter().zip(&pr[shift..=row]).map(|(g, p)| g * p).sum();
            dr[..shift].fill(0.0);
            for (g, &pv) in dr[shift..=row].iter_mut().zip(&pr[shift..=row]) {
                *g = pv * (*g - dot);
            }
            dr[row + 1..].fill(0.0);
        }
        let m = t - shift;
        // dq [D, T] = scale * K[:, 0..m] @ dS[:, shift..]^T: b[i, t] = ds[t*T + shift + i].
        sgemm(d, m, t, kb, (t, 1), &ds[shift..], (1, t), dqb, (t, 1), 0.0);
        dqb.iter_mut().for_each(|x| *x *= scale);
        // dk [D, 0..m] = scale * Q @ dS[:, shift..]: b[t, i] = ds[t*T + shift + i].
        sgemm(d, t, m, qb, (t, 1), &ds[shift..], (t, 1), dkb, (t, 1), 0.0);
        for row in dkb.chunks_exact_mut(t) {
            row[..m].iter_mut().for_each(|x| *x *= scale);
            row[m..].fill(0.0);
        }
    });
}
