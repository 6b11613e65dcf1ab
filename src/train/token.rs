//! Token runs of `etude train`: what the command asks ([`TrainOptions`]), the setup stage of a new
//! or resumed run (data, vocabulary, model, optimizer, the checks before the first step), then the
//! shared loop ([`crate::train::run_loop`]) with the token kind ([`TokenKind`]), and what the run
//! hands the after-run stage ([`TrainReport`]).

use crate::data::corpus::Skipped;
use crate::data::prepare::{prepare_tokens_mapped, Prepared};
use crate::engine::{Adam, AdamParams, Backend};
use crate::model::any::{ModelConfig, Sizes};
use crate::model::step::Stepper;
use crate::model::Model;
use crate::run::metrics::{EpochMetrics, MetricsLog, COLUMNS};
use crate::run::progress::Reporter;
use crate::run::schedule::LrSchedule;
use crate::run::verify::{available_memory, check_footprint, Footprint};
use crate::run::checkpoint::Checkpoint;
use crate::run::{restore_adam, DataSpec, Loaded, OptimConfig, Progress, RunSettings};
use crate::train::run_loop::{run_epochs, Cadence, RESUME_STATE};
use crate::train::token_checks::{check_loadable, degenerate_vocab, live_init, size_culprit};
use crate::train::token_kind::TokenKind;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `etude train` was asked to do.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub data: DataSpec,
    pub model: String,
    pub sizes: Sizes,
    pub optim: OptimConfig,
    /// Train until this many epochs are complete.
    pub epochs: usize,
    /// Keep `epoch-N.safetensors` every N epochs (0 = never).
    pub checkpoint_every: usize,
    /// Tokens of the sample the caller writes at the end (stored in the run for `--resume`).
    pub sample_length: usize,
    pub out: PathBuf,
    /// Continue the run in `out` from its `last.safetensors`.
    pub resume: bool,
    /// Show a progress bar (a terminal); otherwise plain lines.
    pub progress_bar: bool,
    /// Folder of the token cache ([`crate::data::token_cache`]); `None` reads and tokenises the MIDI
    /// files in memory (the same windows and losses, bit for bit).
    pub cache: Option<PathBuf>,
}

/// The outcome of [`train`].
pub struct TrainReport {
    pub out: PathBuf,
    pub metrics: Vec<EpochMetrics>,
    /// Every row of the run's metrics (earlier sessions' too), as `metrics.csv` holds them.
    pub log: MetricsLog,
    pub last_checkpoint: PathBuf,
    pub vocab_size: usize,
    pub train_windows: usize,
    pub valid_windows: usize,
    pub skipped: Vec<Skipped>,
    /// The run ended (now or before) because the validation loss stopped improving.
    pub stopped_early: bool,
    /// Epochs the run has completed (those of its checkpoint when nothing was left to train).
    pub epochs_done: usize,
    /// One line per piece too short to give a window ([`Prepared::short_piece_report`]).
    pub short_pieces: Vec<String>,
    /// The validation scores of `best.safetensors` when this call wrote it (so the end of `etude
    /// train` need not score the same model on the same pieces again).
    pub best_scores: Option<crate::eval::validation::Scores>,
    /// The `etude` metadata of `last.safetensors` as written or read by this call (for the run's
    /// report, without reading the file again).
    pub last_meta: Option<serde_json::Value>,
}

/// The run's last checkpoint, read for `--resume` (an error when there is none to resume).
pub fn read_resumed(out: &Path) -> Result<Loaded, String> {
    let last_path = out.join("last.safetensors");
    if !last_path.exists() {
        return Err(format!("--resume: {} does not exist (nothing to resume in {})", last_path.display(), out.display()));
    }
    let checkpoint = Checkpoint::load(&last_path)?;
    if crate::train::roll::is_roll_checkpoint(&checkpoint) {
        // A piano-roll run resumes from its resume state, which older builds did not write.
        return Err(format!(
            "--resume: {} holds a piano-roll run without its {RESUME_STATE}: it cannot be resumed",
            out.display()
        ));
    }
    Loaded::from_checkpoint(checkpoint, &last_path)
}

