//! The CPU backend: the reference every shader is tested against, and the engine on machines
//! without a GPU.
//!
//! Each operation is written the plain way first; matrix products go through `matrixmultiply`'s
//! sgemm (which takes arbitrary strides, so transposes and shifted conv views cost nothing), and
//! loops that are large enough to be worth it are split across the cores with rayon. Work runs at
//! once, so `flush` has nothing to do.

/// Defines `fn $name(args)` running `$body` compiled three times: for AVX-512 (with AVX2 and
/// FMA), for AVX2 + FMA, and for the baseline target, picked at run time from what the CPU offers
/// (`is_x86_feature_detected!`, a cached flag). The body is the same portable Rust, so the results
/// are the same on every path (Rust never fuses `a * b + c` by itself); only the vector width of
/// the loops the compiler makes from it changes. For the element-wise passes over `[B*T, V]`
/// rows, which the baseline's 128-bit SSE2 code left compute-bound.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn portable($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn wide($($arg: $ty),*) {
                    portable($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    portable($($arg),*)
                }
                use std::arch::is_x86_feature_detected as has;
                if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") && has!("fma") {
                    // SAFETY: the features `wide` is compiled for were detected just above.
                    return unsafe { wide($($arg),*) };
                }
                if has!("avx2") && has!("fma") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

mod attention;
pub mod buf;
mod conv;
pub mod fastmath;
mod lstm;
mod roll;

use super::{contract, Act, AdamStep, Attention, Backend, Conv1d, DropMask, Lstm, LstmSaved, LstmSeqs, MatMul, Qkv, Strided, Xent};
use rayon::prelude::*;

pub use buf::CpuBuf;

/// Below this many elements an element-wise loop stays on one thread. Handing work to a pool
/// thread that has gone to sleep costs tens of microseconds, more than a pass over 128K values
/// (batch-1 generation's `[128, 4H]` bias adds ran faster on one thread).
const PAR_MIN: usize = 1 << 17;

#[derive(Clone, Debug, Default)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend
    }
}

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

/// Below this many elements the optimizer's passes ([`Backend::sum_squares`], [`Backend::adamw`])
/// stay on the calling thread: a few loads and stores per element stream at the cache's
/// bandwidth on one core, and handing work to the pool cost more than it saved (a whole arena of
/// 390K parameters). The norm's blocks are this long on every path, so its bits do not depend on
/// the thread count.
const PAR_MIN_STREAM: usize = 1 << 21;

/// Lanes of [`sum_sq_block`]'s partial sums.
const SQ_LANES: usize = 8;

multiversion! {
    /// `out = sum x^2` in f64 as eight running sums, over the elements `i % 8` (independent
    /// chains, which the compiler keeps in vector registers; one chain waits on the adder's
    /// latency at every element), added in lane order at the end.
    fn sum_sq_block(x: &[f32], out: &mut f64) {
        let mut acc = [0f64; SQ_LANES];
        let mut chunks = x.chunks_exact(SQ_LANES);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v as f64 * v as f64;
            }
        }
        for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
            *a += v as f64 * v as f64;
        }
        *out = acc.iter().sum();
    }
}

/// `sum x^2` over a block, in f64 ([`sum_sq_block`]).
fn sum_sq(x: &[f32]) -> f64 {
    let mut s = 0.0;
    sum_sq_block(x, &mut s);
    s
}

/// The constants of one Adam(W) step ([`Backend::adamw`]): clip scale, decay factor, L2 decay,
/// betas, `lr / (1 - b1^t)`, `sqrt(1 - b2^t)` and eps.
struct AdamConsts {
    s: f32,
    factor: f32,
    wd: f32,
    b1: f32,
    b2: f32,
    step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
}

multiversion! {
    /// [`Backend::adamw`] over one block of elements (sizes already checked).
    fn adam_block(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &AdamConsts) {
        let n = p.len();
        let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            // (`p * 1` is `p`: plain Adam is unchanged bit for bit)
            let p = &mut p[i];
            *p *= k.factor;
            let g = g[i] * k.s + k.wd * *p;
            m[i] = k.b1 * m[i] + (1.0 - k.b1) * g;
            v[i] = k.b2 * v[i] + (1.0 - k.b2) * g * g;
            *p -= k.step_size * m[i] / (v[i].sqrt() / k.bc2_sqrt + k.eps);
        }
    }
}

use fastmath::{sigmoid, tanh};

impl Backend for CpuBackend {
    type Buf = CpuBuf;
    type Ids = Vec<u32>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn alloc(&self, len: usize) -> CpuBuf {
        CpuBuf::zeros(len)
    }

