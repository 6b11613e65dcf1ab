//! The wgpu backend (issue 3): adapter choice, pipeline cache, buffers, one submission per step.
//!
//! # How work is recorded
//!
//! Every [`Backend`] operation checks its buffer lengths with its contract
//! ([`crate::engine::contract`], the same check the CPU backend makes: the panic names the op, the
//! buffer and the sizes), then *records* one or more compute dispatches; nothing runs until
//! [`Backend::flush`] or [`Backend::read`]. A recorded dispatch (kept in a list until the submit,
//! which encodes them all at once) is a pipeline, the buffers it binds and its parameters (sizes, offsets, flags: at most `MAX_PARAM_WORDS` 32-bit words). The
//! parameters go into a host-side *params arena*, one 256-byte slot per dispatch; at submit time the
//! arena is uploaded with a single `queue.write_buffer`, one command encoder is built with **one
//! compute pass holding every dispatch** (wgpu inserts the barriers between dispatches that touch
//! the same buffer), and it is submitted once. A training step is one submission.
//!
//! Bind groups are cached, keyed by (pipeline, params slot, buffer ids and byte ranges: a view of
//! an arena is bound as its range, see [`GpuBuffer`]): a training step records
//! the same dispatches in the same order every step, so from the second step on every bind group
//! is a cache hit. Entries whose buffers were dropped by their owner are swept after a submit.
//!
//! Host writes ([`Backend::write`]) go through `queue.write_buffer`, which runs *before* the next
//! submission's commands; so a write first submits whatever is recorded, keeping program order.
//!
//! # Adding a shader (the crate-internal recording API)
//!
//! 1. Write `shaders/NAME.wgsl`. Conventions: `@group(0) @binding(0) var<uniform> p: Params;` (a
//!    struct of at most 64 scalar `u32`/`i32`/`f32` fields, **read by every entry point**), then the
//!    storage buffers at bindings `1..=k` in the order the Rust side passes them. Different entry
//!    points of one file may declare different variables at the same binding number. Use
//!    `var<storage, read>` for inputs and `var<storage, read_write>` for outputs. Pipelines use
//!    wgpu's automatic layout, which drops unused bindings: pass exactly the buffers the entry
//!    point uses, and have it read `p`. Float tensors are `array<elem>` (read `f32(x[i])`, write
//!    `elem(v)`; see "Precision" below); arrays that stay f32 at any precision say `f32`, and the
//!    Rust side checks element types with `check_same_elem` / `check_f32`.
//! 2. Give the op family a file of its own in `ops/` (see "Where things are"), declaring
//!    the shader once: `const MY: Shader = Shader { name: "my", source: include_str!("../../../../shaders/my.wgsl") };`
//! 3. Write its `record_*` functions: `pub(crate) fn record_my(rec: &mut Recording<'_>, x: &GpuBuffer, ...)`
//!    checks lengths with the op's contract (`crate::engine::contract::my(sizes, [x.len(), ..])`,
//!    the function the CPU backend calls too; ops with many sizes take one struct of
//!    `crate::engine::args`), then records with
//!    `rec.dispatch(&MY, "entry", &[&x, &w, &y], &[u(n), f(scale)], grid_1d(n, 256))`. `u` and `f`
//!    turn a size and an `f32` into the words the shader reads; `grid_1d` / `grid_groups` /
//!    `grid_2d` give workgroup counts within the 65535-per-dimension limit (see `grid_1d`'s doc for
//!    the flat index the shader rebuilds). The words fill the `Params` struct's fields in order;
//!    unused trailing fields read 0. What the op reads of the device (precision, loss scale, kernel
//!    variant) is in `rec.ctx`. An op that needs another family's op calls that family's
//!    `record_*` with the same `rec` (never the public [`Backend`] methods: the recorder is held).
//! 4. Temporary storage the op passes between its own dispatches:
//!    `rec.with_scratch("my_key", len, |rec, buf| { ... })`, a buffer that is the op's own until
//!    the closure returns, kept under the key between calls (see `scratch.rs`).
//! 5. In `impl Backend` below, one line: `my::record_my(&mut self.recording(), x, ...)`, which takes
//!    the recorder's lock once for the whole op.
//!
//! # Precision (issue 7)
//!
//! A backend opened with [`Precision::F16`] (where the adapter has `SHADER_F16`) stores what
//! [`Backend::alloc`] makes — weights, gradients, activations — as f16; [`Backend::alloc_f32`]
//! buffers (Adam's moments, the loss sums), the ops' scratch partial sums and ids stay 32-bit.
//! Every buffer knows its element type ([`Elem`]). Each shader is written once against the alias
//! `elem` for its precision-dependent storage arrays (always-f32 arrays say `f32`): loads convert to
//! f32 (`f32(x[i])`), all arithmetic, workgroup tiles and sums are f32, stores convert back
//! (`elem(v)`). The pipeline cache compiles a shader once per variant, prepending `alias elem = f32;`
//! or `enable f16; alias elem = f16;`; a dispatch uses the f16 variant when any buffer it binds is
//! f16. At f32 the source is the one it always was (`f32(x)` of an f32 is `x`): results are
//! unchanged bit for bit. [`Backend::write`] and [`Backend::read`] convert with the `half` crate.
//! An f16 array has a 2-byte stride; allocations are rounded up to whole 4-byte words.
//!
//! Gradients at f16 are *loss-scaled*: `softmax_xent` multiplies its `grad_scale` by
//! [`F16_LOSS_SCALE`], so every gradient buffer holds the gradient times that factor (small
//! per-row gradients such as `1/(B*T*V)` would otherwise fall below f16's smallest normal number,
//! 6.1e-5); `sum_squares` and `adam` divide it out in f32 before using a gradient, so the norm,
//! the clipping and the update are those of the true gradient. [`GpuBackend::loss_scale`] says
//! the factor in use (1 at f32).
//!
//! # Software renderers
//!
//! On a software adapter (lavapipe/llvmpipe: a workgroup runs as SIMD lanes in one CPU thread,
//! every run-time indexed load is a per-lane loop, barriers are costly) a few ops record variants
//! that trade workgroups for fewer loads per multiply-add ([`KernelVariant`]): the matrix product
//! as 8x8 register blocks without workgroup memory (`matmul_regs`), the LSTM recurrence with 8
//! batch rows per workgroup (`lstm_fwd_rows`, `lstm_bwd_rows`) and dW_hh through that product, and
//! vec4 bias kernels. Real GPUs keep the portable kernels (enough workgroups, workgroup-memory
//! tiles). [`GpuBackend::set_kernel_variant`] forces either, so tests can compare them.
//!
//! # Timing
//!
//! Where the adapter has `TIMESTAMP_QUERY`, [`GpuBackend::set_profiling`] makes every submission
//! time each dispatch (see `profile.rs`) and [`GpuBackend::take_profile`] returns the times; off by
//! default, and then nothing is written or read.
//!
//! The pipeline cache (`Context::pipeline`) compiles one pipeline per (shader, entry point,
//! precision) on first use; `rec.dispatch` is all a new op needs.
//!
//! # Where things are
//!
//! ```text
//! mod.rs           GpuBackend, `impl Backend` (one line per op), these docs, shared test helpers
//! adapter.rs       listing and picking adapters (AdapterReport), Precision and its device features
//! context.rs       Context: the device, limits, precision, kernel variants, pipeline cache (Shader)
//! device.rs        opening the device on the chosen adapter (GpuBackend::new) and what it tells
//! recorder.rs      Recording (the one lock, taken once per op), dispatches, the params arena,
//!                  bind-group cache, submit, counts, profiling hooks; parameter words (f, u) and
//!                  workgroup grids (grid_1d, grid_groups, grid_2d)
//! buffer.rs        GpuBuffer (and views), Elem, the element-type checks (check_f32, ...; every
//!                  op's and host I/O's lengths: `crate::engine::contract`)
//! io.rs            allocation, views, uploads and read-backs
//! scratch.rs       the scratch store: buffers each op takes while it records (with_scratch)
//! profile.rs       per-dispatch timestamps
//! ops/             one file per op family:
//!   elementwise.rs fill, add, copy_strided, activations, GELU, the WaveNet gate, transpose  (elementwise.wgsl)
//!   matmul.rs      the matrix product                                   (matmul.wgsl)
//!   bias.rs        bias add and gradient                                (bias.wgsl)
//!   embedding.rs   embedding lookup and gradient                        (embedding.wgsl)
//!   softmax_xent.rs softmax cross-entropy                                (softmax_xent.wgsl)
//!   optim.rs       sum of squares, norm and clipping, decay, Adam(W)    (optim.wgsl)
//!   dropout.rs     inverted dropout                                     (dropout.wgsl)
//!   conv.rs        causal dilated Conv1d                                (conv1d.wgsl)
//!   lstm.rs        the LSTM recurrence                                  (lstm.wgsl)
//!   attention.rs   causal multi-head attention                          (attention.wgsl)
//!   layer_norm.rs  LayerNorm                                            (layer_norm.wgsl)
//!   rel_attention.rs attention with a relative term, its decode         (rel_attention.wgsl)
//!   roll.rs        the piano-roll ops (RollOps)                         (bce.wgsl, bag.wgsl)
//! ```

