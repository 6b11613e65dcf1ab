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
//! [`GatedStepper`] runs the same network one token at a time on the host (fast WaveNet): each block keeps a
//! queue of its past inputs, so a step costs O(blocks), not O(window). It has no attention: a model
//! with heads generates with the sliding window (see `crate::generate::Mode::resolve`).

use super::{init, Model, Targets};
use crate::engine::dropout::drop_site;
use crate::engine::optim::into_arena;
use crate::engine::{Act, Attention, Backend, Conv1d, Dropout, Param, Tensor};
use crate::engine::Qkv;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

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

/// Indices of one block's parameters in `params`.
#[derive(Clone, Copy, Debug)]
struct BlockIdx {
    dil: usize,
    /// `None` on the last block.
    res: Option<usize>,
    skip: usize,
}

/// Indices of the attention layer's parameters in `params`.
#[derive(Clone, Copy, Debug)]
struct AttnIdx {
    q: usize,
    k: usize,
    v: usize,
    o: usize,
}

/// Where each parameter lives (weight at the index, bias right after it).
#[derive(Clone, Debug)]
struct Layout {
    inp: usize,
    blocks: Vec<BlockIdx>,
    attn: Option<AttnIdx>,
    post1: usize,
    post2: usize,
}

/// Builds the parameters in PyTorch's order, initialised as PyTorch does.
fn make_params<B: Backend>(b: &B, cfg: &GatedConfig, rng: &mut Rng) -> (Vec<Param<B>>, Layout) {
    let GatedConfig { vocab: v, embed: e, residual: r, skip: s, kernel: k, .. } = *cfg;
    let mut params = vec![Param::new(b, "emb.weight", &[v, e], &init::normal(rng, v * e))];
    let mut conv = |name: String, cout: usize, cin: usize, k: usize, params: &mut Vec<Param<B>>| {
        let bound = 1.0 / ((cin * k) as f32).sqrt();
        let idx = params.len();
        params.push(Param::new(
            b,
            &format!("{name}.weight"),
            &[cout, cin, k],
            &init::uniform(rng, cout * cin * k, bound),
        ));
        params.push(Param::new(b, &format!("{name}.bias"), &[cout], &init::uniform(rng, cout, bound)));
        idx
    };
    let inp = conv("inp".into(), r, e, 1, &mut params);
    let n = cfg.blocks();
    let blocks = (0..n)
        .map(|i| BlockIdx {
            dil: conv(format!("blocks.{i}.dil"), 2 * r, r, k, &mut params),
            res: (i + 1 < n).then(|| conv(format!("blocks.{i}.res"), r, r, 1, &mut params)),
            skip: conv(format!("blocks.{i}.skip"), s, r, 1, &mut params),
        })
        .collect();
    let hd = cfg.attention_channels();
    let attn = (hd > 0).then(|| AttnIdx {
        q: conv("attn.q".into(), hd, s, 1, &mut params),
        k: conv("attn.k".into(), hd, s, 1, &mut params),
        v: conv("attn.v".into(), hd, s, 1, &mut params),
        o: conv("attn.o".into(), s, hd, 1, &mut params),
    });
    let post1 = conv("post1".into(), s, s, 1, &mut params);
    let post2 = conv("post2".into(), v, s, 1, &mut params);
    (params, Layout { inp, blocks, attn, post1, post2 })
}

/// A 1x1 conv `cin -> cout` over `batch` windows.
fn pointwise(cfg: &GatedConfig, batch: usize, cin: usize, cout: usize) -> Conv1d {
    Conv1d { batch, cin, cout, time: cfg.window, k: 1, dilation: 1 }
}

/// The dilated conv of block `i` (R -> 2R) over `batch` windows.
fn dilated(cfg: &GatedConfig, i: usize, batch: usize) -> Conv1d {
    let r = cfg.residual;
    Conv1d { batch, cin: r, cout: 2 * r, time: cfg.window, k: cfg.kernel, dilation: cfg.dilation(i) }
}

