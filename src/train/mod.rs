//! `etude train`: the loop, and what it writes as it goes (checkpoints, metrics, curves).
//!
//! A run lives in one folder: `metrics.csv` (one row per epoch), `loss.png`, `last.safetensors`
//! (every epoch), `best.safetensors` (lowest validation loss), `epoch-N.safetensors` (every
//! `checkpoint_every` epochs) and, at the end, a generated `sample.mid`. Every checkpoint carries
//! all that is needed to resume exactly: parameters, Adam moments and step, the model config,
//! tokenizer, vocabulary, data settings and the epoch reached. The order of the windows in an
//! epoch depends only on (seed, epoch), so a resumed run sees the same batches, and on the CPU
//! backend gives bit-for-bit the losses of a run that never stopped.
//!
//! What a checkpoint holds is [`crate::run`]'s, the rows of `metrics.csv` [`crate::run::metrics`]'s,
//! the progress bar [`crate::run::progress`]'s and one step [`crate::model::step`]'s: this module drives them.

pub mod roll;
pub mod roll_recipe;

use crate::run::checkpoint::Checkpoint;
use crate::data::corpus::Skipped;
use crate::data::dataset::Dataset;
use crate::data::prepare::{prepare_tokens_mapped, Prepared};
use crate::engine::{Adam, AdamParams, Backend, Dropout};
use crate::run::metrics::{EpochMetrics, MetricsLog, COLUMNS, LOSS_COLUMNS};
use crate::model::any::{AnyModel, ModelConfig, Sizes};
use crate::model::Model;
use crate::run::progress::Reporter;
use crate::rng::Rng;
use crate::run::{load_checkpoint, restore_adam, snapshot, DataSpec, Loaded, Meta, OptimConfig, PartialEpoch, Progress, RunSettings};
use crate::run::schedule::{lr_at, LrSchedule};
use crate::model::step::Stepper;
use crate::music::tokens::{Tokenizer, Vocab};
use crate::run::verify::{available_memory, check_footprint, Footprint};
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
    load_checkpoint(&last_path)
}

/// Run (or resume) a training run on backend `b`; a resumed run's checkpoint is read here.
pub fn train<B: Backend>(b: &B, opts: &TrainOptions) -> Result<TrainReport, String> {
    let resumed = if opts.resume { Some(read_resumed(&opts.out)?) } else { None };
    train_from(b, opts, resumed)
}

/// The metadata of the checkpoint written after `epoch` epochs.
#[allow(clippy::too_many_arguments)]
fn checkpoint_meta(
    model: &ModelConfig,
    spec: &DataSpec,
    prepared: &Prepared,
    optim: &OptimConfig,
    progress: &Progress,
    valid_pieces: &[String],
    opts: &TrainOptions,
    epoch: usize,
) -> Meta {
    Meta {
        etude_version: env!("CARGO_PKG_VERSION").to_string(),
        model: model.clone(),
        data: spec.clone(),
        vocab: prepared.vocab.clone(),
        optim: optim.clone(),
        progress: progress.clone(),
        valid_pieces: valid_pieces.to_vec(),
        rng: Rng::new(optim.seed ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407)),
        run: RunSettings { checkpoint_every: Some(opts.checkpoint_every), sample_length: Some(opts.sample_length) },
        copy: None,
    }
}

/// Ctrl-Cs received since [`catch_interrupts`]: training stops after the step in progress.
static INTERRUPTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Whether Ctrl-C (SIGINT) was pressed since [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTS.load(std::sync::atomic::Ordering::SeqCst) > 0
}

#[cfg(unix)]
extern "C" fn on_interrupt(_: libc::c_int) {
    // Async-signal-safe only: an atomic, write(2) and _exit(2).
    let n = INTERRUPTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let msg: &[u8] = if n == 0 {
        b"\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)\n"
    } else {
        b"\nCtrl-C again: stopped at once, without a checkpoint of the steps since the last one\n"
    };
    // SAFETY: write(2) and _exit(2) are async-signal-safe; `msg` is a static byte string.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        if n > 0 {
            libc::_exit(130);
        }
    }
}

