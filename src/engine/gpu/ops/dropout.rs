//! Inverted dropout on the GPU (`shaders/dropout.wgsl`): the mask is a counter-based hash of the
//! element index, so the CPU draws the same one.

use crate::engine::gpu::{grid_1d, u, GpuBuffer, Recording, Shader};
use crate::engine::{contract, DropMask};

const DROPOUT: Shader = Shader { name: "dropout", source: include_str!("../../../../shaders/dropout.wgsl") };

pub(crate) fn record_dropout(rec: &mut Recording<'_>, x: &mut GpuBuffer, n: usize, mask: DropMask) {
    contract::dropout(n, [x.len()]);
    let p = [u(n), mask.key0, mask.key1, mask.threshold, mask.scale_bits];
    rec.dispatch(&DROPOUT, "dropout", &[x], &p, grid_1d(n, 256));
}
