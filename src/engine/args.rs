//! The argument structs of the ops that take more than a few sizes or scalars, defined once here and
//! passed as they are by the [`Backend`](super::Backend) trait, both backends and the GPU's
//! `record_*` functions. (The older ones, [`MatMul`](super::MatMul), [`Conv1d`](super::Conv1d),
//! [`Attention`](super::Attention), [`Lstm`](super::Lstm) and [`AdamParams`], sit beside the trait.)
//! Each op's sizes are checked against its buffers by one function of [`super::contract`].

use super::AdamParams;

/// A strided copy of a `rows x cols` block (see [`Backend::copy_strided`](super::Backend::copy_strided)):
/// `dst[dst_off + r*dst_stride + c] (+)= src[src_off + r*src_stride + c]`, `+=` when `accumulate`.
///
/// Built as `Strided::block(rows, cols).from(src_off, src_stride).to(dst_off, dst_stride)`, with
/// `.adding()` to accumulate; [`Strided::contiguous`] is a plain copy of `n` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strided {
    pub rows: usize,
    pub cols: usize,
    pub src_off: usize,
    pub src_stride: usize,
    pub dst_off: usize,
    pub dst_stride: usize,
    pub accumulate: bool,
}

impl Strided {
    /// `rows x cols` from offset 0 with stride `cols` to offset 0 with stride `cols` (both
    /// contiguous), overwriting.
    pub fn block(rows: usize, cols: usize) -> Self {
        Strided { rows, cols, src_off: 0, src_stride: cols, dst_off: 0, dst_stride: cols, accumulate: false }
    }

    /// `dst[0..n] = src[0..n]`.
    pub fn contiguous(n: usize) -> Self {
        Self::block(1, n)
    }

    /// Read row `r` at `src[off + r*stride..]`.
    pub fn from(self, off: usize, stride: usize) -> Self {
        Strided { src_off: off, src_stride: stride, ..self }
    }

    /// Write row `r` at `dst[off + r*stride..]`.
    pub fn to(self, off: usize, stride: usize) -> Self {
        Strided { dst_off: off, dst_stride: stride, ..self }
    }

    /// Add into `dst` instead of overwriting it.
    pub fn adding(self) -> Self {
        Strided { accumulate: true, ..self }
    }

    /// Elements `src` must hold: one past the last element read (0 for an empty block).
    pub fn src_end(&self) -> usize {
        end(self.rows, self.cols, self.src_off, self.src_stride)
    }

    /// Elements `dst` must hold: one past the last element written (0 for an empty block).
    pub fn dst_end(&self) -> usize {
        end(self.rows, self.cols, self.dst_off, self.dst_stride)
    }
}

fn end(rows: usize, cols: usize, off: usize, stride: usize) -> usize {
    if rows == 0 || cols == 0 {
        return 0;
    }
    off.saturating_add((rows - 1).saturating_mul(stride)).saturating_add(cols)
}

/// The sizes of [`Backend::softmax_xent`](super::Backend::softmax_xent): `n` rows of `v` logits,
/// and the factor the gradient is multiplied by (`1 / n_total` gives the mean).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Xent {
    pub n: usize,
    pub v: usize,
    pub grad_scale: f32,
}

/// One Adam(W) update of `n` values (see [`Backend::adamw`](super::Backend::adamw)): the
/// hyper-parameters, and the decoupled-decay `factor` the weights are multiplied by first
/// (`1 - lr * decay`; 1 is plain Adam, bit for bit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub n: usize,
    pub hp: AdamParams,
    pub factor: f32,
}

impl AdamStep {
    /// Plain Adam (`factor = 1`).
    pub fn adam(n: usize, hp: AdamParams) -> Self {
        AdamStep { n, hp, factor: 1.0 }
    }

    /// AdamW: the weights multiplied by `factor` before the Adam step.
    pub fn adamw(n: usize, hp: AdamParams, factor: f32) -> Self {
        AdamStep { n, hp, factor }
    }
}

/// The sizes of [`RollOps::bce_logits`](super::roll::RollOps::bce_logits): `n` rows of `k`
/// independent logits, and the factor the gradient is multiplied by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bce {
    pub n: usize,
    pub k: usize,
    pub grad_scale: f32,
}

/// The sizes of the embedding bag ([`RollOps::bag_fwd`](super::roll::RollOps::bag_fwd) and
/// `bag_bwd`): `n` bags of `slots` ids each, rows of width `e`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bag {
    pub n: usize,
    pub slots: usize,
    pub e: usize,
}

/// What one LSTM layer's forward writes (as `&mut`) for its backward to read (as `&`):
/// `hs, cs [batch, time, H]` and the activated gates `[batch, time, 4H]` (see
/// [`Backend::lstm_fwd`](super::Backend::lstm_fwd)).
pub struct LstmSeqs<T> {
    pub hs: T,
    pub cs: T,
    pub gates: T,
}

/// What the LSTM backward reads of its forward ([`Backend::lstm_bwd`](super::Backend::lstm_bwd)):
/// the initial state `h0, c0 [batch, H]` and the sequences the forward wrote.
pub struct LstmSaved<'a, T: ?Sized> {
    pub h0: &'a T,
    pub c0: &'a T,
    pub seqs: LstmSeqs<&'a T>,
}

/// Query, key and value (or their gradients) of causal attention, each `[batch, heads*dim, time]`
/// (see [`Backend::attention_bwd`](super::Backend::attention_bwd)).
pub struct Qkv<T> {
    pub q: T,
    pub k: T,
    pub v: T,
}
