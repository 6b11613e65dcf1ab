//! The gated WaveNet, many-to-many ([`Targets::Every`]):
//!
//! ```text
//! h_0 = inp(emb.weight[x] transposed)              1x1 conv E->R           [B, R, T]
//! for block i (dilation 2^(i mod layers)):
//!     a_i = blocks.i.dil(h_i)                      causal, kernel K, R->2R  [B, 2R, T]
//!     z_i = tanh(a_i[:, :R]) * sigmoid(a_i[:, R:]) (filter, gate)          [B, R, T]
//!     skip += blocks.i.skip(z_i)                   1x1 R->S                 [B, S, T]
//!     h_{i+1} = h_i + blocks.i.res(z_i)            1x1 R->R, absent on the last block
//! y = post2(relu(post1(relu(skip))))               1x1 S->S, 1x1 S->V       [B, V, T]
//! logits = y transposed                            [B, T, V]: row b*T+t predicts x[b, t+1]
//! ```
//!
//! With `attention = H > 0` heads of width `D = attention_dim` (issue 13), one causal attention
//! layer ([`crate::engine::Attention`], shift 1) sits between the skip sum and the head:
//!
//! ```text
//! u = relu(skip)                                                            [B, S, T]
//! q, k, v = attn.q(u), attn.k(u), attn.v(u)        1x1 S->H*D each          [B, H*D, T]
//! a = attention(q, k, v, shift 1)                  query t, keys j-1 and values j for 1 <= j <= t
//! skip2 = skip + attn.o(a)                         1x1 H*D->S               [B, S, T]
//! y = post2(relu(post1(relu(skip2))))
//! ```
//!
//! The key at `j` describes the context *before* token `j` and the value carries token `j`, so a
//! query that matches it copies "what came next the last time the context looked like this"
//! (motifs, sequences, repeated sections), which no conv or n-gram can. Without heads the model is
//! exactly the one above (every checkpoint written before the option loads and runs unchanged).
//!
//! Dropout (issue 13, [`Model::set_dropout`], training steps only) acts inside every block on the
//! gated output `z_i` (site `i`), in place, before the residual and skip convs read it.
//!
//! Parameters are named and ordered as PyTorch's `named_parameters()` of `WaveNetGated`
//! (`emb.weight`, `inp.*`, `blocks.{i}.dil.*`, `blocks.{i}.res.*`, `blocks.{i}.skip.*`,
//! then with attention `attn.q.*`, `attn.k.*`, `attn.v.*`, `attn.o.*` (a module `attn` holding
//! four Conv1d registered in that order, itself registered after the blocks and before the
//! head), then `post1.*`, `post2.*`).
//!
//! The model is a struct of named layers ([`crate::layers`]) and its wiring is written once, in
//! [`Model::forward`] and [`Model::backward`]. [`GatedStepper`] runs that same forward one token
//! at a time on the host (fast WaveNet): a copy of the model for a window of one step, whose
//! dilated convs keep their past inputs ([`Conv1d::start_steps`]), so a step costs O(blocks), not
//! O(window). It has no attention: a model with heads generates with the sliding window (see
//! `crate::generate::Mode::resolve`).

use super::Model;
use crate::data::dataset::Targets;
use crate::engine::cpu::CpuBackend;
use crate::engine::arena::into_arena;
use crate::engine::{Act, Attention, Backend, Dropout, Param, Tensor};
use crate::layers::{CausalAttention, Conv1d, Embedding, GatedStack, Layer};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of the gated WaveNet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatedConfig {
    /// Vocabulary size V.
    pub vocab: usize,
    /// Window length T the arena is sized for.
    pub window: usize,
    /// Embedding width E.
    pub embed: usize,
    /// Residual channels R.
    pub residual: usize,
    /// Skip channels S (also the width of `post1`).
    pub skip: usize,
    /// Kernel size K of the dilated convs.
    pub kernel: usize,
    /// Blocks per stack L (dilations 1, 2, ..., 2^(L-1)).
    pub layers: usize,
    /// Number of stacks: the dilations repeat, block i has dilation 2^(i mod L).
    pub stacks: usize,
    /// Heads H of the causal attention layer after the skip sum (issue 13); 0 = none, which is
    /// also what a checkpoint written before the option reads as. Not written when 0, so a model
    /// without heads stores the config it always did.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attention: usize,
    /// Width D of each attention head ([`DEFAULT_ATTENTION_DIM`] when heads are asked for
    /// without it; 0 without heads).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attention_dim: usize,
}

fn is_zero(x: &usize) -> bool {
    *x == 0
}

/// The width of an attention head when `--attention-dim` is not given.
pub const DEFAULT_ATTENTION_DIM: usize = 32;

