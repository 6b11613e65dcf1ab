//! Elementwise ops on the GPU (`shaders/elementwise.wgsl`): fill, add, strided copies, the
//! activations, GELU and the WaveNet gate, and the batched transpose.

use crate::engine::gpu::{check_same_elem, f, grid_1d, grid_2d, u, GpuBuffer, Recording, Shader, MAX_GROUPS_PER_DIM};
use crate::engine::{contract, Act, Strided};

const ELEMENTWISE: Shader =
    Shader { name: "elementwise", source: include_str!("../../../../shaders/elementwise.wgsl") };

fn act_code(a: Act) -> u32 {
    match a {
        Act::Relu => 0,
        Act::Tanh => 1,
        Act::Sigmoid => 2,
    }
}

/// One thread per element, in workgroups of 256.
fn elementwise(rec: &mut Recording<'_>, entry: &'static str, bufs: &[&GpuBuffer], params: &[u32], n: usize) {
    rec.dispatch(&ELEMENTWISE, entry, bufs, params, grid_1d(n, 256));
}

pub(crate) fn record_fill(rec: &mut Recording<'_>, x: &mut GpuBuffer, n: usize, value: f32) {
    contract::fill(n, [x.len()]);
    elementwise(rec, "fill", &[x], &[u(n), f(value)], n);
}

pub(crate) fn record_add(rec: &mut Recording<'_>, x: &GpuBuffer, y: &mut GpuBuffer, n: usize) {
    contract::add(n, [x.len(), y.len()]);
    check_same_elem("add", &[("x", x), ("y", y)]);
    elementwise(rec, "add", &[x, y], &[u(n)], n);
}

pub(crate) fn record_copy_strided(rec: &mut Recording<'_>, src: &GpuBuffer, dst: &mut GpuBuffer, s: Strided) {
    contract::copy_strided(&s, [src.len(), dst.len()]);
    let Strided { rows, cols, src_off, src_stride, dst_off, dst_stride, accumulate } = s;
    if rows == 0 || cols == 0 {
        return;
    }
    check_same_elem("copy_strided", &[("src", src), ("dst", dst)]);
    let p = [u(rows), u(cols), u(src_off), u(src_stride), u(dst_off), u(dst_stride), accumulate as u32];
    elementwise(rec, "copy_strided", &[src, dst], &p, rows * cols);
}

pub(crate) fn record_act_fwd(rec: &mut Recording<'_>, act: Act, x: &GpuBuffer, y: &mut GpuBuffer, n: usize) {
    contract::act_fwd(n, [x.len(), y.len()]);
    check_same_elem("act_fwd", &[("x", x), ("y", y)]);
    elementwise(rec, "act_fwd", &[x, y], &[u(n), act_code(act)], n);
}

pub(crate) fn record_act_bwd(rec: &mut Recording<'_>, act: Act, y: &GpuBuffer, dy: &GpuBuffer, dx: &mut GpuBuffer, n: usize) {
    contract::act_bwd(n, [y.len(), dy.len(), dx.len()]);
    check_same_elem("act_bwd", &[("y", y), ("dy", dy), ("dx", dx)]);
    elementwise(rec, "act_bwd", &[y, dy, dx], &[u(n), act_code(act)], n);
}

pub(crate) fn record_gated_fwd(rec: &mut Recording<'_>, a: &GpuBuffer, z: &mut GpuBuffer, batch: usize, r: usize, t: usize) {
    let n = batch * r * t;
    contract::gated_fwd(batch, r, t, [a.len(), z.len()]);
    check_same_elem("gated_fwd", &[("a", a), ("z", z)]);
    elementwise(rec, "gated_fwd", &[a, z], &[u(n), u(r * t)], n);
}

pub(crate) fn record_gated_bwd(rec: &mut Recording<'_>, a: &GpuBuffer, dz: &GpuBuffer, da: &mut GpuBuffer, batch: usize, r: usize, t: usize) {
    let n = batch * r * t;
    contract::gated_bwd(batch, r, t, [a.len(), dz.len(), da.len()]);
    check_same_elem("gated_bwd", &[("a", a), ("dz", dz), ("da", da)]);
    elementwise(rec, "gated_bwd", &[a, dz, da], &[u(n), u(r * t)], n);
}

pub(crate) fn record_transpose(rec: &mut Recording<'_>, x: &GpuBuffer, y: &mut GpuBuffer, batch: usize, rows: usize, cols: usize) {
    let n = batch * rows * cols;
    contract::transpose(batch, rows, cols, [x.len(), y.len()]);
    check_same_elem("transpose", &[("x", x), ("y", y)]);
    if n == 0 {
        return;
    }
    // 16x16 tiles through workgroup memory: x = column tiles, y = row tiles, z = batch.
    let [gx, gy, _] = grid_2d(cols, rows, 16, 16);
    assert!(batch <= MAX_GROUPS_PER_DIM as usize, "transpose: batch {batch} exceeds 65535");
    rec.dispatch(&ELEMENTWISE, "transpose", &[x, y], &[u(rows), u(cols)], [gx, gy, batch as u32]);
}


pub(crate) fn record_gelu_fwd(rec: &mut Recording<'_>, x: &GpuBuffer, y: &mut GpuBuffer, n: usize) {
    contract::gelu("gelu_fwd", n, &[x.len(), y.len()]);
    check_same_elem("gelu_fwd", &[("x", x), ("y", y)]);
    elementwise(rec, "gelu_fwd", &[x, y], &[u(n)], n);
}

pub(crate) fn record_gelu_bwd(rec: &mut Recording<'_>, x: &GpuBuffer, dy: &GpuBuffer, dx: &mut GpuBuffer, n: usize) {
    contract::gelu("gelu_bwd", n, &[x.len(), dy.len(), dx.len()]);
    check_same_elem("gelu_bwd", &[("x", x), ("dy", dy), ("dx", dx)]);
    elementwise(rec, "gelu_bwd", &[x, dy, dx], &[u(n)], n);
}
