//! A stack of [`Lstm`] layers (`nn.LSTM` with `num_layers` > 1 and inter-layer dropout), written
//! once for the token models ([`crate::model::lstm`]) and the piano-roll LSTM
//! ([`crate::model::roll`]):
//!
//! ```text
//! h_0 = x                                             [B, T, in]   (the model drops it: site 0)
//! for layer l:  input_l = h_l, dropped at site l (l >= 1: a copy, so layer l-1 keeps its hs)
//!               h_{l+1} = lstm.*_l{l}(input_l) from (h0[l], c0[l])   [B, T, H]
//! ```
//!
//! The backward runs the layers in reverse from the top layer's `dhs` (the model writes it), each
//! writing the gradient of its input into the `dhs` of the layer below (dropout's backward applied
//! to it, the same mask) and the bottom one into the stack's input gradient. Step mode: a forward
//! from a carried [`LstmState`] then [`LstmStack::save_state`], which keeps the last step's (h, c).

use super::{DropSite, Layer, Lstm, LstmScratch};
use crate::engine::dropout::active;
use crate::engine::{Backend, Dropout, Param, Strided};
use crate::rng::Rng;

/// The carried recurrent state of every layer: `h[l], c[l] [batch, H]`.
pub struct LstmState<B: Backend> {
    pub batch: usize,
    pub hidden: usize,
    pub h: Vec<B::Buf>,
    pub c: Vec<B::Buf>,
}

impl<B: Backend> LstmState<B> {
    /// The zero state of `layers` layers of `hidden` over `batch` streams (what the training
    /// windows start from).
    pub fn zeros(b: &B, layers: usize, hidden: usize, batch: usize) -> Self {
        let n = batch * hidden;
        LstmState { batch, hidden, h: (0..layers).map(|_| b.alloc(n)).collect(), c: (0..layers).map(|_| b.alloc(n)).collect() }
    }

    /// Back to the zero state.
    pub fn reset(&mut self, b: &B) {
        let n = self.batch * self.hidden;
        for buf in self.h.iter_mut().chain(self.c.iter_mut()) {
            b.fill(buf, n, 0.0);
        }
    }
}

/// What one forward runs over, and its backward needs again: `batch` sequences of `time` steps
/// from `state` (`None`: the zero state), inter-layer dropout `dropout` (`None`: off).
pub struct LstmRun<'a, B: Backend> {
    pub batch: usize,
    pub time: usize,
    pub state: Option<&'a LstmState<B>>,
    pub dropout: Option<&'a Dropout>,
}

impl<B: Backend> Clone for LstmRun<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for LstmRun<'_, B> {}

/// `lstm.*_l{l}` for every layer `l`, the inter-layer dropout buffers and the layers' shared
/// backward scratch, with activations for `rows` = batch x time positions.
pub struct LstmStack<B: Backend> {
    /// Layer `l` reads layer `l - 1`'s `hs` (or its dropped copy); layer 0 the stack's input.
    pub layers: Vec<Lstm<B>>,
    hidden: usize,
    rows: usize,
    /// The zero state h0 = c0 [batch, H] (never written; grown to the largest batch seen).
    zeros: B::Buf,
    zeros_len: usize,
    scratch: LstmScratch<B>,
    /// The dropped inputs of layers 1.. [rows, H] each: allocated on the first forward with
    /// dropout.
    drop_hs: Vec<B::Buf>,
    drop_ready: bool,
}

impl<B: Backend> LstmStack<B> {
    /// `layers` layers of `hidden` over inputs of width `input` (PyTorch's initialisation drawn
    /// from `rng` layer by layer, parameters named `{prefix}.weight_ih_l{l}` ...), activations for
    /// `rows` positions, a zero state for `batch` streams (grown if a larger batch comes).
    pub fn new(
        b: &B,
        prefix: &str,
        (input, hidden, layers): (usize, usize, usize),
        rows: usize,
        batch: usize,
        rng: &mut Rng,
    ) -> Self {
        assert!(layers > 0, "lstm stack: no layer");
        let layers =
            (0..layers).map(|l| Lstm::new(b, prefix, l, if l == 0 { input } else { hidden }, hidden, rows, rng)).collect();
        LstmStack {
            layers,
            hidden,
            rows,
            zeros: b.alloc(batch * hidden),
            zeros_len: batch * hidden,
            scratch: LstmScratch::new(b, rows, hidden),
            drop_hs: Vec::new(),
            drop_ready: false,
        }
    }

    /// The top layer (its `hs` is the stack's output, its `dhs` where the backward starts).
    pub fn top(&self) -> &Lstm<B> {
        self.layers.last().expect("an LSTM stack has a layer")
    }