impl GatedConfig {
    /// Default sizes (E=100, R=64, S=128, K=2, L=10, one stack) for a vocabulary and window.
    pub fn new(vocab: usize, window: usize) -> Self {
        GatedConfig {
            vocab,
            window,
            embed: 100,
            residual: 64,
            skip: 128,
            kernel: 2,
            layers: 10,
            stacks: 1,
            attention: 0,
            attention_dim: 0,
        }
    }

    /// Total number of blocks.
    pub fn blocks(&self) -> usize {
        self.layers * self.stacks
    }

    /// Dilation of block `i`.
    pub fn dilation(&self, i: usize) -> usize {
        1 << (i % self.layers)
    }

    /// Number of past steps one output sees, itself included.
    pub fn receptive_field(&self) -> usize {
        1 + (0..self.blocks()).map(|i| (self.kernel - 1) * self.dilation(i)).sum::<usize>()
    }

    /// Checks that every size is usable.
    pub fn validate(&self) -> Result<(), String> {
        let sizes = [
            ("vocab", self.vocab),
            ("window", self.window),
            ("embed", self.embed),
            ("residual", self.residual),
            ("skip", self.skip),
            ("kernel", self.kernel),
            ("layers", self.layers),
            ("stacks", self.stacks),
        ];
        for (name, v) in sizes {
            if v == 0 {
                return Err(format!("wavenet-gated: {name} must be at least 1"));
            }
        }
        if self.layers > 40 {
            return Err("wavenet-gated: at most 40 layers per stack (dilation 2^i must fit)".into());
        }
        if self.attention > 0 && self.attention_dim == 0 {
            return Err("wavenet-gated: attention-dim must be at least 1 when there are attention heads".into());
        }
        Ok(())
    }

    /// The attention layer's sizes over `batch` windows (shift 1: keys describe the context
    /// before each token); `None` without heads.
    pub fn attention_op(&self, batch: usize) -> Option<Attention> {
        (self.attention > 0).then_some(Attention {
            batch,
            heads: self.attention,
            dim: self.attention_dim,
            time: self.window,
            shift: 1,
        })
    }

    /// Channels of the attention's queries, keys and values, `H * D` (0 without heads).
    pub fn attention_channels(&self) -> usize {
        if self.attention == 0 {
            0
        } else {
            self.attention.saturating_mul(self.attention_dim)
        }
    }
}

/// The gated WaveNet: its layers, and the activations of its wiring (sized for `max_batch`
/// windows of `window` steps).
pub struct WavenetGated<B: Backend> {
    cfg: GatedConfig,
    max_batch: usize,
    emb: Embedding<B>,
    /// `inp`, 1x1 E -> R; its output is `h_0`.
    inp: Conv1d<B>,
    /// The residual blocks `blocks.{i}` and their skip sum.
    stack: GatedStack<B>,
    attn: Option<CausalAttention<B>>,
    /// `post1` (its output: before the ReLU) and `post2` (its output `[B, V, T]`).
    post1: Conv1d<B>,
    post2: Conv1d<B>,
    // ---- the wiring's activations ----
    /// Embeddings transposed `[B, E, T]`.
    emb_t: B::Buf,
    /// relu(skip sum), relu(post1).
    s1: B::Buf,
    p1: B::Buf,
    /// With heads: `relu(skip + attn(relu(skip)))` `[B, S, T]` (empty without).
    s2: B::Buf,
    logits: Tensor<B>,
    // ---- backward scratch ----
    dout_vt: B::Buf,
    dp1: B::Buf,
    dp1_pre: B::Buf,
    ds1: B::Buf,
    dskip: B::Buf,
    /// With heads: the skip sum's gradient through the attention's input (empty without).
    dskip_u: B::Buf,
    demb_t: B::Buf,
    demb: B::Buf,
    /// Dropout of the current training step (None: identity).
    dropout: Option<Dropout>,
}

