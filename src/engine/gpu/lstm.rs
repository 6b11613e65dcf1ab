//! The LSTM recurrence on the GPU (issue 5): see [`crate::engine::Backend::lstm_fwd`] and
//! [`crate::engine::Backend::lstm_bwd`] for the math and layout.
//! Record dispatches with `gpu.dispatch(...)` (see the recording API in `super`).

use super::{GpuBackend, GpuBuffer};
use crate::engine::Lstm;

/// Forward recurrence of one layer: writes `hs`, `cs [batch, time, H]` and `gates [batch, time, 4H]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    _gpu: &GpuBackend,
    _xw: &GpuBuffer,
    _w_hh: &GpuBuffer,
    _h0: &GpuBuffer,
    _c0: &GpuBuffer,
    _hs: &mut GpuBuffer,
    _cs: &mut GpuBuffer,
    _gates: &mut GpuBuffer,
    _l: Lstm,
) {
    todo!("issue 5: lstm shader")
}

/// Backpropagation through time: writes `dxw [batch, time, 4H]`, accumulates `dw_hh [4H, H]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    _gpu: &GpuBackend,
    _w_hh: &GpuBuffer,
    _h0: &GpuBuffer,
    _c0: &GpuBuffer,
    _hs: &GpuBuffer,
    _cs: &GpuBuffer,
    _gates: &GpuBuffer,
    _dhs: &GpuBuffer,
    _dxw: &mut GpuBuffer,
    _dw_hh: &mut GpuBuffer,
    _l: Lstm,
) {
    todo!("issue 5: lstm shader")
}