    unsafe fn view(&self, buf: &CpuBuf, offset: usize, len: usize) -> Option<CpuBuf> {
        assert!(offset.is_multiple_of(self.view_align()), "cpu view: offset {offset} is not a multiple of {}", self.view_align());
        // SAFETY: `Backend::view`'s contract is `CpuBuf::view`'s.
        Some(unsafe { buf.view(offset, len) })
    }

    fn view_align(&self) -> usize {
        // One cache line: every tensor of an arena starts on its own (`buf::ALIGN` bytes).
        buf::ALIGN / 4
    }

    fn alloc_ids(&self, len: usize) -> Vec<u32> {
        vec![0; len]
    }

    fn write(&self, dst: &mut CpuBuf, src: &[f32]) {
        contract::write("write", src.len(), [dst.len()]);
        dst[..src.len()].copy_from_slice(src);
    }

    fn write_ids(&self, dst: &mut Vec<u32>, src: &[u32]) {
        contract::write("write_ids", src.len(), [dst.len()]);
        dst[..src.len()].copy_from_slice(src);
    }

    fn read(&self, src: &CpuBuf, len: usize) -> Vec<f32> {
        contract::read(len, [src.len()]);
        src[..len].to_vec()
    }

    fn flush(&self) {}

    fn fill(&self, x: &mut CpuBuf, n: usize, value: f32) {
        contract::fill(n, [x.len()]);
        x[..n].fill(value);
    }

    fn add(&self, x: &CpuBuf, y: &mut CpuBuf, n: usize) {
        contract::add(n, [x.len(), y.len()]);
        zip_chunks(&x[..n], &mut y[..n], |x, y| {
            for (y, x) in y.iter_mut().zip(x) {
                *y += x;
            }
        });
    }

