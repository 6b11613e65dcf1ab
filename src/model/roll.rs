//! The models of piano-roll mode (issue 14): an 88-key multi-hot frame in, 88 logits out, at every
//! step (many-to-many; row `b*T + t` of the logits predicts frame `t + 1` of item `b`).
//!
//! ```text
//! x_t   = sum_{k on in frame t} inp.weight[k] + inp.bias        embedding bag, [B*T, E]
//! lstm:           h = LSTM stack over x (h0 = c0 = 0)           [B*T, H]
//!                 logits = out(h)                               Linear H -> 88
//! wavenet-gated:  h_0 = x transposed                            [B, R, T]   (E = R)
//!                 a_i = blocks.i.dil(h_i)   causal, kernel K, dilation 2^(i mod L), R -> 2R
//!                 z_i = tanh(a_i[:, :R]) * sigmoid(a_i[:, R:])
//!                 skip += blocks.i.skip(z_i)                    1x1 R -> S
//!                 h_{i+1} = h_i + blocks.i.res(z_i)             1x1 R -> R (not on the last block)
//!                 logits = post2(relu(post1(relu(skip))))       1x1 S -> S, S -> 88, transposed
//! ```
//!
//! The input projection is [`RollOps::bag_fwd`]: the gather-sum of the active keys' rows, which is
//! the product of the multi-hot frame with a dense `[88, E]` matrix without touching the zeros.
//! The LSTM layers are `lstm-seq`'s [`LstmStack`] (the backend's [`Backend::lstm_fwd`] /
//! [`Backend::lstm_bwd`] recurrence), the conv blocks the gated WaveNet's ops ([`Backend::conv1d_fwd`],
//! [`Backend::gated_fwd`]); dropout is the engine's ([`DropSite`], sites numbered below). Each model is a struct of named
//! layers ([`crate::layers`]).
//!
//! A batch holds `batch` items of `time` frames (`batch * time <= capacity`, the arena's size in
//! frames, allocated once); shorter items are padded at the end, which a causal model never sees
//! from earlier frames, and the loss masks the padded rows.

use crate::engine::dropout::active;
use crate::engine::arena::into_arena;
use crate::engine::roll::RollOps;
use crate::engine::{Act, Backend, Bce, Dropout, Param, Strided};
use crate::layers::{BagInput, Conv1d, DropSite, GatedStack, Layer, Linear, LstmRun, LstmStack};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

use crate::data::roll::KEYS;

/// A piano-roll model's hyper-parameters (stored in its checkpoint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "kebab-case")]
pub enum RollConfig {
    /// Bag E -> `layers` LSTM layers of H -> Linear H -> 88.
    Lstm { embed: usize, hidden: usize, layers: usize },
    /// Bag R -> gated dilated causal residual blocks -> 1x1 head.
    WavenetGated { residual: usize, skip: usize, kernel: usize, layers: usize, stacks: usize },
}

impl RollConfig {
    /// `lstm` or `wavenet-gated`.
    pub fn name(&self) -> &'static str {
        match self {
            RollConfig::Lstm { .. } => "lstm",
            RollConfig::WavenetGated { .. } => "wavenet-gated",
        }
    }

    /// Every size positive (the kernel at least 1).
    pub fn validate(&self) -> Result<(), String> {
        let sizes: Vec<(&str, usize)> = match *self {
            RollConfig::Lstm { embed, hidden, layers } => vec![("embed", embed), ("hidden", hidden), ("layers", layers)],
            RollConfig::WavenetGated { residual, skip, kernel, layers, stacks } => vec![
                ("residual", residual),
                ("skip", skip),
                ("kernel", kernel),
                ("layers", layers),
                ("stacks", stacks),
            ],
        };
        match sizes.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(format!("piano-roll {}: --{name} must be positive", self.name())),
            None => Ok(()),
        }
    }

    /// Width of the input projection (E, or R for the conv model).
    pub fn input_width(&self) -> usize {
        match *self {
            RollConfig::Lstm { embed, .. } => embed,
            RollConfig::WavenetGated { residual, .. } => residual,
        }
    }

    /// Frames of the past one output sees, itself included (`None`: all of them, the LSTM).
    pub fn receptive_field(&self) -> Option<usize> {
        match *self {
            RollConfig::Lstm { .. } => None,
            RollConfig::WavenetGated { kernel, layers, stacks, .. } => {
                Some(1 + (0..layers * stacks).map(|i| (kernel - 1) << (i % layers)).sum::<usize>())
            }
        }
    }

    /// Number of trainable values.
    pub fn n_params(&self) -> usize {
        match *self {
            RollConfig::Lstm { embed: e, hidden: h, layers } => {
                let lstm: usize = (0..layers).map(|l| 4 * h * (if l == 0 { e } else { h }) + 4 * h * h + 8 * h).sum();
                KEYS * e + e + lstm + KEYS * h + KEYS
            }
            RollConfig::WavenetGated { residual: r, skip: s, kernel: k, layers, stacks } => {
                let n = layers * stacks;
                let block = 2 * r * r * k + 2 * r + s * r + s;
                KEYS * r + r + n * block + (n - 1) * (r * r + r) + s * s + s + KEYS * s + KEYS
            }
        }
    }
}

