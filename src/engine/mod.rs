//! The engine: one interface ([`Backend`]), two implementations.
//!
//! * [`cpu::CpuBackend`] runs every operation at once in plain Rust (sgemm from `matrixmultiply`,
//!   rayon across the cores). It is the reference every shader is tested against.
//! * [`gpu::GpuBackend`] records every operation as a compute dispatch into one pending command
//!   encoder; [`Backend::flush`] (or any read) submits them all at once, so a whole training step is
//!   one submission and the host reads back only what it asks for.
//!
//! Models are written once against this trait (see `crate::model`). Buffers are allocated once
//! (parameters, gradients, optimizer moments, and an activation arena sized by batch and window)
//! and reused every step. Every operation takes its sizes explicitly (the ops with many sizes as
//! one struct of [`args`]); a buffer may be longer than the sizes need (an arena sized for batch
//! 128 serves batch 1), never shorter — each op has one contract in [`contract`], which both
//! backends call before they run and whose panic names the op, the buffer and the sizes, so a
//! kernel can trust its inputs.
//!
//! Layouts are PyTorch's, row-major: Linear weight `[out, in]`, Conv1d weight `[out, in, K]`,
//! conv activations `[batch, channels, time]`, LSTM weights `[4H, in]` with gate blocks i, f, g, o.

pub mod arena;
pub mod args;
pub mod contract;
pub mod cpu;
pub mod dropout;
pub mod gpu;
pub mod nade;
pub mod optim;
pub mod roll;

pub use args::{
    Act, AdamParams, AdamStep, Attention, Bag, Bce, Conv1d, LayerNorm, Lstm, LstmSaved, LstmSeqs, MatMul, Qkv, RelAttention, RelDecode,
    Strided, Xent,
};
pub use dropout::{DropMask, Dropout};
pub use arena::Param;
pub use optim::Adam;

/// The operations every model is built from. Inputs are `&`, outputs `&mut`; an output is
/// overwritten unless the operation says it accumulates. Lengths are in elements.
pub trait Backend {
    /// Float storage: f32, or f16 on the GPU backend at `--precision f16` (values cross the
    /// trait as f32 either way).
    type Buf;
    /// u32 storage (token ids, targets).
    type Ids;

    /// A human-readable name: "cpu (2 threads)", or the adapter's name.
    fn name(&self) -> String;

    /// The largest buffer, in bytes, one storage binding holds (the GPU adapter's limit); `None`
    /// where there is none but memory itself. Sizes are checked against it before allocating.
    fn max_buffer_bytes(&self) -> Option<u64> {
        None
    }

    // ---- memory -------------------------------------------------------------------------------
    /// A zero-filled buffer of `len` f32.
    fn alloc(&self, len: usize) -> Self::Buf;
    /// A zero-filled buffer of `len` values stored as f32 whatever the backend's precision: for
    /// what must keep f32's range and mantissa (optimizer moments, loss sums). The default is
    /// [`Backend::alloc`], which is f32 on every backend but the GPU one at `--precision f16`.
    fn alloc_f32(&self, len: usize) -> Self::Buf {
        self.alloc(len)
    }
    /// A zero-filled buffer of `len` u32.
    fn alloc_ids(&self, len: usize) -> Self::Ids;
    /// A view of `len` elements of `buf` from element `offset`, sharing `buf`'s storage: every
    /// operation reads and writes it as if it were a buffer of its own (what the parameter arenas
    /// of [`optim`] are made of). `offset` must be a multiple of [`Backend::view_align`] and the
    /// view must lie inside `buf` (panics otherwise). `None` where a backend has no views (both of
    /// etude's have them): each parameter then keeps a buffer of its own.
    ///
    /// # Safety
    /// Overlapping views are for use one at a time: while the view lives, it and any buffer or
    /// view whose elements overlap it must not be accessed at the same time when either access
    /// writes (passed to one operation together, borrowed as slices at once, or used from two
    /// threads). On the CPU the storage is host memory that every operation borrows as a slice
    /// (see [`cpu::buf`]); the arenas' tensor views are disjoint, and their whole-arena views are
    /// used only by the bookkeeping ops.
    unsafe fn view(&self, buf: &Self::Buf, offset: usize, len: usize) -> Option<Self::Buf> {
        let _ = (buf, offset, len);
        None
    }
    /// The alignment, in elements, of a view's offset, valid for every storage precision (on the
    /// GPU: the adapter's `min_storage_buffer_offset_alignment` in f16 elements).
    fn view_align(&self) -> usize {
        1
    }
    /// Copy `src` into the start of `dst`.
    fn write(&self, dst: &mut Self::Buf, src: &[f32]);
    /// Copy `src` into the start of `dst`.
    fn write_ids(&self, dst: &mut Self::Ids, src: &[u32]);
    /// The first `len` values of `src`. Waits for all recorded work.
    fn read(&self, src: &Self::Buf, len: usize) -> Vec<f32>;
    /// Submit all recorded work (GPU); nothing to do on the CPU.
    fn flush(&self);

