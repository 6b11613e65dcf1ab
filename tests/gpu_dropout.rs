//! Dropout and AdamW's decay (issue 13) on the GPU against the CPU backend: the ops bit for bit
//! (the mask is integer arithmetic, the scale one f32 multiplication), sizes off the workgroup
//! multiple (256) included; AdamW steps; and every model's forward and backward with dropout on.
//! One device is shared by the tests; with no adapter they fail saying how to get one.
mod common;

use common::random_vec;
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::Xent;
use etude::engine::dropout::{DropMask, Dropout};
use etude::engine::gpu::GpuBackend;
use etude::engine::arena::zero_grads;
use etude::engine::{Adam, AdamParams, Backend, Param};
use etude::model::any::{AnyModel, ModelConfig, Sizes};
use etude::model::Model;
use etude::rng::Rng;
use std::sync::{Mutex, MutexGuard, OnceLock};

fn gpu() -> MutexGuard<'static, GpuBackend> {
    static GPU: OnceLock<Mutex<GpuBackend>> = OnceLock::new();
    GPU.get_or_init(|| Mutex::new(common::open_gpu())).lock().unwrap_or_else(|e| e.into_inner())
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn dropout_op_is_bit_identical_to_the_cpu() {
    let g = gpu();
    let cpu = CpuBackend::new();
    for (n, p, site) in [(1usize, 0.5f32, 0u32), (255, 0.1, 1), (256, 0.3, 2), (257, 0.3, 3), (1000, 0.9, 4), (70_001, 0.2, 5)] {
        let d = Dropout { p, seed: 0xDEAD_BEEF_1234, step: 77 };
        let mask = DropMask::new(&d, site);
        let x = random_vec(n as u64 + 1, n);
        // One element longer than n: the tail must stay.
        let mut host: CpuBuf = x.iter().copied().chain([3.5]).collect();
        let mut buf = g.alloc(n + 1);
        g.write(&mut buf, &host);
        g.dropout(&mut buf, n, mask);
        cpu.dropout(&mut host, n, mask);
        let on_gpu = g.read(&buf, n + 1);
        assert_eq!(bits(&on_gpu), bits(&host), "n={n} p={p}");
        assert_eq!(on_gpu[n], 3.5);
        if n >= 1000 {
            let zeros = on_gpu[..n].iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
            assert!((zeros - p as f64).abs() < 0.03, "n={n} p={p}: dropped {zeros}");
        }
    }
}

#[test]
fn decay_op_is_bit_identical_to_the_cpu() {
    let g = gpu();
    let cpu = CpuBackend::new();
    for n in [1usize, 255, 257, 4099] {
        let mut host = random_vec(n as u64, n + 1);
        let mut buf = g.alloc(n + 1);
        g.write(&mut buf, &host);
        g.decay(&mut buf, n, 1.0 - 3e-3 * 0.1);
        cpu.decay(&mut host, n, 1.0 - 3e-3 * 0.1);
        assert_eq!(bits(&g.read(&buf, n + 1)), bits(&host), "n={n}");
    }
}

/// Three AdamW steps (with L2 decay and clipping on as well) on parameters of sizes off 256.
#[test]
fn adamw_steps_match_the_cpu() {
    let g = gpu();
    let cpu = CpuBackend::new();
    let shapes = [vec![3usize], vec![17, 19], vec![300]];
    let hp = AdamParams { lr: 1e-2, weight_decay: 0.01, ..AdamParams::default() };
    fn run<B: Backend>(b: &B, shapes: &[Vec<usize>], hp: AdamParams) -> Vec<Vec<f32>> {
        let mut params: Vec<Param<B>> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| Param::new(b, &format!("p{i}"), s, &random_vec(i as u64, s.iter().product())))
            .collect();
        let mut adam = Adam::new(b, &params, hp, 0.5);
        adam.decoupled_decay = 0.1;
        for step in 0..3u64 {
            for (i, p) in params.iter_mut().enumerate() {
                let n = p.grad.len();
                p.grad.set(b, &random_vec(100 + 10 * step + i as u64, n));
            }
            adam.step(b, &mut params);
        }
        params.iter().map(|p| p.value.to_vec(b)).collect()
    }
    let (a, c) = (run(&*g, &shapes, hp), run(&cpu, &shapes, hp));
    for (pa, pc) in a.iter().zip(&c) {
        for (i, (x, y)) in pa.iter().zip(pc).enumerate() {
            assert!((x - y).abs() <= 1e-6 + 1e-5 * y.abs(), "[{i}]: gpu {x} cpu {y}");
        }
    }
}

