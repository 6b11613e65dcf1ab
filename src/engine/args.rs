//! Every op's argument struct, in one place: the sizes and scalars of the ops that take more than
//! a few, defined once here and passed as they are by the [`Backend`](super::Backend) trait, both
//! backends and the GPU's `record_*` functions. Each op's sizes are checked against its buffers
//! by one function of [`super::contract`].

/// An element-wise activation whose derivative can be written from its output `y` alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// `max(x, 0)`; `dx = dy * (y > 0)`
    Relu,
    /// `tanh(x)`; `dx = dy * (1 - y^2)`
    Tanh,
    /// `1 / (1 + e^-x)`; `dx = dy * y * (1 - y)`
    Sigmoid,
}

/// Matrix product `C[m, n] = op(A) op(B) (+ C when `accumulate`)`, `op(A)` being `[m, k]`.
/// `A` is stored `[m, k]`, or `[k, m]` when `trans_a`; `B` is stored `[k, n]`, or `[n, k]` when `trans_b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatMul {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub accumulate: bool,
}

/// A causal dilated 1-D convolution, PyTorch `Conv1d` layout with `(k-1)*dilation` zeros on the left:
/// `y[b,o,t] = bias[o] + sum_{c,j} w[o,c,j] * x[b,c,t-(k-1-j)*dilation]`, `x` at negative time = 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1d {
    pub batch: usize,
    pub cin: usize,
    pub cout: usize,
    pub time: usize,
    pub k: usize,
    pub dilation: usize,
}

/// Causal multi-head scaled dot-product attention over conv-layout activations (issue 13).
/// `q, k, v, out` are `[batch, heads*dim, time]` (channel `h*dim + d`, time `t`); `p` is
/// `[batch, heads, time, time]`. With `scale = 1/sqrt(dim)`:
///
/// ```text
/// s[b,h,t,j]     = scale * sum_d q[b,h*dim+d,t] * k[b,h*dim+d,j-shift]   for shift <= j <= t
/// p[b,h,t,:]     = softmax_j s[b,h,t,:]                                   (0 outside shift..=t)
/// out[b,h*dim+d,t] = sum_j p[b,h,t,j] * v[b,h*dim+d,j]
/// ```
///
/// A row with no allowed `j` (`t < shift`) gives `p = 0` and `out = 0`. With `shift = 1` the key
/// at `j` is the state *before* token `j` while the value at `j` carries token `j` itself, so a
/// query that matches a key copies "what came next last time" (an induction head in one layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attention {
    pub batch: usize,
    pub heads: usize,
    pub dim: usize,
    pub time: usize,
    pub shift: usize,
}

impl Attention {
    /// Elements of one of `q, k, v, out`: `batch * heads * dim * time`.
    pub fn qkv_len(&self) -> usize {
        self.batch * self.heads * self.dim * self.time
    }

    /// Elements of the saved probabilities `p`: `batch * heads * time * time`.
    pub fn p_len(&self) -> usize {
        self.batch * self.heads * self.time * self.time
    }

    /// The score scale `1 / sqrt(dim)` (as f32, the same on every backend).
    pub fn scale(&self) -> f32 {
        1.0 / (self.dim.max(1) as f32).sqrt()
    }
}

/// LayerNorm over the last axis of `x [rows, width]` (PyTorch `nn.LayerNorm(width, eps)`):
///
/// ```text
/// mean = sum_c x[r,c] / width;   rstd = 1 / sqrt(sum_c (x[r,c] - mean)^2 / width + eps)
/// y[r,c] = (x[r,c] - mean) * rstd * weight[c] + bias[c]
/// ```
///
/// The forward saves `stats [rows, 2]` = `(mean, rstd)` per row for the backward.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerNorm {
    pub rows: usize,
    pub width: usize,
    pub eps: f32,
}

