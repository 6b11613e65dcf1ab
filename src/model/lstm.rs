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
//! [`LstmModel::step`] runs one time step with a carried [`LstmState`] for generation: a new token
//! costs one step of every layer, not a rerun of the window.

use serde::{Deserialize, Serialize};

use super::{init, Model, Targets};
use crate::engine::dropout::{active, drop_site};
use crate::engine::optim::into_arena;
use crate::engine::{Act, Backend, Dropout, Lstm, MatMul, Param, Tensor};
use crate::engine::{LstmSaved, LstmSeqs, Strided};
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

/// The carried recurrent state of every layer for [`LstmModel::step`]: `h[l], c[l] [batch, H]`.
pub struct LstmState<B: Backend> {
    pub batch: usize,
    pub hidden: usize,
    pub h: Vec<B::Buf>,
    pub c: Vec<B::Buf>,
}

impl<B: Backend> LstmState<B> {
    /// The zero state (what the training windows start from).
    pub fn zeros(b: &B, cfg: &LstmConfig, batch: usize) -> Self {
        let n = batch * cfg.hidden;
        LstmState {
            batch,
            hidden: cfg.hidden,
            h: (0..cfg.layers).map(|_| b.alloc(n)).collect(),
            c: (0..cfg.layers).map(|_| b.alloc(n)).collect(),
        }
    }

    /// Back to the zero state.
    pub fn reset(&mut self, b: &B) {
        let n = self.batch * self.hidden;
        for buf in self.h.iter_mut().chain(self.c.iter_mut()) {
            b.fill(buf, n, 0.0);
        }
    }
}

/// One layer's slice of the activation arena, sized for `max_batch` windows of `T` steps (also
/// the piano-roll LSTM's, `crate::roll::model`).
pub(crate) struct LayerArena<B: Backend> {
    /// Input projection `x W_ih^T + b_ih + b_hh` [B, T, 4H].
    pub(crate) xw: B::Buf,
    /// Activated gates i, f, g, o [B, T, 4H] (kept for the backward).
    pub(crate) gates: B::Buf,
    /// Hidden and cell states h_t, c_t [B, T, H].
    pub(crate) hs: B::Buf,
    pub(crate) cs: B::Buf,
    /// Gradient reaching `hs` from above [B, T, H].
    pub(crate) dhs: B::Buf,
    /// `b_ih + b_hh` [4H], added to the input projection in one pass.
    pub(crate) bias: B::Buf,
}

impl<B: Backend> LayerArena<B> {
    /// The buffers of one layer of `h` units for `rows` = batch x time positions.
    pub(crate) fn new(b: &B, rows: usize, h: usize) -> Self {
        LayerArena {
            xw: b.alloc(rows * 4 * h),
            gates: b.alloc(rows * 4 * h),
            hs: b.alloc(rows * h),
            cs: b.alloc(rows * h),
            dhs: b.alloc(rows * h),
            bias: b.alloc(4 * h),
        }
    }
}

/// Append the parameters of an `nl`-layer LSTM stack (input width `e`, `h` units) under PyTorch's
/// names (`lstm.weight_ih_l{l}`, `weight_hh`, `bias_ih`, `bias_hh` per layer), initialised as
/// PyTorch does: uniform in +-1/sqrt(h), in that order.
pub(crate) fn push_lstm_params<B: Backend>(b: &B, rng: &mut Rng, params: &mut Vec<Param<B>>, e: usize, h: usize, nl: usize) {
    let bound = 1.0 / (h as f32).sqrt();
    for l in 0..nl {
        let inp = if l == 0 { e } else { h };
        let shapes: [(&str, Vec<usize>); 4] = [
            ("weight_ih", vec![4 * h, inp]),
            ("weight_hh", vec![4 * h, h]),
            ("bias_ih", vec![4 * h]),
            ("bias_hh", vec![4 * h]),
        ];
        for (name, shape) in shapes {
            let n = shape.iter().product();
            params.push(Param::new(b, &format!("lstm.{name}_l{l}"), &shape, &init::uniform(rng, n, bound)));
        }
    }
}

