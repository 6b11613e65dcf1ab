//! The GPU Conv1d against the CPU one, both WaveNets on the GPU against the PyTorch fixtures (the
//! gated one also with its attention layer, the default model), and the training curves of both
//! backends against each other.
//!
//! One device is shared by all tests (`OnceLock`); with no adapter the tests fail saying how to
//! get one (the software Vulkan driver, lavapipe, is enough). Shapes are small: lavapipe is slow.
mod common;
mod wavenet_util;

use common::{gpu, upload};
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::{Backend, Conv1d};
use etude::model::wavenet::Wavenet;
use etude::model::wavenet_gated::WavenetGated;
use etude::rng::Rng;
use wavenet_util::{assert_curves_agree, input_dependent, run_gated, run_simple, small_gated, small_simple, train};

fn conv(batch: usize, cin: usize, cout: usize, time: usize, k: usize, dilation: usize) -> Conv1d {
    Conv1d { batch, cin, cout, time, k, dilation }
}

/// Kernel sizes 1, 2, 3, 5; dilations 1..512 (several >= T: padding-only taps); odd channel
/// counts; batch 1; channel counts and `B*T` past one 64-wide tile; `B*T` > 256 so the weight
/// gradient is split into several slices.
fn shapes() -> Vec<Conv1d> {
    let mut v = vec![
        conv(1, 1, 1, 1, 1, 1),
        conv(1, 3, 5, 7, 1, 1),
        conv(2, 5, 3, 9, 2, 1),
        conv(3, 3, 7, 16, 3, 2),
        conv(2, 7, 5, 16, 5, 3),
        conv(1, 5, 3, 13, 5, 1),
        conv(3, 70, 67, 30, 3, 4),
        conv(5, 9, 11, 100, 2, 16),
        conv(4, 6, 130, 40, 3, 1),
    ];
    for d in [1, 2, 4, 8, 16, 32, 64, 128, 256, 512] {
        v.push(conv(2, 3, 5, 20, 2, d));
    }
    v.push(conv(1, 5, 7, 12, 3, 512));
    v
}

/// `|gpu - cpu| <= 1e-5 * sqrt(n) * sum|terms| + 1e-6` per element, `n` the number of products
/// summed and `sum|terms|` computed by running the CPU op on absolute values: each side's f32
/// rounding error grows like sqrt(n) ulp of the sum of |terms|, whatever the summation order.
fn assert_within(what: &str, c: Conv1d, gpu: &[f32], cpu: &[f32], abs_sum: &[f32], n: usize) {
    assert_eq!(gpu.len(), cpu.len());
    let scale = 1e-5 * (n.max(1) as f32).sqrt();
    for (i, ((&g, &r), &a)) in gpu.iter().zip(cpu).zip(abs_sum).enumerate() {
        let tol = scale * a + 1e-6;
        assert!((g - r).abs() <= tol, "{c:?}: {what}[{i}]: gpu {g}, cpu {r} (tolerance {tol})");
    }
}

fn abs(v: &[f32]) -> CpuBuf {
    v.iter().map(|x| x.abs()).collect()
}

