//! The NADE head's op on the GPU (`shaders/nade.wgsl`) against its CPU twin (issue 27): random
//! inputs at sizes off the workgroup multiples (64 invocations per row in the forward and along the
//! hidden units in the backward, 256 in the element-wise passes), one row, many rows, a key count
//! other than 88 and the largest hidden size the kernel holds; outputs pre-filled with garbage;
//! dW and dV accumulating onto values they held. Then the same at f16 storage (f32 arithmetic),
//! with tolerances from f16's 11-bit significand. With no adapter the tests fail saying how to get
//! one (`common::gpu`).

mod common;

use common::{gpu, random_vec};
use etude::engine::cpu::CpuBackend;
use etude::engine::gpu::{GpuBackend, Precision};
use etude::engine::nade::{Nade, NadeGrads, NadeIn};
use etude::engine::roll::RollOps;
use etude::rng::Rng;
use std::sync::OnceLock;

/// Inputs of one case: bh, bv, W, V, y, rw.
fn inputs(seed: u64, n: usize, k: usize, h: usize) -> [Vec<f32>; 6] {
    let mut rng = Rng::new(seed);
    let mut r = |len: usize, s: f32| -> Vec<f32> { (0..len).map(|_| rng.uniform_range(-s, s)).collect() };
    let (bh, bv, w, v) = (r(n * h, 1.0), r(n * k, 3.0), r(k * h, 1.0), r(k * h, 4.0 / (h as f32).sqrt()));
    let mut rng = Rng::new(seed + 7);
    let y = (0..n * k).map(|_| if rng.uniform() < 0.08 { 1.0 } else { 0.0 }).collect();
    let rw = (0..n).map(|_| if rng.uniform() < 0.8 { 1.0 } else { 0.0 }).collect();
    [bh, bv, w, v, y, rw]
}

/// Forward and backward on `b`: logits, stats, dbh, dbv, dw, dv (written outputs start as 1e6,
/// dw and dv as `start`).
fn run<B: RollOps>(b: &B, x: &[Vec<f32>; 6], d: Nade, start: &[f32]) -> [Vec<f32>; 6] {
    let Nade { n, k, h, .. } = d;
    let up = |v: &[f32]| {
        let mut buf = b.alloc(v.len().max(1));
        b.write(&mut buf, v);
        buf
    };
    let garbage = |len: usize| up(&vec![1e6; len]);
    let i: Vec<B::Buf> = x.iter().map(|v| up(v)).collect();
    let inp = || NadeIn { bh: &i[0], bv: &i[1], w: &i[2], v: &i[3], y: &i[4], rw: &i[5] };
    let mut logits = garbage(n * k);
    let mut stats = b.alloc_f32(n);
    b.write(&mut stats, &vec![1e6; n]);
    b.nade_fwd(inp(), &mut logits, &mut stats, d);
    let (mut dbh, mut dbv, mut dw, mut dv) = (garbage(n * h), garbage(n * k), up(start), up(start));
    b.nade_bwd(inp(), &logits, NadeGrads { dbh: &mut dbh, dbv: &mut dbv, dw: &mut dw, dv: &mut dv }, d);
    [b.read(&logits, n * k), b.read(&stats, n), b.read(&dbh, n * h), b.read(&dbv, n * k), b.read(&dw, k * h), b.read(&dv, k * h)]
}

const NAMES: [&str; 6] = ["logits", "stats", "dbh", "dbv", "dw", "dv"];

/// (n, k, h): rows around 64 and past it, hidden sizes off 64, one key, the largest h.
const SIZES: [(usize, usize, usize); 7] = [(1, 88, 1), (3, 88, 65), (70, 88, 150), (130, 7, 64), (513, 88, 33), (2, 1, 5), (2, 5, 1024)];

/// Worst |gpu - cpu| / (1 + |cpu|) per output over the cases, checked against `tol(output, case)`.
fn compare(g: &GpuBackend, loss_scale: f32, tol: impl Fn(usize, (usize, usize, usize)) -> f32) -> [f32; 6] {
    let c = CpuBackend::new();
    let mut worst = [0.0f32; 6];
    for (ci, &(n, k, h)) in SIZES.iter().enumerate() {
        let x = inputs(ci as u64 + 1, n, k, h);
        let d = Nade { n, k, h, grad_scale: 1.0 / n as f32 };
        let start = random_vec(ci as u64 + 90, k * h).to_vec();
        let want = run(&c, &x, d, &start);
        // at f16 the gradients leave loss-scaled, onto a start that was not: compare unscaled
        let scaled: Vec<f32> = start.iter().map(|v| v * loss_scale).collect();
        let mut got = run(g, &x, d, &scaled);
        for out in &mut got[2..] {
            out.iter_mut().for_each(|v| *v /= loss_scale);
        }
        for o in 0..6 {
            for (j, (&a, &b)) in got[o].iter().zip(&want[o]).enumerate() {
                let err = (a - b).abs() / (1.0 + b.abs());
                assert!(err <= tol(o, (n, k, h)), "{n}x{k}x{h} {}[{j}]: gpu {a} cpu {b}", NAMES[o]);
                worst[o] = worst[o].max(err);
            }
        }
    }
    worst
}

#[test]
fn nade_gpu_matches_cpu_on_random_inputs() {
    // The logits differ by the order of a sum of h terms (a chain on the CPU, per-invocation
    // chains and a tree on the GPU) and by a few ulp of exp; the stats by a sum of k keys; dW and
    // dV by the order of a sum over the rows (16 blocks on the CPU, up to 64 runs on the GPU).
    let tol = |o: usize, (n, k, h): (usize, usize, usize)| -> f32 {
        match o {
            0 | 3 => 2e-6 * (h as f32).sqrt() + 2e-6,
            1 => 2e-6 * (k as f32).sqrt() * (h as f32).sqrt(),
            _ => 4e-6 * ((n * k) as f32).sqrt(),
        }
    };
    let worst = compare(gpu(), 1.0, tol);
    println!("f32 worst relative differences: {worst:?}");
}

#[test]
fn nade_gpu_matches_cpu_at_f16() {
    static F16: OnceLock<GpuBackend> = OnceLock::new();
    let g = F16.get_or_init(|| {
        GpuBackend::with_precision(None, Precision::F16).unwrap_or_else(|e| {
            panic!("{e}\n(these tests need an adapter with SHADER_F16: `apt-get install mesa-vulkan-drivers` gives lavapipe)")
        })
    });
    // Inputs and outputs are stored as f16 (relative rounding 2^-11 = 4.9e-4 each way); every
    // sum is f32. The logits see the rounding of bh, bv, W, V and y's exact 0/1; the gradients
    // that of the stored logits and dbv too.
    let tol = |o: usize, _: (usize, usize, usize)| -> f32 {
        match o {
            0 | 3 => 6e-3,
            1 => 2e-3,
            _ => 3e-3,
        }
    };
    let worst = compare(g, g.loss_scale(), tol);
    println!("f16 worst relative differences: {worst:?}");
}
