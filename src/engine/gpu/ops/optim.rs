//! The optimizer's ops on the GPU (`shaders/optim.wgsl`): sums of squares, the global norm and
//! clipping scale, weight decay and the Adam(W) update.

use crate::engine::gpu::{check_f32, check_same_elem, f, grid_1d, u, GpuBuffer, Recording, Shader};
use crate::engine::{contract, AdamStep};

const OPTIM: Shader = Shader { name: "optim", source: include_str!("../../../../shaders/optim.wgsl") };

/// Most workgroups of `grad_norm_clip`'s first pass (partial sums); its second pass, one
/// workgroup of 256, adds this many partials.
const NORM_GROUPS: usize = 256;

pub(crate) fn record_sum_squares(rec: &mut Recording<'_>, x: &GpuBuffer, n: usize, acc: &mut GpuBuffer) {
    contract::sum_squares(n, [x.len(), acc.len()]);
    check_f32("sum_squares", "acc", acc);
    // The gradient is unscaled before it is squared (a multiplication by 1 at f32).
    let p = [u(n), 0, 0, 0, 0, 0, 0, f(1.0 / rec.ctx.loss_scale())];
    rec.dispatch(&OPTIM, "sum_squares", &[x, acc], &p, [1, 1, 1]);
}

pub(crate) fn record_clip_scale(rec: &mut Recording<'_>, acc: &GpuBuffer, max_norm: f32, scale: &mut GpuBuffer) {
    contract::clip_scale([acc.len(), scale.len()]);
    check_f32("clip_scale", "acc", acc);
    check_f32("clip_scale", "scale", scale);
    rec.dispatch(&OPTIM, "clip_scale", &[acc, scale], &[f(max_norm)], [1, 1, 1]);
}

pub(crate) fn record_decay(rec: &mut Recording<'_>, p: &mut GpuBuffer, n: usize, factor: f32) {
    contract::decay(n, [p.len()]);
    rec.dispatch(&OPTIM, "decay", &[p], &[u(n), f(factor)], grid_1d(n, 256));
}

pub(crate) fn record_grad_norm_clip(rec: &mut Recording<'_>, g: &GpuBuffer, n: usize, max_norm: f32, acc: &mut GpuBuffer, scale: &mut GpuBuffer) {
    const OP: &str = "grad_norm_clip";
    contract::grad_norm_clip(n, [g.len(), acc.len(), scale.len()]);
    check_f32(OP, "acc", acc);
    check_f32(OP, "scale", scale);
    // Partial sums of 256-wide workgroups striding over g (at most NORM_GROUPS of them, a
    // fixed function of n: the sum's order, hence its bits, do not depend on timing), then one
    // workgroup adds them and writes the norm and the scale.
    let groups = n.div_ceil(256).clamp(1, NORM_GROUPS);
    rec.with_scratch("grad_norm_clip", groups, |rec, part| {
        let unscale = f(1.0 / rec.ctx.loss_scale());
        rec.dispatch(&OPTIM, "norm_partials", &[g, part], &[u(n), 0, 0, 0, 0, 0, 0, unscale], [u(groups), 1, 1]);
        rec.dispatch(&OPTIM, "norm_finish", &[part, acc, scale], &[u(groups), f(max_norm)], [1, 1, 1]);
    });
}

/// [`crate::engine::Backend::adamw`] (plain Adam is `factor = 1`): checks, then one dispatch.
pub(crate) fn record_adamw(rec: &mut Recording<'_>, p: &GpuBuffer, g: &GpuBuffer, m: &GpuBuffer, v: &GpuBuffer, scale: &GpuBuffer, step: AdamStep) {
    const OP: &str = "adamw";
    contract::adamw(&step, [p.len(), g.len(), m.len(), v.len(), scale.len()]);
    let AdamStep { n, hp, factor } = step;
    check_same_elem(OP, &[("p", p), ("g", g)]);
    for (what, b) in [("m", m), ("v", v), ("scale", scale)] {
        check_f32(OP, what, b);
    }
    // Bias corrections computed on the host exactly as the CPU backend does.
    let t = hp.step as i32;
    let step_size = hp.lr / (1.0 - hp.beta1.powi(t));
    let bc2_sqrt = (1.0 - hp.beta2.powi(t)).sqrt();
    let params = [
        u(n),
        f(step_size),
        f(bc2_sqrt),
        f(hp.beta1),
        f(hp.beta2),
        f(hp.eps),
        f(hp.weight_decay),
        f(1.0 / rec.ctx.loss_scale()),
        f(factor),
    ];
    rec.dispatch(&OPTIM, "adam", &[g, scale, p, m, v], &params, grid_1d(n, 256));
}
