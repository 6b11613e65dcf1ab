//! The tutorial's simple WaveNet, many-to-one ([`Targets::Last`]):
//!
//! ```text
//! e  = emb.weight[x]                           [B, T, E]
//! h0 = e transposed                            [B, E, T]
//! h_{i+1} = relu(convs.i(h_i))                 causal, kernel K, dilation 2^i; E->C, then C->C
//! u  = relu(out_conv(h_L))                     kernel 1, C->1: [B, 1, T] = [B, T] (flatten)
//! f  = relu(fc1(u))                            Linear(T, D)
//! logits = fc2(f)                              Linear(D, V)   [B, V]
//! ```
//!
//! Dropout (issue 13, [`Model::set_dropout`], training steps only) acts on the output of every
//! dilated conv layer after its ReLU (site `i` for `h_{i+1}`), in place: the next layer's weight
//! gradient then sees the dropped values, and the ReLU's backward, read from the dropped output,
//! is zero wherever the mask is.
//!
//! Parameters are named and ordered as PyTorch's `named_parameters()` of `WaveNetSimple`
//! (`emb.weight`, `convs.{i}.weight`, `convs.{i}.bias`, `out_conv.*`, `fc1.*`, `fc2.*`).

use super::{init, Model, Targets};
use crate::engine::dropout::drop_site;
use crate::engine::optim::into_arena;
use crate::engine::{Act, Backend, Conv1d, Dropout, MatMul, Param, Tensor};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Hyper-parameters of the simple WaveNet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WavenetConfig {
    /// Vocabulary size V.
    pub vocab: usize,
    /// Window length T (the flatten feeds exactly T values to `fc1`).
    pub window: usize,
    /// Embedding width E.
    pub embed: usize,
    /// Conv channels C.
    pub channels: usize,
    /// Kernel size K of the dilated convs.
    pub kernel: usize,
    /// Number L of dilated convs (dilations 1, 2, 4, ..., 2^(L-1)).
    pub layers: usize,
    /// Width D of the dense hidden layer.
    pub dense: usize,
}

impl WavenetConfig {
    /// The tutorial's sizes (E=100, C=64, K=3, L=10, D=128) for a vocabulary and window.
    pub fn new(vocab: usize, window: usize) -> Self {
        WavenetConfig { vocab, window, embed: 100, channels: 64, kernel: 3, layers: 10, dense: 128 }
    }

    /// Checks that every size is usable.
    pub fn validate(&self) -> Result<(), String> {
        let sizes = [
            ("vocab", self.vocab),
            ("window", self.window),
            ("embed", self.embed),
            ("channels", self.channels),
            ("kernel", self.kernel),
            ("layers", self.layers),
            ("dense", self.dense),
        ];
        for (name, v) in sizes {
            if v == 0 {
                return Err(format!("wavenet: {name} must be at least 1"));
            }
        }
        if self.layers > 40 {
            return Err("wavenet: at most 40 layers (dilation 2^i must fit)".into());
        }
        Ok(())
    }
}

// Indices into `params`.
const EMB: usize = 0;
fn conv_w(i: usize) -> usize {
    1 + 2 * i
}
fn conv_b(i: usize) -> usize {
    2 + 2 * i
}

/// Shape of dilated conv `i` for `batch` windows.
fn conv(cfg: &WavenetConfig, i: usize, batch: usize) -> Conv1d {
    Conv1d {
        batch,
        cin: if i == 0 { cfg.embed } else { cfg.channels },
        cout: cfg.channels,
        time: cfg.window,
        k: cfg.kernel,
        dilation: 1 << i,
    }
}

/// Shape of `out_conv` (kernel 1, C -> 1) for `batch` windows.
fn out_conv(cfg: &WavenetConfig, batch: usize) -> Conv1d {
    Conv1d { batch, cin: cfg.channels, cout: 1, time: cfg.window, k: 1, dilation: 1 }
}

/// The simple WaveNet with its activation arena (sized for `max_batch` windows).
pub struct Wavenet<B: Backend> {
    cfg: WavenetConfig,
    max_batch: usize,
    params: Vec<Param<B>>,
    // ---- forward arena ----
    /// Embeddings `[B, T, E]`.
    emb_out: B::Buf,
    /// Conv input of layer 0: `[B, E, T]`.
    h0: B::Buf,
    /// Pre-activation scratch `[B, C, T]` (shared by every conv layer).
    pre: B::Buf,
    /// Post-ReLU output of every conv layer `[B, C, T]`.
    hs: Vec<B::Buf>,
    /// `out_conv` before and after ReLU, `[B, T]`.
    u_pre: B::Buf,
    u: B::Buf,
    /// `fc1` before and after ReLU, `[B, D]`.
    f_pre: B::Buf,
    f: B::Buf,
    logits: Tensor<B>,
    // ---- backward scratch ----
    df: B::Buf,
    df_pre: B::Buf,
    du: B::Buf,
    du_pre: B::Buf,
    /// Gradient reaching a conv layer's output, and its pre-activation: `[B, C, T]`.
    dh: B::Buf,
    dpre: B::Buf,
    /// Gradient of `h0` `[B, E, T]`, and of the embeddings `[B, T, E]`.
    dh0: B::Buf,
    demb: B::Buf,
    /// Dropout of the current training step (None: identity).
    dropout: Option<Dropout>,
}