/// Make Ctrl-C (SIGINT) finish the current training step, save a checkpoint `--resume` continues
/// from and end the command with an error saying so; a second Ctrl-C ends the process at once.
pub fn catch_interrupts() {
    #[cfg(unix)]
    // SAFETY: installs a handler that only touches an atomic and async-signal-safe calls.
    unsafe {
        let handler: extern "C" fn(libc::c_int) = on_interrupt;
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
    }
}

/// The settings of a new run, written into a checkpoint's metadata and read back as loading reads
/// them, then checked by [`crate::run::verify::check_meta`], the check [`Loaded::from_checkpoint`]
/// makes: an error names the option.
fn check_loadable(model: &ModelConfig, spec: &DataSpec, vocab: &Vocab, optim: &OptimConfig, tokenizer: &dyn Tokenizer) -> Result<(), String> {
    let meta = Meta {
        etude_version: env!("CARGO_PKG_VERSION").to_string(),
        model: model.clone(),
        data: spec.clone(),
        vocab: vocab.clone(),
        optim: optim.clone(),
        progress: Progress::default(),
        valid_pieces: Vec::new(),
        rng: Rng::new(optim.seed),
        run: RunSettings::default(),
        copy: None,
    };
    let json = serde_json::to_value(&meta).map_err(|e| e.to_string())?;
    let back: Meta = serde_json::from_value(json).map_err(|e| format!("the run's settings do not read back from a checkpoint: {e}"))?;
    crate::run::verify::check_meta(&back, tokenizer).map_err(|e| {
        const FLAGS: [(&str, &str); 9] = [
            ("data.transpose", "--transpose"),
            ("data.valid_fraction", "--val-fraction"),
            ("data.window", "--window"),
            ("tokenizer_options.step", "the tokenizer's step"),
            ("tokenizer_options.note_length", "the tokenizer's note length"),
            ("optim.lr", "--lr"),
            ("optim.clip", "--clip"),
            ("optim.weight_decay", "--weight-decay"),
            ("optim.batch", "--batch"),
        ];
        let flag = FLAGS.iter().find(|(k, _)| e.starts_with(k)).map_or("a setting", |(_, f)| f);
        format!("{flag}: {e}; the run's checkpoints could not be loaded, so it does not start")
    })
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
    let culprit = size_culprit(&model_cfg, opts, &optim, window);
    check_footprint(&fp, available_memory(), b.max_buffer_bytes().map(u128::from), &culprit)?;
    let (mut model, mut stepper) = match &resumed {
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
        restore_adam(b, &model, &mut adam, &l.checkpoint, &last_path)?;
        progress = l.meta.progress.clone();
        adam.step = u32::try_from(progress.step).map_err(|_| "step count too large".to_string())?;
    }
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut log = MetricsLog::continued(&out.join("metrics.csv"), &COLUMNS, progress.epoch)?;
    let valid_pieces: Vec<String> = prepared.split.valid.iter().map(|&i| prepared.names[i].clone()).collect();
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
    let valid_scored = valid_picks.as_ref().map_or(valid_set.len(), Vec::len) as u64;
    let targets = model.targets();
    let reporter = Reporter::new(opts.progress_bar);
    let mut metrics = Vec::new();
    let mut best_scores = None;
    let full_epoch = prepared.train.batches_per_epoch(optim.batch, false) as u64;
    let steps_per_epoch = optim.steps_per_epoch.map_or(full_epoch, |cap| cap.min(full_epoch));
    if optim.lr_schedule == LrSchedule::Cosine && optim.schedule_steps == 0 {
        // Fixed when the run starts, so that a resumed run follows the same curve.
        optim.schedule_steps = opts.epochs as u64 * steps_per_epoch;
    }
    let stopped = |p: &Progress| p.stopped(optim.patience);
    if stopped(&progress) {
        reporter.line(&format!(
            "the run stopped early at epoch {}: no validation improvement in {} epochs (--patience {})",
            progress.epoch, progress.epochs_without_improvement, optim.patience
        ));
    }

    reporter.line(&format!(
        "ready to train in {:.2} s: {} training windows ({} tokens), {} validation windows, vocabulary {}",
        begun.elapsed().as_secs_f64(),
        prepared.train.len(),
        prepared.train.total_ids(),
        prepared.valid.len(),
        prepared.vocab.len()
    ));
    if interrupted() {
        reporter.finish();
        return Err("interrupted before the first step: nothing was trained or written".into());
    }
    // The time to the first step (the goal of issue 16 for large corpora), said once.
    let mut first_step = true;
    while progress.epoch < opts.epochs && !stopped(&progress) {
        let epoch = progress.epoch + 1;
        reporter.start_epoch(epoch, opts.epochs, steps_per_epoch);
        let started = Instant::now();
        stepper.take_totals(b);
        let mut last_shown = Instant::now();
        // An epoch interrupted part-way (Ctrl-C) goes on after the steps it took.
        let before = progress.partial.take().unwrap_or_default();
        let mut taken = before.steps;
        let batches = prepared.train.batches(optim.batch, targets, optim.seed, epoch as u64, false);
        for batch in batches.take(steps_per_epoch as usize).skip(before.steps as usize) {
            // The schedule and the dropout masks are functions of the step being taken.
            let step = progress.step + 1;
            adam.hp.lr = lr_at(optim.lr_schedule, optim.lr, optim.min_lr, optim.warmup_steps, optim.schedule_steps, step);
            if optim.dropout > 0.0 {
                model.set_dropout(Some(Dropout { p: optim.dropout, seed: optim.seed, step }));
            }
            if std::mem::take(&mut first_step) {
                reporter.line(&format!("first step starts {:.2} s after the start", begun.elapsed().as_secs_f64()));
            }
            stepper.train(b, &mut model, &mut adam, &batch.x, &batch.y);
            progress.step += 1;
            taken += 1;
            if interrupted() && taken < steps_per_epoch {
                // Ctrl-C: the step is done; keep everything a resumed run needs to go on exactly.
                reporter.finish();
                model.set_dropout(None);
                let t = stepper.take_totals(b);
                progress.partial = Some(PartialEpoch {
                    steps: taken,
                    loss_sum: before.loss_sum + t.loss_sum,
                    correct: before.correct + t.correct,
                    rows: before.rows + t.rows,
                    seconds: before.seconds + started.elapsed().as_secs_f64(),
                });
                let tensors = snapshot(b, &model, &adam);
                if let Some(t) = tensors.iter().find(|t| t.data.iter().any(|v| !v.is_finite())) {
                    return Err(diverged(out, epoch, &format!("{} became non-finite", t.name)));
                }
                let meta = checkpoint_meta(&model_cfg, &spec, &prepared, &optim, &progress, &valid_pieces, opts, epoch - 1);
                Checkpoint { meta: serde_json::to_value(&meta).map_err(|e| e.to_string())?, tensors }.save(&last_path)?;
                return Err(format!(
                    "interrupted at epoch {epoch} step {taken} of {steps_per_epoch}; {} holds it: continue with etude train --out {} --resume",
                    last_path.display(),
                    out.display()
                ));
            }
            let msg = if last_shown.elapsed().as_secs_f64() > 0.5 {
                last_shown = Instant::now();
                let loss = stepper.last_batch_loss(b);
                if !loss.is_finite() {
                    reporter.finish();
                    return Err(diverged(out, epoch, &format!("the training loss became {loss}")));
                }
                Some(format!("loss {loss:.4}"))
            } else {
                None
            };
            reporter.step(msg);
        }
        // Validation (and everything after the loop) uses the model as it is: no dropout.
        model.set_dropout(None);
        let mut train_totals = stepper.take_totals(b);
        if before.steps > 0 {
            train_totals.loss_sum += before.loss_sum;
            train_totals.correct += before.correct;
            train_totals.rows += before.rows;
        }
        let seconds = before.seconds + started.elapsed().as_secs_f64();
        if !train_totals.loss().is_finite() {
            reporter.finish();
            return Err(diverged(out, epoch, &format!("the training loss became {}", train_totals.loss())));
        }
        // The held-out metric (crate::eval::heldout): every validation token after the first window.
        let mut stage = reporter.stage("validation", "targets", valid_scored);
        let (val, val_all_positions, val_scores) = crate::eval::validation::validation_totals(
            b,
            &mut model,
            &mut stepper,
            &valid_set,
            optim.batch,
            valid_picks.as_deref(),
            Some(&mut stage),
        );
        let val_done = stage.finish();
        // The last step may have broken the parameters after the training losses were taken:
        // neither a non-finite validation loss nor a non-finite parameter reaches a checkpoint.
        if val.rows > 0 && !val.loss().is_finite() {
            reporter.finish();
            return Err(diverged(out, epoch, &format!("the validation loss became {}", val.loss())));
        }
        let tensors = snapshot(b, &model, &adam);
        if let Some(t) = tensors.iter().find(|t| t.data.iter().any(|v| !v.is_finite())) {
            reporter.finish();
            return Err(diverged(out, epoch, &format!("{} became non-finite", t.name)));
        }
        progress.epoch = epoch;
        let row = EpochMetrics {
            epoch,
            step: progress.step,
            train_loss: train_totals.loss(),
            train_accuracy: train_totals.accuracy(),
            val_loss: val.loss(),
            val_perplexity: val.perplexity(),
            val_accuracy: val.accuracy(),
            seconds,
            tokens_per_s: train_totals.rows as f64 / seconds.max(1e-9),
        };
        let mut line = format!(
            "epoch {epoch}/{}: train loss {:.4} acc {:.3} | val loss {:.4} ppl {:.2} acc {:.3} | {:.1} s, {:.0} targets/s",
            opts.epochs,
            row.train_loss,
            row.train_accuracy,
            row.val_loss,
            row.val_perplexity,
            row.val_accuracy,
            row.seconds,
            row.tokens_per_s
        );
        if optim.lr_schedule != LrSchedule::Constant || optim.warmup_steps > 0 {
            line.push_str(&format!(" | lr {:.3e}", adam.hp.lr));
        }
        reporter.line(&line);
        if valid_scored > 0 {
            reporter.line(&format!("  validation: {val_done}"));
        }
        if let Some(all) = val_all_positions {
            reporter.line(&format!("  (validation loss over every position of the windows: {all:.4})"));
        }
        let improved = progress.record_validation((val.rows > 0).then(|| val.loss()));
        if improved {
            best_scores = val_scores;
        }
        let meta = checkpoint_meta(&model_cfg, &spec, &prepared, &optim, &progress, &valid_pieces, opts, epoch);
        let ck = Checkpoint {
            meta: serde_json::to_value(&meta).map_err(|e| e.to_string())?,
            tensors,
        };
        // Before the checkpoint: a crash in between leaves a row of an epoch that no checkpoint
        // holds, which --resume drops (metrics::trim) and writes again; never a row missing.
        log.push(row.fields().to_vec())?;
        ck.save(&last_path)?;
        if improved || val.rows == 0 {
            ck.save(&out.join("best.safetensors"))?;
        }
        if opts.checkpoint_every > 0 && epoch.is_multiple_of(opts.checkpoint_every) {
            ck.save(&out.join(format!("epoch-{epoch}.safetensors")))?;
        }
        draw_curve(out, &ck.meta, &log)?;
        last_meta = Some(ck.meta);
        metrics.push(row);
        if interrupted() && progress.epoch < opts.epochs {
            reporter.finish();
            return Err(format!(
                "interrupted after epoch {epoch}; {} holds it: continue with etude train --out {} --resume",
                last_path.display(),
                out.display()
            ));
        }
        if stopped(&progress) {
            reporter.line(&format!(
                "early stop after epoch {epoch}: the validation loss has not improved for {} epochs (--patience {}); best {:.4}",
                progress.epochs_without_improvement, optim.patience, progress.best_val_loss
            ));
        }
    }
    reporter.finish();
    Ok(TrainReport {
        best_scores,
        out: out.clone(),
        metrics,
        log,
        last_checkpoint: last_path,
        vocab_size: prepared.vocab.len(),
        train_windows: prepared.train.len(),
        valid_windows: prepared.valid.len(),
        skipped,
        stopped_early: stopped(&progress),
        last_meta,
        epochs_done: progress.epoch,
        short_pieces: prepared.short_piece_report(),
    })
}