/// The gated WaveNet with its activation arena (sized for `max_batch` windows of `window` steps).
pub struct WavenetGated<B: Backend> {
    cfg: GatedConfig,
    max_batch: usize,
    params: Vec<Param<B>>,
    lay: Layout,
    // ---- forward arena ----
    /// Embeddings `[B, T, E]` and transposed `[B, E, T]`.
    emb_out: B::Buf,
    emb_t: B::Buf,
    /// Block inputs `h_i [B, R, T]`, one per block.
    hs: Vec<B::Buf>,
    /// Dilated conv outputs `a_i [B, 2R, T]` (what the gate's backward needs).
    as_: Vec<B::Buf>,
    /// Gated outputs `z_i [B, R, T]`.
    zs: Vec<B::Buf>,
    /// Sum of skips `[B, S, T]`, one block's skip `[B, S, T]`, then relu(skip), post1 pre/post ReLU.
    skip_sum: B::Buf,
    skip_tmp: B::Buf,
    s1: B::Buf,
    p1_pre: B::Buf,
    p1: B::Buf,
    /// `post2` output `[B, V, T]`.
    out_vt: B::Buf,
    logits: Tensor<B>,
    // ---- backward scratch ----
    dout_vt: B::Buf,
    dp1: B::Buf,
    dp1_pre: B::Buf,
    ds1: B::Buf,
    dskip: B::Buf,
    /// Gradient of the residual stream `[B, R, T]` (accumulates across blocks).
    dh: B::Buf,
    dz: B::Buf,
    da: B::Buf,
    demb_t: B::Buf,
    demb: B::Buf,
    /// Dropout of the current training step (None: identity).
    dropout: Option<Dropout>,
    /// The attention layer's activations and gradients (`None` without heads).
    attn: Option<AttnBufs<B>>,
}

/// The attention layer's arena: forward activations, then backward scratch.
struct AttnBufs<B: Backend> {
    /// Queries, keys, values and the attention output `[B, H*D, T]`.
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    out: B::Buf,
    /// The probabilities `[B, H, T, T]` (what the backward needs).
    p: B::Buf,
    /// `skip2 = skip + attn.o(out)` and `relu(skip2)` (what the head reads) `[B, S, T]`.
    skip2: B::Buf,
    s2: B::Buf,
    /// Gradients of `out`, `q`, `k`, `v` `[B, H*D, T]`, of `u = relu(skip)` and of `skip`
    /// through `u` `[B, S, T]`.
    dout: B::Buf,
    dq: B::Buf,
    dk: B::Buf,
    dv: B::Buf,
    du: B::Buf,
    dskip_u: B::Buf,
}

impl<B: Backend> AttnBufs<B> {
    fn new(b: &B, cfg: &GatedConfig, max_batch: usize) -> Option<Self> {
        let a = cfg.attention_op(max_batch)?;
        let (n, ns) = (a.qkv_len(), max_batch * cfg.skip * cfg.window);
        Some(AttnBufs {
            q: b.alloc(n),
            k: b.alloc(n),
            v: b.alloc(n),
            out: b.alloc(n),
            p: b.alloc(a.p_len()),
            skip2: b.alloc(ns),
            s2: b.alloc(ns),
            dout: b.alloc(n),
            dq: b.alloc(n),
            dk: b.alloc(n),
            dv: b.alloc(n),
            du: b.alloc(ns),
            dskip_u: b.alloc(ns),
        })
    }
}