impl<B: Backend> WavenetGated<B> {
    /// A model with PyTorch's default initialisation drawn from `rng`, its arena sized for
    /// `max_batch` windows. Panics if the config is invalid (check it with
    /// [`GatedConfig::validate`] first when it comes from user input).
    pub fn new(b: &B, cfg: &GatedConfig, max_batch: usize, rng: &mut Rng) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("{e}");
        }
        let GatedConfig { vocab: v, window: t, embed: e, residual: r, skip: s, kernel: k, .. } = *cfg;
        let (m, n) = (max_batch, cfg.blocks());
        // Made in PyTorch's registration order: the draws from `rng` are its initialisation's.
        let emb = Embedding::new(b, "emb", v, e, m * t, rng);
        let inp = Conv1d::new(b, "inp", e, r, 1, 1, rng).with_output(b, m, t);
        let stack = GatedStack::new(b, (r, s, k), n, |i| cfg.dilation(i), m, t, rng);
        let attn = (cfg.attention > 0)
            .then(|| CausalAttention::new(b, "attn", s, cfg.attention, cfg.attention_dim, 1, m, t, rng));
        let post1 = Conv1d::new(b, "post1", s, s, 1, 1, rng).with_output(b, m, t);
        let post2 = Conv1d::new(b, "post2", s, v, 1, 1, rng).with_output(b, m, t);
        let with_heads = if attn.is_some() { m * s * t } else { 0 };
        let mut model = WavenetGated {
            cfg: cfg.clone(),
            max_batch,
            emb,
            inp,
            stack,
            attn,
            post1,
            post2,
            emb_t: b.alloc(m * e * t),
            s1: b.alloc(m * s * t),
            p1: b.alloc(m * s * t),
            s2: b.alloc(with_heads),
            logits: Tensor::zeros(b, &[m, t, v]),
            dout_vt: b.alloc(m * v * t),
            dp1: b.alloc(m * s * t),
            dp1_pre: b.alloc(m * s * t),
            ds1: b.alloc(m * s * t),
            dskip: b.alloc(m * s * t),
            dskip_u: b.alloc(with_heads),
            demb_t: b.alloc(m * e * t),
            demb: b.alloc(m * t * e),
            dropout: None,
        };
        into_arena(b, model.params_mut());
        model
    }

    pub fn config(&self) -> &GatedConfig {
        &self.cfg
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn check_batch(&self, batch: usize) {
        assert!(
            batch >= 1 && batch <= self.max_batch,
            "wavenet-gated: batch {batch} outside 1..={} (the arena's size)",
            self.max_batch
        );
    }

    /// Step mode from here on, for a model made for one window of one step without heads: every
    /// [`Model::forward`] feeds one token and gives the logits of the next, each conv in its step
    /// mode ([`Conv1d::start_steps`]: the dilated ones read their own past inputs, zeros before
    /// the first token: the causal padding).
    pub fn start_steps(&mut self, b: &B) {
        assert!(
            self.cfg.window == 1 && self.max_batch == 1 && self.attn.is_none(),
            "wavenet-gated step mode: a model for one window of one step, without attention"
        );
        self.inp.start_steps(b);
        self.stack.start_steps(b);
        self.post1.start_steps(b);
        self.post2.start_steps(b);
    }

    /// Forget every past token of step mode.
    pub fn reset_steps(&mut self, b: &B) {
        self.stack.reset_steps(b);
    }
}

