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

mod generation;
mod ops;
mod training;

pub use generation::{format_generate, format_generate_batch, generate, generate_batch, BatchReport, GenerateOptions, GenerateReport};
pub use ops::{format_kernel, kernels, KernelOptions, KernelReport};
pub use training::{format_step_kernel, format_train, random_batch, step_profile, train, StepKernelReport, TrainOptions, TrainReport};

use crate::engine::cpu::CpuBackend;
use crate::engine::gpu::{DispatchTime, GpuBackend};
use crate::engine::Backend;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::Targets;
    use crate::rng::Rng;

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
        let opts = TrainOptions { model: "lstm-seq".into(), batch: 2, window: 8, vocab: 11, steps: 3, warmup: 1, seed: 1, ..TrainOptions::default() };
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
        let opts = TrainOptions { model: "lstm".into(), batch: 2, window: 8, vocab: 11, steps: 2, warmup: 1, seed: 1, ..TrainOptions::default() };
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
        let opts = GenerateOptions { model: "wavenet".into(), window: 8, vocab: 11, tokens: 3, reps: 1, seed: 0, mode: None };
        let r = generate(&b, &opts).unwrap();
        assert_eq!(r.iter().map(|r| r.mode).collect::<Vec<_>>(), ["sliding_window"]);
        let r = generate(&b, &GenerateOptions { model: "lstm".into(), ..opts }).unwrap();
        assert_eq!(r.iter().map(|r| r.mode).collect::<Vec<_>>(), ["incremental", "sliding_window"]);
        assert!(r[0].prime_ms_median.is_some() && r[1].prime_ms_median.is_none());
        assert!(r.iter().all(|r| r.ms_per_token_mean > 0.0));
    }
}