mod adapter;
mod buffer;
mod context;
mod device;
mod io;
mod ops;
mod profile;
mod recorder;
mod scratch;

pub use adapter::{list_adapters, pick_adapter_index, AdapterReport, Precision, F16_LOSS_SCALE, NO_ADAPTER};
pub use buffer::{Elem, GpuBuffer};
pub use context::KernelVariant;
pub use profile::{by_kernel, DispatchTime, Timestamps};

pub(crate) use buffer::{check_f32, check_same_elem};
pub(crate) use context::{Pipe, Shader};
pub(crate) use recorder::{f, grid_1d, grid_2d, grid_groups, u, MAX_GROUPS_PER_DIM};
use ops::{attention, bias, conv, dropout, elementwise, embedding, layer_norm, lstm, matmul, optim, rel_attention, softmax_xent};
use recorder::{Recorded, Recorder, Recording};

use super::{
    Act, AdamStep, Attention, Backend, Conv1d, DropMask, LayerNorm, Lstm, LstmSaved, LstmSeqs, MatMul, Qkv, RelAttention, RelDecode, Strided, Xent,
};
use context::Context;
use std::sync::Mutex;

/// The wgpu backend. All methods take `&self` (the recorder sits behind a mutex), so one backend
/// may be shared between threads; work is still recorded and submitted in call order, and each
/// operation's dispatches are recorded together (see `recorder.rs`).
pub struct GpuBackend {
    /// The device and what ops read while recording (limits, precision, pipeline cache, ...).
    ctx: Context,
    /// Recorded work, the params arena, bind groups, scratch, counters: the one lock an op takes.
    rec: Mutex<Recorder>,
}

