//! Reading and checking a checkpoint ([`load_checkpoint`], [`Loaded`]), and the mapping between
//! a model with its optimizer and a checkpoint's tensors ([`snapshot`], [`restore_adam`]).

use crate::data::corpus::LoadedPiece;
use crate::engine::{Adam, Backend};
use crate::model::any::AnyModel;
use crate::model::Model;
use crate::rng::Rng;
use crate::run::checkpoint::{Checkpoint, HostTensor, EXP_AVG, EXP_AVG_SQ};
use crate::run::meta::Meta;
use crate::run::verify::{available_memory, check_footprint, Footprint};
use std::path::Path;

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
        crate::run::verify::check_meta(&meta, tokenizer.as_ref()).map_err(refuse)?;
        crate::run::verify::check_tensors(&meta, &checkpoint).map_err(refuse)?;
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

/// Set `adam`'s moments, one per parameter of `names` (the model's order), from a checkpoint's
/// `optimizer.exp_avg(_sq).<name>` tensors (resume, token and piano-roll runs alike): each must be
/// there, of its moment's shape, and finite.
pub fn restore_adam<B: Backend>(b: &B, names: &[String], adam: &mut Adam<B>, ck: &Checkpoint, origin: &str) -> Result<(), String> {
    for (prefix, moments) in [(EXP_AVG, &mut adam.m), (EXP_AVG_SQ, &mut adam.v)] {
        for (name, m) in names.iter().zip(moments.iter_mut()) {
            let name = format!("{prefix}{name}");
            let t = ck.tensor(&name).ok_or_else(|| format!("{origin}: checkpoint has no {name} to resume from"))?;
            if t.shape != m.shape {
                return Err(format!("{origin}: {name} has shape {:?}, expected {:?}", t.shape, m.shape));
            }
            if t.data.iter().any(|v| !v.is_finite()) {
                return Err(format!("{origin}: damaged state ({name} holds non-finite values)"));
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
