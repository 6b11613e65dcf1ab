//! The LSTM models, `lstm` (many-to-one) and `lstm-seq` (many-to-many), PyTorch's
//! `LSTMModel` in `peers/torch_models.py`:
//!
//! ```text
//! e  = emb.weight[x]                           [B, T, E]
//! h1 = LSTM layer 0 over e   (h0 = c0 = 0)     [B, T, H]
//! h2 = LSTM layer 1 over h1  ...               [B, T, H]     (`layers` layers in all)
//! z  = h2[:, T-1]  (lstm)  |  h2  (lstm-seq)   [B, H] | [B*T, H]
//! logits = fc2(relu(fc1(z)))                   [B, V] | [B*T, V]
//! ```
//!
//! Each LSTM layer is one matrix product for the input projection of every time step,
//! `xw [B*T, 4H] = x W_ih^T + b_ih + b_hh`, then [`Backend::lstm_fwd`] for the recurrence.
//! The two PyTorch bias vectors are kept as two parameters (they get the same gradient), so one
//! PyTorch Adam step is reproduced exactly. Everything is written with the [`Backend`] operations,
//! so the same code runs on the CPU and the GPU.
//!
//! Dropout (issue 13, [`Model::set_dropout`], training steps only) acts at three kinds of site:
//! the embeddings `e` (site 0), the input of every LSTM layer above the first (site `l` for the
//! input of layer `l`, a copy of `h_l` so that layer `l - 1`'s backward keeps its own outputs), and
//! the input `z` of the head (site `layers`).
//!
//! The model is a struct of named layers ([`crate::layers`]: an [`Embedding`], an [`LstmStack`],
//! two [`Linear`]) whose wiring is written once: [`LstmModel::step`] runs the
//! same forward over one time step from a carried [`LstmState`] for generation, so a new token
//! costs one step of every layer, not a rerun of the window.

use serde::{Deserialize, Serialize};

use super::Model;
use crate::data::dataset::Targets;
use crate::engine::dropout::active;
use crate::engine::arena::into_arena;
use crate::engine::{Act, Backend, Dropout, Param, Strided, Tensor};
pub use crate::layers::LstmState;
use crate::layers::{DropSite, Embedding, Layer, Linear, LstmRun, LstmStack};
use crate::rng::Rng;

/// Hyper-parameters of the LSTM models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LstmConfig {
    /// Vocabulary size V.
    pub vocab: usize,
    /// Embedding width E.
    pub embed: usize,
    /// LSTM hidden size H (every layer).
    pub hidden: usize,
    /// Number of stacked LSTM layers.
    pub layers: usize,
    /// Width D of the dense layer after the LSTM.
    pub dense: usize,
    /// `false`: `lstm`, predict the token after the window from its last step ([`Targets::Last`]);
    /// `true`: `lstm-seq`, predict the next token at every step ([`Targets::Every`]).
    pub seq: bool,
}

impl LstmConfig {
    /// The defaults: E = 100, H = 128, two layers, D = 256.
    pub fn new(vocab: usize, seq: bool) -> Self {
        LstmConfig { vocab, embed: 100, hidden: 128, layers: 2, dense: 256, seq }
    }

    /// Every size must be positive.
    pub fn validate(&self) -> Result<(), String> {
        let sizes =
            [("vocab", self.vocab), ("embed", self.embed), ("hidden", self.hidden), ("layers", self.layers), ("dense", self.dense)];
        for (name, v) in sizes {
            if v == 0 {
                return Err(format!("lstm config: {name} must be positive"));
            }
        }
        Ok(())
    }

    /// Number of trainable values.
    pub fn n_params(&self) -> usize {
        let (v, e, h, d) = (self.vocab, self.embed, self.hidden, self.dense);
        let lstm: usize = (0..self.layers).map(|l| 4 * h * (if l == 0 { e } else { h }) + 4 * h * h + 8 * h).sum();
        v * e + lstm + d * h + d + v * d + v
    }
}

