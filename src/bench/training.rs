//! Whole training steps timed ([`train`]) and the device time of each kernel of one step
//! ([`step_profile`]).

use crate::engine::gpu::by_kernel;
use crate::engine::{Adam, AdamParams};
use crate::model::any::{AnyModel, ModelConfig, Sizes};
use crate::data::dataset::Targets;
use crate::model::Model;
use crate::rng::Rng;
use crate::model::step::Stepper;
use serde::Serialize;
use std::time::Instant;

use super::{peak_rss_mib, round, summary, BenchBackend, CpuWatch};

/// What [`train`] measures.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// A name of `crate::model::any::MODEL_NAMES`.
    pub model: String,
    pub batch: usize,
    pub window: usize,
    pub vocab: usize,
    /// Timed steps (at least 1).
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
    pub seed: u64,
    /// wavenet-gated: attention heads and their width, as `etude train --attention H
    /// --attention-dim D` (None: no attention layer, the peers' plain gated WaveNet; the width
    /// defaults to 32 with heads). Refused on the other models.
    pub attention: Option<usize>,
    pub attention_dim: Option<usize>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            model: "lstm".into(),
            batch: 128,
            window: 128,
            vocab: 300,
            steps: 20,
            warmup: 5,
            seed: 0,
            attention: None,
            attention_dim: None,
        }
    }
}

impl TrainOptions {
    /// The model: default sizes, with the attention options.
    fn config(&self) -> Result<ModelConfig, String> {
        let sizes = Sizes { attention: self.attention, attention_dim: self.attention_dim, ..Sizes::default() };
        ModelConfig::from_name(&self.model, self.vocab, self.window, &sizes)
    }
}

/// One training measurement; field names follow `torch_bench.py` where they mean the same.
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    pub framework: &'static str,
    pub kind: &'static str,
    pub model: String,
    pub backend: &'static str,
    pub device: String,
    /// Storage of weights and activations: "f32" or "f16".
    pub precision: &'static str,
    #[serde(rename = "V")]
    pub vocab: usize,
    #[serde(rename = "B")]
    pub batch: usize,
    #[serde(rename = "T")]
    pub window: usize,
    /// Attention heads and their width (wavenet-gated with `--attention`; absent without).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_heads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_dim: Option<usize>,
    pub params: usize,
    pub warmup: usize,
    pub steps: usize,
    pub step_ms_median: f64,
    pub step_ms_min: f64,
    pub step_ms_max: f64,
    pub windows_per_s: f64,
    pub targets_per_s: f64,
    pub input_tokens_per_s: f64,
    pub fwd_flop_per_window: u64,
    pub fwd_bwd_flop_per_window: u64,
    pub achieved_gflops: f64,
    pub loss_first: f64,
    pub loss_last: f64,
    pub peak_rss_mib: Option<f64>,
    /// This process's share of all cores' time during the timed steps.
    pub self_cpu_frac: Option<f64>,
    /// Everybody else's share (0 = the machine was ours): compare timings only when it is small.
    pub other_cpu_frac: Option<f64>,
    pub dispatches_per_step: Option<f64>,
    pub submissions_per_step: Option<f64>,
}

/// `n` windows of `window + 1` seeded random tokens, split into inputs `[n * window]` and targets
/// (`[n]`: the token after each window, or `[n * window]`: the token after each position).
pub fn random_batch(rng: &mut Rng, n: usize, window: usize, vocab: usize, targets: Targets) -> (Vec<u32>, Vec<u32>) {
    let mut x = Vec::with_capacity(n * window);
    let mut y = Vec::new();
    for _ in 0..n {
        let s: Vec<u32> = (0..=window).map(|_| rng.below(vocab) as u32).collect();
        x.extend_from_slice(&s[..window]);
        match targets {
            Targets::Last => y.push(s[window]),
            Targets::Every => y.extend_from_slice(&s[1..]),
        }
    }
    (x, y)
}

