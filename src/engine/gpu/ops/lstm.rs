//! The LSTM recurrence on the GPU (issue 5): see [`crate::engine::Backend::lstm_fwd`] and
//! [`crate::engine::Backend::lstm_bwd`] for the math and layout, and `shaders/lstm.wgsl` for the
//! kernels. The forward is one dispatch per layer (a workgroup per batch row loops over time); the
//! backward is the recurrence (one dispatch looping backward over time) and the `dW_hh` product
//! over all steps (Hprev gathered, then the matrix product (`matmul.rs`), which splits the long sum over
//! the B*T rows into ranges whose partials are added in order: no atomics; on software renderers it
//! is the register-blocked product). On software renderers (see `use_rows_kernels`) the recurrence
//! runs 8 batch rows per workgroup from a packed copy of W_hh; on other adapters the forward reads
//! a packed W_hh^T so that neighbouring invocations read neighbouring words.

use super::matmul::record_matmul;
use crate::engine::gpu::context::Context;
use crate::engine::gpu::{check_same_elem, grid_1d, grid_groups, GpuBuffer, Recording, Shader};
use crate::engine::{contract, Lstm, LstmSaved, LstmSeqs, MatMul};

const LSTM: Shader = Shader { name: "lstm", source: include_str!("../../../../shaders/lstm.wgsl") };

/// Largest hidden size the shaders hold in workgroup memory (`MAX_H` in `lstm.wgsl`).
pub const MAX_HIDDEN: usize = 512;

/// Largest hidden size of the software-renderer kernels (`RH` in `lstm.wgsl`).
const ROWS_MAX_HIDDEN: usize = 128;
/// Batch rows per workgroup of the software-renderer kernels (`RB` in `lstm.wgsl`).
const ROWS_PER_GROUP: usize = 8;

/// Whether the recurrence uses the `*_rows` kernels: on software adapters (lavapipe), where a
/// workgroup is one CPU thread and loads, not workgroups, are scarce (see `lstm.wgsl`), for
/// `H <= 128`. Real GPUs keep one workgroup per batch row.
fn use_rows_kernels(ctx: &Context, h: usize) -> bool {
    h <= ROWS_MAX_HIDDEN && ctx.software_kernels()
}

/// Records `lstm_pack` of `w_hh` into `out` (at least `4 * H4 * H4` floats): `transposed` gives
/// `[H4, 4 H4]` (W_hh^T by gate blocks), otherwise `[4H, H4]`; rows padded to `H4 = ceil(H/4)*4`.
fn pack(rec: &mut Recording<'_>, w_hh: &GpuBuffer, out: &GpuBuffer, p: [u32; 3], transposed: bool) {
    let h4 = (p[2] as usize).div_ceil(4) * 4;
    let p = [p[0], p[1], p[2], transposed as u32];
    rec.dispatch(&LSTM, "lstm_pack", &[w_hh, out], &p, grid_1d(4 * h4 * h4, 256));
}

fn params(op: &str, l: Lstm) -> [u32; 3] {
    assert!(l.hidden <= MAX_HIDDEN, "{op}: hidden size {} exceeds the GPU kernel's limit of {MAX_HIDDEN}", l.hidden);
    let _ = word(op, l.batch * l.time * 4 * l.hidden); // every flat index must fit too
    [word(op, l.batch), word(op, l.time), word(op, l.hidden)]
}

fn word(op: &str, x: usize) -> u32 {
    u32::try_from(x).unwrap_or_else(|_| panic!("{op}: size {x} does not fit in 32 bits"))
}