impl<B: Backend> WavenetGated<B> {
    /// A model with PyTorch's default initialisation drawn from `rng`, its arena sized for
    /// `max_batch` windows. Panics if the config is invalid (check it with
    /// [`GatedConfig::validate`] first when it comes from user input).
    pub fn new(b: &B, cfg: &GatedConfig, max_batch: usize, rng: &mut Rng) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("{e}");
        }
        let (params, lay) = make_params(b, cfg, rng);
        let GatedConfig { vocab: v, window: t, embed: e, residual: r, skip: s, .. } = *cfg;
        let (m, n) = (max_batch, cfg.blocks());
        WavenetGated {
            dropout: None,
            attn: AttnBufs::new(b, cfg, max_batch),
            cfg: cfg.clone(),
            max_batch,
            params: into_arena(b, params),
            lay,
            emb_out: b.alloc(m * t * e),
            emb_t: b.alloc(m * e * t),
            hs: (0..n).map(|_| b.alloc(m * r * t)).collect(),
            as_: (0..n).map(|_| b.alloc(m * 2 * r * t)).collect(),
            zs: (0..n).map(|_| b.alloc(m * r * t)).collect(),
            skip_sum: b.alloc(m * s * t),
            skip_tmp: b.alloc(m * s * t),
            s1: b.alloc(m * s * t),
            p1_pre: b.alloc(m * s * t),
            p1: b.alloc(m * s * t),
            out_vt: b.alloc(m * v * t),
            logits: Tensor::zeros(b, &[m, t, v]),
            dout_vt: b.alloc(m * v * t),
            dp1: b.alloc(m * s * t),
            dp1_pre: b.alloc(m * s * t),
            ds1: b.alloc(m * s * t),
            dskip: b.alloc(m * s * t),
            dh: b.alloc(m * r * t),
            dz: b.alloc(m * r * t),
            da: b.alloc(m * 2 * r * t),
            demb_t: b.alloc(m * e * t),
            demb: b.alloc(m * t * e),
        }
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
}

/// `conv1d_bwd_weight` for the parameter pair at `idx` (weight, bias).
fn conv_grads<B: Backend>(b: &B, params: &mut [Param<B>], idx: usize, x: &B::Buf, dy: &B::Buf, c: Conv1d) {
    let (lo, hi) = params.split_at_mut(idx + 1);
    b.conv1d_bwd_weight(x, dy, &mut lo[idx].grad.buf, &mut hi[0].grad.buf, c);
}

impl<B: Backend> Model<B> for WavenetGated<B> {
    fn params(&self) -> &[Param<B>] {
        &self.params
    }

    fn params_mut(&mut self) -> &mut [Param<B>] {
        &mut self.params
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
        let GatedConfig { vocab: v, window: t, embed: e, residual: r, skip: s, .. } = self.cfg;
        let (ce, cr, cs) =
            (pointwise(&self.cfg, batch, e, r), pointwise(&self.cfg, batch, r, r), pointwise(&self.cfg, batch, r, s));
        let (c1, c2) = (pointwise(&self.cfg, batch, s, s), pointwise(&self.cfg, batch, s, v));
        let (p, lay) = (&self.params, &self.lay);
        let (w, bias) = (|i: usize| &p[i].value.buf, |i: usize| &p[i + 1].value.buf);

        b.embedding_fwd(x, w(0), &mut self.emb_out, batch * t, e);
        b.transpose(&self.emb_out, &mut self.emb_t, batch, t, e);
        b.conv1d_fwd(&self.emb_t, w(lay.inp), bias(lay.inp), &mut self.hs[0], ce);
        for (i, blk) in lay.blocks.iter().enumerate() {
            b.conv1d_fwd(&self.hs[i], w(blk.dil), bias(blk.dil), &mut self.as_[i], dilated(&self.cfg, i, batch));
            b.gated_fwd(&self.as_[i], &mut self.zs[i], batch, r, t);
            drop_site(b, self.dropout.as_ref(), i as u32, &mut self.zs[i], batch * r * t);
            if i == 0 {
                b.conv1d_fwd(&self.zs[i], w(blk.skip), bias(blk.skip), &mut self.skip_sum, cs);
            } else {
                b.conv1d_fwd(&self.zs[i], w(blk.skip), bias(blk.skip), &mut self.skip_tmp, cs);
                b.add(&self.skip_tmp, &mut self.skip_sum, batch * s * t);
            }
            if let Some(res) = blk.res {
                // h_{i+1} = res(z_i) + h_i
                let (lo, hi) = self.hs.split_at_mut(i + 1);
                b.conv1d_fwd(&self.zs[i], w(res), bias(res), &mut hi[0], cr);
                b.add(&lo[i], &mut hi[0], batch * r * t);
            }
        }
        b.act_fwd(Act::Relu, &self.skip_sum, &mut self.s1, batch * s * t);
        // The head reads relu(skip), or relu(skip + attn.o(attention(q, k, v))) with heads.
        let head_in = match (lay.attn, self.attn.as_mut()) {
            (Some(ai), Some(ab)) => {
                let att = self.cfg.attention_op(batch).expect("heads");
                let hd = self.cfg.attention_channels();
                let (cqkv, co) = (pointwise(&self.cfg, batch, s, hd), pointwise(&self.cfg, batch, hd, s));
                b.conv1d_fwd(&self.s1, w(ai.q), bias(ai.q), &mut ab.q, cqkv);
                b.conv1d_fwd(&self.s1, w(ai.k), bias(ai.k), &mut ab.k, cqkv);
                b.conv1d_fwd(&self.s1, w(ai.v), bias(ai.v), &mut ab.v, cqkv);
                b.attention_fwd(&ab.q, &ab.k, &ab.v, &mut ab.out, &mut ab.p, att);
                b.conv1d_fwd(&ab.out, w(ai.o), bias(ai.o), &mut ab.skip2, co);
                b.add(&self.skip_sum, &mut ab.skip2, batch * s * t);
                b.act_fwd(Act::Relu, &ab.skip2, &mut ab.s2, batch * s * t);
                &ab.s2
            }
            _ => &self.s1,
        };
        b.conv1d_fwd(head_in, w(lay.post1), bias(lay.post1), &mut self.p1_pre, c1);
        b.act_fwd(Act::Relu, &self.p1_pre, &mut self.p1, batch * s * t);
        b.conv1d_fwd(&self.p1, w(lay.post2), bias(lay.post2), &mut self.out_vt, c2);
        b.transpose(&self.out_vt, &mut self.logits.buf, batch, v, t);
    }

