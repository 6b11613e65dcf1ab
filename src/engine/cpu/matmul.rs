//! The matrix product of the CPU backend: [`sgemm`] over `matrixmultiply` on strided views (large
//! products split in blocks of rows across the pool), a one-row product for generation, and
//! [`matmul`], the op.

use crate::engine::MatMul;
use rayon::prelude::*;

/// `c = a b + beta * c` on strided views: a wrapper over `matrixmultiply::sgemm` (built without
/// its own threads: the parallelism is rayon's, here and in the callers).
/// `(rs, cs)` are the row and column strides of each matrix, in elements.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    c: &mut [f32],
    (rsc, csc): (usize, usize),
    beta: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    // The last element each view touches must lie inside its slice: checked here, once, so that
    // the unsafe call below only ever sees valid views.
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    if k > 0 {
        assert!(last(m, k, rsa, csa) < a.len(), "sgemm: A view out of bounds");
        assert!(last(k, n, rsb, csb) < b.len(), "sgemm: B view out of bounds");
    }
    assert!(last(m, n, rsc, csc) < c.len(), "sgemm: C view out of bounds");
    if m <= SMALL_M {
        small_gemm(m, k, n, a, (rsa, csa), b, (rsb, csb), c, (rsc, csc), beta);
        return;
    }
    // A large product asked from outside the thread pool: blocks of rows of C on the pool's
    // threads, each a single-threaded product (inside the pool — the batch chunks of the LSTM
    // recurrence, the convolutions' batch items — the caller is already parallel). Every element
    // of C is summed exactly as in one whole product, so the split does not change the result.
    let threads = rayon::current_num_threads();
    if threads > 1
        && rayon::current_thread_index().is_none()
        && csc == 1
        && rsc >= n
        && m >= 2 * PAR_ROW_BLOCK
        && m * k * n > PAR_MIN_MACS
    {
        let rows = m.div_ceil(threads).next_multiple_of(PAR_ROW_BLOCK).min(m);
        let c = &mut c[..(m - 1) * rsc + n];
        c.par_chunks_mut(rows * rsc).enumerate().for_each(|(i, cb)| {
            let r0 = i * rows;
            let mr = rows.min(m - r0);
            sgemm(mr, k, n, &a[r0 * rsa..], (rsa, csa), b, (rsb, csb), cb, (rsc, 1), beta);
        });
        return;
    }
    // SAFETY: every view was checked against its slice above; c does not alias a or b (&mut).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            rsc as isize,
            csc as isize,
        );
    }
}

/// A product of more than this many multiply-adds, asked from outside the thread pool, is split
/// in blocks of rows across the pool (see [`sgemm`]). Smaller ones (the batch-1 window's input
/// projections, 128 x 128 x 512) lose more to waking a pool thread than the split saves: batch-1
/// sliding-window generation ran at 1.24 ms per token on 2 threads, 0.90 on one.
const PAR_MIN_MACS: usize = 1 << 23;
/// Rows of C per block are a multiple of this (a multiple of the sgemm kernels' row tile).
const PAR_ROW_BLOCK: usize = 16;

/// Products with at most this many rows of A (one token at a time in generation: a row vector
/// times a matrix) skip `matrixmultiply`, whose packing and thread hand-off cost more than the
/// arithmetic there (an LSTM layer at batch 1 made 2x128 such calls per window: 16 ms per token).
/// Kept at one row: with up to 4 (the LSTM's per-thread chunks at batch 8), the other summation
/// order alone moved the 300-step CPU-vs-GPU training curves of `tests/gpu_lstm.rs` past its bound.
const SMALL_M: usize = 1;

