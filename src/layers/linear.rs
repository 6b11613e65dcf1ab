//! `nn.Linear`: `y [rows, out] = x [rows, in] W^T + bias`, as one matrix product and a bias add.

use super::{init, Layer};
use crate::engine::{Backend, MatMul, Param, Tensor};
use crate::rng::Rng;

/// A dense layer; owns `weight [out, in]`, `bias [out]` and its output `y [rows, out]`.
pub struct Linear<B: Backend> {
    pub weight: Param<B>,
    pub bias: Param<B>,
    pub fan_in: usize,
    pub fan_out: usize,
    /// The output `[rows, out]` (a model's logits when this is its head).
    pub y: Tensor<B>,
}

fn mm(m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool, accumulate: bool) -> MatMul {
    MatMul { m, k, n, trans_a, trans_b, accumulate }
}

impl<B: Backend> Linear<B> {
    /// PyTorch's initialisation (`U(+-1/sqrt(in))` for both tensors), an output for `rows` rows.
    pub fn new(b: &B, name: &str, fan_in: usize, fan_out: usize, rows: usize, rng: &mut Rng) -> Self {
        let bound = 1.0 / (fan_in as f32).sqrt();
        let w = init::uniform(rng, fan_out * fan_in, bound);
        let weight = Param::declare(b, &format!("{name}.weight"), &[fan_out, fan_in], w);
        let bias = Param::declare(b, &format!("{name}.bias"), &[fan_out], init::uniform(rng, fan_out, bound));
        Linear { weight, bias, fan_in, fan_out, y: Tensor::zeros(b, &[rows, fan_out]) }
    }

    /// `y = x W^T + bias` over the first `rows` rows of `x [rows, in]`.
    pub fn forward(&mut self, b: &B, x: &B::Buf, rows: usize) {
        b.matmul(x, &self.weight.value.buf, &mut self.y.buf, mm(rows, self.fan_in, self.fan_out, false, true, false));
        b.bias_add(&mut self.y.buf, &self.bias.value.buf, rows, self.fan_out, 1);
    }

    /// From `dy [rows, out]` and the forward's input `x`: accumulates `weight.grad += dy^T x` and
    /// `bias.grad += sum dy`, and writes `dx = dy W` (`[rows, in]`) when asked.
    pub fn backward(&mut self, b: &B, x: &B::Buf, dy: &B::Buf, dx: Option<&mut B::Buf>, rows: usize) {
        let (i, o) = (self.fan_in, self.fan_out);
        b.matmul(dy, x, &mut self.weight.grad.buf, mm(o, rows, i, true, false, true));
        b.bias_grad(dy, &mut self.bias.grad.buf, rows, o, 1);
        if let Some(dx) = dx {
            b.matmul(dy, &self.weight.value.buf, dx, mm(rows, o, i, false, false, false));
        }
    }
}

impl<B: Backend> Layer<B> for Linear<B> {
    fn params(&self) -> Vec<&Param<B>> {
        vec![&self.weight, &self.bias]
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        vec![&mut self.weight, &mut self.bias]
    }
}