/// `lstm` / `lstm-seq`; see the module documentation.
pub struct LstmModel<B: Backend> {
    cfg: LstmConfig,
    max_batch: usize,
    window: usize,
    /// `emb`: embedded tokens [B*T, E].
    emb: Embedding<B>,
    /// `lstm.*_l{l}`, layer l reading layer l-1's `hs` (dropout site l on its input).
    lstm: LstmStack<B>,
    /// `fc1` (its output before the ReLU [rows, D]) and `fc2` (its output: the logits [rows, V],
    /// rows = B (`lstm`) or B*T (`lstm-seq`)).
    fc1: Linear<B>,
    fc2: Linear<B>,
    /// Last-step hidden state [B, H] (`lstm` only).
    z: B::Buf,
    /// relu(fc1) [rows, D].
    a1: B::Buf,
    /// Gradient scratch: d relu(fc1) and d fc1 [rows, D], d z [B, H] (`lstm`), d emb [B*T, E].
    da1: B::Buf,
    dfc1: B::Buf,
    dz: B::Buf,
    demb: B::Buf,
    /// Dropout of the current training step (None: identity).
    dropout: Option<Dropout>,
    /// The dropped input of the head [B*T, H] (`lstm-seq`): allocated on the first step with
    /// dropout.
    drop_head: B::Buf,
    drop_ready: bool,
}

impl<B: Backend> LstmModel<B> {
    /// A freshly initialised model (PyTorch's default initialisations drawn from `rng`) with an
    /// activation arena for `max_batch` windows of `window` tokens. Panics if a size in `cfg` is 0
    /// (check [`LstmConfig::validate`] first on untrusted configurations).
    pub fn new(b: &B, cfg: LstmConfig, max_batch: usize, window: usize, rng: &mut Rng) -> Self {
        if let Err(e) = cfg.validate() {
            panic!("{e}");
        }
        assert!(max_batch > 0 && window > 0, "lstm model: max_batch and window must be positive");
        let LstmConfig { vocab: v, embed: e, hidden: h, layers: nl, dense: d, seq } = cfg;
        let n = max_batch * window;
        let rows = if seq { n } else { max_batch };
        // Made in PyTorch's registration order: the draws from `rng` are its initialisation's.
        let emb = Embedding::new(b, "emb", v, e, n, rng);
        let lstm = LstmStack::new(b, "lstm", (e, h, nl), n, max_batch, rng);
        let fc1 = Linear::new(b, "fc1", h, d, rows, rng);
        let fc2 = Linear::new(b, "fc2", d, v, rows, rng);
        let mut model = LstmModel {
            max_batch,
            window,
            emb,
            lstm,
            fc1,
            fc2,
            z: b.alloc(if seq { 0 } else { max_batch * h }),
            a1: b.alloc(rows * d),
            da1: b.alloc(rows * d),
            dfc1: b.alloc(rows * d),
            dz: b.alloc(if seq { 0 } else { max_batch * h }),
            demb: b.alloc(n * e),
            dropout: None,
            drop_head: b.alloc(0),
            drop_ready: false,
            cfg,
        };
        into_arena(b, model.params_mut());
        model
    }

    /// The head's dropout buffer, on the first step that needs it (the stack allocates its own).
    fn ensure_drop_buffers(&mut self, b: &B) {
        let n = self.max_batch * self.window * self.cfg.hidden;
        if !self.drop_ready {
            self.drop_head = b.alloc(if self.cfg.seq { n } else { 0 });
            self.drop_ready = true;
        }
    }

    pub fn config(&self) -> &LstmConfig {
        &self.cfg
    }

    /// Largest batch the arena holds.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// A zero [`LstmState`] for [`LstmModel::step`] over `batch <= max_batch` streams.
    pub fn zero_state(&self, b: &B, batch: usize) -> LstmState<B> {
        self.lstm.zero_state(b, batch)
    }

    /// One time step for generation: feeds `ids [batch]` (one token per stream) through every
    /// layer starting from `state` (which is advanced), and returns the logits `[batch, V]` of the
    /// next token (the first `batch` rows of the returned tensor). The forward's own wiring over
    /// one step; it uses the training arena, so it overwrites what the last [`Model::forward`]
    /// left there.
    pub fn step<'a>(&'a mut self, b: &B, ids: &B::Ids, state: &mut LstmState<B>) -> &'a Tensor<B> {
        let batch = state.batch;
        assert!(batch <= self.max_batch, "lstm step: batch {batch} > max_batch {}", self.max_batch);
        assert_eq!(state.h.len(), self.cfg.layers, "lstm step: state has the wrong number of layers");
        self.run(b, ids, batch, 1, Some(state), None);
        // With one step, hs and cs [batch, 1, H] are the new state [batch, H].
        self.lstm.save_state(b, state, 1);
        &self.fc2.y
    }

    /// The wiring, written once: embeddings (dropout site 0), the stack (site `l` on the input
    /// of layer `l >= 1`) from `state` or the zero state, the head (site `layers` on its input)
    /// over `time` steps of `batch` windows.
    fn run(&mut self, b: &B, x: &B::Ids, batch: usize, time: usize, state: Option<&LstmState<B>>, d: Option<Dropout>) {
        let (e, h, nl) = (self.cfg.embed, self.cfg.hidden, self.cfg.layers);
        let d = d.as_ref();
        let on = active(d);
        if on {
            self.ensure_drop_buffers(b);
        }
        let n = batch * time;
        self.emb.forward(b, x, n);
        DropSite(0).apply(b, d, &mut self.emb.out, n * e);
        self.lstm.forward(b, &self.emb.out, LstmRun { batch, time, state, dropout: d });
        let top = &self.lstm.top().hs;
        let (z, rows) = if self.cfg.seq {
            if on {
                b.copy_strided(top, &mut self.drop_head, Strided::contiguous(n * h));
                DropSite(nl as u32).apply(b, d, &mut self.drop_head, n * h);
                (&self.drop_head, n)
            } else {
                (top, n)
            }
        } else {
            // z = h[:, T-1]: row b sits at b*T*H + (T-1)*H.
            b.copy_strided(top, &mut self.z, Strided::block(batch, h).from((time - 1) * h, time * h).to(0, h));
            DropSite(nl as u32).apply(b, d, &mut self.z, batch * h);
            (&self.z, batch)
        };
        // logits = fc2(relu(fc1(z)))
        self.fc1.forward(b, z, rows);
        b.act_fwd(Act::Relu, &self.fc1.y.buf, &mut self.a1, rows * self.cfg.dense);
        self.fc2.forward(b, &self.a1, rows);
    }
}