#[test]
fn conv_matches_cpu() {
    let (g, cpu) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(42);
    let mut rand = |n: usize| -> CpuBuf { (0..n).map(|_| rng.uniform_range(-1.0, 1.0)).collect() };
    for c in shapes() {
        let (xn, yn, wn) = (c.batch * c.cin * c.time, c.batch * c.cout * c.time, c.cout * c.cin * c.k);
        let (x, w, bias, dy) = (rand(xn), rand(wn), rand(c.cout), rand(yn));
        let (dx0, dw0, db0) = (rand(xn), rand(wn), rand(c.cout));

        // forward
        let mut y_cpu = CpuBuf::zeros(yn);
        cpu.conv1d_fwd(&x, &w, &bias, &mut y_cpu, c);
        let mut y_abs = CpuBuf::zeros(yn);
        cpu.conv1d_fwd(&abs(&x), &abs(&w), &abs(&bias), &mut y_abs, c);
        let mut yg = g.alloc(yn);
        g.conv1d_fwd(&upload(&x), &upload(&w), &upload(&bias), &mut yg, c);
        assert_within("y", c, &g.read(&yg, yn), &y_cpu, &y_abs, c.cin * c.k + 1);

        // backward to the input: overwrite, then accumulate onto dx0
        let mut dx_abs = CpuBuf::zeros(xn);
        cpu.conv1d_bwd_input(&abs(&dy), &abs(&w), &mut dx_abs, c, false);
        let (dyg, wg) = (upload(&dy), upload(&w));
        for accumulate in [false, true] {
            let mut dx_cpu = dx0.clone();
            cpu.conv1d_bwd_input(&dy, &w, &mut dx_cpu, c, accumulate);
            let mut dxg = upload(&dx0);
            g.conv1d_bwd_input(&dyg, &wg, &mut dxg, c, accumulate);
            let bound: CpuBuf = dx_abs.iter().zip(&dx0).map(|(a, d)| a + d.abs()).collect();
            assert_within(
                if accumulate { "dx (+=)" } else { "dx" },
                c,
                &g.read(&dxg, xn),
                &dx_cpu,
                &bound,
                c.cout * c.k + 1,
            );
        }

        // backward to the weights and bias: both accumulate onto dw0, db0
        let (mut dw_cpu, mut db_cpu) = (dw0.clone(), db0.clone());
        cpu.conv1d_bwd_weight(&x, &dy, &mut dw_cpu, &mut db_cpu, c);
        let (mut dw_abs, mut db_abs) = (abs(&dw0), abs(&db0));
        cpu.conv1d_bwd_weight(&abs(&x), &abs(&dy), &mut dw_abs, &mut db_abs, c);
        let (mut dwg, mut dbg) = (upload(&dw0), upload(&db0));
        g.conv1d_bwd_weight(&upload(&x), &dyg, &mut dwg, &mut dbg, c);
        let terms = c.batch * c.time + 1;
        assert_within("dw", c, &g.read(&dwg, wn), &dw_cpu, &dw_abs, terms);
        assert_within("dbias", c, &g.read(&dbg, c.cout), &db_cpu, &db_abs, terms);
    }
}

// The fixtures on the GPU, with the tolerances of the CPU run (tests/common): they are the
// README's bounds for *any* correct float32 implementation (float32 PyTorch passes them with a
// wide margin), and the GPU is one more: f32 with fma and its own summation order.

#[test]
fn gpu_wavenet_simple_fixture() {
    run_simple(gpu(), "wavenet_simple");
}

#[test]
fn gpu_wavenet_simple_l10_fixture() {
    run_simple(gpu(), "wavenet_simple_L10");
}

#[test]
fn gpu_wavenet_gated_fixture() {
    run_gated(gpu(), "wavenet_gated");
}

#[test]
fn gpu_wavenet_gated_l10_fixture() {
    run_gated(gpu(), "wavenet_gated_L10");
}

#[test]
fn gpu_wavenet_gated_attention_fixture() {
    run_gated(gpu(), "wavenet_gated_attention");
}

/// Steps compared between the backends: the length of the CPU training test (tests/train_wavenet.rs).
const STEPS: usize = 300;

#[test]
fn training_curves_agree_simple() {
    let (g, cpu) = (gpu(), CpuBackend::new());
    let cfg = etude::model::wavenet::WavenetConfig { channels: 16, ..small_simple() };
    let seed = (11..40u64)
        .find(|&s| input_dependent(&cpu, &mut Wavenet::new(&cpu, &cfg, 8, &mut Rng::new(s))))
        .expect("a live initialisation");
    let c = train(&cpu, &mut Wavenet::new(&cpu, &cfg, 8, &mut Rng::new(seed)), 8, STEPS, 5, 1e-2);
    let gp = train(g, &mut Wavenet::new(g, &cfg, 8, &mut Rng::new(seed)), 8, STEPS, 5, 1e-2);
    assert!(c[STEPS - 1] < 0.5 * c[0], "the run should learn");
    assert_curves_agree("wavenet", &c, &gp);
}

#[test]
fn training_curves_agree_gated() {
    let (g, cpu) = (gpu(), CpuBackend::new());
    let cfg = small_gated();
    let c = train(&cpu, &mut WavenetGated::new(&cpu, &cfg, 8, &mut Rng::new(12)), 8, STEPS, 6, 1e-2);
    let gp = train(g, &mut WavenetGated::new(g, &cfg, 8, &mut Rng::new(12)), 8, STEPS, 6, 1e-2);
    assert!(c[STEPS - 1] < 0.5 * c[0], "the run should learn");
    assert_curves_agree("wavenet-gated", &c, &gp);
}
