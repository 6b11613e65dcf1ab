//! The NADE output head's op (issue 27): the joint distribution of one frame's `k` keys (88 in
//! piano-roll mode) given per-row biases, as in RNN-NADE (Boulanger-Lewandowski, Bengio and
//! Vincent 2012) over NADE (Larochelle and Murray 2011). The op sits in [`RollOps`](super::roll::RollOps) beside the
//! sigmoid head's `bce_logits`; the CPU twin is `cpu/nade.rs`, the GPU `gpu/ops/nade.rs` with
//! `shaders/nade.wgsl`.
//!
//! ```text
//! row r, keys i = 0..k in ascending order, v = y[r, :] (0/1), hidden units c = 0..h:
//!   a_0        = bh[r, :]                                   [h]
//!   a_{i+1}    = a_i + W[i, :] * v_i                        (the running prefix over the keys below)
//!   h_i        = sigmoid(a_i)
//!   logit_i    = bv[r, i] + V[i, :] . h_i                   -> logits[r, i]
//!   stats[r]   = rw[r] * sum_i bce(logit_i, v_i)            (= -rw log p(v): bce_logits's loss)
//! backward, g_i = (sigmoid(logit_i) - v_i) * rw[r] * grad_scale:
//!   dbv[r, i]  = g_i                                        (written)
//!   dV[i, :]  += g_i h_i                                    (accumulated over rows)
//!   da_i       = g_i V[i, :] * h_i (1 - h_i)
//!   dW[i, :]  += v_i * sum_{j > i} da_j                     (accumulated)
//!   dbh[r, :]  = sum_i da_i                                 (written)
//! ```
//!
//! Layouts: `bh [n, h]`, `bv, y, logits, dbv [n, k]`, `rw, stats [n]` (stats f32 storage,
//! `alloc_f32`), `W, V, dW, dV [k, h]` (row `i` belongs to key `i`). The backward reads the
//! forward's logits and recomputes the hidden pre-activations walking the keys downwards
//! (`a_i = a_{i+1} - W[i, :] v_i` from the full sum), so nothing of size `n k h` is stored.
//! With `V = 0` the op is `bce_logits` of `bv`: the sigmoid head is the NADE head's special case.

/// The sizes of [`RollOps::nade_fwd`](super::roll::RollOps::nade_fwd) / `nade_bwd`: `n` rows (frames) of `k` keys, `h`
/// hidden units (at most [`NADE_MAX_HIDDEN`]), and the factor of the gradients.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Nade {
    pub n: usize,
    pub k: usize,
    pub h: usize,
    pub grad_scale: f32,
}

/// Most hidden units the GPU kernel holds in workgroup memory.
pub const NADE_MAX_HIDDEN: usize = 1024;

/// The inputs of the NADE op (see the module documentation for the layouts). `bv` is read by the
/// forward only.
pub struct NadeIn<'a, T> {
    pub bh: &'a T,
    pub bv: &'a T,
    pub w: &'a T,
    pub v: &'a T,
    pub y: &'a T,
    pub rw: &'a T,
}

/// What the NADE backward writes (`dbh`, `dbv`) and accumulates into (`dw`, `dv`).
pub struct NadeGrads<'a, T> {
    pub dbh: &'a mut T,
    pub dbv: &'a mut T,
    pub dw: &'a mut T,
    pub dv: &'a mut T,
}

/// The lengths of a [`NadeIn`]'s buffers, in field order (for the contract).
pub fn in_lens<T>(x: &NadeIn<'_, T>, len: impl Fn(&T) -> usize) -> [usize; 6] {
    [len(x.bh), len(x.bv), len(x.w), len(x.v), len(x.y), len(x.rw)]
}

/// The lengths of a [`NadeGrads`]'s buffers, in field order.
pub fn grad_lens<T>(g: &NadeGrads<'_, T>, len: impl Fn(&T) -> usize) -> [usize; 4] {
    [len(g.dbh), len(g.dbv), len(g.dw), len(g.dv)]
}
