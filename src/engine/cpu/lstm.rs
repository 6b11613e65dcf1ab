//! CPU twin of `shaders/lstm.wgsl`: the fused LSTM recurrence and its backpropagation through time.
use crate::engine::Lstm;

#[allow(clippy::too_many_arguments)]
pub fn forward(
    _xw: &[f32],
    _w_hh: &[f32],
    _h0: &[f32],
    _c0: &[f32],
    _hs: &mut [f32],
    _cs: &mut [f32],
    _gates: &mut [f32],
    _l: Lstm,
) {
    todo!("lstm forward (issue 5)")
}

#[allow(clippy::too_many_arguments)]
pub fn backward(
    _w_hh: &[f32],
    _h0: &[f32],
    _c0: &[f32],
    _hs: &[f32],
    _cs: &[f32],
    _gates: &[f32],
    _dhs: &[f32],
    _dxw: &mut [f32],
    _dw_hh: &mut [f32],
    _l: Lstm,
) {
    todo!("lstm backward (issue 5)")
}