/// End of an epoch: `loss.png` (with the n-gram baseline when the run has one) and `report.html`
/// (its settings from `meta`, those of the checkpoint just written), both from the metrics in
/// memory.
fn draw_curve(out: &Path, meta: &serde_json::Value, log: &MetricsLog) -> Result<(), String> {
    crate::run::plots::run_loss_curve_of(out, &log.losses(LOSS_COLUMNS))?;
    crate::run::report::write_report_with(out, Some(meta), Some(log.table())).map(|_| ())
}

/// A fresh model whose output depends on its input, and the [`Stepper`] that will train it. The simple WaveNet funnels everything through
/// one ReLU channel (`out_conv`, C -> 1); for many seeds that channel starts negative everywhere, so
/// no gradient ever reaches the convolutions and the model only learns the token frequencies (the
/// PyTorch fixture generator skips such seeds for the same reason). Such a draw is detected on a
/// few training windows (every row of logits equal) and redrawn from the same generator.
fn live_init<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    max_batch: usize,
    window: usize,
    seed: u64,
    train: &Dataset,
) -> Result<(AnyModel<B>, Stepper<B>), String> {
    const TRIES: usize = 20;
    let mut rng = Rng::new(seed);
    let probe: Vec<usize> = (0..train.len().min(8).min(max_batch)).map(|i| i * train.len() / 8).collect();
    let mut stepper: Option<Stepper<B>> = None;
    for attempt in 1..=TRIES {
        let mut model = AnyModel::new(b, cfg, max_batch, window, &mut rng)?;
        // Every draw has the same shapes: one stepper serves them all, then the training.
        let mut s = stepper.take().unwrap_or_else(|| Stepper::new(b, &model, max_batch));
        if probe.len() < 2 {
            return Ok((model, s));
        }
        let batch = train.batch_of(&probe, model.targets());
        let logits = s.logits(b, &mut model, &batch.x);
        let v = model.vocab();
        let first = &logits[..v];
        let alive = logits.chunks_exact(v).any(|row| row.iter().zip(first).any(|(a, b)| (a - b).abs() > 1e-6));
        if alive || attempt == TRIES {
            if attempt > 1 {
                eprintln!("note: initialisation redrawn {} time(s): the model's output did not depend on its input", attempt - 1);
            }
            return Ok((model, s));
        }
        stepper = Some(s);
    }
    unreachable!("the last attempt returns")
}