/// `lstm` / `lstm-seq`; see the module documentation.
pub struct LstmModel<B: Backend> {
    cfg: LstmConfig,
    params: Vec<Param<B>>,
    max_batch: usize,
    window: usize,
    /// Embedded tokens [B*T, E].
    emb: B::Buf,
    layers: Vec<LayerArena<B>>,
    /// Zero initial state h0 = c0 [B, H] (never written).
    zeros: B::Buf,
    /// Last-step hidden state [B, H] (`lstm` only).
    z: B::Buf,
    /// fc1 output before and after the ReLU [rows, D].
    fc1: B::Buf,
    a1: B::Buf,
    /// [rows, V], rows = B (`lstm`) or B*T (`lstm-seq`).
    logits: Tensor<B>,
    /// Gradient scratch: d relu(fc1) and d fc1 [rows, D], d z [B, H] (`lstm`), the gates' gradient
    /// [B, T, 4H] (shared by the layers, which are done one after the other), its sum over rows
    /// (the gradient of either bias) [4H], d emb [B*T, E].
    da1: B::Buf,
    dfc1: B::Buf,
    dz: B::Buf,
    dxw: B::Buf,
    dbias: B::Buf,
    demb: B::Buf,
    /// Dropout of the current training step (None: identity).
    dropout: Option<Dropout>,
    /// The dropped inputs of layers 1.. [B*T, H] each, and (`lstm-seq`) of the head [B*T, H]:
    /// allocated on the first step with dropout.
    drop_hs: Vec<B::Buf>,
    drop_head: B::Buf,
    drop_ready: bool,
}

// Parameter indices, in PyTorch's `named_parameters()` order.
const EMB: usize = 0;
fn w_ih(l: usize) -> usize {
    1 + 4 * l
}
fn w_hh(l: usize) -> usize {
    2 + 4 * l
}
fn b_ih(l: usize) -> usize {
    3 + 4 * l
}
fn b_hh(l: usize) -> usize {
    4 + 4 * l
}

fn mm(m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool, accumulate: bool) -> MatMul {
    MatMul { m, k, n, trans_a, trans_b, accumulate }
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
        let mut params = vec![Param::new(b, "emb.weight", &[v, e], &init::normal(rng, v * e))];
        push_lstm_params(b, rng, &mut params, e, h, nl);
        for (name, fan_in, fan_out) in [("fc1", h, d), ("fc2", d, v)] {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let w = init::uniform(rng, fan_out * fan_in, bound);
            params.push(Param::new(b, &format!("{name}.weight"), &[fan_out, fan_in], &w));
            params.push(Param::new(b, &format!("{name}.bias"), &[fan_out], &init::uniform(rng, fan_out, bound)));
        }

        let n = max_batch * window;
        let rows = if seq { n } else { max_batch };
        let layers = (0..nl).map(|_| LayerArena::new(b, n, h)).collect();
        LstmModel {
            params: into_arena(b, params),
            max_batch,
            window,
            emb: b.alloc(n * e),
            layers,
            zeros: b.alloc(max_batch * h),
            z: b.alloc(if seq { 0 } else { max_batch * h }),
            fc1: b.alloc(rows * d),
            a1: b.alloc(rows * d),
            logits: Tensor::zeros(b, &[rows, v]),
            da1: b.alloc(rows * d),
            dfc1: b.alloc(rows * d),
            dz: b.alloc(if seq { 0 } else { max_batch * h }),
            dxw: b.alloc(n * 4 * h),
            dbias: b.alloc(4 * h),
            demb: b.alloc(n * e),
            dropout: None,
            drop_hs: Vec::new(),
            drop_head: b.alloc(0),
            drop_ready: false,
            cfg,
        }
    }

    /// The dropout buffers, on the first step that needs them.
    fn ensure_drop_buffers(&mut self, b: &B) {
        let n = self.max_batch * self.window * self.cfg.hidden;
        if !self.drop_ready {
            self.drop_hs = (1..self.cfg.layers).map(|_| b.alloc(n)).collect();
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
        LstmState::zeros(b, &self.cfg, batch)
    }

    /// One time step for generation: feeds `ids [batch]` (one token per stream) through every
    /// layer starting from `state` (which is advanced), and returns the logits `[batch, V]` of the
    /// next token (the first `batch` rows of the returned tensor). Uses the training arena as
    /// scratch, so it overwrites what the last [`Model::forward`] left there.
    pub fn step<'a>(&'a mut self, b: &B, ids: &B::Ids, state: &mut LstmState<B>) -> &'a Tensor<B> {
        let batch = state.batch;
        assert!(batch <= self.max_batch, "lstm step: batch {batch} > max_batch {}", self.max_batch);
        assert_eq!(state.h.len(), self.cfg.layers, "lstm step: state has the wrong number of layers");
        let (e, h) = (self.cfg.embed, self.cfg.hidden);
        b.embedding_fwd(ids, &self.params[EMB].value.buf, &mut self.emb, batch, e);
        for l in 0..self.cfg.layers {
            let (below, rest) = self.layers.split_at_mut(l);
            let (input, in_dim) = match below.last() {
                Some(prev) => (&prev.hs, h),
                None => (&self.emb, e),
            };
            let layer = &mut rest[0];
            layer_forward(b, &self.params[w_ih(l)..w_ih(l) + 4], input, in_dim, &state.h[l], &state.c[l], layer, batch, 1, h);
            // With one step, hs and cs [batch, 1, H] are the new state [batch, H].
            b.copy_strided(&layer.hs, &mut state.h[l], Strided::block(batch, h));
            b.copy_strided(&layer.cs, &mut state.c[l], Strided::block(batch, h));
        }
        let top = &self.layers[self.cfg.layers - 1].hs;
        head_forward(b, &self.params, &self.cfg, top, batch, &mut self.fc1, &mut self.a1, &mut self.logits.buf);
        &self.logits
    }
}

