//! Causal dilated Conv1d on the GPU (issue 4): see [`crate::engine::Conv1d`] for the math and
//! layout, and `shaders/conv1d.wgsl` for the kernels (64x64 output tiles through workgroup memory,
//! one product per tap; the weight gradient as split-K partial sums reduced in a fixed order).

use crate::engine::gpu::{check_same_elem, grid_1d, grid_2d, u, GpuBuffer, Recording, Shader, MAX_GROUPS_PER_DIM};
use super::bias::record_bias_grad;
use crate::engine::{contract, Conv1d};

const CONV1D: Shader = Shader { name: "conv1d", source: include_str!("../../../../shaders/conv1d.wgsl") };

/// Output tile edge of the kernels.
const TILE: usize = 64;
/// Flat columns `b*T + t` per split-K slice of the weight gradient aim at this many...
const SLICE_TARGET: usize = 256;
/// ...with at most this many slices (the partial sums take `slices * Cout*Cin*K` floats).
const MAX_SLICES: usize = 64;

/// The kernels' parameter words: batch, cin, cout, time, k, dilation, accumulate, slice_len, slices.
/// A dilation of T or more means "every tap but the last sees only padding" whatever its value,
/// so it is clamped to T, which keeps `(K-1-j) * dilation` inside 32 bits.
fn params(c: &Conv1d, accumulate: bool, slice_len: usize, slices: usize) -> [u32; 9] {
    assert!(
        (c.k.max(1) - 1).checked_mul(c.time).is_some_and(|v| v < u32::MAX as usize),
        "conv1d: kernel {} x window {} too large",
        c.k,
        c.time
    );
    [
        u(c.batch),
        u(c.cin),
        u(c.cout),
        u(c.time),
        u(c.k),
        u(c.dilation.min(c.time)),
        accumulate as u32,
        u(slice_len),
        u(slices),
    ]
}

/// `y [batch, cout, time]` from `x [batch, cin, time]`, `w [cout, cin, k]`, `bias [cout]`.
pub(crate) fn record_fwd(rec: &mut Recording<'_>, x: &GpuBuffer, w: &GpuBuffer, bias: &GpuBuffer, y: &mut GpuBuffer, c: Conv1d) {
    contract::conv1d_fwd(&c, [x.len(), w.len(), bias.len(), y.len()]);
    check_same_elem("conv1d_fwd", &[("x", x), ("w", w), ("bias", bias), ("y", y)]);
    if c.batch * c.time == 0 || c.cout == 0 {
        return;
    }
    let groups = grid_2d(c.batch * c.time, c.cout, TILE as u32, TILE as u32);
    rec.dispatch(&CONV1D, "conv_fwd", &[x, w, bias, y], &params(&c, false, 0, 0), groups);
}

/// `dx [batch, cin, time] (+)= d/dx` from `dy [batch, cout, time]`.
pub(crate) fn record_bwd_input(
    rec: &mut Recording<'_>,
    dy: &GpuBuffer,
    w: &GpuBuffer,
    dx: &mut GpuBuffer,
    c: Conv1d,
    accumulate: bool,
) {
    contract::conv1d_bwd_input(&c, [dy.len(), w.len(), dx.len()]);
    check_same_elem("conv1d_bwd_input", &[("dy", dy), ("w", w), ("dx", dx)]);
    if c.batch * c.time == 0 || c.cin == 0 {
        return;
    }
    let groups = grid_2d(c.batch * c.time, c.cin, TILE as u32, TILE as u32);
    rec.dispatch(&CONV1D, "conv_bwd_input", &[dy, w, dx], &params(&c, accumulate, 0, 0), groups);
}

/// How the `B*T` flat columns are cut into split-K slices: `(slice_len, slices)`, `slice_len` a
/// multiple of the kernel's step of 16, every slice non-empty.
fn slicing(columns: usize, k: usize) -> (usize, usize) {
    let max_slices = MAX_SLICES.min(MAX_GROUPS_PER_DIM as usize / k.max(1)).max(1);
    let want = columns.div_ceil(SLICE_TARGET).clamp(1, max_slices);
    let slice_len = columns.div_ceil(want).next_multiple_of(16);
    (slice_len, columns.div_ceil(slice_len))
}

/// `dw [cout, cin, k] += d/dw`, `dbias [cout] += d/dbias`.
///
/// Two dispatches and `bias_grad` (`bias.rs`): per (64x64 tile of (o, c), tap, slice of the
/// flat `b*T + t` columns) a partial sum into a scratch buffer, then `dw += sum over slices` in
/// slice order — deterministic, and enough workgroups even when `Cout x Cin` is one tile.
pub(crate) fn record_bwd_weight(
    rec: &mut Recording<'_>,
    x: &GpuBuffer,
    dy: &GpuBuffer,
    dw: &mut GpuBuffer,
    dbias: &mut GpuBuffer,
    c: Conv1d,
) {
    let wn = c.cout * c.cin * c.k;
    contract::conv1d_bwd_weight(&c, [x.len(), dy.len(), dw.len(), dbias.len()]);
    check_same_elem("conv1d_bwd_weight", &[("x", x), ("dy", dy), ("dw", dw), ("dbias", dbias)]);
    let columns = c.batch * c.time;
    if columns == 0 || c.cout == 0 {
        return;
    }
    record_bias_grad(rec, dy, dbias, c.batch, c.cout, c.time);
    if wn == 0 {
        return;
    }
    let (slice_len, slices) = slicing(columns, c.k);
    let p = params(&c, false, slice_len, slices);
    let [gx, gy, _] = grid_2d(c.cin, c.cout, TILE as u32, TILE as u32);
    rec.with_scratch("conv1d_bwd_weight", slices * wn, |rec, part| {
        rec.dispatch(&CONV1D, "conv_bwd_weight", &[x, dy, part], &p, [gx, gy, u(slices * c.k)]);
        rec.dispatch(&CONV1D, "conv_bwd_weight_reduce", &[part, dw], &p, grid_1d(wn, 256));
    });
}

#[cfg(test)]
mod tests {
    use super::slicing;

    #[test]
    fn slices_cover_every_column_once() {
        for (columns, k) in [(1, 1), (16, 3), (64, 2), (255, 5), (16384, 3), (1 << 20, 2), (100_000, 40_000)] {
            let (len, n) = slicing(columns, k);
            assert_eq!(len % 16, 0);
            assert!(n >= 1 && n * k <= 65535 && n <= 64);
            assert!(len * n >= columns && len * (n - 1) < columns, "{columns} {k}: {len} x {n}");
        }
    }
}
