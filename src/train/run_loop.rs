//! The training loop of every kind of model (token models, piano-roll models): epochs and their
//! steps, the progress bar, the metrics rows, the checkpoints (`last`, `best`, `epoch-N` every
//! `checkpoint_every` epochs), early stopping, Ctrl-C and resuming part-way through an epoch.
//!
//! A kind ([`RunKind`]) plugs in what differs: its batches and training step, its validation, its
//! metrics row and the checkpoint it writes. The loop decides when each happens, so both kinds
//! checkpoint, resume, stop early and report alike.

use crate::model::step::Totals;
use crate::run::checkpoint::Checkpoint;
use crate::run::metrics::MetricsLog;
use crate::run::progress::Reporter;
use crate::run::{PartialEpoch, Progress};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// What a kind of model supplies to [`run_epochs`].
pub trait RunKind<B> {
    /// Steps in every epoch.
    fn steps_per_epoch(&self) -> u64;
    /// Begin epoch `epoch` (from 1), whose first `skip` steps were taken before an interruption.
    fn start_epoch(&mut self, b: &B, epoch: usize, skip: u64);
    /// Take the epoch's next step, the run's `step`-th (from 1); false when the epoch has no
    /// batch left.
    fn step(&mut self, b: &B, step: u64) -> bool;
    /// The loss of the latest batch (for the progress bar).
    fn last_loss(&mut self, b: &B) -> f64;
    /// The training totals of the steps since [`RunKind::start_epoch`] (or the last call), with
    /// the model left as validation uses it (no dropout).
    fn take_totals(&mut self, b: &B) -> Totals;
    /// Score the validation split at the end of `epoch`, whose training gave `train` in
    /// `seconds`: the validation loss, `None` when there was nothing to score.
    fn validate(&mut self, b: &B, epoch: usize, train: &Totals, seconds: f64, reporter: &Reporter) -> Result<Option<f64>, String>;
    /// The metrics row of the epoch just validated ([`RunKind::validate`]; `progress.epoch`) and
    /// the lines that tell the user; `best`: its validation loss is the lowest so far.
    fn epoch_row(&mut self, progress: &Progress, best: bool) -> (Vec<String>, Vec<String>);
    /// The checkpoints of the run at `progress` (`epoch`: the last complete epoch).
    fn checkpoint(&mut self, b: &B, progress: &Progress, epoch: usize) -> Result<Saved, String>;
    /// The error of a run stopped in `epoch` because `what` became non-finite.
    fn diverged(&self, epoch: usize, what: &str) -> String;
    /// The loss curve and the report of the run in `out`, from the metrics in memory and the
    /// settings of the checkpoint just written (`meta`).
    fn draw(&self, out: &Path, meta: &serde_json::Value, log: &MetricsLog) -> Result<(), String>;
}

/// The checkpoints of one moment of a run.
pub struct Saved {
    /// The model (`last`, `best`, `epoch-N.safetensors`).
    pub model: Checkpoint,
    /// All `--resume` needs, when the model's checkpoint does not hold it: written to
    /// [`RESUME_STATE`] beside it.
    pub state: Option<Checkpoint>,
}

/// The file that holds a run's state for `--resume` when its checkpoints hold only the model
/// (piano-roll runs).
pub const RESUME_STATE: &str = "resume.safetensors";

/// Where a run is and how it goes on.
pub struct Cadence<'a> {
    pub out: &'a Path,
    /// Train until this many epochs are complete.
    pub epochs: usize,
    /// Keep `epoch-N.safetensors` every N epochs (0 = never).
    pub checkpoint_every: usize,
    /// Stop after this many epochs without a better validation loss (0 = never).
    pub patience: usize,
    /// When the command started (the time to the first step is said once).
    pub begun: Instant,
}

