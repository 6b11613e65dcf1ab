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
    check_views(m, k, n, [a.len(), b.len(), c.len()], [(rsa, csa), (rsb, csb), (rsc, csc)]);
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

/// The last element each view touches must lie inside its slice: checked once per product, so
/// that the unsafe call and the unchecked kernels below only ever see valid views.
fn check_views(m: usize, k: usize, n: usize, lens: [usize; 3], [(rsa, csa), (rsb, csb), (rsc, csc)]: [(usize, usize); 3]) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    if k > 0 {
        assert!(last(m, k, rsa, csa) < lens[0], "sgemm: A view out of bounds");
        assert!(last(k, n, rsb, csb) < lens[1], "sgemm: B view out of bounds");
    }
    assert!(last(m, n, rsc, csc) < lens[2], "sgemm: C view out of bounds");
}

/// `c = a b + beta * c` with every row of C computed alone, by [`small_gemm`]'s operations in
/// its order whatever `m` is: row `i` of C depends on row `i` of A and on B only, bit for bit.
/// What a batch of generated pieces needs to equal the same pieces generated one by one (one row
/// each), which `matrixmultiply`'s blocked kernel (another summation order, fused multiply-adds)
/// would not give. Slower than [`sgemm`] for many rows, so only on request
/// ([`crate::engine::Backend::set_rows_alone`]). Blocks of rows are split across the pool when
/// the product is large; the split does not change any value.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_rows_alone(
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
    if m == 0 || n == 0 {
        return;
    }
    check_views(m, k, n, [a.len(), b.len(), c.len()], [sa, sb, sc]);
    let threads = rayon::current_num_threads();
    if threads > 1 && rayon::current_thread_index().is_none() && sc.1 == 1 && sc.0 >= n && m >= 2 * ROWS && m * k * n > ROWS_PAR_MIN_MACS {
        let rows = m.div_ceil(threads).next_multiple_of(ROWS).min(m);
        let rsc = sc.0;
        let c = &mut c[..(m - 1) * rsc + n];
        c.par_chunks_mut(rows * rsc).enumerate().for_each(|(i, cb)| {
            let r0 = i * rows;
            small_gemm(rows.min(m - r0), k, n, &a[r0 * sa.0..], sa, b, sb, cb, sc, beta);
        });
        return;
    }
    small_gemm(m, k, n, a, sa, b, sb, c, sc, beta);
}

/// Rows of C that [`small_gemm`] computes together, sharing each load of B.
const ROWS: usize = 4;
/// Rows of A the dot form of [`small_gemm`] holds at once (in blocks of [`ROWS`]): each column of
/// B is read once per panel.
const PANEL: usize = 32;
/// A row-alone product of more than this many multiply-adds, asked from outside the pool, is
/// split across it (a batch of 64 pieces' `[64, 128] x [128, 512]`: 4M).
const ROWS_PAR_MIN_MACS: usize = 1 << 18;