    fn logits(&self) -> &Tensor<B> {
        &self.logits
    }

    fn set_dropout(&mut self, d: Option<Dropout>) {
        self.dropout = d;
    }

    fn backward(&mut self, b: &B, x: &B::Ids, dlogits: &B::Buf, batch: usize) {
        self.check_batch(batch);
        let GatedConfig { vocab: v, window: t, embed: e, residual: r, skip: s, .. } = self.cfg;
        let (inp, post1, post2) = (self.lay.inp, self.lay.post1, self.lay.post2);
        let ss = batch * s * t;

        // Head: logits [B, T, V] -> [B, V, T], post2, ReLU, post1, ReLU.
        b.transpose(dlogits, &mut self.dout_vt, batch, t, v);
        let c2 = pointwise(&self.cfg, batch, s, v);
        conv_grads(b, &mut self.params, post2, &self.p1, &self.dout_vt, c2);
        b.conv1d_bwd_input(&self.dout_vt, &self.params[post2].value.buf, &mut self.dp1, c2, false);
        b.act_bwd(Act::Relu, &self.p1, &self.dp1, &mut self.dp1_pre, ss);
        let c1 = pointwise(&self.cfg, batch, s, s);
        let head_in = self.attn.as_ref().map_or(&self.s1, |ab| &ab.s2);
        conv_grads(b, &mut self.params, post1, head_in, &self.dp1_pre, c1);
        b.conv1d_bwd_input(&self.dp1_pre, &self.params[post1].value.buf, &mut self.ds1, c1, false);
        match (self.lay.attn, self.attn.as_mut()) {
            (Some(ai), Some(ab)) => {
                // dskip2 = relu'(skip2) ds1 reaches skip directly (the identity path) and attn.o.
                b.act_bwd(Act::Relu, &ab.s2, &self.ds1, &mut self.dskip, ss);
                let att = self.cfg.attention_op(batch).expect("heads");
                let hd = self.cfg.attention_channels();
                let (cqkv, co) = (pointwise(&self.cfg, batch, s, hd), pointwise(&self.cfg, batch, hd, s));
                conv_grads(b, &mut self.params, ai.o, &ab.out, &self.dskip, co);
                b.conv1d_bwd_input(&self.dskip, &self.params[ai.o].value.buf, &mut ab.dout, co, false);
                b.attention_bwd(Qkv { q: &ab.q, k: &ab.k, v: &ab.v }, &ab.p, &ab.dout, Qkv { q: &mut ab.dq, k: &mut ab.dk, v: &mut ab.dv }, att);
                // du = q^T dq + k^T dk + v^T dv, then skip += relu'(skip) du.
                for (i, (idx, d)) in [(ai.q, &ab.dq), (ai.k, &ab.dk), (ai.v, &ab.dv)].into_iter().enumerate() {
                    conv_grads(b, &mut self.params, idx, &self.s1, d, cqkv);
                    b.conv1d_bwd_input(d, &self.params[idx].value.buf, &mut ab.du, cqkv, i > 0);
                }
                b.act_bwd(Act::Relu, &self.s1, &ab.du, &mut ab.dskip_u, ss);
                b.add(&ab.dskip_u, &mut self.dskip, ss);
            }
            // Every block's skip output receives the same gradient.
            _ => b.act_bwd(Act::Relu, &self.s1, &self.ds1, &mut self.dskip, ss),
        }

        // Blocks, last to first. On entry to block i (i < last), self.dh = dL/dh_{i+1}.
        let (cs, cr) = (pointwise(&self.cfg, batch, r, s), pointwise(&self.cfg, batch, r, r));
        for i in (0..self.lay.blocks.len()).rev() {
            let blk = self.lay.blocks[i];
            // dz = res^T dh_{i+1} + skip^T dskip
            if let Some(res) = blk.res {
                conv_grads(b, &mut self.params, res, &self.zs[i], &self.dh, cr);
                b.conv1d_bwd_input(&self.dh, &self.params[res].value.buf, &mut self.dz, cr, false);
            }
            conv_grads(b, &mut self.params, blk.skip, &self.zs[i], &self.dskip, cs);
            b.conv1d_bwd_input(&self.dskip, &self.params[blk.skip].value.buf, &mut self.dz, cs, blk.res.is_some());
            drop_site(b, self.dropout.as_ref(), i as u32, &mut self.dz, batch * r * t);
            b.gated_bwd(&self.as_[i], &self.dz, &mut self.da, batch, r, t);
            // dh_i = dh_{i+1} (identity path) + dil^T da; the last block has no identity path.
            let cd = dilated(&self.cfg, i, batch);
            conv_grads(b, &mut self.params, blk.dil, &self.hs[i], &self.da, cd);
            b.conv1d_bwd_input(&self.da, &self.params[blk.dil].value.buf, &mut self.dh, cd, blk.res.is_some());
        }

        // inp, then the embeddings.
        let ci = pointwise(&self.cfg, batch, e, r);
        conv_grads(b, &mut self.params, inp, &self.emb_t, &self.dh, ci);
        b.conv1d_bwd_input(&self.dh, &self.params[inp].value.buf, &mut self.demb_t, ci, false);
        b.transpose(&self.demb_t, &mut self.demb, batch, e, t);
        b.embedding_bwd(x, &self.demb, &mut self.params[0].grad.buf, batch * t, e);
    }
}

