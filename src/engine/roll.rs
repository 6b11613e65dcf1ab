//! The two operations of piano-roll mode (issue 14), beside [`Backend`] rather than in it so that
//! the token models' trait is unchanged: the fused binary cross-entropy with logits of 88
//! independent sigmoids, and the embedding bag (the gather-sum of the active keys' columns that
//! is the dense input projection of a multi-hot frame). Both backends implement it
//! (`cpu/roll.rs`, `gpu/roll.rs` with `shaders/bce.wgsl` and `shaders/bag.wgsl`).

use super::nade::{Nade, NadeGrads, NadeIn};
use super::{Backend, Bag, Bce};

/// The piano-roll ops; see the module documentation.
pub trait RollOps: Backend {
    /// Fused, stable binary cross-entropy with logits over `logits [n, k]`, targets `y [n, k]`
    /// (0 or 1) and a weight per row `w [n]` (1 for a predicted frame, 0 for padding), sizes in
    /// [`Bce`]: `loss(x, y) = max(x, 0) - x*y + log(1 + exp(-|x|))` (natural log);
    /// `stats[i] = w[i] * sum_j loss(logits[i, j], y[i, j])` (f32 storage, `alloc_f32`) and
    /// `dlogits[i, j] = (sigmoid(x) - y) * w[i] * grad_scale`.
    fn bce_logits(&self, logits: &Self::Buf, y: &Self::Buf, w: &Self::Buf, dlogits: &mut Self::Buf, stats: &mut Self::Buf, bce: Bce);

    /// Embedding bag (sizes in [`Bag`]): `out[i, :] = sum_{j < slots} table[ids[i*slots + j], :]`
    /// for `i < n`, rows of width `e`; an id at or past the table's rows (`u32::MAX` by
    /// convention) is an empty slot.
    fn bag_fwd(&self, ids: &Self::Ids, table: &Self::Buf, out: &mut Self::Buf, bag: Bag);

    /// Backward of [`RollOps::bag_fwd`]: `dtable[ids[i*slots + j], :] += dout[i, :]` for every
    /// non-empty slot; accumulates. `rows` is the table's row count.
    fn bag_bwd(&self, ids: &Self::Ids, dout: &Self::Buf, dtable: &mut Self::Buf, bag: Bag, rows: usize);

    /// The NADE head's forward (issue 27; math and layouts in [`crate::engine::nade`]): every
    /// key's conditional logit of each row's frame `x.y` given its biases, in one pass over the
    /// keys, into `logits [n, k]`, and `stats[r] = rw[r] * -log p(y[r])` (f32 storage), the loss
    /// `bce_logits` would give those logits.
    fn nade_fwd(&self, x: NadeIn<'_, Self::Buf>, logits: &mut Self::Buf, stats: &mut Self::Buf, nade: Nade);

    /// Backward of [`RollOps::nade_fwd`] from its `logits`: writes `dbh`, `dbv`, accumulates `dw`,
    /// `dv`, of `sum_r stats[r] * grad_scale`.
    fn nade_bwd(&self, x: NadeIn<'_, Self::Buf>, logits: &Self::Buf, g: NadeGrads<'_, Self::Buf>, nade: Nade);
}

/// `max(x, 0) - x*y + ln(1 + exp(-|x|))`, the loss of one key (f32, as both backends compute it).
pub fn bce_one(x: f32, y: f32) -> f32 {
    x.max(0.0) - x * y + (-x.abs()).exp().ln_1p()
}

/// `1 / (1 + exp(-x))` without overflow for either sign.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}
