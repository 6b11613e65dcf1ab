//! Parameters with their gradients (PyTorch names and shapes), and one arena per model that they
//! live in.
//!
//! A layer declares its parameters ([`Param::declare`]: name, shape and initial values, no storage
//! yet); its model hands them all (its `params_mut()`, in PyTorch's order) to [`into_arena`], which
//! allocates the arena once and makes each parameter a view of it ([`Backend::view`], on both
//! backends), its initial values written straight into its view: no buffer of its own first, no
//! trip through the host. The weights then live in ONE buffer, the gradients in another, and [`Adam::new`] puts both moments
//! in one f32 buffer each; every tensor is an aligned view into its arena, at the same element
//! offset in all four (zeros between views, which the bookkeeping keeps at zero: a zero gradient,
//! moment and weight stay zero through Adam and the decay, and add nothing to the norm). The
//! bookkeeping of a step is then one operation over the whole arena each, whatever the model:
//!
//! | step        | arena                              | per tensor (no views, or a partial list) |
//! |-------------|------------------------------------|------------------------------------------|
//! | zero grads  | `fill` over the gradient arena     | one `fill` per tensor                    |
//! | norm + clip | `grad_norm_clip` (2 GPU dispatches, one pass on the CPU) | `fill`, one `sum_squares` per tensor, `clip_scale` |
//! | update      | `adamw` over the four arenas       | one `adamw` per tensor                   |
//!
//! so at most 4 dispatches per step on the GPU, and one pass over each arena on the CPU (where the
//! arena is host memory aligned to a cache line, each tensor starting on its own line). Names,
//! shapes and values of every tensor are what they were (checkpoints read and write each view as
//! before).
//!
//! Views of one arena alias its whole-buffer views, so [`Backend::view`] is `unsafe`; this module
//! keeps its contract: the tensors' views are disjoint (laid out one after another), and the
//! whole-buffer views live only inside [`zero_grads`] and [`Adam::step`], whose ops take no
//! tensor's view beside them.

use super::{Backend, Tensor};
use std::borrow::{Borrow, BorrowMut};
use std::sync::Arc;

/// A trainable tensor under its PyTorch name, with its gradient (same shape).
pub struct Param<B: Backend> {
    pub name: String,
    /// The weights. In an arena, a view of its weight buffer: write through it (ops, `set`),
    /// never replace or move it out, or the bookkeeping over the whole arena would no longer
    /// reach it (and on the CPU the moved view could alias the arena's passes).
    pub value: Tensor<B>,
    /// The gradient; in an arena a view of its gradient buffer, under the same rule.
    pub grad: Tensor<B>,
    /// The arena whose views `value` and `grad` are (see [`into_arena`]), and their offset in it
    /// (elements); `None` for a parameter with buffers of its own.
    pub(super) arena: Option<(Arc<Arena<B>>, usize)>,
    /// A declared parameter's initial values, until [`into_arena`] places it ([`Param::declare`]);
    /// `value` and `grad` are empty until then.
    pub(super) init: Option<Vec<f32>>,
}

impl<B: Backend> Param<B> {
    /// A parameter holding `data`, with a zero gradient.
    pub fn new(b: &B, name: &str, shape: &[usize], data: &[f32]) -> Self {
        Param {
            name: name.to_string(),
            value: Tensor::from_slice(b, shape, data),
            grad: Tensor::zeros(b, shape),
            arena: None,
            init: None,
        }
    }

    /// A parameter declared with its initial `data` and no storage yet: [`into_arena`] gives it
    /// its place in its model's arena and writes `data` there (or, on a backend without views,
    /// buffers of its own). What layers make; it must be placed before anything reads it.
    pub fn declare(b: &B, name: &str, shape: &[usize], data: Vec<f32>) -> Self {
        assert_eq!(data.len(), shape.iter().product::<usize>(), "parameter {name} of shape {shape:?} given {} values", data.len());
        let empty = || Tensor { buf: b.alloc(0), shape: shape.to_vec() };
        Param { name: name.to_string(), value: empty(), grad: empty(), arena: None, init: Some(data) }
    }

    /// Whether this parameter has its storage (a declared one has none until [`into_arena`]).
    pub fn is_placed(&self) -> bool {
        self.init.is_none()
    }

    /// Whether this parameter's value and gradient are views into a model's arena.
    pub fn in_arena(&self) -> bool {
        self.arena.is_some()
    }
}

