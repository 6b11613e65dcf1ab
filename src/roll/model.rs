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
//! The LSTM layers are the backend's [`Backend::lstm_fwd`] / [`Backend::lstm_bwd`] recurrence of
//! `lstm-seq`, the conv blocks the gated WaveNet's ops ([`Backend::conv1d_fwd`],
//! [`Backend::gated_fwd`]); dropout is the engine's ([`drop_site`], sites numbered below).
//!
//! A batch holds `batch` items of `time` frames (`batch * time <= capacity`, the arena's size in
//! frames, allocated once); shorter items are padded at the end, which a causal model never sees
//! from earlier frames, and the loss masks the padded rows.

use crate::engine::dropout::{active, drop_site};
use crate::engine::roll::RollOps;
use crate::engine::optim::into_arena;
use crate::engine::{Act, Backend, Conv1d, Dropout, Lstm, MatMul, Param};
use crate::engine::{Bag, LstmSaved, LstmSeqs, Strided};
use crate::model::init;
use crate::model::lstm::{layer_forward, push_lstm_params, LayerArena};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

use super::data::KEYS;

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
    fn params(&self) -> &[Param<B>];
    fn params_mut(&mut self) -> &mut [Param<B>];
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

fn mm(m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool, accumulate: bool) -> MatMul {
    MatMul { m, k, n, trans_a, trans_b, accumulate }
}

fn linear<B: Backend>(b: &B, rng: &mut Rng, params: &mut Vec<Param<B>>, name: &str, fan_out: usize, fan_in: usize, shape: &[usize]) {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let n = shape.iter().product();
    params.push(Param::new(b, &format!("{name}.weight"), shape, &init::uniform(rng, n, bound)));
    params.push(Param::new(b, &format!("{name}.bias"), &[fan_out], &init::uniform(rng, fan_out, bound)));
}

/// The input projection: `x [n, E] = bag(ids, inp.weight) + inp.bias` (params 0 and 1).
fn input_forward<B: RollOps>(b: &B, params: &[Param<B>], ids: &B::Ids, slots: usize, n: usize, e: usize, x: &mut B::Buf) {
    b.bag_fwd(ids, &params[0].value.buf, x, Bag { n, slots, e });
    b.bias_add(x, &params[1].value.buf, n, e, 1);
}

/// Its backward from `dx [n, E]`.
fn input_backward<B: RollOps>(b: &B, params: &mut [Param<B>], ids: &B::Ids, slots: usize, n: usize, e: usize, dx: &B::Buf) {
    b.bias_grad(dx, &mut params[1].grad.buf, n, e, 1);
    b.bag_bwd(ids, dx, &mut params[0].grad.buf, Bag { n, slots, e }, KEYS);
}

// ---- LSTM ---------------------------------------------------------------------------------------

/// Bag -> LSTM stack -> Linear. Parameters: `inp.weight [88, E]`, `inp.bias`, then per layer
/// `lstm.weight_ih_l{l}`, `lstm.weight_hh_l{l}`, `lstm.bias_ih_l{l}`, `lstm.bias_hh_l{l}` (PyTorch's
/// names and shapes), then `out.weight [88, H]`, `out.bias`. Dropout sites: 0 the projected input,
/// `l` the input of layer `l >= 1`, `layers` the head's input.
pub struct RollLstm<B: Backend> {
    cfg: RollConfig,
    e: usize,
    h: usize,
    nl: usize,
    params: Vec<Param<B>>,
    cap: usize,
    x: B::Buf,
    layers: Vec<LayerArena<B>>,
    zeros: B::Buf,
    zeros_len: usize,
    logits: B::Buf,
    dxw: B::Buf,
    dbias: B::Buf,
    dx: B::Buf,
    dropout: Option<Dropout>,
    drop_hs: Vec<B::Buf>,
    drop_head: B::Buf,
    drop_ready: bool,
}

fn w_ih(l: usize) -> usize {
    2 + 4 * l
}

