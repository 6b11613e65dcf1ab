//! Softmax cross-entropy on the GPU (`shaders/softmax_xent.wgsl`): per row the loss statistics and
//! the gradient of the logits, loss-scaled at f16.

use super::{check_f32, check_len, check_same_elem, f, grid_groups, u, GpuBuffer, Recording, Shader};

const SOFTMAX_XENT: Shader =
    Shader { name: "softmax_xent", source: include_str!("../../../shaders/softmax_xent.wgsl") };

#[allow(clippy::too_many_arguments)]
pub(crate) fn record_softmax_xent(
    rec: &mut Recording<'_>,
    logits: &GpuBuffer,
    targets: &GpuBuffer,
    dlogits: &mut GpuBuffer,
    stats: &mut GpuBuffer,
    n: usize,
    v: usize,
    grad_scale: f32,
) {
    check_len("softmax_xent", "logits", logits, n * v);
    check_len("softmax_xent", "targets", targets, n);
    check_len("softmax_xent", "dlogits", dlogits, n * v);
    check_len("softmax_xent", "stats", stats, 2 * n);
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