/// A piano-roll model; see the module documentation.
pub trait RollModel<B: RollOps> {
    fn config(&self) -> &RollConfig;
    /// Parameters in a fixed order (their names are the checkpoint's tensor names).
    fn params(&self) -> Vec<&Param<B>>;
    fn params_mut(&mut self) -> Vec<&mut Param<B>>;
    /// The arena's size in frames: `batch * time` of a forward must not exceed it.
    fn capacity(&self) -> usize;
    /// Forward over `ids [batch*time, slots]` (each frame's keys, empty slots `u32::MAX`), frames
    /// laid out `[batch, time]`; leaves the logits `[batch*time, 88]` in [`RollModel::logits`].
    fn forward(&mut self, b: &B, ids: &B::Ids, slots: usize, batch: usize, time: usize);
    fn logits(&self) -> &B::Buf;
    /// Backward of the last forward from `dlogits` (laid out as the logits); accumulates every
    /// parameter's gradient.
    fn backward(&mut self, b: &B, ids: &B::Ids, slots: usize, dlogits: &B::Buf, batch: usize, time: usize);
    /// Dropout for the next forward and backward (`None`: evaluation and generation).
    fn set_dropout(&mut self, d: Option<Dropout>);

    /// The loss of the last forward against the next frames `y [n, 88]` with row weights `w`
    /// (sizes in `bce`): `stats` and `dlogits` as [`RollOps::bce_logits`] writes them; a joint
    /// head ([`crate::model::roll_nade`]) scores the frames its own way and leaves in `dlogits`
    /// what its [`RollModel::backward`] takes.
    fn loss(&mut self, b: &B, y: &B::Buf, w: &B::Buf, dlogits: &mut B::Buf, stats: &mut B::Buf, bce: Bce) {
        b.bce_logits(self.logits(), y, w, dlogits, stats, bce);
    }

    /// The features the output layer reads: `(buffer, width, channels_first)`, rows
    /// `[batch*time, width]`, or `[batch, width, time]` when `channels_first` (the conv model's).
    fn features(&self) -> (&B::Buf, usize, bool);

    /// [`RollModel::backward`] with `dfeat` (laid out as [`RollModel::features`]) added to the
    /// gradient of the features (a head beside the output layer that reads them too).
    #[allow(clippy::too_many_arguments)]
    fn backward_features(&mut self, b: &B, ids: &B::Ids, slots: usize, dlogits: &B::Buf, dfeat: Option<&B::Buf>, batch: usize, time: usize);

    /// A joint head's distributions of the frames after rows `rows` of the last forward, one per
    /// row, read back at once (`None`: 88 independent sigmoids of [`RollModel::logits`]).
    fn joint_frames(&self, b: &B, rows: &[usize]) -> Option<Vec<crate::layers::nade::NadeFrame>> {
        let _ = (b, rows);
        None
    }
}