impl Backend for GpuBackend {
    type Buf = GpuBuffer;
    type Ids = GpuBuffer;

    fn max_buffer_bytes(&self) -> Option<u64> {
        let limits = &self.ctx.limits;
        Some(limits.max_storage_buffer_binding_size.min(limits.max_buffer_size))
    }

    /// The adapter's name and API, with `, f16` at that precision.
    fn name(&self) -> String {
        let (info, precision) = (&self.ctx.info, if self.ctx.precision == Precision::F16 { ", f16" } else { "" });
        format!("{} ({:?}{precision})", info.name, info.backend)
    }

    fn alloc(&self, len: usize) -> GpuBuffer {
        self.alloc_typed(len, self.float_elem())
    }

    fn alloc_f32(&self, len: usize) -> GpuBuffer {
        self.alloc_typed(len, Elem::F32)
    }

    fn alloc_ids(&self, len: usize) -> GpuBuffer {
        self.alloc_typed(len, Elem::U32)
    }

    unsafe fn view(&self, buf: &GpuBuffer, offset: usize, len: usize) -> Option<GpuBuffer> {
        // Device memory: an overlapping view is a wgpu binding range, never a host borrow.
        Some(self.view_of(buf, offset, len))
    }

    fn view_align(&self) -> usize {
        self.view_align_elems()
    }

    fn write(&self, dst: &mut GpuBuffer, src: &[f32]) {
        self.write_floats(dst, src)
    }

    fn write_ids(&self, dst: &mut GpuBuffer, src: &[u32]) {
        self.write_words(dst, src, "write_ids")
    }

    fn read(&self, src: &GpuBuffer, len: usize) -> Vec<f32> {
        self.read_floats(src, len)
    }

    fn flush(&self) {
        self.recording().submit()
    }

    fn fill(&self, x: &mut GpuBuffer, n: usize, value: f32) {
        elementwise::record_fill(&mut self.recording(), x, n, value)
    }

    fn add(&self, x: &GpuBuffer, y: &mut GpuBuffer, n: usize) {
        elementwise::record_add(&mut self.recording(), x, y, n)
    }

    fn copy_strided(&self, src: &GpuBuffer, dst: &mut GpuBuffer, s: Strided) {
        elementwise::record_copy_strided(&mut self.recording(), src, dst, s)
    }

    fn act_fwd(&self, act: Act, x: &GpuBuffer, y: &mut GpuBuffer, n: usize) {
        elementwise::record_act_fwd(&mut self.recording(), act, x, y, n)
    }