/// Forward recurrence of one layer: writes `hs`, `cs [batch, time, H]` and `gates [batch, time, 4H]`.
pub(crate) fn record_fwd(
    rec: &mut Recording<'_>,
    xw: &GpuBuffer,
    w_hh: &GpuBuffer,
    h0: &GpuBuffer,
    c0: &GpuBuffer,
    out: LstmSeqs<&mut GpuBuffer>,
    l: Lstm,
) {
    let LstmSeqs { hs, cs, gates } = out;
    let Lstm { batch, time, hidden: h } = l;
    let op = "lstm_fwd";
    contract::lstm_fwd(&l, [xw.len(), w_hh.len(), h0.len(), c0.len(), hs.len(), cs.len(), gates.len()]);
    check_same_elem(
        op,
        &[("xw", xw), ("w_hh", w_hh), ("h0", h0), ("c0", c0), ("hs", hs), ("cs", cs), ("gates", gates)],
    );
    let p = params(op, l);
    if batch == 0 || time == 0 || h == 0 {
        return;
    }
    // Both kernels read W_hh packed: as it is, rows padded for vec4 loads (software renderers), or
    // transposed, so that the gate rows' dot products read neighbouring words (the portable one).
    let rows = use_rows_kernels(rec.ctx, h);
    let h4 = h.div_ceil(4) * 4;
    rec.with_scratch("lstm_pack", 4 * h4 * h4, |rec, wp| {
        pack(rec, w_hh, wp, p, !rows);
        if rows {
            let groups = grid_groups(batch.div_ceil(ROWS_PER_GROUP));
            rec.dispatch(&LSTM, "lstm_fwd_rows", &[xw, wp, h0, c0, hs, cs, gates], &p, groups);
        } else {
            rec.dispatch(&LSTM, "lstm_fwd", &[xw, wp, h0, c0, hs, cs, gates], &p, grid_groups(batch));
        }
    });
}

/// Backpropagation through time: writes `dxw [batch, time, 4H]`, accumulates `dw_hh [4H, H]`.
pub(crate) fn record_bwd(
    rec: &mut Recording<'_>,
    w_hh: &GpuBuffer,
    saved: LstmSaved<'_, GpuBuffer>,
    dhs: &GpuBuffer,
    dxw: &mut GpuBuffer,
    dw_hh: &mut GpuBuffer,
    l: Lstm,
) {
    let LstmSaved { h0, c0, seqs: LstmSeqs { hs, cs, gates } } = saved;
    let Lstm { batch, time, hidden: h } = l;
    let op = "lstm_bwd";
    contract::lstm_bwd(&l, [w_hh.len(), h0.len(), c0.len(), hs.len(), cs.len(), gates.len(), dhs.len(), dxw.len(), dw_hh.len()]);
    check_same_elem(
        op,
        &[("w_hh", w_hh), ("h0", h0), ("c0", c0), ("hs", hs), ("cs", cs), ("gates", gates), ("dhs", dhs), ("dxw", dxw)],
    );
    check_same_elem(op, &[("w_hh", w_hh), ("dw_hh", dw_hh)]);
    let p = params(op, l);
    if batch == 0 || time == 0 || h == 0 {
        return;
    }
    if use_rows_kernels(rec.ctx, h) {
        let h4 = h.div_ceil(4) * 4;
        rec.with_scratch("lstm_pack", 4 * h4 * h4, |rec, wt| {
            pack(rec, w_hh, wt, p, true);
            let groups = grid_groups(batch.div_ceil(ROWS_PER_GROUP));
            rec.dispatch(&LSTM, "lstm_bwd_rows", &[wt, c0, cs, gates, dhs, dxw], &p, groups);
        });
    } else {
        rec.dispatch(&LSTM, "lstm_bwd", &[w_hh, c0, cs, gates, dhs, dxw], &p, grid_groups(batch));
    }

    // dW_hh [4H, H] += dxw^T [4H, B*T] Hprev [B*T, H]: Hprev (row (b, t) = hs[b, t-1], or h0[b]
    // at t = 0) gathered once, then the matrix product (`matmul.rs`), which splits the long sum over
    // the B*T rows on GPUs (few output tiles) and uses register blocks on software renderers.
    let rows = batch * time;
    let mm = MatMul { m: 4 * h, k: rows, n: h, trans_a: true, trans_b: false, accumulate: true };
    rec.with_scratch_of("lstm_hprev", rows * h, dw_hh.elem(), |rec, hprev| {
        rec.dispatch(&LSTM, "lstm_hprev", &[hs, h0, hprev], &p, grid_1d(rows * h, 256));
        record_matmul(rec, dxw, hprev, dw_hh, mm);
    });
}