/// A freshly initialised model (PyTorch's default initialisations from `rng`) with an arena of
/// `capacity` frames.
pub fn build<B: RollOps + 'static>(b: &B, cfg: &RollConfig, capacity: usize, rng: &mut Rng) -> Box<dyn RollModel<B>> {
    cfg.validate().unwrap_or_else(|e| panic!("{e}"));
    assert!(capacity > 0, "piano-roll model: capacity must be positive");
    match *cfg {
        RollConfig::Lstm { .. } => Box::new(RollLstm::new(b, cfg.clone(), capacity, rng)),
        RollConfig::WavenetGated { .. } => Box::new(RollConv::new(b, cfg.clone(), capacity, rng)),
    }
}

// ---- LSTM ---------------------------------------------------------------------------------------

/// Bag -> LSTM stack -> Linear, a struct of named layers ([`crate::layers`]). Parameters:
/// `inp.weight [88, E]`, `inp.bias`, then per layer `lstm.weight_ih_l{l}`, `lstm.weight_hh_l{l}`,
/// `lstm.bias_ih_l{l}`, `lstm.bias_hh_l{l}` (PyTorch's names and shapes), then `out.weight [88, H]`,
/// `out.bias`. Dropout sites: 0 the projected input, `l` the input of layer `l >= 1`, `layers` the
/// head's input.
pub struct RollLstm<B: Backend> {
    cfg: RollConfig,
    e: usize,
    h: usize,
    nl: usize,
    cap: usize,
    inp: BagInput<B>,
    lstm: LstmStack<B>,
    /// `out`; its output is the logits `[cap, 88]`.
    out: Linear<B>,
    dx: B::Buf,
    dropout: Option<Dropout>,
    drop_head: B::Buf,
    drop_ready: bool,
}

impl<B: RollOps> RollLstm<B> {
    fn new(b: &B, cfg: RollConfig, cap: usize, rng: &mut Rng) -> Self {
        let RollConfig::Lstm { embed: e, hidden: h, layers: nl } = cfg else { unreachable!() };
        // Made in registration order: the draws from `rng` are the initialisation's.
        let inp = BagInput::new(b, "inp", KEYS, e, cap, rng);
        let lstm = LstmStack::new(b, "lstm", (e, h, nl), cap, 1, rng);
        let out = Linear::new(b, "out", h, KEYS, cap, rng);
        let mut model = RollLstm {
            cfg,
            e,
            h,
            nl,
            cap,
            inp,
            lstm,
            out,
            dx: b.alloc(cap * e),
            dropout: None,
            drop_head: b.alloc(0),
            drop_ready: false,
        };
        into_arena(b, model.params_mut());
        model
    }
}

impl<B: RollOps> RollModel<B> for RollLstm<B> {
    fn config(&self) -> &RollConfig {
        &self.cfg
    }
    fn params(&self) -> Vec<&Param<B>> {
        let mut p = self.inp.params();
        p.extend(self.lstm.params());
        p.extend(self.out.params());
        p
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut p = self.inp.params_mut();
        p.extend(self.lstm.params_mut());
        p.extend(self.out.params_mut());
        p
    }
    fn capacity(&self) -> usize {
        self.cap
    }
    fn logits(&self) -> &B::Buf {
        &self.out.y.buf
    }
    fn set_dropout(&mut self, d: Option<Dropout>) {
        self.dropout = d;
    }

    fn forward(&mut self, b: &B, ids: &B::Ids, slots: usize, batch: usize, time: usize) {
        let n = batch * time;
        assert!(n <= self.cap, "piano-roll lstm: {batch} x {time} frames exceed the arena's {}", self.cap);
        let (e, h, nl) = (self.e, self.h, self.nl);
        let d = self.dropout;
        let d = d.as_ref();
        let on = active(d);
        if on && !self.drop_ready {
            self.drop_head = b.alloc(self.cap * h);
            self.drop_ready = true;
        }
        self.inp.forward(b, ids, slots, n);
        DropSite(0).apply(b, d, &mut self.inp.x, n * e);
        self.lstm.forward(b, &self.inp.x, LstmRun { batch, time, state: None, dropout: d });
        let top = &self.lstm.top().hs;
        let z = if on {
            b.copy_strided(top, &mut self.drop_head, Strided::contiguous(n * h));
            DropSite(nl as u32).apply(b, d, &mut self.drop_head, n * h);
            &self.drop_head
        } else {
            top
        };
        self.out.forward(b, z, n);
    }

