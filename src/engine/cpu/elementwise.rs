//! Element-wise ops of the CPU backend: fill, add, strided copies, activations and their
//! backward, the gated WaveNet unit, transposes. Large passes are split across the pool in
//! blocks of `PAR_MIN` elements.

use super::fastmath::{sigmoid, tanh};
use super::PAR_MIN;
use crate::engine::{Act, Strided};
use rayon::prelude::*;

/// Runs `f` over matching chunks of `xs` and `ys`, in parallel when the work is large.
fn zip_chunks<F>(xs: &[f32], ys: &mut [f32], f: F)
where
    F: Fn(&[f32], &mut [f32]) + Sync + Send,
{
    if ys.len() < PAR_MIN {
        f(xs, ys)
    } else {
        ys.par_chunks_mut(PAR_MIN).zip(xs.par_chunks(PAR_MIN)).for_each(|(y, x)| f(x, y));
    }
}

pub(super) fn fill(x: &mut [f32], n: usize, value: f32) {
    x[..n].fill(value);
}

pub(super) fn add(x: &[f32], y: &mut [f32], n: usize) {
    zip_chunks(&x[..n], &mut y[..n], |x, y| {
        for (y, x) in y.iter_mut().zip(x) {
            *y += x;
        }
    });
}

pub(super) fn copy_strided(src: &[f32], dst: &mut [f32], st: Strided) {
    let Strided { rows, cols, src_off, src_stride, dst_off, dst_stride, accumulate } = st;
    for r in 0..rows {
        let s = &src[src_off + r * src_stride..][..cols];
        let d = &mut dst[dst_off + r * dst_stride..][..cols];
        if accumulate {
            d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
        } else {
            d.copy_from_slice(s);
        }
    }
}

pub(super) fn act_fwd(act: Act, x: &[f32], y: &mut [f32], n: usize) {
    zip_chunks(&x[..n], &mut y[..n], |x, y| {
        // One loop per activation, so that each vectorises.
        let pairs = y.iter_mut().zip(x);
        match act {
            Act::Relu => pairs.for_each(|(y, &x)| *y = x.max(0.0)),
            Act::Tanh => pairs.for_each(|(y, &x)| *y = tanh(x)),
            Act::Sigmoid => pairs.for_each(|(y, &x)| *y = sigmoid(x)),
        }
    });
}

pub(super) fn act_bwd(act: Act, y: &[f32], dy: &[f32], dx: &mut [f32], n: usize) {
    let (y, dy) = (&y[..n], &dy[..n]);
    let dx = &mut dx[..n];
    let f = |y: f32, dy: f32| match act {
        Act::Relu => {
            if y > 0.0 {
                dy
            } else {
                0.0
            }
        }
        Act::Tanh => dy * (1.0 - y * y),
        Act::Sigmoid => dy * y * (1.0 - y),
    };
    let body = |(dx, (y, dy)): (&mut [f32], (&[f32], &[f32]))| {
        for ((d, &y), &g) in dx.iter_mut().zip(y).zip(dy) {
            *d = f(y, g);
        }
    };
    if n < PAR_MIN {
        body((dx, (y, dy)));
    } else {
        dx.par_chunks_mut(PAR_MIN).zip(y.par_chunks(PAR_MIN).zip(dy.par_chunks(PAR_MIN))).for_each(body);
    }
}

pub(super) fn gated_fwd(a: &[f32], z: &mut [f32], batch: usize, r: usize, t: usize) {
    let plane = r * t;
    z[..batch * plane].par_chunks_mut(plane.max(1)).enumerate().for_each(|(b, z)| {
        let filt = &a[b * 2 * plane..][..plane];
        let gate = &a[b * 2 * plane + plane..][..plane];
        for ((z, &f), &g) in z.iter_mut().zip(filt).zip(gate) {
            *z = tanh(f) * sigmoid(g);
        }
    });
}

pub(super) fn gated_bwd(a: &[f32], dz: &[f32], da: &mut [f32], batch: usize, r: usize, t: usize) {
    let plane = r * t;
    da[..batch * 2 * plane].par_chunks_mut((2 * plane).max(1)).enumerate().for_each(|(b, da)| {
        let filt = &a[b * 2 * plane..][..plane];
        let gate = &a[b * 2 * plane + plane..][..plane];
        let dz = &dz[b * plane..][..plane];
        let (dfilt, dgate) = da.split_at_mut(plane);
        let inputs = filt.iter().zip(gate).zip(dz);
        for ((df, dg), ((&f, &g), &dz)) in dfilt.iter_mut().zip(dgate.iter_mut()).zip(inputs) {
            let th = tanh(f);
            let sg = sigmoid(g);
            *df = dz * sg * (1.0 - th * th);
            *dg = dz * th * sg * (1.0 - sg);
        }
    });
}

pub(super) fn transpose(x: &[f32], y: &mut [f32], batch: usize, rows: usize, cols: usize) {
    let plane = rows * cols;
    y[..batch * plane].par_chunks_mut(plane.max(1)).enumerate().for_each(|(b, y)| {
        let x = &x[b * plane..][..plane];
        for r in 0..rows {
            for c in 0..cols {
                y[c * rows + r] = x[r * cols + c];
            }
        }
    });
}

/// `sqrt(2 / pi)` and the cubic coefficient of GELU's tanh form.
const GELU_C: f32 = 0.797_884_6;
const GELU_A: f32 = 0.044_715;

multiversion! {
    /// GELU over one block (vectorised: `tanh` is the branch-free fastmath one).
    fn gelu_block(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = 0.5 * x * (1.0 + tanh(GELU_C * (x + GELU_A * x * x * x)));
        }
    }
}

multiversion! {
    /// `dx = dy * gelu'(x)` over one block.
    fn gelu_bwd_block(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        for ((d, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
            let t = tanh(GELU_C * (x + GELU_A * x * x * x));
            *d = g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * x * x));
        }
    }
}

pub(super) fn gelu_fwd(x: &[f32], y: &mut [f32], n: usize) {
    zip_chunks(&x[..n], &mut y[..n], gelu_block);
}

pub(super) fn gelu_bwd(x: &[f32], dy: &[f32], dx: &mut [f32], n: usize) {
    let (x, dy) = (&x[..n], &dy[..n]);
    let dx = &mut dx[..n];
    if n < PAR_MIN {
        gelu_bwd_block(x, dy, dx);
    } else {
        dx.par_chunks_mut(PAR_MIN).zip(x.par_chunks(PAR_MIN).zip(dy.par_chunks(PAR_MIN))).for_each(|(dx, (x, dy))| gelu_bwd_block(x, dy, dx));
    }
}