    // ---- element-wise -------------------------------------------------------------------------
    /// `x[0..n] = value`.
    fn fill(&self, x: &mut Self::Buf, n: usize, value: f32);
    /// `y[0..n] += x[0..n]`.
    fn add(&self, x: &Self::Buf, y: &mut Self::Buf, n: usize);
    /// Strided copy of a `rows x cols` block (see [`Strided`]):
    /// `dst[dst_off + r*dst_stride + c] (+)= src[src_off + r*src_stride + c]` (`+=` when `accumulate`).
    fn copy_strided(&self, src: &Self::Buf, dst: &mut Self::Buf, s: Strided);
    /// `y[0..n] = act(x[0..n])`.
    fn act_fwd(&self, act: Act, x: &Self::Buf, y: &mut Self::Buf, n: usize);
    /// `dx[0..n] = dy * act'(x)`, written from the forward output `y`.
    fn act_bwd(&self, act: Act, y: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf, n: usize);
    /// Gated unit over `a [batch, 2r, t]`: `z [batch, r, t] = tanh(a[:, :r]) * sigmoid(a[:, r:])`.
    fn gated_fwd(&self, a: &Self::Buf, z: &mut Self::Buf, batch: usize, r: usize, t: usize);
    /// Backward of [`Backend::gated_fwd`]: `da [batch, 2r, t]` from `a` and `dz [batch, r, t]`.
    fn gated_bwd(&self, a: &Self::Buf, dz: &Self::Buf, da: &mut Self::Buf, batch: usize, r: usize, t: usize);
    /// Inverted dropout in place: `x[i] = keep(i) ? x[i] * scale : 0` for `i < n`, `keep` and
    /// `scale` from `mask` (see [`dropout`]). Linear and diagonal: the backward is the same call on
    /// the gradient with the same mask.
    fn dropout(&self, x: &mut Self::Buf, n: usize, mask: DropMask);
    /// `y [batch, cols, rows] = transpose of x [batch, rows, cols]` for each batch item.
    fn transpose(&self, x: &Self::Buf, y: &mut Self::Buf, batch: usize, rows: usize, cols: usize);

    // ---- dense --------------------------------------------------------------------------------
    /// See [`MatMul`].
    fn matmul(&self, a: &Self::Buf, b: &Self::Buf, c: &mut Self::Buf, mm: MatMul);
    /// With `on`, every later [`Backend::matmul`] computes each row of its product alone: row `i`
    /// of C by the same operations whatever the number of rows, so a row's values depend on its own
    /// row of A only, bit for bit. Generation turns it on, so that a batch of pieces equals the
    /// same pieces generated one by one; training leaves it off (its blocked products are faster
    /// for many rows). The CPU backend's one-row kernel for every row count; a no-op on the GPU,
    /// whose tiled product sums each element in the same order whatever the rows. Calls nest: the
    /// mode stays on until every `true` has had its `false` (two generators alive at once, one
    /// dropped, leave it on for the other).
    fn set_rows_alone(&self, on: bool) {
        let _ = on;
    }
    /// `y[o, c, i] += bias[c]` for `y [outer, channels, inner]` (a Linear: inner = 1; a conv: inner = time).
    fn bias_add(&self, y: &mut Self::Buf, bias: &Self::Buf, outer: usize, channels: usize, inner: usize);
    /// `dbias[c] += sum_{o,i} dy[o, c, i]`: the backward of [`Backend::bias_add`]; accumulates.
    fn bias_grad(&self, dy: &Self::Buf, dbias: &mut Self::Buf, outer: usize, channels: usize, inner: usize);

