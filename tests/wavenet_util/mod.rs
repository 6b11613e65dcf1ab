//! Shared by the WaveNet tests (CPU and GPU): the fixture check, and a small training run.
#![allow(dead_code)]

use crate::common::{adam1_failures, check_abs, check_grad, check_zero_grad, Fixture, ADAM1_TOL, LOSS_TOL};
use etude::engine::arena::zero_grads;
use etude::engine::Xent;
use etude::engine::{Adam, AdamParams, Backend};
use etude::model::wavenet::{Wavenet, WavenetConfig};
use etude::model::wavenet_gated::{GatedConfig, WavenetGated};
use etude::model::Model;
use etude::rng::Rng;

/// Logits: float32 PyTorch is within 6.2e-8 of the f64 reference (fixtures README); 1e-6 leaves
/// room for a different f32 summation order through up to 10 conv layers.
const LOGITS_TOL: f64 = 1e-6;

fn hyper(f: &Fixture, key: &str) -> usize {
    f.json["hyper"][key].as_u64().unwrap_or_else(|| panic!("{}: hyper.{key}", f.name)) as usize
}

fn dim(f: &Fixture, key: &str) -> usize {
    f.json[key].as_u64().unwrap_or_else(|| panic!("{}: {key}", f.name)) as usize
}

/// Forward + summed softmax-xent loss (mean over rows) on the current weights; leaves dlogits.
fn loss_of<B: Backend, M: Model<B>>(
    b: &B,
    m: &mut M,
    x: &B::Ids,
    y: &B::Ids,
    dlogits: &mut B::Buf,
    batch: usize,
) -> f64 {
    m.forward(b, x, batch);
    let rows = m.target_rows(batch);
    let mut stats = b.alloc(2 * rows);
    b.softmax_xent(&m.logits().buf, y, dlogits, &mut stats, Xent { n: rows, v: m.vocab(), grad_scale: 1.0 / rows as f32 });
    let s = b.read(&stats, 2 * rows);
    s.iter().step_by(2).map(|&v| v as f64).sum::<f64>() / rows as f64
}

/// Loads the fixture's weights into `m` and checks everything the fixture records.
pub fn check_model<B: Backend, M: Model<B>>(b: &B, m: &mut M, f: &Fixture) {
    let names: Vec<(String, Vec<usize>)> = m.params().iter().map(|p| (p.name.clone(), p.value.shape.clone())).collect();
    assert_eq!(names, f.params(), "{}: parameter names, shapes and order", f.name);
    for (name, _) in &names {
        m.set_param(b, name, &f.get(&format!("param.{name}")).f32()).unwrap();
    }
    let batch = dim(f, "B");
    let mut x = b.alloc_ids(batch * m.window());
    b.write_ids(&mut x, &f.get("x").u32());
    let yv = f.get("y").u32();
    let rows = m.target_rows(batch);
    assert_eq!(yv.len(), rows);
    let mut y = b.alloc_ids(rows);
    b.write_ids(&mut y, &yv);
    let mut dlogits = b.alloc(rows * m.vocab());

    let loss = loss_of(b, m, &x, &y, &mut dlogits, batch);
    let want = f.get("loss").data[0];
    assert!((loss - want).abs() <= LOSS_TOL, "{}: loss {loss}, PyTorch {want}", f.name);
    let logits = b.read(&m.logits().buf, rows * m.vocab());
    check_abs(&format!("{}: logits", f.name), &logits, &f.get("logits").data, LOGITS_TOL).unwrap();

    zero_grads(b, m.params_mut());
    m.backward(b, &x, &dlogits, batch);
    // Gradients that are zero in exact arithmetic (the fixture lists them, with the weight whose
    // largest gradient sets their scale) hold only rounding noise: an absolute bound, not check_grad.
    let zero_exact = &f.json["grad_zero_in_exact_arithmetic"];
    for p in m.params() {
        let label = format!("{}: grad.{}", f.name, p.name);
        let (got, want) = (p.grad.to_vec(b), &f.get(&format!("grad.{}", p.name)).data);
        match zero_exact[p.name.as_str()]["scale_of"].as_str() {
            Some(scale_of) => check_zero_grad(&label, &got, want, &f.get(&format!("grad.{scale_of}")).data),
            None => check_grad(&label, &got, want),
        }
        .unwrap();
    }

    // For those noise gradients one Adam step moves the weight by lr * g / (|g| + eps), up to lr
    // in the noise's sign; check_adam1 allows exactly the move our accepted gradient makes.
    let failures = adam1_failures(b, m, f, &format!("{}: ", f.name), ADAM1_TOL);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let after = loss_of(b, m, &x, &y, &mut dlogits, batch);
    let want = f.get("loss_after_adam1").data[0];
    // The adam1 weights match to 2e-5 (see ADAM1_TOL); the loss moves by at most ~1e-4 from that
    // over these few hundred weights of |dL/dw| << 1, so 1e-4 is a fair bound.
    assert!((after - want).abs() <= 1e-4, "{}: loss after one Adam step {after}, PyTorch {want}", f.name);
}

