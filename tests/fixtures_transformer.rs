//! The Transformer (issue 26) on the CPU backend reproduces the PyTorch fixture written from
//! `../shared/peers/torch_transformer.py`: parameter names, shapes and order, logits, loss, every
//! gradient, the weights after one Adam step and the loss after it. Then generation's one-step
//! form with the key/value cache against the full forward.
mod common;
mod wavenet_util;

use common::Fixture;
use etude::engine::cpu::CpuBackend;
use etude::engine::Backend;
use etude::model::transformer::{Transformer, TransformerCache};
use etude::model::Model;
use etude::rng::Rng;

#[test]
fn transformer_matches_pytorch() {
    let cpu = CpuBackend::new();
    let f = Fixture::load("transformer");
    // max_batch above the fixture's batch: the arena must serve smaller batches.
    let mut m = Transformer::new(&cpu, &wavenet_util::transformer_config(&f), 6, &mut Rng::new(1));
    wavenet_util::check_model(&cpu, &mut m, &f);
}

/// The cached step, fed each fixture window token by token, gives every row of the full forward's
/// logits (both in f32, summed in different orders: 2e-5 absolute on O(1) logits).
#[test]
fn cached_steps_match_the_full_forward() {
    let cpu = CpuBackend::new();
    let f = Fixture::load("transformer");
    let cfg = wavenet_util::transformer_config(&f);
    let mut m = Transformer::new(&cpu, &cfg, 4, &mut Rng::new(1));
    for (name, _) in f.params() {
        m.set_param(&cpu, &name, &f.get(&format!("param.{name}")).f32()).unwrap();
    }
    let (t, v) = (cfg.window, cfg.vocab);
    let x = f.get("x").u32();
    let mut ids = cpu.alloc_ids(4 * t);
    cpu.write_ids(&mut ids, &x);
    m.forward(&cpu, &ids, 4);
    let full = m.logits().to_vec(&cpu);
    // All four sequences at once (batch 4), one position per step.
    let mut cache = TransformerCache::new(&cpu, &m, 4);
    let mut one = cpu.alloc_ids(4);
    for step in 0..t {
        let col: Vec<u32> = (0..4).map(|b| x[b * t + step]).collect();
        cpu.write_ids(&mut one, &col);
        m.step(&cpu, &one, &mut cache);
        let got = m.logits().to_vec(&cpu);
        for b in 0..4 {
            for k in 0..v {
                let (g, w) = (got[b * v + k], full[(b * t + step) * v + k]);
                assert!((g - w).abs() <= 2e-5, "b {b} step {step} token {k}: cached {g}, full {w}");
            }
        }
    }
    assert_eq!(cache.len(), t);
}
