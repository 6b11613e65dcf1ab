//! The piano-roll ops on the GPU (see [`crate::engine::roll::RollOps`] for the math and layout,
//! `shaders/bce.wgsl` and `shaders/bag.wgsl` for the kernels).

use crate::engine::gpu::{check_f32, check_same_elem, f, grid_1d, grid_2d, u, GpuBackend, GpuBuffer, Recording, Shader};
use crate::engine::roll::RollOps;
use crate::engine::nade::{Nade, NadeGrads, NadeIn};
use crate::engine::{contract, Bag, Bce};

const BCE: Shader = Shader { name: "bce", source: include_str!("../../../../shaders/bce.wgsl") };
const BAG: Shader = Shader { name: "bag", source: include_str!("../../../../shaders/bag.wgsl") };

/// Most floats of scratch `bag_bwd` uses for its per-run partial tables (16 MiB).
const BAG_SCRATCH: usize = 4 << 20;

impl RollOps for GpuBackend {
    fn bce_logits(&self, logits: &GpuBuffer, y: &GpuBuffer, w: &GpuBuffer, dlogits: &mut GpuBuffer, stats: &mut GpuBuffer, bce: Bce) {
        record_bce_logits(&mut self.recording(), logits, y, w, dlogits, stats, bce)
    }

    fn bag_fwd(&self, ids: &GpuBuffer, table: &GpuBuffer, out: &mut GpuBuffer, bag: Bag) {
        record_bag_fwd(&mut self.recording(), ids, table, out, bag)
    }

    fn bag_bwd(&self, ids: &GpuBuffer, dout: &GpuBuffer, dtable: &mut GpuBuffer, bag: Bag, rows: usize) {
        record_bag_bwd(&mut self.recording(), ids, dout, dtable, bag, rows)
    }

    fn nade_fwd(&self, x: NadeIn<'_, GpuBuffer>, logits: &mut GpuBuffer, stats: &mut GpuBuffer, nade: Nade) {
        super::nade::record_nade_fwd(&mut self.recording(), x, logits, stats, nade)
    }

    fn nade_bwd(&self, x: NadeIn<'_, GpuBuffer>, logits: &GpuBuffer, g: NadeGrads<'_, GpuBuffer>, nade: Nade) {
        super::nade::record_nade_bwd(&mut self.recording(), x, logits, g, nade)
    }
}

pub(crate) fn record_bce_logits(
    rec: &mut Recording<'_>,
    logits: &GpuBuffer,
    y: &GpuBuffer,
    w: &GpuBuffer,
    dlogits: &mut GpuBuffer,
    stats: &mut GpuBuffer,
    bce: Bce,
) {
    contract::bce_logits(&bce, [logits.len(), y.len(), w.len(), dlogits.len(), stats.len()]);
    let Bce { n, k, grad_scale } = bce;
    check_same_elem("bce_logits", &[("logits", logits), ("y", y), ("w", w), ("dlogits", dlogits)]);
    check_f32("bce_logits", "stats", stats);
    if n == 0 {
        return;
    }
    // The gradient leaves loss-scaled (times 1 at f32), as softmax_xent's does.
    let p = [u(n), u(k), f(grad_scale * rec.ctx.loss_scale())];
    rec.dispatch(&BCE, "bce_logits", &[logits, y, w, dlogits, stats], &p, grid_1d(n, 64));
}

pub(crate) fn record_bag_fwd(rec: &mut Recording<'_>, ids: &GpuBuffer, table: &GpuBuffer, out: &mut GpuBuffer, bag: Bag) {
    contract::bag_fwd(&bag, [ids.len(), table.len(), out.len()]);
    let Bag { n, slots, e } = bag;
    check_same_elem("bag_fwd", &[("table", table), ("out", out)]);
    if n * e == 0 {
        return;
    }
    let rows = table.len() / e;
    let p = [u(n), u(slots), u(e), u(rows)];
    rec.dispatch(&BAG, "bag_fwd", &[ids, table, out], &p, grid_1d(n * e, 256));
}

pub(crate) fn record_bag_bwd(rec: &mut Recording<'_>, ids: &GpuBuffer, dout: &GpuBuffer, dtable: &mut GpuBuffer, bag: Bag, rows: usize) {
    contract::bag_bwd(&bag, rows, [ids.len(), dout.len(), dtable.len()]);
    let Bag { n, slots, e } = bag;
    check_same_elem("bag_bwd", &[("dout", dout), ("dtable", dtable)]);
    if n * e * rows == 0 || slots == 0 {
        return;
    }
    let segments = (BAG_SCRATCH / (rows * e)).min(64).min(n.div_ceil(32)).max(1);
    let seg_len = n.div_ceil(segments);
    let p = [u(n), u(slots), u(e), u(rows), u(segments), u(seg_len)];
    let [gx, _, _] = grid_2d(e, 1, 64, 1);
    rec.with_scratch("bag_bwd", segments * rows * e, |rec, partial| {
        rec.dispatch(&BAG, "bag_bwd_partial", &[ids, dout, partial], &p, [gx, segments as u32, 1]);
        rec.dispatch(&BAG, "bag_bwd_reduce", &[partial, dtable], &p, grid_1d(rows * e, 256));
    });
}
