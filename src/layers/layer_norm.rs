//! `nn.LayerNorm(width, eps)` over token-major rows `[rows, width]`.

use super::Layer;
use crate::engine::{self, Backend, Param};

/// LayerNorm; owns `{name}.weight` (ones) and `{name}.bias` (zeros), its output `y [rows, width]`
/// and the per-row statistics its backward reads.
pub struct LayerNorm<B: Backend> {
    pub weight: Param<B>,
    pub bias: Param<B>,
    pub width: usize,
    pub eps: f32,
    pub y: B::Buf,
    stats: B::Buf,
}

impl<B: Backend> LayerNorm<B> {
    /// PyTorch's initialisation, an output for `rows` rows.
    pub fn new(b: &B, name: &str, width: usize, eps: f32, rows: usize) -> Self {
        let weight = Param::declare(b, &format!("{name}.weight"), &[width], vec![1.0; width]);
        let bias = Param::declare(b, &format!("{name}.bias"), &[width], vec![0.0; width]);
        LayerNorm { weight, bias, width, eps, y: b.alloc(rows * width), stats: b.alloc_f32(2 * rows) }
    }

    fn op(&self, rows: usize) -> engine::LayerNorm {
        engine::LayerNorm { rows, width: self.width, eps: self.eps }
    }

    /// `y = LayerNorm(x)` over the first `rows` rows.
    pub fn forward(&mut self, b: &B, x: &B::Buf, rows: usize) {
        let ln = self.op(rows);
        b.layer_norm_fwd(x, &self.weight.value.buf, &self.bias.value.buf, &mut self.y, &mut self.stats, ln);
    }

    /// From `dy` and the forward's input `x`: accumulates the parameters' gradients and **adds**
    /// the input's gradient into `dx`.
    pub fn backward(&mut self, b: &B, x: &B::Buf, dy: &B::Buf, dx: &mut B::Buf, rows: usize) {
        let ln = self.op(rows);
        b.layer_norm_bwd(x, &self.weight.value.buf, &self.stats, dy, dx, &mut self.weight.grad.buf, &mut self.bias.grad.buf, ln);
    }
}

impl<B: Backend> Layer<B> for LayerNorm<B> {
    fn params(&self) -> Vec<&Param<B>> {
        vec![&self.weight, &self.bias]
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        vec![&mut self.weight, &mut self.bias]
    }
}
