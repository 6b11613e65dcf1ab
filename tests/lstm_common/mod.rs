//! The LSTM model checks shared by the CPU and GPU tests: reproduce a PyTorch fixture, and a small
//! training run on a periodic token stream. Generic over the backend.
#![allow(dead_code)]

use crate::common::{adam1_failures, check_abs, check_grad, Fixture};
use etude::engine::{arena::zero_grads, Adam, AdamParams, Backend};
use etude::engine::Xent;
use etude::model::lstm::{LstmConfig, LstmModel};
use etude::model::Model;
use etude::rng::Rng;

/// Tolerances for [`check_fixture`] (gradients always use `common::check_grad`); see `fixtures_lstm.rs` and `gpu_lstm.rs` for their reasons.
pub struct Tols {
    pub loss: f64,
    pub logits: f64,
    pub adam1: f64,
    pub state: f64,
}

/// The model of fixture `name` (`lstm` or `lstm_seq`) with the fixture's weights loaded.
pub fn fixture_model<B: Backend>(be: &B, f: &Fixture) -> LstmModel<B> {
    let j = &f.json;
    let get = |k: &str| j["hyper"][k].as_u64().expect("fixture hyper-parameter") as usize;
    let cfg = LstmConfig {
        vocab: j["V"].as_u64().expect("V") as usize,
        embed: get("E"),
        hidden: get("H"),
        layers: 2,
        dense: get("D"),
        seq: f.name == "lstm_seq",
    };
    let (batch, window) = (j["B"].as_u64().unwrap() as usize, j["T"].as_u64().unwrap() as usize);
    let mut model = LstmModel::new(be, cfg, batch, window, &mut Rng::new(0));
    // Same names, shapes and order as PyTorch's named_parameters().
    let ours: Vec<(String, Vec<usize>)> = model.params().iter().map(|p| (p.name.clone(), p.value.shape.clone())).collect();
    assert_eq!(ours, f.params(), "{}: parameter names/shapes/order", f.name);
    let n_params = j["n_params"].as_u64().expect("n_params") as usize;
    assert_eq!(model.config().n_params(), n_params, "{}: LstmConfig::n_params", f.name);
    assert_eq!(model.params().iter().map(|p| p.value.len()).sum::<usize>(), n_params);
    for (name, _) in f.params() {
        model.set_param(be, &name, &f.get(&format!("param.{name}")).f32()).unwrap();
    }
    model
}

/// Forward, loss (mean softmax cross-entropy through `Backend::softmax_xent`) and, when `dlogits`
/// is given, the backward into the model's gradients. Returns the loss.
pub fn loss_and_grads<B: Backend>(be: &B, model: &mut LstmModel<B>, x: &B::Ids, y: &B::Ids, batch: usize, backward: bool) -> f64 {
    let rows = model.target_rows(batch);
    let v = model.vocab();
    let mut dlogits = be.alloc(rows * v);
    let mut stats = be.alloc(2 * rows);
    model.forward(be, x, batch);
    be.softmax_xent(&model.logits().buf, y, &mut dlogits, &mut stats, Xent { n: rows, v, grad_scale: 1.0 / rows as f32 });
    if backward {
        zero_grads(be, model.params_mut());
        model.backward(be, x, &dlogits, batch);
    }
    let stats = be.read(&stats, 2 * rows);
    stats.iter().step_by(2).map(|&s| s as f64).sum::<f64>() / rows as f64
}

