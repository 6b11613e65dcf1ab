//! Bias ops of the CPU backend: adding a per-channel bias to `[outer, channels, inner]`, and its
//! gradient summed in f64 per channel.

use super::PAR_MIN;
use rayon::prelude::*;

multiversion! {
    /// One task of [`Backend::bias_grad`]: `db[c] += sum_{o,i} dy[o, c0 + c, i]` for the channels
    /// `c0 .. c0 + db.len()` of `dy [outer, channels, inner]` (`row = channels * inner`), summed in
    /// f64 over o in order, reading each row's contiguous run of these channels.
    fn bias_grad_block(dy: &[f32], db: &mut [f32], c0: usize, outer: usize, row: usize, inner: usize) {
        let mut acc = vec![0.0f64; db.len()];
        for o in 0..outer {
            let run = &dy[o * row + c0 * inner..][..db.len() * inner];
            if inner == 1 {
                acc.iter_mut().zip(run).for_each(|(a, &v)| *a += v as f64);
            } else {
                for (a, seg) in acc.iter_mut().zip(run.chunks_exact(inner)) {
                    *a += seg.iter().map(|&v| v as f64).sum::<f64>();
                }
            }
        }
        db.iter_mut().zip(&acc).for_each(|(d, &a)| *d += a as f32);
    }
}

pub(super) fn bias_add(y: &mut [f32], bias: &[f32], outer: usize, channels: usize, inner: usize) {
    let row = channels * inner;
    let bias = &bias[..channels];
    if row == 0 {
        return;
    }
    // Whole rows per task, about PAR_MIN elements each.
    let body = |y: &mut [f32]| {
        for y in y.chunks_exact_mut(row) {
            if inner == 1 {
                // A Linear layer's row: one vectorised pass.
                y.iter_mut().zip(bias).for_each(|(v, &b)| *v += b);
            } else {
                for (seg, &b) in y.chunks_exact_mut(inner).zip(bias) {
                    seg.iter_mut().for_each(|v| *v += b);
                }
            }
        }
    };
    let y = &mut y[..outer * row];
    if outer * row < PAR_MIN {
        body(y);
    } else {
        y.par_chunks_mut((PAR_MIN / row).max(1) * row).for_each(body);
    }
}

pub(super) fn bias_grad(dy: &[f32], dbias: &mut [f32], outer: usize, channels: usize, inner: usize) {
    // Summed in f64 per channel, over o in order (so the result does not depend on how the
    // work is split), reading dy row by row: a block of channels per task, each task walking
    // every outer row and adding that row's contiguous run of its channels into its sums.
    let row = channels * inner;
    let dy = &dy[..outer * row];
    let dbias = &mut dbias[..channels];
    let threads = rayon::current_num_threads();
    if outer * row < PAR_MIN || threads < 2 || channels < 2 {
        bias_grad_block(dy, dbias, 0, outer, row, inner);
    } else {
        let block = channels.div_ceil(threads);
        dbias.par_chunks_mut(block).enumerate().for_each(|(i, db)| bias_grad_block(dy, db, i * block, outer, row, inner));
    }
}