/// An ordered list of parameters, read-only: a model's [`crate::model::Model::params`]
/// (`Vec<&Param>`, each one owned by a layer), or a slice or `Vec` of parameters of their own.
/// What the optimizer and the arena functions take, in PyTorch's `named_parameters()` order.
pub trait ParamList<B: Backend> {
    fn count(&self) -> usize;
    fn at(&self, i: usize) -> &Param<B>;
}

/// An ordered list of parameters that can be written: a model's
/// [`crate::model::Model::params_mut`] (`Vec<&mut Param>`), or `&mut` a slice or `Vec`.
pub trait ParamsMut<B: Backend>: ParamList<B> {
    fn at_mut(&mut self, i: usize) -> &mut Param<B>;
}

impl<B: Backend, P: Borrow<Param<B>>> ParamList<B> for [P] {
    fn count(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> &Param<B> {
        self[i].borrow()
    }
}

impl<B: Backend, P: BorrowMut<Param<B>>> ParamsMut<B> for [P] {
    fn at_mut(&mut self, i: usize) -> &mut Param<B> {
        self[i].borrow_mut()
    }
}

impl<B: Backend, P: Borrow<Param<B>>> ParamList<B> for Vec<P> {
    fn count(&self) -> usize {
        self.len()
    }
    fn at(&self, i: usize) -> &Param<B> {
        self[i].borrow()
    }
}

impl<B: Backend, P: BorrowMut<Param<B>>> ParamsMut<B> for Vec<P> {
    fn at_mut(&mut self, i: usize) -> &mut Param<B> {
        self[i].borrow_mut()
    }
}

impl<B: Backend, L: ParamList<B> + ?Sized> ParamList<B> for &L {
    fn count(&self) -> usize {
        (**self).count()
    }
    fn at(&self, i: usize) -> &Param<B> {
        (**self).at(i)
    }
}

impl<B: Backend, L: ParamList<B> + ?Sized> ParamList<B> for &mut L {
    fn count(&self) -> usize {
        (**self).count()
    }
    fn at(&self, i: usize) -> &Param<B> {
        (**self).at(i)
    }
}

impl<B: Backend, L: ParamsMut<B> + ?Sized> ParamsMut<B> for &mut L {
    fn at_mut(&mut self, i: usize) -> &mut Param<B> {
        (**self).at_mut(i)
    }
}

/// The parameters of `list`, in order.
pub(super) fn iter<'a, B: Backend + 'a, L: ParamList<B> + ?Sized>(list: &'a L) -> impl Iterator<Item = &'a Param<B>> + 'a {
    (0..list.count()).map(move |i| list.at(i))
}

/// The storage of a model's parameters: weights and gradients, each one buffer, and where each
/// tensor starts in them (the same offsets in both, and in Adam's moments).
pub struct Arena<B: Backend> {
    values: B::Buf,
    grads: B::Buf,
    /// Elements of each buffer, padding included (views end at or before it).
    pub(super) len: usize,
    /// Number of parameter tensors.
    tensors: usize,
}

impl<B: Backend> Arena<B> {
    /// Elements per arena buffer, padding included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of parameter tensors.
    pub fn tensors(&self) -> usize {
        self.tensors
    }

    /// A handle on the whole gradient buffer (a view of all of it), for the bookkeeping ops only.
    pub(super) fn grads(&self, b: &B) -> B::Buf {
        whole(b, &self.grads, self.len)
    }

