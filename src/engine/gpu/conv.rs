//! Causal dilated Conv1d on the GPU (issue 4): see [`crate::engine::Conv1d`] for the math and layout.
//! Record dispatches with `gpu.dispatch(...)` (see the recording API in `super`).

use super::{GpuBackend, GpuBuffer};
use crate::engine::Conv1d;

/// `y [batch, cout, time]` from `x [batch, cin, time]`, `w [cout, cin, k]`, `bias [cout]`.
pub(crate) fn forward(_gpu: &GpuBackend, _x: &GpuBuffer, _w: &GpuBuffer, _bias: &GpuBuffer, _y: &mut GpuBuffer, _c: Conv1d) {
    todo!("issue 4: conv1d shader")
}

/// `dx [batch, cin, time] (+)= d/dx` from `dy [batch, cout, time]`.
pub(crate) fn backward_input(
    _gpu: &GpuBackend,
    _dy: &GpuBuffer,
    _w: &GpuBuffer,
    _dx: &mut GpuBuffer,
    _c: Conv1d,
    _accumulate: bool,
) {
    todo!("issue 4: conv1d shader")
}

/// `dw [cout, cin, k] += d/dw`, `dbias [cout] += d/dbias`.
pub(crate) fn backward_weight(
    _gpu: &GpuBackend,
    _x: &GpuBuffer,
    _dy: &GpuBuffer,
    _dw: &mut GpuBuffer,
    _dbias: &mut GpuBuffer,
    _c: Conv1d,
) {
    todo!("issue 4: conv1d shader")
}