/// Run (or resume) a training run on backend `b`; a resumed run's checkpoint is read here.
pub fn train<B: Backend>(b: &B, opts: &TrainOptions) -> Result<TrainReport, String> {
    let resumed = if opts.resume { Some(read_resumed(&opts.out)?) } else { None };
    train_from(b, opts, resumed)
}


/// [`train`] with the run's last checkpoint already read ([`read_resumed`]; `Some` exactly when
/// `opts.resume`), for a caller that needed its settings first: a checkpoint is read once.
pub fn train_from<B: Backend>(b: &B, opts: &TrainOptions, resumed: Option<Loaded>) -> Result<TrainReport, String> {
    let begun = Instant::now();
    let out = &opts.out;
    let last_path = out.join("last.safetensors");
    if opts.resume != resumed.is_some() {
        return Err("train_from: a resumed run needs its checkpoint, and only a resumed run".into());
    }
    if resumed.is_none() && last_path.exists() {
        return Err(format!(
            "{} already holds a run (last.safetensors); continue it with --resume, or choose another --out",
            out.display()
        ));
    }
    // A resumed run keeps its own data, model and optimizer settings.
    let (mut spec, mut optim) = match &resumed {
        Some(l) => (l.meta.data.clone(), l.meta.optim.clone()),
        None => (opts.data.clone(), opts.optim.clone()),
    };
    if optim.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    crate::run::schedule::validate(optim.dropout, optim.adamw_decay, optim.lr, optim.min_lr)?;
    crate::run::verify::check_optim(&optim)?;
    // A resumed run writes into `out` at the end of its first epoch: find out now that it cannot.
    if resumed.is_some() {
        crate::files::check_writable(out)?;
    }
    crate::files::remove_stale_temps(out);
    let tokenizer = spec.tokenizer()?;
    let tokens = spec.tokens(opts.cache.as_deref(), opts.progress_bar)?;
    let skipped = tokens.skipped().to_vec();
    let prepared: Prepared =
        prepare_tokens_mapped(&tokens, tokenizer.as_ref(), &spec.data, resumed.as_ref().map(|l| l.meta.vocab.clone()))?;
    drop(tokens);
    if prepared.duplicates > 0 {
        let n = prepared.names.len();
        eprintln!(
            "kept {} of {n} pieces: {} duplicates (pieces whose tokens equal an earlier piece's; --keep-duplicates keeps them)",
            n - prepared.duplicates,
            prepared.duplicates
        );
    }
    let window = spec.data.window;
    if resumed.is_none() {
        degenerate_vocab(&prepared.vocab, spec.data.min_count)?;
    }
    let model_cfg = match &resumed {
        Some(l) => l.meta.model.clone(),
        None => ModelConfig::from_name(&opts.model, prepared.vocab.len(), window, &opts.sizes)?,
    };
    // The settings as the run's checkpoints will hold them pass the checks that load those
    // checkpoints, before any step is taken (a run whose checkpoints are refused is wasted).
    if resumed.is_none() {
        check_loadable(&model_cfg, &spec, &prepared.vocab, &optim, tokenizer.as_ref())?;
    }
    // Everything the run allocates, checked before any of it is: the sample is composed with the
    // fast WaveNet's queues.
    let fp = Footprint::of(&model_cfg, optim.batch, window, opts.sample_length > 0);
    let culprit = size_culprit(&model_cfg, &opts.sizes, opts.resume, opts.sample_length > 0, &optim, window);
    check_footprint(&fp, available_memory(), b.max_buffer_bytes().map(u128::from), &culprit)?;
    let (model, stepper) = match &resumed {
        Some(l) => {
            let model = l.model(b, optim.batch, window, &last_path)?;
            let stepper = Stepper::new(b, &model, optim.batch);
            (model, stepper)
        }
        None => live_init(b, &model_cfg, optim.batch, window, optim.seed, &prepared.train)?,
    };
    let hp = AdamParams {
        lr: optim.lr,
        beta1: optim.beta1,
        beta2: optim.beta2,
        eps: optim.eps,
        weight_decay: optim.weight_decay,
        step: 0,
    };
    let mut adam = Adam::new(b, model.params(), hp, optim.clip);
    adam.decoupled_decay = optim.adamw_decay;
    let mut progress = Progress::default();
    let mut last_meta = resumed.as_ref().map(|l| l.checkpoint.meta.clone());
    if let Some(l) = &resumed {
        let names: Vec<String> = model.params().iter().map(|p| p.name.clone()).collect();
        restore_adam(b, &names, &mut adam, &l.checkpoint, &last_path.display().to_string())?;
        progress = l.meta.progress.clone();
        adam.step = u32::try_from(progress.step).map_err(|_| "step count too large".to_string())?;
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut log = MetricsLog::continued(&out.join("metrics.csv"), &COLUMNS, progress.epoch)?;
    let valid_set = crate::eval::targets::validation_set(&prepared)?;
    // Every epoch scores the same targets: all, or a seeded sample spread over the validation
    // pieces (stored in the run only when it is a sample).
    let valid_picks = crate::eval::targets::sample_targets(valid_set.len(), spec.data.valid_targets.unwrap_or(0), spec.data.seed);
    spec.data.valid_targets = spec.data.valid_targets.filter(|_| valid_picks.is_some());
    if let Some(p) = &valid_picks {
        let pieces = valid_set.pieces().iter().filter(|p| p.targets > 0).count();
        let sample = crate::eval::targets::TargetSample::new(p.len(), valid_set.len());
        eprintln!("validation scores {} every epoch (--val-targets)", sample.describe(&format!("the {pieces} validation pieces")));
    }
    let reporter = Reporter::new(opts.progress_bar);
    let full_epoch = prepared.train.batches_per_epoch(optim.batch, false) as u64;
    let steps_per_epoch = optim.steps_per_epoch.map_or(full_epoch, |cap| cap.min(full_epoch));
    if optim.lr_schedule == LrSchedule::Cosine && optim.schedule_steps == 0 {
        // Fixed when the run starts, so that a resumed run follows the same curve.
        optim.schedule_steps = opts.epochs as u64 * steps_per_epoch;
    }
    reporter.line(&format!(
        "ready to train in {:.2} s: {} training windows ({} tokens), {} validation windows, vocabulary {}",
        begun.elapsed().as_secs_f64(),
        prepared.train.len(),
        prepared.train.total_ids(),
        prepared.valid.len(),
        prepared.vocab.len()
    ));
    let run = RunSettings { checkpoint_every: Some(opts.checkpoint_every), sample_length: Some(opts.sample_length) };
    let mut kind = TokenKind::new(
        model, stepper, adam, &prepared, model_cfg, spec, optim, run, valid_set, valid_picks, steps_per_epoch, opts.epochs, out.clone(),
    );
    let cadence = Cadence { out, epochs: opts.epochs, checkpoint_every: opts.checkpoint_every, patience: kind.optim.patience, begun };
    if let Some(meta) = run_epochs(b, &mut kind, &cadence, &mut progress, &mut log, &reporter)? {
        last_meta = Some(meta);
    }
    Ok(TrainReport {
        best_scores: kind.best_scores,
        out: out.clone(),
        metrics: kind.metrics,
        log,
        last_checkpoint: last_path,
        vocab_size: prepared.vocab.len(),
        train_windows: prepared.train.len(),
        valid_windows: prepared.valid.len(),
        skipped,
        stopped_early: progress.stopped(kind.optim.patience),
        last_meta,
        epochs_done: progress.epoch,
        short_pieces: prepared.short_piece_report(),
    })
}