    /// A handle on the whole weight buffer, for the bookkeeping ops only.
    pub(super) fn values(&self, b: &B) -> B::Buf {
        whole(b, &self.values, self.len)
    }
}

/// A view of all `len` elements of an arena buffer, for the bookkeeping ops of one call
/// (zeroing, the norm, Adam).
pub(super) fn whole<B: Backend>(b: &B, buf: &B::Buf, len: usize) -> B::Buf {
    // SAFETY: the callers (`zero_grads`, `Adam::step`) hold `&mut` on every parameter of the
    // arena, pass the view only to ops whose other buffers are other arenas' whole views or the
    // optimizer's own scalars, never a tensor's view of this one, and drop it before they return
    // (see the module documentation).
    unsafe { b.view(buf, 0, len) }.expect("an arena exists only where the backend has views")
}

/// Offsets of tensors of `lens` elements laid out one after another, each a multiple of `align`,
/// and the total length (the end of the last one).
fn layout(lens: impl IntoIterator<Item = usize>, align: usize) -> (Vec<usize>, usize) {
    let mut end = 0usize;
    let offsets = lens
        .into_iter()
        .map(|n| {
            let at = end.next_multiple_of(align.max(1));
            end = at + n;
            at
        })
        .collect();
    (offsets, end)
}

/// Places `params` (declared, [`Param::declare`], or freshly made with buffers of their own:
/// gradients zero) in one arena, in place: their weights in one buffer and their gradients in
/// another, each tensor a view at an aligned offset, names, shapes and values as declared or made
/// (each layer keeps its parameters, now views). A declared parameter's values are written
/// straight into its view; one made with [`Param::new`] is copied there from its own buffer. Where
/// the backend has no views, or the arena would exceed the backend's largest buffer, the declared
/// parameters get buffers of their own and the others stay as they are.
pub fn into_arena<B: Backend>(b: &B, mut params: impl ParamsMut<B>) {
    if params.count() == 0 || iter(&params).any(|p| p.arena.is_some()) {
        return own_buffers(b, params);
    }
    let (offsets, len) = layout(iter(&params).map(|p| p.value.len()), b.view_align());
    // f32 bytes (the widest storage): the moments' arenas have the same length.
    if b.max_buffer_bytes().is_some_and(|max| (len as u64).saturating_mul(4) > max) {
        return own_buffers(b, params);
    }
    let values = b.alloc(len);
    let grads = b.alloc(len);
    // Probe: a backend without views gives the parameters buffers of their own.
    // SAFETY: the probe is dropped at once, before anything else touches `values`.
    if unsafe { b.view(&values, 0, len) }.is_none() {
        return own_buffers(b, params);
    }
    let arena = Arc::new(Arena { values, grads, len, tensors: params.count() });
    for (i, at) in offsets.into_iter().enumerate() {
        let p = params.at_mut(i);
        let n = p.value.len();
        // SAFETY: the layout puts each tensor after the end of the one before: no two overlap.
        let view = |buf: &B::Buf| unsafe { b.view(buf, at, n) }.expect("the backend made a view above");
        let mut value = Tensor { buf: view(&arena.values), shape: p.value.shape.clone() };
        match p.init.take() {
            Some(data) => value.set(b, &data),
            None => value.set(b, &p.value.to_vec(b)),
        }
        let grad = Tensor { buf: view(&arena.grads), shape: p.grad.shape.clone() };
        p.value = value;
        p.grad = grad;
        p.arena = Some((arena.clone(), at));
    }
}

/// Buffers of their own for the declared parameters of `params` (where there is no arena).
fn own_buffers<B: Backend>(b: &B, mut params: impl ParamsMut<B>) {
    for i in 0..params.count() {
        let p = params.at_mut(i);
        if let Some(data) = p.init.take() {
            p.value = Tensor::from_slice(b, &p.value.shape, &data);
            p.grad = Tensor::zeros(b, &p.grad.shape);
        }
    }
}

/// The arena `params` make up when they are all of it (every tensor of one arena, each once, in
/// any order), else `None` (parameters with buffers of their own, a part of a model's list, or a
/// list naming a tensor twice, whose moments would be two views of one window).
pub fn whole_arena<B: Backend, L: ParamList<B> + ?Sized>(params: &L) -> Option<&Arc<Arena<B>>> {
    if params.count() == 0 {
        return None;
    }
    let (a, _) = params.at(0).arena.as_ref()?;
    let mut offsets = Vec::with_capacity(params.count());
    for p in iter(params) {
        match &p.arena {
            Some((x, at)) if Arc::ptr_eq(x, a) => offsets.push(*at),
            _ => return None,
        }
    }
    offsets.sort_unstable();
    let distinct = offsets.windows(2).all(|w| w[0] < w[1]);
    (distinct && offsets.len() == a.tensors).then_some(a)
}

/// Set every gradient to zero: one pass over the gradient arena when `params` are a whole arena.
pub fn zero_grads<B: Backend>(b: &B, mut params: impl ParamsMut<B>) {
    if let Some(a) = whole_arena(&params) {
        b.fill(&mut a.grads(b), a.len, 0.0);
        return;
    }
    for i in 0..params.count() {
        let p = params.at_mut(i);
        let n = p.grad.len();
        b.fill(&mut p.grad.buf, n, 0.0);
    }
}