    fn act_bwd(&self, act: Act, y: &GpuBuffer, dy: &GpuBuffer, dx: &mut GpuBuffer, n: usize) {
        elementwise::record_act_bwd(&mut self.recording(), act, y, dy, dx, n)
    }

    fn gated_fwd(&self, a: &GpuBuffer, z: &mut GpuBuffer, batch: usize, r: usize, t: usize) {
        elementwise::record_gated_fwd(&mut self.recording(), a, z, batch, r, t)
    }

    fn gated_bwd(&self, a: &GpuBuffer, dz: &GpuBuffer, da: &mut GpuBuffer, batch: usize, r: usize, t: usize) {
        elementwise::record_gated_bwd(&mut self.recording(), a, dz, da, batch, r, t)
    }

    fn dropout(&self, x: &mut GpuBuffer, n: usize, mask: DropMask) {
        dropout::record_dropout(&mut self.recording(), x, n, mask)
    }

    fn transpose(&self, x: &GpuBuffer, y: &mut GpuBuffer, batch: usize, rows: usize, cols: usize) {
        elementwise::record_transpose(&mut self.recording(), x, y, batch, rows, cols)
    }

    fn matmul(&self, a: &GpuBuffer, b: &GpuBuffer, c: &mut GpuBuffer, mm: MatMul) {
        matmul::record_matmul(&mut self.recording(), a, b, c, mm)
    }

    fn bias_add(&self, y: &mut GpuBuffer, bias: &GpuBuffer, outer: usize, channels: usize, inner: usize) {
        bias::record_bias_add(&mut self.recording(), y, bias, outer, channels, inner)
    }

    fn bias_grad(&self, dy: &GpuBuffer, dbias: &mut GpuBuffer, outer: usize, channels: usize, inner: usize) {
        bias::record_bias_grad(&mut self.recording(), dy, dbias, outer, channels, inner)
    }

    fn embedding_fwd(&self, ids: &GpuBuffer, table: &GpuBuffer, out: &mut GpuBuffer, n: usize, e: usize) {
        embedding::record_embedding_fwd(&mut self.recording(), ids, table, out, n, e)
    }

    fn embedding_bwd(&self, ids: &GpuBuffer, dout: &GpuBuffer, dtable: &mut GpuBuffer, n: usize, e: usize) {
        embedding::record_embedding_bwd(&mut self.recording(), ids, dout, dtable, n, e)
    }

    fn softmax_xent(&self, logits: &GpuBuffer, targets: &GpuBuffer, dlogits: &mut GpuBuffer, stats: &mut GpuBuffer, x: Xent) {
        softmax_xent::record_softmax_xent(&mut self.recording(), logits, targets, dlogits, stats, x)
    }

    fn sum_squares(&self, x: &GpuBuffer, n: usize, acc: &mut GpuBuffer) {
        optim::record_sum_squares(&mut self.recording(), x, n, acc)
    }

    fn clip_scale(&self, acc: &GpuBuffer, max_norm: f32, scale: &mut GpuBuffer) {
        optim::record_clip_scale(&mut self.recording(), acc, max_norm, scale)
    }

    fn decay(&self, p: &mut GpuBuffer, n: usize, factor: f32) {
        optim::record_decay(&mut self.recording(), p, n, factor)
    }

    fn grad_norm_clip(&self, g: &GpuBuffer, n: usize, max_norm: f32, acc: &mut GpuBuffer, scale: &mut GpuBuffer) {
        optim::record_grad_norm_clip(&mut self.recording(), g, n, max_norm, acc, scale)
    }

    fn adamw(&self, p: &mut GpuBuffer, g: &GpuBuffer, m: &mut GpuBuffer, v: &mut GpuBuffer, scale: &GpuBuffer, step: AdamStep) {
        optim::record_adamw(&mut self.recording(), p, g, m, v, scale, step)
    }

    fn conv1d_fwd(&self, x: &GpuBuffer, w: &GpuBuffer, bias: &GpuBuffer, y: &mut GpuBuffer, c: Conv1d) {
        conv::record_fwd(&mut self.recording(), x, w, bias, y, c)
    }

    fn conv1d_bwd_input(&self, dy: &GpuBuffer, w: &GpuBuffer, dx: &mut GpuBuffer, c: Conv1d, accumulate: bool) {
        conv::record_bwd_input(&mut self.recording(), dy, w, dx, c, accumulate)
    }