    fn features(&self) -> (&B::Buf, usize, bool) {
        let z = if active(self.dropout.as_ref()) { &self.drop_head } else { &self.lstm.top().hs };
        (z, self.h, false)
    }

    fn backward(&mut self, b: &B, ids: &B::Ids, slots: usize, dlogits: &B::Buf, batch: usize, time: usize) {
        self.backward_features(b, ids, slots, dlogits, None, batch, time)
    }

    fn backward_features(&mut self, b: &B, ids: &B::Ids, slots: usize, dlogits: &B::Buf, dfeat: Option<&B::Buf>, batch: usize, time: usize) {
        let n = batch * time;
        assert!(n <= self.cap, "piano-roll lstm: {batch} x {time} frames exceed the arena's {}", self.cap);
        let (e, h, nl) = (self.e, self.h, self.nl);
        let dr = self.dropout;
        let dr = dr.as_ref();
        let on = active(dr);
        let top = self.lstm.top_mut();
        let z = if on { &self.drop_head } else { &top.hs };
        self.out.backward(b, z, dlogits, Some(&mut top.dhs), n);
        if let Some(df) = dfeat {
            b.add(df, &mut top.dhs, n * h);
        }
        DropSite(nl as u32).apply(b, dr, &mut top.dhs, n * h);
        self.lstm.backward(b, &self.inp.x, &mut self.dx, LstmRun { batch, time, state: None, dropout: dr });
        DropSite(0).apply(b, dr, &mut self.dx, n * e);
        self.inp.backward(b, ids, slots, &self.dx, n);
    }
}

// ---- gated dilated causal conv ------------------------------------------------------------------

/// Bag -> gated WaveNet blocks -> 1x1 head, a struct of named layers. Parameters: `inp.weight
/// [88, R]`, `inp.bias`, then per block `blocks.{i}.dil` (`[2R, R, K]`), `blocks.{i}.res`
/// (`[R, R, 1]`, not on the last block), `blocks.{i}.skip` (`[S, R, 1]`), then `post1 [S, S, 1]`,
/// `post2 [88, S, 1]` (weight and bias each, PyTorch Conv1d shapes). Dropout: site `i` on block
/// `i`'s gated output.
pub struct RollConv<B: Backend> {
    cfg: RollConfig,
    r: usize,
    s: usize,
    cap: usize,
    inp: BagInput<B>,
    /// The residual blocks `blocks.{i}` and their skip sum (the gated WaveNet's).
    stack: GatedStack<B>,
    post1: Conv1d<B>,
    post2: Conv1d<B>,
    /// `h_0`: the projected frames transposed `[B, R, T]`.
    h0: B::Buf,
    s1: B::Buf,
    p1: B::Buf,
    logits: B::Buf,
    dout_t: B::Buf,
    dp1: B::Buf,
    dp1_pre: B::Buf,
    ds1: B::Buf,
    dskip: B::Buf,
    dx: B::Buf,
    dropout: Option<Dropout>,
}

impl<B: RollOps> RollConv<B> {
    fn new(b: &B, cfg: RollConfig, cap: usize, rng: &mut Rng) -> Self {
        let RollConfig::WavenetGated { residual: r, skip: s, kernel: k, layers, stacks } = cfg else { unreachable!() };
        let nb = layers * stacks;
        // Made in registration order: the draws from `rng` are the initialisation's. Every
        // output is sized for `cap` frames (batch x time).
        let inp = BagInput::new(b, "inp", KEYS, r, cap, rng);
        let stack = GatedStack::new(b, (r, s, k), nb, |i| 1 << (i % layers), cap, 1, rng);
        let post1 = Conv1d::new(b, "post1", s, s, 1, 1, rng).with_output(b, cap, 1);
        let post2 = Conv1d::new(b, "post2", s, KEYS, 1, 1, rng).with_output(b, cap, 1);
        let buf = |w: usize| b.alloc(cap * w);
        let mut model = RollConv {
            r,
            s,
            cap,
            inp,
            stack,
            post1,
            post2,
            h0: buf(r),
            s1: buf(s),
            p1: buf(s),
            logits: buf(KEYS),
            dout_t: buf(KEYS),
            dp1: buf(s),
            dp1_pre: buf(s),
            ds1: buf(s),
            dskip: buf(s),
            dx: buf(r),
            dropout: None,
            cfg,
        };
        into_arena(b, model.params_mut());
        model
    }
}