/// `y[o] = bias[o] + sum_i w[o, i, tap] x[i]` for a conv weight `[out, in, k]` at one tap.
fn tap_matvec(w: &[f32], k: usize, tap: usize, x: &[f32], y: &mut [f32]) {
    let cin = x.len();
    for (o, yo) in y.iter_mut().enumerate() {
        let row = &w[o * cin * k..][..cin * k];
        *yo += x.iter().enumerate().map(|(i, &xi)| row[i * k + tap] * xi).sum::<f32>();
    }
}

/// Weights of one block, on the host.
#[derive(Clone, Debug)]
struct StepBlock {
    dilation: usize,
    dil: (Vec<f32>, Vec<f32>),
    res: Option<(Vec<f32>, Vec<f32>)>,
    skip: (Vec<f32>, Vec<f32>),
    /// The block's last `(K-1) * dilation` inputs, oldest first (zeros before the first token:
    /// the causal padding).
    past: VecDeque<Vec<f32>>,
}

/// Incremental ("fast WaveNet") inference with the gated WaveNet on the host: one token in, the
/// logits of the next token out, in O(blocks) work per token. Each block keeps a queue of its own
/// past inputs, so a step recomputes only the current time step of every layer.
///
/// After [`GatedStepper::reset`] and tokens `x_0..x_t`, the logits equal row `t` of
/// [`WavenetGated::forward`] over a window that starts with `x_0`. Past the model's window the
/// stepper keeps the whole receptive field ([`GatedConfig::receptive_field`]) as context, which
/// is what a full forward over the last `window` tokens sees when `receptive_field <= window`.
#[derive(Clone, Debug)]
pub struct GatedStepper {
    cfg: GatedConfig,
    emb: Vec<f32>,
    inp: (Vec<f32>, Vec<f32>),
    blocks: Vec<StepBlock>,
    post1: (Vec<f32>, Vec<f32>),
    post2: (Vec<f32>, Vec<f32>),
}