    fn conv1d_bwd_weight(&self, x: &GpuBuffer, dy: &GpuBuffer, dw: &mut GpuBuffer, dbias: &mut GpuBuffer, c: Conv1d) {
        conv::record_bwd_weight(&mut self.recording(), x, dy, dw, dbias, c)
    }

    fn attention_fwd(
        &self,
        q: &GpuBuffer,
        k: &GpuBuffer,
        v: &GpuBuffer,
        out: &mut GpuBuffer,
        p: &mut GpuBuffer,
        a: Attention,
    ) {
        attention::record_fwd(&mut self.recording(), q, k, v, out, p, a)
    }

    fn attention_bwd(&self, qkv: Qkv<&GpuBuffer>, p: &GpuBuffer, dout: &GpuBuffer, grads: Qkv<&mut GpuBuffer>, a: Attention) {
        attention::record_bwd(&mut self.recording(), qkv, p, dout, grads, a)
    }

    fn layer_norm_fwd(&self, x: &GpuBuffer, w: &GpuBuffer, b: &GpuBuffer, y: &mut GpuBuffer, st: &mut GpuBuffer, ln: LayerNorm) {
        layer_norm::record_fwd(&mut self.recording(), x, w, b, y, st, ln)
    }

    fn layer_norm_bwd(
        &self,
        x: &GpuBuffer,
        w: &GpuBuffer,
        st: &GpuBuffer,
        dy: &GpuBuffer,
        dx: &mut GpuBuffer,
        dw: &mut GpuBuffer,
        db: &mut GpuBuffer,
        ln: LayerNorm,
    ) {
        layer_norm::record_bwd(&mut self.recording(), x, w, st, dy, dx, dw, db, ln)
    }

    fn gelu_fwd(&self, x: &GpuBuffer, y: &mut GpuBuffer, n: usize) {
        elementwise::record_gelu_fwd(&mut self.recording(), x, y, n)
    }

    fn gelu_bwd(&self, x: &GpuBuffer, dy: &GpuBuffer, dx: &mut GpuBuffer, n: usize) {
        elementwise::record_gelu_bwd(&mut self.recording(), x, dy, dx, n)
    }

    fn rel_attention_fwd(&self, qkv: &GpuBuffer, rel: &GpuBuffer, out: &mut GpuBuffer, p: &mut GpuBuffer, a: RelAttention) {
        rel_attention::record_fwd(&mut self.recording(), qkv, rel, out, p, a)
    }

    fn rel_attention_bwd(
        &self,
        qkv: &GpuBuffer,
        rel: &GpuBuffer,
        p: &GpuBuffer,
        dout: &GpuBuffer,
        dqkv: &mut GpuBuffer,
        drel: &mut GpuBuffer,
        a: RelAttention,
    ) {
        rel_attention::record_bwd(&mut self.recording(), qkv, rel, p, dout, dqkv, drel, a)
    }

    fn rel_attention_decode(&self, qkv: &GpuBuffer, kc: &GpuBuffer, vc: &GpuBuffer, rel: &GpuBuffer, out: &mut GpuBuffer, a: RelDecode) {
        rel_attention::record_decode(&mut self.recording(), qkv, kc, vc, rel, out, a)
    }

    fn lstm_fwd(&self, xw: &GpuBuffer, w_hh: &GpuBuffer, h0: &GpuBuffer, c0: &GpuBuffer, out: LstmSeqs<&mut GpuBuffer>, l: Lstm) {
        lstm::record_fwd(&mut self.recording(), xw, w_hh, h0, c0, out, l)
    }

    fn lstm_bwd(&self, w_hh: &GpuBuffer, saved: LstmSaved<'_, GpuBuffer>, dhs: &GpuBuffer, dxw: &mut GpuBuffer, dw_hh: &mut GpuBuffer, l: Lstm) {
        lstm::record_bwd(&mut self.recording(), w_hh, saved, dhs, dxw, dw_hh, l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend of its own (the kernel variant is per backend), on the default adapter.
    pub(crate) fn own_gpu() -> GpuBackend {
        GpuBackend::new(None).unwrap_or_else(|e| panic!("{e} (lavapipe, from mesa-vulkan-drivers, is enough)"))
    }

    pub(crate) fn upload(g: &GpuBackend, data: &[f32]) -> GpuBuffer {
        let mut b = g.alloc(data.len());
        g.write(&mut b, data);
        b
    }

    pub(crate) fn random(seed: u64, n: usize) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n).map(|_| rng.uniform_range(-1.0, 1.0)).collect()
    }
}
