//! Benchmark suites (issue 7), shared by `etude bench` and `cargo bench`.
//!
//! * [`train`]: full training steps (ids upload, zero-grad, forward, fused softmax cross-entropy,
//!   backward, Adam, then a read of the batch's loss so that the time includes all the work) of
//!   one model on seeded random tokens. The protocol is that of `../shared/peers/torch_bench.py`:
//!   4 fixed batches cycled, `warmup` untimed steps, then the median, min and max of `steps` timed
//!   steps; Adam lr 1e-3 without gradient clipping.
//! * [`generate`]: milliseconds per generated token at batch 1 (50 tokens after a 128-token prime,
//!   sampling from the full softmax included, 1 warm-up pass + 3 timed passes), incremental
//!   (carried LSTM state, the gated WaveNet's queues) and sliding window (rerun the last window).
//! * [`kernels`]: each backend operation alone at the models' real shapes.
//!
//! Throughput conventions (those of `../shared/peers/modelspec.py`): FLOPs count the
//! multiply-adds of matrix products and convolutions only (2 FLOP each); forward + backward is 3x
//! the forward. `targets_per_s` counts supervised next-token targets (one per window for the
//! many-to-one models, one per position for the many-to-many ones).
//!
//! * [`step_profile`]: the device time of each kernel of a training step (timestamp queries).
//!
//! GPU wall timings use the host clock around the work plus a submit and a one-value read, so they
//! include the submission and the wait. Where the adapter has timestamp queries, [`kernels`] also
//! reports each op's device time (`gpu_ms`), measured in separate calls with profiling on.

use crate::engine::cpu::CpuBackend;
use crate::engine::gpu::{by_kernel, DispatchTime, GpuBackend};
use crate::engine::{Adam, AdamParams, Backend, Conv1d, Lstm, MatMul};
use crate::engine::{AdamStep, LstmSaved, LstmSeqs, Xent};
use crate::generate::{Generator, Mode};
use crate::model::any::{AnyModel, ModelConfig, Sizes};
use crate::data::dataset::Targets;
use crate::model::Model;
use crate::rng::Rng;
use crate::generate::sample::{sample, SampleOptions};
use crate::model::step::Stepper;
use serde::Serialize;
use std::time::Instant;

/// What a benchmark needs from a backend beyond [`Backend`]: a device name and, on the GPU, the
/// counters of recorded dispatches and submissions.
pub trait BenchBackend: Backend {
    /// "cpu" or "gpu".
    fn kind(&self) -> &'static str;
    /// The device: CPU threads, or the GPU adapter's name.
    fn device(&self) -> String;
    /// (dispatches, submissions) recorded so far, where the backend counts them.
    fn counters(&self) -> Option<(u64, u64)>;
    /// How weights and activations are stored: "f32" or "f16".
    fn precision(&self) -> &'static str;
    /// Switches per-dispatch device timing (timestamp queries) on or off; an error saying why
    /// where the backend has none. Off by default.
    fn set_device_timing(&self, on: bool) -> Result<(), String> {
        let _ = on;
        Err(format!("{} has no device timestamps", self.kind()))
    }
    /// The device time of every dispatch submitted since timing was switched on or since the last
    /// call (recorded work is submitted first).
    fn take_device_times(&self) -> Vec<DispatchTime> {
        Vec::new()
    }
}

impl BenchBackend for CpuBackend {
    fn kind(&self) -> &'static str {
        "cpu"
    }
    fn device(&self) -> String {
        self.name()
    }
    fn counters(&self) -> Option<(u64, u64)> {
        None
    }
    fn precision(&self) -> &'static str {
        "f32"
    }
}

impl BenchBackend for GpuBackend {
    fn kind(&self) -> &'static str {
        "gpu"
    }
    fn device(&self) -> String {
        self.adapter_info().name.clone()
    }
    fn counters(&self) -> Option<(u64, u64)> {
        Some(self.stats())
    }
    fn precision(&self) -> &'static str {
        GpuBackend::precision(self).name()
    }
    fn set_device_timing(&self, on: bool) -> Result<(), String> {
        self.set_profiling(on)
    }
    fn take_device_times(&self) -> Vec<DispatchTime> {
        self.take_profile()
    }
}

