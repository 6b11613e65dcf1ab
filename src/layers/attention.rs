//! Causal multi-head attention over `[batch, channels, time]` (the gated WaveNet's, issue 13):
//! queries, keys and values are 1x1 convs of the input, [`Backend::attention_fwd`] mixes them,
//! and a 1x1 conv maps the heads back to the input's channels.

use super::{Conv1d, Layer};
use crate::engine::{self, Backend, Param, Qkv};
use crate::rng::Rng;

/// `y = o(attention(q(u), k(u), v(u)))`; owns `{name}.q`, `.k`, `.v` (`C -> H*D`) and `.o`
/// (`H*D -> C`), registered in that order, and its activations and gradients. `o.y` is the
/// output `[batch, C, time]`.
pub struct CausalAttention<B: Backend> {
    pub q: Conv1d<B>,
    pub k: Conv1d<B>,
    pub v: Conv1d<B>,
    pub o: Conv1d<B>,
    pub heads: usize,
    pub dim: usize,
    /// Keys describe the context `shift` steps before their value's token.
    pub shift: usize,
    /// The attention output `[B, H*D, T]` and its probabilities `[B, H, T, T]`.
    out: B::Buf,
    p: B::Buf,
    /// Gradients of `out`, `q`, `k`, `v` `[B, H*D, T]`.
    dout: B::Buf,
    dq: B::Buf,
    dk: B::Buf,
    dv: B::Buf,
    /// Gradient of the input `u` `[B, C, T]` (what [`CausalAttention::backward`] leaves).
    pub du: B::Buf,
}

impl<B: Backend> CausalAttention<B> {
    /// PyTorch's initialisation of the four convs, activations for `max_batch` windows of `window`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(b: &B, name: &str, channels: usize, heads: usize, dim: usize, shift: usize, max_batch: usize, window: usize, rng: &mut Rng) -> Self {
        let hd = heads * dim;
        let conv = |rng: &mut Rng, part: &str, cin: usize, cout: usize| {
            Conv1d::new(b, &format!("{name}.{part}"), cin, cout, 1, 1, rng).with_output(b, max_batch, window)
        };
        let (q, k, v, o) = (conv(rng, "q", channels, hd), conv(rng, "k", channels, hd), conv(rng, "v", channels, hd), conv(rng, "o", hd, channels));
        let a = engine::Attention { batch: max_batch, heads, dim, time: window, shift };
        let n = a.qkv_len();
        CausalAttention {
            q,
            k,
            v,
            o,
            heads,
            dim,
            shift,
            out: b.alloc(n),
            p: b.alloc(a.p_len()),
            dout: b.alloc(n),
            dq: b.alloc(n),
            dk: b.alloc(n),
            dv: b.alloc(n),
            du: b.alloc(max_batch * channels * window),
        }
    }

    /// The op's sizes over `batch` windows of `time` steps.
    pub fn shape(&self, batch: usize, time: usize) -> engine::Attention {
        engine::Attention { batch, heads: self.heads, dim: self.dim, time, shift: self.shift }
    }

    /// `o.y = o(attention(q(u), k(u), v(u)))`.
    pub fn forward(&mut self, b: &B, u: &B::Buf, batch: usize, time: usize) {
        self.q.forward(b, u, batch, time);
        self.k.forward(b, u, batch, time);
        self.v.forward(b, u, batch, time);
        let a = self.shape(batch, time);
        b.attention_fwd(&self.q.y, &self.k.y, &self.v.y, &mut self.out, &mut self.p, a);
        self.o.forward(b, &self.out, batch, time);
    }

    /// From `dy` (the gradient of `o.y`) and the forward's input `u`: every parameter's gradient,
    /// and `du = q^T dq + k^T dk + v^T dv`.
    pub fn backward(&mut self, b: &B, u: &B::Buf, dy: &B::Buf, batch: usize, time: usize) {
        self.o.backward(b, &self.out, dy, &mut self.dout, false, batch, time);
        let a = self.shape(batch, time);
        let qkv = Qkv { q: &self.q.y, k: &self.k.y, v: &self.v.y };
        b.attention_bwd(qkv, &self.p, &self.dout, Qkv { q: &mut self.dq, k: &mut self.dk, v: &mut self.dv }, a);
        self.q.backward(b, u, &self.dq, &mut self.du, false, batch, time);
        self.k.backward(b, u, &self.dk, &mut self.du, true, batch, time);
        self.v.backward(b, u, &self.dv, &mut self.du, true, batch, time);
    }
}

impl<B: Backend> Layer<B> for CausalAttention<B> {
    fn params(&self) -> Vec<&Param<B>> {
        [&self.q, &self.k, &self.v, &self.o].into_iter().flat_map(|c| c.params()).collect()
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        [&mut self.q, &mut self.k, &mut self.v, &mut self.o].into_iter().flat_map(|c| c.params_mut()).collect()
    }
}
