//! `nn.Embedding`: a table of `vocab` rows of width `e`, looked up by token id.

use super::{init, Layer};
use crate::engine::{Backend, Param};
use crate::rng::Rng;

/// `out [n, e] = weight[ids]`; owns `weight [vocab, e]` and its output for `rows` ids.
pub struct Embedding<B: Backend> {
    pub weight: Param<B>,
    pub e: usize,
    /// The looked-up rows `[rows, e]` (what the layers above read).
    pub out: B::Buf,
}

impl<B: Backend> Embedding<B> {
    /// PyTorch's initialisation `N(0, 1)`, an output for `rows` ids.
    pub fn new(b: &B, name: &str, vocab: usize, e: usize, rows: usize, rng: &mut Rng) -> Self {
        let weight = Param::declare(b, &format!("{name}.weight"), &[vocab, e], init::normal(rng, vocab * e));
        Embedding { weight, e, out: b.alloc(rows * e) }
    }

    /// `out[i] = weight[ids[i]]` for the first `n` ids.
    pub fn forward(&mut self, b: &B, ids: &B::Ids, n: usize) {
        b.embedding_fwd(ids, &self.weight.value.buf, &mut self.out, n, self.e);
    }

    /// `weight.grad[ids[i]] += dout[i]` (repeated ids accumulate).
    pub fn backward(&mut self, b: &B, ids: &B::Ids, dout: &B::Buf, n: usize) {
        b.embedding_bwd(ids, dout, &mut self.weight.grad.buf, n, self.e);
    }
}

impl<B: Backend> Layer<B> for Embedding<B> {
    fn params(&self) -> Vec<&Param<B>> {
        vec![&self.weight]
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        vec![&mut self.weight]
    }
}
