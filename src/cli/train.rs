//! `etude train`: train a model on MIDI files (default: the built-in corpus), then write a sample.

use super::backend::{BackendArgs, Engine};
use super::generate::{write_pieces, GenArgs};
use super::{CacheArgs, DataArgs};
use clap::Args;
use etude::dataset::DataConfig;
use etude::engine::Backend;
use etude::engine::gpu::Precision;
use etude::model::any::{Sizes, MODEL_NAMES};
use etude::train::{load_checkpoint, train, DataSpec, OptimConfig, TrainOptions};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  etude train                                        # lstm on the built-in corpus, a few minutes on 2 cores
  etude train --data ../shared/corpus/mutopia-piano --model wavenet-gated --epochs 20
  etude train --model lstm-seq --tokenizer timed --transpose 3 --out runs/timed
  etude train --out runs/timed --resume --epochs 40   # continue that run to epoch 40
  etude train --backend gpu --device 0 --batch 64

A run folder holds metrics.csv, loss.png, last/best.safetensors, epoch-N.safetensors every
--checkpoint-every epochs and sample.mid. The checkpoint loads into PyTorch (see README).")]
pub struct TrainArgs {
    /// MIDI files or folders (recursive); none = the built-in corpus.
    #[arg(long = "data", value_name = "PATH", num_args = 1..)]
    pub data_paths: Vec<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Model: lstm, lstm-seq, wavenet, wavenet-gated.
    #[arg(long, default_value = "lstm", value_parser = MODEL_NAMES)]
    pub model: String,
    /// Embedding width (default 100).
    #[arg(long)]
    pub embed: Option<usize>,
    /// LSTM hidden size (default 128).
    #[arg(long)]
    pub hidden: Option<usize>,
    /// LSTM layers (default 2), WaveNet dilated layers per stack (default 10).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Dense hidden width (lstm 256, wavenet 128).
    #[arg(long)]
    pub dense: Option<usize>,
    /// wavenet: conv channels (default 64).
    #[arg(long)]
    pub channels: Option<usize>,
    /// wavenet-gated: residual channels (default 64).
    #[arg(long)]
    pub residual: Option<usize>,
    /// wavenet-gated: skip channels (default 128).
    #[arg(long)]
    pub skip: Option<usize>,
    /// wavenet-gated: stacks of dilations 1..2^(layers-1) (default 1).
    #[arg(long)]
    pub stacks: Option<usize>,
    /// Window length T: tokens the model reads to predict the next.
    #[arg(long, default_value_t = 128)]
    pub window: usize,
    /// Positions between consecutive windows of a piece.
    #[arg(long, default_value_t = 1)]
    pub stride: usize,
    /// Windows per step.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Train until this many epochs are complete.
    #[arg(long, default_value_t = 6)]
    pub epochs: usize,
    /// Cap the steps of every epoch (quick trials; default: every window once per epoch).
    #[arg(long)]
    pub steps_per_epoch: Option<u64>,
    /// Adam learning rate.
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f32,
    /// Adam L2 weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f32,
    /// Fraction of the pieces held out for validation (split by piece).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Move every training window by a shift in -N..=N semitones, drawn per (seed, epoch, window).
    #[arg(long, default_value_t = 0)]
    pub transpose: u32,
    /// Tokens seen fewer times in training become <unk> (the tutorial used 50).
    #[arg(long, default_value_t = 1)]
    pub min_count: u64,
    /// Seed of the split, the initialisation, the window order and the sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run folder (default: runs/MODEL-TIMESTAMP).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep a checkpoint every N epochs (the tutorial's 50); 0 = only last and best.
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Continue the run in --out from its last checkpoint, with the data, model and optimizer
    /// settings stored there (options that would change them are refused).
    #[arg(long, requires = "out", conflicts_with_all = RUN_SETTINGS)]
    pub resume: bool,
    /// GPU storage of weights, gradients and activations: f32, or f16 (where the adapter has
    /// SHADER_F16; arithmetic, sums and Adam's moments stay f32). Kept by --resume.
    #[arg(long, value_parser = ["f32", "f16"])]
    pub precision: Option<String>,
    /// Tokens in the sample written at the end (0 = none).
    #[arg(long, default_value_t = 200)]
    pub sample_length: usize,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// The options a resumed run takes from its checkpoint: giving one with `--resume` is an error
/// rather than silently ignored.
const RUN_SETTINGS: [&str; 27] = [
    "data_paths",
    "tokenizer",
    "all_parts",
    "sustain",
    "steps_per_quarter",
    "velocity_bins",
    "model",
    "embed",
    "hidden",
    "layers",
    "dense",
    "channels",
    "residual",
    "skip",
    "stacks",
    "window",
    "stride",
    "batch",
    "steps_per_epoch",
    "lr",
    "weight_decay",
    "clip",
    "val_fraction",
    "transpose",
    "min_count",
    "seed",
    "precision",
];

/// `runs/<model>-<UTC date and time>`.
fn default_out(model: &str) -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    PathBuf::from("runs").join(format!(
        "{model}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}

pub fn run(args: TrainArgs) -> Result<(), String> {
    if args.window == 0 || args.batch == 0 || args.stride == 0 || args.epochs == 0 || args.steps_per_epoch == Some(0) {
        return Err("--window, --batch, --stride, --epochs and --steps-per-epoch must be at least 1".into());
    }
    if !(0.0..1.0).contains(&args.val_fraction) {
        return Err(format!("--val-fraction must be in [0, 1), not {}", args.val_fraction));
    }
    if !(args.lr > 0.0 && args.lr.is_finite()) {
        return Err(format!("--lr must be a positive number, not {}", args.lr));
    }
    let out = args.out.clone().unwrap_or_else(|| default_out(&args.model));
    // A resumed run keeps its checkpoint's precision (train() reports an unreadable checkpoint).
    let precision = if args.resume {
        load_checkpoint(&out.join("last.safetensors")).map(|l| l.meta.optim.precision).unwrap_or_default()
    } else {
        args.precision.as_deref().map(str::parse::<Precision>).transpose()?.unwrap_or_default()
    };
    let opts = TrainOptions {
        data: DataSpec {
            // Absolute, so that generate and eval find the corpus again from any directory.
            paths: args.data_paths.iter().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())).collect(),
            read: args.data.read_options(),
            tokenizer: args.data.tokenizer.clone(),
            tokenizer_options: args.data.tokenizer_options(),
            data: DataConfig {
                window: args.window,
                stride: args.stride,
                valid_fraction: args.val_fraction,
                seed: args.seed,
                transpose: args.transpose,
                min_count: args.min_count,
            },
        },
        model: args.model.clone(),
        sizes: Sizes {
            embed: args.embed,
            hidden: args.hidden,
            layers: args.layers,
            dense: args.dense,
            channels: args.channels,
            residual: args.residual,
            skip: args.skip,
            stacks: args.stacks,
        },
        optim: OptimConfig {
            batch: args.batch,
            lr: args.lr,
            weight_decay: args.weight_decay,
            clip: args.clip,
            seed: args.seed,
            steps_per_epoch: args.steps_per_epoch,
            precision,
            ..OptimConfig::default()
        },
        epochs: args.epochs,
        checkpoint_every: args.checkpoint_every,
        out: out.clone(),
        resume: args.resume,
        progress_bar: std::io::stderr().is_terminal(),
        cache: args.cache.dir(),
    };
    match args.backend.open_with_precision(precision)? {
        Engine::Cpu(b) => go(&b, &opts, &args),
        Engine::Gpu(g) => go(g.as_ref(), &opts, &args),
    }
}

fn go<B: Backend>(b: &B, opts: &TrainOptions, args: &TrainArgs) -> Result<(), String> {
    if opts.resume {
        // The model is the checkpoint's, not --model's default.
        eprintln!("resuming the run in {} on {}", opts.out.display(), b.name());
    } else {
        eprintln!("training {} on {} into {}", opts.model, b.name(), opts.out.display());
    }
    let report = train(b, opts)?;
    for s in &report.skipped {
        eprintln!("skipped {}: {}", s.name, s.cause);
    }
    eprintln!(
        "{} training windows, {} validation windows, vocabulary {}",
        report.train_windows, report.valid_windows, report.vocab_size
    );
    if let Some(last) = report.metrics.last() {
        println!(
            "finished epoch {}: validation loss {:.4} (perplexity {:.2}, accuracy {:.3}); run folder {}",
            last.epoch,
            last.val_loss,
            last.val_perplexity,
            last.val_accuracy,
            report.out.display()
        );
    } else {
        let done = load_checkpoint(&report.last_checkpoint)?.meta.progress.epoch;
        eprintln!(
            "the run in {} has already completed {done} epochs (--epochs {}): nothing to train",
            report.out.display(),
            opts.epochs
        );
    }
    if args.sample_length > 0 {
        // The model with the lowest validation loss composes the sample.
        let best = report.out.join("best.safetensors");
        let source = if best.exists() { best } else { report.last_checkpoint.clone() };
        let loaded = load_checkpoint(&source)?;
        // The run's own seed (a resumed run's comes from its checkpoint, not from --seed).
        let mut gen = GenArgs::for_sample(args.sample_length, loaded.meta.optim.seed, report.out.join("sample.mid"));
        gen.cache = args.cache.clone();
        eprintln!("composing sample.mid with {}", source.display());
        write_pieces(b, &loaded, &source, &gen)?;
    }
    Ok(())
}
