//! What a run folder's `*.safetensors` hold besides the tensors ([`Meta`]: model, data,
//! vocabulary, optimizer settings, progress, the run's own options), and the data a run reads
//! ([`DataSpec`]: its corpus, tokenised through the token cache).

use crate::data::corpus::{describe_paths, load_corpus, no_usable_file, LoadedPiece, Skipped};
use crate::data::prepare::DataConfig;
use crate::data::token_cache::{load_or_build, tokenize_files, Outcome};
use crate::data::cache_file::CacheKey;
use crate::data::token_set::TokenSet;
use crate::engine::gpu::Precision;
use crate::music::midi::ReadOptions;
use crate::model::any::ModelConfig;
use crate::rng::Rng;
use crate::run::schedule::LrSchedule;
use crate::music::tokens::{tokenizer_by_name, Tokenizer, TokenizerOptions, Vocab};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything about the data a model was trained on: stored in every checkpoint, so generation
/// and evaluation read and tokenise MIDI exactly as training did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    /// Files and folders given to `--data`; empty = the built-in corpus.
    #[serde(with = "crate::files::path_json::vec")]
    pub paths: Vec<PathBuf>,
    pub read: ReadOptions,
    pub tokenizer: String,
    pub tokenizer_options: TokenizerOptions,
    pub data: DataConfig,
}

impl DataSpec {
    pub fn tokenizer(&self) -> Result<Box<dyn Tokenizer>, String> {
        tokenizer_by_name(&self.tokenizer, &self.tokenizer_options)
    }

    /// The error when no file of the spec's corpus is usable, naming the files skipped and why.
    fn no_usable_file(&self, skipped: &[Skipped]) -> String {
        let what = if self.paths.is_empty() { "the built-in corpus".to_string() } else { describe_paths(&self.paths) };
        no_usable_file(&what, skipped)
    }

    /// Read the corpus; errors when no file is usable, naming the files skipped and why.
    pub fn load(&self) -> Result<(Vec<LoadedPiece>, Vec<Skipped>), String> {
        let corpus = load_corpus(&self.paths, &self.read);
        if corpus.pieces.is_empty() {
            return Err(self.no_usable_file(&corpus.skipped));
        }
        Ok((corpus.pieces, corpus.skipped))
    }
}

impl DataSpec {
    /// The spec's corpus tokenised: from the token cache in `cache` (see [`crate::data::token_cache::load_or_build`]), or
    /// read and tokenised in memory when `cache` is `None`. Errors when no file is usable, naming
    /// the files skipped and why.
    pub fn tokens(&self, cache: Option<&Path>, progress: bool) -> Result<TokenSet, String> {
        let tokenizer = self.tokenizer()?;
        let set = match cache {
            Some(dir) => {
                let key = CacheKey {
                    paths: self.paths.clone(),
                    read: self.read.clone(),
                    tokenizer: self.tokenizer.clone(),
                    tokenizer_options: self.tokenizer_options.clone(),
                };
                let (set, outcome) = load_or_build(dir, &key, tokenizer.as_ref(), false, progress)?;
                if outcome == Outcome::Hit {
                    eprintln!(
                        "{} pieces, {} tokens from the token cache {}",
                        set.len(),
                        set.total_ids(),
                        set.source().map(|p| p.display().to_string()).unwrap_or_default()
                    );
                }
                set
            }
            None => tokenize_files(&self.paths, &self.read, tokenizer.as_ref(), progress),
        };
        if set.is_empty() {
            return Err(self.no_usable_file(set.skipped()));
        }
        Ok(set)
    }
}

/// Optimisation settings (stored in checkpoints; a resumed run keeps them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub batch: usize,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Global gradient-norm clip; 0 = off.
    pub clip: f32,
    /// Seed of the initialisation and of the window order.
    pub seed: u64,
    /// Cap on the steps of each epoch (quick trials and tests; None = every window once). Stored
    /// so that a resumed run keeps the epoch length of the run it continues.
    #[serde(default)]
    pub steps_per_epoch: Option<u64>,
    /// How the GPU backend stores weights and activations (f32 for runs saved before the option
    /// existed). The caller opens the backend at this precision; a resumed run keeps it.
    #[serde(default)]
    pub precision: Precision,
    /// Inverted dropout rate in [0, 1) (training steps only; 0 = off). Issue 13, like the fields
    /// below: each defaults to off, so a checkpoint saved before they existed resumes unchanged.
    #[serde(default)]
    pub dropout: f32,
    /// AdamW's decoupled weight decay (0 = off), beside the L2 `weight_decay`.
    #[serde(default)]
    pub adamw_decay: f32,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    /// Steps of linear warm-up from 0 to `lr` (0 = none).
    #[serde(default)]
    pub warmup_steps: u64,
    /// The cosine schedule's floor.
    #[serde(default)]
    pub min_lr: f32,
    /// The step at which the cosine schedule reaches `min_lr`: `--epochs` times the steps of an
    /// epoch when the run starts (0 until then, and for a constant schedule); a resumed run keeps it.
    #[serde(default)]
    pub schedule_steps: u64,
    /// Stop when the validation loss has not improved for this many epochs (0 = never).
    #[serde(default)]
    pub patience: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            batch: 128,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            clip: 1.0,
            seed: 0,
            steps_per_epoch: None,
            precision: Precision::F32,
            dropout: 0.0,
            adamw_decay: 0.0,
            lr_schedule: LrSchedule::Constant,
            warmup_steps: 0,
            min_lr: 0.0,
            schedule_steps: 0,
            patience: 0,
        }
    }
}

