//! A dropout site: a tensor id under the step's [`Dropout`] seed (see [`crate::engine::dropout`]),
//! applied in place; the identity when dropout is off (evaluation, generation).

use crate::engine::dropout::drop_site;
use crate::engine::{Backend, Dropout};

/// Site `id` of a model's dropout: the same mask in the forward and the backward of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropSite(pub u32);

impl DropSite {
    /// `x[0..n]` dropped in place with this site's mask under `d` (`None` or `p = 0`: nothing).
    /// Linear and diagonal, so the backward is the same call on the gradient. Returns whether
    /// anything was dropped.
    pub fn apply<B: Backend>(self, b: &B, d: Option<&Dropout>, x: &mut B::Buf, n: usize) -> bool {
        drop_site(b, d, self.0, x, n)
    }
}
