//! CPU twin of `shaders/layer_norm.wgsl`: LayerNorm over the last axis of `[rows, width]` (see
//! [`crate::engine::LayerNorm`] for the math). Rows are independent: large passes split them
//! across the pool in blocks of whole rows. The weight and bias gradients are summed per block of
//! `BLOCK_ROWS` rows and the blocks' sums added in order, so the result is the same whatever the
//! thread count.

use super::PAR_MIN;
use crate::engine::LayerNorm;
use rayon::prelude::*;

/// Rows per block of the weight and bias gradient sums.
const BLOCK_ROWS: usize = 64;

/// Runs `f(first row, its rows of out)` over blocks of whole rows of `out` (`out_w` values per
/// row), in parallel when the rows of `width` inputs are many.
fn row_blocks<F>(ln: &LayerNorm, out: &mut [f32], out_w: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let (rows, width) = (ln.rows, ln.width.max(1));
    let per = (PAR_MIN / width).max(1);
    let out = &mut out[..rows * out_w];
    if rows * width < PAR_MIN || rows <= per {
        f(0, out);
    } else {
        out.par_chunks_mut(per * out_w).enumerate().for_each(|(i, o)| f(i * per, o));
    }
}

pub(super) fn forward(x: &[f32], w: &[f32], bias: &[f32], y: &mut [f32], stats: &mut [f32], ln: LayerNorm) {
    let (width, eps) = (ln.width, ln.eps);
    if width == 0 {
        return;
    }
    // The statistics of every row, then the rows from them.
    row_blocks(&ln, stats, 2, |first, stats| {
        for (r, st) in stats.chunks_exact_mut(2).enumerate() {
            let xr = &x[(first + r) * width..][..width];
            let mean = xr.iter().sum::<f32>() / width as f32;
            let var = xr.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / width as f32;
            st[0] = mean;
            st[1] = 1.0 / (var + eps).sqrt();
        }
    });
    let stats = &*stats;
    row_blocks(&ln, y, width, |first, y| {
        for (r, yr) in y.chunks_exact_mut(width).enumerate() {
            let (xr, st) = (&x[(first + r) * width..][..width], &stats[2 * (first + r)..][..2]);
            for (c, yv) in yr.iter_mut().enumerate() {
                *yv = (xr[c] - st[0]) * st[1] * w[c] + bias[c];
            }
        }
    });
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward(x: &[f32], w: &[f32], stats: &[f32], dy: &[f32], dx: &mut [f32], dw: &mut [f32], db: &mut [f32], ln: LayerNorm) {
    let (rows, width) = (ln.rows, ln.width);
    if width == 0 || rows == 0 {
        return;
    }
    let xhat = |r: usize, c: usize| (x[r * width + c] - stats[2 * r]) * stats[2 * r + 1];
    // dx, row by row.
    row_blocks(&ln, dx, width, |first, dx| {
        for (i, dxr) in dx.chunks_exact_mut(width).enumerate() {
            let r = first + i;
            let dyr = &dy[r * width..][..width];
            let (mut mg, mut mgx) = (0.0f32, 0.0f32);
            for c in 0..width {
                let g = dyr[c] * w[c];
                mg += g;
                mgx += g * xhat(r, c);
            }
            let (mg, mgx) = (mg / width as f32, mgx / width as f32);
            let rstd = stats[2 * r + 1];
            for (c, d) in dxr.iter_mut().enumerate() {
                *d += rstd * (dyr[c] * w[c] - mg - xhat(r, c) * mgx);
            }
        }
    });
    // dweight, dbias: per block of rows, then the blocks in order.
    let blocks = rows.div_ceil(BLOCK_ROWS);
    let partial = |blk: usize| {
        let mut s = vec![0.0f32; 2 * width];
        for r in blk * BLOCK_ROWS..((blk + 1) * BLOCK_ROWS).min(rows) {
            for c in 0..width {
                let g = dy[r * width + c];
                s[c] += g * xhat(r, c);
                s[width + c] += g;
            }
        }
        s
    };
    let sums: Vec<Vec<f32>> = if rows * width < PAR_MIN {
        (0..blocks).map(partial).collect()
    } else {
        (0..blocks).into_par_iter().map(partial).collect()
    };
    for s in sums {
        for c in 0..width {
            dw[c] += s[c];
            db[c] += s[width + c];
        }
    }
}