impl<B: Backend> RollLstm<B> {
    fn new(b: &B, cfg: RollConfig, cap: usize, rng: &mut Rng) -> Self {
        let RollConfig::Lstm { embed: e, hidden: h, layers: nl } = cfg else { unreachable!() };
        let mut params = Vec::new();
        linear(b, rng, &mut params, "inp", e, KEYS, &[KEYS, e]);
        push_lstm_params(b, rng, &mut params, e, h, nl);
        linear(b, rng, &mut params, "out", KEYS, h, &[KEYS, h]);
        let layers = (0..nl).map(|_| LayerArena::new(b, cap, h)).collect();
        RollLstm {
            cfg,
            e,
            h,
            nl,
            params: into_arena(b, params),
            cap,
            x: b.alloc(cap * e),
            layers,
            zeros: b.alloc(h),
            zeros_len: h,
            logits: b.alloc(cap * KEYS),
            dxw: b.alloc(cap * 4 * h),
            dbias: b.alloc(4 * h),
            dx: b.alloc(cap * e),
            dropout: None,
            drop_hs: Vec::new(),
            drop_head: b.alloc(0),
            drop_ready: false,
        }
    }

    fn ensure_zeros(&mut self, b: &B, batch: usize) {
        if batch * self.h > self.zeros_len {
            self.zeros_len = batch * self.h;
            self.zeros = b.alloc(self.zeros_len);
        }
    }
}

impl<B: RollOps> RollModel<B> for RollLstm<B> {
    fn config(&self) -> &RollConfig {
        &self.cfg
    }
    fn params(&self) -> &[Param<B>] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [Param<B>] {
        &mut self.params
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
        assert!(n <= self.cap, "piano-roll lstm: {batch} x {time} frames exceed the arena's {}", self.cap);
        let (e, h, nl) = (self.e, self.h, self.nl);
        self.ensure_zeros(b, batch);
        let d = self.dropout;
        let on = active(d.as_ref());
        if on && !self.drop_ready {
            self.drop_hs = (1..nl).map(|_| b.alloc(self.cap * h)).collect();
            self.drop_head = b.alloc(self.cap * h);
            self.drop_ready = true;
        }
        input_forward(b, &self.params, ids, slots, n, e, &mut self.x);
        drop_site(b, d.as_ref(), 0, &mut self.x, n * e);
        for l in 0..nl {
            let (below, rest) = self.layers.split_at_mut(l);
            let (input, in_dim) = match below.last() {
                Some(prev) if on => {
                    b.copy_strided(&prev.hs, &mut self.drop_hs[l - 1], Strided::contiguous(n * h));
                    drop_site(b, d.as_ref(), l as u32, &mut self.drop_hs[l - 1], n * h);
                    (&self.drop_hs[l - 1], h)
                }
                Some(prev) => (&prev.hs, h),
                None => (&self.x, e),
            };
            let p = &self.params[w_ih(l)..w_ih(l) + 4];
            layer_forward(b, p, input, in_dim, &self.zeros, &self.zeros, &mut rest[0], batch, time, h);
        }
        let top = &self.layers[nl - 1].hs;
        let z = if on {
            b.copy_strided(top, &mut self.drop_head, Strided::contiguous(n * h));
            drop_site(b, d.as_ref(), nl as u32, &mut self.drop_head, n * h);
            &self.drop_head
        } else {
            top
        };
        let out = w_ih(nl);
        b.matmul(z, &self.params[out].value.buf, &mut self.logits, mm(n, h, KEYS, false, true, false));
        b.bias_add(&mut self.logits, &self.params[out + 1].value.buf, n, KEYS, 1);
    }