/// Where a run stands: stored in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: u64,
    /// Lowest validation loss so far (NaN-free; infinity when there is no validation set).
    /// JSON has no infinity: it is written as `null` and read back as infinity.
    #[serde(deserialize_with = "infinity_from_null")]
    pub best_val_loss: f64,
    /// Epochs since the validation loss last improved (early stopping, `--patience`).
    #[serde(default)]
    pub epochs_without_improvement: usize,
    /// An epoch stopped part-way (Ctrl-C): the steps of epoch `epoch + 1` already taken and their
    /// training totals, from which `--resume` continues it. Absent from every checkpoint written
    /// at the end of an epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<PartialEpoch>,
}

/// The part of an epoch taken before an interruption ([`Progress::partial`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// Steps of the epoch taken.
    pub steps: u64,
    /// Their summed training loss, correct predictions and target rows.
    pub loss_sum: f64,
    pub correct: f64,
    pub rows: usize,
    /// Seconds they took.
    pub seconds: f64,
}

impl Default for Progress {
    /// A run that has not started.
    fn default() -> Self {
        Progress { epoch: 0, step: 0, best_val_loss: f64::INFINITY, epochs_without_improvement: 0, partial: None }
    }
}

impl Progress {
    /// The rule of both training loops (token and piano-roll models) at the end of an epoch:
    /// `loss`, its validation loss (`None` when there was nothing to validate on, which changes
    /// nothing), is the best so far when it is below every earlier one (NaN never is); otherwise
    /// one more epoch without improvement. Returns whether it is the best.
    pub fn record_validation(&mut self, loss: Option<f64>) -> bool {
        let Some(loss) = loss else { return false };
        if loss < self.best_val_loss {
            self.best_val_loss = loss;
            self.epochs_without_improvement = 0;
            true
        } else {
            self.epochs_without_improvement += 1;
            false
        }
    }

    /// Early stopping: `patience` epochs (0 = never) without improvement.
    pub fn stopped(&self, patience: usize) -> bool {
        patience > 0 && self.epochs_without_improvement >= patience
    }
}

/// A loss that JSON wrote as `null` (infinity: no validation window yet) reads back as infinity.
fn infinity_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::INFINITY))
}

/// The JSON metadata of an etude checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub etude_version: String,
    pub model: ModelConfig,
    pub data: DataSpec,
    pub vocab: Vocab,
    pub optim: OptimConfig,
    pub progress: Progress,
    /// Names of the validation pieces (the default data of `etude eval`).
    pub valid_pieces: Vec<String>,
    /// A generator state derived from the seed and the epoch, for whatever randomness comes next
    /// (the sample written at the end of training).
    pub rng: Rng,
    /// The run's own options that `--resume` keeps unless given again (absent in older runs).
    #[serde(default)]
    pub run: RunSettings,
    /// The copy mixture's weights, fitted on the validation pieces at the end of training (absent
    /// before that, and in older runs): [`crate::model::copy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<crate::model::copy::CopyMix>,
}

/// Options of a run that are not the model's, data's or optimizer's but that `--resume` keeps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    /// `--checkpoint-every` (None: a run saved before it was stored).
    pub checkpoint_every: Option<usize>,
    /// `--sample-length`.
    pub sample_length: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_infinite_best_loss_round_trips_through_json() {
        // JSON has no infinity: serde_json writes null, which older etude could not read back.
        let p = Progress { epoch: 2, step: 4, best_val_loss: f64::INFINITY, ..Progress::default() };
        let json = serde_json::to_value(&p).unwrap();
        assert!(json["best_val_loss"].is_null());
        assert_eq!(serde_json::from_value::<Progress>(json).unwrap(), p);
        let finite = Progress { best_val_loss: 1.25, ..p };
        assert_eq!(serde_json::from_value::<Progress>(serde_json::to_value(&finite).unwrap()).unwrap(), finite);
        // A run's settings are optional: older checkpoints have none.
        assert_eq!(serde_json::from_str::<RunSettings>("{}").unwrap(), RunSettings::default());
    }

    /// The best-epoch and early-stopping rule both training loops share.
    #[test]
    fn validation_records_the_best_and_counts_the_epochs_without_improvement() {
        let mut p = Progress::default();
        assert!(p.record_validation(Some(3.0)));
        assert!(!p.record_validation(None), "nothing validated: nothing changes");
        assert_eq!((p.best_val_loss, p.epochs_without_improvement), (3.0, 0));
        assert!(!p.record_validation(Some(3.0)), "equal is no improvement");
        assert!(!p.record_validation(Some(f64::NAN)));
        assert_eq!(p.epochs_without_improvement, 2);
        assert!(p.stopped(2) && !p.stopped(3) && !p.stopped(0));
        assert!(p.record_validation(Some(2.5)));
        assert_eq!((p.best_val_loss, p.epochs_without_improvement), (2.5, 0));
        assert!(!p.stopped(1));
    }
}