/// Refuses a vocabulary with nothing to learn: fewer than two tokens besides `<unk>` (every
/// target would be `<unk>`, or one token, and the run would report a perfect loss).
fn degenerate_vocab(vocab: &Vocab, min_count: u64) -> Result<(), String> {
    let kept = vocab.len() - 1;
    if kept >= 2 {
        return Ok(());
    }
    let cause = if min_count > 1 {
        format!("--min-count {min_count} keeps {kept} token(s) besides <unk> ({} occurrences became <unk>); lower --min-count", vocab.counts()[0])
    } else {
        format!("the training pieces hold {kept} distinct token(s)")
    };
    Err(format!("nothing to learn: {cause}"))
}

/// The option(s) that make a model big, for the error of a size check: of the sizes the user
/// gave (and --batch and --window), the one whose default shrinks the footprint most.
fn size_culprit(cfg: &ModelConfig, opts: &TrainOptions, optim: &OptimConfig, window: usize) -> String {
    let total = |cfg: &ModelConfig, batch: usize, window: usize| Footprint::of(cfg, batch, window, opts.sample_length > 0).total();
    let mut best: Option<(u128, String)> = None;
    let mut consider = |size: u128, flag: String| {
        if best.as_ref().is_none_or(|(s, _)| size < *s) {
            best = Some((size, flag));
        }
    };
    if !opts.resume {
        consider(total(cfg, 128, window), format!("--batch {}", optim.batch));
        let given = [
            ("embed", opts.sizes.embed),
            ("hidden", opts.sizes.hidden),
            ("layers", opts.sizes.layers),
            ("dense", opts.sizes.dense),
            ("channels", opts.sizes.channels),
            ("residual", opts.sizes.residual),
            ("skip", opts.sizes.skip),
            ("stacks", opts.sizes.stacks),
            ("attention", opts.sizes.attention),
            ("attention-dim", opts.sizes.attention_dim),
        ];
        for (flag, value) in given {
            let Some(v) = value else { continue };
            let mut sizes = opts.sizes.clone();
            match flag {
                "embed" => sizes.embed = None,
                "hidden" => sizes.hidden = None,
                "layers" => sizes.layers = None,
                "dense" => sizes.dense = None,
                "channels" => sizes.channels = None,
                "residual" => sizes.residual = None,
                "skip" => sizes.skip = None,
                "attention" => (sizes.attention, sizes.attention_dim) = (None, None),
                "attention-dim" => sizes.attention_dim = None,
                _ => sizes.stacks = None,
            }
            if let Ok(c) = ModelConfig::from_name(cfg.name(), cfg.vocab(), window, &sizes) {
                consider(total(&c, optim.batch, window), format!("--{flag} {v}"));
            }
        }
        if let Ok(c) = ModelConfig::from_name(cfg.name(), cfg.vocab(), 128, &opts.sizes) {
            consider(total(&c, optim.batch, 128), format!("--window {window}"));
        }
    }
    match best {
        Some((_, flag)) => flag,
        None => format!("--model {} (batch {}, window {window})", cfg.name(), optim.batch),
    }
}

