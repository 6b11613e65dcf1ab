//! The gated WaveNet's residual stack, written once for the token model
//! ([`crate::model::wavenet_gated`]) and the piano-roll conv model ([`crate::model::roll`]):
//!
//! ```text
//! for block i:  a_i = blocks.i.dil(h_i)                causal, kernel K, R -> 2R
//!               z_i = tanh(a_i[:R]) * sigmoid(a_i[R:])  (dropout site i on z_i)
//!               skip += blocks.i.skip(z_i)              1x1 R -> S
//!               h_{i+1} = h_i + blocks.i.res(z_i)       1x1 R -> R (not on the last block)
//! ```

use super::{Conv1d, DropSite, Layer};
use crate::engine::{Backend, Dropout, Param};
use crate::rng::Rng;

/// One residual block: `z = gate(dil(h))`, `skip(z)` into the skip sum, `h + res(z)` to the next.
pub struct GatedBlock<B: Backend> {
    /// `blocks.{i}.dil`, causal, kernel K, R -> 2R; its output `a_i [B, 2R, T]`.
    pub dil: Conv1d<B>,
    /// `blocks.{i}.res`, 1x1 R -> R, absent on the last block; its output becomes `h_{i+1}`.
    pub res: Option<Conv1d<B>>,
    /// `blocks.{i}.skip`, 1x1 R -> S, writing into the stack's skip sum.
    pub skip: Conv1d<B>,
    /// The gated output `z_i [B, R, T]`.
    z: B::Buf,
    drop: DropSite,
}

/// The blocks with their skip sum and backward scratch, sized for `max_batch` windows of `time`.
pub struct GatedStack<B: Backend> {
    pub blocks: Vec<GatedBlock<B>>,
    r: usize,
    s: usize,
    /// After [`GatedStack::forward`]: the sum of the blocks' skips `[B, S, T]`.
    pub skip_sum: B::Buf,
    skip_tmp: B::Buf,
    /// After [`GatedStack::backward`]: the gradient of the stack's input `h_0` `[B, R, T]`.
    pub dh: B::Buf,
    dz: B::Buf,
    da: B::Buf,
}

impl<B: Backend> GatedStack<B> {
    /// `n` blocks of `r` residual and `s` skip channels, kernel `k`, block `i` dilated by
    /// `dilation(i)`, with PyTorch's initialisation drawn from `rng` in registration order
    /// (`blocks.{i}.dil`, `.res`, `.skip`), activations for `max_batch` windows of `time`.
    pub fn new(
        b: &B,
        (r, s, k): (usize, usize, usize),
        n: usize,
        dilation: impl Fn(usize) -> usize,
        max_batch: usize,
        time: usize,
        rng: &mut Rng,
    ) -> Self {
        let (m, t) = (max_batch, time);
        let blocks = (0..n)
            .map(|i| GatedBlock {
                dil: Conv1d::new(b, &format!("blocks.{i}.dil"), r, 2 * r, k, dilation(i), rng).with_output(b, m, t),
                res: (i + 1 < n).then(|| Conv1d::new(b, &format!("blocks.{i}.res"), r, r, 1, 1, rng).with_output(b, m, t)),
                skip: Conv1d::new(b, &format!("blocks.{i}.skip"), r, s, 1, 1, rng),
                z: b.alloc(m * r * t),
                drop: DropSite(i as u32),
            })
            .collect();
        GatedStack {
            blocks,
            r,
            s,
            skip_sum: b.alloc(m * s * t),
            skip_tmp: b.alloc(m * s * t),
            dh: b.alloc(m * r * t),
            dz: b.alloc(m * r * t),
            da: b.alloc(m * 2 * r * t),
        }
    }

    /// From `h0 [batch, R, time]`, every block in turn (dropout `d` on each `z_i`), leaving the
    /// skip sum in [`GatedStack::skip_sum`].
    pub fn forward(&mut self, b: &B, h0: &B::Buf, batch: usize, time: usize, d: Option<&Dropout>) {
        let (rt, st) = (batch * self.r * time, batch * self.s * time);
        for i in 0..self.blocks.len() {
            let (done, rest) = self.blocks.split_at_mut(i);
            let h = done.last().map_or(h0, |prev| &prev.res.as_ref().expect("a block below the last has res").y);
            let blk = &mut rest[0];
            blk.dil.forward(b, h, batch, time);
            b.gated_fwd(&blk.dil.y, &mut blk.z, batch, self.r, time);
            blk.drop.apply(b, d, &mut blk.z, rt);
            if i == 0 {
                blk.skip.forward_into(b, &blk.z, &mut self.skip_sum, batch, time);
            } else {
                blk.skip.forward_into(b, &blk.z, &mut self.skip_tmp, batch, time);
                b.add(&self.skip_tmp, &mut self.skip_sum, st);
            }
            if let Some(res) = blk.res.as_mut() {
                // h_{i+1} = res(z_i) + h_i
                res.forward(b, &blk.z, batch, time);
                b.add(h, &mut res.y, rt);
            }
        }
    }

    /// Backward of the last forward from `dskip` (the skip sum's gradient), last block to first,
    /// accumulating every block's gradients and leaving dL/dh_0 in [`GatedStack::dh`].
    pub fn backward(&mut self, b: &B, h0: &B::Buf, dskip: &B::Buf, batch: usize, time: usize, d: Option<&Dropout>) {
        let rt = batch * self.r * time;
        // On entry to block i (i < last), self.dh = dL/dh_{i+1}.
        for i in (0..self.blocks.len()).rev() {
            let (done, rest) = self.blocks.split_at_mut(i);
            let h = done.last().map_or(h0, |prev| &prev.res.as_ref().expect("a block below the last has res").y);
            let blk = &mut rest[0];
            let has_res = blk.res.is_some();
            // dz = res^T dh_{i+1} + skip^T dskip
            if let Some(res) = blk.res.as_mut() {
                res.backward(b, &blk.z, &self.dh, &mut self.dz, false, batch, time);
            }
            blk.skip.backward(b, &blk.z, dskip, &mut self.dz, has_res, batch, time);
            blk.drop.apply(b, d, &mut self.dz, rt);
            b.gated_bwd(&blk.dil.y, &self.dz, &mut self.da, batch, self.r, time);
            // dh_i = dh_{i+1} (identity path) + dil^T da; the last block has no identity path.
            blk.dil.backward(b, h, &self.da, &mut self.dh, has_res, batch, time);
        }
    }

    /// Step mode of every conv ([`Conv1d::start_steps`]).
    pub fn start_steps(&mut self, b: &B) {
        for blk in &mut self.blocks {
            blk.dil.start_steps(b);
            if let Some(res) = blk.res.as_mut() {
                res.start_steps(b);
            }
            blk.skip.start_steps(b);
        }
    }

    /// Forget every past input of step mode.
    pub fn reset_steps(&mut self, b: &B) {
        for blk in &mut self.blocks {
            blk.dil.reset_steps(b);
        }
    }
}

impl<B: Backend> Layer<B> for GatedStack<B> {
    fn params(&self) -> Vec<&Param<B>> {
        let mut p = Vec::new();
        for blk in &self.blocks {
            p.extend(blk.dil.params());
            p.extend(blk.res.iter().flat_map(|c| c.params()));
            p.extend(blk.skip.params());
        }
        p
    }

    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut p = Vec::new();
        for blk in &mut self.blocks {
            p.extend(blk.dil.params_mut());
            p.extend(blk.res.iter_mut().flat_map(|c| c.params_mut()));
            p.extend(blk.skip.params_mut());
        }
        p
    }
}