multiversion! {
    /// `c = a b + beta c` for a few rows, on the same strided views as [`sgemm`] (already checked by
    /// it), one row of C at a time on this thread: as a sum of rows of B scaled by A's entries when
    /// B's rows are contiguous, as dot products with B's columns when those are, else plainly.
    /// (Compiled per instruction set: the same operations in the same order on every path.)
    #[allow(clippy::too_many_arguments)]
    fn small_gemm(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        sa: (usize, usize),
        b: &[f32],
        sb: (usize, usize),
        c: &mut [f32],
        sc: (usize, usize),
        beta: f32,
    ) {
        let ((rsa, csa), (rsb, csb), (rsc, csc)) = (sa, sb, sc);
        let mut acc = vec![0.0f32; n];
        let mut arow = vec![0.0f32; k];
        for i in 0..m {
            arow.iter_mut().enumerate().for_each(|(p, v)| *v = a[i * rsa + p * csa]);
            if k == 0 {
                acc.fill(0.0);
            } else if csb == 1 {
                acc.iter_mut().zip(&b[..n]).for_each(|(s, &x)| *s = arow[0] * x);
                for (p, &ap) in arow.iter().enumerate().skip(1) {
                    acc.iter_mut().zip(&b[p * rsb..][..n]).for_each(|(s, &x)| *s += ap * x);
                }
            } else if rsb == 1 {
                for (j, s) in acc.iter_mut().enumerate() {
                    *s = dot(&arow, &b[j * csb..][..k]);
                }
            } else {
                for (j, s) in acc.iter_mut().enumerate() {
                    *s = arow.iter().enumerate().map(|(p, &ap)| ap * b[p * rsb + j * csb]).sum();
                }
            }
            for (j, &v) in acc.iter().enumerate() {
                let cij = &mut c[i * rsc + j * csc];
                // beta = 0 overwrites (whatever C held, NaN included), as sgemm does.
                *cij = if beta == 0.0 { v } else { v + beta * *cij };
            }
        }
    }
}

/// `x . y` with eight partial sums (so that it vectorises), added pairwise at the end.
#[inline(always)]
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = xc.remainder().iter().zip(yc.remainder()).map(|(a, b)| a * b).sum();
    for (xs, ys) in xc.zip(yc) {
        for l in 0..8 {
            lanes[l] += xs[l] * ys[l];
        }
    }
    let quads = [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
    (quads[0] + quads[2]) + (quads[1] + quads[3]) + tail
}

pub(super) fn matmul(a: &[f32], b: &[f32], c: &mut [f32], mm: MatMul) {
    let MatMul { m, k, n, trans_a, trans_b, accumulate } = mm;
    let sa = if trans_a { (1, m) } else { (k, 1) };
    let sb = if trans_b { (1, k) } else { (n, 1) };
    let beta = if accumulate { 1.0 } else { 0.0 };
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    sgemm(m, k, n, a, sa, b, sb, c, (n, 1), beta);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// `sgemm` on every layout, below and above `SMALL_M` rows, against an f64 triple loop.
    #[test]
    fn sgemm_matches_a_plain_product_for_few_and_many_rows() {
        let mut rng = Rng::new(5);
        let (k, n) = (37, 19);
        for m in [1, 2, SMALL_M, SMALL_M + 1, 9] {
            for (ta, tb, beta) in [(false, false, 0.0), (false, true, 1.0), (true, false, 1.0), (true, true, 0.0)] {
                let a: Vec<f32> = (0..m * k).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
                let b: Vec<f32> = (0..k * n).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
                let c0: Vec<f32> = (0..m * n).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
                let sa = if ta { (1, m) } else { (k, 1) };
                let sb = if tb { (1, k) } else { (n, 1) };
                let mut c = c0.clone();
                sgemm(m, k, n, &a, sa, &b, sb, &mut c, (n, 1), beta);
                for i in 0..m {
                    for j in 0..n {
                        let dot: f64 = (0..k).map(|p| a[i * sa.0 + p * sa.1] as f64 * b[p * sb.0 + j * sb.1] as f64).sum();
                        let want = dot + beta as f64 * c0[i * n + j] as f64;
                        // 37 products of values below 1 in f32: a few 1e-7 relative each.
                        assert!((c[i * n + j] as f64 - want).abs() < 1e-5, "m={m} ta={ta} tb={tb} ({i},{j})");
                    }
                }
            }
        }
    }
}