    // ---- embedding ----------------------------------------------------------------------------
    /// `out[i, :] = table[ids[i], :]` for `i < n`, rows of width `e`.
    fn embedding_fwd(&self, ids: &Self::Ids, table: &Self::Buf, out: &mut Self::Buf, n: usize, e: usize);
    /// `dtable[ids[i], :] += dout[i, :]`; repeated ids accumulate.
    fn embedding_bwd(&self, ids: &Self::Ids, dout: &Self::Buf, dtable: &mut Self::Buf, n: usize, e: usize);

    // ---- loss ---------------------------------------------------------------------------------
    /// Fused, numerically stable softmax cross-entropy over `logits [n, v]` with `targets [n]`
    /// (sizes in [`Xent`]): `dlogits = (softmax(logits) - onehot(target)) * grad_scale`
    /// (`grad_scale = 1/n_total` gives the mean), and per row `stats[2i] = -log softmax[target]`,
    /// `stats[2i+1] = 1` when the argmax (first maximum) is the target, else 0. The host sums
    /// `stats` when it wants the loss.
    fn softmax_xent(&self, logits: &Self::Buf, targets: &Self::Ids, dlogits: &mut Self::Buf, stats: &mut Self::Buf, x: Xent);

    // ---- optimizer ----------------------------------------------------------------------------
    /// `acc[0] += sum(x[0..n]^2)` (global gradient norm, one tensor at a time).
    fn sum_squares(&self, x: &Self::Buf, n: usize, acc: &mut Self::Buf);
    /// `scale[0] = min(1, max_norm / (sqrt(acc[0]) + 1e-6))`; `max_norm <= 0` means no clipping (scale 1).
    fn clip_scale(&self, acc: &Self::Buf, max_norm: f32, scale: &mut Self::Buf);
    /// `p[0..n] *= factor`: AdamW's decoupled weight decay, `factor = 1 - lr * decay`, applied to a
    /// parameter before its Adam step ([`Backend::adamw`] fuses both) (PyTorch `torch.optim.AdamW`'s order).
    fn decay(&self, p: &mut Self::Buf, n: usize, factor: f32);

    /// The global gradient norm and the clip scale over one buffer (a gradient arena) in one go:
    /// `acc[0] = sum(g[0..n]^2)` (overwritten, not accumulated), then `scale[0]` as
    /// [`Backend::clip_scale`] makes it from `acc`. Two dispatches on the GPU (per-workgroup
    /// partial sums, then one workgroup that adds them and writes the scale), one pass on the CPU.
    fn grad_norm_clip(&self, g: &Self::Buf, n: usize, max_norm: f32, acc: &mut Self::Buf, scale: &mut Self::Buf);

    /// One Adam(W) step on `p[0..n]` with gradient `g * scale[0]` (see [`AdamStep`], [`AdamParams`]):
    /// `p *= factor` (stored at the buffer's precision, as [`Backend::decay`] stores it), then
    /// `g' = g*s + wd*p; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;`
    /// `p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`.
    /// `factor = 1` ([`AdamStep::adam`]) is plain Adam, bit for bit; PyTorch `torch.optim.AdamW`
    /// when `factor = 1 - lr * decay` and `hp.weight_decay = 0`.
    fn adamw(&self, p: &mut Self::Buf, g: &Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf, scale: &Self::Buf, step: AdamStep);

    // ---- convolution (see [`Conv1d`]) ---------------------------------------------------------
    /// `y [batch, cout, time]` from `x [batch, cin, time]`, `w [cout, cin, k]`, `bias [cout]`.
    fn conv1d_fwd(&self, x: &Self::Buf, w: &Self::Buf, bias: &Self::Buf, y: &mut Self::Buf, c: Conv1d);
    /// `dx [batch, cin, time] (+)= d/dx` from `dy [batch, cout, time]` (`+=` when `accumulate`).
    fn conv1d_bwd_input(&self, dy: &Self::Buf, w: &Self::Buf, dx: &mut Self::Buf, c: Conv1d, accumulate: bool);
    /// `dw [cout, cin, k] += d/dw`, `dbias [cout] += d/dbias`; both accumulate.
    fn conv1d_bwd_weight(&self, x: &Self::Buf, dy: &Self::Buf, dw: &mut Self::Buf, dbias: &mut Self::Buf, c: Conv1d);

