//! `etude train`: train a model on MIDI files (default: the built-in corpus), then write a sample.

use super::backend::{BackendArgs, Engine};
use super::{CacheArgs, DataArgs};
use clap::Args;
use etude::data::prepare::DataConfig;
use etude::engine::Backend;
use etude::engine::gpu::Precision;
use etude::model::any::{Sizes, MODEL_NAMES};
use etude::run::schedule::{self, LrSchedule};
use etude::run::{DataSpec, Loaded, OptimConfig};
use etude::train::{read_resumed, train_from, TrainOptions};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  etude train                                        # the default recipe on the built-in corpus
  etude train --preset tutorial                      # the Keras tutorial's LSTM pipeline
  etude train --data ../shared/corpus/mutopia-piano --model lstm-seq --epochs 8
  etude train --out runs/more --epochs 8             # the default recipe with twice the steps
  etude train --out runs/more --resume --epochs 12    # continue that run to epoch 12
  etude train --backend gpu --device 0 --batch 64

A run folder holds metrics.csv, loss.png, last/best.safetensors, epoch-N.safetensors every
--checkpoint-every epochs and sample.mid. The checkpoint loads into PyTorch (see README).")]
pub struct TrainArgs {
    /// MIDI files or folders (recursive); none = the built-in corpus.
    #[arg(long = "data", value_name = "PATH", num_args = 1..)]
    pub data_paths: Vec<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Model: transformer (the default recipe's, chosen on the validation split), wavenet-gated,
    /// lstm, lstm-seq, wavenet.
    #[arg(long, default_value = "transformer", value_parser = MODEL_NAMES)]
    pub model: String,
    /// Embedding width (default 100).
    #[arg(long)]
    pub embed: Option<usize>,
    /// LSTM hidden size (default 128).
    #[arg(long)]
    pub hidden: Option<usize>,
    /// LSTM layers (default 2), WaveNet dilated layers per stack (default 10), transformer blocks (default 4).
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
    /// wavenet-gated: heads of a causal attention layer after the skip sum, which lets the model
    /// copy what followed an earlier context like the current one (default 4, the default
    /// recipe's; 0 = none, the plain gated WaveNet).
    #[arg(long, value_name = "HEADS")]
    pub attention: Option<usize>,
    /// wavenet-gated with --attention: width of each attention head (default 32).
    #[arg(long, value_name = "D")]
    pub attention_dim: Option<usize>,
    /// transformer: model width (default 128).
    #[arg(long)]
    pub width: Option<usize>,
    /// transformer: attention heads, each width / heads wide (default 4).
    #[arg(long)]
    pub heads: Option<usize>,
    /// transformer: feed-forward width (default 512).
    #[arg(long)]
    pub ff: Option<usize>,
    /// wavenet-gated in piano-roll mode: kernel size of the dilated convs (default 2).
    #[arg(long)]
    pub kernel: Option<usize>,
    /// Piano-roll models: the output head, `sigmoid` (88 independent keys) or `nade` (a frame's
    /// keys drawn jointly, RNN-NADE) [default: the data set's recipe].
    #[arg(long, value_parser = ["sigmoid", "nade"])]
    pub head: Option<String>,
    /// Hidden units of the NADE head [default: the data set's recipe].
    #[arg(long, value_name = "H")]
    pub nade_hidden: Option<usize>,
    /// Window length T: tokens the model reads to predict the next.
    #[arg(long, default_value_t = 128, value_parser = super::values::at_least_one)]
    pub window: usize,
    /// Positions between consecutive windows of a piece.
    #[arg(long, default_value_t = 1, value_parser = super::values::at_least_one)]
    pub stride: usize,
    /// Windows per step.
    #[arg(long, default_value_t = 64, value_parser = super::values::at_least_one)]
    pub batch: usize,
    /// Train until this many epochs are complete.
    #[arg(long, default_value_t = 4, value_parser = super::values::at_least_one)]
    pub epochs: usize,
    /// Steps of every epoch, each a batch of windows from the epoch's shuffled order (0 = every
    /// window once).
    #[arg(long, default_value_t = 300)]
    pub steps_per_epoch: u64,
    /// Adam learning rate.
    #[arg(long, default_value_t = 2e-3, value_parser = super::values::positive_number)]
    pub lr: f32,
    /// Adam L2 weight decay.
    #[arg(long, default_value_t = 0.0, value_parser = super::values::non_negative_f32)]
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (0 = off).
    #[arg(long, default_value_t = 1.0, value_parser = super::values::non_negative_f32)]
    pub clip: f32,
    /// Inverted dropout rate in [0, 1) during training (lstm: after the embedding, between LSTM
    /// layers, before the head; wavenet: after every dilated layer; wavenet-gated: in every block;
    /// transformer: after the embedding and on both residual branches of every block, default
    /// 0.1).
    #[arg(long, default_value_t = DEFAULT_DROPOUT)]
    pub dropout: f32,
    /// AdamW's decoupled weight decay (PyTorch AdamW's weight_decay; 0 = off), beside --weight-decay.
    #[arg(long, default_value_t = 0.0)]
    pub adamw_decay: f32,
    /// Learning-rate schedule after the warm-up: constant, or cosine down to --min-lr at the last epoch.
    #[arg(long, default_value = "cosine", value_parser = LrSchedule::NAMES)]
    pub lr_schedule: String,
    /// Steps of linear warm-up from 0 to --lr.
    #[arg(long, default_value_t = 50)]
    pub warmup_steps: u64,
    /// The floor of the cosine schedule.
    #[arg(long, default_value_t = 0.0)]
    pub min_lr: f32,
    /// Stop when the validation loss has not improved for N epochs (0 = never).
    #[arg(long, default_value_t = 0)]
    pub patience: usize,
    /// Fraction of the pieces held out for validation (split by piece).
    #[arg(long, default_value_t = 0.1, value_parser = super::values::fraction)]
    pub val_fraction: f64,
    /// Validation targets scored every epoch: a seeded sample of this many, spread over the
    /// validation pieces, the same every epoch and for best.safetensors, the baselines and the copy
    /// mixture (0 = every target; the built-in corpus has 13,095, all scored by the default).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_VAL_TARGETS)]
    pub val_targets: usize,
    /// Keep pieces whose tokens equal an earlier piece's (by default each is kept once, so that
    /// copies cannot fall on both sides of the split).
    #[arg(long)]
    pub keep_duplicates: bool,
    /// Move every training window by a shift in -N..=N semitones, drawn per (seed, epoch, window).
    #[arg(long, default_value_t = 5)]
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
    /// Keep a checkpoint every N epochs (the tutorial's 50); 0 = only last and best [default:
    /// 50; a resumed run keeps its own].
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Continue the run in --out from its last checkpoint, with the data, model and optimizer
    /// settings stored there (options that would change them are refused).
    #[arg(long, requires = "out", conflicts_with_all = RUN_SETTINGS)]
    pub resume: bool,
    /// GPU storage of weights, gradients and activations: f32, or f16 (where the adapter has
    /// SHADER_F16; arithmetic, sums and Adam's moments stay f32). Kept by --resume.
    #[arg(long, value_parser = ["f32", "f16"])]
    pub precision: Option<String>,
    /// Tokens in the sample written at the end (0 = none) [default: 600; a resumed run keeps its
    /// own].
    #[arg(long)]
    pub sample_length: Option<usize>,
    /// A named recipe: `tutorial` = the Keras tutorial's pipeline (notechord tokens, lstm 2x128 +
    /// dense 256, batch 128, window 128, no transposition, a checkpoint every 50 epochs, an argmax
    /// sample of 50 events). Options given beside it override it.
    #[arg(long, value_name = "NAME", conflicts_with = "resume")]
    pub preset: Option<String>,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// The options a resumed run takes from its checkpoint: giving one with `--resume` is an error
/// rather than silently ignored.
const RUN_SETTINGS: [&str; 40] = [
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
    "attention",
    "attention_dim",
    "width",
    "heads",
    "ff",
    "window",
    "stride",
    "batch",
    "steps_per_epoch",
    "lr",
    "weight_decay",
    "clip",
    "dropout",
    "adamw_decay",
    "lr_schedule",
    "warmup_steps",
    "min_lr",
    "patience",
    "val_fraction",
    "val_targets",
    "keep_duplicates",
    "transpose",
    "min_count",
    "seed",
    "precision",
];

/// `--val-targets` of `etude train`: every epoch's validation scores at most this many targets.
/// Above the built-in corpus's 13,095, so that its default run scores them all, as before.
pub const DEFAULT_VAL_TARGETS: usize = 20_000;

/// `--dropout` of every model but the transformer: the gated WaveNet's recipe (chosen on the
/// validation split, docs/models-and-recipes.md).
pub const DEFAULT_DROPOUT: f32 = 0.3;

/// `--dropout` of the transformer's recipe when none is given (chosen on the validation split:
/// docs/models-and-recipes.md, "The default recipe").
pub const TRANSFORMER_DROPOUT: f32 = 0.1;

/// `--attention` of wavenet-gated's recipe (the default model before the transformer; chosen on
/// the validation split, docs/models-and-recipes.md). Other models have no attention layer.
pub const DEFAULT_ATTENTION_HEADS: usize = 4;

/// The attention heads a new run of `model` gets: `--attention` where given, else the default
/// recipe's for wavenet-gated and none (`None`: the model's own default) for the others.
fn attention_heads(model: &str, given: Option<usize>) -> Option<usize> {
    given.or((model == "wavenet-gated").then_some(DEFAULT_ATTENTION_HEADS))
}

/// The names `--preset` accepts.
pub const PRESETS: [&str; 1] = ["tutorial"];

/// Apply the model's own recipe, then `--preset`, to `args`: every setting of the recipe or preset
/// whose option was not given explicitly (`explicit(id)`, the field's name) takes its value (the
/// transformer's dropout; the preset's settings). An unknown preset is an error.
pub fn apply_preset(args: &mut TrainArgs, explicit: &dyn Fn(&str) -> bool) -> Result<(), String> {
    if args.model == "transformer" && !explicit("dropout") {
        args.dropout = TRANSFORMER_DROPOUT;
    }
    let Some(name) = args.preset.clone() else { return Ok(()) };
    if name != "tutorial" {
        return Err(format!("unknown --preset '{name}' (expected one of: {})", PRESETS.join(", ")));
    }
    // `preset!(field = value)`: the field takes the preset's value unless its option was given.
    macro_rules! preset {
        ($field:ident = $value:expr) => {
            if !explicit(stringify!($field)) {
                args.$field = $value;
            }
        };
    }
    preset!(model = "lstm".into());
    if !explicit("tokenizer") {
        args.data.tokenizer = "notechord".into();
    }
    // The LSTM's sizes (another --model given beside the preset keeps its own).
    if args.model.starts_with("lstm") {
        preset!(embed = Some(100));
        preset!(hidden = Some(128));
        preset!(layers = Some(2));
        preset!(dense = Some(256));
    }
    preset!(batch = 128);
    preset!(window = 128);
    preset!(stride = 1);
    preset!(transpose = 0);
    preset!(checkpoint_every = Some(50));
    // The tutorial's training: every window once per epoch, a constant learning rate, no
    // regularisation, the 6 epochs of etude's first default.
    preset!(epochs = 6);
    preset!(steps_per_epoch = 0);
    preset!(dropout = 0.0);
    preset!(lr_schedule = "constant".into());
    preset!(warmup_steps = 0);
    preset!(sample_length = Some(50));
    Ok(())
}

/// `runs/<model>-<UTC date and time>`.
pub(super) fn default_out(model: &str) -> PathBuf {
    run_folder(model, chrono::Utc::now())
}

/// `runs/<model>-YYYYMMDD-HHMMSS` at `at`.
fn run_folder(model: &str, at: chrono::DateTime<chrono::Utc>) -> PathBuf {
    PathBuf::from("runs").join(format!("{model}-{}", at.format("%Y%m%d-%H%M%S")))
}

pub fn run(args: TrainArgs) -> Result<(), String> {
    schedule::validate(args.dropout, args.adamw_decay, args.lr, args.min_lr)?;
    let lr_schedule: LrSchedule = args.lr_schedule.parse()?;
    let out = args.out.clone().unwrap_or_else(|| default_out(&args.model));
    // One writer per run folder, from before its checkpoint is read to the end of the sample.
    let _lock = etude::files::RunLock::acquire(&out)?;
    // A run folder inside a data folder: its sample.mid would be a training piece of the next run.
    if let Ok(abs_out) = std::fs::canonicalize(&out) {
        for d in &args.data_paths {
            if let Ok(abs_d) = std::fs::canonicalize(d) {
                if abs_d.is_dir() && abs_out.starts_with(&abs_d) {
                    return Err(format!(
                        "--out {} is inside the --data folder {}: its sample.mid would be read as training data; choose another --out",
                        out.display(),
                        d.display()
                    ));
                }
            }
        }
    }
    // Ctrl-C ends the run after its current step, with a checkpoint --resume continues from.
    etude::train::catch_interrupts();
    // A resumed run keeps its checkpoint's precision, --checkpoint-every and --sample-length. The
    // checkpoint is read once, here; an unreadable one is reported where training starts.
    let resumed = args.resume.then(|| read_resumed(&out));
    let stored = resumed.as_ref().and_then(|r| r.as_ref().ok()).map(|l| &l.meta);
    let precision = match stored {
        Some(m) => m.optim.precision,
        None if args.resume => Precision::default(),
        None => args.precision.as_deref().map(str::parse::<Precision>).transpose()?.unwrap_or_default(),
    };
    let kept = stored.map(|m| m.run.clone()).unwrap_or_default();
    let checkpoint_every = args.checkpoint_every.or(kept.checkpoint_every).unwrap_or(50);
    let sample_length = args.sample_length.or(kept.sample_length).unwrap_or(600);
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
                valid_targets: (args.val_targets > 0).then_some(args.val_targets),
                keep_duplicates: args.keep_duplicates,
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
            attention: attention_heads(&args.model, args.attention),
            attention_dim: args.attention_dim,
            width: args.width,
            heads: args.heads,
            ff: args.ff,
        },
        optim: OptimConfig {
            batch: args.batch,
            lr: args.lr,
            weight_decay: args.weight_decay,
            clip: args.clip,
            seed: args.seed,
            steps_per_epoch: (args.steps_per_epoch > 0).then_some(args.steps_per_epoch),
            precision,
            dropout: args.dropout,
            adamw_decay: args.adamw_decay,
            lr_schedule,
            warmup_steps: args.warmup_steps,
            min_lr: args.min_lr,
            patience: args.patience,
            ..OptimConfig::default()
        },
        epochs: args.epochs,
        checkpoint_every,
        sample_length,
        out: out.clone(),
        resume: args.resume,
        progress_bar: std::io::stderr().is_terminal(),
        cache: args.cache.dir(),
    };
    let greedy_sample = args.preset.as_deref() == Some("tutorial");
    match args.backend.open_with_precision(precision)? {
        Engine::Cpu(b) => go(&b, &opts, resumed, greedy_sample),
        Engine::Gpu(g) => go(g.as_ref(), &opts, resumed, greedy_sample),
    }
}

