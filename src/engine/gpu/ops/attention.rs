//! Causal multi-head attention on the GPU (issue 13): see [`crate::engine::Attention`] for the
//! math and layout, and `shaders/attention.wgsl` for the kernels (one invocation per query row for
//! the forward and dq, one per key column for dk and dv; the backward's dS goes through a scratch
//! buffer between the two).

use crate::engine::gpu::{check_same_elem, f, grid_1d, u, GpuBuffer, Recording, Shader};
use crate::engine::{contract, Attention, Qkv};

const ATTENTION: Shader = Shader { name: "attention", source: include_str!("../../../../shaders/attention.wgsl") };

/// Invocations per workgroup (the shader's `WG`).
const WG: u32 = 64;

/// The kernels' parameter words: batch, heads, dim, time, shift, scale. Every flat index of `p`
/// must fit in 32 bits.
fn params(a: &Attention) -> [u32; 6] {
    assert!(
        a.p_len().max(a.qkv_len()) < u32::MAX as usize,
        "attention: {} x {} heads x window {} too large for 32-bit indices",
        a.batch,
        a.heads,
        a.time
    );
    [u(a.batch), u(a.heads), u(a.dim), u(a.time), u(a.shift.min(a.time)), f(a.scale())]
}

/// `out [B, H*D, T]` and `p [B, H, T, T]` from `q, k, v`.
pub(crate) fn record_fwd(
    rec: &mut Recording<'_>,
    q: &GpuBuffer,
    k: &GpuBuffer,
    v: &GpuBuffer,
    out: &mut GpuBuffer,
    p: &mut GpuBuffer,
    a: Attention,
) {
    contract::attention_fwd(&a, [q.len(), k.len(), v.len(), out.len(), p.len()]);
    check_same_elem("attention_fwd", &[("q", q), ("k", k), ("v", v), ("out", out), ("p", p)]);
    let rows = a.batch * a.heads * a.time;
    if rows == 0 {
        return;
    }
    rec.dispatch(&ATTENTION, "attn_fwd", &[q, k, v, out, p], &params(&a), grid_1d(rows, WG));
}

/// `dq, dk, dv [B, H*D, T]` (written) from `dout` and the saved `p`.
pub(crate) fn record_bwd(
    rec: &mut Recording<'_>,
    qkv: Qkv<&GpuBuffer>,
    p: &GpuBuffer,
    dout: &GpuBuffer,
    grads: Qkv<&mut GpuBuffer>,
    a: Attention,
) {
    let (Qkv { q, k, v }, Qkv { q: dq, k: dk, v: dv }) = (qkv, grads);
    contract::attention_bwd(&a, [q.len(), k.len(), v.len(), p.len(), dout.len(), dq.len(), dk.len(), dv.len()]);
    check_same_elem(
        "attention_bwd",
        &[("q", q), ("k", k), ("v", v), ("p", p), ("dout", dout), ("dq", dq), ("dk", dk), ("dv", dv)],
    );
    let rows = a.batch * a.heads * a.time;
    if rows == 0 || a.dim == 0 {
        return;
    }
    let words = params(&a);
    let groups = grid_1d(rows, WG);
    rec.with_scratch("attention_ds", a.p_len(), |rec, ds| {
        rec.dispatch(&ATTENTION, "attn_bwd_q", &[k, v, p, dout, ds, dq], &words, groups);
        rec.dispatch(&ATTENTION, "attn_bwd_kv", &[q, p, dout, ds, dk, dv], &words, groups);
    });
}