/// Peak resident memory of this process so far (`VmHWM` of `/proc/self/status`), in MiB; `None`
/// where that file does not exist (not Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some((kib / 1024.0 * 10.0).round() / 10.0)
}

/// How busy the machine was while a measurement ran: this process's CPU time and everybody
/// else's, from `/proc/self/stat` and `/proc/stat` (Linux; `None` elsewhere). Timings taken while
/// other processes used the cores are not comparable with an idle machine's.
#[derive(Clone, Copy, Debug)]
pub struct CpuWatch {
    start: Instant,
    self_ticks: u64,
    busy_ticks: u64,
}

/// Clock ticks per second of `/proc` (USER_HZ, 100 on every Linux of the last decades).
const TICKS_PER_S: f64 = 100.0;

fn self_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here (0-based, from state).
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait.
    Some(v.iter().take(8).sum::<u64>() - v.get(3)? - v.get(4)?)
}

impl CpuWatch {
    pub fn start() -> Option<CpuWatch> {
        Some(CpuWatch { start: Instant::now(), self_ticks: self_ticks()?, busy_ticks: busy_ticks()? })
    }

    /// `(self_cpu_frac, other_cpu_frac)` since the start: the CPU time of this process and of
    /// all others, as fractions of all cores' time (torch_bench.py's fields of the same names).
    pub fn fractions(&self) -> Option<(f64, f64)> {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        let capacity = self.start.elapsed().as_secs_f64() * TICKS_PER_S * cores;
        let own = self_ticks()?.saturating_sub(self.self_ticks) as f64;
        let all = busy_ticks()?.saturating_sub(self.busy_ticks) as f64;
        (capacity > 0.0).then(|| (round((own / capacity).min(1.0), 3), round(((all - own).max(0.0) / capacity).min(1.0), 3)))
    }
}

/// Median, min and max of some timings.
fn summary(times: &[f64]) -> (f64, f64, f64) {
    let mut s = times.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (median, s.first().copied().unwrap_or(f64::NAN), s.last().copied().unwrap_or(f64::NAN))
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

// ---- training ----------------------------------------------------------------------------------

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
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions { model: "lstm".into(), batch: 128, window: 128, vocab: 300, steps: 20, warmup: 5, seed: 0 }
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
    let cfg = ModelConfig::from_name(&opts.model, opts.vocab, opts.window, &Sizes::default())?;
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

// ---- generation --------------------------------------------------------------------------------

/// What [`generate`] measures.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub model: String,
    pub window: usize,
    pub vocab: usize,
    /// Tokens generated per pass.
    pub tokens: usize,
    /// Timed passes (one untimed warm-up pass comes first).
    pub reps: usize,
    pub seed: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { model: "lstm".into(), window: 128, vocab: 300, tokens: 50, reps: 3, seed: 0 }
    }
}

/// One generation measurement (`mode`: "incremental" or "sliding_window").
#[derive(Clone, Debug, Serialize)]
pub struct GenerateReport {
    pub framework: &'static str,
    pub kind: &'static str,
    pub model: String,
    pub backend: &'static str,
    pub device: String,
    pub mode: &'static str,
    pub batch: usize,
    pub window: usize,
    pub tokens: usize,
    pub reps: usize,
    pub ms_per_token_mean: f64,
    pub ms_per_token_median: f64,
    pub tokens_per_s: f64,
    /// Feeding the 128-token prime (incremental mode only; sliding window has nothing to prime).
    pub prime_ms_median: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub other_cpu_frac: Option<f64>,
}

