//! The NADE head's op on the CPU ([`crate::engine::nade`]): the reference for `shaders/nade.wgsl`.
//! Rows run in parallel (rayon), the keys of a row in order. The backward's `dW`, `dV` are summed
//! per block of rows into partials that are then added in block order; the blocks depend on `n`
//! only, so the result does not depend on the thread count.

use super::fastmath;
use super::CpuBuf;
use crate::engine::contract;
use crate::engine::nade::{grad_lens, in_lens, Nade, NadeGrads, NadeIn};
use crate::engine::roll::{bce_one, sigmoid};
use rayon::prelude::*;

/// Row blocks of the backward (each its own `dW`, `dV` partial).
const BLOCKS: usize = 16;

pub(super) fn nade_fwd(x: NadeIn<'_, CpuBuf>, logits: &mut CpuBuf, stats: &mut CpuBuf, d: Nade) {
    contract::nade_fwd(&d, in_lens(&x, |b| b.len()), [logits.len(), stats.len()]);
    let Nade { n, k, h, .. } = d;
    if n == 0 || k == 0 {
        return;
    }
    let (w, v) = (&x.w[..k * h], &x.v[..k * h]);
    let rows = logits[..n * k].par_chunks_mut(k).zip(stats[..n].par_iter_mut()).enumerate();
    rows.for_each(|(r, (lg, st))| {
        let (bv, y, rw) = (&x.bv[r * k..][..k], &x.y[r * k..][..k], x.rw[r]);
        let mut a = x.bh[r * h..][..h].to_vec();
        let mut hid = vec![0.0f32; h];
        let mut sum = 0.0f32;
        for i in 0..k {
            sigmoids(&a, &mut hid);
            let logit = bv[i] + dot(&v[i * h..][..h], &hid);
            lg[i] = logit;
            sum += bce_one(logit, y[i]);
            if y[i] != 0.0 {
                axpy(y[i], &w[i * h..][..h], &mut a);
            }
        }
        *st = rw * sum;
    });
}

pub(super) fn nade_bwd(x: NadeIn<'_, CpuBuf>, logits: &CpuBuf, g: NadeGrads<'_, CpuBuf>, d: Nade) {
    contract::nade_bwd(&d, in_lens(&x, |b| b.len()), logits.len(), grad_lens(&g, |b| b.len()));
    let Nade { n, k, h, grad_scale } = d;
    if n == 0 || k == 0 {
        return;
    }
    let (w, v) = (&x.w[..k * h], &x.v[..k * h]);
    let per = n.div_ceil(BLOCKS);
    let dbh = g.dbh[..n * h].par_chunks_mut(per * h);
    let dbv = g.dbv[..n * k].par_chunks_mut(per * k);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dbh
        .zip(dbv)
        .enumerate()
        .map(|(blk, (dbh, dbv))| {
            let (mut dw, mut dv) = (vec![0.0f32; k * h], vec![0.0f32; k * h]);
            let (mut a, mut hid, mut acc) = (vec![0.0f32; h], vec![0.0f32; h], vec![0.0f32; h]);
            for (j, (dbh, dbv)) in dbh.chunks_mut(h).zip(dbv.chunks_mut(k)).enumerate() {
                let r = blk * per + j;
                let (y, lg) = (&x.y[r * k..][..k], &logits[r * k..][..k]);
                let scale = x.rw[r] * grad_scale;
                a.copy_from_slice(&x.bh[r * h..][..h]);
                for i in 0..k {
                    if y[i] != 0.0 {
                        axpy(y[i], &w[i * h..][..h], &mut a);
                    }
                }
                acc.fill(0.0);
                for i in (0..k).rev() {
                    if y[i] != 0.0 {
                        axpy(-y[i], &w[i * h..][..h], &mut a);
                        // dW[i] += v_i * (sum of da over the keys above i)
                        axpy(y[i], &acc, &mut dw[i * h..][..h]);
                    }
                    sigmoids(&a, &mut hid);
                    let gi = (sigmoid(lg[i]) - y[i]) * scale;
                    dbv[i] = gi;
                    step_down(gi, &v[i * h..][..h], &hid, &mut dv[i * h..][..h], &mut acc);
                }
                dbh.copy_from_slice(&acc);
            }
            (dw, dv)
        })
        .collect();
    for (pw, pv) in &partials {
        axpy(1.0, pw, &mut g.dw[..k * h]);
        axpy(1.0, pv, &mut g.dv[..k * h]);
    }
}

multiversion! {
    /// `out[c] = sigmoid(a[c])`.
    fn sigmoids(a: &[f32], out: &mut [f32]) {
        out.iter_mut().zip(a).for_each(|(o, &x)| *o = fastmath::sigmoid(x));
    }
}

multiversion! {
    /// `y += alpha x`.
    fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        y.iter_mut().zip(x).for_each(|(y, &x)| *y += alpha * x);
    }
}

multiversion! {
    /// One key of the backward: `dv += g hid`, `acc += g v hid (1 - hid)`.
    fn step_down(g: f32, v: &[f32], hid: &[f32], dv: &mut [f32], acc: &mut [f32]) {
        for (((dv, acc), &vc), &hc) in dv.iter_mut().zip(acc.iter_mut()).zip(v).zip(hid) {
            *dv += g * hc;
            *acc += g * vc * hc * (1.0 - hc);
        }
    }
}

/// `sum_c a[c] b[c]` in increasing `c`, one chain.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |s, (&x, &y)| s + x * y)
}
