//! A few hundred Adam steps on a periodic token stream lower the loss clearly, for both WaveNets
//! on the CPU backend.
mod common;
mod wavenet_util;

use etude::engine::cpu::CpuBackend;
use etude::model::wavenet::{Wavenet, WavenetConfig};
use etude::model::wavenet_gated::WavenetGated;
use etude::rng::Rng;
use wavenet_util::{input_dependent, small_gated, small_simple, train};

const STEPS: usize = 300;
const BATCH: usize = 8;
const LR: f32 = 1e-2;

/// Mean of the first and of the last ten losses. The stream is deterministic, so a working
/// model drives the loss from ~ln(12) = 2.5 towards 0; a broken gradient leaves it near the
/// unigram entropy of the stream (~1.8 nats) or makes it diverge.
fn check_learned(name: &str, losses: &[f32]) {
    assert!(losses.iter().all(|l| l.is_finite()), "{name}: non-finite loss");
    let first = losses[..10].iter().sum::<f32>() / 10.0;
    let last = losses[losses.len() - 10..].iter().sum::<f32>() / 10.0;
    eprintln!("{name}: mean loss of the first 10 steps {first:.4}, of the last 10 {last:.4}");
    assert!(first > 2.0, "{name}: initial loss {first} should be near ln 12");
    assert!(last < 0.25 * first && last < 0.5, "{name}: loss went from {first} to only {last}");
}

#[test]
fn simple_wavenet_learns_a_periodic_stream() {
    let cpu = CpuBackend::new();
    // The tutorial's flatten goes through ONE ReLU channel (out_conv C->1 after ReLU layers whose
    // outputs are >= 0): for about half of all PyTorch-style initialisations it is negative at
    // every step, the logits ignore the input and nothing below fc1 ever gets a gradient (the
    // fixture generator skipped seeds for the same reason). Like it, take the first seed whose
    // initial logits depend on the input.
    let cfg = WavenetConfig { channels: 16, ..small_simple() };
    let seed = (11..40u64)
        .find(|&s| input_dependent(&cpu, &mut Wavenet::new(&cpu, &cfg, BATCH, &mut Rng::new(s))))
        .expect("some initialisation has a live out_conv ReLU");
    let mut m = Wavenet::new(&cpu, &cfg, BATCH, &mut Rng::new(seed));
    check_learned("wavenet", &train(&cpu, &mut m, BATCH, STEPS, 5, LR));
}

#[test]
fn gated_wavenet_learns_a_periodic_stream() {
    let cpu = CpuBackend::new();
    let mut m = WavenetGated::new(&cpu, &small_gated(), BATCH, &mut Rng::new(12));
    check_learned("wavenet-gated", &train(&cpu, &mut m, BATCH, STEPS, 6, LR));
}
