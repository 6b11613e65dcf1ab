//! Both WaveNets on the CPU backend reproduce the PyTorch fixtures: logits, loss, every gradient,
//! the weights after one Adam step, and the loss after it; the gated one also with its causal
//! attention layer (etude's default model, `wavenet_gated_attention`).
mod common;
mod wavenet_util;

use etude::engine::cpu::CpuBackend;
use etude::engine::Backend;
use etude::model::wavenet::{Wavenet, WavenetConfig};
use etude::model::wavenet_gated::{GatedConfig, GatedStepper, WavenetGated};
use etude::model::Model;
use etude::rng::Rng;
use wavenet_util::{run_gated, run_simple};

#[test]
fn wavenet_simple() {
    run_simple(&CpuBackend::new(), "wavenet_simple");
}

#[test]
fn wavenet_simple_l10() {
    run_simple(&CpuBackend::new(), "wavenet_simple_L10");
}

#[test]
fn wavenet_gated() {
    run_gated(&CpuBackend::new(), "wavenet_gated");
}

#[test]
fn wavenet_gated_l10() {
    run_gated(&CpuBackend::new(), "wavenet_gated_L10");
}

/// The default model: two heads of width 3 after the skip sum (../shared/peers/torch_attention.py).
#[test]
fn wavenet_gated_attention() {
    run_gated(&CpuBackend::new(), "wavenet_gated_attention");
}

/// PyTorch-default initialisation: same seed, same weights; every weight inside its bound.
#[test]
fn initialisation_is_seeded_and_bounded() {
    let cpu = CpuBackend::new();
    let cfg = WavenetConfig { vocab: 11, window: 8, embed: 6, channels: 5, kernel: 3, layers: 3, dense: 7 };
    let a = Wavenet::new(&cpu, &cfg, 2, &mut Rng::new(5));
    let b = Wavenet::new(&cpu, &cfg, 2, &mut Rng::new(5));
    let c = Wavenet::new(&cpu, &cfg, 2, &mut Rng::new(6));
    for ((pa, pb), pc) in a.params().iter().zip(b.params()).zip(c.params()) {
        assert_eq!(pa.value.to_vec(&cpu), pb.value.to_vec(&cpu), "{}", pa.name);
        assert_ne!(pa.value.to_vec(&cpu), pc.value.to_vec(&cpu), "{}", pa.name);
        if pa.name != "emb.weight" {
            let s = &pa.value.shape;
            // fan_in = in * K for conv weights [out, in, K]; for a bias, that of its weight.
            let fan_in = match pa.name.as_str() {
                n if n.starts_with("convs.0") => 6 * 3,
                n if n.starts_with("convs.") => 5 * 3,
                n if n.starts_with("out_conv") => 5,
                n if n.starts_with("fc1") => 8,
                n if n.starts_with("fc2") => 7,
                n => panic!("unexpected parameter {n} {s:?}"),
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            assert!(pa.value.to_vec(&cpu).iter().all(|v| v.abs() <= bound), "{} outside ±{bound}", pa.name);
        }
    }
    let g = GatedConfig {
        vocab: 11,
        window: 8,
        embed: 6,
        residual: 4,
        skip: 5,
        kernel: 2,
        layers: 3,
        stacks: 2,
        attention: 0,
        attention_dim: 0,
    };
    let m = WavenetGated::new(&cpu, &g, 2, &mut Rng::new(5));
    let names: Vec<&str> = m.params().iter().map(|p| p.name.as_str()).collect();
    // 6 blocks; the last has no res: emb + inp(2) + 5*(dil, res, skip)(6 each) + (dil, skip)(4) + post(4).
    assert_eq!(names.len(), 1 + 2 + 5 * 6 + 4 + 4);
    assert!(names.contains(&"blocks.4.res.weight") && !names.contains(&"blocks.5.res.weight"));
    assert_eq!(g.dilation(3), 1);
    assert_eq!(g.dilation(4), 2);
}

/// The fast-WaveNet stepper, fed a window token by token from reset, gives every row of the full
/// forward's logits: the fixture's 10-block model, and a randomly initialised two-stack model
/// with kernel 3 (queues of 2*d past inputs). Both compute in f32 in different orders through up
/// to 12 blocks of sums of <= 24 terms; logits are O(1), so 2e-5 absolute is ~100 ulp.
#[test]
fn gated_stepper_matches_the_full_forward() {
    let cpu = CpuBackend::new();
    let f = common::Fixture::load("wavenet_gated_L10");
    let fixture_cfg = GatedConfig {
        vocab: 20,
        window: 16,
        embed: 6,
        residual: 4,
        skip: 6,
        kernel: 2,
        layers: 10,
        stacks: 1,
        attention: 0,
        attention_dim: 0,
    };
    let mut from_fixture = WavenetGated::new(&cpu, &fixture_cfg, 4, &mut Rng::new(1));
    for (name, _) in f.params() {
        from_fixture.set_param(&cpu, &name, &f.get(&format!("param.{name}")).f32()).unwrap();
    }
    let stacked_cfg = GatedConfig { kernel: 3, layers: 3, stacks: 2, ..fixture_cfg.clone() };
    let stacked = WavenetGated::new(&cpu, &stacked_cfg, 4, &mut Rng::new(3));
    let x = f.get("x").u32();
    for (label, mut m) in [("fixture", from_fixture), ("two stacks, K=3", stacked)] {
        let mut ids = cpu.alloc_ids(4 * 16);
        cpu.write_ids(&mut ids, &x);
        m.forward(&cpu, &ids, 4);
        let logits = m.logits().to_vec(&cpu);
        let mut stepper = GatedStepper::new(&cpu, &m);
        for b in 0..4 {
            stepper.reset();
            for t in 0..16 {
                let got = stepper.step(x[b * 16 + t]).unwrap();
                let want = &logits[(b * 16 + t) * 20..][..20];
                for (g, w) in got.iter().zip(want) {
                    assert!((g - w).abs() <= 2e-5, "{label}: b {b} t {t}: stepper {g}, forward {w}");
                }
            }
        }
        assert!(stepper.step(20).is_err(), "a token outside the vocabulary is refused");
    }
}