impl<B: Backend> Model<B> for LstmModel<B> {
    fn params(&self) -> Vec<&Param<B>> {
        let mut p = self.emb.params();
        p.extend(self.lstm.params());
        p.extend(self.fc1.params());
        p.extend(self.fc2.params());
        p
    }

    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut p = self.emb.params_mut();
        p.extend(self.lstm.params_mut());
        p.extend(self.fc1.params_mut());
        p.extend(self.fc2.params_mut());
        p
    }

    fn vocab(&self) -> usize {
        self.cfg.vocab
    }

    fn window(&self) -> usize {
        self.window
    }

    fn targets(&self) -> Targets {
        if self.cfg.seq {
            Targets::Every
        } else {
            Targets::Last
        }
    }

    fn forward(&mut self, b: &B, x: &B::Ids, batch: usize) {
        assert!(batch <= self.max_batch, "lstm forward: batch {batch} > max_batch {}", self.max_batch);
        self.run(b, x, batch, self.window, None, self.dropout);
    }

    fn logits(&self) -> &Tensor<B> {
        &self.fc2.y
    }

    fn set_dropout(&mut self, d: Option<Dropout>) {
        self.dropout = d;
    }

    fn backward(&mut self, b: &B, x: &B::Ids, dlogits: &B::Buf, batch: usize) {
        assert!(batch <= self.max_batch, "lstm backward: batch {batch} > max_batch {}", self.max_batch);
        let (t, e, h, d) = (self.window, self.cfg.embed, self.cfg.hidden, self.cfg.dense);
        let nl = self.cfg.layers;
        let n = batch * t;
        let rows = self.target_rows(batch);
        let dr = self.dropout;
        let dr = dr.as_ref();
        let on = active(dr);

        // Head: logits = a1 W2^T + b2, a1 = relu(fc1), fc1 = z W1^T + b1.
        self.fc2.backward(b, &self.a1, dlogits, Some(&mut self.da1), rows);
        b.act_bwd(Act::Relu, &self.a1, &self.da1, &mut self.dfc1, rows * d);
        let top = self.lstm.top_mut();
        if self.cfg.seq {
            let z = if on { &self.drop_head } else { &top.hs };
            self.fc1.backward(b, z, &self.dfc1, Some(&mut top.dhs), rows);
            DropSite(nl as u32).apply(b, dr, &mut top.dhs, n * h);
        } else {
            self.fc1.backward(b, &self.z, &self.dfc1, Some(&mut self.dz), rows);
            DropSite(nl as u32).apply(b, dr, &mut self.dz, batch * h);
            // Only the last step of each window receives a gradient from the head.
            b.fill(&mut top.dhs, n * h, 0.0);
            b.copy_strided(&self.dz, &mut top.dhs, Strided::block(batch, h).to((t - 1) * h, t * h).adding());
        }

        // LSTM layers, top down, each from the gradient reaching its outputs to its input's;
        // the embeddings were dropped at site 0.
        self.lstm.backward(b, &self.emb.out, &mut self.demb, LstmRun { batch, time: t, state: None, dropout: dr });
        DropSite(0).apply(b, dr, &mut self.demb, n * e);
        self.emb.backward(b, x, &self.demb, n);
    }
}
