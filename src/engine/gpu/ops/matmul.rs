//! The matrix product on the GPU (`shaders/matmul.wgsl`): 64x64 or 32x32 workgroup-memory tiles,
//! split-K partial sums reduced in order where the output has few tiles and k is long, and 8x8
//! register blocks on software renderers.

use crate::engine::gpu::{check_same_elem, grid_1d, grid_2d, u, GpuBuffer, Recording, Shader};
use crate::engine::{contract, MatMul};

const MATMUL: Shader = Shader { name: "matmul", source: include_str!("../../../../shaders/matmul.wgsl") };

/// A matrix product whose 64x64-tile grid has fewer workgroups than this uses 32x32 tiles (four
/// times as many workgroups): about the number of compute units of a large GPU.
const SMALL_MATMUL_BELOW: usize = 128;
/// Split-K: each range along k gets at least this many rows, so that a partial is worth its
/// write and its read in the reduction...
const SPLIT_MIN_K: usize = 512;
/// ...and there are at most this many ranges.
const SPLIT_MAX: usize = 32;

/// Ranges along k for a product with `tiles` 64x64 output tiles: enough for about
/// `SMALL_MATMUL_BELOW` workgroups, each range at least `SPLIT_MIN_K` long; 1 = no split.
fn matmul_splits(tiles: usize, k: usize) -> usize {
    if tiles >= SMALL_MATMUL_BELOW {
        return 1;
    }
    SMALL_MATMUL_BELOW.div_ceil(tiles.max(1)).min(k / SPLIT_MIN_K).clamp(1, SPLIT_MAX)
}

pub(crate) fn record_matmul(rec: &mut Recording<'_>, a: &GpuBuffer, b: &GpuBuffer, c: &mut GpuBuffer, mm: MatMul) {
    let MatMul { m, k, n, trans_a, trans_b, accumulate } = mm;
    contract::matmul(&mm, [a.len(), b.len(), c.len()]);
    check_same_elem("matmul", &[("a", a), ("b", b), ("c", c)]);
    if m == 0 || n == 0 {
        return;
    }
    let p = [u(m), u(k), u(n), trans_a as u32, trans_b as u32, accumulate as u32];
    if rec.ctx.software_kernels() && m % 4 == 0 && k % 4 == 0 && n % 4 == 0 && k > 0 {
        // Software renderer: 8x8 register blocks, no workgroup memory (see matmul.wgsl).
        let blocks = m.div_ceil(8) * n.div_ceil(8);
        rec.dispatch(&MATMUL, "matmul_regs", &[a, b, c], &p, grid_1d(blocks, 64));
        return;
    }
    // 64x64 tiles; split along k when they are few and k is long (weight gradients summed over
    // B*T rows); else 32x32 tiles when 64x64 ones would leave most of a GPU idle.
    let big_tiles = m.div_ceil(64) * n.div_ceil(64);
    let splits = matmul_splits(big_tiles, k);
    if splits > 1 {
        let kchunk = k.div_ceil(splits).next_multiple_of(16);
        let splits = k.div_ceil(kchunk);
        let ps = [p[0], p[1], p[2], p[3], p[4], p[5], u(splits), u(kchunk)];
        let [gx, gy, _] = grid_2d(n, m, 64, 64);
        rec.with_scratch("matmul_split", splits * m * n, |rec, part| {
            rec.dispatch(&MATMUL, "matmul_split", &[a, b, part], &ps, [gx, gy, splits as u32]);
            rec.dispatch(&MATMUL, "matmul_reduce", &[part, c], &ps, grid_1d(m * n, 256));
        });
    } else if big_tiles >= SMALL_MATMUL_BELOW {
        rec.dispatch(&MATMUL, "matmul", &[a, b, c], &p, grid_2d(n, m, 64, 64));
    } else {
        rec.dispatch(&MATMUL, "matmul_small", &[a, b, c], &p, grid_2d(n, m, 32, 32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gpu::tests::{own_gpu, random, upload};
    use crate::engine::gpu::KernelVariant;
    use crate::engine::Backend;

    #[test]
    fn matmul_splits_only_few_tiles_with_a_long_k() {
        // The weight gradients of the default models: dW_ih [512, 100] and dW_fc2 [300, 256] over
        // B*T = 16384 rows: 16 and 20 tiles -> 8 and 7 ranges (about 128 workgroups).
        assert_eq!(matmul_splits(16, 16384), 8);
        assert_eq!(matmul_splits(20, 16384), 7);
        assert_eq!(matmul_splits(16, 1000), 1, "each range keeps at least SPLIT_MIN_K rows");
        assert_eq!(matmul_splits(1, 1 << 20), SPLIT_MAX);
        assert_eq!(matmul_splits(SMALL_MATMUL_BELOW, 1 << 20), 1, "enough tiles already");
    }

    /// The software-renderer product (8x8 register blocks) against an f64 reference, for every
    /// transpose/accumulate combination, at sizes that are multiples of 4 but not of 8 (the
    /// clamped edge blocks) as well as of 8. The timestamp profile shows which kernel ran.
    #[test]
    fn register_blocked_matmul_matches_a_reference() {
        let g = own_gpu();
        g.set_kernel_variant(KernelVariant::Software);
        let profiled = g.set_profiling(true).is_ok();
        for (s, &(m, k, n)) in [(4, 4, 4), (12, 8, 20), (8, 16, 4), (36, 100, 300), (20, 12, 44)].iter().enumerate() {
            for variant in 0..8u64 {
                let (ta, tb, acc) = (variant & 1 != 0, variant & 2 != 0, variant & 4 != 0);
                let seed = 10 * s as u64 + variant;
                let (a, b, c0) = (random(seed, m * k), random(seed + 100, k * n), random(seed + 200, m * n));
                let (ga, gb) = (upload(&g, &a), upload(&g, &b));
                let mut gc = upload(&g, &c0);
                g.matmul(&ga, &gb, &mut gc, MatMul { m, k, n, trans_a: ta, trans_b: tb, accumulate: acc });
                let got = g.read(&gc, m * n);
                if profiled {
                    let entries: Vec<&str> = g.take_profile().iter().map(|d| d.entry).collect();
                    assert_eq!(entries, ["matmul_regs"], "({m},{k},{n})");
                }
                for i in 0..m {
                    for j in 0..n {
                        let (mut want, mut mag) = (if acc { c0[i * n + j] as f64 } else { 0.0 }, 0.0f64);
                        for l in 0..k {
                            let x = if ta { a[l * m + i] } else { a[i * k + l] } as f64;
                            let y = if tb { b[j * k + l] } else { b[l * n + j] } as f64;
                            want += x * y;
                            mag += (x * y).abs();
                        }
                        // f32 sums of k products: rounding grows like sqrt(k) ulp of sum |terms|.
                        let tol = 1e-6 * (k as f64).sqrt() * (mag + 1.0);
                        let e = got[i * n + j] as f64;
                        assert!((e - want).abs() <= tol, "({m},{k},{n}) ta={ta} tb={tb} acc={acc} [{i},{j}]: {e} vs {want}");
                    }
                }
            }
        }
    }
}
