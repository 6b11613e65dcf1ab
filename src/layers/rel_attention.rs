//! The Transformer's self-attention with a learned relative term (Music Transformer; `RelAttention`
//! of `../shared/peers/torch_transformer.py`): one Linear to q, k, v, [`Backend::rel_attention_fwd`],
//! and a Linear back to the width, over token-major rows `[batch * time, width]`.

use super::{Layer, Linear};
use crate::engine::{Backend, Param, RelAttention, RelDecode, Strided};
use crate::rng::Rng;

/// `y = proj(attention(qkv(x), rel))`; owns `{name}.rel [heads, window, dim]`, `{name}.qkv`
/// (`width -> 3 width`) and `{name}.proj` (`width -> width`), in PyTorch's order (the module's own
/// parameter first), and its activations. `proj.y` is the output `[rows, width]`.
pub struct RelSelfAttention<B: Backend> {
    pub rel: Param<B>,
    pub qkv: Linear<B>,
    pub proj: Linear<B>,
    pub heads: usize,
    pub dim: usize,
    /// Longest distance + 1 the table holds: the training window.
    pub window: usize,
    /// Heads' output `[rows, width]`, probabilities `[batch, heads, time, time]`.
    out: B::Buf,
    p: B::Buf,
    /// Gradients of `out` and of the qkv rows.
    dout: B::Buf,
    dqkv: B::Buf,
}

impl<B: Backend> RelSelfAttention<B> {
    /// PyTorch's initialisation (`rel ~ 0.02 N(0, 1)`), activations for `max_batch` windows of
    /// `window` steps.
    pub fn new(b: &B, name: &str, width: usize, heads: usize, window: usize, max_batch: usize, rng: &mut Rng) -> Self {
        let dim = width / heads;
        let rows = max_batch * window;
        // PyTorch builds qkv, then draws rel, then builds proj.
        let qkv = Linear::new(b, &format!("{name}.qkv"), width, 3 * width, rows, rng);
        let rel_init: Vec<f32> = (0..heads * window * dim).map(|_| 0.02 * rng.normal()).collect();
        let rel = Param::declare(b, &format!("{name}.rel"), &[heads, window, dim], rel_init);
        let proj = Linear::new(b, &format!("{name}.proj"), width, width, rows, rng);
        let a = RelAttention { batch: max_batch, heads, dim, time: window, window };
        RelSelfAttention {
            rel,
            qkv,
            proj,
            heads,
            dim,
            window,
            out: b.alloc(a.out_len()),
            p: b.alloc(a.p_len()),
            dout: b.alloc(a.out_len()),
            dqkv: b.alloc(a.qkv_len()),
        }
    }

    /// The op's sizes over `batch` windows of `time` steps.
    pub fn shape(&self, batch: usize, time: usize) -> RelAttention {
        RelAttention { batch, heads: self.heads, dim: self.dim, time, window: self.window }
    }

    /// `proj.y = proj(attention(qkv(x)))` over `batch` windows of `time` steps.
    pub fn forward(&mut self, b: &B, x: &B::Buf, batch: usize, time: usize) {
        let rows = batch * time;
        self.qkv.forward(b, x, rows);
        let a = self.shape(batch, time);
        b.rel_attention_fwd(&self.qkv.y.buf, &self.rel.value.buf, &mut self.out, &mut self.p, a);
        self.proj.forward(b, &self.out, rows);
    }

    /// From `dy` (the gradient of `proj.y`) and the forward's input `x`: every parameter's
    /// gradient, and `dx` (written) = the input's gradient.
    pub fn backward(&mut self, b: &B, x: &B::Buf, dy: &B::Buf, dx: &mut B::Buf, batch: usize, time: usize) {
        let rows = batch * time;
        self.proj.backward(b, &self.out, dy, Some(&mut self.dout), rows);
        let a = self.shape(batch, time);
        b.rel_attention_bwd(&self.qkv.y.buf, &self.rel.value.buf, &self.p, &self.dout, &mut self.dqkv, &mut self.rel.grad.buf, a);
        self.qkv.backward(b, x, &self.dqkv, Some(dx), rows);
    }

    /// One generation step for `batch` sequences with the ring caches `kcache, vcache [batch,
    /// window, width]` (see [`RelDecode`]): `x [batch, width]` is the newest position's input and
    /// `len` the positions seen, it included. Writes its k and v into slot `(len-1) % window`,
    /// then leaves the output in `proj.y` (first `batch` rows).
    pub fn step(&mut self, b: &B, x: &B::Buf, kcache: &mut B::Buf, vcache: &mut B::Buf, batch: usize, len: usize) {
        let w = self.heads * self.dim;
        self.qkv.forward(b, x, batch);
        let slot = (len - 1) % self.window;
        for (part, cache) in [(1, &mut *kcache), (2, &mut *vcache)] {
            let s = Strided::block(batch, w).from(part * w, 3 * w).to(slot * w, self.window * w);
            b.copy_strided(&self.qkv.y.buf, cache, s);
        }
        let a = RelDecode { batch, heads: self.heads, dim: self.dim, window: self.window, len };
        b.rel_attention_decode(&self.qkv.y.buf, kcache, vcache, &self.rel.value.buf, &mut self.out, a);
        self.proj.forward(b, &self.out, batch);
    }
}

impl<B: Backend> Layer<B> for RelSelfAttention<B> {
    fn params(&self) -> Vec<&Param<B>> {
        let mut v = vec![&self.rel];
        v.extend(self.qkv.params());
        v.extend(self.proj.params());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut v = vec![&mut self.rel];
        v.extend(self.qkv.params_mut());
        v.extend(self.proj.params_mut());
        v
    }
}
