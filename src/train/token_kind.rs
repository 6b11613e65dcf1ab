//! Token models in the training loop ([`crate::train::run_loop`]): their batches of windows, one
//! step of [`Stepper`], the held-out validation, the `metrics.csv` row and the checkpoint that
//! holds everything `--resume` needs (parameters, Adam moments and step, settings, vocabulary).

use crate::data::dataset::{Batches, Targets};
use crate::data::prepare::Prepared;
use crate::engine::{Adam, Backend, Dropout};
use crate::eval::targets::TargetSet;
use crate::eval::validation::Scores;
use crate::model::any::{AnyModel, ModelConfig};
use crate::model::step::{Stepper, Totals};
use crate::model::Model;
use crate::rng::Rng;
use crate::run::checkpoint::Checkpoint;
use crate::run::metrics::{EpochMetrics, MetricsLog, LOSS_COLUMNS};
use crate::run::progress::Reporter;
use crate::run::schedule::{lr_at, LrSchedule};
use crate::run::{snapshot, DataSpec, Meta, OptimConfig, Progress, RunSettings};
use crate::train::run_loop::{RunKind, Saved};
use std::path::{Path, PathBuf};

/// A token model being trained, with what it trains and validates on.
pub struct TokenKind<'a, B: Backend> {
    pub model: AnyModel<B>,
    pub stepper: Stepper<B>,
    pub adam: Adam<B>,
    pub prepared: &'a Prepared,
    pub model_cfg: ModelConfig,
    pub spec: DataSpec,
    pub optim: OptimConfig,
    pub run: RunSettings,
    pub valid_pieces: Vec<String>,
    pub valid_set: TargetSet,
    /// The validation targets scored every epoch (`None`: all).
    pub valid_picks: Option<Vec<usize>>,
    pub steps_per_epoch: u64,
    /// Train until this many epochs are complete (for the epoch's line).
    pub epochs: usize,
    pub out: PathBuf,
    /// Every epoch's row, this call's.
    pub metrics: Vec<EpochMetrics>,
    /// The validation scores of the best epoch of this call.
    pub best_scores: Option<Scores>,
    batches: Option<Batches<'a>>,
    /// The epoch's validation as scored, until its row is made.
    scored: Option<Scored>,
}

/// One epoch's figures between [`RunKind::validate`] and [`RunKind::epoch_row`].
struct Scored {
    row: EpochMetrics,
    valid_line: Option<String>,
    all_positions: Option<f64>,
    scores: Option<Scores>,
}

impl<'a, B: Backend> TokenKind<'a, B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: AnyModel<B>,
        stepper: Stepper<B>,
        adam: Adam<B>,
        prepared: &'a Prepared,
        model_cfg: ModelConfig,
        spec: DataSpec,
        optim: OptimConfig,
        run: RunSettings,
        valid_set: TargetSet,
        valid_picks: Option<Vec<usize>>,
        steps_per_epoch: u64,
        epochs: usize,
        out: PathBuf,
    ) -> Self {
        let valid_pieces = prepared.split.valid.iter().map(|&i| prepared.names[i].clone()).collect();
        TokenKind {
            model,
            stepper,
            adam,
            prepared,
            model_cfg,
            spec,
            optim,
            run,
            valid_pieces,
            valid_set,
            valid_picks,
            steps_per_epoch,
            epochs,
            out,
            metrics: Vec::new(),
            best_scores: None,
            batches: None,
            scored: None,
        }
    }

    /// The validation targets scored every epoch.
    pub fn valid_scored(&self) -> u64 {
        self.valid_picks.as_ref().map_or(self.valid_set.len(), Vec::len) as u64
    }

    /// The metadata of the checkpoint written after `epoch` epochs.
    fn meta(&self, progress: &Progress, epoch: usize) -> Meta {
        Meta {
            etude_version: env!("CARGO_PKG_VERSION").to_string(),
            model: self.model_cfg.clone(),
            data: self.spec.clone(),
            vocab: self.prepared.vocab.clone(),
            optim: self.optim.clone(),
            progress: progress.clone(),
            valid_pieces: self.valid_pieces.clone(),
            rng: Rng::new(self.optim.seed ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407)),
            run: self.run.clone(),
            copy: None,
        }
    }
}

impl<'a, B: Backend> RunKind<B> for TokenKind<'a, B> {
    fn steps_per_epoch(&self) -> u64 {
        self.steps_per_epoch
    }

    fn start_epoch(&mut self, b: &B, epoch: usize, skip: u64) {
        self.stepper.take_totals(b);
        let targets: Targets = self.model.targets();
        let mut batches = self.prepared.train.batches(self.optim.batch, targets, self.optim.seed, epoch as u64, false);
        for _ in 0..skip {
            batches.next();
        }
        self.batches = Some(batches);
    }

    fn step(&mut self, b: &B, step: u64) -> bool {
        let Some(batch) = self.batches.as_mut().and_then(Iterator::next) else { return false };
        // The schedule and the dropout masks are functions of the step being taken.
        let o = &self.optim;
        self.adam.hp.lr = lr_at(o.lr_schedule, o.lr, o.min_lr, o.warmup_steps, o.schedule_steps, step);
        if o.dropout > 0.0 {
            self.model.set_dropout(Some(Dropout { p: o.dropout, seed: o.seed, step }));
        }
        self.stepper.train(b, &mut self.model, &mut self.adam, &batch.x, &batch.y);
        true
    }