    fn copy_strided(&self, src: &CpuBuf, dst: &mut CpuBuf, st: Strided) {
        contract::copy_strided(&st, [src.len(), dst.len()]);
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

    fn act_fwd(&self, act: Act, x: &CpuBuf, y: &mut CpuBuf, n: usize) {
        contract::act_fwd(n, [x.len(), y.len()]);
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

    fn act_bwd(&self, act: Act, y: &CpuBuf, dy: &CpuBuf, dx: &mut CpuBuf, n: usize) {
        contract::act_bwd(n, [y.len(), dy.len(), dx.len()]);
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

    fn gated_fwd(&self, a: &CpuBuf, z: &mut CpuBuf, batch: usize, r: usize, t: usize) {
        contract::gated_fwd(batch, r, t, [a.len(), z.len()]);
        let plane = r * t;
        z[..batch * plane].par_chunks_mut(plane.max(1)).enumerate().for_each(|(b, z)| {
            let filt = &a[b * 2 * plane..][..plane];
            let gate = &a[b * 2 * plane + plane..][..plane];
            for ((z, &f), &g) in z.iter_mut().zip(filt).zip(gate) {
                *z = tanh(f) * sigmoid(g);
            }
        });
    }

    fn gated_bwd(&self, a: &CpuBuf, dz: &CpuBuf, da: &mut CpuBuf, batch: usize, r: usize, t: usize) {
        contract::gated_bwd(batch, r, t, [a.len(), dz.len(), da.len()]);
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

    fn dropout(&self, x: &mut CpuBuf, n: usize, mask: DropMask) {
        contract::dropout(n, [x.len()]);
        let scale = mask.scale();
        let body = |start: usize, xs: &mut [f32]| {
            for (j, v) in xs.iter_mut().enumerate() {
                *v = if mask.keep(start + j) { *v * scale } else { 0.0 };
            }
        };
        let x = &mut x[..n];
        if n < PAR_MIN {
            body(0, x);
        } else {
            x.par_chunks_mut(PAR_MIN).enumerate().for_each(|(c, xs)| body(c * PAR_MIN, xs));
        }
    }

    fn transpose(&self, x: &CpuBuf, y: &mut CpuBuf, batch: usize, rows: usize, cols: usize) {
        contract::transpose(batch, rows, cols, [x.len(), y.len()]);
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

    fn matmul(&self, a: &CpuBuf, b: &CpuBuf, c: &mut CpuBuf, mm: MatMul) {
        contract::matmul(&mm, [a.len(), b.len(), c.len()]);
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

    fn bias_add(&self, y: &mut CpuBuf, bias: &CpuBuf, outer: usize, channels: usize, inner: usize) {
        contract::bias_add(outer, channels, inner, [y.len(), bias.len()]);
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

    fn bias_grad(&self, dy: &CpuBuf, dbias: &mut CpuBuf, outer: usize, channels: usize, inner: usize) {
        contract::bias_grad(outer, channels, inner, [dy.len(), dbias.len()]);
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

    fn embedding_fwd(&self, ids: &Vec<u32>, table: &CpuBuf, out: &mut CpuBuf, n: usize, e: usize) {
        contract::embedding_fwd(n, e, [ids.len(), table.len(), out.len()]);
        let rows = table.len() / e.max(1);
        for i in 0..n {
            let id = ids[i] as usize;
            assert!(id < rows, "embedding_fwd: token id {id} outside the table of {rows} rows");
            out[i * e..][..e].copy_from_slice(&table[id * e..][..e]);
        }
    }

    fn embedding_bwd(&self, ids: &Vec<u32>, dout: &CpuBuf, dtable: &mut CpuBuf, n: usize, e: usize) {
        contract::embedding_bwd(n, e, [ids.len(), dout.len(), dtable.len()]);
        for i in 0..n {
            let id = ids[i] as usize;
            let d = &mut dtable[id * e..][..e];
            d.iter_mut().zip(&dout[i * e..][..e]).for_each(|(d, g)| *d += g);
        }
    }

    fn softmax_xent(&self, logits: &CpuBuf, targets: &Vec<u32>, dlogits: &mut CpuBuf, stats: &mut CpuBuf, x: Xent) {
        contract::softmax_xent(&x, [logits.len(), targets.len(), dlogits.len(), stats.len()]);
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

    fn sum_squares(&self, x: &CpuBuf, n: usize, acc: &mut CpuBuf) {
        contract::sum_squares(n, [x.len(), acc.len()]);
        let x = &x[..n];
        // Blocks of PAR_MIN_STREAM (on the pool's threads when there are several), each summed by
        // `sum_sq_block`, the blocks' sums added in order: the same bits whatever the threads.
        let s: f64 = if n < PAR_MIN_STREAM {
            sum_sq(x)
        } else {
            x.par_chunks(PAR_MIN_STREAM).map(sum_sq).collect::<Vec<f64>>().iter().sum()
        };
        acc[0] += s as f32;
    }

    fn clip_scale(&self, acc: &CpuBuf, max_norm: f32, scale: &mut CpuBuf) {
        contract::clip_scale([acc.len(), scale.len()]);
        scale[0] = if max_norm > 0.0 { (max_norm / (acc[0].sqrt() + 1e-6)).min(1.0) } else { 1.0 };
    }

    fn grad_norm_clip(&self, g: &CpuBuf, n: usize, max_norm: f32, acc: &mut CpuBuf, scale: &mut CpuBuf) {
        contract::grad_norm_clip(n, [g.len(), acc.len(), scale.len()]);
        acc[0] = 0.0;
        self.sum_squares(g, n, acc);
        self.clip_scale(acc, max_norm, scale);
    }

    fn adamw(&self, p: &mut CpuBuf, g: &CpuBuf, m: &mut CpuBuf, v: &mut CpuBuf, scale: &CpuBuf, step: AdamStep) {
        contract::adamw(&step, [p.len(), g.len(), m.len(), v.len(), scale.len()]);
        let AdamStep { n, hp, factor } = step;
        let s = scale[0];
        let t = hp.step as i32;
        let bc1 = 1.0 - hp.beta1.powi(t);
        let bc2_sqrt = (1.0 - hp.beta2.powi(t)).sqrt();
        let step_size = hp.lr / bc1;
        let k = AdamConsts { s, factor, wd: hp.weight_decay, b1: hp.beta1, b2: hp.beta2, step_size, bc2_sqrt, eps: hp.eps };
        let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
        if n < PAR_MIN_STREAM {
            adam_block(p, g, m, v, &k);
        } else {
            // Element-wise: blocks on the pool's threads give the same bits as one pass.
            let c = PAR_MIN_STREAM;
            p.par_chunks_mut(c)
                .zip(g.par_chunks(c))
                .zip(m.par_chunks_mut(c).zip(v.par_chunks_mut(c)))
                .for_each(|((p, g), (m, v))| adam_block(p, g, m, v, &k));
        }
    }

    fn decay(&self, p: &mut CpuBuf, n: usize, factor: f32) {
        contract::decay(n, [p.len()]);
        for v in &mut p[..n] {
            *v *= factor;
        }
    }

    fn conv1d_fwd(&self, x: &CpuBuf, w: &CpuBuf, bias: &CpuBuf, y: &mut CpuBuf, c: Conv1d) {
        contract::conv1d_fwd(&c, [x.len(), w.len(), bias.len(), y.len()]);
        conv::forward(x, w, bias, y, c)
    }

    fn conv1d_bwd_input(&self, dy: &CpuBuf, w: &CpuBuf, dx: &mut CpuBuf, c: Conv1d, accumulate: bool) {
        contract::conv1d_bwd_input(&c, [dy.len(), w.len(), dx.len()]);
        conv::backward_input(dy, w, dx, c, accumulate)
    }

    fn conv1d_bwd_weight(&self, x: &CpuBuf, dy: &CpuBuf, dw: &mut CpuBuf, dbias: &mut CpuBuf, c: Conv1d) {
        contract::conv1d_bwd_weight(&c, [x.len(), dy.len(), dw.len(), dbias.len()]);
        conv::backward_weight(x, dy, dw, dbias, c)
    }

    fn attention_fwd(
        &self,
        q: &CpuBuf,
        k: &CpuBuf,
        v: &CpuBuf,
        out: &mut CpuBuf,
        p: &mut CpuBuf,
        a: Attention,
    ) {
        contract::attention_fwd(&a, [q.len(), k.len(), v.len(), out.len(), p.len()]);
        attention::forward(q, k, v, out, p, a)
    }

    fn attention_bwd(&self, qkv: Qkv<&CpuBuf>, p: &CpuBuf, dout: &CpuBuf, grads: Qkv<&mut CpuBuf>, a: Attention) {
        let (Qkv { q, k, v }, Qkv { q: dq, k: dk, v: dv }) = (qkv, grads);
        contract::attention_bwd(&a, [q.len(), k.len(), v.len(), p.len(), dout.len(), dq.len(), dk.len(), dv.len()]);
        let grads = Qkv { q: &mut dq[..], k: &mut dk[..], v: &mut dv[..] };
        attention::backward(Qkv { q: &q[..], k: &k[..], v: &v[..] }, p, dout, grads, a)
    }

    fn lstm_fwd(&self, xw: &CpuBuf, w_hh: &CpuBuf, h0: &CpuBuf, c0: &CpuBuf, out: LstmSeqs<&mut CpuBuf>, l: Lstm) {
        let LstmSeqs { hs, cs, gates } = out;
        contract::lstm_fwd(&l, [xw.len(), w_hh.len(), h0.len(), c0.len(), hs.len(), cs.len(), gates.len()]);
        lstm::forward(xw, w_hh, h0, c0, LstmSeqs { hs: &mut hs[..], cs: &mut cs[..], gates: &mut gates[..] }, l)
    }

    fn lstm_bwd(&self, w_hh: &CpuBuf, saved: LstmSaved<'_, CpuBuf>, dhs: &CpuBuf, dxw: &mut CpuBuf, dw_hh: &mut CpuBuf, l: Lstm) {
        let LstmSaved { h0, c0, seqs: LstmSeqs { hs, cs, gates } } = saved;
        let lens = [w_hh.len(), h0.len(), c0.len(), hs.len(), cs.len(), gates.len(), dhs.len(), dxw.len(), dw_hh.len()];
        contract::lstm_bwd(&l, lens);
        let saved = LstmSaved { h0: &h0[..], c0: &c0[..], seqs: LstmSeqs { hs: &hs[..], cs: &cs[..], gates: &gates[..] } };
        lstm::backward(w_hh, saved, dhs, dxw, dw_hh, l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::AdamParams;
    use crate::rng::Rng;

    /// The optimizer's passes over an arena longer than `PAR_MIN_STREAM` (so split in blocks
    /// across the pool) give the same bits on one thread and on four, and the norm's blocked,
    /// eight-lane f64 sum, stored as f32, is the plain f64 sum to f32's rounding.
    #[test]
    fn optimizer_passes_do_not_depend_on_the_thread_count() {
        let n = 2 * PAR_MIN_STREAM + 37;
        let mut rng = Rng::new(3);
        let data = |rng: &mut Rng, scale: f32| -> CpuBuf { (0..n).map(|_| rng.uniform_range(-scale, scale)).collect() };
        let (p0, g, m0, v0) = (data(&mut rng, 1.0), data(&mut rng, 2.0), data(&mut rng, 0.1), data(&mut rng, 0.01));
        let v0: CpuBuf = v0.iter().map(|x| x.abs()).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
            pool.install(|| {
                let c = CpuBackend::new();
                let (mut acc, mut scale) = (CpuBuf::zeros(1), CpuBuf::zeros(1));
                c.grad_norm_clip(&g, n, 100.0, &mut acc, &mut scale);
                let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
                let hp = AdamParams { lr: 1e-3, step: 4, weight_decay: 0.01, ..AdamParams::default() };
                c.adamw(&mut p, &g, &mut m, &mut v, &scale, AdamStep::adamw(n, hp, 0.999));
                [acc, scale, p, m, v].map(|b| b.iter().map(|x| x.to_bits()).collect::<Vec<u32>>())
            })
        };
        let one = run(1);
        assert_eq!(one, run(4), "one thread against four");
        let want: f64 = g.iter().map(|&x| x as f64 * x as f64).sum();
        let got = f32::from_bits(one[0][0]) as f64;
        assert!((got - want).abs() <= 1e-7 * want, "norm^2 {got} vs plain f64 sum {want}");
    }

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
