//! Causal multi-head attention with a learned relative term on the GPU (issue 26): see
//! [`crate::engine::RelAttention`] and [`crate::engine::RelDecode`] for the math and layouts, and
//! `shaders/rel_attention.wgsl` for the kernels (one invocation per query row for the forward and
//! dq, one per key column for dk and dv, one per (head, distance, d) for the relative table's
//! gradient, with dS in a scratch buffer between them; one per output element for the decode).

use crate::engine::gpu::{check_same_elem, f, grid_1d, u, GpuBuffer, Recording, Shader};
use crate::engine::{contract, RelAttention, RelDecode};

const REL_ATTENTION: Shader =
    Shader { name: "rel_attention", source: include_str!("../../../../shaders/rel_attention.wgsl") };

/// Invocations per workgroup (the shader's `WG`).
const WG: u32 = 64;

/// Panics unless every flat index of the op's arrays fits in 32 bits.
fn fits(op: &str, lens: &[usize]) {
    assert!(lens.iter().all(|&n| n < u32::MAX as usize), "{op}: sizes too large for 32-bit indices (arrays of {lens:?} elements)");
}

/// The kernels' parameter words: batch, heads, dim, time, window, scale.
fn params(a: &RelAttention) -> [u32; 6] {
    fits("rel_attention", &[a.p_len(), a.qkv_len(), a.rel_len()]);
    [u(a.batch), u(a.heads), u(a.dim), u(a.time), u(a.window), f(a.scale())]
}

/// `out [B, T, H*D]` and `p [B, H, T, T]` from `qkv` and `rel`.
pub(crate) fn record_fwd(rec: &mut Recording<'_>, qkv: &GpuBuffer, rel: &GpuBuffer, out: &mut GpuBuffer, p: &mut GpuBuffer, a: RelAttention) {
    contract::rel_attention_fwd(&a, [qkv.len(), rel.len(), out.len(), p.len()]);
    check_same_elem("rel_attention_fwd", &[("qkv", qkv), ("rel", rel), ("out", out), ("p", p)]);
    let rows = a.batch * a.heads * a.time;
    // With dim 0 the CPU twin writes nothing either (not even p).
    if rows == 0 || a.dim == 0 {
        return;
    }
    rec.dispatch(&REL_ATTENTION, "rel_fwd", &[qkv, rel, out, p], &params(&a), grid_1d(rows, WG));
}

/// `dqkv [B, T, 3*H*D]` (written) and `drel [H, W, D]` (rows `0..T` accumulated) from `dout` and
/// the saved `p`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record_bwd(
    rec: &mut Recording<'_>,
    qkv: &GpuBuffer,
    rel: &GpuBuffer,
    p: &GpuBuffer,
    dout: &GpuBuffer,
    dqkv: &mut GpuBuffer,
    drel: &mut GpuBuffer,
    a: RelAttention,
) {
    contract::rel_attention_bwd(&a, [qkv.len(), rel.len(), p.len(), dout.len(), dqkv.len(), drel.len()]);
    check_same_elem(
        "rel_attention_bwd",
        &[("qkv", qkv), ("rel", rel), ("p", p), ("dout", dout), ("dqkv", dqkv), ("drel", drel)],
    );
    let rows = a.batch * a.heads * a.time;
    if rows == 0 || a.dim == 0 {
        return;
    }
    let words = params(&a);
    let groups = grid_1d(rows, WG);
    let table = grid_1d(a.heads * a.time * a.dim, WG);
    rec.with_scratch("rel_attention_ds", a.p_len(), |rec, ds| {
        rec.dispatch(&REL_ATTENTION, "rel_bwd_q", &[qkv, rel, p, dout, ds, dqkv], &words, groups);
        rec.dispatch(&REL_ATTENTION, "rel_bwd_kv", &[qkv, p, dout, ds, dqkv], &words, groups);
        rec.dispatch(&REL_ATTENTION, "rel_bwd_rel", &[qkv, ds, drel], &words, table);
    });
}

/// `out [B, H*D]` from the newest row's q, the ring caches and `rel`.
pub(crate) fn record_decode(
    rec: &mut Recording<'_>,
    qkv: &GpuBuffer,
    kcache: &GpuBuffer,
    vcache: &GpuBuffer,
    rel: &GpuBuffer,
    out: &mut GpuBuffer,
    a: RelDecode,
) {
    contract::rel_attention_decode(&a, [qkv.len(), kcache.len(), vcache.len(), rel.len(), out.len()]);
    check_same_elem(
        "rel_attention_decode",
        &[("qkv", qkv), ("kcache", kcache), ("vcache", vcache), ("rel", rel), ("out", out)],
    );
    let n = a.batch * a.width();
    if n == 0 {
        return;
    }
    fits("rel_attention_decode", &[a.cache_len(), a.batch * 3 * a.width(), a.heads * a.window * a.dim]);
    let words = [u(a.batch), u(a.heads), u(a.dim), u(a.len), u(a.window), f(a.scale())];
    rec.dispatch(&REL_ATTENTION, "rel_decode", &[qkv, kcache, vcache, rel, out], &words, grid_1d(n, WG));
}