impl<B: RollOps> RollModel<B> for RollConv<B> {
    fn config(&self) -> &RollConfig {
        &self.cfg
    }
    fn params(&self) -> Vec<&Param<B>> {
        let mut p = self.inp.params();
        p.extend(self.stack.params());
        p.extend(self.post1.params());
        p.extend(self.post2.params());
        p
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut p = self.inp.params_mut();
        p.extend(self.stack.params_mut());
        p.extend(self.post1.params_mut());
        p.extend(self.post2.params_mut());
        p
    }
    fn capacity(&self) -> usize {
        self.cap
    }
    fn logits(&self) -> &B::Buf {
        &self.logits
    }
    fn set_dropout(&mut self, d: Option<Dropout>) {
        self.dropout = d;
    }

    fn forward(&mut self, b: &B, ids: &B::Ids, slots: usize, batch: usize, time: usize) {
        let n = batch * time;
        assert!(n <= self.cap, "piano-roll conv: {batch} x {time} frames exceed the arena's {}", self.cap);
        let (r, s) = (self.r, self.s);
        let d = self.dropout.as_ref();
        self.inp.forward(b, ids, slots, n);
        b.transpose(&self.inp.x, &mut self.h0, batch, time, r);
        self.stack.forward(b, &self.h0, batch, time, d);
        b.act_fwd(Act::Relu, &self.stack.skip_sum, &mut self.s1, n * s);
        self.post1.forward(b, &self.s1, batch, time);
        b.act_fwd(Act::Relu, &self.post1.y, &mut self.p1, n * s);
        self.post2.forward(b, &self.p1, batch, time);
        b.transpose(&self.post2.y, &mut self.logits, batch, KEYS, time);
    }

    fn features(&self) -> (&B::Buf, usize, bool) {
        (&self.p1, self.s, true)
    }

    fn backward(&mut self, b: &B, ids: &B::Ids, slots: usize, dlogits: &B::Buf, batch: usize, time: usize) {
        self.backward_features(b, ids, slots, dlogits, None, batch, time)
    }

    fn backward_features(&mut self, b: &B, ids: &B::Ids, slots: usize, dlogits: &B::Buf, dfeat: Option<&B::Buf>, batch: usize, time: usize) {
        let n = batch * time;
        assert!(n <= self.cap, "piano-roll conv: {batch} x {time} frames exceed the arena's {}", self.cap);
        let (r, s) = (self.r, self.s);
        let d = self.dropout.as_ref();
        b.transpose(dlogits, &mut self.dout_t, batch, time, KEYS);
        self.post2.backward(b, &self.p1, &self.dout_t, &mut self.dp1, false, batch, time);
        if let Some(df) = dfeat {
            b.add(df, &mut self.dp1, n * s);
        }
        b.act_bwd(Act::Relu, &self.p1, &self.dp1, &mut self.dp1_pre, n * s);
        self.post1.backward(b, &self.s1, &self.dp1_pre, &mut self.ds1, false, batch, time);
        b.act_bwd(Act::Relu, &self.s1, &self.ds1, &mut self.dskip, n * s);
        self.stack.backward(b, &self.h0, &self.dskip, batch, time, d);
        // dh = dL/dh_0 [B, R, T] -> [B, T, R], the input projection's gradient.
        b.transpose(&self.stack.dh, &mut self.dx, batch, r, time);
        self.inp.backward(b, ids, slots, &self.dx, n);
    }
}