/// Forward of one LSTM layer, `p` its four parameters (`weight_ih`, `weight_hh`, `bias_ih`,
/// `bias_hh`), over `x [batch, time, in_dim]` from the state `h0, c0 [batch, H]`:
/// `xw = x W_ih^T + (b_ih + b_hh)` (one product for every step), then the recurrence.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_forward<B: Backend>(
    b: &B,
    p: &[Param<B>],
    x: &B::Buf,
    in_dim: usize,
    h0: &B::Buf,
    c0: &B::Buf,
    layer: &mut LayerArena<B>,
    batch: usize,
    time: usize,
    h: usize,
) {
    let n = batch * time;
    let [w_ih, w_hh, b_ih, b_hh] = [0, 1, 2, 3].map(|i| &p[i].value.buf);
    b.matmul(x, w_ih, &mut layer.xw, mm(n, in_dim, 4 * h, false, true, false));
    // The two biases summed first (4H values), so that the [n, 4H] projection is passed over once.
    b.copy_strided(b_ih, &mut layer.bias, Strided::contiguous(4 * h));
    b.add(b_hh, &mut layer.bias, 4 * h);
    b.bias_add(&mut layer.xw, &layer.bias, n, 4 * h, 1);
    let dims = Lstm { batch, time, hidden: h };
    b.lstm_fwd(&layer.xw, w_hh, h0, c0, LstmSeqs { hs: &mut layer.hs, cs: &mut layer.cs, gates: &mut layer.gates }, dims);
}

/// `logits [rows, V] = fc2(relu(fc1(z [rows, H])))`, keeping fc1's output and its ReLU.
#[allow(clippy::too_many_arguments)]
fn head_forward<B: Backend>(
    b: &B,
    params: &[Param<B>],
    cfg: &LstmConfig,
    z: &B::Buf,
    rows: usize,
    fc1: &mut B::Buf,
    a1: &mut B::Buf,
    logits: &mut B::Buf,
) {
    let (h, d, v) = (cfg.hidden, cfg.dense, cfg.vocab);
    let fc = 1 + 4 * cfg.layers;
    b.matmul(z, &params[fc].value.buf, fc1, mm(rows, h, d, false, true, false));
    b.bias_add(fc1, &params[fc + 1].value.buf, rows, d, 1);
    b.act_fwd(Act::Relu, fc1, a1, rows * d);
    b.matmul(a1, &params[fc + 2].value.buf, logits, mm(rows, d, v, false, true, false));
    b.bias_add(logits, &params[fc + 3].value.buf, rows, v, 1);
}

