//! CPU twin of `shaders/conv1d.wgsl`: causal dilated Conv1d forward and backward.
use crate::engine::Conv1d;

pub fn forward(_x: &[f32], _w: &[f32], _bias: &[f32], _y: &mut [f32], _c: Conv1d) {
    todo!("conv1d forward (issue 4)")
}

pub fn backward_input(_dy: &[f32], _w: &[f32], _dx: &mut [f32], _c: Conv1d, _accumulate: bool) {
    todo!("conv1d backward to the input (issue 4)")
}

pub fn backward_weight(_x: &[f32], _dy: &[f32], _dw: &mut [f32], _dbias: &mut [f32], _c: Conv1d) {
    todo!("conv1d backward to the weights (issue 4)")
}
