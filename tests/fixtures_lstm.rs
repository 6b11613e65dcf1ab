//! Both LSTM models on the CPU backend reproduce the PyTorch fixtures `lstm` and `lstm_seq`
//! (`../shared/fixtures`): logits, loss, every gradient, the weights after one Adam step, the loss
//! after it, and the final (h, c) of both layers through one-step inference.
mod common;
mod lstm_common;

use etude::engine::cpu::CpuBackend;
use lstm_common::{check_fixture, Tols};

/// The CPU backend computes in f32 like float32 PyTorch, so the shared tolerances of
/// `tests/common` apply unchanged (loss 1e-5, gradients `check_grad`, Adam 2e-5). Logits and the
/// states h_n, c_n are O(1) values a few dozen f32 operations deep: float32 PyTorch is within
/// 6.2e-8 of the f64 reference (fixtures README); 1e-5 leaves room for another summation order
/// while catching any real mistake (a wrong weight moves them by ~1e-2).
const CPU: Tols = Tols { loss: common::LOSS_TOL, logits: 1e-5, adam1: common::ADAM1_TOL, state: 1e-5 };

#[test]
fn lstm_reproduces_the_pytorch_fixture() {
    let fails = check_fixture(&CpuBackend::new(), "lstm", &CPU);
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

#[test]
fn lstm_seq_reproduces_the_pytorch_fixture() {
    let fails = check_fixture(&CpuBackend::new(), "lstm_seq", &CPU);
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}
