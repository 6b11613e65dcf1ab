//! Softmax cross-entropy on the GPU (`shaders/softmax_xent.wgsl`): per row the loss statistics and
//! the gradient of the logits, loss-scaled at f16.

use crate::engine::gpu::{check_f32, check_same_elem, f, grid_groups, u, GpuBuffer, Recording, Shader};
use crate::engine::{contract, Xent};

const SOFTMAX_XENT: Shader =
    Shader { name: "softmax_xent", source: include_str!("../../../../shaders/softmax_xent.wgsl") };

pub(crate) fn record_softmax_xent(
    rec: &mut Recording<'_>,
    logits: &GpuBuffer,
    targets: &GpuBuffer,
    dlogits: &mut GpuBuffer,
    stats: &mut GpuBuffer,
    x: Xent,
) {
    contract::softmax_xent(&x, [logits.len(), targets.len(), dlogits.len(), stats.len()]);
    let Xent { n, v, grad_scale } = x;
    check_same_elem("softmax_xent", &[("logits", logits), ("dlogits", dlogits)]);
    check_f32("softmax_xent", "stats", stats);
    if v == 0 {
        return;
    }
    // The gradient leaves loss-scaled (times 1 at f32: unchanged).
    rec.dispatch(
        &SOFTMAX_XENT,
        "softmax_xent",
        &[logits, targets, dlogits, stats],
        &[u(n), u(v), f(grad_scale * rec.ctx.loss_scale())],
        grid_groups(n),
    );
}
