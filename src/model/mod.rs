//! The models, each written once against [`Backend`]: `lstm` (lstm and lstm-seq), `wavenet`
//! (the tutorial's simple WaveNet) and `wavenet_gated`.
//!
//! A model owns its parameters (under their PyTorch `named_parameters()` names, in PyTorch's
//! order) and an activation arena sized for `max_batch` windows of its window length, allocated
//! once. `forward` leaves the logits in the arena and keeps what `backward` needs; `backward`
//! accumulates into every parameter's gradient.

pub mod any;
pub mod lstm;
pub mod wavenet;
pub mod wavenet_gated;

use crate::engine::{Backend, Dropout, Param, Tensor};
use crate::rng::Rng;

/// Where a model puts its targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// One target per window: the token after it (the tutorial's many-to-one).
    Last,
    /// One target per position: the token after each input token (many-to-many).
    Every,
}

pub trait Model<B: Backend> {
    /// Parameters in PyTorch's `named_parameters()` order.
    fn params(&self) -> &[Param<B>];
    fn params_mut(&mut self) -> &mut [Param<B>];
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
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("the model has no parameter named {name}"))?;
        if p.value.len() != data.len() {
            return Err(format!("{name}: expected {:?} ({} values), got {}", p.value.shape, p.value.len(), data.len()));
        }
        p.value.set(b, data);
        Ok(())
    }
}

/// PyTorch's default initialisations, drawn from our seeded [`Rng`].
pub mod init {
    use super::Rng;

    /// `U(-bound, bound)`: `nn.Linear` / `nn.Conv1d` (kaiming-uniform with a = sqrt(5) gives
    /// `bound = 1/sqrt(fan_in)` for the weight, and the bias uses the same bound) and `nn.LSTM`
    /// (`bound = 1/sqrt(H)`).
    pub fn uniform(rng: &mut Rng, n: usize, bound: f32) -> Vec<f32> {
        (0..n).map(|_| rng.uniform_range(-bound, bound)).collect()
    }

    /// `N(0, 1)`: `nn.Embedding`.
    pub fn normal(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.normal()).collect()
    }
}