    fn backward(&mut self, b: &B, ids: &B::Ids, slots: usize, dlogits: &B::Buf, batch: usize, time: usize) {
        let n = batch * time;
        assert!(n <= self.cap, "piano-roll lstm: {batch} x {time} frames exceed the arena's {}", self.cap);
        let (e, h, nl) = (self.e, self.h, self.nl);
        let dr = self.dropout;
        let on = active(dr.as_ref());
        let out = w_ih(nl);
        let p = &mut self.params;
        let top = &mut self.layers[nl - 1];
        let z = if on { &self.drop_head } else { &top.hs };
        b.matmul(dlogits, z, &mut p[out].grad.buf, mm(KEYS, n, h, true, false, true));
        b.bias_grad(dlogits, &mut p[out + 1].grad.buf, n, KEYS, 1);
        b.matmul(dlogits, &p[out].value.buf, &mut top.dhs, mm(n, KEYS, h, false, false, false));
        drop_site(b, dr.as_ref(), nl as u32, &mut top.dhs, n * h);
        let dims = Lstm { batch, time, hidden: h };
        for l in (0..nl).rev() {
            let (below, rest) = self.layers.split_at_mut(l);
            let layer = &rest[0];
            let pw = &mut p[w_ih(l) + 1];
            let seqs = LstmSeqs { hs: &layer.hs, cs: &layer.cs, gates: &layer.gates };
            let saved = LstmSaved { h0: &self.zeros, c0: &self.zeros, seqs };
            b.lstm_bwd(&pw.value.buf, saved, &layer.dhs, &mut self.dxw, &mut pw.grad.buf, dims);
            b.fill(&mut self.dbias, 4 * h, 0.0);
            b.bias_grad(&self.dxw, &mut self.dbias, n, 4 * h, 1);
            b.add(&self.dbias, &mut p[w_ih(l) + 2].grad.buf, 4 * h);
            b.add(&self.dbias, &mut p[w_ih(l) + 3].grad.buf, 4 * h);
            let (input, dinput, in_dim) = match below.last_mut() {
                Some(prev) if on => (&self.drop_hs[l - 1], &mut prev.dhs, h),
                Some(prev) => (&prev.hs, &mut prev.dhs, h),
                None => (&self.x, &mut self.dx, e),
            };
            b.matmul(&self.dxw, input, &mut p[w_ih(l)].grad.buf, mm(4 * h, n, in_dim, true, false, true));
            b.matmul(&self.dxw, &p[w_ih(l)].value.buf, dinput, mm(n, 4 * h, in_dim, false, false, false));
            drop_site(b, dr.as_ref(), l as u32, dinput, n * in_dim);
        }
        input_backward(b, p, ids, slots, n, e, &self.dx);
    }
}

// ---- gated dilated causal conv ------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Block {
    dil: usize,
    skip: usize,
    res: Option<usize>,
}

/// Bag -> gated WaveNet blocks -> 1x1 head. Parameters: `inp.weight [88, R]`, `inp.bias`, then per
/// block `blocks.{i}.dil` (`[2R, R, K]`), `blocks.{i}.res` (`[R, R, 1]`, not on the last block),
/// `blocks.{i}.skip` (`[S, R, 1]`), then `post1 [S, S, 1]`, `post2 [88, S, 1]` (weight and bias
/// each, PyTorch Conv1d shapes). Dropout: site `i` on block `i`'s gated output.
pub struct RollConv<B: Backend> {
    cfg: RollConfig,
    r: usize,
    s: usize,
    k: usize,
    layers: usize,
    params: Vec<Param<B>>,
    blocks: Vec<Block>,
    post1: usize,
    post2: usize,
    cap: usize,
    x: B::Buf,
    hs: Vec<B::Buf>,
    as_: Vec<B::Buf>,
    zs: Vec<B::Buf>,
    skip_sum: B::Buf,
    skip_tmp: B::Buf,
    s1: B::Buf,
    p1_pre: B::Buf,
    p1: B::Buf,
    out_t: B::Buf,
    logits: B::Buf,
    dout_t: B::Buf,
    dp1: B::Buf,
    dp1_pre: B::Buf,
    ds1: B::Buf,
    dskip: B::Buf,
    dz: B::Buf,
    da: B::Buf,
    dh: B::Buf,
    dx: B::Buf,
    dropout: Option<Dropout>,
}

