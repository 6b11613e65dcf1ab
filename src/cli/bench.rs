//! `etude bench`: training throughput, generation latency and per-operation timings
//! (the suites are in `etude::bench`).

use super::backend::{open_engine, BackendChoice, Engine};
use clap::{Args, Subcommand, ValueEnum};
use etude::bench::{self, BenchBackend, GenerateOptions, KernelOptions, TrainOptions};
use etude::engine::gpu::Precision;
use etude::model::any::MODEL_NAMES;
use serde::Serialize;

#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  etude bench train --model lstm --backend cpu                 # batch 128, window 128, V = 300
  etude bench train --model wavenet-gated --steps 10 --json    # one JSON object per line
  etude bench train --model wavenet-gated --attention 4        # the default model's layers (no dropout)
  etude bench generate --model lstm                            # ms per token, incremental and sliding window
  etude bench generate --model transformer --count 64          # 64 pieces one by one against one batch
  etude bench kernels --backend both                           # every op at the models' shapes
  etude bench kernels --backend gpu --only lstm                # the ops whose label contains \"lstm\"
  etude bench kernels --backend gpu --step lstm,lstm-seq       # device time per kernel of a training step

Inputs are seeded random tokens; the protocol is ../shared/peers/torch_bench.py's (see
benches/compare.sh for a side-by-side run with PyTorch).")]
pub struct BenchArgs {
    #[command(subcommand)]
    pub suite: Suite,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Suite {
    /// Full training steps (forward, loss, backward, Adam, loss read back) of one model.
    Train(TrainArgs),
    /// Milliseconds per generated token at batch 1 (50 tokens after a 128-token prime).
    Generate(GenerateArgs),
    /// Each backend operation alone at the models' real shapes.
    Kernels(KernelArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Which {
    Cpu,
    Gpu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WhichOrBoth {
    Cpu,
    Gpu,
    Both,
}

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// lstm, lstm-seq, wavenet, wavenet-gated or transformer (default sizes).
    #[arg(long, value_parser = MODEL_NAMES)]
    pub model: String,
    #[arg(long, value_enum, default_value_t = Which::Cpu)]
    pub backend: Which,
    /// GPU adapter: an index from `etude devices` or part of its name.
    #[arg(long, value_name = "N|NAME")]
    pub device: Option<String>,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long, default_value_t = 128)]
    pub window: usize,
    #[arg(long, default_value_t = 300)]
    pub vocab: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// wavenet-gated: heads of the causal attention layer after the skip sum, as `etude train
    /// --attention` (the default recipe's is 4). Default: none, the plain gated WaveNet of the
    /// PyTorch peers' protocol.
    #[arg(long, value_name = "HEADS")]
    pub attention: Option<usize>,
    /// wavenet-gated with --attention: width of each attention head (default 32).
    #[arg(long, value_name = "D")]
    pub attention_dim: Option<usize>,
    /// GPU storage of weights and activations: f32, f16 (--backend gpu, an adapter with
    /// SHADER_F16), or both: f32 then f16 in this one process, and their ratio.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "both"])]
    pub precision: String,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    #[arg(long, value_parser = MODEL_NAMES)]
    pub model: String,
    #[arg(long, value_enum, default_value_t = Which::Cpu)]
    pub backend: Which,
    #[arg(long, value_name = "N|NAME")]
    pub device: Option<String>,
    /// Window (the prime's length and the sliding window's context).
    #[arg(long, default_value_t = 128)]
    pub window: usize,
    #[arg(long, default_value_t = 300)]
    pub vocab: usize,
    /// Tokens generated per pass.
    #[arg(long, default_value_t = 50)]
    pub tokens: usize,
    /// Timed passes (after one warm-up pass).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Only incremental generation (one step per token with carried state).
    #[arg(long, conflicts_with = "sliding_window")]
    pub incremental: bool,
    /// Only sliding-window generation.
    #[arg(long)]
    pub sliding_window: bool,
    /// Time N pieces one by one against the same N pieces in one batch (tokens per second).
    #[arg(long, value_parser = super::values::at_least_one)]
    pub count: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct KernelArgs {
    #[arg(long, value_enum, default_value_t = WhichOrBoth::Cpu)]
    pub backend: WhichOrBoth,
    #[arg(long, value_name = "N|NAME")]
    pub device: Option<String>,
    /// Timed samples per operation (the median and min are reported).
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
    /// Calls per sample (recorded into one submission on the GPU).
    #[arg(long, default_value_t = 2)]
    pub inner: usize,
    /// Only the operations whose label contains this text (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub only: Option<String>,
    /// Skip the device-time (timestamp query) measurement of each GPU op.
    #[arg(long)]
    pub no_gpu_time: bool,
    /// Instead of the single ops: profile the training step of these models (comma-separated),
    /// reporting the device time of each kernel from timestamp queries (GPU only).
    #[arg(long, value_name = "MODELS", value_delimiter = ',')]
    pub step: Vec<String>,
    /// Batch of the profiled step (--step).
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Window of the profiled step (--step).
    #[arg(long, default_value_t = 128)]
    pub window: usize,
    /// Unprofiled steps before the profiled ones (--step): the first compiles the shaders.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Profiled steps (--step), averaged.
    #[arg(long, default_value_t = 1)]
    pub steps: usize,
    #[arg(long)]
    pub json: bool,
}

fn emit<T: Serialize>(json: bool, value: &T, text: impl FnOnce(&T) -> String) -> Result<(), String> {
    if json {
        println!("{}", serde_json::to_string(value).map_err(|e| e.to_string())?);
    } else {
        println!("{}", text(value));
    }
    Ok(())
}

/// The engine of a suite, opened by [`open_engine`] like every command's (`--device` applies to
/// the GPU; the CPU ignores it): a software GPU adapter is named, since its timings say nothing
/// about a real GPU.
fn open(which: Which, device: Option<&str>, precision: Precision) -> Result<Engine, String> {
    let engine = match which {
        Which::Cpu => open_engine(BackendChoice::Cpu, None, precision)?,
        Which::Gpu => open_engine(BackendChoice::Gpu, device, precision)?,
    };
    if let Engine::Gpu(g) = &engine {
        if g.is_software() {
            eprintln!("note: {} is a software renderer; its timings say nothing about a real GPU", g.adapter_info().name);
        }
    }
    Ok(engine)
}

pub fn run(args: BenchArgs) -> Result<(), String> {
    match args.suite {
        Suite::Train(a) => {
            let device = a.device.as_deref();
            let train_on = |engine: Engine| match engine {
                Engine::Cpu(b) => train(&b, &a),
                Engine::Gpu(g) => train(g.as_ref(), &a),
            };
            match (a.backend, a.precision.as_str()) {
                // f16 (and so both) needs the GPU: open_engine says so.
                (Which::Cpu, p) => {
                    let precision = if p == "f32" { Precision::F32 } else { Precision::F16 };
                    train_on(open(Which::Cpu, device, precision)?).map(drop)
                }
                (Which::Gpu, "both") => {
                    let f32 = train_on(open(Which::Gpu, device, Precision::F32)?)?;
                    let f16 = train_on(open(Which::Gpu, device, Precision::F16)?)?;
                    if !a.json {
                        println!(
                            "f16 / f32: step time x{:.3} (median), loss {:.4} vs {:.4} after {} steps",
                            f16.step_ms_median / f32.step_ms_median,
                            f16.loss_last,
                            f32.loss_last,
                            a.warmup + a.steps
                        );
                    }
                    Ok(())
                }
                (Which::Gpu, p) => train_on(open(Which::Gpu, device, p.parse()?)?).map(drop),
            }
        }
        Suite::Generate(a) => match open(a.backend, a.device.as_deref(), Precision::F32)? {
            Engine::Cpu(b) => generate(&b, &a),
            Engine::Gpu(g) => generate(g.as_ref(), &a),
        },
        Suite::Kernels(a) => {
            let mut which = Vec::new();
            if matches!(a.backend, WhichOrBoth::Cpu | WhichOrBoth::Both) {
                which.push(Which::Cpu);
            }
            if matches!(a.backend, WhichOrBoth::Gpu | WhichOrBoth::Both) {
                which.push(Which::Gpu);
            }
            for w in which {
                match open(w, a.device.as_deref(), Precision::F32)? {
                    Engine::Cpu(b) => kernels(&b, &a)?,
                    Engine::Gpu(g) => kernels(g.as_ref(), &a)?,
                }
            }
            Ok(())
        }
    }
}

fn train<B: BenchBackend>(b: &B, a: &TrainArgs) -> Result<bench::TrainReport, String> {
    let opts = TrainOptions {
        model: a.model.clone(),
        batch: a.batch,
        window: a.window,
        vocab: a.vocab,
        steps: a.steps,
        warmup: a.warmup,
        seed: a.seed,
        attention: a.attention,
        attention_dim: a.attention_dim,
    };
    let r = bench::train(b, &opts)?;
    emit(a.json, &r, bench::format_train)?;
    Ok(r)
}

fn generate<B: BenchBackend>(b: &B, a: &GenerateArgs) -> Result<(), String> {
    let opts = GenerateOptions {
        model: a.model.clone(),
        window: a.window,
        vocab: a.vocab,
        tokens: a.tokens,
        reps: a.reps,
        seed: a.seed,
        mode: if a.incremental {
            Some(etude::generate::Mode::Incremental)
        } else if a.sliding_window {
            Some(etude::generate::Mode::SlidingWindow)
        } else {
            None
        },
    };
    if let Some(count) = a.count {
        for r in bench::generate_batch(b, &opts, count)? {
            emit(a.json, &r, bench::format_generate_batch)?;
        }
        return Ok(());
    }
    for r in bench::generate(b, &opts)? {
        emit(a.json, &r, bench::format_generate)?;
    }
    Ok(())
}

fn kernels<B: BenchBackend>(b: &B, a: &KernelArgs) -> Result<(), String> {
    if !a.step.is_empty() {
        for model in &a.step {
            if !MODEL_NAMES.contains(&model.as_str()) {
                return Err(format!("--step: unknown model {model:?} (models: {})", MODEL_NAMES.join(", ")));
            }
            let opts = TrainOptions {
                model: model.clone(),
                batch: a.batch,
                window: a.window,
                steps: a.steps,
                warmup: a.warmup,
                ..TrainOptions::default()
            };
            for r in bench::step_profile(b, &opts)? {
                emit(a.json, &r, bench::format_step_kernel)?;
            }
        }
        return Ok(());
    }
    let device_time = !a.no_gpu_time && b.kind() == "gpu";
    if device_time {
        // Probe once, so that a missing feature is said once rather than silently per op.
        match b.set_device_timing(true).and_then(|()| b.set_device_timing(false)) {
            Ok(()) => {}
            Err(e) => eprintln!("note: no gpu_ms (device time) in these reports: {e}"),
        }
    }
    let opts = KernelOptions { samples: a.samples, inner: a.inner, only: a.only.clone(), device_time };
    for r in bench::kernels(b, opts) {
        emit(a.json, &r, bench::format_kernel)?;
    }
    Ok(())
}
