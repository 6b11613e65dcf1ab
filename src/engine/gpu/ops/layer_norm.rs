//! LayerNorm on the GPU (issue 26): see [`crate::engine::LayerNorm`] for the math and
//! `shaders/layer_norm.wgsl` for the kernels (one invocation per row for the forward and dx, one
//! per column for the weight and bias gradients). The saved `stats` stay f32 at every precision.

use crate::engine::gpu::{check_f32, check_same_elem, f, grid_1d, u, GpuBuffer, Recording, Shader};
use crate::engine::{contract, LayerNorm};

const LAYER_NORM: Shader = Shader { name: "layer_norm", source: include_str!("../../../../shaders/layer_norm.wgsl") };

/// Invocations per workgroup (the shader's `WG`).
const WG: u32 = 64;

/// The kernels' parameter words: rows, width, eps. Every flat index must fit in 32 bits.
fn params(ln: &LayerNorm) -> [u32; 3] {
    assert!(
        ln.rows.checked_mul(ln.width.max(2)).is_some_and(|n| n < u32::MAX as usize),
        "layer_norm: {} rows x width {} too large for 32-bit indices",
        ln.rows,
        ln.width
    );
    [u(ln.rows), u(ln.width), f(ln.eps)]
}

/// `y [rows, width]` and `stats [rows, 2]` (f32) from `x`, `weight`, `bias`.
pub(crate) fn record_fwd(
    rec: &mut Recording<'_>,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    bias: &GpuBuffer,
    y: &mut GpuBuffer,
    stats: &mut GpuBuffer,
    ln: LayerNorm,
) {
    contract::layer_norm_fwd(&ln, [x.len(), weight.len(), bias.len(), y.len(), stats.len()]);
    check_same_elem("layer_norm_fwd", &[("x", x), ("weight", weight), ("bias", bias), ("y", y)]);
    check_f32("layer_norm_fwd", "stats", stats);
    if ln.rows == 0 || ln.width == 0 {
        return;
    }
    rec.dispatch(&LAYER_NORM, "ln_fwd", &[x, weight, bias, y, stats], &params(&ln), grid_1d(ln.rows, WG));
}

/// `dx`, `dweight`, `dbias` += the gradients from `dy` and the saved `stats`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_bwd(
    rec: &mut Recording<'_>,
    x: &GpuBuffer,
    weight: &GpuBuffer,
    stats: &GpuBuffer,
    dy: &GpuBuffer,
    dx: &mut GpuBuffer,
    dweight: &mut GpuBuffer,
    dbias: &mut GpuBuffer,
    ln: LayerNorm,
) {
    contract::layer_norm_bwd(&ln, [x.len(), weight.len(), stats.len(), dy.len(), dx.len(), dweight.len(), dbias.len()]);
    check_same_elem(
        "layer_norm_bwd",
        &[("x", x), ("weight", weight), ("dy", dy), ("dx", dx), ("dweight", dweight), ("dbias", dbias)],
    );
    check_f32("layer_norm_bwd", "stats", stats);
    if ln.rows == 0 || ln.width == 0 {
        return;
    }
    let words = params(&ln);
    rec.dispatch(&LAYER_NORM, "ln_bwd_x", &[x, weight, stats, dy, dx], &words, grid_1d(ln.rows, WG));
    rec.dispatch(&LAYER_NORM, "ln_bwd_wb", &[x, stats, dy, dweight, dbias], &words, grid_1d(ln.width, WG));
}