impl GatedStepper {
    /// Copies the model's current weights to the host (reads them from any backend).
    /// Panics for a model with attention heads, which this stepper does not run (the generator
    /// uses the sliding window for those: `crate::generate::Mode::resolve`).
    pub fn new<B: Backend>(b: &B, model: &WavenetGated<B>) -> Self {
        assert_eq!(model.cfg.attention, 0, "GatedStepper: a wavenet-gated model with attention has no incremental step");
        let p = &model.params;
        let pair = |i: usize| (p[i].value.to_vec(b), p[i + 1].value.to_vec(b));
        let cfg = model.cfg.clone();
        let blocks = model
            .lay
            .blocks
            .iter()
            .enumerate()
            .map(|(i, blk)| StepBlock {
                dilation: cfg.dilation(i),
                dil: pair(blk.dil),
                res: blk.res.map(pair),
                skip: pair(blk.skip),
                past: VecDeque::new(),
            })
            .collect();
        let mut s = GatedStepper {
            emb: p[0].value.to_vec(b),
            inp: pair(model.lay.inp),
            blocks,
            post1: pair(model.lay.post1),
            post2: pair(model.lay.post2),
            cfg,
        };
        s.reset();
        s
    }

    /// Forget every past token (back to the causal zero padding).
    pub fn reset(&mut self) {
        let (k, r) = (self.cfg.kernel, self.cfg.residual);
        for blk in &mut self.blocks {
            blk.past = (0..(k - 1) * blk.dilation).map(|_| vec![0.0; r]).collect();
        }
    }

    /// Feeds one token and returns the logits `[V]` for the token after it. Returns an error for
    /// a token outside the vocabulary (no state changes then).
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>, String> {
        let GatedConfig { vocab: v, embed: e, residual: r, skip: s, kernel: k, .. } = self.cfg;
        let token = token as usize;
        if token >= v {
            return Err(format!("token {token} outside the vocabulary of {v}"));
        }
        let x = &self.emb[token * e..][..e];
        let mut h = self.inp.1.clone();
        tap_matvec(&self.inp.0, 1, 0, x, &mut h);
        let mut skip = vec![0.0f32; s];
        let mut a = vec![0.0f32; 2 * r];
        let mut z = vec![0.0f32; r];
        for blk in &mut self.blocks {
            // a = bias + sum_j W_j h(t - (K-1-j) d); the current input is tap K-1.
            a.copy_from_slice(&blk.dil.1);
            let hist = blk.past.len();
            for j in 0..k {
                let back = (k - 1 - j) * blk.dilation;
                let input = if back == 0 { &h } else { &blk.past[hist - back] };
                tap_matvec(&blk.dil.0, k, j, input, &mut a);
            }
            for c in 0..r {
                z[c] = a[c].tanh() * (1.0 / (1.0 + (-a[r + c]).exp()));
            }
            skip.iter_mut().zip(&blk.skip.1).for_each(|(sv, b)| *sv += b);
            tap_matvec(&blk.skip.0, 1, 0, &z, &mut skip);
            if hist > 0 {
                blk.past.pop_front();
                blk.past.push_back(h.clone());
            }
            if let Some((w, bias)) = &blk.res {
                h.iter_mut().zip(bias).for_each(|(hv, b)| *hv += b);
                tap_matvec(w, 1, 0, &z, &mut h);
            }
        }
        let relu = |v: &mut Vec<f32>| v.iter_mut().for_each(|x| *x = x.max(0.0));
        relu(&mut skip);
        let mut p1 = self.post1.1.clone();
        tap_matvec(&self.post1.0, 1, 0, &skip, &mut p1);
        relu(&mut p1);
        let mut logits = self.post2.1.clone();
        tap_matvec(&self.post2.0, 1, 0, &p1, &mut logits);
        Ok(logits)
    }
}
