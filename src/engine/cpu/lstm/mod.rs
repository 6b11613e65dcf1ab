//! CPU twin of `shaders/lstm.wgsl`: the fused LSTM recurrence and its backpropagation through time.
//!
//! Layouts (all row-major, batch-major like the models' activations):
//! `xw, gates, dxw [batch, time, 4H]` (gate blocks i, f, g, o), `hs, cs, dhs [batch, time, H]`,
//! `h0, c0 [batch, H]`, `w_hh, dw_hh [4H, H]` (PyTorch `weight_hh_l*`).
//!
//! The input projection `x W_ih^T + b_ih + b_hh` is one big matrix product done by the model
//! beforehand; what is left here is inherently sequential in time but independent across batch rows.
//! So the batch is split into one chunk of rows per thread, and each chunk runs its whole time loop
//! on its own: per step one product `h_{t-1} [rows, H] x W_hh^T -> [rows, 4H]` read from and
//! written to strided views of `hs` / `gates` (step t's rows lie `time*H` / `time*4H` apart), then
//! the gate nonlinearities and cell update. No synchronisation between steps is needed.
//!
//! The per-step products are small (at batch 128 on 2 threads: 64 x 128 x 512), so a general sgemm
//! spent most of its time repacking the same `W_hh` at each of the T steps. Here `W_hh` is packed
//! once per call into column panels ([`pack_panels`]) and each step runs a register-tiled kernel
//! over them ([`packed_gemm`]), written in portable Rust on fixed-size arrays and compiled, besides
//! the plain build, for AVX2+FMA and AVX-512 chosen at run time (`is_x86_feature_detected!`; no
//! RUSTFLAGS). The AVX-512 tile alone is written in `std::arch` intrinsics ([`tile_product_wide`]),
//! because LLVM's vectorisation of its portable form changed with unrelated code elsewhere in the
//! crate. Each element of a product is one FMA chain in ascending k (as on the
//! GPU), so results are the same on every path, tile and thread count. (On an x86 CPU without FMA
//! the plain build's `mul_add` is a library call: correct, but slow.)

use super::fastmath::{exp, sigmoid};
use super::matmul::sgemm;
use crate::engine::{Lstm, LstmSaved, LstmSeqs};
use rayon::prelude::*;

/// `tanh(x) = sign(x) (1 - e^{-2|x|}) / (1 + e^{-2|x|})`: never overflows, and is the formula the
/// shader uses; within ~1e-7 absolute of a libm tanh.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    let e = exp(-2.0 * x.abs());
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