/// Times generation with `opts.model` (randomly initialised: the time does not depend on the
/// weights) in every mode the model has: incremental where it exists, then sliding window.
pub fn generate<B: BenchBackend>(b: &B, opts: &GenerateOptions) -> Result<Vec<GenerateReport>, String> {
    if opts.window == 0 || opts.vocab < 2 || opts.tokens == 0 || opts.reps == 0 {
        return Err("bench generate: window, tokens and reps must be at least 1 and vocab at least 2".into());
    }
    let cfg = ModelConfig::from_name(&opts.model, opts.vocab, opts.window, &Sizes::default())?;
    let mut out = Vec::new();
    for mode in [Mode::Incremental, Mode::SlidingWindow] {
        if mode.resolve(&cfg).is_err() {
            continue;
        }
        let mut rng = Rng::new(opts.seed);
        let model = AnyModel::new(b, &cfg, 1, opts.window, &mut rng)?;
        let mut gen = Generator::from_model(b, model, &cfg, mode, opts.window)?;
        let prime: Vec<u32> = (0..opts.window).map(|_| rng.below(opts.vocab) as u32).collect();
        let sampling = SampleOptions::default();
        let (mut per_token, mut prime_ms) = (Vec::new(), Vec::new());
        let mut watch = None;
        for rep in 0..=opts.reps {
            if rep == 1 {
                watch = CpuWatch::start();
            }
            let t0 = Instant::now();
            gen.prime(&prime)?;
            if rep > 0 {
                prime_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            let mut history = prime.clone();
            for _ in 0..opts.tokens {
                let t0 = Instant::now();
                let logits = gen.next_logits(&history);
                let id = sample(&logits, &sampling, &mut rng) as u32;
                history.push(id);
                gen.push(id)?;
                if rep > 0 {
                    per_token.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        let mean = per_token.iter().sum::<f64>() / per_token.len() as f64;
        let (median, _, _) = summary(&per_token);
        let incremental = mode == Mode::Incremental;
        out.push(GenerateReport {
            framework: "etude",
            kind: "generate",
            model: opts.model.clone(),
            backend: b.kind(),
            device: b.device(),
            mode: if incremental { "incremental" } else { "sliding_window" },
            batch: 1,
            window: opts.window,
            tokens: opts.tokens,
            reps: opts.reps,
            ms_per_token_mean: round(mean, 3),
            ms_per_token_median: round(median, 3),
            tokens_per_s: round(1e3 / mean, 1),
            prime_ms_median: incremental.then(|| round(summary(&prime_ms).0, 2)),
            peak_rss_mib: peak_rss_mib(),
            other_cpu_frac: watch.and_then(|w| w.fractions()).map(|l| l.1),
        });
    }
    Ok(out)
}

// ---- kernels -----------------------------------------------------------------------------------

/// One operation's timing.
#[derive(Clone, Debug, Serialize)]
pub struct KernelReport {
    pub framework: &'static str,
    pub kind: &'static str,
    pub backend: &'static str,
    pub device: String,
    /// Operation and shape, e.g. "matmul lstm-seq fc2 fwd [16384x256]x[256x300]".
    pub op: String,
    /// Host clock per call, submission and wait included.
    pub ms_median: f64,
    pub ms_min: f64,
    /// Device time per call from timestamp queries (the sum over the call's dispatches, median
    /// over samples); absent on the CPU and where the adapter lacks `TIMESTAMP_QUERY`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_ms: Option<f64>,
    /// Multiply-add work (2 FLOP each) per call, when the op is compute-bound (per wall time).
    pub gflops: Option<f64>,
    /// Bytes read + written per call / time, when the op is memory-bound (per wall time).
    pub gbytes_per_s: Option<f64>,
}

/// A buffer of `len` values in [-0.5, 0.5).
fn filled<B: Backend>(b: &B, len: usize, rng: &mut Rng) -> B::Buf {
    let data: Vec<f32> = (0..len).map(|_| rng.uniform_range(-0.5, 0.5)).collect();
    let mut buf = b.alloc(len);
    b.write(&mut buf, &data);
    buf
}

/// Times `f` (after one warm-up call): each sample runs `f` `inner` times then waits for the
/// backend (a one-value read); returns the median and min milliseconds per call.
fn time_op<B: Backend>(b: &B, sync: &B::Buf, samples: usize, inner: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    b.read(sync, 1);
    let times: Vec<f64> = (0..samples)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..inner {
                f();
            }
            b.read(sync, 1);
            t0.elapsed().as_secs_f64() * 1e3 / inner as f64
        })
        .collect();
    let (med, min, _) = summary(&times);
    (med, min)
}

/// Device milliseconds per call of `f` from timestamp queries: `samples` calls, each alone in a
/// submission, the median of their summed dispatch times. `None` where `b` has no device timing.
/// Run after [`time_op`] (which warmed `f` up): profiling makes every submission wait.
fn device_time_op<B: BenchBackend>(b: &B, sync: &B::Buf, samples: usize, mut f: impl FnMut()) -> Option<f64> {
    b.set_device_timing(true).ok()?;
    let _ = b.take_device_times();
    let times: Vec<f64> = (0..samples)
        .map(|_| {
            f();
            b.flush();
            b.take_device_times().iter().map(|d| d.ns).sum::<f64>() / 1e6
        })
        .collect();
    b.read(sync, 1);
    let _ = b.set_device_timing(false);
    Some(summary(&times).0)
}

/// How long [`kernels`] spends per operation: `(samples, calls per sample)`, and which ones run.
#[derive(Clone, Debug)]
pub struct KernelOptions {
    pub samples: usize,
    pub inner: usize,
    /// Only the operations whose label contains this (case-insensitive).
    pub only: Option<String>,
    /// Also measure the device time of each op with timestamp queries, where the backend has them
    /// (a few extra calls per op, after the wall-clock samples).
    pub device_time: bool,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions { samples: 5, inner: 2, only: None, device_time: true }
    }
}

/// The matrix products of the models' dense layers and LSTM input projections:
/// (label, m, k, n) of `Y [m, n] = X [m, k] W^T` with `W [n, k]`.
const DENSE_SHAPES: &[(&str, usize, usize, usize)] = &[
    ("lstm-seq w_ih l0", 16384, 100, 512),
    ("lstm-seq w_ih l1", 16384, 128, 512),
    ("lstm-seq fc1", 16384, 128, 256),
    ("lstm-seq fc2", 16384, 256, 300),
    ("lstm fc1", 128, 128, 256),
    ("lstm fc2", 128, 256, 300),
    ("wavenet fc1", 128, 128, 128),
];

/// Runs the operations of [`kernels`] and collects their reports.
struct KernelTimer<'a, B: BenchBackend> {
    b: &'a B,
    sync: B::Buf,
    opts: KernelOptions,
    out: Vec<KernelReport>,
}

