//! Parameters with their gradients, and the Adam optimizer over them, written once for every
//! backend: a step is `zero_grads`, the model's forward and backward, then [`Adam::step`], which
//! clips by the global gradient norm and updates every parameter without a round trip to the host.

use super::{AdamParams, Backend, Tensor};

/// A trainable tensor under its PyTorch name, with its gradient (same shape).
pub struct Param<B: Backend> {
    pub name: String,
    pub value: Tensor<B>,
    pub grad: Tensor<B>,
}

impl<B: Backend> Param<B> {
    /// A parameter holding `data`, with a zero gradient.
    pub fn new(b: &B, name: &str, shape: &[usize], data: &[f32]) -> Self {
        Param { name: name.to_string(), value: Tensor::from_slice(b, shape, data), grad: Tensor::zeros(b, shape) }
    }
}

/// Set every gradient to zero.
pub fn zero_grads<B: Backend>(b: &B, params: &mut [Param<B>]) {
    for p in params {
        let n = p.grad.len();
        b.fill(&mut p.grad.buf, n, 0.0);
    }
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
    pub m: Vec<Tensor<B>>,
    pub v: Vec<Tensor<B>>,
    acc: B::Buf,
    scale: B::Buf,
}

impl<B: Backend> Adam<B> {
    pub fn new(b: &B, params: &[Param<B>], hp: AdamParams, clip: f32) -> Self {
        // The moments and the norm stay f32 at any precision (`alloc_f32`): v holds squared
        // gradients, far below f16's smallest normal number.
        let f32_zeros = |shape: &[usize]| Tensor { buf: b.alloc_f32(shape.iter().product()), shape: shape.to_vec() };
        let mut scale = b.alloc_f32(1);
        b.write(&mut scale, &[1.0]);
        Adam {
            hp,
            clip,
            step: 0,
            decoupled_decay: 0.0,
            m: params.iter().map(|p| f32_zeros(&p.value.shape)).collect(),
            v: params.iter().map(|p| f32_zeros(&p.value.shape)).collect(),
            acc: b.alloc_f32(1),
            scale,
        }
    }

    /// One update of every parameter from its gradient. Records work only; reads nothing back.
    pub fn step(&mut self, b: &B, params: &mut [Param<B>]) {
        assert_eq!(params.len(), self.m.len(), "Adam was made for {} parameters", self.m.len());
        self.step += 1;
        if self.clip > 0.0 {
            b.fill(&mut self.acc, 1, 0.0);
            for p in params.iter() {
                b.sum_squares(&p.grad.buf, p.grad.len(), &mut self.acc);
            }
            b.clip_scale(&self.acc, self.clip, &mut self.scale);
        }
        let hp = AdamParams { step: self.step, ..self.hp };
        for ((p, m), v) in params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
            let n = p.value.len();
            if self.decoupled_decay != 0.0 {
                b.decay(&mut p.value.buf, n, 1.0 - hp.lr * self.decoupled_decay);
            }
            b.adam(&mut p.value.buf, &p.grad.buf, &mut m.buf, &mut v.buf, n, hp, &self.scale);
        }
    }

    /// The global gradient norm before clipping, as of the last step (reads back one value;
    /// only meaningful when clipping is on).
    pub fn last_grad_norm(&self, b: &B) -> f32 {
        b.read(&self.acc, 1)[0].sqrt()
    }
}