/// Causal multi-head attention with a learned relative-position term (Music Transformer, Huang et
/// al. 2018; `../shared/peers/torch_transformer.py`), over token-major rows. `qkv [batch, time,
/// 3*heads*dim]` holds q in columns `0..hd`, k in `hd..2hd`, v in `2hd..3hd` (`hd = heads*dim`;
/// head `h` is columns `h*dim..(h+1)*dim` of each part); `rel [heads, window, dim]` embeds the
/// distance `r = i - j` (`time <= window`); `out [batch, time, hd]`; `p [batch, heads, time,
/// time]`. With `scale = 1/sqrt(dim)`, for key `j <= i`:
///
/// ```text
/// s[b,h,i,j]  = scale * (q_i . k_j + q_i . rel[h, i-j])
/// p[b,h,i,:]  = softmax_j s[b,h,i,:]            (0 for j > i)
/// out[b,i,h*dim+d] = sum_j p[b,h,i,j] v_j[d]
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelAttention {
    pub batch: usize,
    pub heads: usize,
    pub dim: usize,
    pub time: usize,
    pub window: usize,
}

impl RelAttention {
    /// `heads * dim`: the model width the attention reads and writes.
    pub fn width(&self) -> usize {
        self.heads * self.dim
    }
    /// Elements of `qkv` (and of its gradient): `batch * time * 3 * heads * dim`.
    pub fn qkv_len(&self) -> usize {
        self.batch * self.time * 3 * self.width()
    }
    /// Elements of `out` (and `dout`): `batch * time * heads * dim`.
    pub fn out_len(&self) -> usize {
        self.batch * self.time * self.width()
    }
    /// Elements of the saved probabilities `p`: `batch * heads * time * time`.
    pub fn p_len(&self) -> usize {
        self.batch * self.heads * self.time * self.time
    }
    /// Elements of `rel`: `heads * window * dim`.
    pub fn rel_len(&self) -> usize {
        self.heads * self.window * self.dim
    }
    /// The score scale `1 / sqrt(dim)` (as f32, the same on every backend).
    pub fn scale(&self) -> f32 {
        1.0 / (self.dim.max(1) as f32).sqrt()
    }
}

/// One step of [`RelAttention`] with a key/value cache (generation): the newest position's query
/// against the cached keys and values of the last `min(len, window)` positions.
///
/// `qkv [batch, 3*heads*dim]` is the newest position's row (only its q columns are read);
/// `kcache, vcache [batch, window, heads*dim]` are ring buffers: position `pos` (0-based, counted
/// from the start of the piece) lives in slot `pos % window`, and the caller has already written
/// the newest position `len - 1` there. The query attends to positions `len - min(len, window) ..
/// len` at distances `r = len - 1 - pos` (so `0..window`, each with its own `rel[h, r]`):
///
/// ```text
/// s[b,h,pos] = scale * (q . kcache[b, pos % window] + q . rel[h, len-1-pos])
/// out[b, h*dim+d] = sum_pos softmax(s)[pos] * vcache[b, pos % window, h*dim+d]
/// ```
///
/// For `len <= window` this is exactly row `len - 1` of [`RelAttention`] over the whole prefix;
/// past the window the cache keeps the last `window` positions (their keys and values were made
/// from contexts that reach further back, as in Transformer-XL), so a token costs O(window) per
/// block however long the piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelDecode {
    pub batch: usize,
    pub heads: usize,
    pub dim: usize,
    pub window: usize,
    /// Positions seen so far, the newest included (at least 1).
    pub len: usize,
}

impl RelDecode {
    pub fn width(&self) -> usize {
        self.heads * self.dim
    }
    /// Elements of the cache `kcache` (or `vcache`): `batch * window * heads * dim`.
    pub fn cache_len(&self) -> usize {
        self.batch * self.window * self.width()
    }
    /// The score scale `1 / sqrt(dim)`.
    pub fn scale(&self) -> f32 {
        1.0 / (self.dim.max(1) as f32).sqrt()
    }
}

/// One LSTM layer over a whole sequence, PyTorch semantics (gates i, f, g, o).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lstm {
    pub batch: usize,
    pub time: usize,
    pub hidden: usize,
}

/// Adam hyper-parameters, PyTorch `torch.optim.Adam` semantics (L2 weight decay added to the
/// gradient, bias correction with the 1-based `step`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub step: u32,
}

impl Default for AdamParams {
    fn default() -> Self {
        AdamParams { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, step: 1 }
    }
}

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