    // ---- attention (see [`Attention`]) -------------------------------------------------------
    /// Writes `out [batch, heads*dim, time]` and the probabilities `p [batch, heads, time, time]`
    /// (zeros where masked; what the backward needs) from `q, k, v [batch, heads*dim, time]`.
    fn attention_fwd(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        out: &mut Self::Buf,
        p: &mut Self::Buf,
        a: Attention,
    );
    /// Backward of [`Backend::attention_fwd`] from `dout` and the saved `p`: writes (overwrites,
    /// never accumulates) `grads` = `dq, dk, dv [batch, heads*dim, time]`:
    ///
    /// ```text
    /// dv[j]    = sum_t p[t,j] dout[t]
    /// dP[t,j]  = dout[t] . v[j];   dS[t,j] = p[t,j] * (dP[t,j] - sum_j' p[t,j'] dP[t,j'])
    /// dq[t]    = scale * sum_j dS[t,j] k[j-shift]
    /// dk[i]    = scale * sum_t dS[t,i+shift] q[t]          (0 for i >= time - shift)
    /// ```
    fn attention_bwd(&self, qkv: Qkv<&Self::Buf>, p: &Self::Buf, dout: &Self::Buf, grads: Qkv<&mut Self::Buf>, a: Attention);

    // ---- the Transformer's ops (see [`LayerNorm`], [`RelAttention`], [`RelDecode`]) ----------
    /// `y [rows, width]` = LayerNorm of `x` with `weight, bias [width]`; writes `stats [rows, 2]`
    /// = `(mean, rstd)` per row for the backward. `stats` holds f32 at every precision (allocate
    /// it with [`Backend::alloc_f32`]: a mean rounded to f16 would shift every `xhat` of its row).
    fn layer_norm_fwd(&self, x: &Self::Buf, weight: &Self::Buf, bias: &Self::Buf, y: &mut Self::Buf, stats: &mut Self::Buf, ln: LayerNorm);
    /// Backward of [`Backend::layer_norm_fwd`] from `dy` and the saved `stats`; all three
    /// gradients **accumulate** (`dx` is usually a residual stream's gradient):
    ///
    /// ```text
    /// xhat = (x - mean) * rstd;   g = dy * weight
    /// dx += rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))
    /// dweight += sum_rows dy * xhat;   dbias += sum_rows dy
    /// ```
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_bwd(
        &self,
        x: &Self::Buf,
        weight: &Self::Buf,
        stats: &Self::Buf,
        dy: &Self::Buf,
        dx: &mut Self::Buf,
        dweight: &mut Self::Buf,
        dbias: &mut Self::Buf,
        ln: LayerNorm,
    );
    /// `y[0..n] = gelu(x)` in its tanh form (PyTorch `F.gelu(x, approximate="tanh")`):
    /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    fn gelu_fwd(&self, x: &Self::Buf, y: &mut Self::Buf, n: usize);
    /// `dx[0..n] = dy * gelu'(x)` (written, not accumulated), from the forward's input `x`.
    fn gelu_bwd(&self, x: &Self::Buf, dy: &Self::Buf, dx: &mut Self::Buf, n: usize);
    /// Writes `out [batch, time, heads*dim]` and the probabilities `p [batch, heads, time, time]`
    /// (zeros above the diagonal) from `qkv [batch, time, 3*heads*dim]` and `rel [heads, window,
    /// dim]`; see [`RelAttention`].
    fn rel_attention_fwd(&self, qkv: &Self::Buf, rel: &Self::Buf, out: &mut Self::Buf, p: &mut Self::Buf, a: RelAttention);
    /// Backward of [`Backend::rel_attention_fwd`] from `dout` and the saved `p`: **writes**
    /// `dqkv [batch, time, 3*heads*dim]` and **accumulates** `drel [heads, window, dim]` (rows
    /// `time..window` untouched). With `dS = scale * p * (dP - rowsum(p * dP))`, `dP = dout v^T`:
    ///
    /// ```text
    /// dq_i = sum_j dS[i,j] (k_j + rel[h, i-j]);   dk_j = sum_i dS[i,j] q_i;   dv_j = sum_i p[i,j] dout_i
    /// drel[h, r] += sum_{b, i >= r} dS[b,h,i,i-r] q_i
    /// ```
    #[allow(clippy::too_many_arguments)]
    fn rel_attention_bwd(
        &self,
        qkv: &Self::Buf,
        rel: &Self::Buf,
        p: &Self::Buf,
        dout: &Self::Buf,
        dqkv: &mut Self::Buf,
        drel: &mut Self::Buf,
        a: RelAttention,
    );
    /// One generation step with a key/value cache ([`RelDecode`]): `out [batch, heads*dim]` from
    /// the newest row's q in `qkv [batch, 3*heads*dim]`, the ring buffers `kcache, vcache [batch,
    /// window, heads*dim]` (the newest position already written) and `rel [heads, window, dim]`.
    fn rel_attention_decode(
        &self,
        qkv: &Self::Buf,
        kcache: &Self::Buf,
        vcache: &Self::Buf,
        rel: &Self::Buf,
        out: &mut Self::Buf,
        a: RelDecode,
    );

