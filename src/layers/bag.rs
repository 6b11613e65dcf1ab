//! The piano-roll input projection: an 88-key multi-hot frame times a dense `[keys, e]` matrix,
//! as the gather-sum of the active keys' rows ([`RollOps::bag_fwd`]), plus a bias.

use super::{init, Layer};
use crate::engine::roll::RollOps;
use crate::engine::{Backend, Bag, Param};
use crate::rng::Rng;

/// `x [n, e] = bag(ids, weight) + bias`; owns `{name}.weight [keys, e]`, `{name}.bias [e]`
/// (an `nn.Linear(keys, e)` stored transposed, initialised as one) and its output `x`.
pub struct BagInput<B: Backend> {
    pub weight: Param<B>,
    pub bias: Param<B>,
    pub keys: usize,
    pub e: usize,
    /// The projected frames `[rows, e]`.
    pub x: B::Buf,
}

impl<B: Backend> BagInput<B> {
    /// `U(+-1/sqrt(keys))` for both tensors, an output for `rows` frames.
    pub fn new(b: &B, name: &str, keys: usize, e: usize, rows: usize, rng: &mut Rng) -> Self {
        let bound = 1.0 / (keys as f32).sqrt();
        let weight = Param::declare(b, &format!("{name}.weight"), &[keys, e], init::uniform(rng, keys * e, bound));
        let bias = Param::declare(b, &format!("{name}.bias"), &[e], init::uniform(rng, e, bound));
        BagInput { weight, bias, keys, e, x: b.alloc(rows * e) }
    }

    /// Over `ids [n, slots]` (each frame's keys, empty slots `u32::MAX`).
    pub fn forward(&mut self, b: &B, ids: &B::Ids, slots: usize, n: usize)
    where
        B: RollOps,
    {
        b.bag_fwd(ids, &self.weight.value.buf, &mut self.x, Bag { n, slots, e: self.e });
        b.bias_add(&mut self.x, &self.bias.value.buf, n, self.e, 1);
    }

    /// From `dx [n, e]`: accumulates both gradients.
    pub fn backward(&mut self, b: &B, ids: &B::Ids, slots: usize, dx: &B::Buf, n: usize)
    where
        B: RollOps,
    {
        b.bias_grad(dx, &mut self.bias.grad.buf, n, self.e, 1);
        b.bag_bwd(ids, dx, &mut self.weight.grad.buf, Bag { n, slots, e: self.e }, self.keys);
    }
}

impl<B: Backend> Layer<B> for BagInput<B> {
    fn params(&self) -> Vec<&Param<B>> {
        vec![&self.weight, &self.bias]
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        vec![&mut self.weight, &mut self.bias]
    }
}