fn tiny(name: &str) -> ModelConfig {
    let sizes = match name {
        "lstm" | "lstm-seq" => Sizes { embed: Some(9), hidden: Some(13), layers: Some(2), dense: Some(11), ..Default::default() },
        "wavenet" => Sizes { embed: Some(9), channels: Some(13), layers: Some(3), dense: Some(11), ..Default::default() },
        _ => Sizes { embed: Some(9), residual: Some(13), skip: Some(11), layers: Some(3), ..Default::default() },
    };
    ModelConfig::from_name(name, 23, 10, &sizes).unwrap()
}

/// Logits and every gradient after one forward and backward with dropout 0.4 (batch 5, window 10:
/// activations of 5 x 10 x 13 = 650 values, off the workgroup multiple). A different mask would
/// move them by O(1); f32 differences between the backends stay near 1e-6.
fn forward_backward<B: Backend>(b: &B, name: &str) -> (Vec<f32>, Vec<Vec<f32>>) {
    let (batch, t, v) = (5, 10, 23);
    let mut m = AnyModel::new(b, &tiny(name), batch, t, &mut Rng::new(3)).unwrap();
    let mut rng = Rng::new(9);
    let xs: Vec<u32> = (0..batch * t).map(|_| (rng.next_u64() % v as u64) as u32).collect();
    let rows = m.target_rows(batch);
    let ys: Vec<u32> = (0..rows).map(|_| (rng.next_u64() % v as u64) as u32).collect();
    let (mut x, mut y) = (b.alloc_ids(xs.len()), b.alloc_ids(rows));
    b.write_ids(&mut x, &xs);
    b.write_ids(&mut y, &ys);
    m.set_dropout(Some(Dropout { p: 0.4, seed: 21, step: 5 }));
    zero_grads(b, m.params_mut());
    m.forward(b, &x, batch);
    let (mut dl, mut stats) = (b.alloc(rows * v), b.alloc_f32(2 * rows));
    b.softmax_xent(&m.logits().buf, &y, &mut dl, &mut stats, Xent { n: rows, v, grad_scale: 1.0 / rows as f32 });
    m.backward(b, &x, &dl, batch);
    let logits = b.read(&m.logits().buf, rows * v);
    (logits, m.params().iter().map(|p| p.grad.to_vec(b)).collect())
}

#[test]
fn models_with_dropout_match_the_cpu() {
    let g = gpu();
    let cpu = CpuBackend::new();
    for name in ["lstm", "lstm-seq", "wavenet", "wavenet-gated"] {
        let (lg, gg) = forward_backward(&*g, name);
        let (lc, gc) = forward_backward(&cpu, name);
        for (i, (a, c)) in lg.iter().zip(&lc).enumerate() {
            assert!((a - c).abs() <= 1e-5 + 1e-4 * c.abs(), "{name} logits[{i}]: gpu {a} cpu {c}");
        }
        for (k, (ga, gc)) in gg.iter().zip(&gc).enumerate() {
            let scale = gc.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (i, (a, c)) in ga.iter().zip(gc).enumerate() {
                assert!((a - c).abs() <= 1e-5 * scale + 1e-3 * c.abs() + 1e-7, "{name} grad {k}[{i}]: gpu {a} cpu {c}");
            }
        }
    }
}

/// At `--precision f16` the mask is the same integer arithmetic; the kept values are the f16
/// input times the scale, rounded to f16 once (within one f16 rounding of the CPU's f32 product).
#[test]
fn dropout_at_f16_keeps_the_same_mask() {
    let g = GpuBackend::with_precision(None, etude::engine::gpu::Precision::F16)
        .unwrap_or_else(|e| panic!("{e} (the f16 tests need an adapter with SHADER_F16, as lavapipe has)"));
    let cpu = CpuBackend::new();
    let n = 1031;
    let mask = DropMask::new(&Dropout { p: 0.35, seed: 5, step: 8 }, 2);
    let x: CpuBuf = random_vec(7, n).iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    let mut buf = g.alloc(n);
    g.write(&mut buf, &x);
    g.dropout(&mut buf, n, mask);
    let on_gpu = g.read(&buf, n);
    let mut want = x.clone();
    cpu.dropout(&mut want, n, mask);
    for i in 0..n {
        assert_eq!(on_gpu[i] == 0.0, want[i] == 0.0, "[{i}]: mask differs");
        assert!((on_gpu[i] - want[i]).abs() <= 1e-3 * want[i].abs(), "[{i}]: gpu {} cpu {}", on_gpu[i], want[i]);
    }
}
