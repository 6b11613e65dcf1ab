//! The GPU attention op (issue 13) against the CPU one on random inputs: heads 1 and 3, odd and
//! even widths, windows below, at and past the 64-invocation workgroup (so `B*H*T` is off the
//! multiple), shifts 0, 1 and past the window. Every output buffer starts as garbage and must be
//! overwritten. Then the gated WaveNet with attention: the same training run on both backends.
//! One device is shared by the tests; with no adapter they fail saying how to get one.
mod common;
mod wavenet_util;

use common::{gpu, random_vec, upload};
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::{Attention, Backend, Qkv};
use etude::model::wavenet_gated::{GatedConfig, WavenetGated};
use etude::rng::Rng;
use wavenet_util::{assert_curves_agree, small_gated, train};

fn att(batch: usize, heads: usize, dim: usize, time: usize, shift: usize) -> Attention {
    Attention { batch, heads, dim, time, shift }
}

/// Both sides sum in f32 in different orders and their `exp` differ by a few ulp: per element
/// `|gpu - cpu| <= 1e-5 * sqrt(n) * (|cpu| + scale) + 1e-6`, `n` the terms of the longest sum
/// (D for scores, T for the sums over time) and `scale` the typical magnitude of the array's
/// terms. A wrong index or mask is off by O(1).
fn assert_close(what: &str, a: Attention, gpu: &[f32], cpu: &[f32], n: usize) -> f32 {
    assert_eq!(gpu.len(), cpu.len());
    let scale = cpu.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    let mut worst = 0.0f32;
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let tol = 1e-5 * (n as f32).sqrt() * (c.abs() + scale) + 1e-6;
        assert!((g - c).abs() <= tol, "{a:?}: {what}[{i}]: gpu {g}, cpu {c} (tolerance {tol:e})");
        worst = worst.max((g - c).abs());
    }
    worst
}

#[test]
fn attention_matches_cpu() {
    let (g, cpu) = (gpu(), CpuBackend::new());
    let mut worst = 0.0f32;
    for (s, a) in [
        att(1, 1, 1, 1, 0),
        att(1, 1, 1, 1, 1),
        att(2, 1, 3, 5, 1),
        att(1, 3, 5, 13, 0),
        att(3, 3, 7, 67, 1),
        att(2, 1, 4, 64, 0),
        att(1, 3, 32, 130, 1),
        att(2, 2, 3, 6, 9),
    ]
    .into_iter()
    .enumerate()
    {
        let (n, np) = (a.qkv_len(), a.p_len());
        let seed = 100 * s as u64;
        let big = |v: CpuBuf| v.iter().map(|x| 2.0 * x).collect::<CpuBuf>();
        let (q, k, v, dout) =
            (big(random_vec(seed, n)), big(random_vec(seed + 1, n)), random_vec(seed + 2, n), random_vec(seed + 3, n));

        let (mut out_c, mut p_c) = (CpuBuf::zeros(n), CpuBuf::zeros(np));
        cpu.attention_fwd(&q, &k, &v, &mut out_c, &mut p_c, a);
        let (qg, kg, vg) = (upload(&q), upload(&k), upload(&v));
        let (mut out_g, mut p_g) = (upload(&random_vec(seed + 4, n)), upload(&random_vec(seed + 5, np)));
        g.attention_fwd(&qg, &kg, &vg, &mut out_g, &mut p_g, a);
        worst = worst.max(assert_close("p", a, &g.read(&p_g, np), &p_c, a.dim));
        worst = worst.max(assert_close("out", a, &g.read(&out_g, n), &out_c, a.time));

        // The backward from the CPU's p on both sides (the forward is checked above).
        let (mut dq_c, mut dk_c, mut dv_c) = (CpuBuf::zeros(n), CpuBuf::zeros(n), CpuBuf::zeros(n));
        cpu.attention_bwd(Qkv { q: &q, k: &k, v: &v }, &p_c, &dout, Qkv { q: &mut dq_c, k: &mut dk_c, v: &mut dv_c }, a);
        let garbage = |i: u64| upload(&random_vec(seed + 10 + i, n));
        let (mut dq_g, mut dk_g, mut dv_g) = (garbage(0), garbage(1), garbage(2));
        g.attention_bwd(Qkv { q: &qg, k: &kg, v: &vg }, &upload(&p_c), &upload(&dout), Qkv { q: &mut dq_g, k: &mut dk_g, v: &mut dv_g }, a);
        let terms = a.time * a.dim.max(1);
        worst = worst.max(assert_close("dq", a, &g.read(&dq_g, n), &dq_c, terms));
        worst = worst.max(assert_close("dk", a, &g.read(&dk_g, n), &dk_c, terms));
        worst = worst.max(assert_close("dv", a, &g.read(&dv_g, n), &dv_c, a.time));
        if a.shift >= a.time {
            assert!(out_c.iter().chain(&dq_c).chain(&dk_c).chain(&dv_c).all(|&x| x == 0.0), "{a:?}: all masked");
        }
    }
    eprintln!("attention: largest gpu-cpu difference {worst:e}");
}

/// The same training run (same initial weights, same batches, 100 steps) of a gated WaveNet with
/// 2 attention heads of width 5 on both backends: the bound of tests/gpu_conv.rs's curves (2e-5
/// plus 2e-7 per step: f32 rounding in another order, amplified by training). A wrong kernel is
/// off by far more at the first step.
#[test]
fn training_curves_agree_gated_with_attention() {
    let (g, cpu) = (gpu(), CpuBackend::new());
    let cfg = GatedConfig { attention: 2, attention_dim: 5, ..small_gated() };
    const STEPS: usize = 100;
    let c = train(&cpu, &mut WavenetGated::new(&cpu, &cfg, 8, &mut Rng::new(12)), 8, STEPS, 6, 1e-2);
    let gp = train(g, &mut WavenetGated::new(g, &cfg, 8, &mut Rng::new(12)), 8, STEPS, 6, 1e-2);
    assert!(c[STEPS - 1] < 0.5 * c[0], "the run should learn: {} -> {}", c[0], c[STEPS - 1]);
    assert_curves_agree("wavenet-gated + attention", &c, &gp);
}