fn simple_config(f: &Fixture) -> WavenetConfig {
    WavenetConfig {
        vocab: dim(f, "V"),
        window: dim(f, "T"),
        embed: hyper(f, "E"),
        channels: hyper(f, "C"),
        kernel: hyper(f, "K"),
        layers: hyper(f, "L"),
        dense: hyper(f, "D"),
    }
}

fn gated_config(f: &Fixture) -> GatedConfig {
    let attention = attention_config(f);
    GatedConfig {
        vocab: dim(f, "V"),
        window: dim(f, "T"),
        embed: hyper(f, "E"),
        residual: hyper(f, "R"),
        skip: hyper(f, "S"),
        kernel: hyper(f, "K"),
        layers: hyper(f, "L"),
        stacks: 1,
        attention: attention.map_or(0, |a| a.0),
        attention_dim: attention.map_or(0, |a| a.1),
    }
}

/// Heads and head width of a fixture with an `attention` section (`wavenet_gated_attention`,
/// `../shared/peers/torch_attention.py`), after checking that its other settings are the ones
/// etude's attention has: key shift 1, scale 1/sqrt(D), one stack, no dropout. None without one.
fn attention_config(f: &Fixture) -> Option<(usize, usize)> {
    let a = &f.json["attention"];
    if a.is_null() {
        return None;
    }
    let get = |k: &str| a[k].as_f64().unwrap_or_else(|| panic!("{}: attention.{k}", f.name));
    let (heads, dim) = (get("heads") as usize, get("dim") as usize);
    assert_eq!((get("shift"), get("stacks"), get("dropout")), (1.0, 1.0, 0.0), "{}: shift, stacks, dropout", f.name);
    assert!((get("scale") - 1.0 / (dim as f64).sqrt()).abs() < 1e-12, "{}: scale", f.name);
    Some((heads, dim))
}

pub fn run_simple<B: Backend>(b: &B, name: &str) {
    let f = Fixture::load(name);
    // max_batch larger than the fixture's batch: the arena must serve smaller batches.
    let mut m = Wavenet::new(b, &simple_config(&f), dim(&f, "B") + 3, &mut Rng::new(1));
    check_model(b, &mut m, &f);
}

pub fn run_gated<B: Backend>(b: &B, name: &str) {
    let f = Fixture::load(name);
    let mut m = WavenetGated::new(b, &gated_config(&f), dim(&f, "B") + 3, &mut Rng::new(1));
    check_model(b, &mut m, &f);
}

/// A fixed periodic token stream over `vocab` tokens (period 11, with repeated tokens so a model
/// needs context, not just the last token, to predict the next one).
pub fn periodic_stream(vocab: usize, len: usize) -> Vec<u32> {
    const PATTERN: [u32; 11] = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5];
    (0..len).map(|i| PATTERN[i % PATTERN.len()] % vocab as u32).collect()
}

