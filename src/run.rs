//! The run and its checkpoints: what a run folder's `*.safetensors` hold besides the tensors
//! ([`Meta`]: model, data, vocabulary, optimizer settings, progress, the run's own options), reading
//! and checking one ([`load_checkpoint`], [`Loaded`]), and the mapping between a model with its
//! optimizer and a checkpoint's tensors ([`snapshot`], [`restore_adam`]). The file format itself
//! (safetensors, checksum, atomic writes) is [`crate::checkpoint`]'s.
//!
//! Generation and evaluation need only this module, never the training loop ([`crate::train`]).

use crate::checkpoint::{Checkpoint, HostTensor, EXP_AVG, EXP_AVG_SQ};
use crate::corpus::{load_corpus, no_usable_file, LoadedPiece, Skipped};
use crate::dataset::DataConfig;
use crate::engine::gpu::Precision;
use crate::engine::{Adam, Backend};
use crate::midi::ReadOptions;
use crate::model::any::{AnyModel, ModelConfig};
use crate::model::Model;
use crate::rng::Rng;
use crate::schedule::LrSchedule;
use crate::tokens::{tokenizer_by_name, Tokenizer, TokenizerOptions, Vocab};
use crate::verify::{available_memory, check_footprint, Footprint};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything about the data a model was trained on: stored in every checkpoint, so generation
/// and evaluation read and tokenise MIDI exactly as training did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    /// Files and folders given to `--data`; empty = the built-in corpus.
    #[serde(with = "crate::token_cache::path_json::vec")]
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

    /// Read the corpus; errors when no file is usable, naming the files skipped and why.
    pub fn load(&self) -> Result<(Vec<LoadedPiece>, Vec<Skipped>), String> {
        let corpus = load_corpus(&self.paths, &self.read);
        if corpus.pieces.is_empty() {
            let what = if self.paths.is_empty() { "the built-in corpus".to_string() } else { crate::corpus::describe_paths(&self.paths) };
            return Err(no_usable_file(&what, &corpus.skipped));
        }
        Ok((corpus.pieces, corpus.skipped))
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
    /// before that, and in older runs): [`crate::copy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<crate::copy::CopyMix>,
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

/// A loaded checkpoint: its metadata and tensors.
pub struct Loaded {
    pub meta: Meta,
    pub checkpoint: Checkpoint,
}

/// Read and check a checkpoint file: an etude checkpoint whose model matches its vocabulary and
/// whose tensors are all finite.
pub fn load_checkpoint(path: &Path) -> Result<Loaded, String> {
    Loaded::from_checkpoint(Checkpoint::load(path)?, path)
}

impl Loaded {
    /// [`load_checkpoint`] on a checkpoint already read from `path` (a command reads its
    /// checkpoint once, then decides what it is).
    pub fn from_checkpoint(checkpoint: Checkpoint, path: &Path) -> Result<Loaded, String> {
        let meta: Meta = serde_json::from_value(checkpoint.meta.clone())
            .map_err(|e| format!("{}: checkpoint metadata is not etude's ({e})", path.display()))?;
        if meta.model.vocab() != meta.vocab.len() {
            return Err(format!(
                "{}: the model has {} outputs but the vocabulary {} tokens",
                path.display(),
                meta.model.vocab(),
                meta.vocab.len()
            ));
        }
        // Training never saves a non-finite value, so one is damage (a flipped exponent bit).
        if let Some(t) = checkpoint.tensors.iter().find(|t| t.data.iter().any(|v| !v.is_finite())) {
            return Err(format!("{}: damaged checkpoint ({} holds non-finite values)", path.display(), t.name));
        }
        // Settings in range, vocabulary tokens the tokenizer reads, and exactly the model's tensors
        // (checked here, before any model is allocated from the config).
        let refuse = |e: String| format!("{}: damaged or foreign checkpoint ({e})", path.display());
        let tokenizer = meta.data.tokenizer().map_err(refuse)?;
        crate::verify::check_meta(&meta, tokenizer.as_ref()).map_err(refuse)?;
        crate::verify::check_tensors(&meta, &checkpoint).map_err(refuse)?;
        Ok(Loaded { meta, checkpoint })
    }

    /// A checkpoint in memory holding `model`'s current parameters (no optimizer state, so it
    /// cannot be resumed) and `meta`: for generating or evaluating with a model that was built
    /// rather than loaded (tests, tools).
    pub fn from_model<B: Backend>(b: &B, model: &AnyModel<B>, meta: Meta) -> Result<Loaded, String> {
        if meta.model.vocab() != meta.vocab.len() || model.vocab() != meta.vocab.len() {
            return Err(format!(
                "the model has {} outputs, its config {} and the vocabulary {} tokens",
                model.vocab(),
                meta.model.vocab(),
                meta.vocab.len()
            ));
        }
        let tensors = model
            .params()
            .iter()
            .map(|p| HostTensor { name: p.name.clone(), shape: p.value.shape.clone(), data: p.value.to_vec(b) })
            .collect();
        let checkpoint = Checkpoint { meta: serde_json::to_value(&meta).map_err(|e| e.to_string())?, tensors };
        Ok(Loaded { meta, checkpoint })
    }

    /// Build the model on `b` and load the parameters into it. `window` sizes its arena (the
    /// simple WaveNet accepts only its own window).
    pub fn model<B: Backend>(&self, b: &B, max_batch: usize, window: usize, origin: &Path) -> Result<AnyModel<B>, String> {
        let fp = Footprint::of(&self.meta.model, max_batch, window, false);
        let culprit = format!("{} with batch {max_batch}", origin.display());
        check_footprint(&fp, available_memory(), b.max_buffer_bytes().map(u128::from), &culprit)?;
        let mut model = AnyModel::new(b, &self.meta.model, max_batch, window, &mut Rng::new(0))?;
        for p in model.params_mut() {
            let t = self
                .checkpoint
                .tensor(&p.name)
                .ok_or_else(|| format!("{}: checkpoint has no tensor {}", origin.display(), p.name))?;
            if t.shape != p.value.shape {
                return Err(format!(
                    "{}: {} has shape {:?}, the model expects {:?}",
                    origin.display(),
                    p.name,
                    t.shape,
                    p.value.shape
                ));
            }
            p.value.set(b, &t.data);
        }
        Ok(model)
    }
}

/// Host copies of the parameters and Adam moments, under PyTorch's names.
pub fn snapshot<B: Backend>(b: &B, model: &AnyModel<B>, adam: &Adam<B>) -> Vec<HostTensor> {
    let mut out = Vec::new();
    for p in model.params() {
        out.push(HostTensor { name: p.name.clone(), shape: p.value.shape.clone(), data: p.value.to_vec(b) });
    }
    for (prefix, moments) in [(EXP_AVG, &adam.m), (EXP_AVG_SQ, &adam.v)] {
        for (p, m) in model.params().iter().zip(moments) {
            out.push(HostTensor { name: format!("{prefix}{}", p.name), shape: m.shape.clone(), data: m.to_vec(b) });
        }
    }
    out
}

/// Set `adam`'s moments from a checkpoint's `optimizer.exp_avg(_sq).*` tensors (resume).
pub fn restore_adam<B: Backend>(b: &B, model: &AnyModel<B>, adam: &mut Adam<B>, ck: &Checkpoint, origin: &Path) -> Result<(), String> {
    for (prefix, moments) in [(EXP_AVG, &mut adam.m), (EXP_AVG_SQ, &mut adam.v)] {
        for (p, m) in model.params().iter().zip(moments.iter_mut()) {
            let name = format!("{prefix}{}", p.name);
            let t = ck.tensor(&name).ok_or_else(|| format!("{}: checkpoint has no {name} to resume from", origin.display()))?;
            if t.shape != m.shape {
                return Err(format!("{}: {name} has shape {:?}, expected {:?}", origin.display(), t.shape, m.shape));
            }
            m.set(b, &t.data);
        }
    }
    Ok(())
}

/// Names of the pieces of `valid` that a checkpoint lists, as indices into `pieces`.
pub fn valid_indices(pieces: &[LoadedPiece], valid: &[String]) -> Vec<usize> {
    pieces.iter().enumerate().filter(|(_, p)| valid.contains(&p.name)).map(|(i, _)| i).collect()
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
}
