//! The embedding lookup and its gradient on the GPU (`shaders/embedding.wgsl`): the backward as
//! per-run partial tables, then their sum in order (no atomics).

use crate::engine::gpu::{check_same_elem, grid_1d, grid_2d, u, GpuBuffer, Recording, Shader};
use crate::engine::contract;

const EMBEDDING: Shader = Shader { name: "embedding", source: include_str!("../../../../shaders/embedding.wgsl") };

/// Most floats of scratch `embedding_bwd` uses for its per-run partial tables (64 MiB).
const EMBEDDING_SCRATCH: usize = 16 << 20;

pub(crate) fn record_embedding_fwd(rec: &mut Recording<'_>, ids: &GpuBuffer, table: &GpuBuffer, out: &mut GpuBuffer, n: usize, e: usize) {
    contract::embedding_fwd(n, e, [ids.len(), table.len(), out.len()]);
    check_same_elem("embedding_fwd", &[("table", table), ("out", out)]);
    let rows = table.len / e.max(1);
    rec.dispatch(&EMBEDDING, "embedding_fwd", &[ids, table, out], &[u(n), u(e), u(rows)], grid_1d(n * e, 256));
}

pub(crate) fn record_embedding_bwd(rec: &mut Recording<'_>, ids: &GpuBuffer, dout: &GpuBuffer, dtable: &mut GpuBuffer, n: usize, e: usize) {
    contract::embedding_bwd(n, e, [ids.len(), dout.len(), dtable.len()]);
    check_same_elem("embedding_bwd", &[("dout", dout), ("dtable", dtable)]);
    if e == 0 || n == 0 {
        return;
    }
    let rows = dtable.len / e;
    if rows == 0 {
        return;
    }
    // Partial tables per run of ids, then their sum (see shaders/embedding.wgsl). As many runs
    // as fit in EMBEDDING_SCRATCH floats, at most 64 (one run per 64+ ids).
    let segments = (EMBEDDING_SCRATCH / (rows * e)).min(64).min(n.div_ceil(64)).max(1);
    let seg_len = n.div_ceil(segments);
    let p = [u(n), u(e), u(rows), u(segments), u(seg_len)];
    let [gx, _, _] = grid_2d(e, 1, 64, 1);
    rec.with_scratch("embedding_bwd", segments * rows * e, |rec, partial| {
        rec.dispatch(&EMBEDDING, "embedding_bwd_partial", &[ids, dout, partial], &p, [gx, segments as u32, 1]);
        rec.dispatch(&EMBEDDING, "embedding_bwd_reduce", &[partial, dtable], &p, grid_1d(rows * e, 256));
    });
}
