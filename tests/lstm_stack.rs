//! `LstmStack` (src/layers/lstm_stack.rs) where the models do not reach it: a forward over more
//! than one step from a carried state, `save_state` after it, and the backward from a carried
//! state (the models train from the zero state and step one token at a time; their fixtures,
//! gradient checks and one-step inference test cover the rest).
mod common;

use common::{numeric_grad, random_vec};
use etude::engine::arena::into_arena;
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::{Backend, Dropout};
use etude::layers::{Layer, LstmRun, LstmStack, LstmState};
use etude::rng::Rng;

/// Rows `t0..t1` of every sequence of `x [batch, time, w]`, as `[batch, t1 - t0, w]`.
fn steps(x: &[f32], batch: usize, time: usize, w: usize, t0: usize, t1: usize) -> CpuBuf {
    (0..batch).flat_map(|b| x[(b * time + t0) * w..(b * time + t1) * w].iter().copied()).collect()
}

/// A window run as two chunks, the second from the state `save_state` left after the first, gives
/// every layer's h over the second chunk and the final (h, c) of the whole window's forward.
#[test]
fn a_window_in_two_chunks_with_the_carried_state_matches_the_whole_window() {
    let be = CpuBackend::new();
    let (batch, time, inp, h, nl) = (3, 7, 4, 5, 3);
    let split = 4;
    let mut stack = LstmStack::new(&be, "lstm", (inp, h, nl), batch * time, batch, &mut Rng::new(21));
    into_arena(&be, stack.params_mut()); // the stack declares its parameters; this places them
    let x = random_vec(22, batch * time * inp);

    stack.forward(&be, &x, LstmRun { batch, time, state: None, dropout: None });
    let whole: Vec<Vec<f32>> = stack.layers.iter().map(|l| be.read(&l.hs, batch * time * h)).collect();
    let mut end = stack.zero_state(&be, batch);
    stack.save_state(&be, &mut end, time);

    let mut state = stack.zero_state(&be, batch);
    let first = steps(&x, batch, time, inp, 0, split);
    stack.forward(&be, &first, LstmRun { batch, time: split, state: Some(&state), dropout: None });
    stack.save_state(&be, &mut state, split);
    let rest = time - split;
    let second = steps(&x, batch, time, inp, split, time);
    stack.forward(&be, &second, LstmRun { batch, time: rest, state: Some(&state), dropout: None });
    stack.save_state(&be, &mut state, rest);

    // The same f32 operations in the same order, up to sgemm's blocking of the input projection
    // over a different number of rows: 1e-5 on O(1) values (a state off by one step is ~1e-1).
    let close = |what: &str, got: &[f32], want: &[f32]| {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-5, "{what}[{i}]: chunked {g} vs whole {w}");
        }
    };
    for (l, layer) in stack.layers.iter().enumerate() {
        let got = be.read(&layer.hs, batch * rest * h);
        close(&format!("layer {l} h over the second chunk"), &got, &steps(&whole[l], batch, time, h, split, time));
        close(&format!("h_n[{l}]"), &be.read(&state.h[l], batch * h), &be.read(&end.h[l], batch * h));
        close(&format!("c_n[{l}]"), &be.read(&state.c[l], batch * h), &be.read(&end.c[l], batch * h));
    }
    // The saved state is the last step of the top layer's h, not the first.
    let top_last = steps(&whole[nl - 1], batch, time, h, time - 1, time);
    close("h_n[top] against hs", &be.read(&end.h[nl - 1], batch * h), &top_last);
}

/// The backward from a carried (non-zero) state, with the inter-layer dropout on (p = 0.5, so a
/// forgotten mask or scale is far off): the gradients of the input and of parameters of the
/// bottom and the top layer against central differences of `sum r * h_top` with the same state
/// and the same mask.
#[test]
fn the_backward_from_a_carried_state_matches_finite_differences() {
    let be = CpuBackend::new();
    let (batch, time, inp, h, nl) = (2, 5, 3, 4, 3);
    let n = batch * time;
    // An arena larger than the batch: the stack uses its first n rows.
    let mut stack = LstmStack::new(&be, "lstm", (inp, h, nl), n + 3, batch, &mut Rng::new(31));
    into_arena(&be, stack.params_mut()); // the stack declares its parameters; this places them
    // PyTorch's U(+-1/sqrt(H)) = U(+-0.5) at H = 4 scaled to U(+-1.5): three such layers with
    // the init's weights pass too small a gradient down (~1e-3) for the differences to test it.
    for p in stack.params_mut() {
        p.value.buf.iter_mut().for_each(|v| *v *= 3.0);
    }
    let x = random_vec(32, n * inp);
    let r = random_vec(33, n * h);
    let mut state: LstmState<CpuBackend> = stack.zero_state(&be, batch);
    for (l, (hb, cb)) in state.h.iter_mut().zip(state.c.iter_mut()).enumerate() {
        be.write(hb, &random_vec(40 + l as u64, batch * h));
        be.write(cb, &random_vec(50 + l as u64, batch * h));
    }
    let d = Some(Dropout { p: 0.5, seed: 7, step: 3 });

    let run = LstmRun { batch, time, state: Some(&state), dropout: d.as_ref() };
    let loss = |stack: &mut LstmStack<CpuBackend>, x: &[f32]| -> f64 {
        stack.forward(&be, &CpuBuf::from(x), run);
        stack.top().hs[..n * h].iter().zip(&r).map(|(&a, &b)| a as f64 * b as f64).sum()
    };

    // Analytic: dhs of the top layer = r.
    loss(&mut stack, &x);
    be.write(&mut stack.top_mut().dhs, &r);
    let mut dx = CpuBuf::zeros(n * inp);
    stack.backward(&be, &x, &mut dx, run);
    let grads: Vec<(String, Vec<f32>)> = stack.params().iter().map(|p| (p.name.clone(), p.grad.buf.to_vec())).collect();
    let names: Vec<&str> = grads.iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<String> =
        (0..nl).flat_map(|l| ["weight_ih", "weight_hh", "bias_ih", "bias_hh"].map(|t| format!("lstm.{t}_l{l}"))).collect();
    assert_eq!(names, want, "parameters in PyTorch's order");

    // Tolerance as in tests/lstm_cpu.rs (central differences with h = 1e-2).
    let check = |what: &str, got: &[f32], num: &[f64]| {
        assert!(num.iter().any(|v| v.abs() > 1e-2), "{what}: the numeric gradient is all ~0");
        for (i, (&g, &w)) in got.iter().zip(num).enumerate() {
            assert!((g as f64 - w).abs() <= 1e-4 + 2e-3 * w.abs(), "{what}[{i}]: analytic {g}, numeric {w}");
        }
    };
    let mut xv = x.clone();
    let num_x = numeric_grad(&mut xv, 1e-2, |v| loss(&mut stack, v));
    check("dx", &dx, &num_x);
    // weight_hh_l0 (index 1: reached through both dropped inputs and the carried h0 of layer 0)
    // and bias_ih of the top layer.
    for idx in [1, 4 * (nl - 1) + 2] {
        let mut v = stack.params()[idx].value.buf.clone();
        let num = numeric_grad(&mut v, 1e-2, |v| {
            stack.params_mut()[idx].value.buf.copy_from_slice(v);
            loss(&mut stack, &x)
        });
        stack.params_mut()[idx].value.buf.copy_from_slice(&v);
        check(&grads[idx].0, &grads[idx].1, &num);
    }
}