impl<B: BenchBackend> KernelTimer<'_, B> {
    /// Times `f` as the operation `op` (unless filtered out), `flop` / `bytes` per call.
    fn op(&mut self, op: String, flop: Option<f64>, bytes: Option<f64>, mut f: impl FnMut()) {
        if let Some(only) = &self.opts.only {
            if !op.to_lowercase().contains(&only.to_lowercase()) {
                return;
            }
        }
        let (s, inner) = (self.opts.samples.max(1), self.opts.inner.max(1));
        let (med, min) = time_op(self.b, &self.sync, s, inner, &mut f);
        let gpu_ms = if self.opts.device_time { device_time_op(self.b, &self.sync, s.min(3), &mut f) } else { None };
        self.out.push(KernelReport {
            framework: "etude",
            kind: "kernel",
            backend: self.b.kind(),
            device: self.b.device(),
            op,
            ms_median: round(med, 3),
            ms_min: round(min, 3),
            gpu_ms: gpu_ms.map(|g| round(g, 3)),
            gflops: flop.map(|f| round(f / med / 1e6, 2)),
            gbytes_per_s: bytes.map(|by| round(by / med / 1e6, 2)),
        });
    }
}

/// Times every operation at the models' shapes on `b`.
pub fn kernels<B: BenchBackend>(b: &B, opts: KernelOptions) -> Vec<KernelReport> {
    let mut rng = Rng::new(7);
    let mut kt = KernelTimer { b, sync: b.alloc(1), opts, out: Vec::new() };

    // Dense layers: forward, backward to the input, backward to the weight.
    for &(label, m, k, n) in DENSE_SHAPES {
        let x = filled(b, m * k, &mut rng);
        let w = filled(b, n * k, &mut rng);
        let dy = filled(b, m * n, &mut rng);
        let mut y = b.alloc(m * n);
        let mut dx = b.alloc(m * k);
        let mut dw = b.alloc(n * k);
        let flop = Some(2.0 * (m * k * n) as f64);
        let fwd = MatMul { m, k, n, trans_a: false, trans_b: true, accumulate: false };
        kt.op(format!("matmul {label} fwd [{m}x{k}]x[{k}x{n}]"), flop, None, || b.matmul(&x, &w, &mut y, fwd));
        let bwd_x = MatMul { m, k: n, n: k, trans_a: false, trans_b: false, accumulate: false };
        kt.op(format!("matmul {label} bwd-input"), flop, None, || b.matmul(&dy, &w, &mut dx, bwd_x));
        let bwd_w = MatMul { m: n, k: m, n: k, trans_a: true, trans_b: false, accumulate: true };
        kt.op(format!("matmul {label} bwd-weight"), flop, None, || b.matmul(&dy, &x, &mut dw, bwd_w));
    }

    // One LSTM layer's recurrence at batch 128, T 128, H 128 (the input projection is above).
    {
        let l = Lstm { batch: 128, time: 128, hidden: 128 };
        let (bt, h) = (l.batch * l.time, l.hidden);
        let xw = filled(b, bt * 4 * h, &mut rng);
        let w_hh = filled(b, 4 * h * h, &mut rng);
        let h0 = b.alloc(l.batch * h);
        let c0 = b.alloc(l.batch * h);
        let dhs = filled(b, bt * h, &mut rng);
        let (mut hs, mut cs, mut gates) = (b.alloc(bt * h), b.alloc(bt * h), b.alloc(bt * 4 * h));
        let (mut dxw, mut dw_hh) = (b.alloc(bt * 4 * h), b.alloc(4 * h * h));
        // Recurrent product only: 4H x H multiply-adds per row and step; backward twice that.
        let flop = 2.0 * (bt * 4 * h * h) as f64;
        kt.op("lstm_fwd B=128 T=128 H=128".into(), Some(flop), None, || b.lstm_fwd(&xw, &w_hh, &h0, &c0, LstmSeqs { hs: &mut hs, cs: &mut cs, gates: &mut gates }, l));
        kt.op("lstm_bwd B=128 T=128 H=128".into(), Some(2.0 * flop), None, || {
                b.lstm_bwd(&w_hh, LstmSaved { h0: &h0, c0: &c0, seqs: LstmSeqs { hs: &hs, cs: &cs, gates: &gates } }, &dhs, &mut dxw, &mut dw_hh, l)
            });
    }

    // Convolutions of the simple WaveNet (K = 3) and the gated one (K = 2), 64 -> 64 channels.
    for (k, cout, dilation) in [(3, 64, 1), (3, 64, 8), (2, 128, 1)] {
        let c = Conv1d { batch: 128, cin: 64, cout, time: 128, k, dilation };
        let x = filled(b, c.batch * c.cin * c.time, &mut rng);
        let w = filled(b, c.cout * c.cin * c.k, &mut rng);
        let bias = filled(b, c.cout, &mut rng);
        let dy = filled(b, c.batch * c.cout * c.time, &mut rng);
        let mut y = b.alloc(c.batch * c.cout * c.time);
        let mut dx = b.alloc(c.batch * c.cin * c.time);
        let (mut dw, mut db) = (b.alloc(c.cout * c.cin * c.k), b.alloc(c.cout));
        // Counted at full length T, as modelspec.py does.
        let flop = Some(2.0 * (c.batch * c.cout * c.cin * c.k * c.time) as f64);
        let shape = format!("B=128 {}->{} T=128 K={k} d={dilation}", c.cin, c.cout);
        kt.op(format!("conv1d_fwd {shape}"), flop, None, || b.conv1d_fwd(&x, &w, &bias, &mut y, c));
        kt.op(format!("conv1d_bwd_input {shape}"), flop, None, || b.conv1d_bwd_input(&dy, &w, &mut dx, c, false));
        kt.op(format!("conv1d_bwd_weight {shape}"), flop, None, || b.conv1d_bwd_weight(&x, &dy, &mut dw, &mut db, c));
    }

    // Bias gradients: of the LSTM input projection ([B*T, 4H], inner 1) and of a conv ([B, C, T]).
    for (label, outer, channels, len) in [("lstm b_ih", 128 * 128, 512, 1), ("conv", 128, 128, 128)] {
        let dy = filled(b, outer * channels * len, &mut rng);
        let mut db = b.alloc(channels);
        kt.op(format!("bias_grad {label} [{outer}, {channels}, {len}]"), None, Some(4.0 * (outer * channels * len) as f64), || b.bias_grad(&dy, &mut db, outer, channels, len));
    }

    // Gated unit of the gated WaveNet: a [128, 128, 128] -> z [128, 64, 128].
    {
        let (batch, r, t) = (128, 64, 128);
        let a = filled(b, batch * 2 * r * t, &mut rng);
        let dz = filled(b, batch * r * t, &mut rng);
        let (mut z, mut da) = (b.alloc(batch * r * t), b.alloc(batch * 2 * r * t));
        let n = (batch * r * t) as f64;
        kt.op("gated_fwd B=128 R=64 T=128".into(), None, Some(12.0 * n), || b.gated_fwd(&a, &mut z, batch, r, t));
        kt.op("gated_bwd B=128 R=64 T=128".into(), None, Some(20.0 * n), || b.gated_bwd(&a, &dz, &mut da, batch, r, t));
    }

    // Loss over every position of a batch: logits [128*128, 300].
    {
        let (n, v) = (128 * 128, 300);
        let logits = filled(b, n * v, &mut rng);
        let ids: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
        let mut targets = b.alloc_ids(n);
        b.write_ids(&mut targets, &ids);
        let (mut dlogits, mut stats) = (b.alloc(n * v), b.alloc(2 * n));
        kt.op(format!("softmax_xent [{n}, {v}]"), None, Some(8.0 * (n * v) as f64), || {
                b.softmax_xent(&logits, &targets, &mut dlogits, &mut stats, Xent { n, v, grad_scale: 1.0 / n as f32 })
            });
    }

    // Embedding of a batch: 16384 ids into rows of 100 from a 300-row table.
    {
        let (n, e, v) = (128 * 128, 100, 300);
        let table = filled(b, v * e, &mut rng);
        let ids: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
        let mut dev_ids = b.alloc_ids(n);
        b.write_ids(&mut dev_ids, &ids);
        let dout = filled(b, n * e, &mut rng);
        let (mut emb, mut dtable) = (b.alloc(n * e), b.alloc(v * e));
        let bytes = Some(8.0 * (n * e) as f64);
        kt.op(format!("embedding_fwd n={n} E={e}"), None, bytes, || b.embedding_fwd(&dev_ids, &table, &mut emb, n, e));
        kt.op(format!("embedding_bwd n={n} E={e}"), None, bytes, || b.embedding_bwd(&dev_ids, &dout, &mut dtable, n, e));
    }

    // Adam over 400k parameters in one tensor: reads p, g, m, v; writes p, m, v.
    {
        let n = 400_000;
        let g = filled(b, n, &mut rng);
        let (mut p, mut m, mut v) = (filled(b, n, &mut rng), b.alloc(n), b.alloc(n));
        let mut scale = b.alloc(1);
        b.write(&mut scale, &[1.0]);
        kt.op(format!("adam n={n}"), None, Some(28.0 * n as f64), || b.adamw(&mut p, &g, &mut m, &mut v, &scale, AdamStep::adam(n, AdamParams::default())));
    }
    kt.out
}

