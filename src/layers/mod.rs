//! Layer types that own their parameters (under PyTorch's names) and their activations, each
//! with its forward and backward written once against [`Backend`] with the existing ops:
//!
//! ```text
//! layers/
//!   mod.rs          the Layer trait (a layer's parameters in PyTorch's order), PyTorch's inits
//!   embedding.rs    Embedding: ids -> rows of a table
//!   linear.rs       Linear: x W^T + b
//!   conv1d.rs       Conv1d: causal, dilated, over [batch, channels, time]; one-column step mode
//!   lstm.rs         Lstm: one layer (input projection + recurrence)
//!   lstm_stack.rs   LstmStack: Lstm layers with inter-layer dropout; step mode from a carried state
//!   attention.rs    CausalAttention: q, k, v, o 1x1 convs around the attention op
//!   dropout.rs      DropSite: a dropout site (tensor id), the identity when dropout is off
//!   bag.rs          BagInput: the piano-roll input projection (sum of the active keys' rows + bias)
//!   gated.rs        GatedStack: the gated WaveNet's residual blocks and skip sum (token and roll models)
//!   layer_norm.rs   LayerNorm: over token-major rows (the Transformer's)
//!   rel_attention.rs RelSelfAttention: qkv, relative attention, proj; one-step mode over a ring cache
//!   nade.rs         NadeHead: the piano-roll models' joint output (RNN-NADE) over the NADE op
//! ```
//!
//! A layer declares its parameters ([`crate::engine::arena::Param::declare`]: name, shape, initial
//! values) without storage. A model ([`crate::model`]) is a struct of these, lists their parameters
//! in PyTorch's order (what the optimizer, the checkpoint and [`crate::engine::arena::into_arena`]
//! walk; `into_arena`, at the end of every model's constructor, gives them their storage), and writes
//! its wiring (which layer feeds which) once: training, evaluation and generation run the same
//! forward.

pub mod attention;
pub mod bag;
pub mod conv1d;
pub mod dropout;
pub mod embedding;
pub mod gated;
pub mod layer_norm;
pub mod linear;
pub mod lstm;
pub mod lstm_stack;
pub mod nade;
pub mod rel_attention;

pub use attention::CausalAttention;
pub use bag::BagInput;
pub use conv1d::Conv1d;
pub use dropout::DropSite;
pub use embedding::Embedding;
pub use gated::{GatedBlock, GatedStack};
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use lstm::{Lstm, LstmScratch};
pub use lstm_stack::{LstmRun, LstmStack, LstmState};
pub use nade::NadeHead;
pub use rel_attention::RelSelfAttention;

use crate::engine::{Backend, Param};

/// What every layer has: its parameters, in PyTorch's `named_parameters()` order.
pub trait Layer<B: Backend> {
    fn params(&self) -> Vec<&Param<B>>;
    fn params_mut(&mut self) -> Vec<&mut Param<B>>;
}

/// PyTorch's default initialisations, drawn from our seeded [`Rng`](crate::rng::Rng).
pub mod init {
    use crate::rng::Rng;

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