impl<B: Backend> Wavenet<B> {
    /// A model with PyTorch's default initialisation drawn from `rng`, its arena sized for
    /// `max_batch` windows. Panics if the config is invalid (check it with
    /// [`WavenetConfig::validate`] first when it comes from user input).
    pub fn new(b: &B, cfg: &WavenetConfig, max_batch: usize, rng: &mut Rng) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("{e}");
        }
        let WavenetConfig { vocab: v, window: t, embed: e, channels: c, kernel: k, layers, dense: d } = *cfg;
        let mut params = Vec::new();
        params.push(Param::new(b, "emb.weight", &[v, e], &init::normal(rng, v * e)));
        for i in 0..layers {
            let cin = if i == 0 { e } else { c };
            let bound = 1.0 / ((cin * k) as f32).sqrt();
            params.push(Param::new(
                b,
                &format!("convs.{i}.weight"),
                &[c, cin, k],
                &init::uniform(rng, c * cin * k, bound),
            ));
            params.push(Param::new(b, &format!("convs.{i}.bias"), &[c], &init::uniform(rng, c, bound)));
        }
        let mut linear = |name: &str, shape: &[usize], fan_in: usize, params: &mut Vec<Param<B>>| {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let n: usize = shape.iter().product();
            params.push(Param::new(b, &format!("{name}.weight"), shape, &init::uniform(rng, n, bound)));
            params.push(Param::new(b, &format!("{name}.bias"), &shape[..1], &init::uniform(rng, shape[0], bound)));
        };
        linear("out_conv", &[1, c, 1], c, &mut params);
        linear("fc1", &[d, t], t, &mut params);
        linear("fc2", &[v, d], d, &mut params);

        let m = max_batch;
        Wavenet {
            dropout: None,
            cfg: cfg.clone(),
            max_batch,
            params: { let mut params = params; into_arena(b, &mut params); params },
            emb_out: b.alloc(m * t * e),
            h0: b.alloc(m * e * t),
            pre: b.alloc(m * c * t),
            hs: (0..layers).map(|_| b.alloc(m * c * t)).collect(),
            u_pre: b.alloc(m * t),
            u: b.alloc(m * t),
            f_pre: b.alloc(m * d),
            f: b.alloc(m * d),
            logits: Tensor::zeros(b, &[m, v]),
            df: b.alloc(m * d),
            df_pre: b.alloc(m * d),
            du: b.alloc(m * t),
            du_pre: b.alloc(m * t),
            dh: b.alloc(m * c * t),
            dpre: b.alloc(m * c * t),
            dh0: b.alloc(m * e * t),
            demb: b.alloc(m * t * e),
        }
    }

    pub fn config(&self) -> &WavenetConfig {
        &self.cfg
    }

    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    fn check_batch(&self, batch: usize) {
        assert!(
            batch >= 1 && batch <= self.max_batch,
            "wavenet: batch {batch} outside 1..={} (the arena's size)",
            self.max_batch
        );
    }
}