    // ---- LSTM recurrence (see [`Lstm`]) -------------------------------------------------------
    /// The recurrence of one layer, after the input projection has been done as one matrix product:
    /// `xw [batch, time, 4H] = x W_ih^T + b_ih + b_hh`. For each step t:
    /// `gates = xw[:, t] + h_{t-1} W_hh^T`; `i,f,o = sigmoid`, `g = tanh`;
    /// `c_t = f c_{t-1} + i g`; `h_t = o tanh(c_t)`, starting from `h0, c0 [batch, H]`.
    /// Writes `out` = `hs, cs [batch, time, H]` and the activated gates `gates [batch, time, 4H]`
    /// (what the backward needs, as [`LstmSaved`]).
    fn lstm_fwd(&self, xw: &Self::Buf, w_hh: &Self::Buf, h0: &Self::Buf, c0: &Self::Buf, out: LstmSeqs<&mut Self::Buf>, l: Lstm);
    /// Backpropagation through time of [`Backend::lstm_fwd`] (`saved`: its `h0, c0` and what it
    /// wrote): from `dhs [batch, time, H]` (the
    /// gradient reaching every output h_t from above) writes `dxw [batch, time, 4H]` (the gradient of
    /// the pre-activation gates, which is also that of `xw`, `b_ih` and `b_hh`) and accumulates
    /// `dw_hh [4H, H] += sum_t dgates_t^T h_{t-1}`. The gradients of the initial state are not needed
    /// (training starts every window from zero state).
    fn lstm_bwd(
        &self,
        w_hh: &Self::Buf,
        saved: LstmSaved<'_, Self::Buf>,
        dhs: &Self::Buf,
        dxw: &mut Self::Buf,
        dw_hh: &mut Self::Buf,
        l: Lstm,
    );
}

/// A buffer with a shape: what models hold. The shape is checked when the tensor is made and
/// when data are written into it.
pub struct Tensor<B: Backend> {
    pub buf: B::Buf,
    pub shape: Vec<usize>,
}

impl<B: Backend> Tensor<B> {
    /// A zero-filled tensor.
    pub fn zeros(b: &B, shape: &[usize]) -> Self {
        Tensor { buf: b.alloc(shape.iter().product()), shape: shape.to_vec() }
    }

    /// A tensor holding `data`, whose length must equal the shape's product.
    pub fn from_slice(b: &B, shape: &[usize], data: &[f32]) -> Self {
        let mut t = Self::zeros(b, shape);
        t.set(b, data);
        t
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Overwrite the whole tensor.
    pub fn set(&mut self, b: &B, data: &[f32]) {
        assert_eq!(data.len(), self.len(), "tensor of shape {:?} given {} values", self.shape, data.len());
        b.write(&mut self.buf, data);
    }

    /// The whole tensor on the host.
    pub fn to_vec(&self, b: &B) -> Vec<f32> {
        b.read(&self.buf, self.len())
    }
}