/// Times full training steps of `opts.model` on `b` (see the module doc).
pub fn train<B: BenchBackend>(b: &B, opts: &TrainOptions) -> Result<TrainReport, String> {
    if opts.batch == 0 || opts.window == 0 || opts.vocab < 2 || opts.steps == 0 {
        return Err("bench train: batch, window and steps must be at least 1 and vocab at least 2".into());
    }
    let cfg = opts.config()?;
    let heads = match &cfg {
        ModelConfig::WavenetGated(c) if c.attention > 0 => Some((c.attention, c.attention_dim)),
        _ => None,
    };
    let mut rng = Rng::new(opts.seed);
    let mut model = AnyModel::new(b, &cfg, opts.batch, opts.window, &mut rng)?;
    let params: usize = model.params().iter().map(|p| p.value.len()).sum();
    let mut adam = Adam::new(b, model.params(), AdamParams::default(), 0.0);
    let mut stepper = Stepper::new(b, &model, opts.batch);
    let batches: Vec<(Vec<u32>, Vec<u32>)> =
        (0..4).map(|_| random_batch(&mut rng, opts.batch, opts.window, opts.vocab, cfg.targets())).collect();

    let mut times = Vec::with_capacity(opts.steps);
    let mut losses = Vec::with_capacity(opts.warmup + opts.steps);
    let mut counted = (0u64, 0u64);
    let mut watch = None;
    for i in 0..opts.warmup + opts.steps {
        if i == opts.warmup {
            watch = CpuWatch::start();
        }
        let (x, y) = &batches[i % batches.len()];
        let before = b.counters();
        let t0 = Instant::now();
        stepper.train(b, &mut model, &mut adam, x, y);
        let loss = stepper.last_batch_loss(b);
        let dt = t0.elapsed().as_secs_f64();
        losses.push(loss);
        if i >= opts.warmup {
            times.push(dt);
            if let (Some(a), Some(z)) = (before, b.counters()) {
                counted.0 += z.0 - a.0;
                counted.1 += z.1 - a.1;
            }
        }
    }
    let load = watch.and_then(|w| w.fractions());
    let (med, min, max) = summary(&times);
    let fwd_flop = 2 * cfg.forward_macs(opts.window);
    let targets = model.target_rows(opts.batch) as f64;
    let per_step = |n: u64| b.counters().map(|_| round(n as f64 / opts.steps as f64, 2));
    Ok(TrainReport {
        framework: "etude",
        kind: "train",
        model: opts.model.clone(),
        backend: b.kind(),
        device: b.device(),
        precision: b.precision(),
        vocab: opts.vocab,
        batch: opts.batch,
        window: opts.window,
        attention_heads: heads.map(|h| h.0),
        attention_dim: heads.map(|h| h.1),
        params,
        warmup: opts.warmup,
        steps: opts.steps,
        step_ms_median: round(med * 1e3, 2),
        step_ms_min: round(min * 1e3, 2),
        step_ms_max: round(max * 1e3, 2),
        windows_per_s: round(opts.batch as f64 / med, 2),
        targets_per_s: round(targets / med, 1),
        input_tokens_per_s: round((opts.batch * opts.window) as f64 / med, 1),
        fwd_flop_per_window: fwd_flop,
        fwd_bwd_flop_per_window: 3 * fwd_flop,
        achieved_gflops: round(3.0 * fwd_flop as f64 * opts.batch as f64 / med / 1e9, 2),
        loss_first: round(losses[0], 4),
        loss_last: round(losses[losses.len() - 1], 4),
        peak_rss_mib: peak_rss_mib(),
        self_cpu_frac: load.map(|l| l.0),
        other_cpu_frac: load.map(|l| l.1),
        dispatches_per_step: per_step(counted.0),
        submissions_per_step: per_step(counted.1),
    })
}

/// One kernel's share of a training step's device time ([`step_profile`]).
#[derive(Clone, Debug, Serialize)]
pub struct StepKernelReport {
    pub framework: &'static str,
    pub kind: &'static str,
    pub model: String,
    pub device: String,
    #[serde(rename = "B")]
    pub batch: usize,
    #[serde(rename = "T")]
    pub window: usize,
    /// `shaders/SHADER.wgsl`, entry point `entry`; "total" / "all" for the whole step.
    pub shader: &'static str,
    pub entry: &'static str,
    pub dispatches_per_step: f64,
    /// Summed device time of this kernel's dispatches per step.
    pub gpu_ms_per_step: f64,
    /// Fraction of the step's device time.
    pub share: f64,
    /// Host clock per profiled step (the "total" line only; profiling adds a wait per submission).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_ms_per_step: Option<f64>,
}