    pub fn top_mut(&mut self) -> &mut Lstm<B> {
        self.layers.last_mut().expect("an LSTM stack has a layer")
    }

    /// A zero [`LstmState`] of this stack over `batch` streams.
    pub fn zero_state(&self, b: &B, batch: usize) -> LstmState<B> {
        LstmState::zeros(b, self.layers.len(), self.hidden, batch)
    }

    fn ensure_zeros(&mut self, b: &B, batch: usize) {
        if batch * self.hidden > self.zeros_len {
            self.zeros_len = batch * self.hidden;
            self.zeros = b.alloc(self.zeros_len);
        }
    }

    /// Over `x [batch, time, in]` from the run's state: every layer in turn, the input of layer
    /// `l >= 1` dropped at site `l`. Leaves each layer's `hs`, `cs` and gates for the backward;
    /// the output is [`LstmStack::top`]'s `hs`.
    pub fn forward(&mut self, b: &B, x: &B::Buf, run: LstmRun<B>) {
        let LstmRun { batch, time, state, dropout: d } = run;
        let (n, h) = (batch * time, self.hidden);
        assert!(n <= self.rows, "lstm stack: {batch} x {time} positions exceed the arena's {}", self.rows);
        self.ensure_zeros(b, batch);
        let on = active(d);
        if on && !self.drop_ready {
            self.drop_hs = (1..self.layers.len()).map(|_| b.alloc(self.rows * h)).collect();
            self.drop_ready = true;
        }
        for l in 0..self.layers.len() {
            let (below, rest) = self.layers.split_at_mut(l);
            let input = match below.last() {
                Some(prev) if on => {
                    b.copy_strided(&prev.hs, &mut self.drop_hs[l - 1], Strided::contiguous(n * h));
                    DropSite(l as u32).apply(b, d, &mut self.drop_hs[l - 1], n * h);
                    &self.drop_hs[l - 1]
                }
                Some(prev) => &prev.hs,
                None => x,
            };
            let (h0, c0) = state.map_or((&self.zeros, &self.zeros), |s| (&s.h[l], &s.c[l]));
            rest[0].forward(b, input, h0, c0, batch, time);
        }
    }

    /// Backward of the last forward (the same `x` and `run`) from the top layer's `dhs`: the
    /// layers top down, each accumulating its parameters' gradients and writing its input's
    /// gradient (dropout's backward applied at sites `layers - 1 ..= 1`), the bottom one into
    /// `dx [batch, time, in]` (not dropped: the stack's input site is the model's).
    pub fn backward(&mut self, b: &B, x: &B::Buf, dx: &mut B::Buf, run: LstmRun<B>) {
        let LstmRun { batch, time, state, dropout: d } = run;
        let (n, h) = (batch * time, self.hidden);
        assert!(n <= self.rows, "lstm stack: {batch} x {time} positions exceed the arena's {}", self.rows);
        self.ensure_zeros(b, batch);
        let on = active(d);
        for l in (0..self.layers.len()).rev() {
            let (below, rest) = self.layers.split_at_mut(l);
            let (h0, c0) = state.map_or((&self.zeros, &self.zeros), |s| (&s.h[l], &s.c[l]));
            match below.last_mut() {
                Some(prev) => {
                    let input = if on { &self.drop_hs[l - 1] } else { &prev.hs };
                    rest[0].backward(b, input, &mut prev.dhs, h0, c0, &mut self.scratch, batch, time);
                    // The input of layer l was dropped at site l.
                    DropSite(l as u32).apply(b, d, &mut prev.dhs, n * h);
                }
                None => rest[0].backward(b, x, dx, h0, c0, &mut self.scratch, batch, time),
            }
        }
    }

    /// Step mode: after a forward over `time` steps from `state`, writes every layer's last
    /// (h, c) into `state` (the `state.batch` streams), ready for the next forward.
    pub fn save_state(&self, b: &B, state: &mut LstmState<B>, time: usize) {
        let h = self.hidden;
        assert_eq!(state.h.len(), self.layers.len(), "lstm stack: the state has the wrong number of layers");
        // Row s of the last step sits at s*T*H + (T-1)*H.
        let last = Strided::block(state.batch, h).from((time - 1) * h, time * h);
        for (l, layer) in self.layers.iter().enumerate() {
            b.copy_strided(&layer.hs, &mut state.h[l], last);
            b.copy_strided(&layer.cs, &mut state.c[l], last);
        }
    }
}

impl<B: Backend> Layer<B> for LstmStack<B> {
    /// `{prefix}.weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, ..._l1, ...` (PyTorch's).
    fn params(&self) -> Vec<&Param<B>> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }

    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        self.layers.iter_mut().flat_map(|l| l.params_mut()).collect()
    }
}