impl<B: Backend> Model<B> for WavenetGated<B> {
    fn params(&self) -> Vec<&Param<B>> {
        let mut p = self.emb.params();
        p.extend(self.inp.params());
        p.extend(self.stack.params());
        p.extend(self.attn.iter().flat_map(|a| a.params()));
        p.extend(self.post1.params());
        p.extend(self.post2.params());
        p
    }

    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut p = self.emb.params_mut();
        p.extend(self.inp.params_mut());
        p.extend(self.stack.params_mut());
        p.extend(self.attn.iter_mut().flat_map(|a| a.params_mut()));
        p.extend(self.post1.params_mut());
        p.extend(self.post2.params_mut());
        p
    }

    fn vocab(&self) -> usize {
        self.cfg.vocab
    }

    fn window(&self) -> usize {
        self.cfg.window
    }

    fn targets(&self) -> Targets {
        Targets::Every
    }

    fn forward(&mut self, b: &B, x: &B::Ids, batch: usize) {
        self.check_batch(batch);
        let GatedConfig { vocab: v, window: t, embed: e, skip: s, .. } = self.cfg;
        let st = batch * s * t;
        let d = self.dropout.as_ref();

        self.emb.forward(b, x, batch * t);
        b.transpose(&self.emb.out, &mut self.emb_t, batch, t, e);
        self.inp.forward(b, &self.emb_t, batch, t);
        self.stack.forward(b, &self.inp.y, batch, t, d);
        b.act_fwd(Act::Relu, &self.stack.skip_sum, &mut self.s1, st);
        // The head reads relu(skip), or relu(skip + attn(relu(skip))) with heads.
        let head_in = match self.attn.as_mut() {
            Some(at) => {
                at.forward(b, &self.s1, batch, t);
                b.add(&self.stack.skip_sum, &mut at.o.y, st);
                b.act_fwd(Act::Relu, &at.o.y, &mut self.s2, st);
                &self.s2
            }
            None => &self.s1,
        };
        self.post1.forward(b, head_in, batch, t);
        b.act_fwd(Act::Relu, &self.post1.y, &mut self.p1, st);
        self.post2.forward(b, &self.p1, batch, t);
        b.transpose(&self.post2.y, &mut self.logits.buf, batch, v, t);
    }

    fn logits(&self) -> &Tensor<B> {
        &self.logits
    }

    fn set_dropout(&mut self, d: Option<Dropout>) {
        self.dropout = d;
    }

    fn backward(&mut self, b: &B, x: &B::Ids, dlogits: &B::Buf, batch: usize) {
        self.check_batch(batch);
        let GatedConfig { vocab: v, window: t, embed: e, skip: s, .. } = self.cfg;
        let st = batch * s * t;
        let d = self.dropout.as_ref();

        // Head: logits [B, T, V] -> [B, V, T], post2, ReLU, post1, ReLU.
        b.transpose(dlogits, &mut self.dout_vt, batch, t, v);
        self.post2.backward(b, &self.p1, &self.dout_vt, &mut self.dp1, false, batch, t);
        b.act_bwd(Act::Relu, &self.p1, &self.dp1, &mut self.dp1_pre, st);
        let head_in = if self.attn.is_some() { &self.s2 } else { &self.s1 };
        self.post1.backward(b, head_in, &self.dp1_pre, &mut self.ds1, false, batch, t);
        match self.attn.as_mut() {
            Some(at) => {
                // dskip2 = relu'(skip2) ds1 reaches skip directly (the identity path) and the
                // attention, whose input u = relu(skip) sends du back: skip += relu'(skip) du.
                b.act_bwd(Act::Relu, &self.s2, &self.ds1, &mut self.dskip, st);
                at.backward(b, &self.s1, &self.dskip, batch, t);
                b.act_bwd(Act::Relu, &self.s1, &at.du, &mut self.dskip_u, st);
                b.add(&self.dskip_u, &mut self.dskip, st);
            }
            // Every block's skip output receives the same gradient.
            None => b.act_bwd(Act::Relu, &self.s1, &self.ds1, &mut self.dskip, st),
        }

        // Blocks, last to first: dL/dh_0 into the stack's dh.
        self.stack.backward(b, &self.inp.y, &self.dskip, batch, t, d);

        // inp, then the embeddings.
        self.inp.backward(b, &self.emb_t, &self.stack.dh, &mut self.demb_t, false, batch, t);
        b.transpose(&self.demb_t, &mut self.demb, batch, e, t);
        self.emb.backward(b, x, &self.demb, batch * t);
    }
}

/// Incremental ("fast WaveNet") inference with the gated WaveNet on the host: one token in, the
/// logits of the next token out, in O(blocks) work per token. It is the model's own forward on a
/// CPU copy made for one window of one step, whose dilated convs keep their past inputs
/// ([`WavenetGated::start_steps`]), so a step computes only the current time step of every layer.
///
/// After [`GatedStepper::reset`] and tokens `x_0..x_t`, the logits equal row `t` of
/// [`WavenetGated::forward`] over a window that starts with `x_0`. Past the model's window the
/// stepper keeps the whole receptive field ([`GatedConfig::receptive_field`]) as context, which
/// is what a full forward over the last `window` tokens sees when `receptive_field <= window`.
pub struct GatedStepper {
    cpu: CpuBackend,
    model: WavenetGated<CpuBackend>,
    id: Vec<u32>,
}

impl GatedStepper {
    /// Copies the model's current weights to the host (reads them from any backend).
    /// Panics for a model with attention heads, which this stepper does not run (the generator
    /// uses the sliding window for those: `crate::generate::Mode::resolve`).
    pub fn new<B: Backend>(b: &B, model: &WavenetGated<B>) -> Self {
        assert_eq!(model.cfg.attention, 0, "GatedStepper: a wavenet-gated model with attention has no incremental step");
        let cpu = CpuBackend::new();
        let cfg = GatedConfig { window: 1, ..model.cfg.clone() };
        // Whatever the draws, every parameter is overwritten below.
        let mut copy = WavenetGated::new(&cpu, &cfg, 1, &mut Rng::new(0));
        for (dst, src) in copy.params_mut().into_iter().zip(model.params()) {
            dst.value.set(&cpu, &src.value.to_vec(b));
        }
        copy.start_steps(&cpu);
        GatedStepper { cpu, model: copy, id: vec![0] }
    }

    /// Forget every past token (back to the causal zero padding).
    pub fn reset(&mut self) {
        self.model.reset_steps(&self.cpu);
    }

    /// Feeds one token and returns the logits `[V]` for the token after it. Returns an error for
    /// a token outside the vocabulary (no state changes then).
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>, String> {
        let v = self.model.cfg.vocab;
        if token as usize >= v {
            return Err(format!("token {token} outside the vocabulary of {v}"));
        }
        self.id[0] = token;
        self.model.forward(&self.cpu, &self.id, 1);
        Ok(self.model.logits.buf[..v].to_vec())
    }
}