/// Asks the cache for the lines of `s` (one prefetch per 64-byte line); no-op off x86-64.
///
/// The recurrence visits its rows `time*4H` (or `time*H`) values apart, one step at a time: each
/// step of a 64-row chunk touches 64 distant 2 KiB pieces of `xw` and `gates`, too many streams
/// for the hardware prefetchers, so the loads of the next step are issued during this one.
#[inline(always)]
fn prefetch(s: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in s.chunks(16) {
        // SAFETY: a prefetch is only a hint: it never faults and changes no memory; the pointer
        // lies inside a live slice anyway. SSE is part of the x86-64 baseline.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast::<i8>())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}

/// Batch rows per parallel chunk: one chunk per thread, never empty.
fn rows_per_chunk(batch: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    batch.div_ceil(threads).max(1)
}

/// The micro-kernel tile of the recurrent products: `MR` rows of A times one packed panel of `NR`
/// columns of B, held in `MR x NR` accumulators. Picked once per call from what the CPU offers;
/// the tile only groups the work, every output element is summed the same way whatever the tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tile {
    /// [`WIDE_MR`] x 32 = 8 x 32: sixteen 512-bit accumulators (LLVM makes 512-bit FMAs of the
    /// 32-wide rows there), enough independent FMA chains to cover the FMA latency on both
    /// ports; 4 x 32 (eight chains) stalled on it (the backward ~10% slower).
    Wide,
    /// 4 x 16: eight 256-bit accumulators (AVX2 with FMA), and the portable build.
    Narrow,
}

impl Tile {
    fn detect() -> Tile {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("fma") {
            return Tile::Wide;
        }
        Tile::Narrow
    }

    /// Columns per packed panel.
    fn nr(self) -> usize {
        match self {
            Tile::Wide => 32,
            Tile::Narrow => 16,
        }
    }
}

multiversion! {
    /// Packs `B [k, n]` (strides `(rsb, csb)`) into panels of `nr` columns for [`packed_gemm`]: panel
    /// p holds `B[kk, p*nr + jj]` at `(p*k + kk)*nr + jj`, zero past column n. Done once per layer call,
    /// so that the time loop streams the recurrent weights contiguously instead of repacking them
    /// at every step.
    /// `out` holds `ceil(n / nr) * k * nr` zeros.
    fn pack_panels_into(k: usize, n: usize, b: &[f32], sb: (usize, usize), nr: usize, out: &mut [f32]) {
        let (rsb, csb) = sb;
        for (p, panel) in out.chunks_exact_mut(k * nr).enumerate() {
            let j0 = p * nr;
            let width = nr.min(n - j0);
            if rsb == 1 && width == nr && nr.is_multiple_of(T16) && k.is_multiple_of(T16) {
                // B's columns contiguous (B = W_hh^T: its columns are the rows of W_hh): whole
                // 16 x 16 tiles, read as 16 runs of 16 values and written transposed.
                for jb in (0..nr).step_by(T16) {
                    for kb in (0..k).step_by(T16) {
                        let tile: [[f32; T16]; T16] = std::array::from_fn(|jj| {
                            b[(j0 + jb + jj) * csb + kb..][..T16].try_into().expect("16 values")
                        });
                        for (kk, row) in panel[kb * nr..(kb + T16) * nr].chunks_exact_mut(nr).enumerate() {
                            let dst: &mut [f32; T16] = (&mut row[jb..jb + T16]).try_into().expect("16 values");
                            *dst = std::array::from_fn(|jj| tile[jj][kk]);
                        }
                    }
                }
                continue;
            }
            // 16 columns at a time: when B's columns are strided (B = W_hh^T, whose columns are the
            // rows of W_hh), a 128-column panel read whole would keep 128 lines H*4 bytes apart in
            // use, more than the L1 sets they map to hold; 16 fit.
            for jb in (0..width).step_by(PACK_COLS) {
                let cols = jb..(jb + PACK_COLS).min(width);
                for (kk, row) in panel.chunks_exact_mut(nr).enumerate() {
                    for jj in cols.clone() {
                        row[jj] = b[kk * rsb + (j0 + jj) * csb];
                    }
                }
            }
        }
    }
}

/// [`pack_panels_into`] a new buffer of `ceil(n / nr) * k * nr` values.
fn pack_panels(k: usize, n: usize, b: &[f32], sb: (usize, usize), nr: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; n.div_ceil(nr) * k * nr];
    pack_panels_into(k, n, b, sb, nr, &mut out);
    out
}

/// Columns of B per pass of [`pack_panels`].
const PACK_COLS: usize = 16;
/// Side of the square tiles [`pack_panels`] transposes when B's columns are contiguous.
const T16: usize = 16;

/// The micro-kernel: one `[MR, NR]` tile of `A B` from a block of A stored `[k][MR]` and a panel
/// of B stored `[k][NR]`, each element summed by FMAs in ascending k from 0. The accumulators
/// are a local that never escapes (so they stay in registers) and are updated a whole row at a
/// time by value: the form LLVM turns into vector FMAs.
#[inline(always)]
fn tile_product<const MR: usize, const NR: usize>(block: &[f32], panel: &[f32]) -> [[f32; NR]; MR] {
    #[cfg(target_arch = "x86_64")]
    if MR == WIDE_MR && NR == 32 {
        // SAFETY: the WIDE_MR x 32 tile runs only on the AVX-512 paths (`Tile::Wide`, picked when
        // the CPU has AVX-512F and FMA); the transmute is the identity (MR = WIDE_MR, NR = 32).
        return unsafe { std::mem::transmute_copy(&tile_product_wide(block, panel)) };
    }
    tile_product_portable::<MR, NR>(block, panel)
}