impl<B: Backend> Model<B> for LstmModel<B> {
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
        let (t, e, h) = (self.window, self.cfg.embed, self.cfg.hidden);
        let d = self.dropout;
        let on = active(d.as_ref());
        if on {
            self.ensure_drop_buffers(b);
        }
        let n = batch * t;
        b.embedding_fwd(x, &self.params[EMB].value.buf, &mut self.emb, n, e);
        drop_site(b, d.as_ref(), 0, &mut self.emb, n * e);
        for l in 0..self.cfg.layers {
            let (below, rest) = self.layers.split_at_mut(l);
            let (input, in_dim) = match below.last() {
                Some(prev) if on => {
                    b.copy_strided(&prev.hs, &mut self.drop_hs[l - 1], Strided::contiguous(n * h));
                    drop_site(b, d.as_ref(), l as u32, &mut self.drop_hs[l - 1], n * h);
                    (&self.drop_hs[l - 1], h)
                }
                Some(prev) => (&prev.hs, h),
                None => (&self.emb, e),
            };
            layer_forward(b, &self.params[w_ih(l)..w_ih(l) + 4], input, in_dim, &self.zeros, &self.zeros, &mut rest[0], batch, t, h);
        }
        let nl = self.cfg.layers;
        let top = &self.layers[nl - 1].hs;
        let rows = self.target_rows(batch);
        let z = if self.cfg.seq {
            if on {
                b.copy_strided(top, &mut self.drop_head, Strided::contiguous(n * h));
                drop_site(b, d.as_ref(), nl as u32, &mut self.drop_head, n * h);
                &self.drop_head
            } else {
                top
            }
        } else {
            // z = h[:, T-1]: row b sits at b*T*H + (T-1)*H.
            b.copy_strided(top, &mut self.z, Strided::block(batch, h).from((t - 1) * h, t * h));
            drop_site(b, d.as_ref(), nl as u32, &mut self.z, batch * h);
            &self.z
        };
        head_forward(b, &self.params, &self.cfg, z, rows, &mut self.fc1, &mut self.a1, &mut self.logits.buf);
    }

    fn logits(&self) -> &Tensor<B> {
        &self.logits
    }

    fn set_dropout(&mut self, d: Option<Dropout>) {
        self.dropout = d;
    }

    fn backward(&mut self, b: &B, x: &B::Ids, dlogits: &B::Buf, batch: usize) {
        assert!(batch <= self.max_batch, "lstm backward: batch {batch} > max_batch {}", self.max_batch);
        let (t, e, h, d, v) = (self.window, self.cfg.embed, self.cfg.hidden, self.cfg.dense, self.cfg.vocab);
        let nl = self.cfg.layers;
        let n = batch * t;
        let rows = self.target_rows(batch);
        let fc = 1 + 4 * nl;
        let p = &mut self.params;
        let dr = self.dropout;
        let on = active(dr.as_ref());

        // Head: logits = a1 W2^T + b2, a1 = relu(fc1), fc1 = z W1^T + b1.
        b.matmul(dlogits, &self.a1, &mut p[fc + 2].grad.buf, mm(v, rows, d, true, false, true));
        b.bias_grad(dlogits, &mut p[fc + 3].grad.buf, rows, v, 1);
        b.matmul(dlogits, &p[fc + 2].value.buf, &mut self.da1, mm(rows, v, d, false, false, false));
        b.act_bwd(Act::Relu, &self.a1, &self.da1, &mut self.dfc1, rows * d);
        b.bias_grad(&self.dfc1, &mut p[fc + 1].grad.buf, rows, d, 1);
        let top = &mut self.layers[nl - 1];
        if self.cfg.seq {
            let z = if on { &self.drop_head } else { &top.hs };
            b.matmul(&self.dfc1, z, &mut p[fc].grad.buf, mm(d, rows, h, true, false, true));
            b.matmul(&self.dfc1, &p[fc].value.buf, &mut top.dhs, mm(rows, d, h, false, false, false));
            drop_site(b, dr.as_ref(), nl as u32, &mut top.dhs, n * h);
        } else {
            b.matmul(&self.dfc1, &self.z, &mut p[fc].grad.buf, mm(d, rows, h, true, false, true));
            b.matmul(&self.dfc1, &p[fc].value.buf, &mut self.dz, mm(rows, d, h, false, false, false));
            drop_site(b, dr.as_ref(), nl as u32, &mut self.dz, batch * h);
            // Only the last step of each window receives a gradient from the head.
            b.fill(&mut top.dhs, n * h, 0.0);
            b.copy_strided(&self.dz, &mut top.dhs, Strided::block(batch, h).to((t - 1) * h, t * h).adding());
        }

        // LSTM layers, top down: BPTT gives the gates' gradient dxw, which is that of the input
        // projection xw = x W_ih^T + b_ih + b_hh.
        let dims = Lstm { batch, time: t, hidden: h };
        for l in (0..nl).rev() {
            let (below, rest) = self.layers.split_at_mut(l);
            let layer = &rest[0];
            let pw = &mut p[w_hh(l)];
            let seqs = LstmSeqs { hs: &layer.hs, cs: &layer.cs, gates: &layer.gates };
            let saved = LstmSaved { h0: &self.zeros, c0: &self.zeros, seqs };
            b.lstm_bwd(&pw.value.buf, saved, &layer.dhs, &mut self.dxw, &mut pw.grad.buf, dims);
            // Both biases get the same gradient: reduce once, add twice.
            b.fill(&mut self.dbias, 4 * h, 0.0);
            b.bias_grad(&self.dxw, &mut self.dbias, n, 4 * h, 1);
            b.add(&self.dbias, &mut p[b_ih(l)].grad.buf, 4 * h);
            b.add(&self.dbias, &mut p[b_hh(l)].grad.buf, 4 * h);
            let (input, dinput, in_dim) = match below.last_mut() {
                Some(prev) if on => (&self.drop_hs[l - 1], &mut prev.dhs, h),
                Some(prev) => (&prev.hs, &mut prev.dhs, h),
                None => (&self.emb, &mut self.demb, e),
            };
            b.matmul(&self.dxw, input, &mut p[w_ih(l)].grad.buf, mm(4 * h, n, in_dim, true, false, true));
            b.matmul(&self.dxw, &p[w_ih(l)].value.buf, dinput, mm(n, 4 * h, in_dim, false, false, false));
            // The input of layer l was dropped at site l (0: the embeddings).
            drop_site(b, dr.as_ref(), l as u32, dinput, n * in_dim);
        }
        b.embedding_bwd(x, &self.demb, &mut p[EMB].grad.buf, n, e);
    }
}