// ---- step profile ------------------------------------------------------------------------------

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
    let cfg = ModelConfig::from_name(&opts.model, opts.vocab, opts.window, &Sizes::default())?;
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
    let mut s = format!(
        "{:<14} {} ({}) {} B={} T={} V={}: step {:.1} ms median (min {:.1}, max {:.1}), {:.1} windows/s, {:.0} targets/s, {:.1} GFLOP/s, loss {:.3} -> {:.3}",
        r.model,
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

/// A human-readable line for a generation report.
pub fn format_generate(r: &GenerateReport) -> String {
    let mut s = format!(
        "{:<14} {} ({}) {:<14} {:.3} ms/token mean ({:.3} median, {:.0} tokens/s)",
        r.model, r.backend, r.device, r.mode, r.ms_per_token_mean, r.ms_per_token_median, r.tokens_per_s
    );
    if let Some(p) = r.prime_ms_median {
        s += &format!(", prime of {} tokens {p:.2} ms", r.window);
    }
    s
}

/// A human-readable line for a kernel report.
pub fn format_kernel(r: &KernelReport) -> String {
    let rate = match (r.gflops, r.gbytes_per_s) {
        (Some(g), _) => format!("{g:8.1} GFLOP/s"),
        (None, Some(g)) => format!("{g:8.1} GB/s"),
        _ => String::new(),
    };
    let gpu = r.gpu_ms.map(|g| format!(", gpu {g:9.3} ms")).unwrap_or_default();
    format!("{:<4} {:<58} {:9.3} ms (min {:9.3}{gpu}) {rate}", r.backend, r.op, r.ms_median, r.ms_min)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_batches_have_the_targets_shape() {
        let mut rng = Rng::new(3);
        let (x, y) = random_batch(&mut rng, 3, 5, 7, Targets::Last);
        assert_eq!((x.len(), y.len()), (15, 3));
        let (x, y) = random_batch(&mut rng, 3, 5, 7, Targets::Every);
        assert_eq!((x.len(), y.len()), (15, 15));
        // Every position's target is the next input token within a window.
        assert_eq!(&x[1..5], &y[..4]);
        assert!(x.iter().chain(&y).all(|&t| t < 7));
    }

    #[test]
    fn summary_gives_median_min_max() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }

    #[test]
    fn a_tiny_train_bench_reports_consistent_numbers() {
        let b = CpuBackend::new();
        let opts = TrainOptions { model: "lstm-seq".into(), batch: 2, window: 8, vocab: 11, steps: 3, warmup: 1, seed: 1 };
        let r = train(&b, &opts).unwrap();
        assert_eq!(r.steps, 3);
        assert!(r.step_ms_min <= r.step_ms_median && r.step_ms_median <= r.step_ms_max);
        // many-to-many: one target per position.
        assert!((r.targets_per_s / r.windows_per_s - 8.0).abs() < 0.1, "{r:?}");
        assert!(r.loss_first.is_finite() && r.loss_first > 0.0);
        assert!(r.dispatches_per_step.is_none());
        let err = train(&b, &TrainOptions { model: "gru".into(), ..opts }).unwrap_err();
        assert!(err.contains("unknown model"), "{err}");
    }

    /// The step profile of a tiny model: every dispatch of a step is counted once per step, the
    /// shares add up to one, and the CPU (no device timestamps) says so instead of reporting.
    #[test]
    fn a_tiny_step_profile_adds_up() {
        let opts = TrainOptions { model: "lstm".into(), batch: 2, window: 8, vocab: 11, steps: 2, warmup: 1, seed: 1 };
        let err = step_profile(&CpuBackend::new(), &opts).unwrap_err();
        assert!(err.contains("no device timestamps"), "{err}");
        let g = GpuBackend::new(None).expect("a GPU adapter (lavapipe is enough)");
        if g.timestamps() == crate::engine::gpu::Timestamps::None {
            assert!(step_profile(&g, &opts).is_err());
            return;
        }
        let before = g.stats().0;
        let rows = step_profile(&g, &opts).unwrap();
        let steps = (opts.warmup + opts.steps) as f64;
        let per_step = (g.stats().0 - before) as f64 / steps;
        let (total, kernels) = rows.split_last().unwrap();
        assert_eq!((total.shader, total.entry), ("total", "all"));
        assert!(total.wall_ms_per_step.is_some() && kernels.iter().all(|r| r.wall_ms_per_step.is_none()));
        assert!((total.dispatches_per_step - per_step).abs() < 1e-9, "{} vs {per_step}", total.dispatches_per_step);
        let counted: f64 = kernels.iter().map(|r| r.dispatches_per_step).sum();
        assert!((counted - per_step).abs() < 1e-9);
        let share: f64 = kernels.iter().map(|r| r.share).sum();
        assert!((share - 1.0).abs() < 1e-3, "shares add up to {share}");
        assert!(kernels.iter().any(|r| r.entry.starts_with("lstm_fwd")), "{rows:?}");
        assert!(kernels.windows(2).all(|w| w[0].gpu_ms_per_step >= w[1].gpu_ms_per_step), "largest first");
    }

    #[test]
    fn a_tiny_generate_bench_covers_the_modes_each_model_has() {
        let b = CpuBackend::new();
        let opts = GenerateOptions { model: "wavenet".into(), window: 8, vocab: 11, tokens: 3, reps: 1, seed: 0 };
        let r = generate(&b, &opts).unwrap();
        assert_eq!(r.iter().map(|r| r.mode).collect::<Vec<_>>(), ["sliding_window"]);
        let r = generate(&b, &GenerateOptions { model: "lstm".into(), ..opts }).unwrap();
        assert_eq!(r.iter().map(|r| r.mode).collect::<Vec<_>>(), ["incremental", "sliding_window"]);
        assert!(r[0].prime_ms_median.is_some() && r[1].prime_ms_median.is_none());
        assert!(r.iter().all(|r| r.ms_per_token_mean > 0.0));
    }
}
