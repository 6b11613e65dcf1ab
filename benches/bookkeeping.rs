//! The bookkeeping of one training step on the CPU (no harness; `cargo bench --bench
//! bookkeeping`): zeroing the gradients, the global norm and clip scale, and the Adam(W) update,
//! for every model at its default sizes (wavenet-gated with `etude train`'s 4 attention heads),
//! over the model's parameter arena (one pass over each arena buffer) against the same tensors
//! with buffers of their own (one pass per tensor, what the CPU did before the arena). The two
//! alternate in one run, each first every other round; the ratio is arena / per-tensor time. Timings are
//! printed, never asserted.

use std::time::Instant;

use etude::engine::cpu::CpuBackend;
use etude::engine::arena::{zero_grads, ParamsMut};
use etude::engine::{Adam, AdamParams, Backend, Param};
use etude::model::any::{AnyModel, ModelConfig, Sizes, MODEL_NAMES};
use etude::model::Model;
use etude::rng::Rng;

const ROUNDS: usize = 11;
const STEPS: usize = 20;

/// Milliseconds per step of `STEPS` bookkeeping steps (zero, then Adam with clipping on).
fn time_steps(c: &CpuBackend, adam: &mut Adam<CpuBackend>, mut params: impl ParamsMut<CpuBackend>) -> f64 {
    let t0 = Instant::now();
    for _ in 0..STEPS {
        zero_grads(c, &mut params);
        adam.step(c, &mut params);
    }
    t0.elapsed().as_secs_f64() * 1e3 / STEPS as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let c = CpuBackend::new();
    println!("bookkeeping per step on {} (zero + norm/clip + AdamW), median of {ROUNDS} alternating rounds of {STEPS} steps", c.name());
    for name in MODEL_NAMES {
        let sizes = if name == "wavenet-gated" { Sizes { attention: Some(4), ..Sizes::default() } } else { Sizes::default() };
        let cfg = ModelConfig::from_name(name, 300, 128, &sizes).expect("default sizes");
        let mut model = AnyModel::new(&c, &cfg, 1, 128, &mut Rng::new(1)).expect("a model");
        let mut alone: Vec<Param<CpuBackend>> =
            model.params().iter().map(|p| Param::new(&c, &p.name, &p.value.shape, &p.value.to_vec(&c))).collect();
        // Gradients of a plausible size, so that clipping and the update do real work.
        let mut rng = Rng::new(2);
        for (p, q) in model.params_mut().into_iter().zip(alone.iter_mut()) {
            let g: Vec<f32> = (0..p.grad.len()).map(|_| rng.uniform_range(-1e-2, 1e-2)).collect();
            p.grad.set(&c, &g);
            q.grad.set(&c, &g);
        }
        let hp = AdamParams { lr: 1e-3, ..AdamParams::default() };
        let (mut adam_arena, mut adam_alone) = (Adam::new(&c, model.params(), hp, 1.0), Adam::new(&c, &alone, hp, 1.0));
        adam_arena.decoupled_decay = 0.01;
        adam_alone.decoupled_decay = 0.01;
        let (mut arena, mut per_tensor) = (Vec::new(), Vec::new());
        for round in 0..=ROUNDS {
            // Each side goes first every other round.
            let (a, b) = if round % 2 == 0 {
                let a = time_steps(&c, &mut adam_arena, model.params_mut());
                (a, time_steps(&c, &mut adam_alone, &mut alone))
            } else {
                let b = time_steps(&c, &mut adam_alone, &mut alone);
                (time_steps(&c, &mut adam_arena, model.params_mut()), b)
            };
            if round > 0 {
                // round 0 warms both up
                arena.push(a);
                per_tensor.push(b);
            }
        }
        let params: usize = alone.iter().map(|p| p.value.len()).sum();
        let (a, b) = (median(arena), median(per_tensor));
        println!(
            "{name:>14}: {:>3} tensors, {params:>7} parameters: arena {a:.3} ms, per tensor {b:.3} ms, ratio {:.3}",
            alone.len(),
            a / b
        );
    }
}