/// The AVX-512 tile in `std::arch` intrinsics: 16 zmm accumulators (two per row), each lane one
/// FMA chain in ascending k from 0, exactly [`tile_product_portable`]'s sums. Written out because
/// the portable form's codegen is at the mercy of the rest of the crate: after unrelated code
/// changed, LLVM once vectorised it across the rows instead of the columns, keeping the
/// accumulators in memory behind gathers and scatters (6x slower LSTM training).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline(never)]
unsafe fn tile_product_wide(block: &[f32], panel: &[f32]) -> [[f32; 32]; WIDE_MR] {
    use std::arch::x86_64::{__m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps};
    let k = (block.len() / WIDE_MR).min(panel.len() / 32);
    let mut acc: [[__m512; 2]; WIDE_MR] = [[_mm512_setzero_ps(); 2]; WIDE_MR];
    for (xs, b) in block.chunks_exact(WIDE_MR).zip(panel.chunks_exact(32)).take(k) {
        // SAFETY: `b` holds 32 values: two unaligned loads of 16.
        let (b0, b1) = unsafe { (_mm512_loadu_ps(b.as_ptr()), _mm512_loadu_ps(b.as_ptr().add(16))) };
        for (acc_i, &x) in acc.iter_mut().zip(xs) {
            let x = _mm512_set1_ps(x);
            acc_i[0] = _mm512_fmadd_ps(x, b0, acc_i[0]);
            acc_i[1] = _mm512_fmadd_ps(x, b1, acc_i[1]);
        }
    }
    let mut out = [[0.0f32; 32]; WIDE_MR];
    for (o, a) in out.iter_mut().zip(acc) {
        // SAFETY: each row of `out` holds 32 values: two unaligned stores of 16.
        unsafe {
            _mm512_storeu_ps(o.as_mut_ptr(), a[0]);
            _mm512_storeu_ps(o.as_mut_ptr().add(16), a[1]);
        }
    }
    out
}

#[inline(always)]
fn tile_product_portable<const MR: usize, const NR: usize>(block: &[f32], panel: &[f32]) -> [[f32; NR]; MR] {
    let mut acc = [[0.0f32; NR]; MR];
    for (xs, b) in block.chunks_exact(MR).zip(panel.chunks_exact(NR)) {
        let xs: [f32; MR] = xs.try_into().expect("A blocks hold MR values per k");
        let b: [f32; NR] = b.try_into().expect("panel rows hold NR values per k");
        for (acc_i, x) in acc.iter_mut().zip(xs) {
            *acc_i = std::array::from_fn(|j| x.mul_add(b[j], acc_i[j]));
        }
    }
    acc
}

/// `C = A B` for `A [m, k]` (row r at `a[r*rsa..][..k]`) and B packed by [`pack_panels`] with
/// `NR` columns per panel; hands each finished piece of a row of C to `store(row, col0, values)`.
///
/// Summation order: every element is one accumulator, started at 0 and updated with a fused
/// multiply-add for kk = 0, 1, .., k-1 in turn (the order of the GPU shader and of the sgemm
/// kernels), so the result does not depend on the tile, the chunking or the thread count.
/// Written on fixed-size arrays so that the compiler keeps the accumulators in SIMD registers.
#[inline(always)]
fn packed_gemm<const MR: usize, const NR: usize>(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: usize,
    packed: &[f32],
    mut store: impl FnMut(usize, usize, &[f32]),
) {
    if m == 0 || k == 0 {
        // Not reached from the recurrence (H > 0); an empty sum would be 0.
        for r in 0..m {
            for j0 in (0..n).step_by(NR) {
                store(r, j0, &[0.0; NR][..NR.min(n - j0)]);
            }
        }
        return;
    }
    if MR == 1 {
        // One row per block: a row of A is already its block `[k][1]`; no copy.
        for r in 0..m {
            let block = &a[r * rsa..r * rsa + k];
            for (p, panel) in packed.chunks_exact(k * NR).enumerate() {
                store_tile::<MR, NR>(m, n, p, panel, r, block, &mut store);
            }
        }
        return;
    }
    // A in blocks of MR rows, each stored k-major (`[k][MR]`), so that the kernel reads it
    // without index checks; a short last block repeats the last row (its results are not stored).
    let blocks = m.div_ceil(MR);
    let mut apack = vec![0.0f32; blocks * k * MR];
    for (q, block) in apack.chunks_exact_mut(k * MR).enumerate() {
        for i in 0..MR {
            let r = (q * MR + i).min(m - 1);
            for (kk, &x) in a[r * rsa..r * rsa + k].iter().enumerate() {
                block[kk * MR + i] = x;
            }
        }
    }
    if k * NR * 4 <= L1_PANEL_BYTES {
        // Panels outer, row blocks inner: one panel stays in L1 across the row blocks.
        for (p, panel) in packed.chunks_exact(k * NR).enumerate() {
            for (q, block) in apack.chunks_exact(k * MR).enumerate() {
                store_tile::<MR, NR>(m, n, p, panel, q, block, &mut store);
            }
        }
    } else {
        // A panel too big for L1 (the backward's k = 4H): row blocks outer, so that the block of
        // A stays in L1 and the panels stream from L2.
        for (q, block) in apack.chunks_exact(k * MR).enumerate() {
            for (p, panel) in packed.chunks_exact(k * NR).enumerate() {
                store_tile::<MR, NR>(m, n, p, panel, q, block, &mut store);
            }
        }
    }
}

