//! The optimizer's passes of the CPU backend: the squared gradient norm, the clip scale, AdamW
//! and the decoupled decay, each one pass over a whole arena, with the same bits on any number
//! of threads.

use crate::engine::AdamStep;
use rayon::prelude::*;

/// Below this many elements the optimizer's passes ([`Backend::sum_squares`], [`Backend::adamw`])
/// stay on the calling thread: a few loads and stores per element stream at the cache's
/// bandwidth on one core, and handing work to the pool cost more than it saved (a whole arena of
/// 390K parameters). The norm's blocks are this long on every path, so its bits do not depend on
/// the thread count.
const PAR_MIN_STREAM: usize = 1 << 21;

/// Lanes of [`sum_sq_block`]'s partial sums.
const SQ_LANES: usize = 8;

multiversion! {
    /// `out = sum x^2` in f64 as eight running sums, over the elements `i % 8` (independent
    /// chains, which the compiler keeps in vector registers; one chain waits on the adder's
    /// latency at every element), added in lane order at the end.
    fn sum_sq_block(x: &[f32], out: &mut f64) {
        let mut acc = [0f64; SQ_LANES];
        let mut chunks = x.chunks_exact(SQ_LANES);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v as f64 * v as f64;
            }
        }
        for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
            *a += v as f64 * v as f64;
        }
        *out = acc.iter().sum();
    }
}

/// `sum x^2` over a block, in f64 ([`sum_sq_block`]).
fn sum_sq(x: &[f32]) -> f64 {
    let mut s = 0.0;
    sum_sq_block(x, &mut s);
    s
}

/// The constants of one Adam(W) step ([`Backend::adamw`]): clip scale, decay factor, L2 decay,
/// betas, `lr / (1 - b1^t)`, `sqrt(1 - b2^t)` and eps.
struct AdamConsts {
    s: f32,
    factor: f32,
    wd: f32,
    b1: f32,
    b2: f32,
    step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
}

multiversion! {
    /// [`Backend::adamw`] over one block of elements (sizes already checked).
    fn adam_block(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &AdamConsts) {
        let n = p.len();
        let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            // (`p * 1` is `p`: plain Adam is unchanged bit for bit)
            let p = &mut p[i];
            *p *= k.factor;
            let g = g[i] * k.s + k.wd * *p;
            m[i] = k.b1 * m[i] + (1.0 - k.b1) * g;
            v[i] = k.b2 * v[i] + (1.0 - k.b2) * g * g;
            *p -= k.step_size * m[i] / (v[i].sqrt() / k.bc2_sqrt + k.eps);
        }
    }
}

pub(super) fn sum_squares(x: &[f32], n: usize, acc: &mut [f32]) {
    let x = &x[..n];
    // Blocks of PAR_MIN_STREAM (on the pool's threads when there are several), each summed by
    // `sum_sq_block`, the blocks' sums added in order: the same bits whatever the threads.
    let s: f64 = if n < PAR_MIN_STREAM {
        sum_sq(x)
    } else {
        x.par_chunks(PAR_MIN_STREAM).map(sum_sq).collect::<Vec<f64>>().iter().sum()
    };
    acc[0] += s as f32;
}

pub(super) fn clip_scale(acc: &[f32], max_norm: f32, scale: &mut [f32]) {
    scale[0] = if max_norm > 0.0 { (max_norm / (acc[0].sqrt() + 1e-6)).min(1.0) } else { 1.0 };
}

pub(super) fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], scale: &[f32], step: AdamStep) {
    let AdamStep { n, hp, factor } = step;
    let s = scale[0];
    let t = hp.step as i32;
    let bc1 = 1.0 - hp.beta1.powi(t);
    let bc2_sqrt = (1.0 - hp.beta2.powi(t)).sqrt();
    let step_size = hp.lr / bc1;
    let k = AdamConsts { s, factor, wd: hp.weight_decay, b1: hp.beta1, b2: hp.beta2, step_size, bc2_sqrt, eps: hp.eps };
    let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
    if n < PAR_MIN_STREAM {
        adam_block(p, g, m, v, &k);
    } else {
        // Element-wise: blocks on the pool's threads give the same bits as one pass.
        let c = PAR_MIN_STREAM;
        p.par_chunks_mut(c)
            .zip(g.par_chunks(c))
            .zip(m.par_chunks_mut(c).zip(v.par_chunks_mut(c)))
            .for_each(|((p, g), (m, v))| adam_block(p, g, m, v, &k));
    }
}

pub(super) fn decay(p: &mut [f32], n: usize, factor: f32) {
    for v in &mut p[..n] {
        *v *= factor;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::{CpuBackend, CpuBuf};
    use crate::engine::Backend;
    use crate::engine::AdamParams;
    use crate::rng::Rng;

    /// The optimizer's passes over an arena longer than `PAR_MIN_STREAM` (so split in blocks
    /// across the pool) give the same bits on one thread and on four, and the norm's blocked,
    /// eight-lane f64 sum, stored as f32, is the plain f64 sum to f32's rounding.
    #[test]
    fn optimizer_passes_do_not_depend_on_the_thread_count() {
        let n = 2 * PAR_MIN_STREAM + 37;
        let mut rng = Rng::new(3);
        let data = |rng: &mut Rng, scale: f32| -> CpuBuf { (0..n).map(|_| rng.uniform_range(-scale, scale)).collect() };
        let (p0, g, m0, v0) = (data(&mut rng, 1.0), data(&mut rng, 2.0), data(&mut rng, 0.1), data(&mut rng, 0.01));
        let v0: CpuBuf = v0.iter().map(|x| x.abs()).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
            pool.install(|| {
                let c = CpuBackend::new();
                let (mut acc, mut scale) = (CpuBuf::zeros(1), CpuBuf::zeros(1));
                c.grad_norm_clip(&g, n, 100.0, &mut acc, &mut scale);
                let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
                let hp = AdamParams { lr: 1e-3, step: 4, weight_decay: 0.01, ..AdamParams::default() };
                c.adamw(&mut p, &g, &mut m, &mut v, &scale, AdamStep::adamw(n, hp, 0.999));
                [acc, scale, p, m, v].map(|b| b.iter().map(|x| x.to_bits()).collect::<Vec<u32>>())
            })
        };
        let one = run(1);
        assert_eq!(one, run(4), "one thread against four");
        let want: f64 = g.iter().map(|&x| x as f64 * x as f64).sum();
        let got = f32::from_bits(one[0][0]) as f64;
        assert!((got - want).abs() <= 1e-7 * want, "norm^2 {got} vs plain f64 sum {want}");
    }
}