    fn last_loss(&mut self, b: &B) -> f64 {
        self.stepper.last_batch_loss(b)
    }

    fn take_totals(&mut self, b: &B) -> Totals {
        // Validation (and everything after the loop) uses the model as it is: no dropout.
        self.model.set_dropout(None);
        self.stepper.take_totals(b)
    }

    fn validate(&mut self, b: &B, epoch: usize, train: &Totals, seconds: f64, reporter: &Reporter) -> Result<Option<f64>, String> {
        // The held-out metric (crate::eval::heldout): every validation token after the first window.
        let valid_scored = self.valid_scored();
        let mut stage = reporter.stage("validation", "targets", valid_scored);
        let (val, all_positions, scores) = crate::eval::validation::validation_totals(
            b,
            &mut self.model,
            &mut self.stepper,
            &self.valid_set,
            self.optim.batch,
            self.valid_picks.as_deref(),
            Some(&mut stage),
        );
        let val_done = stage.finish();
        // The last step may have broken the parameters after the training losses were taken:
        // neither a non-finite validation loss nor a non-finite parameter reaches a checkpoint.
        if val.rows > 0 && !val.loss().is_finite() {
            return Err(self.diverged(epoch, &format!("the validation loss became {}", val.loss())));
        }
        let row = EpochMetrics {
            epoch,
            step: 0,
            train_loss: train.loss(),
            train_accuracy: train.accuracy(),
            val_loss: val.loss(),
            val_perplexity: val.perplexity(),
            val_accuracy: val.accuracy(),
            seconds,
            tokens_per_s: train.rows as f64 / seconds.max(1e-9),
        };
        let valid_line = (valid_scored > 0).then(|| format!("  validation: {val_done}"));
        self.scored = Some(Scored { row, valid_line, all_positions, scores });
        Ok((val.rows > 0).then(|| val.loss()))
    }

    fn epoch_row(&mut self, progress: &Progress, best: bool) -> (Vec<String>, Vec<String>) {
        let Scored { mut row, valid_line, all_positions, scores } = self.scored.take().expect("validate comes first");
        let epoch = progress.epoch;
        row.step = progress.step;
        let mut line = format!(
            "epoch {epoch}/{}: train loss {:.4} acc {:.3} | val loss {:.4} ppl {:.2} acc {:.3} | {:.1} s, {:.0} targets/s",
            self.epochs, row.train_loss, row.train_accuracy, row.val_loss, row.val_perplexity, row.val_accuracy, row.seconds, row.tokens_per_s
        );
        if self.optim.lr_schedule != LrSchedule::Constant || self.optim.warmup_steps > 0 {
            line.push_str(&format!(" | lr {:.3e}", self.adam.hp.lr));
        }
        let mut lines = vec![line];
        lines.extend(valid_line);
        if let Some(all) = all_positions {
            lines.push(format!("  (validation loss over every position of the windows: {all:.4})"));
        }
        if best {
            self.best_scores = scores;
        }
        let fields = row.fields().to_vec();
        self.metrics.push(row);
        (fields, lines)
    }

    fn checkpoint(&mut self, b: &B, progress: &Progress, epoch: usize) -> Result<Saved, String> {
        let tensors = snapshot(b, &self.model, &self.adam);
        if let Some(t) = tensors.iter().find(|t| t.data.iter().any(|v| !v.is_finite())) {
            // In the epoch after `epoch` when it was interrupted part-way.
            let stopped_in = if progress.partial.is_some() { epoch + 1 } else { epoch };
            return Err(self.diverged(stopped_in, &format!("{} became non-finite", t.name)));
        }
        let meta = serde_json::to_value(self.meta(progress, epoch)).map_err(|e| e.to_string())?;
        Ok(Saved { model: Checkpoint { meta, tensors }, state: None })
    }

    fn diverged(&self, epoch: usize, what: &str) -> String {
        let last = self.out.join("last.safetensors");
        let kept = if last.exists() {
            format!("the last good checkpoint is kept in {}", last.display())
        } else {
            "no checkpoint had been written yet".to_string()
        };
        format!("training stopped in epoch {epoch}: {what} (non-finite); {kept}; try a lower --lr or a --clip")
    }

    fn draw(&self, out: &Path, meta: &serde_json::Value, log: &MetricsLog) -> Result<(), String> {
        draw_curve(out, meta, log, LOSS_COLUMNS)
    }
}

/// End of an epoch: `loss.png` (with the n-gram baseline when the run has one) and `report.html`
/// (its settings from `meta`, those of the checkpoint just written), both from the metrics in
/// memory; the losses stand in the columns `losses` of its rows.
pub fn draw_curve(out: &Path, meta: &serde_json::Value, log: &MetricsLog, losses: (usize, usize)) -> Result<(), String> {
    crate::run::plots::run_loss_curve_of(out, &log.losses(losses))?;
    crate::run::report::write_report_with(out, Some(meta), Some(log.table())).map(|_| ())
}