impl<B: Backend> RollConv<B> {
    fn new(b: &B, cfg: RollConfig, cap: usize, rng: &mut Rng) -> Self {
        let RollConfig::WavenetGated { residual: r, skip: s, kernel: k, layers, stacks } = cfg else { unreachable!() };
        let nb = layers * stacks;
        let mut params = Vec::new();
        linear(b, rng, &mut params, "inp", r, KEYS, &[KEYS, r]);
        let mut blocks = Vec::new();
        for i in 0..nb {
            let dil = params.len();
            linear(b, rng, &mut params, &format!("blocks.{i}.dil"), 2 * r, r * k, &[2 * r, r, k]);
            let res = (i + 1 < nb).then(|| {
                let at = params.len();
                linear(b, rng, &mut params, &format!("blocks.{i}.res"), r, r, &[r, r, 1]);
                at
            });
            let skip = params.len();
            linear(b, rng, &mut params, &format!("blocks.{i}.skip"), s, r, &[s, r, 1]);
            blocks.push(Block { dil, skip, res });
        }
        let post1 = params.len();
        linear(b, rng, &mut params, "post1", s, s, &[s, s, 1]);
        let post2 = params.len();
        linear(b, rng, &mut params, "post2", KEYS, s, &[KEYS, s, 1]);
        let buf = |w: usize| b.alloc(cap * w);
        RollConv {
            r,
            s,
            k,
            layers,
            blocks,
            post1,
            post2,
            cap,
            x: buf(r),
            hs: (0..nb).map(|_| buf(r)).collect(),
            as_: (0..nb).map(|_| buf(2 * r)).collect(),
            zs: (0..nb).map(|_| buf(r)).collect(),
            skip_sum: buf(s),
            skip_tmp: buf(s),
            s1: buf(s),
            p1_pre: buf(s),
            p1: buf(s),
            out_t: buf(KEYS),
            logits: buf(KEYS),
            dout_t: buf(KEYS),
            dp1: buf(s),
            dp1_pre: buf(s),
            ds1: buf(s),
            dskip: buf(s),
            dz: buf(r),
            da: buf(2 * r),
            dh: buf(r),
            dx: buf(r),
            dropout: None,
            params: into_arena(b, params),
            cfg,
        }
    }

    fn pw(&self, batch: usize, time: usize, cin: usize, cout: usize) -> Conv1d {
        Conv1d { batch, cin, cout, time, k: 1, dilation: 1 }
    }

    fn dilated(&self, i: usize, batch: usize, time: usize) -> Conv1d {
        Conv1d { batch, cin: self.r, cout: 2 * self.r, time, k: self.k, dilation: 1 << (i % self.layers) }
    }
}

fn conv_grads<B: Backend>(b: &B, params: &mut [Param<B>], idx: usize, x: &B::Buf, dy: &B::Buf, c: Conv1d) {
    let (lo, hi) = params.split_at_mut(idx + 1);
    b.conv1d_bwd_weight(x, dy, &mut lo[idx].grad.buf, &mut hi[0].grad.buf, c);
}