#[cfg(test)]
mod tests {
    use crate::engine::gpu::tests::{own_gpu, random, upload};
    use crate::engine::gpu::KernelVariant;
    use crate::engine::{Backend, Lstm, LstmSaved, LstmSeqs};

    /// hs, cs, gates, dxw, dW_hh of one layer with the given kernel variant.
    fn run(variant: KernelVariant, l: Lstm, seed: u64) -> Vec<Vec<f32>> {
        let g = own_gpu();
        g.set_kernel_variant(variant);
        let (n, h) = (l.batch * l.time, l.hidden);
        let scaled = |k: u64, len: usize, a: f32| -> Vec<f32> { random(seed + k, len).iter().map(|v| a * v).collect() };
        let xw = upload(&g, &scaled(0, n * 4 * h, 1.5));
        let w_hh = upload(&g, &scaled(1, 4 * h * h, 1.0 / (h as f32).sqrt()));
        let (h0, c0) = (upload(&g, &scaled(2, l.batch * h, 0.8)), upload(&g, &scaled(3, l.batch * h, 0.8)));
        let dhs = upload(&g, &scaled(4, n * h, 1.0));
        let (mut hs, mut cs, mut gates) = (g.alloc(n * h), g.alloc(n * h), g.alloc(n * 4 * h));
        let (mut dxw, mut dw_hh) = (g.alloc(n * 4 * h), upload(&g, &vec![0.25; 4 * h * h]));
        g.lstm_fwd(&xw, &w_hh, &h0, &c0, LstmSeqs { hs: &mut hs, cs: &mut cs, gates: &mut gates }, l);
        g.lstm_bwd(&w_hh, LstmSaved { h0: &h0, c0: &c0, seqs: LstmSeqs { hs: &hs, cs: &cs, gates: &gates } }, &dhs, &mut dxw, &mut dw_hh, l);
        vec![g.read(&hs, n * h), g.read(&cs, n * h), g.read(&gates, n * 4 * h), g.read(&dxw, n * 4 * h), g.read(&dw_hh, 4 * h * h)]
    }

    /// The software-renderer kernels (8 rows per workgroup, padded vec4 W_hh, dW_hh as a product)
    /// against the portable ones, at batches that leave a partial workgroup and H off multiples
    /// of 4 (padding) and on them (the dW_hh product). Both compute in f32 and differ only in the
    /// order of the dot products' sums (~1e-7 relative per step); over these few steps of a
    /// contracting recurrence that stays below 2e-6 (the bound of tests/gpu_lstm.rs), and dW_hh,
    /// a sum over B*T rows, grows like sqrt(B*T). A wrong index or gate is off by O(0.1).
    #[test]
    fn software_kernels_match_the_portable_ones() {
        for (s, &(batch, time, hidden)) in [(3, 5, 8), (9, 4, 20), (2, 3, 6), (8, 6, 128), (17, 2, 33)].iter().enumerate() {
            let l = Lstm { batch, time, hidden };
            let seed = 500 + 10 * s as u64;
            let want = run(KernelVariant::Portable, l, seed);
            let got = run(KernelVariant::Software, l, seed);
            let red = ((batch * time) as f32).sqrt();
            for (k, name) in ["hs", "cs", "gates", "dxw", "dw_hh"].iter().enumerate() {
                let tol = if k == 4 { 2e-6 * red } else { 2e-6 };
                for (i, (&a, &b)) in got[k].iter().zip(&want[k]).enumerate() {
                    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{l:?} {name}[{i}]: software {a}, portable {b}");
                }
            }
        }
    }
}