/// The message of a run stopped because `what` (a loss or a tensor) became non-finite.
fn diverged(out: &Path, epoch: usize, what: &str) -> String {
    let last = out.join("last.safetensors");
    let kept = if last.exists() {
        format!("the last good checkpoint is kept in {}", last.display())
    } else {
        "no checkpoint had been written yet".to_string()
    };
    format!("training stopped in epoch {epoch}: {what} (non-finite); {kept}; try a lower --lr or a --clip")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuBackend;

    #[test]
    fn live_init_gives_a_simple_wavenet_that_reads_its_input() {
        let b = CpuBackend::new();
        let (v, t) = (12, 16);
        let seq: Vec<u32> = (0..400).map(|i| ((i * 7 + i / 3) % v) as u32).collect();
        let data = Dataset::new(vec![seq], Vec::new(), t, 1).unwrap();
        let cfg = ModelConfig::from_name("wavenet", v, t, &Sizes { channels: Some(4), layers: Some(3), dense: Some(6), ..Default::default() })
            .unwrap();
        let probe: Vec<usize> = (0..8).map(|i| i * 40).collect();
        let batch = data.batch_of(&probe, crate::data::dataset::Targets::Last);
        let mut ids = b.alloc_ids(8 * t);
        b.write_ids(&mut ids, &batch.x);
        let mut dead_draws = 0;
        for seed in 0..10 {
            // A plain draw may be dead; live_init's never is.
            let mut plain = AnyModel::new(&b, &cfg, 8, t, &mut Rng::new(seed)).unwrap();
            plain.forward(&b, &ids, 8);
            let l = b.read(&plain.logits().buf, 8 * v);
            if l.chunks_exact(v).all(|r| r == &l[..v]) {
                dead_draws += 1;
            }
            let (mut m, _) = live_init(&b, &cfg, 8, t, seed, &data).unwrap();
            m.forward(&b, &ids, 8);
            let l = b.read(&m.logits().buf, 8 * v);
            assert!(l.chunks_exact(v).any(|r| r != &l[..v]), "seed {seed}: output ignores the input");
        }
        assert!(dead_draws > 0, "the test shape should include dead draws, or it proves nothing");
    }
}