/// Tile (q, p) of [`packed_gemm`]: the product of row block q and panel p, handed to `store`.
/// A function, not a closure, so that it is inlined into (and compiled with the instruction set
/// of) the caller.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn store_tile<const MR: usize, const NR: usize>(
    m: usize,
    n: usize,
    p: usize,
    panel: &[f32],
    q: usize,
    block: &[f32],
    store: &mut impl FnMut(usize, usize, &[f32]),
) {
    let (j0, r0) = (p * NR, q * MR);
    let acc = tile_product::<MR, NR>(block, panel);
    for (i, acc_i) in acc.iter().enumerate().take(m - r0) {
        store(r0 + i, j0, &acc_i[..NR.min(n - j0)]);
    }
}

/// Largest packed panel that [`packed_gemm`] expects to stay in the L1 data cache (32-48 KiB on
/// current x86 and ARM cores, half of it for the panel).
const L1_PANEL_BYTES: usize = 24 * 1024;

/// `c_t = f c_{t-1} + i g`, `h_t = o tanh(c_t)` for one row. A function of its own (inlined) so
/// that the compiler knows the slices do not overlap and vectorises the loop.
#[inline(always)]
fn cell_update(i: &[f32], f: &[f32], g: &[f32], o: &[f32], cprev: &[f32], c_t: &mut [f32], h_t: &mut [f32]) {
    let h = h_t.len();
    let (i, f, g, o, cprev, c_t) = (&i[..h], &f[..h], &g[..h], &o[..h], &cprev[..h], &mut c_t[..h]);
    for j in 0..h {
        let c = f[j] * cprev[j] + i[j] * g[j];
        c_t[j] = c;
        h_t[j] = o[j] * tanh(c);
    }
}

/// One row of one step of the backward (see [`backward`]): from the activated gates `[i, f, g, o]`,
/// `c_t`, `c_{t-1}`, the gradient from above `dh_in` and those from step t+1 (`dh_n`, and `dc_n`,
/// replaced by `dc_t f`), the pre-activation gradients `[di, df, dg, do]`. A function of its own
/// (inlined) so that the compiler knows the slices do not overlap and vectorises the loop.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn cell_backward(
    [gi, gf, gg, go]: [&[f32]; 4],
    c_t: &[f32],
    cprev: &[f32],
    dh_in: &[f32],
    dh_n: &[f32],
    dc_n: &mut [f32],
    [di, df, dg, dout]: [&mut [f32]; 4],
) {
    let h = dc_n.len();
    let (gi, gf, gg, go, c_t, cprev, dh_in, dh_n) =
        (&gi[..h], &gf[..h], &gg[..h], &go[..h], &c_t[..h], &cprev[..h], &dh_in[..h], &dh_n[..h]);
    let (di, df, dg, dout) = (&mut di[..h], &mut df[..h], &mut dg[..h], &mut dout[..h]);
    for j in 0..h {
        let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
        let tc = tanh(c_t[j]);
        let dh = dh_in[j] + dh_n[j];
        let dc = dc_n[j] + dh * o * (1.0 - tc * tc);
        di[j] = dc * g * i * (1.0 - i);
        df[j] = dc * cprev[j] * f * (1.0 - f);
        dg[j] = dc * i * (1.0 - g * g);
        dout[j] = dh * tc * o * (1.0 - o);
        dc_n[j] = dc * f;
    }
}