/// Trains `m` for `steps` Adam steps (learning rate `lr`, no clipping) on windows of `batch` drawn with a
/// seeded Rng from [`periodic_stream`], and returns the mean loss of every step.
pub fn train<B: Backend, M: Model<B>>(b: &B, m: &mut M, batch: usize, steps: usize, seed: u64, lr: f32) -> Vec<f32> {
    let (t, v) = (m.window(), m.vocab());
    let stream = periodic_stream(v, 200);
    let rows = m.target_rows(batch);
    let mut rng = Rng::new(seed);
    let mut x = b.alloc_ids(batch * t);
    let mut y = b.alloc_ids(rows);
    let mut dlogits = b.alloc(rows * v);
    let mut adam = Adam::new(b, m.params(), AdamParams { lr, ..AdamParams::default() }, 0.0);
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for _ in 0..batch {
            let s = rng.below(stream.len() - t);
            xs.extend_from_slice(&stream[s..s + t]);
            match m.targets() {
                etude::data::dataset::Targets::Last => ys.push(stream[s + t]),
                etude::data::dataset::Targets::Every => ys.extend_from_slice(&stream[s + 1..s + t + 1]),
            }
        }
        b.write_ids(&mut x, &xs);
        b.write_ids(&mut y, &ys);
        zero_grads(b, m.params_mut());
        losses.push(loss_of(b, m, &x, &y, &mut dlogits, batch) as f32);
        m.backward(b, &x, &dlogits, batch);
        adam.step(b, m.params_mut());
    }
    losses
}

/// Small simple-WaveNet sizes for training tests.
pub fn small_simple() -> WavenetConfig {
    WavenetConfig { vocab: 12, window: 16, embed: 8, channels: 8, kernel: 3, layers: 4, dense: 16 }
}

/// Small gated-WaveNet sizes for training tests.
pub fn small_gated() -> GatedConfig {
    GatedConfig { vocab: 12, window: 16, embed: 8, residual: 8, skip: 16, kernel: 2, layers: 4, stacks: 1, attention: 0, attention_dim: 0 }
}

/// Whether the model's logits for 8 different windows of the periodic stream differ between
/// windows (a dead bottleneck makes every row equal). Runs one forward pass on batch 8.
pub fn input_dependent<B: Backend, M: Model<B>>(b: &B, m: &mut M) -> bool {
    let (t, v) = (m.window(), m.vocab());
    let stream = periodic_stream(v, 8 * 5 + t);
    let xs: Vec<u32> = (0..8).flat_map(|i| stream[i * 5..i * 5 + t].to_vec()).collect();
    let mut x = b.alloc_ids(8 * t);
    b.write_ids(&mut x, &xs);
    m.forward(b, &x, 8);
    let rows = m.target_rows(8);
    let row_len = rows / 8 * v;
    let l = b.read(&m.logits().buf, rows * v);
    l.chunks(row_len).any(|r| r != &l[..row_len])
}

/// The Transformer fixture's sizes (`hyper`: d, H, F, L; the window is T).
pub fn transformer_config(f: &Fixture) -> etude::model::transformer::TransformerConfig {
    let h = |k: &str| hyper(f, k);
    etude::model::transformer::TransformerConfig { vocab: dim(f, "V"), window: dim(f, "T"), width: h("d"), heads: h("H"), ff: h("F"), layers: h("L") }
}

/// The same training run (same initial weights, same batches) on both backends. They round
/// differently (summation order, fma, exp/tanh ulps) and training can amplify that, so the bound
/// grows with the step: 2e-5 at first (f32 rounding of a loss of ~2.5 through sums of a few
/// hundred terms is ~1e-6) plus 2e-7 per step, 8e-5 by step 300. Measured on lavapipe: at most
/// 4.4e-7 over the 300 steps. A wrong kernel is off by far more at the first step.
pub fn assert_curves_agree(name: &str, cpu: &[f32], gpu: &[f32]) {
    let mut worst = 0.0f32;
    for (i, (&c, &g)) in cpu.iter().zip(gpu).enumerate() {
        let tol = 2e-5 + 2e-7 * i as f32;
        assert!((c - g).abs() <= tol, "{name}: step {i}: cpu loss {c}, gpu loss {g} (tolerance {tol})");
        worst = worst.max((c - g).abs());
    }
    eprintln!("{name}: {} steps, cpu {} -> {}, largest difference {worst:e}", cpu.len(), cpu[0], cpu[cpu.len() - 1]);
}

