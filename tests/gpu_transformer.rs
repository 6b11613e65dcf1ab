//! The Transformer (issue 26) on the GPU backend: the PyTorch fixture (names, logits, loss, every
//! gradient, one Adam step, the loss after it) with the tolerances of the CPU check, the cached
//! one-step generation against the GPU's own full forward, and the same 100-step training run on
//! both backends. One device is shared by the tests; with no adapter they fail saying how to get one.
mod common;
mod wavenet_util;

use common::{gpu, Fixture};
use etude::engine::cpu::CpuBackend;
use etude::engine::Backend;
use etude::model::transformer::{Transformer, TransformerCache, TransformerConfig};
use etude::model::Model;
use etude::rng::Rng;
use wavenet_util::{assert_curves_agree, train};

#[test]
fn transformer_matches_pytorch_on_the_gpu() {
    let g = gpu();
    let f = Fixture::load("transformer");
    let mut m = Transformer::new(g, &wavenet_util::transformer_config(&f), 6, &mut Rng::new(1));
    wavenet_util::check_model(g, &mut m, &f);
}

#[test]
fn cached_steps_match_the_full_forward_on_the_gpu() {
    let g = gpu();
    let f = Fixture::load("transformer");
    let cfg = wavenet_util::transformer_config(&f);
    let mut m = Transformer::new(g, &cfg, 4, &mut Rng::new(1));
    for (name, _) in f.params() {
        m.set_param(g, &name, &f.get(&format!("param.{name}")).f32()).unwrap();
    }
    let (t, v) = (cfg.window, cfg.vocab);
    let x = f.get("x").u32();
    let mut ids = g.alloc_ids(4 * t);
    g.write_ids(&mut ids, &x);
    m.forward(g, &ids, 4);
    let full = m.logits().to_vec(g);
    let mut cache = TransformerCache::new(g, &m, 4);
    let mut one = g.alloc_ids(4);
    for step in 0..t {
        let col: Vec<u32> = (0..4).map(|b| x[b * t + step]).collect();
        g.write_ids(&mut one, &col);
        m.step(g, &one, &mut cache);
        let got = m.logits().to_vec(g);
        for b in 0..4 {
            for k in 0..v {
                let (a, w) = (got[b * v + k], full[(b * t + step) * v + k]);
                assert!((a - w).abs() <= 2e-5, "b {b} step {step} token {k}: cached {a}, full {w}");
            }
        }
    }
}

/// The same training run (same initial weights, same batches, 100 steps) on both backends, within
/// the bound of the other models' curves (2e-5 plus 2e-7 per step).
#[test]
fn training_curves_agree_transformer() {
    let (g, cpu) = (gpu(), CpuBackend::new());
    let cfg = TransformerConfig { vocab: 13, window: 24, width: 12, heads: 3, ff: 20, layers: 2 };
    const STEPS: usize = 100;
    let c = train(&cpu, &mut Transformer::new(&cpu, &cfg, 8, &mut Rng::new(12)), 8, STEPS, 6, 1e-2);
    let gp = train(g, &mut Transformer::new(g, &cfg, 8, &mut Rng::new(12)), 8, STEPS, 6, 1e-2);
    assert!(c[STEPS - 1] < 0.5 * c[0], "the run should learn: {} -> {}", c[0], c[STEPS - 1]);
    assert_curves_agree("transformer", &c, &gp);
}