/// One batch chunk's share of the forward: rows `[nb, time, ..]` of every sequence tensor.
struct FwdChunk<'a> {
    xw: &'a [f32],
    /// `W_hh^T [H, 4H]` packed by [`pack_panels`].
    packed: &'a [f32],
    h0: &'a [f32],
    c0: &'a [f32],
    hs: &'a mut [f32],
    cs: &'a mut [f32],
    gates: &'a mut [f32],
    nb: usize,
    time: usize,
    h: usize,
}

/// The whole time loop of one batch chunk: per step the recurrent product into the gates (added
/// to `xw`), then the gate nonlinearities and the cell update.
#[inline(always)]
fn forward_chunk<const MR: usize, const NR: usize>(c: FwdChunk) {
    let FwdChunk { xw, packed, h0, c0, hs, cs, gates, nb, time, h } = c;
    let (g4, seq_g, seq_h) = (4 * h, time * 4 * h, time * h);
    for t in 0..time {
        if t + 1 < time {
            // What step t+1 reads (xw) and writes (gates) while this step computes.
            for r in 0..nb {
                let at = r * seq_g + (t + 1) * g4;
                prefetch(&xw[at..at + g4]);
                prefetch(&gates[at..at + g4]);
            }
        }
        // Pre-activations: xw[:, t] + h_{t-1} W_hh^T.
        let (a, rsa) = if t == 0 { (h0, h) } else { (&hs[(t - 1) * h..], seq_h) };
        packed_gemm::<MR, NR>(nb, h, g4, a, rsa, packed, |r, j0, acc| {
            let at = r * seq_g + t * g4 + j0;
            let out = &mut gates[at..at + acc.len()];
            for ((o, &x), &s) in out.iter_mut().zip(&xw[at..at + acc.len()]).zip(acc) {
                *o = x + s;
            }
        });
        // Gates (activated in place, block by block so the loops vectorise), then the cell and
        // hidden state.
        for r in 0..nb {
            let a = &mut gates[r * seq_g + t * g4..][..g4];
            let (ifg, o) = a.split_at_mut(3 * h);
            let (i_f, g) = ifg.split_at_mut(2 * h);
            i_f.iter_mut().for_each(|v| *v = sigmoid(*v));
            g.iter_mut().for_each(|v| *v = tanh(*v));
            o.iter_mut().for_each(|v| *v = sigmoid(*v));
            let (i, f) = i_f.split_at(h);
            let at = r * seq_h + t * h;
            let (cs_prev, cs_t) = cs.split_at_mut(at);
            let cprev = if t == 0 { &c0[r * h..][..h] } else { &cs_prev[at - h..at] };
            cell_update(i, f, g, o, cprev, &mut cs_t[..h], &mut hs[at..at + h]);
        }
    }
}

/// One batch chunk's share of the backward.
struct BwdChunk<'a> {
    /// `W_hh [4H, H]` packed by [`pack_panels`].
    packed: &'a [f32],
    c0: &'a [f32],
    cs: &'a [f32],
    gates: &'a [f32],
    dhs: &'a [f32],
    dxw: &'a mut [f32],
    nb: usize,
    time: usize,
    h: usize,
}

