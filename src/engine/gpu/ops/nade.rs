//! The NADE head's op on the GPU (see [`crate::engine::nade`] for the math and layout,
//! `shaders/nade.wgsl` for the kernels): the forward in one dispatch (a workgroup per row), the
//! backward in four (the logits' gradient, per-run partial dW and dV with dbh, and the two sums of
//! the partials), without float atomics.

use crate::engine::contract;
use crate::engine::gpu::{check_f32, check_same_elem, f, grid_1d, grid_groups, u, GpuBuffer, Recording, Shader};
use crate::engine::nade::{grad_lens, in_lens, Nade, NadeGrads, NadeIn};

const NADE: Shader = Shader { name: "nade", source: include_str!("../../../../shaders/nade.wgsl") };

/// Most floats of scratch the backward's partial `dW`, `dV` use (16 MiB).
const NADE_SCRATCH: usize = 4 << 20;
/// Most runs of rows the backward splits the batch into.
const MAX_SEGMENTS: usize = 64;

pub(crate) fn record_nade_fwd(rec: &mut Recording<'_>, x: NadeIn<'_, GpuBuffer>, logits: &mut GpuBuffer, stats: &mut GpuBuffer, d: Nade) {
    contract::nade_fwd(&d, in_lens(&x, |b| b.len()), [logits.len(), stats.len()]);
    let NadeIn { bh, bv, w, v, y, rw } = x;
    check_same_elem("nade_fwd", &[("bh", bh), ("bv", bv), ("w", w), ("v", v), ("y", y), ("rw", rw), ("logits", logits)]);
    check_f32("nade_fwd", "stats", stats);
    let Nade { n, k, h, .. } = d;
    if n * k == 0 {
        return;
    }
    let p = [u(n), u(k), u(h), f(0.0), 0, 0, 0];
    rec.dispatch(&NADE, "nade_fwd", &[bh, bv, w, v, y, rw, logits, stats], &p, grid_groups(n));
}

pub(crate) fn record_nade_bwd(rec: &mut Recording<'_>, x: NadeIn<'_, GpuBuffer>, logits: &GpuBuffer, g: NadeGrads<'_, GpuBuffer>, d: Nade) {
    contract::nade_bwd(&d, in_lens(&x, |b| b.len()), logits.len(), grad_lens(&g, |b| b.len()));
    let NadeIn { bh, w, v, y, rw, .. } = x;
    let NadeGrads { dbh, dbv, dw, dv } = g;
    check_same_elem(
        "nade_bwd",
        &[("bh", bh), ("w", w), ("v", v), ("y", y), ("rw", rw), ("logits", logits), ("dbh", dbh), ("dbv", dbv), ("dw", dw), ("dv", dv)],
    );
    let Nade { n, k, h, grad_scale } = d;
    if n * k == 0 {
        return;
    }
    // The gradients leave loss-scaled (times 1 at f32), as bce_logits's do.
    let scale = grad_scale * rec.ctx.loss_scale();
    let plane = k * h;
    let segments = (NADE_SCRATCH / (2 * plane).max(1)).clamp(1, MAX_SEGMENTS).min(n.div_ceil(8));
    let seg_len = n.div_ceil(segments);
    let p = |plane_id: usize| [u(n), u(k), u(h), f(scale), u(segments), u(seg_len), u(plane_id)];
    rec.dispatch(&NADE, "nade_bwd_g", &[logits, y, rw, dbv], &p(0), grid_1d(n * k, 256));
    if h == 0 {
        return;
    }
    rec.with_scratch("nade_bwd", segments * 2 * plane, |rec, partial| {
        let groups = [h.div_ceil(64) as u32, segments as u32, 1];
        rec.dispatch(&NADE, "nade_bwd_partial", &[bh, dbv, w, v, y, dbh, partial], &p(0), groups);
        rec.dispatch(&NADE, "nade_bwd_reduce", &[partial, dw], &p(0), grid_1d(plane, 256));
        rec.dispatch(&NADE, "nade_bwd_reduce", &[partial, dv], &p(1), grid_1d(plane, 256));
    });
}