impl<B: RollOps> RollModel<B> for RollConv<B> {
    fn config(&self) -> &RollConfig {
        &self.cfg
    }
    fn params(&self) -> &[Param<B>] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [Param<B>] {
        &mut self.params
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
        let (cr, cs) = (self.pw(batch, time, r, r), self.pw(batch, time, r, s));
        let (c1, c2) = (self.pw(batch, time, s, s), self.pw(batch, time, s, KEYS));
        input_forward(b, &self.params, ids, slots, n, r, &mut self.x);
        b.transpose(&self.x, &mut self.hs[0], batch, time, r);
        let p = &self.params;
        let (w, bias) = (|i: usize| &p[i].value.buf, |i: usize| &p[i + 1].value.buf);
        for i in 0..self.blocks.len() {
            let blk = self.blocks[i];
            let cd = self.dilated(i, batch, time);
            b.conv1d_fwd(&self.hs[i], w(blk.dil), bias(blk.dil), &mut self.as_[i], cd);
            b.gated_fwd(&self.as_[i], &mut self.zs[i], batch, r, time);
            drop_site(b, self.dropout.as_ref(), i as u32, &mut self.zs[i], n * r);
            if i == 0 {
                b.conv1d_fwd(&self.zs[i], w(blk.skip), bias(blk.skip), &mut self.skip_sum, cs);
            } else {
                b.conv1d_fwd(&self.zs[i], w(blk.skip), bias(blk.skip), &mut self.skip_tmp, cs);
                b.add(&self.skip_tmp, &mut self.skip_sum, n * s);
            }
            if let Some(res) = blk.res {
                let (lo, hi) = self.hs.split_at_mut(i + 1);
                b.conv1d_fwd(&self.zs[i], w(res), bias(res), &mut hi[0], cr);
                b.add(&lo[i], &mut hi[0], n * r);
            }
        }
        b.act_fwd(Act::Relu, &self.skip_sum, &mut self.s1, n * s);
        b.conv1d_fwd(&self.s1, w(self.post1), bias(self.post1), &mut self.p1_pre, c1);
        b.act_fwd(Act::Relu, &self.p1_pre, &mut self.p1, n * s);
        b.conv1d_fwd(&self.p1, w(self.post2), bias(self.post2), &mut self.out_t, c2);
        b.transpose(&self.out_t, &mut self.logits, batch, KEYS, time);
    }

    fn backward(&mut self, b: &B, ids: &B::Ids, slots: usize, dlogits: &B::Buf, batch: usize, time: usize) {
        let n = batch * time;
        assert!(n <= self.cap, "piano-roll conv: {batch} x {time} frames exceed the arena's {}", self.cap);
        let (r, s) = (self.r, self.s);
        let (post1, post2) = (self.post1, self.post2);
        b.transpose(dlogits, &mut self.dout_t, batch, time, KEYS);
        let c2 = self.pw(batch, time, s, KEYS);
        conv_grads(b, &mut self.params, post2, &self.p1, &self.dout_t, c2);
        b.conv1d_bwd_input(&self.dout_t, &self.params[post2].value.buf, &mut self.dp1, c2, false);
        b.act_bwd(Act::Relu, &self.p1, &self.dp1, &mut self.dp1_pre, n * s);
        let c1 = self.pw(batch, time, s, s);
        conv_grads(b, &mut self.params, post1, &self.s1, &self.dp1_pre, c1);
        b.conv1d_bwd_input(&self.dp1_pre, &self.params[post1].value.buf, &mut self.ds1, c1, false);
        b.act_bwd(Act::Relu, &self.s1, &self.ds1, &mut self.dskip, n * s);
        let (cs, cr) = (self.pw(batch, time, r, s), self.pw(batch, time, r, r));
        for i in (0..self.blocks.len()).rev() {
            let blk = self.blocks[i];
            if let Some(res) = blk.res {
                conv_grads(b, &mut self.params, res, &self.zs[i], &self.dh, cr);
                b.conv1d_bwd_input(&self.dh, &self.params[res].value.buf, &mut self.dz, cr, false);
            }
            conv_grads(b, &mut self.params, blk.skip, &self.zs[i], &self.dskip, cs);
            b.conv1d_bwd_input(&self.dskip, &self.params[blk.skip].value.buf, &mut self.dz, cs, blk.res.is_some());
            drop_site(b, self.dropout.as_ref(), i as u32, &mut self.dz, n * r);
            b.gated_bwd(&self.as_[i], &self.dz, &mut self.da, batch, r, time);
            let cd = self.dilated(i, batch, time);
            conv_grads(b, &mut self.params, blk.dil, &self.hs[i], &self.da, cd);
            b.conv1d_bwd_input(&self.da, &self.params[blk.dil].value.buf, &mut self.dh, cd, blk.res.is_some());
        }
        // dh = dL/dh_0 [B, R, T] -> [B, T, R], the input projection's gradient.
        b.transpose(&self.dh, &mut self.dx, batch, r, time);
        input_backward(b, &mut self.params, ids, slots, n, r, &self.dx);
    }
}