/// The whole backward time loop of one batch chunk (see [`backward`]).
#[inline(always)]
fn backward_chunk<const MR: usize, const NR: usize>(c: BwdChunk) {
    let BwdChunk { packed, c0, cs, gates, dhs, dxw, nb, time, h } = c;
    let (g4, seq_g, seq_h) = (4 * h, time * 4 * h, time * h);
    // Gradients flowing into step t from step t+1: through h_t (dgates_{t+1} W_hh) and c_t.
    let mut dh_next = vec![0.0f32; nb * h];
    let mut dc_next = vec![0.0f32; nb * h];
    for t in (0..time).rev() {
        if t > 0 {
            // What step t-1 reads (gates, c, dh from above) and writes (dxw) while this one runs.
            for r in 0..nb {
                let (at_g, at_h) = (r * seq_g + (t - 1) * g4, r * seq_h + (t - 1) * h);
                prefetch(&gates[at_g..at_g + g4]);
                prefetch(&dxw[at_g..at_g + g4]);
                prefetch(&cs[at_h.saturating_sub(h)..at_h + h]);
                prefetch(&dhs[at_h..at_h + h]);
            }
        }
        for r in 0..nb {
            let a = &gates[r * seq_g + t * g4..][..g4];
            let (ga, go) = a.split_at(2 * h);
            let ((gi, gf), (gg, go)) = (ga.split_at(h), go.split_at(h));
            let d = &mut dxw[r * seq_g + t * g4..][..g4];
            let (da, dgo) = d.split_at_mut(2 * h);
            let ((di, df), (dg, dout)) = (da.split_at_mut(h), dgo.split_at_mut(h));
            let at = r * seq_h + t * h;
            let c_t = &cs[at..at + h];
            let cprev = if t == 0 { &c0[r * h..][..h] } else { &cs[at - h..at] };
            let dh_in = &dhs[at..at + h];
            let dh_n = &dh_next[r * h..][..h];
            let dc_n = &mut dc_next[r * h..][..h];
            cell_backward([gi, gf, gg, go], c_t, cprev, dh_in, dh_n, dc_n, [di, df, dg, dout]);
        }
        if t > 0 {
            // dh_{t-1} = dgates_t [nb, 4H] x W_hh [4H, H].
            packed_gemm::<MR, NR>(nb, g4, h, &dxw[t * g4..], seq_g, packed, |r, j0, acc| {
                dh_next[r * h + j0..][..acc.len()].copy_from_slice(acc);
            });
        }
    }
}

/// The chunk loops compiled for the instruction sets [`Tile`] picks (the same portable code, so
/// the same results; `mul_add` becomes one FMA instruction there), and the portable build.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn forward_chunk_wide(c: FwdChunk) {
    forward_chunk::<WIDE_MR, 32>(c)
}
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn backward_chunk_wide(c: BwdChunk) {
    backward_chunk::<WIDE_MR, 32>(c)
}
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_chunk_avx2(c: FwdChunk) {
    forward_chunk::<4, 16>(c)
}
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn forward_chunk_row_wide(c: FwdChunk) {
    forward_chunk::<1, ROW_NR>(c)
}
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_chunk_row_avx2(c: FwdChunk) {
    forward_chunk::<1, ROW_NR>(c)
}
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn backward_chunk_avx2(c: BwdChunk) {
    backward_chunk::<4, 16>(c)
}

/// Rows of the AVX-512 tile (`WIDE_MR x 32`: two 512-bit registers per row).
const WIDE_MR: usize = 8;

/// Columns per panel of the one-row kernel (batch-1 generation): `1 x 128` accumulators (sixteen
/// 256-bit registers, or eight 512-bit ones), so that the FMA chains of a row are many enough to
/// hide the FMA latency, which a `1 x 16` or `1 x 32` tile could not.
const ROW_NR: usize = 128;

/// A chunk of fewer rows than this runs the one-row kernel (`MR = 1`): a 4- or 8-row tile would
/// compute a whole tile for the 1 to 3 rows it keeps. (From 4 rows on, one tile streaming `W_hh`
/// once beats the row kernel streaming it once per row.)
const ROW_KERNEL_BELOW: usize = 4;