multiversion! {
    /// `c = a b + beta c` on the same strided views as [`sgemm`] (already checked by it), each row
    /// of C by the same operations in the same order whatever `m` (blocks of [`ROWS`] rows share
    /// each load of B; no value depends on the block): as a sum of rows of B scaled by A's entries
    /// when B's rows are contiguous, as [`dot`] products with B's columns when those are, else
    /// plainly. (Compiled per instruction set: the same operations in the same order on every path.)
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
        // The dot form reads each column of B once per panel of rows (it stays in L1 while the
        // panel's rows, four at a time, take their products with it); the other forms keep a
        // block of ROWS rows of C in L1.
        let panel = if csb != 1 && rsb == 1 { PANEL } else { ROWS };
        let mut acc = vec![0.0f32; panel * n];
        let mut arows = vec![0.0f32; panel * k];
        let mut i0 = 0;
        while i0 < m {
            let r = panel.min(m - i0);
            for (q, arow) in arows.chunks_exact_mut(k.max(1)).take(r).enumerate() {
                arow.iter_mut().enumerate().for_each(|(p, v)| *v = a[(i0 + q) * rsa + p * csa]);
            }
            let acc = &mut acc[..r * n];
            if k == 0 {
                acc.fill(0.0);
            } else if csb == 1 {
                for (q, s) in acc.chunks_exact_mut(n).enumerate() {
                    let a0 = arows[q * k];
                    s.iter_mut().zip(&b[..n]).for_each(|(s, &x)| *s = a0 * x);
                }
                for p in 1..k {
                    let brow = &b[p * rsb..][..n];
                    for (q, s) in acc.chunks_exact_mut(n).enumerate() {
                        let ap = arows[q * k + p];
                        s.iter_mut().zip(brow).for_each(|(s, &x)| *s += ap * x);
                    }
                }
            } else if rsb == 1 {
                for j in 0..n {
                    let col = &b[j * csb..][..k];
                    let mut q = 0;
                    while q + ROWS <= r {
                        let x = &arows[q * k..(q + ROWS) * k];
                        let d = dots4([&x[..k], &x[k..2 * k], &x[2 * k..3 * k], &x[3 * k..]], col);
                        for (i, v) in d.into_iter().enumerate() {
                            acc[(q + i) * n + j] = v;
                        }
                        q += ROWS;
                    }
                    for q in q..r {
                        acc[q * n + j] = dot(&arows[q * k..][..k], col);
                    }
                }
            } else {
                for (q, s) in acc.chunks_exact_mut(n).enumerate() {
                    let arow = &arows[q * k..][..k];
                    for (j, s) in s.iter_mut().enumerate() {
                        *s = arow.iter().enumerate().map(|(p, &ap)| ap * b[p * rsb + j * csb]).sum();
                    }
                }
            }
            for (q, row) in acc.chunks_exact(n).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    let cij = &mut c[(i0 + q) * rsc + j * csc];
                    // beta = 0 overwrites (whatever C held, NaN included), as sgemm does.
                    *cij = if beta == 0.0 { v } else { v + beta * *cij };
                }
            }
            i0 += r;
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

/// [`dot`] of each of four rows `x` with `y`, interleaved (four independent chains for the
/// pipeline), each by exactly [`dot`]'s operations in its order: lane `l` of a row sums its
/// products `x[l + 8i] y[l + 8i]` in ascending `i` (a multiply, then an add: no fused
/// multiply-add, as in [`dot`]), then the same pairwise reduction and tail.
#[inline(always)]
fn dots4(x: [&[f32]; 4], y: &[f32]) -> [f32; 4] {
    let k = y.len();
    let full = k - k % 8;
    let lanes = lanes4(x, y, full);
    let finish = |lanes: &[f32; 8], x: &[f32]| {
        let tail: f32 = x[full..k].iter().zip(&y[full..]).map(|(a, b)| a * b).sum();
        let quads = [lanes[0] + lanes[4], lanes[1] + lanes[5], lanes[2] + lanes[6], lanes[3] + lanes[7]];
        (quads[0] + quads[2]) + (quads[1] + quads[3]) + tail
    };
    [finish(&lanes[0], x[0]), finish(&lanes[1], x[1]), finish(&lanes[2], x[2]), finish(&lanes[3], x[3])]
}

/// The eight lane sums of [`dots4`] over the first `full` (a multiple of 8) entries: AVX
/// vectors where the CPU has them (LLVM turned the portable form into shuffles), else plainly.
#[inline(always)]
fn lanes4(x: [&[f32]; 4], y: &[f32], full: usize) -> [[f32; 8]; 4] {
    assert!(x.iter().all(|r| r.len() >= full) && y.len() >= full && full.is_multiple_of(8));
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: AVX was detected just above; every load reads 8 floats at c < full, inside
        // each slice (checked by the assert).
        return unsafe { lanes4_avx(x, y, full) };
    }
    let mut lanes = [[0.0f32; 8]; 4];
    for c in (0..full).step_by(8) {
        for (lane, xr) in lanes.iter_mut().zip(x) {
            for l in 0..8 {
                lane[l] += xr[c + l] * y[c + l];
            }
        }
    }
    lanes
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn lanes4_avx(x: [&[f32]; 4], y: &[f32], full: usize) -> [[f32; 8]; 4] {
    use std::arch::x86_64::{_mm256_add_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_setzero_ps, _mm256_storeu_ps};
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut c = 0;
    while c < full {
        let yv = _mm256_loadu_ps(y.as_ptr().add(c));
        for (a, xr) in acc.iter_mut().zip(x) {
            *a = _mm256_add_ps(*a, _mm256_mul_ps(_mm256_loadu_ps(xr.as_ptr().add(c)), yv));
        }
        c += 8;
    }
    let mut lanes = [[0.0f32; 8]; 4];
    for (lane, a) in lanes.iter_mut().zip(acc) {
        _mm256_storeu_ps(lane.as_mut_ptr(), a);
    }
    lanes
}