/// `resumed`: the run's last checkpoint as read for `--resume`. `greedy_sample`: compose the
/// sample by argmax (the tutorial preset) instead of sampling.
fn go<B: Backend>(b: &B, opts: &TrainOptions, resumed: Option<Result<Loaded, String>>, greedy_sample: bool) -> Result<(), String> {
    if opts.resume {
        // The model is the checkpoint's, not --model's default.
        eprintln!("resuming the run in {} on {}", opts.out.display(), b.name());
    } else {
        eprintln!("training {} on {} into {}", opts.model, b.name(), opts.out.display());
    }
    let report = train_from(b, opts, resumed.transpose()?)?;
    if etude::train::interrupted() {
        return Err(format!(
            "interrupted after the last epoch: the checkpoints in {} are written, the baseline and sample.mid are not",
            report.out.display()
        ));
    }
    super::after_run::after_run(b, opts, &report, greedy_sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The civil date of the hand arithmetic `default_out` used before chrono (Howard Hinnant's
    /// algorithm), as the reference the names must keep.
    fn hand_made(model: &str, secs: u64) -> PathBuf {
        let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        PathBuf::from("runs").join(format!("{model}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem / 60 % 60, rem % 60))
    }

    #[test]
    fn run_folders_are_named_by_the_utc_date_and_time_as_before() {
        let at = |secs: u64| chrono::DateTime::from_timestamp(secs as i64, 0).unwrap();
        assert_eq!(run_folder("lstm", at(1_709_251_147)), PathBuf::from("runs/lstm-20240229-235907"));
        assert_eq!(run_folder("wavenet-gated", at(0)), PathBuf::from("runs/wavenet-gated-19700101-000000"));
        // Every ~3.7 days from 1970 to 2400 (leap days, century years, every time of day).
        for secs in (0..13_569_465_600u64).step_by(318_917) {
            assert_eq!(run_folder("roll-lstm", at(secs)), hand_made("roll-lstm", secs), "{secs} s");
        }
    }
}