fn run_forward_chunk(tile: Tile, row_kernel: bool, c: FwdChunk) {
    #[cfg(target_arch = "x86_64")]
    {
        if row_kernel {
            if tile == Tile::Wide {
                // SAFETY: as below.
                return unsafe { forward_chunk_row_wide(c) };
            }
            if has_avx2_fma() {
                // SAFETY: checked just above.
                return unsafe { forward_chunk_row_avx2(c) };
            }
        }
        if tile == Tile::Wide {
            // SAFETY: `Tile::detect` picks Wide only when the CPU has AVX-512F (which implies AVX2)
            // and FMA.
            return unsafe { forward_chunk_wide(c) };
        }
        if has_avx2_fma() {
            // SAFETY: checked just above.
            return unsafe { forward_chunk_avx2(c) };
        }
    }
    let _ = tile;
    if row_kernel {
        return forward_chunk::<1, ROW_NR>(c);
    }
    forward_chunk::<4, 16>(c)
}

fn run_backward_chunk(tile: Tile, c: BwdChunk) {
    #[cfg(target_arch = "x86_64")]
    {
        if tile == Tile::Wide {
            // SAFETY: as in `run_forward_chunk`.
            return unsafe { backward_chunk_wide(c) };
        }
        if has_avx2_fma() {
            // SAFETY: checked just above.
            return unsafe { backward_chunk_avx2(c) };
        }
    }
    let _ = tile;
    backward_chunk::<4, 16>(c)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// [`forward_packed`] with `W_hh` packed afresh.
#[cfg(test)]
pub fn forward(xw: &[f32], w_hh: &[f32], h0: &[f32], c0: &[f32], out: LstmSeqs<&mut [f32]>, l: Lstm) {
    forward_packed(xw, &|nr| pack_w_hh(w_hh, l.hidden, nr).into(), h0, c0, out, l)
}

/// `W_hh [4H, H]` packed for the forward recurrence's products, in panels of `nr` columns
/// (what [`forward_packed`] asks for).
pub fn pack_w_hh(w_hh: &[f32], h: usize, nr: usize) -> Vec<f32> {
    // B = W_hh^T [H, 4H]: element (k, j) is w_hh[j*H + k].
    pack_panels(h, 4 * h, w_hh, (1, h), nr)
}

/// Forward recurrence, see [`crate::engine::Backend::lstm_fwd`]. For each step t:
/// `a = xw[:, t] + h_{t-1} W_hh^T`; `i, f, o = sigmoid(a_i, a_f, a_o)`, `g = tanh(a_g)`;
/// `c_t = f c_{t-1} + i g`; `h_t = o tanh(c_t)`. Stores the activated gates for the backward.
/// (Lengths checked by `contract::lstm_fwd`, as the backward's by `contract::lstm_bwd`.)
/// `W_hh` comes packed by `packed(nr)` ([`pack_w_hh`] of the weights, for the panel width it is
/// given), which may come from a cache: the CPU backend packs each `W_hh` once per weight update.
pub fn forward_packed(
    xw: &[f32],
    packed: &dyn Fn(usize) -> std::sync::Arc<Vec<f32>>,
    h0: &[f32],
    c0: &[f32],
    out: LstmSeqs<&mut [f32]>,
    l: Lstm,
) {
    let LstmSeqs { hs, cs, gates } = out;
    let Lstm { batch, time, hidden: h } = l;
    let (seq_g, seq_h) = (time * 4 * h, time * h);
    if batch == 0 || time == 0 || h == 0 {
        return;
    }
    let tile = Tile::detect();
    let rows = rows_per_chunk(batch);
    let row_kernel = rows < ROW_KERNEL_BELOW;
    let packed = packed(if row_kernel { ROW_NR } else { tile.nr() });
    let run = |chunk: usize, gates: &mut [f32], hs: &mut [f32], cs: &mut [f32]| {
            let b0 = chunk * rows;
            let nb = hs.len() / seq_h;
            let c = FwdChunk {
                xw: &xw[b0 * seq_g..(b0 + nb) * seq_g],
                packed: &packed,
                h0: &h0[b0 * h..(b0 + nb) * h],
                c0: &c0[b0 * h..(b0 + nb) * h],
                hs,
                cs,
                gates,
                nb,
                time,
                h,
            };
            run_forward_chunk(tile, row_kernel, c);
    };
    let (gates, hs, cs) = (&mut gates[..batch * seq_g], &mut hs[..batch * seq_h], &mut cs[..batch * seq_h]);
    if rows >= batch {
        // One chunk (batch-1 generation): on this thread, without a hand-off to the pool.
        run(0, gates, hs, cs);
    } else {
        gates
            .par_chunks_mut(rows * seq_g)
            .zip(hs.par_chunks_mut(rows * seq_h))
            .zip(cs.par_chunks_mut(rows * seq_h))
            .enumerate()
            .for_each(|(chunk, ((gates, hs), cs))| run(chunk, gates, hs, cs));
    }
}

/// Backpropagation through time, see [`crate::engine::Backend::lstm_bwd`]. Going backward over t,
/// with `dh = dhs[:, t] + dgates_{t+1} W_hh` and `dc` carried from step t+1 (`dc_{t+1} f_{t+1}`):
/// `dc += dh o (1 - tanh^2 c_t)`; `da_i = dc g i(1-i)`, `da_f = dc c_{t-1} f(1-f)`,
/// `da_g = dc i (1-g^2)`, `da_o = dh tanh(c_t) o(1-o)`. Then, after the loop, in two sgemms:
/// `dw_hh += sum_{b,t} da[b,t]^T h_{t-1}[b]` with `h_{-1} = h0`.
pub fn backward(w_hh: &[f32], saved: LstmSaved<'_, [f32]>, dhs: &[f32], dxw: &mut [f32], dw_hh: &mut [f32], l: Lstm) {
    let LstmSaved { h0, c0, seqs: LstmSeqs { hs, cs, gates } } = saved;
    let Lstm { batch, time, hidden: h } = l;
    let (g4, seq_g, seq_h) = (4 * h, time * 4 * h, time * h);
    if batch == 0 || time == 0 || h == 0 {
        return;
    }
    let tile = Tile::detect();
    // B = W_hh [4H, H] as it is.
    let packed = pack_panels(g4, h, w_hh, (h, 1), tile.nr());
    let rows = rows_per_chunk(batch);
    dxw[..batch * seq_g].par_chunks_mut(rows * seq_g).enumerate().for_each(|(chunk, dxw)| {
        let b0 = chunk * rows;
        let nb = dxw.len() / seq_g;
        let c = BwdChunk {
            packed: &packed,
            c0: &c0[b0 * h..(b0 + nb) * h],
            cs: &cs[b0 * seq_h..(b0 + nb) * seq_h],
            gates: &gates[b0 * seq_g..(b0 + nb) * seq_g],
            dhs: &dhs[b0 * seq_h..(b0 + nb) * seq_h],
            dxw,
            nb,
            time,
            h,
        };
        run_backward_chunk(tile, c);
    });

    // dW_hh [4H, H] += sum over all (b, t) of da[b,t]^T h_{t-1}[b]. Viewing the rows (b, t) of `dxw`
    // and `hs` as one sequence r = b*T + t, row r of dxw pairs with row r-1 of hs, except at t = 0
    // where the partner is h0[b] rather than hs[b-1, T-1]. So: one sgemm over the shifted views
    // (r = 1 .. B*T-1), then one of rank B over the rows t = 0 with `h0[b] - hs[b-1, T-1]`
    // (just `h0[0]` for b = 0, which the shifted product skipped) to fix those pairs.
    let n = batch * time;
    if n > 1 {
        sgemm(g4, n - 1, h, &dxw[g4..n * g4], (1, g4), &hs[..(n - 1) * h], (h, 1), dw_hh, (h, 1), 1.0);
    }
    let mut fix = h0[..batch * h].to_vec();
    for b in 1..batch {
        let last_prev = &hs[(b * time - 1) * h..][..h];
        fix[b * h..(b + 1) * h].iter_mut().zip(last_prev).for_each(|(f, p)| *f -= p);
    }
    sgemm(g4, batch, h, &dxw[..n * g4], (1, seq_g), &fix, (h, 1), dw_hh, (h, 1), 1.0);
}

#[cfg(test)]
mod tests;
