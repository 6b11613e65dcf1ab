//! The LSTM recurrence on the GPU (issue 5): see [`crate::engine::Backend::lstm_fwd`] and
//! [`crate::engine::Backend::lstm_bwd`] for the math and layout, and `shaders/lstm.wgsl` for the
//! kernels. The forward is one dispatch per layer (a workgroup per batch row loops over time); the
//! backward is two: the recurrence (one dispatch looping backward over time) and the `dW_hh`
//! product over all steps (a tiled matmul-like pass, no atomics).

use super::{check_len, grid_2d, grid_groups, GpuBackend, GpuBuffer, Shader};
use crate::engine::Lstm;

const LSTM: Shader = Shader { name: "lstm", source: include_str!("../../../shaders/lstm.wgsl") };

/// Largest hidden size the shaders hold in workgroup memory (`MAX_H` in `lstm.wgsl`).
pub const MAX_HIDDEN: usize = 512;

fn params(op: &str, l: Lstm) -> [u32; 3] {
    assert!(l.hidden <= MAX_HIDDEN, "{op}: hidden size {} exceeds the GPU kernel's limit of {MAX_HIDDEN}", l.hidden);
    let w = |x: usize| u32::try_from(x).unwrap_or_else(|_| panic!("{op}: size {x} does not fit in 32 bits"));
    let _ = w(l.batch * l.time * 4 * l.hidden); // every flat index must fit too
    [w(l.batch), w(l.time), w(l.hidden)]
}

/// Forward recurrence of one layer: writes `hs`, `cs [batch, time, H]` and `gates [batch, time, 4H]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    gpu: &GpuBackend,
    xw: &GpuBuffer,
    w_hh: &GpuBuffer,
    h0: &GpuBuffer,
    c0: &GpuBuffer,
    hs: &mut GpuBuffer,
    cs: &mut GpuBuffer,
    gates: &mut GpuBuffer,
    l: Lstm,
) {
    let Lstm { batch, time, hidden: h } = l;
    let op = "lstm_fwd";
    check_len(op, "xw", xw, batch * time * 4 * h);
    check_len(op, "w_hh", w_hh, 4 * h * h);
    check_len(op, "h0", h0, batch * h);
    check_len(op, "c0", c0, batch * h);
    check_len(op, "hs", hs, batch * time * h);
    check_len(op, "cs", cs, batch * time * h);
    check_len(op, "gates", gates, batch * time * 4 * h);
    let p = params(op, l);
    if batch == 0 || time == 0 || h == 0 {
        return;
    }
    gpu.dispatch(&LSTM, "lstm_fwd", &[xw, w_hh, h0, c0, hs, cs, gates], &p, grid_groups(batch));
}

/// Backpropagation through time: writes `dxw [batch, time, 4H]`, accumulates `dw_hh [4H, H]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    gpu: &GpuBackend,
    w_hh: &GpuBuffer,
    h0: &GpuBuffer,
    c0: &GpuBuffer,
    hs: &GpuBuffer,
    cs: &GpuBuffer,
    gates: &GpuBuffer,
    dhs: &GpuBuffer,
    dxw: &mut GpuBuffer,
    dw_hh: &mut GpuBuffer,
    l: Lstm,
) {
    let Lstm { batch, time, hidden: h } = l;
    let op = "lstm_bwd";
    check_len(op, "w_hh", w_hh, 4 * h * h);
    check_len(op, "h0", h0, batch * h);
    check_len(op, "c0", c0, batch * h);
    check_len(op, "hs", hs, batch * time * h);
    check_len(op, "cs", cs, batch * time * h);
    check_len(op, "gates", gates, batch * time * 4 * h);
    check_len(op, "dhs", dhs, batch * time * h);
    check_len(op, "dxw", dxw, batch * time * 4 * h);
    check_len(op, "dw_hh", dw_hh, 4 * h * h);
    let p = params(op, l);
    if batch == 0 || time == 0 || h == 0 {
        return;
    }
    gpu.dispatch(&LSTM, "lstm_bwd", &[w_hh, c0, cs, gates, dhs, dxw], &p, grid_groups(batch));
    gpu.dispatch(&LSTM, "lstm_dw_hh", &[dxw, hs, h0, dw_hh], &p, grid_2d(h, 4 * h, 64, 64));
}