/// Device time per kernel of `opts.model`'s training step on `b` (timestamp queries): `warmup`
/// unprofiled steps, then `steps` profiled ones; the kernels largest first, then a "total" line.
/// An error where `b` has no device timing.
pub fn step_profile<B: BenchBackend>(b: &B, opts: &TrainOptions) -> Result<Vec<StepKernelReport>, String> {
    if opts.batch == 0 || opts.window == 0 || opts.vocab < 2 || opts.steps == 0 {
        return Err("step profile: batch, window and steps must be at least 1 and vocab at least 2".into());
    }
    let cfg = opts.config()?;
    let mut rng = Rng::new(opts.seed);
    let mut model = AnyModel::new(b, &cfg, opts.batch, opts.window, &mut rng)?;
    let mut adam = Adam::new(b, model.params(), AdamParams::default(), 0.0);
    let mut stepper = Stepper::new(b, &model, opts.batch);
    let batches: Vec<(Vec<u32>, Vec<u32>)> =
        (0..4).map(|_| random_batch(&mut rng, opts.batch, opts.window, opts.vocab, cfg.targets())).collect();
    for i in 0..opts.warmup {
        let (x, y) = &batches[i % batches.len()];
        stepper.train(b, &mut model, &mut adam, x, y);
        stepper.last_batch_loss(b);
    }
    b.set_device_timing(true)?;
    let _ = b.take_device_times();
    let t0 = Instant::now();
    for i in opts.warmup..opts.warmup + opts.steps {
        let (x, y) = &batches[i % batches.len()];
        stepper.train(b, &mut model, &mut adam, x, y);
        stepper.last_batch_loss(b);
    }
    let wall_ms = t0.elapsed().as_secs_f64() * 1e3 / opts.steps as f64;
    let times = b.take_device_times();
    b.set_device_timing(false)?;
    let steps = opts.steps as f64;
    let total_ns: f64 = times.iter().map(|d| d.ns).sum();
    let line = |shader, entry, count: usize, ns: f64, wall| StepKernelReport {
        framework: "etude",
        kind: "step_profile",
        model: opts.model.clone(),
        device: b.device(),
        batch: opts.batch,
        window: opts.window,
        shader,
        entry,
        dispatches_per_step: round(count as f64 / steps, 2),
        gpu_ms_per_step: round(ns / 1e6 / steps, 3),
        share: round(if total_ns > 0.0 { ns / total_ns } else { 0.0 }, 4),
        wall_ms_per_step: wall,
    };
    let mut out: Vec<StepKernelReport> =
        by_kernel(&times).into_iter().map(|(s, e, count, ns)| line(s, e, count, ns, None)).collect();
    out.push(line("total", "all", times.len(), total_ns, Some(round(wall_ms, 2))));
    Ok(out)
}

/// A human-readable line for a training report.
pub fn format_train(r: &TrainReport) -> String {
    let model = match (r.attention_heads, r.attention_dim) {
        (Some(h), Some(d)) => format!("{} + attention {h}x{d}", r.model),
        _ => r.model.clone(),
    };
    let mut s = format!(
        "{:<14} {} ({}) {} B={} T={} V={}: step {:.1} ms median (min {:.1}, max {:.1}), {:.1} windows/s, {:.0} targets/s, {:.1} GFLOP/s, loss {:.3} -> {:.3}",
        model,
        r.backend,
        r.device,
        r.precision,
        r.batch,
        r.window,
        r.vocab,
        r.step_ms_median,
        r.step_ms_min,
        r.step_ms_max,
        r.windows_per_s,
        r.targets_per_s,
        r.achieved_gflops,
        r.loss_first,
        r.loss_last
    );
    if let Some(m) = r.peak_rss_mib {
        s += &format!(", peak RSS {m:.0} MiB");
    }
    if let Some(o) = r.other_cpu_frac {
        s += &format!(", other processes {:.0}% of the CPU", 100.0 * o);
    }
    if let (Some(d), Some(sub)) = (r.dispatches_per_step, r.submissions_per_step) {
        s += &format!(", {d} dispatches and {sub} submissions per step");
    }
    s
}

/// A human-readable line for one kernel of a step profile.
pub fn format_step_kernel(r: &StepKernelReport) -> String {
    format!(
        "{:<10} {:<32} {:6.1} dispatches {:10.2} ms/step {:5.1}%",
        r.model,
        format!("{}:{}", r.shader, r.entry),
        r.dispatches_per_step,
        r.gpu_ms_per_step,
        100.0 * r.share
    )
}
