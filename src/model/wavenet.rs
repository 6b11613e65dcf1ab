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
//! (`emb.weight`, `convs.{i}.weight`, `convs.{i}.bias`, `out_conv.*`, `fc1.*`, `fc2.*`), each
//! owned by a layer of that name ([`crate::layers`]).

use super::Model;
use crate::data::dataset::Targets;
use crate::engine::arena::into_arena;
use crate::engine::{Act, Backend, Dropout, Param, Tensor};
use crate::layers::{Conv1d, DropSite, Embedding, Layer, Linear};
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

/// The simple WaveNet: its layers, and the activations of its wiring (sized for `max_batch`
/// windows).
pub struct Wavenet<B: Backend> {
    cfg: WavenetConfig,
    max_batch: usize,
    emb: Embedding<B>,
    /// `convs.{i}`, writing into the shared pre-activation scratch `pre`.
    convs: Vec<Conv1d<B>>,
    /// `out_conv` (its output `[B, 1, T]` before the ReLU), `fc1` (`[B, D]` before the ReLU),
    /// `fc2` (its output: the logits `[B, V]`).
    out_conv: Conv1d<B>,
    fc1: Linear<B>,
    fc2: Linear<B>,
    // ---- the wiring's activations ----
    /// Conv input of layer 0: the embeddings transposed `[B, E, T]`.
    h0: B::Buf,
    /// Pre-activation scratch `[B, C, T]` (shared by every conv layer).
    pre: B::Buf,
    /// Post-ReLU output of every conv layer `[B, C, T]`.
    hs: Vec<B::Buf>,
    /// relu(out_conv) `[B, T]` and relu(fc1) `[B, D]`.
    u: B::Buf,
    f: B::Buf,
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
        let m = max_batch;
        // Made in PyTorch's registration order: the draws from `rng` are its initialisation's.
        let emb = Embedding::new(b, "emb", v, e, m * t, rng);
        let convs =
            (0..layers).map(|i| Conv1d::new(b, &format!("convs.{i}"), if i == 0 { e } else { c }, c, k, 1 << i, rng)).collect();
        let out_conv = Conv1d::new(b, "out_conv", c, 1, 1, 1, rng).with_output(b, m, t);
        let fc1 = Linear::new(b, "fc1", t, d, m, rng);
        let fc2 = Linear::new(b, "fc2", d, v, m, rng);
        let mut model = Wavenet {
            dropout: None,
            cfg: cfg.clone(),
            max_batch,
            emb,
            convs,
            out_conv,
            fc1,
            fc2,
            h0: b.alloc(m * e * t),
            pre: b.alloc(m * c * t),
            hs: (0..layers).map(|_| b.alloc(m * c * t)).collect(),
            u: b.alloc(m * t),
            f: b.alloc(m * d),
            df: b.alloc(m * d),
            df_pre: b.alloc(m * d),
            du: b.alloc(m * t),
            du_pre: b.alloc(m * t),
            dh: b.alloc(m * c * t),
            dpre: b.alloc(m * c * t),
            dh0: b.alloc(m * e * t),
            demb: b.alloc(m * t * e),
        };
        into_arena(b, model.params_mut());
        model
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
        let mut p = self.emb.params();
        p.extend(self.convs.iter().flat_map(|c| c.params()));
        p.extend(self.out_conv.params());
        p.extend(self.fc1.params());
        p.extend(self.fc2.params());
        p
    }

    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut p = self.emb.params_mut();
        p.extend(self.convs.iter_mut().flat_map(|c| c.params_mut()));
        p.extend(self.out_conv.params_mut());
        p.extend(self.fc1.params_mut());
        p.extend(self.fc2.params_mut());
        p
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
        let WavenetConfig { window: t, embed: e, channels: c, .. } = self.cfg;
        let d = self.dropout.as_ref();
        self.emb.forward(b, x, batch * t);
        b.transpose(&self.emb.out, &mut self.h0, batch, t, e);
        for (i, conv) in self.convs.iter_mut().enumerate() {
            let input = if i == 0 { &self.h0 } else { &self.hs[i - 1] };
            conv.forward_into(b, input, &mut self.pre, batch, t);
            b.act_fwd(Act::Relu, &self.pre, &mut self.hs[i], batch * c * t);
            DropSite(i as u32).apply(b, d, &mut self.hs[i], batch * c * t);
        }
        let top = self.hs.last().expect("at least one layer");
        self.out_conv.forward(b, top, batch, t);
        b.act_fwd(Act::Relu, &self.out_conv.y, &mut self.u, batch * t);
        self.fc1.forward(b, &self.u, batch);
        b.act_fwd(Act::Relu, &self.fc1.y.buf, &mut self.f, batch * self.cfg.dense);
        self.fc2.forward(b, &self.f, batch);
    }

    fn logits(&self) -> &Tensor<B> {
        &self.fc2.y
    }

    fn set_dropout(&mut self, d: Option<Dropout>) {
        self.dropout = d;
    }

    fn backward(&mut self, b: &B, x: &B::Ids, dlogits: &B::Buf, batch: usize) {
        self.check_batch(batch);
        let WavenetConfig { window: t, embed: e, channels: c, dense: d, .. } = self.cfg;
        let dr = self.dropout.as_ref();
        self.fc2.backward(b, &self.f, dlogits, Some(&mut self.df), batch);
        b.act_bwd(Act::Relu, &self.f, &self.df, &mut self.df_pre, batch * d);
        self.fc1.backward(b, &self.u, &self.df_pre, Some(&mut self.du), batch);
        b.act_bwd(Act::Relu, &self.u, &self.du, &mut self.du_pre, batch * t);
        let top = self.hs.last().expect("at least one layer");
        self.out_conv.backward(b, top, &self.du_pre, &mut self.dh, false, batch, t);
        // dilated convs, last to first; self.dh holds the gradient of layer i's ReLU output.
        for (i, conv) in self.convs.iter_mut().enumerate().rev() {
            DropSite(i as u32).apply(b, dr, &mut self.dh, batch * c * t);
            b.act_bwd(Act::Relu, &self.hs[i], &self.dh, &mut self.dpre, batch * c * t);
            let input = if i == 0 { &self.h0 } else { &self.hs[i - 1] };
            let dinput = if i == 0 { &mut self.dh0 } else { &mut self.dh };
            conv.backward(b, input, &self.dpre, dinput, false, batch, t);
        }
        // [B, E, T] -> [B, T, E], then into the embedding rows.
        b.transpose(&self.dh0, &mut self.demb, batch, e, t);
        self.emb.backward(b, x, &self.demb, batch * t);
    }
}