impl<B: Backend> Model<B> for Wavenet<B> {
    fn params(&self) -> Vec<&Param<B>> {
        self.params.iter().collect()
    }

    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        self.params.iter_mut().collect()
    }

    fn vocab(&self) -> usize {
        self.cfg.vocab
    }

    fn window(&self) -> usize {
        self.cfg.window
    }

    fn targets(&self) -> Targets {
        Targets::Last
    }

    fn forward(&mut self, b: &B, x: &B::Ids, batch: usize) {
        self.check_batch(batch);
        let WavenetConfig { vocab: v, window: t, embed: e, channels: c, layers, dense: d, .. } = self.cfg;
        let oc = out_conv(&self.cfg, batch);
        let p = &self.params;
        b.embedding_fwd(x, &p[EMB].value.buf, &mut self.emb_out, batch * t, e);
        b.transpose(&self.emb_out, &mut self.h0, batch, t, e);
        for i in 0..layers {
            let input = if i == 0 { &self.h0 } else { &self.hs[i - 1] };
            b.conv1d_fwd(
                input,
                &p[conv_w(i)].value.buf,
                &p[conv_b(i)].value.buf,
                &mut self.pre,
                conv(&self.cfg, i, batch),
            );
            b.act_fwd(Act::Relu, &self.pre, &mut self.hs[i], batch * c * t);
            drop_site(b, self.dropout.as_ref(), i as u32, &mut self.hs[i], batch * c * t);
        }
        let o = conv_w(layers);
        b.conv1d_fwd(&self.hs[layers - 1], &p[o].value.buf, &p[o + 1].value.buf, &mut self.u_pre, oc);
        b.act_fwd(Act::Relu, &self.u_pre, &mut self.u, batch * t);
        let (fc1, fc2) = (o + 2, o + 4);
        let mm = |m, k, n| MatMul { m, k, n, trans_a: false, trans_b: true, accumulate: false };
        b.matmul(&self.u, &p[fc1].value.buf, &mut self.f_pre, mm(batch, t, d));
        b.bias_add(&mut self.f_pre, &p[fc1 + 1].value.buf, batch, d, 1);
        b.act_fwd(Act::Relu, &self.f_pre, &mut self.f, batch * d);
        b.matmul(&self.f, &p[fc2].value.buf, &mut self.logits.buf, mm(batch, d, v));
        b.bias_add(&mut self.logits.buf, &p[fc2 + 1].value.buf, batch, v, 1);
    }

    fn logits(&self) -> &Tensor<B> {
        &self.logits
    }

    fn set_dropout(&mut self, d: Option<Dropout>) {
        self.dropout = d;
    }

    fn backward(&mut self, b: &B, x: &B::Ids, dlogits: &B::Buf, batch: usize) {
        self.check_batch(batch);
        let WavenetConfig { vocab: v, window: t, embed: e, channels: c, layers, dense: d, .. } = self.cfg;
        let o = conv_w(layers);
        let (fc1, fc2) = (o + 2, o + 4);
        // dW += dY^T X (dY [batch, out], X [batch, in]); dX = dY W.
        let grad_w = |m, k, n| MatMul { m, k, n, trans_a: true, trans_b: false, accumulate: true };
        let grad_x = |m, k, n| MatMul { m, k, n, trans_a: false, trans_b: false, accumulate: false };

        // fc2
        {
            let (lo, hi) = self.params.split_at_mut(fc2 + 1);
            b.matmul(dlogits, &self.f, &mut lo[fc2].grad.buf, grad_w(v, batch, d));
            b.bias_grad(dlogits, &mut hi[0].grad.buf, batch, v, 1);
            b.matmul(dlogits, &lo[fc2].value.buf, &mut self.df, grad_x(batch, v, d));
        }
        b.act_bwd(Act::Relu, &self.f, &self.df, &mut self.df_pre, batch * d);
        // fc1
        {
            let (lo, hi) = self.params.split_at_mut(fc1 + 1);
            b.matmul(&self.df_pre, &self.u, &mut lo[fc1].grad.buf, grad_w(d, batch, t));
            b.bias_grad(&self.df_pre, &mut hi[0].grad.buf, batch, d, 1);
            b.matmul(&self.df_pre, &lo[fc1].value.buf, &mut self.du, grad_x(batch, d, t));
        }
        b.act_bwd(Act::Relu, &self.u, &self.du, &mut self.du_pre, batch * t);
        // out_conv
        {
            let oc = out_conv(&self.cfg, batch);
            let (lo, hi) = self.params.split_at_mut(o + 1);
            b.conv1d_bwd_weight(&self.hs[layers - 1], &self.du_pre, &mut lo[o].grad.buf, &mut hi[0].grad.buf, oc);
            b.conv1d_bwd_input(&self.du_pre, &lo[o].value.buf, &mut self.dh, oc, false);
        }
        // dilated convs, last to first; self.dh holds the gradient of layer i's ReLU output.
        for i in (0..layers).rev() {
            let cv = conv(&self.cfg, i, batch);
            drop_site(b, self.dropout.as_ref(), i as u32, &mut self.dh, batch * c * t);
            b.act_bwd(Act::Relu, &self.hs[i], &self.dh, &mut self.dpre, batch * c * t);
            let input = if i == 0 { &self.h0 } else { &self.hs[i - 1] };
            let (lo, hi) = self.params.split_at_mut(conv_b(i));
            b.conv1d_bwd_weight(input, &self.dpre, &mut lo[conv_w(i)].grad.buf, &mut hi[0].grad.buf, cv);
            let dinput = if i == 0 { &mut self.dh0 } else { &mut self.dh };
            b.conv1d_bwd_input(&self.dpre, &lo[conv_w(i)].value.buf, dinput, cv, false);
        }
        // [B, E, T] -> [B, T, E], then into the embedding rows.
        b.transpose(&self.dh0, &mut self.demb, batch, e, t);
        b.embedding_bwd(x, &self.demb, &mut self.params[EMB].grad.buf, batch * t, e);
    }
}
