//! Bias addition and its gradient on the GPU (`shaders/bias.wgsl`), with vec4 kernels on software
//! renderers.

use crate::engine::gpu::{check_same_elem, grid_1d, grid_groups, u, GpuBuffer, Recording, Shader};
use crate::engine::contract;

const BIAS: Shader = Shader { name: "bias", source: include_str!("../../../../shaders/bias.wgsl") };

pub(crate) fn record_bias_add(rec: &mut Recording<'_>, y: &mut GpuBuffer, bias: &GpuBuffer, outer: usize, channels: usize, inner: usize) {
    let n = outer * channels * inner;
    contract::bias_add(outer, channels, inner, [y.len(), bias.len()]);
    check_same_elem("bias_add", &[("y", y), ("bias", bias)]);
    if rec.ctx.software_kernels() && inner == 1 && channels.is_multiple_of(4) && channels > 0 {
        let p = [u(n), u(channels), 1];
        rec.dispatch(&BIAS, "bias_add_vec4", &[bias, y], &p, grid_1d(n / 4, 256));
        return;
    }
    rec.dispatch(&BIAS, "bias_add", &[bias, y], &[u(n), u(channels), u(inner)], grid_1d(n, 256));
}

pub(crate) fn record_bias_grad(rec: &mut Recording<'_>, dy: &GpuBuffer, dbias: &mut GpuBuffer, outer: usize, channels: usize, inner: usize) {
    contract::bias_grad(outer, channels, inner, [dy.len(), dbias.len()]);
    check_same_elem("bias_grad", &[("dy", dy), ("dbias", dbias)]);
    if rec.ctx.software_kernels() && inner == 1 && channels.is_multiple_of(4) && channels > 0 {
        let p = [u(outer), u(channels), 1];
        rec.dispatch(&BIAS, "bias_grad_vec4", &[dy, dbias], &p, grid_1d(channels / 4, 64));
        return;
    }
    rec.dispatch(&BIAS, "bias_grad", &[dy, dbias], &[u(outer), u(channels), u(inner)], grid_groups(channels));
}

#[cfg(test)]
mod tests {
    use crate::engine::gpu::tests::{own_gpu, random, upload};
    use crate::engine::gpu::KernelVariant;
    use crate::engine::Backend;

    /// The vec4 bias kernels of software renderers (inner = 1, channels % 4 = 0) against the
    /// portable ones: bias_add is the same single addition (exact); bias_grad sums the rows in
    /// another order (f32 rounding ~ sqrt(outer) ulp of the sum of |terms|).
    #[test]
    fn vec4_bias_kernels_match_the_portable_ones() {
        for (outer, channels) in [(1, 4), (37, 12), (300, 512)] {
            let (dy, b0) = (random(outer as u64, outer * channels), random(7, channels));
            let run = |variant| {
                let g = own_gpu();
                g.set_kernel_variant(variant);
                let bias = upload(&g, &b0);
                let mut y = upload(&g, &dy);
                g.bias_add(&mut y, &bias, outer, channels, 1);
                let mut db = upload(&g, &b0);
                g.bias_grad(&upload(&g, &dy), &mut db, outer, channels, 1);
                (g.read(&y, outer * channels), g.read(&db, channels))
            };
            let (ys, dbs) = run(KernelVariant::Software);
            let (yp, dbp) = run(KernelVariant::Portable);
            assert_eq!(ys, yp, "bias_add ({outer}, {channels})");
            for c in 0..channels {
                let mag: f32 = (0..outer).map(|o| dy[o * channels + c].abs()).sum::<f32>() + b0[c].abs();
                let tol = 1e-6 * (outer as f32).sqrt() * (mag + 1.0);
                assert!((dbs[c] - dbp[c]).abs() <= tol, "bias_grad ({outer}, {channels}) [{c}]: {} vs {}", dbs[c], dbp[c]);
            }
        }
    }
}