/// Train `kind` from `progress` until `cadence.epochs` are complete or the run stops early,
/// writing a metrics row into `log` and the checkpoints every epoch. Returns the metadata of the
/// last checkpoint written (none when nothing was left to train).
pub fn run_epochs<B, K: RunKind<B>>(
    b: &B,
    kind: &mut K,
    cadence: &Cadence,
    progress: &mut Progress,
    log: &mut MetricsLog,
    reporter: &Reporter,
) -> Result<Option<serde_json::Value>, String> {
    let out = cadence.out;
    let last_path = out.join("last.safetensors");
    let stopped = |p: &Progress| p.stopped(cadence.patience);
    if stopped(progress) {
        reporter.line(&format!(
            "the run stopped early at epoch {}: no validation improvement in {} epochs (--patience {})",
            progress.epoch, progress.epochs_without_improvement, cadence.patience
        ));
    }
    if interrupted() {
        reporter.finish();
        return Err("interrupted before the first step: nothing was trained or written".into());
    }
    let steps_per_epoch = kind.steps_per_epoch();
    let mut last_meta = None;
    // The time to the first step (the goal of issue 16 for large corpora), said once.
    let mut first_step = true;
    while progress.epoch < cadence.epochs && !stopped(progress) {
        let epoch = progress.epoch + 1;
        reporter.start_epoch(epoch, cadence.epochs, steps_per_epoch);
        let started = Instant::now();
        // An epoch interrupted part-way (Ctrl-C) goes on after the steps it took.
        let before = progress.partial.take().unwrap_or_default();
        kind.start_epoch(b, epoch, before.steps);
        let mut last_shown = Instant::now();
        let mut taken = before.steps;
        while taken < steps_per_epoch {
            if std::mem::take(&mut first_step) {
                reporter.line(&format!("first step starts {:.2} s after the start", cadence.begun.elapsed().as_secs_f64()));
            }
            if !kind.step(b, progress.step + 1) {
                break;
            }
            progress.step += 1;
            taken += 1;
            if interrupted() && taken < steps_per_epoch {
                // Ctrl-C: the step is done; keep everything a resumed run needs to go on exactly.
                reporter.finish();
                let t = kind.take_totals(b);
                progress.partial = Some(PartialEpoch {
                    steps: taken,
                    loss_sum: before.loss_sum + t.loss_sum,
                    correct: before.correct + t.correct,
                    rows: before.rows + t.rows,
                    seconds: before.seconds + started.elapsed().as_secs_f64(),
                });
                let saved = kind.checkpoint(b, progress, epoch - 1)?;
                let path = match &saved.state {
                    Some(state) => {
                        let path = out.join(RESUME_STATE);
                        state.save(&path)?;
                        path
                    }
                    None => {
                        saved.model.save(&last_path)?;
                        last_path.clone()
                    }
                };
                return Err(format!(
                    "interrupted at epoch {epoch} step {taken} of {steps_per_epoch}; {} holds it: continue with etude train --out {} --resume",
                    path.display(),
                    out.display()
                ));
            }
            let msg = if last_shown.elapsed().as_secs_f64() > 0.5 {
                last_shown = Instant::now();
                let loss = kind.last_loss(b);
                if !loss.is_finite() {
                    reporter.finish();
                    return Err(kind.diverged(epoch, &format!("the training loss became {loss}")));
                }
                Some(format!("loss {loss:.4}"))
            } else {
                None
            };
            reporter.step(msg);
        }
        let mut train = kind.take_totals(b);
        if before.steps > 0 {
            train.loss_sum += before.loss_sum;
            train.correct += before.correct;
            train.rows += before.rows;
        }
        let seconds = before.seconds + started.elapsed().as_secs_f64();
        if !train.loss().is_finite() {
            reporter.finish();
            return Err(kind.diverged(epoch, &format!("the training loss became {}", train.loss())));
        }
        let val = kind.validate(b, epoch, &train, seconds, reporter).inspect_err(|_| reporter.finish())?;
        progress.epoch = epoch;
        let best = progress.record_validation(val);
        let (row, lines) = kind.epoch_row(progress, best);
        for line in &lines {
            reporter.line(line);
        }
        let saved = kind.checkpoint(b, progress, epoch).inspect_err(|_| reporter.finish())?;
        // Before the checkpoint: a crash in between leaves a row of an epoch that no checkpoint
        // holds, which --resume drops (metrics::trim) and writes again; never a row missing.
        log.push(row)?;
        saved.model.save(&last_path)?;
        if let Some(state) = &saved.state {
            state.save(&out.join(RESUME_STATE))?;
        }
        if best || val.is_none() {
            saved.model.save(&out.join("best.safetensors"))?;
        }
        if cadence.checkpoint_every > 0 && epoch.is_multiple_of(cadence.checkpoint_every) {
            saved.model.save(&out.join(format!("epoch-{epoch}.safetensors")))?;
        }
        kind.draw(out, &saved.model.meta, log)?;
        last_meta = Some(saved.model.meta);
        if interrupted() && progress.epoch < cadence.epochs {
            reporter.finish();
            return Err(format!(
                "interrupted after epoch {epoch}; {} holds it: continue with etude train --out {} --resume",
                last_path.display(),
                out.display()
            ));
        }
        if stopped(progress) {
            reporter.line(&format!(
                "early stop after epoch {epoch}: the validation loss has not improved for {} epochs (--patience {}); best {:.4}",
                progress.epochs_without_improvement, cadence.patience, progress.best_val_loss
            ));
        }
    }
    reporter.finish();
    Ok(last_meta)
}

/// Ctrl-Cs received since [`catch_interrupts`]: training stops after the step in progress.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// Whether Ctrl-C (SIGINT) was pressed since [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTS.load(Ordering::SeqCst) > 0
}

#[cfg(unix)]
extern "C" fn on_interrupt(_: libc::c_int) {
    // Async-signal-safe only: an atomic, write(2) and _exit(2).
    let n = INTERRUPTS.fetch_add(1, Ordering::SeqCst);
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