/// Everything the fixture holds, on backend `be`: logits, loss, every gradient, the weights after
/// one Adam step and the loss after it, and the final (h, c) of both layers through one-step
/// inference. Returns the list of failures (empty when all pass).
pub fn check_fixture<B: Backend>(be: &B, name: &str, tol: &Tols) -> Vec<String> {
    let f = Fixture::load(name);
    let mut model = fixture_model(be, &f);
    let (batch, window) = (model.max_batch(), model.window());
    let mut x = be.alloc_ids(batch * window);
    be.write_ids(&mut x, &f.get("x").u32());
    let yv = f.get("y").u32();
    let mut y = be.alloc_ids(yv.len());
    be.write_ids(&mut y, &yv);
    let mut fails = Vec::new();

    let loss = loss_and_grads(be, &mut model, &x, &y, batch, true);
    let want = f.get("loss").data[0];
    if (loss - want).abs() > tol.loss {
        fails.push(format!("{name}: loss {loss} vs PyTorch {want}"));
    }
    let logits = f.get("logits");
    if let Err(e) = check_abs(&format!("{name} logits"), &model.logits().to_vec(be)[..logits.data.len()], &logits.data, tol.logits) {
        fails.push(e);
    }
    for p in model.params() {
        let reference = f.get(&format!("grad.{}", p.name));
        let got = p.grad.to_vec(be);
        let result = check_grad(&format!("{name} grad.{}", p.name), &got, &reference.data);
        if let Err(e) = result {
            fails.push(e);
        }
    }

    fails.extend(adam1_failures(be, &mut model, &f, &format!("{name} "), tol.adam1));
    let after = loss_and_grads(be, &mut model, &x, &y, batch, false);
    let want = f.get("loss_after_adam1").data[0];
    if (after - want).abs() > tol.loss {
        fails.push(format!("{name}: loss after one Adam step {after} vs PyTorch {want}"));
    }

    // Back to the initial weights: one-step inference over the window ends in PyTorch's h_n, c_n.
    let mut model = fixture_model(be, &f);
    let xs = f.get("x").u32();
    let mut state = model.zero_state(be, batch);
    let mut ids = be.alloc_ids(batch);
    for t in 0..window {
        let step: Vec<u32> = (0..batch).map(|b| xs[b * window + t]).collect();
        be.write_ids(&mut ids, &step);
        model.step(be, &ids, &mut state);
    }
    let (h_n, c_n) = (f.get("act.lstm.h_n"), f.get("act.lstm.c_n"));
    let per = batch * model.config().hidden;
    for l in 0..2 {
        for (what, buf, reference) in [("h_n", &state.h[l], h_n), ("c_n", &state.c[l], c_n)] {
            let got = be.read(buf, per);
            if let Err(e) = check_abs(&format!("{name} {what}[{l}]"), &got, &reference.data[l * per..(l + 1) * per], tol.state) {
                fails.push(e);
            }
        }
    }
    fails
}

/// A small fixed corpus: a periodic stream over V = 12 tokens (period 12, one token repeated so
/// that the next token depends on more than the current one), cut into overlapping windows.
pub const TRAIN_V: usize = 12;
pub const TRAIN_T: usize = 16;
pub const TRAIN_BATCH: usize = 8;

fn corpus_token(i: usize) -> u32 {
    const PATTERN: [u32; 12] = [0, 3, 5, 3, 7, 1, 3, 9, 11, 2, 3, 10];
    PATTERN[i % PATTERN.len()]
}

/// Trains a small LSTM on the periodic corpus for `steps` steps and returns the loss of every
/// step. Deterministic: the same windows (offsets drawn from a seeded rng) on every backend.
pub fn train_curve<B: Backend>(be: &B, seq: bool, steps: usize) -> Vec<f64> {
    let cfg = LstmConfig { vocab: TRAIN_V, embed: 8, hidden: 24, layers: 2, dense: 32, seq };
    let (batch, window) = (TRAIN_BATCH, TRAIN_T);
    let mut model = LstmModel::new(be, cfg, batch, window, &mut Rng::new(42));
    let hp = AdamParams { lr: 1e-2, ..AdamParams::default() };
    let mut adam = Adam::new(be, model.params(), hp, 1.0);
    let mut rng = Rng::new(7);
    let mut x = be.alloc_ids(batch * window);
    let rows = model.target_rows(batch);
    let mut y = be.alloc_ids(rows);
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let mut xs = Vec::with_capacity(batch * window);
        let mut ys = Vec::with_capacity(rows);
        for _ in 0..batch {
            let off = rng.below(1000);
            xs.extend((0..window).map(|t| corpus_token(off + t)));
            if seq {
                ys.extend((0..window).map(|t| corpus_token(off + t + 1)));
            } else {
                ys.push(corpus_token(off + window));
            }
        }
        be.write_ids(&mut x, &xs);
        be.write_ids(&mut y, &ys);
        let loss = loss_and_grads(be, &mut model, &x, &y, batch, true);
        adam.step(be, model.params_mut());
        losses.push(loss);
    }
    losses
}
