//! The models, each written once against [`Backend`]: `lstm` (lstm and lstm-seq), `wavenet`
//! (the tutorial's simple WaveNet) and `wavenet_gated`.
//!
//! A model is a struct of named layers ([`crate::layers`]), each owning its parameters (under
//! their PyTorch `named_parameters()` names; the model lists them in PyTorch's order) and its
//! activations, sized for `max_batch` windows of the model's window length, allocated once. `forward` leaves the logits in the arena and keeps what `backward` needs; `backward`
//! accumulates into every parameter's gradient.

pub mod any;
pub mod copy;
pub mod lstm;
pub mod roll;
pub mod roll_nade;
pub mod step;
pub mod transformer;
pub mod wavenet;
pub mod wavenet_gated;

use crate::data::dataset::Targets;
use crate::engine::{Backend, Dropout, Param, Tensor};

pub trait Model<B: Backend> {
    /// Parameters in PyTorch's `named_parameters()` order, each owned by one of the model's
    /// layers (on the GPU, views into the model's one arena: [`crate::engine::optim`]).
    fn params(&self) -> Vec<&Param<B>>;
    fn params_mut(&mut self) -> Vec<&mut Param<B>>;
    /// Vocabulary size V: the width of every logits row.
    fn vocab(&self) -> usize;
    /// Window length T the arena was sized for (the simple WaveNet needs exactly T).
    fn window(&self) -> usize;
    fn targets(&self) -> Targets;
    /// Forward pass over `x [batch, T]` token ids (`batch <= max_batch`, `T = window()`), leaving
    /// the logits in [`Model::logits`]: `[batch, V]` for [`Targets::Last`], `[batch, T, V]` for
    /// [`Targets::Every`] (row `b*T + t` predicts the token after `x[b, t]`).
    fn forward(&mut self, b: &B, x: &B::Ids, batch: usize);
    /// The logits of the last forward pass (the arena's buffer: only the first rows are valid).
    fn logits(&self) -> &Tensor<B>;
    /// Backward pass of the last forward, from `dlogits` (laid out as the logits), accumulating
    /// every parameter's gradient.
    fn backward(&mut self, b: &B, x: &B::Ids, dlogits: &B::Buf, batch: usize);

    /// Dropout for the next forward and backward: `Some` during a training step (see
    /// [`crate::engine::dropout`]), `None` (the default, and what evaluation and generation use)
    /// for none. A model without dropout sites ignores it.
    fn set_dropout(&mut self, _d: Option<Dropout>) {}

    /// Number of target rows of a batch: `batch` or `batch * T`.
    fn target_rows(&self, batch: usize) -> usize {
        match self.targets() {
            Targets::Last => batch,
            Targets::Every => batch * self.window(),
        }
    }

    /// Replace a parameter's values by name (loading PyTorch weights or a checkpoint).
    fn set_param(&mut self, b: &B, name: &str, data: &[f32]) -> Result<(), String> {
        let p = self
            .params_mut()
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("the model has no parameter named {name}"))?;
        if p.value.len() != data.len() {
            return Err(format!("{name}: expected {:?} ({} values), got {}", p.value.shape, p.value.len(), data.len()));
        }
        p.value.set(b, data);
        Ok(())
    }
}

/// PyTorch's default initialisations (they live with the layers).
pub use crate::layers::init;
