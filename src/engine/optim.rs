//! The Adam optimizer over a model's parameters, written once for every backend: a step is `zero_grads`, the model's forward and backward, then [`Adam::step`], which
//! clips by the global gradient norm and updates every parameter without a round trip to the host.
//! The parameters and the arena they live in are [`super::arena`]'s.

use super::arena::{iter, whole, whole_arena, Arena, ParamList, ParamsMut};
use super::{AdamParams, AdamStep, Backend, Tensor};
use std::sync::Arc;


/// Adam's two moments as one arena each (the layout of the parameters' arena).
struct Moments<B: Backend> {
    params: Arc<Arena<B>>,
    m: B::Buf,
    v: B::Buf,
}

/// Adam with PyTorch semantics, optional global gradient-norm clipping, and its moments kept on
/// the backend beside the parameters.
pub struct Adam<B: Backend> {
    pub hp: AdamParams,
    /// Clip the global gradient norm to this value; `<= 0` turns clipping off.
    pub clip: f32,
    /// Number of steps taken so far (the next step is `step + 1`).
    pub step: u32,
    /// AdamW's decoupled weight decay: before its update, every parameter is multiplied by
    /// `1 - lr * decoupled_decay` (PyTorch `torch.optim.AdamW`); 0 = off (plain Adam, whose L2
    /// decay `hp.weight_decay` is added to the gradient instead).
    pub decoupled_decay: f32,
    /// First moments, one per parameter (views into one arena when the parameters are one:
    /// write through them, as `Param::value`, never replace them).
    pub m: Vec<Tensor<B>>,
    /// Second moments, likewise.
    pub v: Vec<Tensor<B>>,
    acc: B::Buf,
    scale: B::Buf,
    arena: Option<Moments<B>>,
}

impl<B: Backend> Adam<B> {
    pub fn new(b: &B, params: impl ParamList<B>, hp: AdamParams, clip: f32) -> Self {
        // The moments and the norm stay f32 at any precision (`alloc_f32`): v holds squared
        // gradients, far below f16's smallest normal number.
        let f32_zeros = |shape: &[usize]| Tensor { buf: b.alloc_f32(shape.iter().product()), shape: shape.to_vec() };
        let mut scale = b.alloc_f32(1);
        b.write(&mut scale, &[1.0]);
        let (m, v, arena) = match whole_arena(&params) {
            Some(a) => {
                let (mb, vb) = (b.alloc_f32(a.len), b.alloc_f32(a.len));
                // Per parameter, in the order given, at its offset in the arena.
                let views = |buf: &B::Buf| -> Vec<Tensor<B>> {
                    iter(&params)
                        .map(|p| {
                            let at = p.arena.as_ref().expect("in the arena").1;
                            // SAFETY: at the parameters' disjoint offsets (see `into_arena`).
                            let buf = unsafe { b.view(buf, at, p.value.len()) }.expect("the backend has views");
                            Tensor { buf, shape: p.value.shape.clone() }
                        })
                        .collect()
                };
                let (m, v) = (views(&mb), views(&vb));
                (m, v, Some(Moments { params: a.clone(), m: mb, v: vb }))
            }
            None => (
                iter(&params).map(|p| f32_zeros(&p.value.shape)).collect(),
                iter(&params).map(|p| f32_zeros(&p.value.shape)).collect(),
                None,
            ),
        };
        Adam { hp, clip, step: 0, decoupled_decay: 0.0, m, v, acc: b.alloc_f32(1), scale, arena }
    }

    /// One update of every parameter from its gradient. Records work only; reads nothing back.
    pub fn step(&mut self, b: &B, mut params: impl ParamsMut<B>) {
        assert_eq!(params.count(), self.m.len(), "Adam was made for {} parameters", self.m.len());
        self.step += 1;
        let hp = AdamParams { step: self.step, ..self.hp };
        let factor = if self.decoupled_decay != 0.0 { 1.0 - hp.lr * self.decoupled_decay } else { 1.0 };
        let same = |mo: &Moments<B>| whole_arena(&params).is_some_and(|a| Arc::ptr_eq(a, &mo.params));
        if let Some(mo) = self.arena.as_ref().filter(|mo| same(mo)) {
            // One pass over each arena: the norm and clip scale, then decay and update.
            let a = &mo.params;
            let grads = a.grads(b);
            if self.clip > 0.0 {
                b.grad_norm_clip(&grads, a.len, self.clip, &mut self.acc, &mut self.scale);
            }
            let (mut m, mut v) = (whole(b, &mo.m, a.len), whole(b, &mo.v, a.len));
            b.adamw(&mut a.values(b), &grads, &mut m, &mut v, &self.scale, AdamStep::adamw(a.len, hp, factor));
            return;
        }
        if self.clip > 0.0 {
            b.fill(&mut self.acc, 1, 0.0);
            for p in iter(&params) {
                b.sum_squares(&p.grad.buf, p.grad.len(), &mut self.acc);
            }
            b.clip_scale(&self.acc, self.clip, &mut self.scale);
        }
        for (i, (m, v)) in self.m.iter_mut().zip(&mut self.v).enumerate() {
            let p = params.at_mut(i);
            let n = p.value.len();
            b.adamw(&mut p.value.buf, &p.grad.buf, &mut m.buf, &mut v.buf, &self.scale, AdamStep::adamw(n, hp, factor));
        }
    }

    /// The global gradient norm before clipping, as of the last step (reads back one value;
    /// only meaningful when clipping is on).
    pub fn last_grad_norm(&self, b: &B) -> f32 {
        b.read(&self.acc, 1)[0].sqrt()
    }
}