/// The op: [`sgemm`], or [`sgemm_rows_alone`] with `rows_alone`.
pub(super) fn matmul(a: &[f32], b: &[f32], c: &mut [f32], mm: MatMul, rows_alone: bool) {
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
    if rows_alone {
        sgemm_rows_alone(m, k, n, a, sa, b, sb, c, (n, 1), beta);
    } else {
        sgemm(m, k, n, a, sa, b, sb, c, (n, 1), beta);
    }
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

    /// The one-row product as it was written before rows could be computed alone (one row of C
    /// at a time): the arithmetic `sgemm` keeps for one row and `sgemm_rows_alone` for every row.
    #[allow(clippy::too_many_arguments)]
    fn one_row_reference(k: usize, n: usize, arow: &[f32], b: &[f32], (rsb, csb): (usize, usize), c: &mut [f32], beta: f32) {
        let mut acc = vec![0.0f32; n];
        if csb == 1 {
            acc.iter_mut().zip(&b[..n]).for_each(|(s, &x)| *s = arow[0] * x);
            for (p, &ap) in arow.iter().enumerate().skip(1) {
                acc.iter_mut().zip(&b[p * rsb..][..n]).for_each(|(s, &x)| *s += ap * x);
            }
        } else if rsb == 1 {
            for (j, s) in acc.iter_mut().enumerate() {
                *s = dot(arow, &b[j * csb..][..k]);
            }
        } else {
            for (j, s) in acc.iter_mut().enumerate() {
                *s = arow.iter().enumerate().map(|(p, &ap)| ap * b[p * rsb + j * csb]).sum();
            }
        }
        for (j, &v) in acc.iter().enumerate() {
            c[j] = if beta == 0.0 { v } else { v + beta * c[j] };
        }
    }

    /// Every row of `sgemm_rows_alone` equals, bit for bit, the one-row product of that row alone
    /// (and `sgemm` of one row), for row counts around the block of 4 rows and the parallel split,
    /// lengths off the 8 lanes, every layout, with and without beta.
    #[test]
    fn rows_alone_equal_the_one_row_product_bit_for_bit() {
        let mut rng = Rng::new(9);
        for (k, n) in [(37, 19), (128, 40), (5, 3), (1, 7)] {
            for m in [1, 2, 3, 4, 5, 8, 9, 130, 300] {
                for (ta, tb, beta) in [(false, false, 0.0), (false, true, 1.0), (true, false, 1.0), (true, true, 0.0), (false, true, 0.0)] {
                    let a: Vec<f32> = (0..m * k).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
                    let c0: Vec<f32> = (0..m * n).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
                    let sa = if ta { (1, m) } else { (k, 1) };
                    let sb = if tb { (1, k) } else { (n, 1) };
                    let mut c = c0.clone();
                    sgemm_rows_alone(m, k, n, &a, sa, &b, sb, &mut c, (n, 1), beta);
                    for i in 0..m {
                        let arow: Vec<f32> = (0..k).map(|p| a[i * sa.0 + p * sa.1]).collect();
                        let mut want = c0[i * n..(i + 1) * n].to_vec();
                        one_row_reference(k, n, &arow, &b, sb, &mut want, beta);
                        let got: Vec<u32> = c[i * n..(i + 1) * n].iter().map(|x| x.to_bits()).collect();
                        let want_bits: Vec<u32> = want.iter().map(|x| x.to_bits()).collect();
                        assert_eq!(got, want_bits, "m={m} k={k} n={n} ta={ta} tb={tb} beta={beta} row {i}");
                        let mut alone = c0[i * n..(i + 1) * n].to_vec();
                        sgemm(1, k, n, &arow, (k, 1), &b, sb, &mut alone, (n, 1), beta);
                        assert_eq!(alone.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want_bits, "sgemm of one row");
                    }
                }
            }
        }
    }
}
