//! One `nn.LSTM` layer (PyTorch semantics, gates i, f, g, o): the input projection of every time
//! step as one matrix product, `xw [B*T, 4H] = x W_ih^T + b_ih + b_hh`, then the recurrence
//! ([`Backend::lstm_fwd`]). A stack of them is an [`LstmStack`](super::LstmStack).

use super::{init, Layer};
use crate::engine::{self, Backend, LstmSaved, LstmSeqs, MatMul, Param, Strided};
use crate::rng::Rng;

/// Layer `l` of an LSTM stack; owns `{prefix}.weight_ih_l{l} [4H, in]`, `weight_hh_l{l} [4H, H]`,
/// `bias_ih_l{l}`, `bias_hh_l{l} [4H]` (PyTorch's names and order) and its activations for
/// `rows` = batch x time positions. The two PyTorch biases stay two parameters (they get the same
/// gradient), so one PyTorch Adam step is reproduced exactly.
pub struct Lstm<B: Backend> {
    pub weight_ih: Param<B>,
    pub weight_hh: Param<B>,
    pub bias_ih: Param<B>,
    pub bias_hh: Param<B>,
    pub input: usize,
    pub hidden: usize,
    /// Input projection `x W_ih^T + b_ih + b_hh` [B, T, 4H].
    pub xw: B::Buf,
    /// Activated gates i, f, g, o [B, T, 4H] (kept for the backward).
    pub gates: B::Buf,
    /// Hidden and cell states h_t, c_t [B, T, H].
    pub hs: B::Buf,
    pub cs: B::Buf,
    /// Gradient reaching `hs` from above [B, T, H] (the layer above, or the head, writes it).
    pub dhs: B::Buf,
    /// `b_ih + b_hh` [4H], added to the input projection in one pass.
    bias: B::Buf,
}

/// Scratch the layers of a stack share in their backward (one layer at a time): the gates'
/// gradient `dxw [rows, 4H]` and its sum over rows `dbias [4H]`.
pub struct LstmScratch<B: Backend> {
    pub dxw: B::Buf,
    pub dbias: B::Buf,
}

impl<B: Backend> LstmScratch<B> {
    pub fn new(b: &B, rows: usize, hidden: usize) -> Self {
        LstmScratch { dxw: b.alloc(rows * 4 * hidden), dbias: b.alloc(4 * hidden) }
    }
}

fn mm(m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool, accumulate: bool) -> MatMul {
    MatMul { m, k, n, trans_a, trans_b, accumulate }
}

impl<B: Backend> Lstm<B> {
    /// PyTorch's initialisation (`U(+-1/sqrt(H))`, the four tensors in order), activations for
    /// `rows` positions.
    pub fn new(b: &B, prefix: &str, l: usize, input: usize, hidden: usize, rows: usize, rng: &mut Rng) -> Self {
        let h = hidden;
        let bound = 1.0 / (h as f32).sqrt();
        let mut param = |name: &str, shape: &[usize]| {
            let n = shape.iter().product();
            Param::declare(b, &format!("{prefix}.{name}_l{l}"), shape, init::uniform(rng, n, bound))
        };
        let weight_ih = param("weight_ih", &[4 * h, input]);
        let weight_hh = param("weight_hh", &[4 * h, h]);
        let bias_ih = param("bias_ih", &[4 * h]);
        let bias_hh = param("bias_hh", &[4 * h]);
        Lstm {
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
            input,
            hidden,
            xw: b.alloc(rows * 4 * h),
            gates: b.alloc(rows * 4 * h),
            hs: b.alloc(rows * h),
            cs: b.alloc(rows * h),
            dhs: b.alloc(rows * h),
            bias: b.alloc(4 * h),
        }
    }

    /// Over `x [batch, time, input]` from the state `h0, c0 [batch, H]`: `xw` as one product for
    /// every step (the two biases summed first, so the `[n, 4H]` projection is passed over once),
    /// then the recurrence into `hs`, `cs`, `gates`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(&mut self, b: &B, x: &B::Buf, h0: &B::Buf, c0: &B::Buf, batch: usize, time: usize) {
        let (n, h) = (batch * time, self.hidden);
        b.matmul(x, &self.weight_ih.value.buf, &mut self.xw, mm(n, self.input, 4 * h, false, true, false));
        b.copy_strided(&self.bias_ih.value.buf, &mut self.bias, Strided::contiguous(4 * h));
        b.add(&self.bias_hh.value.buf, &mut self.bias, 4 * h);
        b.bias_add(&mut self.xw, &self.bias, n, 4 * h, 1);
        let dims = engine::Lstm { batch, time, hidden: h };
        let seqs = LstmSeqs { hs: &mut self.hs, cs: &mut self.cs, gates: &mut self.gates };
        b.lstm_fwd(&self.xw, &self.weight_hh.value.buf, h0, c0, seqs, dims);
    }

    /// Backpropagation through time from `dhs`: accumulates every parameter's gradient and
    /// writes `dx [batch, time, input]`, the gradient of the forward's input `x`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        b: &B,
        x: &B::Buf,
        dx: &mut B::Buf,
        h0: &B::Buf,
        c0: &B::Buf,
        s: &mut LstmScratch<B>,
        batch: usize,
        time: usize,
    ) {
        let (n, h) = (batch * time, self.hidden);
        let dims = engine::Lstm { batch, time, hidden: h };
        let w = &mut self.weight_hh;
        let saved = LstmSaved { h0, c0, seqs: LstmSeqs { hs: &self.hs, cs: &self.cs, gates: &self.gates } };
        b.lstm_bwd(&w.value.buf, saved, &self.dhs, &mut s.dxw, &mut w.grad.buf, dims);
        // dxw is the gradient of the projection xw = x W_ih^T + b_ih + b_hh: both biases get the
        // same gradient (reduce once, add twice).
        b.fill(&mut s.dbias, 4 * h, 0.0);
        b.bias_grad(&s.dxw, &mut s.dbias, n, 4 * h, 1);
        b.add(&s.dbias, &mut self.bias_ih.grad.buf, 4 * h);
        b.add(&s.dbias, &mut self.bias_hh.grad.buf, 4 * h);
        b.matmul(&s.dxw, x, &mut self.weight_ih.grad.buf, mm(4 * h, n, self.input, true, false, true));
        b.matmul(&s.dxw, &self.weight_ih.value.buf, dx, mm(n, 4 * h, self.input, false, false, false));
    }
}

impl<B: Backend> Layer<B> for Lstm<B> {
    fn params(&self) -> Vec<&Param<B>> {
        vec![&self.weight_ih, &self.weight_hh, &self.bias_ih, &self.bias_hh]
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        vec![&mut self.weight_ih, &mut self.weight_hh, &mut self.bias_ih, &mut self.bias_hh]
    }
}
