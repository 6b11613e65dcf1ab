//! The wgpu backend (issue 3): adapter choice, pipeline cache, buffers, one submission per step.
//!
//! # How work is recorded
//!
//! Every [`Backend`] operation checks its buffer lengths (panicking with the operation's name, as
//! the CPU backend does), then *records* one or more compute dispatches; nothing runs until
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
//! 2. Declare it once: `const MY: Shader = Shader { name: "my", source: include_str!("../../../shaders/my.wgsl") };`
//! 3. Record: `gpu.dispatch(&MY, "entry", &[&x, &w, &y], &[n as u32, f(scale)], grid_1d(n, 256))`,
//!    after checking lengths with `check_len`. `f` turns an `f32` into the word the shader reads
//!    as `f32`; `grid_1d` / `grid_groups` / `grid_2d` give workgroup counts within the
//!    65535-per-dimension limit (see `grid_1d`'s doc for the flat index the shader rebuilds). The
//!    words fill the `Params` struct's fields in order; unused trailing fields read 0.
//! 4. Temporary storage an op needs between its own dispatches: `GpuBackend::with_scratch` with a key
//!    of your own (kept and reused between calls).
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
//! `GpuBackend::pipeline` exposes the pipeline cache itself (created on first use, one pipeline per
//! (shader, entry point)) for code that wants to inspect it; `dispatch` is all a new op needs.

mod attention;
mod conv;
mod lstm;
mod roll;
mod profile;

pub use profile::{by_kernel, DispatchTime, Timestamps};

use super::{Act, AdamParams, Attention, Backend, Conv1d, DropMask, Lstm, MatMul};
use parking_lot::ReentrantMutex;
use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes reserved per dispatch in the params arena (the largest uniform offset alignment any
/// adapter asks for).
pub(crate) const PARAM_SLOT: usize = 256;
/// Most 32-bit words of parameters one dispatch may carry.
pub(crate) const MAX_PARAM_WORDS: usize = PARAM_SLOT / 4;
/// A matrix product whose 64x64-tile grid has fewer workgroups than this uses 32x32 tiles (four
/// times as many workgroups): about the number of compute units of a large GPU.
const SMALL_MATMUL_BELOW: usize = 128;
/// Split-K: each range along k gets at least this many rows, so that a partial is worth its
/// write and its read in the reduction...
const SPLIT_MIN_K: usize = 512;
/// ...and there are at most this many ranges.
const SPLIT_MAX: usize = 32;

/// Ranges along k for a product with `tiles` 64x64 output tiles: enough for about
/// `SMALL_MATMUL_BELOW` workgroups, each range at least `SPLIT_MIN_K` long; 1 = no split.
fn matmul_splits(tiles: usize, k: usize) -> usize {
    if tiles >= SMALL_MATMUL_BELOW {
        return 1;
    }
    SMALL_MATMUL_BELOW.div_ceil(tiles.max(1)).min(k / SPLIT_MIN_K).clamp(1, SPLIT_MAX)
}
/// Most floats of scratch `embedding_bwd` uses for its per-run partial tables (64 MiB).
const EMBEDDING_SCRATCH: usize = 16 << 20;
/// Most workgroups of `grad_norm_clip`'s first pass (partial sums); its second pass, one
/// workgroup of 256, adds this many partials.
const NORM_GROUPS: usize = 256;
/// Bound on the bind-group cache (entries of live buffers are kept up to this many).
const MAX_CACHED_BIND_GROUPS: usize = 1 << 16;
/// Most workgroups in one dimension of a dispatch (WebGPU's default and lavapipe's limit).
pub(crate) const MAX_GROUPS_PER_DIM: u32 = 65535;

/// The static loss scale of f16 training (see the module documentation). 1024 lifts a softmax
/// gradient of `1/(B*T*V)` (about 4e-7 at B128, T64, V300) to about 4e-4, a normal f16 number,
/// while a logit gradient stays at most `1024 / rows`, far from f16's largest value (65504).
pub const F16_LOSS_SCALE: f32 = 1024.0;

/// How the GPU backend stores the floats of [`Backend::alloc`] buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats everywhere (the default).
    #[default]
    F32,
    /// Weights, gradients and activations as f16 (needs the adapter's `SHADER_F16`), arithmetic
    /// and sums in f32, Adam's moments in f32.
    F16,
}

impl Precision {
    /// `"f32"` or `"f16"`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, fm: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fm.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            _ => Err(format!("unknown precision {s:?} (f32 or f16)")),
        }
    }
}

/// The element type of one GPU buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elem {
    F32,
    F16,
    /// Token ids.
    U32,
}

impl Elem {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Elem::F16 => 2,
            Elem::F32 | Elem::U32 => 4,
        }
    }
}

/// Which kernels the backend records where it has a variant for software renderers (the LSTM
/// recurrence, the matrix product; see `shaders/lstm.wgsl`, `shaders/matmul.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelVariant {
    /// By adapter: the software variants on software renderers (lavapipe), else the portable ones.
    Auto,
    /// The portable kernels, tuned for real GPUs (workgroup-memory tiles, many workgroups).
    Portable,
    /// The software-renderer kernels (register blocks, few workgroups), where their shape
    /// conditions hold (H <= 128 for the LSTM; m, k, n multiples of 4 for the product).
    Software,
}

impl GpuBackend {
    /// Whether the software-renderer variants are in use (see [`KernelVariant`]).
    pub(crate) fn software_kernels(&self) -> bool {
        match self.kernel_variant() {
            KernelVariant::Auto => self.is_software(),
            KernelVariant::Portable => false,
            KernelVariant::Software => true,
        }
    }
}

/// A WGSL source file: its name (unique: the pipeline cache key, with the entry point) and text.
pub(crate) struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

pub(crate) const ELEMENTWISE: Shader =
    Shader { name: "elementwise", source: include_str!("../../../shaders/elementwise.wgsl") };
pub(crate) const MATMUL: Shader = Shader { name: "matmul", source: include_str!("../../../shaders/matmul.wgsl") };
pub(crate) const BIAS: Shader = Shader { name: "bias", source: include_str!("../../../shaders/bias.wgsl") };
pub(crate) const EMBEDDING: Shader =
    Shader { name: "embedding", source: include_str!("../../../shaders/embedding.wgsl") };
pub(crate) const SOFTMAX_XENT: Shader =
    Shader { name: "softmax_xent", source: include_str!("../../../shaders/softmax_xent.wgsl") };
pub(crate) const OPTIM: Shader = Shader { name: "optim", source: include_str!("../../../shaders/optim.wgsl") };
pub(crate) const DROPOUT: Shader = Shader { name: "dropout", source: include_str!("../../../shaders/dropout.wgsl") };

/// The bits of an `f32` parameter, as the shader's `f32` field reads them.
pub(crate) fn f(x: f32) -> u32 {
    x.to_bits()
}

/// Workgroup counts for `threads` invocations in workgroups of `wg` (a flat 1-D problem), spread over
/// x and y so that neither exceeds 65535. In WGSL the flat index is
/// `(wid.y * nwg.x + wid.x) * WG + lid.x` (with `@builtin(num_workgroups) nwg`), and invocations with
/// an index past the problem size must return.
pub(crate) fn grid_1d(threads: usize, wg: u32) -> [u32; 3] {
    let groups = threads.div_ceil(wg as usize);
    grid_groups(groups)
}

/// Workgroup counts for `groups` workgroups, flat index `wid.y * nwg.x + wid.x`, split over x and y.
pub(crate) fn grid_groups(groups: usize) -> [u32; 3] {
    if groups == 0 {
        return [0, 0, 0];
    }
    let x = groups.min(MAX_GROUPS_PER_DIM as usize);
    let y = groups.div_ceil(x);
    assert!(y <= MAX_GROUPS_PER_DIM as usize, "dispatch of {groups} workgroups is too large");
    [x as u32, y as u32, 1]
}

/// Workgroup counts for a 2-D problem of `cols x rows` threads in `wx x wy` workgroups.
pub(crate) fn grid_2d(cols: usize, rows: usize, wx: u32, wy: u32) -> [u32; 3] {
    let gx = cols.div_ceil(wx as usize);
    let gy = rows.div_ceil(wy as usize);
    assert!(
        gx <= MAX_GROUPS_PER_DIM as usize && gy <= MAX_GROUPS_PER_DIM as usize,
        "2-D dispatch of {gx} x {gy} workgroups exceeds 65535 per dimension"
    );
    [gx as u32, gy as u32, 1]
}

/// Panics unless `buf` holds at least `needed` elements: the length check every op makes before
/// recording, so that a shader can trust its indices.
pub(crate) fn check_len(op: &str, what: &str, buf: &GpuBuffer, needed: usize) {
    assert!(buf.len >= needed, "{op}: buffer `{what}` holds {} elements, the operation needs {needed}", buf.len);
}

/// A size as the 32-bit word the shaders read; panics when it does not fit.
pub(crate) fn u(x: usize) -> u32 {
    u32::try_from(x).expect("size does not fit in 32 bits")
}

/// A GPU buffer of f32, f16 or u32 elements (the backend uses this one type for values and ids; see
/// [`Elem`]). Dropping it releases the memory once no recorded work (and no view) uses it.
///
/// It may also be a *view*: `len` elements starting `offset` bytes into another buffer's storage
/// (see [`Backend::view`]; the parameter arenas of `crate::engine::optim`). A view shares its
/// parent's id; ops bind it as `BufferBinding { offset, size }`, reads and writes start at its
/// offset, so every op works on a view exactly as on a buffer of its own.
pub struct GpuBuffer {
    buffer: Arc<wgpu::Buffer>,
    len: usize,
    id: u64,
    elem: Elem,
    /// Where the elements start in `buffer`, in bytes (0 but for views; a multiple of the
    /// adapter's `min_storage_buffer_offset_alignment`).
    offset: u64,
}

impl GpuBuffer {
    /// Length in elements.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The element type.
    pub fn elem(&self) -> Elem {
        self.elem
    }
    /// The underlying wgpu buffer (its byte size may exceed `len` elements: whole 4-byte words, at
    /// least one; for a view, the whole arena: the elements start at [`GpuBuffer::offset`]).
    pub fn raw(&self) -> &wgpu::Buffer {
        &self.buffer
    }
    /// Where the elements start in [`GpuBuffer::raw`], in bytes (0 but for a view).
    pub fn offset(&self) -> u64 {
        self.offset
    }
    /// The bytes a binding of this buffer covers: its elements rounded up to whole 4-byte words
    /// (at least one), as allocated.
    fn binding_bytes(&self) -> u64 {
        (self.len * self.elem.size()).div_ceil(4).max(1) as u64 * 4
    }
}

/// Panics unless `buf` holds f32 elements: the bindings a shader declares `array<f32>` whatever the
/// precision (optimizer moments, loss statistics), which callers allocate with `alloc_f32`.
pub(crate) fn check_f32(op: &str, what: &str, buf: &GpuBuffer) {
    assert!(
        buf.elem != Elem::F16,
        "{op}: buffer `{what}` must hold f32 (allocate it with alloc_f32), it holds f16"
    );
}

/// Panics unless the float buffers of an op whose storage is all `elem` share one element type.
pub(crate) fn check_same_elem(op: &str, bufs: &[(&str, &GpuBuffer)]) {
    let f16 = |b: &GpuBuffer| b.elem == Elem::F16;
    if let Some((first, b0)) = bufs.first() {
        for (what, b) in &bufs[1..] {
            assert!(
                f16(b) == f16(b0),
                "{op}: buffers `{first}` ({:?}) and `{what}` ({:?}) differ in precision",
                b0.elem,
                b.elem
            );
        }
    }
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, fm: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(fm, "GpuBuffer(#{}, {} {:?} elements", self.id, self.len, self.elem)?;
        if self.offset > 0 {
            write!(fm, " at byte {}", self.offset)?;
        }
        write!(fm, ")")
    }
}

// ---- adapters -------------------------------------------------------------------------------

/// What `etude devices` prints about one adapter.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    /// Position in [`list_adapters`]' order (what `--device N` selects).
    pub index: usize,
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub driver_info: String,
    /// `SHADER_F16` is available.
    pub shader_f16: bool,
    /// `TIMESTAMP_QUERY` is available.
    pub timestamp_query: bool,
    pub max_workgroup_storage: u32,
    pub max_invocations_per_workgroup: u32,
    pub max_storage_binding: u64,
    pub max_buffer: u64,
}

impl std::fmt::Display for AdapterReport {
    /// One line: `0: NAME (Vulkan, DiscreteGpu; driver ...; f16 yes, timestamps yes; workgroup 32 KiB / 1024 invocations; storage binding 128 MiB, buffer 2048 MiB)`.
    fn fmt(&self, fm: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        write!(
            fm,
            "{}: {} ({:?}, {:?}; driver {} {}; f16 {}, timestamps {}; workgroup {} KiB / {} invocations; \
             storage binding {} MiB, buffer {} MiB)",
            self.index,
            self.name,
            self.backend,
            self.device_type,
            self.driver,
            self.driver_info,
            yes(self.shader_f16),
            yes(self.timestamp_query),
            self.max_workgroup_storage / 1024,
            self.max_invocations_per_workgroup,
            self.max_storage_binding >> 20,
            self.max_buffer >> 20
        )
    }
}

impl AdapterReport {
    /// Software rasterisers / CPU implementations (lavapipe, SwiftShader, WARP).
    pub fn is_software(&self) -> bool {
        is_software_info(self.device_type, &self.name)
    }
}

fn is_software_info(device_type: wgpu::DeviceType, name: &str) -> bool {
    let n = name.to_lowercase();
    device_type == wgpu::DeviceType::Cpu
        || ["llvmpipe", "lavapipe", "swiftshader", "warp"].iter().any(|s| n.contains(s))
}

/// The message when no adapter exists.
pub const NO_ADAPTER: &str = "no GPU adapter found: install a Vulkan driver (on Debian/Ubuntu: apt-get install \
mesa-vulkan-drivers for the software one), or use --backend cpu";

/// Vulkan, Metal and DX12 only (GL is excluded: slow to compile, weaker compute).
const BACKENDS: wgpu::Backends =
    wgpu::Backends::VULKAN.union(wgpu::Backends::METAL).union(wgpu::Backends::DX12);

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
    desc.backends = BACKENDS;
    wgpu::Instance::new(desc)
}

fn report(index: usize, a: &wgpu::Adapter) -> AdapterReport {
    let info = a.get_info();
    let lim = a.limits();
    let feat = a.features();
    AdapterReport {
        index,
        name: info.name,
        backend: info.backend,
        device_type: info.device_type,
        driver: info.driver,
        driver_info: info.driver_info,
        shader_f16: feat.contains(wgpu::Features::SHADER_F16),
        timestamp_query: feat.contains(wgpu::Features::TIMESTAMP_QUERY),
        max_workgroup_storage: lim.max_compute_workgroup_storage_size,
        max_invocations_per_workgroup: lim.max_compute_invocations_per_workgroup,
        max_storage_binding: lim.max_storage_buffer_binding_size,
        max_buffer: lim.max_buffer_size,
    }
}

/// Every adapter wgpu finds on the Vulkan, Metal and DX12 backends, in a stable order.
pub fn list_adapters() -> Vec<AdapterReport> {
    let inst = instance();
    let adapters = pollster::block_on(inst.enumerate_adapters(BACKENDS));
    adapters.iter().enumerate().map(|(i, a)| report(i, a)).collect()
}

/// Which adapter etude uses. `want` (from `--device` or `ETUDE_DEVICE`) is an index into `adapters`
/// or a case-insensitive substring of an adapter's name; without it, the first discrete GPU, else
/// integrated, else virtual, else software/CPU.
pub fn pick_adapter_index(adapters: &[AdapterReport], want: Option<&str>) -> Result<usize, String> {
    if adapters.is_empty() {
        return Err(NO_ADAPTER.to_string());
    }
    let names = || adapters.iter().map(|a| format!("{}: {}", a.index, a.name)).collect::<Vec<_>>().join("; ");
    if let Some(w) = want.map(str::trim).filter(|w| !w.is_empty()) {
        if let Ok(i) = w.parse::<usize>() {
            return adapters
                .iter()
                .position(|a| a.index == i)
                .ok_or_else(|| format!("no adapter with index {i} (adapters: {})", names()));
        }
        let lw = w.to_lowercase();
        return adapters
            .iter()
            .position(|a| a.name.to_lowercase().contains(&lw))
            .ok_or_else(|| format!("no adapter whose name contains {w:?} (adapters: {})", names()));
    }
    let rank = |a: &AdapterReport| match a.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        _ if a.is_software() => 4,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let best = adapters.iter().enumerate().min_by_key(|(i, a)| (rank(a), *i)).map(|(i, _)| i);
    Ok(best.unwrap_or(0))
}

// ---- the backend ----------------------------------------------------------------------------

/// A compute pipeline and the layout of its bind group 0.
pub(crate) struct Pipe {
    id: usize,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

#[derive(Default)]
struct Pipelines {
    modules: HashMap<(&'static str, Precision), wgpu::ShaderModule>,
    pipes: HashMap<(&'static str, &'static str, Precision), Arc<Pipe>>,
}

/// The device features `precision` needs from an adapter `name` offering `offered`; f16 without
/// `SHADER_F16` is a one-line error.
fn precision_features(precision: Precision, offered: wgpu::Features, name: &str) -> Result<wgpu::Features, String> {
    match precision {
        Precision::F32 => Ok(wgpu::Features::empty()),
        Precision::F16 if offered.contains(wgpu::Features::SHADER_F16) => Ok(wgpu::Features::SHADER_F16),
        Precision::F16 => Err(format!(
            "--precision f16: the GPU adapter {name} does not support half-precision shaders (SHADER_F16); \
             use --precision f32"
        )),
    }
}

/// The WGSL a shader compiles from at `precision`: its source with `alias elem = f32;` (or
/// `enable f16;` and `alias elem = f16;`) inserted after its own leading directives.
pub(crate) fn variant_source(source: &str, precision: Precision) -> String {
    // Directives (`enable`, `requires`, `diagnostic`) must precede every declaration.
    let mut at = 0;
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        offset += line.len();
        let t = line.trim_start();
        if ["enable ", "requires ", "diagnostic"].iter().any(|d| t.starts_with(d)) {
            at = offset;
        }
    }
    let alias = match precision {
        Precision::F32 => "alias elem = f32;\n",
        Precision::F16 => "enable f16;\nalias elem = f16;\n",
    };
    let (head, tail) = source.split_at(at);
    let sep = if head.is_empty() || head.ends_with('\n') { "" } else { "\n" };
    format!("{head}{sep}{alias}{tail}")
}

/// One buffer (or view) a recorded dispatch binds: the buffer's id, its byte range, the buffer.
struct Bound {
    id: u64,
    offset: u64,
    bytes: u64,
    buffer: Arc<wgpu::Buffer>,
}

/// One recorded dispatch.
struct Recorded {
    pipe: Arc<Pipe>,
    /// (shader, entry point): what a timestamp profile reports it as.
    label: (&'static str, &'static str),
    buffers: Vec<Bound>,
    slot: u32,
    groups: [u32; 3],
}

#[derive(Hash, PartialEq, Eq)]
struct BindKey {
    pipe: usize,
    slot: u32,
    /// (id, byte offset, bytes) of each bound buffer: views of one arena share its id.
    ids: Vec<(u64, u64, u64)>,
}

struct Recorder {
    pending: Vec<Recorded>,
    params: Vec<u8>,
    arena: Option<wgpu::Buffer>,
    arena_cap: usize,
    binds: HashMap<BindKey, (wgpu::BindGroup, Vec<Arc<wgpu::Buffer>>)>,
    binds_after_sweep: usize,
    staging: Option<wgpu::Buffer>,
    staging_cap: u64,
    /// Timestamp profiling state (see [`GpuBackend::set_profiling`]): `None` when off.
    profiler: Option<profile::Profiler>,
}

/// The wgpu backend. All methods take `&self` (the recorder sits behind a mutex), so one backend
/// may be shared between threads; work is still recorded and submitted in call order.
pub struct GpuBackend {
    precision: Precision,
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    pipelines: Mutex<Pipelines>,
    rec: Mutex<Recorder>,
    scratch: Mutex<HashMap<&'static str, GpuBuffer>>,
    /// Held while an op records the dispatches that share a scratch buffer (see `with_scratch`),
    /// with the keys in use: reentrant, since an op may call another scratch-using op inside (the
    /// LSTM's dW_hh product runs a split matmul on its gathered operand), never for the same key.
    scratch_users: ReentrantMutex<RefCell<Vec<&'static str>>>,
    next_id: AtomicU64,
    dispatches: AtomicU64,
    submissions: AtomicU64,
    /// Which timestamp queries the device was opened with.
    timestamps: Timestamps,
    /// Kernel choice for the LSTM recurrence (`Auto` unless a test forces one).
    kernel_variant: Mutex<KernelVariant>,
}

impl GpuBackend {
    /// Opens the adapter chosen by [`pick_adapter_index`] with `want`, or with the `ETUDE_DEVICE`
    /// environment variable when `want` is `None`, at f32.
    pub fn new(want: Option<&str>) -> Result<GpuBackend, String> {
        Self::with_precision(want, Precision::F32)
    }

    /// [`GpuBackend::new`] storing floats at `precision`; f16 fails, with a one-line message, on
    /// an adapter without `SHADER_F16`.
    pub fn with_precision(want: Option<&str>, precision: Precision) -> Result<GpuBackend, String> {
        let env = std::env::var("ETUDE_DEVICE").ok();
        let want = want.or(env.as_deref());
        let inst = instance();
        let adapters = pollster::block_on(inst.enumerate_adapters(BACKENDS));
        let reports: Vec<AdapterReport> = adapters.iter().enumerate().map(|(i, a)| report(i, a)).collect();
        let index = pick_adapter_index(&reports, want)?;
        let adapter = &adapters[index];
        // The adapter's own limits: the largest storage bindings and buffers, workgroup memory and
        // invocations it offers (WebGPU's defaults are far lower: 128 MiB bindings, 8 storage
        // buffers per stage, 16 KiB workgroup memory).
        let limits = adapter.limits();
        let required_features = precision_features(precision, adapter.features(), &adapter.get_info().name)?;
        // Timestamp queries are requested where offered (they cost nothing until a query is
        // written) so that profiling can be switched on later; see `set_profiling`.
        let timestamps = Timestamps::of(adapter.features());
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("etude"),
            required_features: required_features | timestamps.features(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| format!("cannot open GPU device on {}: {e}", adapter.get_info().name))?;
        Ok(GpuBackend {
            precision,
            device,
            queue,
            info: adapter.get_info(),
            limits,
            pipelines: Mutex::new(Pipelines::default()),
            scratch: Mutex::new(HashMap::new()),
            scratch_users: ReentrantMutex::new(RefCell::new(Vec::new())),
            rec: Mutex::new(Recorder {
                pending: Vec::new(),
                params: Vec::new(),
                arena: None,
                arena_cap: 0,
                binds: HashMap::new(),
                binds_after_sweep: 0,
                staging: None,
                staging_cap: 0,
                profiler: None,
            }),
            next_id: AtomicU64::new(1),
            dispatches: AtomicU64::new(0),
            submissions: AtomicU64::new(0),
            timestamps,
            kernel_variant: Mutex::new(KernelVariant::Auto),
        })
    }

    /// The precision of [`Backend::alloc`] buffers.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The factor gradient buffers carry (see the module documentation): [`F16_LOSS_SCALE`] at
    /// f16, 1 at f32.
    pub fn loss_scale(&self) -> f32 {
        match self.precision {
            Precision::F32 => 1.0,
            Precision::F16 => F16_LOSS_SCALE,
        }
    }

    /// The chosen adapter.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The limits the device was opened with.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// True on a software implementation (lavapipe/llvmpipe, SwiftShader, WARP, any CPU device).
    pub fn is_software(&self) -> bool {
        is_software_info(self.info.device_type, &self.info.name)
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// (dispatches recorded, submissions made) since creation or the last [`GpuBackend::reset_stats`].
    pub fn stats(&self) -> (u64, u64) {
        (self.dispatches.load(Ordering::Relaxed), self.submissions.load(Ordering::Relaxed))
    }

    pub fn reset_stats(&self) {
        self.dispatches.store(0, Ordering::Relaxed);
        self.submissions.store(0, Ordering::Relaxed);
    }

    /// Forces a choice of kernel variants (`Auto`, the default, picks by adapter): lets tests run
    /// both variants on one adapter.
    pub fn set_kernel_variant(&self, v: KernelVariant) {
        *self.kernel_variant.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }

    pub(crate) fn kernel_variant(&self) -> KernelVariant {
        *self.kernel_variant.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Which timestamp queries this device offers ([`Timestamps::None`]: no GPU-side timing).
    pub fn timestamps(&self) -> Timestamps {
        self.timestamps
    }

    /// Switches per-dispatch GPU timing on or off (off by default; off costs nothing). While on,
    /// every submission writes a timestamp around each dispatch and waits for the device to read
    /// them back (so it serialises the host and the device: wall times taken meanwhile are not
    /// representative); [`GpuBackend::take_profile`] returns what was measured. Work recorded
    /// before the switch is submitted first, under the old setting. Fails, leaving profiling off,
    /// where the adapter lacks `TIMESTAMP_QUERY`.
    pub fn set_profiling(&self, on: bool) -> Result<(), String> {
        let mut rec = self.recorder();
        self.submit(&mut rec);
        if !on {
            rec.profiler = None;
            return Ok(());
        }
        if self.timestamps == Timestamps::None {
            return Err(format!("{} does not offer timestamp queries (TIMESTAMP_QUERY)", self.info.name));
        }
        if rec.profiler.is_none() {
            rec.profiler = Some(profile::Profiler::new(&self.device, self.queue.get_timestamp_period()));
        }
        Ok(())
    }

    /// The GPU times of the dispatches submitted since profiling was switched on or since the last
    /// call, in submission order (recorded work is submitted first). Empty when profiling is off.
    pub fn take_profile(&self) -> Vec<DispatchTime> {
        let mut rec = self.recorder();
        self.submit(&mut rec);
        rec.profiler.as_mut().map(|p| std::mem::take(&mut p.times)).unwrap_or_default()
    }

    /// The element type of [`Backend::alloc`] buffers.
    fn float_elem(&self) -> Elem {
        match self.precision {
            Precision::F32 => Elem::F32,
            Precision::F16 => Elem::F16,
        }
    }

    /// A zero-filled buffer of `len` elements of type `elem`, rounded up to whole 4-byte words.
    fn alloc_typed(&self, len: usize, elem: Elem) -> GpuBuffer {
        let bytes = (len * elem.size()).div_ceil(4).max(1) as u64 * 4;
        assert!(
            bytes <= self.limits.max_storage_buffer_binding_size && bytes <= self.limits.max_buffer_size,
            "alloc: {len} elements exceed this adapter's largest storage buffer ({} bytes)",
            self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
        );
        // wgpu zero-initialises every buffer before its first use.
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        GpuBuffer { buffer: Arc::new(buffer), len, id: self.next_id.fetch_add(1, Ordering::Relaxed), elem, offset: 0 }
    }

    /// Record an op's dispatches that pass data through an f32 scratch buffer of at least `len`
    /// elements, one per `key`, kept between calls and grown as needed (contents undefined).
    /// Dispatches run in recording order, so the op's own dispatches see each other's writes; the
    /// recording is exclusive, so two threads sharing this backend (tests do) cannot interleave
    /// their uses of the same scratch buffer. `f` may call other scratch-using ops, whose keys
    /// must differ (checked).
    pub(crate) fn with_scratch<R>(&self, key: &'static str, len: usize, f: impl FnOnce(&GpuBuffer) -> R) -> R {
        self.with_scratch_of(key, len, Elem::F32, f)
    }

    /// [`GpuBackend::with_scratch`] with elements of type `elem` (scratch that a shader reads as
    /// `elem`, such as an operand handed to `matmul`).
    pub(crate) fn with_scratch_of<R>(
        &self,
        key: &'static str,
        len: usize,
        elem: Elem,
        f: impl FnOnce(&GpuBuffer) -> R,
    ) -> R {
        let users = self.scratch_users.lock();
        assert!(!users.borrow().contains(&key), "scratch buffer {key:?} requested again by a nested op");
        users.borrow_mut().push(key);
        // Pops the key however `f` ends (a panicking test must not leave it marked in use).
        struct InUse<'a>(&'a RefCell<Vec<&'static str>>);
        impl Drop for InUse<'_> {
            fn drop(&mut self) {
                self.0.borrow_mut().pop();
            }
        }
        let _in_use = InUse(&users);
        let buf = self.scratch(key, len, elem);
        f(&buf)
    }

    fn scratch(&self, key: &'static str, len: usize, elem: Elem) -> GpuBuffer {
        let mut map = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let fits = map.get(key).is_some_and(|b| b.len >= len && b.elem == elem);
        if !fits {
            map.insert(key, self.alloc_typed(len, elem));
        }
        let b = &map[key];
        GpuBuffer { buffer: b.buffer.clone(), len: b.len, id: b.id, elem: b.elem, offset: 0 }
    }

    /// The pipeline for `entry` of `shader` with `elem` = `precision`, compiled on first use and
    /// cached.
    pub(crate) fn pipeline(&self, shader: &Shader, entry: &'static str, precision: Precision) -> Arc<Pipe> {
        let mut p = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pipe) = p.pipes.get(&(shader.name, entry, precision)) {
            return pipe.clone();
        }
        let device = &self.device;
        let module = p.modules.entry((shader.name, precision)).or_insert_with(|| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.name),
                source: wgpu::ShaderSource::Wgsl(variant_source(shader.source, precision).into()),
            })
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        let pipe = Arc::new(Pipe { id: p.pipes.len(), pipeline, layout });
        p.pipes.insert((shader.name, entry, precision), pipe.clone());
        pipe
    }

    /// Records one dispatch of `entry` in `shader`: `params` (at most 64 words) at binding 0,
    /// `buffers` at bindings 1, 2, ... in order, `groups` workgroups, in the shader's f16 variant
    /// when any of the buffers holds f16 (else f32). A dispatch with no workgroups is skipped. See
    /// the module documentation for the conventions.
    pub(crate) fn dispatch(
        &self,
        shader: &Shader,
        entry: &'static str,
        buffers: &[&GpuBuffer],
        params: &[u32],
        groups: [u32; 3],
    ) {
        if groups.contains(&0) {
            return;
        }
        assert!(params.len() <= MAX_PARAM_WORDS, "{entry}: {} parameter words, at most {MAX_PARAM_WORDS}", params.len());
        assert!(
            groups.iter().all(|&g| g <= MAX_GROUPS_PER_DIM),
            "{entry}: dispatch {groups:?} exceeds 65535 workgroups per dimension"
        );
        let precision =
            if buffers.iter().any(|b| b.elem == Elem::F16) { Precision::F16 } else { Precision::F32 };
        let pipe = self.pipeline(shader, entry, precision);
        let mut rec = self.recorder();
        let slot = rec.params.len();
        rec.params.extend_from_slice(bytemuck::cast_slice(params));
        rec.params.resize(slot + PARAM_SLOT, 0);
        rec.pending.push(Recorded {
            pipe,
            label: (shader.name, entry),
            buffers: buffers
                .iter()
                .map(|b| Bound { id: b.id, offset: b.offset, bytes: b.binding_bytes(), buffer: b.buffer.clone() })
                .collect(),
            slot: slot as u32,
            groups,
        });
        self.dispatches.fetch_add(1, Ordering::Relaxed);
    }

    fn recorder(&self) -> MutexGuard<'_, Recorder> {
        self.rec.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Submits everything recorded in one command buffer with one compute pass.
    fn submit(&self, rec: &mut Recorder) {
        if rec.pending.is_empty() {
            return;
        }
        if rec.params.len() > rec.arena_cap || rec.arena.is_none() {
            let cap = rec.params.len().next_power_of_two().max(64 * 1024);
            rec.arena = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params arena"),
                size: cap as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
            rec.arena_cap = cap;
            rec.binds.clear(); // they point into the old arena
        }
        let arena = rec.arena.clone().expect("params arena exists");
        self.queue.write_buffer(&arena, 0, &rec.params);

        let pending = std::mem::take(&mut rec.pending);
        let mut bind_groups = Vec::with_capacity(pending.len());
        for d in &pending {
            let key = BindKey {
                pipe: d.pipe.id,
                slot: d.slot,
                ids: d.buffers.iter().map(|b| (b.id, b.offset, b.bytes)).collect(),
            };
            let bg = match rec.binds.get(&key) {
                Some((bg, _)) => bg.clone(),
                None => {
                    let mut entries = Vec::with_capacity(d.buffers.len() + 1);
                    entries.push(wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &arena,
                            offset: d.slot as u64,
                            size: NonZeroU64::new(PARAM_SLOT as u64),
                        }),
                    });
                    for (i, b) in d.buffers.iter().enumerate() {
                        let resource = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &b.buffer,
                            offset: b.offset,
                            size: NonZeroU64::new(b.bytes),
                        });
                        entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource });
                    }
                    let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: None,
                        layout: &d.pipe.layout,
                        entries: &entries,
                    });
                    rec.binds.insert(key, (bg.clone(), d.buffers.iter().map(|b| b.buffer.clone()).collect()));
                    bg
                }
            };
            bind_groups.push(bg);
        }
        if let Some(profiler) = rec.profiler.as_mut() {
            profiler.submit_timed(&self.device, &self.queue, self.timestamps, &pending, &bind_groups);
            self.submissions.fetch_add(1, Ordering::Relaxed);
        } else {
            let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            {
                let desc = wgpu::ComputePassDescriptor { label: None, timestamp_writes: None };
                let mut pass = encoder.begin_compute_pass(&desc);
                for (d, bg) in pending.iter().zip(&bind_groups) {
                    pass.set_pipeline(&d.pipe.pipeline);
                    pass.set_bind_group(0, bg, &[]);
                    pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                }
            }
            self.queue.submit([encoder.finish()]);
            self.submissions.fetch_add(1, Ordering::Relaxed);
        }
        rec.params.clear();
        drop(pending);
        // Forget bind groups of buffers nobody else holds any more (bounded cache).
        if rec.binds.len() > 2 * rec.binds_after_sweep + 256 {
            rec.binds.retain(|_, (_, bufs)| bufs.iter().all(|b| Arc::strong_count(b) > 1));
            if rec.binds.len() > MAX_CACHED_BIND_GROUPS {
                rec.binds.clear(); // a workload that never repeats itself: start over
            }
            rec.binds_after_sweep = rec.binds.len();
        }
    }

    fn write_words(&self, dst: &GpuBuffer, words: &[u32], op: &str) {
        assert!(dst.elem != Elem::F16, "{op}: buffer `dst` holds f16, not 32-bit words");
        check_len(op, "dst", dst, words.len());
        self.write_bytes(dst, bytemuck::cast_slice(words));
    }

    /// `src` rounded to f16 into the start of an f16 buffer. An odd count ends in half a word:
    /// its other half is padding when `src` fills the buffer, else the next element, read back
    /// first so that it is kept (a slow path no model takes: they write whole tensors).
    fn write_halves(&self, dst: &GpuBuffer, src: &[f32]) {
        check_len("write", "dst", dst, src.len());
        let mut halves: Vec<half::f16> = src.iter().map(|&x| half::f16::from_f32(x)).collect();
        if halves.len() % 2 == 1 {
            let next = if dst.len > src.len() {
                let bytes = self.read_bytes(dst, 2 * src.len() + 2);
                half::f16::from_le_bytes([bytes[2 * src.len()], bytes[2 * src.len() + 1]])
            } else {
                half::f16::ZERO
            };
            halves.push(next);
        }
        self.write_bytes(dst, bytemuck::cast_slice(&halves));
    }

    /// `bytes` (a whole number of 4-byte words) into the start of `dst`, after the recorded work.
    fn write_bytes(&self, dst: &GpuBuffer, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut rec = self.recorder();
        self.submit(&mut rec); // recorded work must see the old contents
        self.queue.write_buffer(&dst.buffer, dst.offset, bytes);
    }

    /// The first `len` 32-bit words of `src`, after all recorded work.
    fn read_words(&self, src: &GpuBuffer, len: usize) -> Vec<u32> {
        assert!(src.elem != Elem::F16, "read: buffer holds f16, not 32-bit words");
        check_len("read", "src", src, len);
        // (collected, not cast: a Vec<u8> need not be aligned for u32)
        bytemuck::pod_collect_to_vec(&self.read_bytes(src, 4 * len))
    }

    /// The first `len` elements of an f16 buffer, widened to f32.
    fn read_halves(&self, src: &GpuBuffer, len: usize) -> Vec<f32> {
        check_len("read", "src", src, len);
        let bytes = self.read_bytes(src, 2 * len);
        bytes.chunks_exact(2).take(len).map(|h| half::f16::from_le_bytes([h[0], h[1]]).to_f32()).collect()
    }

    /// The first `want` bytes of `src` rounded up to whole words (the buffer holds them), after all
    /// recorded work.
    fn read_bytes(&self, src: &GpuBuffer, want: usize) -> Vec<u8> {
        if want == 0 {
            return Vec::new();
        }
        let mut rec = self.recorder();
        self.submit(&mut rec);
        let bytes = want.next_multiple_of(4) as u64;
        if rec.staging_cap < bytes || rec.staging.is_none() {
            let cap = bytes.next_power_of_two().max(4096);
            rec.staging = Some(self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: cap,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
            rec.staging_cap = cap;
        }
        let staging = rec.staging.clone().expect("staging buffer exists");
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(&src.buffer, src.offset, &staging, 0, bytes);
        self.queue.submit([encoder.finish()]);
        self.submissions.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).expect("GPU device lost while waiting");
        rx.recv().expect("map callback ran").expect("mapping the staging buffer failed");
        let out = {
            let view = staging.get_mapped_range(0..bytes).expect("staging buffer is mapped");
            view.to_vec()
        };
        staging.unmap();
        out
    }

    /// Reads u32 ids back (tests, debugging).
    pub fn read_ids(&self, src: &GpuBuffer, len: usize) -> Vec<u32> {
        self.read_words(src, len)
    }

    fn elementwise(&self, entry: &'static str, bufs: &[&GpuBuffer], params: &[u32], n: usize) {
        self.dispatch(&ELEMENTWISE, entry, bufs, params, grid_1d(n, 256));
    }

    /// [`Backend::adamw`] (`adam` is the same with `factor = 1`): checks, then one dispatch.
    #[allow(clippy::too_many_arguments)]
    fn adam_op(
        &self,
        op: &str,
        p: &GpuBuffer,
        g: &GpuBuffer,
        m: &GpuBuffer,
        v: &GpuBuffer,
        n: usize,
        hp: AdamParams,
        factor: f32,
        scale: &GpuBuffer,
    ) {
        for (what, b) in [("p", p), ("g", g), ("m", m), ("v", v)] {
            check_len(op, what, b, n);
        }
        check_len(op, "scale", scale, 1);
        check_same_elem(op, &[("p", p), ("g", g)]);
        for (what, b) in [("m", m), ("v", v), ("scale", scale)] {
            check_f32(op, what, b);
        }
        // Bias corrections computed on the host exactly as the CPU backend does.
        let t = hp.step as i32;
        let step_size = hp.lr / (1.0 - hp.beta1.powi(t));
        let bc2_sqrt = (1.0 - hp.beta2.powi(t)).sqrt();
        let params = [
            u(n),
            f(step_size),
            f(bc2_sqrt),
            f(hp.beta1),
            f(hp.beta2),
            f(hp.eps),
            f(hp.weight_decay),
            f(1.0 / self.loss_scale()),
            f(factor),
        ];
        self.dispatch(&OPTIM, "adam", &[g, scale, p, m, v], &params, grid_1d(n, 256));
    }
}

fn act_code(a: Act) -> u32 {
    match a {
        Act::Relu => 0,
        Act::Tanh => 1,
        Act::Sigmoid => 2,
    }
}

impl Backend for GpuBackend {
    type Buf = GpuBuffer;
    type Ids = GpuBuffer;

    fn max_buffer_bytes(&self) -> Option<u64> {
        Some(self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size))
    }

    /// The adapter's name and API, with `, f16` at that precision.
    fn name(&self) -> String {
        let precision = if self.precision == Precision::F16 { ", f16" } else { "" };
        format!("{} ({:?}{precision})", self.info.name, self.info.backend)
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

    fn view(&self, buf: &GpuBuffer, offset: usize, len: usize) -> Option<GpuBuffer> {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= buf.len),
            "view: elements {offset}..{} of a buffer of {}",
            offset + len,
            buf.len
        );
        let bytes = (offset * buf.elem.size()) as u64;
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        assert!(bytes.is_multiple_of(align), "view: offset {offset} ({bytes} bytes) is not a multiple of {align} bytes");
        Some(GpuBuffer { buffer: buf.buffer.clone(), len, id: buf.id, elem: buf.elem, offset: buf.offset + bytes })
    }

    fn view_align(&self) -> usize {
        // In f16 elements (2 bytes), so that an offset is aligned at f32 (4 bytes) too.
        (self.limits.min_storage_buffer_offset_alignment as usize).div_ceil(2).max(2)
    }

    fn write(&self, dst: &mut GpuBuffer, src: &[f32]) {
        match dst.elem {
            Elem::F16 => self.write_halves(dst, src),
            Elem::F32 | Elem::U32 => self.write_words(dst, bytemuck::cast_slice(src), "write"),
        }
    }

    fn write_ids(&self, dst: &mut GpuBuffer, src: &[u32]) {
        self.write_words(dst, src, "write_ids");
    }

    fn read(&self, src: &GpuBuffer, len: usize) -> Vec<f32> {
        match src.elem {
            Elem::F16 => self.read_halves(src, len),
            Elem::F32 | Elem::U32 => bytemuck::cast_slice(&self.read_words(src, len)).to_vec(),
        }
    }

    fn flush(&self) {
        let mut rec = self.recorder();
        self.submit(&mut rec);
    }

    fn fill(&self, x: &mut GpuBuffer, n: usize, value: f32) {
        check_len("fill", "x", x, n);
        self.elementwise("fill", &[x], &[u(n), f(value)], n);
    }

    fn add(&self, x: &GpuBuffer, y: &mut GpuBuffer, n: usize) {
        check_len("add", "x", x, n);
        check_len("add", "y", y, n);
        check_same_elem("add", &[("x", x), ("y", y)]);
        self.elementwise("add", &[x, y], &[u(n)], n);
    }

    fn copy_strided(
        &self,
        src: &GpuBuffer,
        src_off: usize,
        src_stride: usize,
        dst: &mut GpuBuffer,
        dst_off: usize,
        dst_stride: usize,
        rows: usize,
        cols: usize,
        accumulate: bool,
    ) {
        if rows == 0 || cols == 0 {
            return;
        }
        check_len("copy_strided", "src", src, src_off + (rows - 1) * src_stride + cols);
        check_len("copy_strided", "dst", dst, dst_off + (rows - 1) * dst_stride + cols);
        check_same_elem("copy_strided", &[("src", src), ("dst", dst)]);
        let p = [u(rows), u(cols), u(src_off), u(src_stride), u(dst_off), u(dst_stride), accumulate as u32];
        self.elementwise("copy_strided", &[src, dst], &p, rows * cols);
    }

    fn act_fwd(&self, act: Act, x: &GpuBuffer, y: &mut GpuBuffer, n: usize) {
        check_len("act_fwd", "x", x, n);
        check_len("act_fwd", "y", y, n);
        check_same_elem("act_fwd", &[("x", x), ("y", y)]);
        self.elementwise("act_fwd", &[x, y], &[u(n), act_code(act)], n);
    }

    fn act_bwd(&self, act: Act, y: &GpuBuffer, dy: &GpuBuffer, dx: &mut GpuBuffer, n: usize) {
        check_len("act_bwd", "y", y, n);
        check_len("act_bwd", "dy", dy, n);
        check_len("act_bwd", "dx", dx, n);
        check_same_elem("act_bwd", &[("y", y), ("dy", dy), ("dx", dx)]);
        self.elementwise("act_bwd", &[y, dy, dx], &[u(n), act_code(act)], n);
    }

    fn gated_fwd(&self, a: &GpuBuffer, z: &mut GpuBuffer, batch: usize, r: usize, t: usize) {
        let n = batch * r * t;
        check_len("gated_fwd", "a", a, 2 * n);
        check_len("gated_fwd", "z", z, n);
        check_same_elem("gated_fwd", &[("a", a), ("z", z)]);
        self.elementwise("gated_fwd", &[a, z], &[u(n), u(r * t)], n);
    }

    fn gated_bwd(&self, a: &GpuBuffer, dz: &GpuBuffer, da: &mut GpuBuffer, batch: usize, r: usize, t: usize) {
        let n = batch * r * t;
        check_len("gated_bwd", "a", a, 2 * n);
        check_len("gated_bwd", "dz", dz, n);
        check_len("gated_bwd", "da", da, 2 * n);
        check_same_elem("gated_bwd", &[("a", a), ("dz", dz), ("da", da)]);
        self.elementwise("gated_bwd", &[a, dz, da], &[u(n), u(r * t)], n);
    }

    fn dropout(&self, x: &mut GpuBuffer, n: usize, mask: DropMask) {
        check_len("dropout", "x", x, n);
        let p = [u(n), mask.key0, mask.key1, mask.threshold, mask.scale_bits];
        self.dispatch(&DROPOUT, "dropout", &[x], &p, grid_1d(n, 256));
    }

    fn transpose(&self, x: &GpuBuffer, y: &mut GpuBuffer, batch: usize, rows: usize, cols: usize) {
        let n = batch * rows * cols;
        check_len("transpose", "x", x, n);
        check_len("transpose", "y", y, n);
        check_same_elem("transpose", &[("x", x), ("y", y)]);
        if n == 0 {
            return;
        }
        // 16x16 tiles through workgroup memory: x = column tiles, y = row tiles, z = batch.
        let [gx, gy, _] = grid_2d(cols, rows, 16, 16);
        assert!(batch <= MAX_GROUPS_PER_DIM as usize, "transpose: batch {batch} exceeds 65535");
        self.dispatch(&ELEMENTWISE, "transpose", &[x, y], &[u(rows), u(cols)], [gx, gy, batch as u32]);
    }

    fn matmul(&self, a: &GpuBuffer, b: &GpuBuffer, c: &mut GpuBuffer, mm: MatMul) {
        let MatMul { m, k, n, trans_a, trans_b, accumulate } = mm;
        check_len("matmul", "a", a, m * k);
        check_len("matmul", "b", b, k * n);
        check_len("matmul", "c", c, m * n);
        check_same_elem("matmul", &[("a", a), ("b", b), ("c", c)]);
        if m == 0 || n == 0 {
            return;
        }
        let p = [u(m), u(k), u(n), trans_a as u32, trans_b as u32, accumulate as u32];
        if self.software_kernels() && m % 4 == 0 && k % 4 == 0 && n % 4 == 0 && k > 0 {
            // Software renderer: 8x8 register blocks, no workgroup memory (see matmul.wgsl).
            let blocks = m.div_ceil(8) * n.div_ceil(8);
            self.dispatch(&MATMUL, "matmul_regs", &[a, b, c], &p, grid_1d(blocks, 64));
            return;
        }
        // 64x64 tiles; split along k when they are few and k is long (weight gradients summed over
        // B*T rows); else 32x32 tiles when 64x64 ones would leave most of a GPU idle.
        let big_tiles = m.div_ceil(64) * n.div_ceil(64);
        let splits = matmul_splits(big_tiles, k);
        if splits > 1 {
            let kchunk = k.div_ceil(splits).next_multiple_of(16);
            let splits = k.div_ceil(kchunk);
            let ps = [p[0], p[1], p[2], p[3], p[4], p[5], u(splits), u(kchunk)];
            let [gx, gy, _] = grid_2d(n, m, 64, 64);
            self.with_scratch("matmul_split", splits * m * n, |part| {
                self.dispatch(&MATMUL, "matmul_split", &[a, b, part], &ps, [gx, gy, splits as u32]);
                self.dispatch(&MATMUL, "matmul_reduce", &[part, c], &ps, grid_1d(m * n, 256));
            });
        } else if big_tiles >= SMALL_MATMUL_BELOW {
            self.dispatch(&MATMUL, "matmul", &[a, b, c], &p, grid_2d(n, m, 64, 64));
        } else {
            self.dispatch(&MATMUL, "matmul_small", &[a, b, c], &p, grid_2d(n, m, 32, 32));
        }
    }

    fn bias_add(&self, y: &mut GpuBuffer, bias: &GpuBuffer, outer: usize, channels: usize, inner: usize) {
        let n = outer * channels * inner;
        check_len("bias_add", "y", y, n);
        check_len("bias_add", "bias", bias, channels);
        check_same_elem("bias_add", &[("y", y), ("bias", bias)]);
        if self.software_kernels() && inner == 1 && channels.is_multiple_of(4) && channels > 0 {
            let p = [u(n), u(channels), 1];
            self.dispatch(&BIAS, "bias_add_vec4", &[bias, y], &p, grid_1d(n / 4, 256));
            return;
        }
        self.dispatch(&BIAS, "bias_add", &[bias, y], &[u(n), u(channels), u(inner)], grid_1d(n, 256));
    }

    fn bias_grad(&self, dy: &GpuBuffer, dbias: &mut GpuBuffer, outer: usize, channels: usize, inner: usize) {
        check_len("bias_grad", "dy", dy, outer * channels * inner);
        check_len("bias_grad", "dbias", dbias, channels);
        check_same_elem("bias_grad", &[("dy", dy), ("dbias", dbias)]);
        if self.software_kernels() && inner == 1 && channels.is_multiple_of(4) && channels > 0 {
            let p = [u(outer), u(channels), 1];
            self.dispatch(&BIAS, "bias_grad_vec4", &[dy, dbias], &p, grid_1d(channels / 4, 64));
            return;
        }
        self.dispatch(&BIAS, "bias_grad", &[dy, dbias], &[u(outer), u(channels), u(inner)], grid_groups(channels));
    }

    fn embedding_fwd(&self, ids: &GpuBuffer, table: &GpuBuffer, out: &mut GpuBuffer, n: usize, e: usize) {
        check_len("embedding_fwd", "ids", ids, n);
        check_len("embedding_fwd", "out", out, n * e);
        check_same_elem("embedding_fwd", &[("table", table), ("out", out)]);
        let rows = table.len / e.max(1);
        self.dispatch(&EMBEDDING, "embedding_fwd", &[ids, table, out], &[u(n), u(e), u(rows)], grid_1d(n * e, 256));
    }

    fn embedding_bwd(&self, ids: &GpuBuffer, dout: &GpuBuffer, dtable: &mut GpuBuffer, n: usize, e: usize) {
        check_len("embedding_bwd", "ids", ids, n);
        check_len("embedding_bwd", "dout", dout, n * e);
        check_same_elem("embedding_bwd", &[("dout", dout), ("dtable", dtable)]);
        if e == 0 || n == 0 {
            return;
        }
        let rows = dtable.len / e;
        if rows == 0 {
            return;
        }
        // Partial tables per run of ids, then their sum (see shaders/embedding.wgsl). As many runs
        // as fit in EMBEDDING_SCRATCH floats, at most 64 (one run per 64+ ids).
        let segments = (EMBEDDING_SCRATCH / (rows * e)).min(64).min(n.div_ceil(64)).max(1);
        let seg_len = n.div_ceil(segments);
        let p = [u(n), u(e), u(rows), u(segments), u(seg_len)];
        let [gx, _, _] = grid_2d(e, 1, 64, 1);
        self.with_scratch("embedding_bwd", segments * rows * e, |partial| {
            self.dispatch(&EMBEDDING, "embedding_bwd_partial", &[ids, dout, partial], &p, [gx, segments as u32, 1]);
            self.dispatch(&EMBEDDING, "embedding_bwd_reduce", &[partial, dtable], &p, grid_1d(rows * e, 256));
        });
    }

    fn softmax_xent(
        &self,
        logits: &GpuBuffer,
        targets: &GpuBuffer,
        dlogits: &mut GpuBuffer,
        stats: &mut GpuBuffer,
        n: usize,
        v: usize,
        grad_scale: f32,
    ) {
        check_len("softmax_xent", "logits", logits, n * v);
        check_len("softmax_xent", "targets", targets, n);
        check_len("softmax_xent", "dlogits", dlogits, n * v);
        check_len("softmax_xent", "stats", stats, 2 * n);
        check_same_elem("softmax_xent", &[("logits", logits), ("dlogits", dlogits)]);
        check_f32("softmax_xent", "stats", stats);
        if v == 0 {
            return;
        }
        // The gradient leaves loss-scaled (times 1 at f32: unchanged).
        self.dispatch(
            &SOFTMAX_XENT,
            "softmax_xent",
            &[logits, targets, dlogits, stats],
            &[u(n), u(v), f(grad_scale * self.loss_scale())],
            grid_groups(n),
        );
    }

    fn sum_squares(&self, x: &GpuBuffer, n: usize, acc: &mut GpuBuffer) {
        check_len("sum_squares", "x", x, n);
        check_len("sum_squares", "acc", acc, 1);
        check_f32("sum_squares", "acc", acc);
        // The gradient is unscaled before it is squared (a multiplication by 1 at f32).
        let p = [u(n), 0, 0, 0, 0, 0, 0, f(1.0 / self.loss_scale())];
        self.dispatch(&OPTIM, "sum_squares", &[x, acc], &p, [1, 1, 1]);
    }

    fn clip_scale(&self, acc: &GpuBuffer, max_norm: f32, scale: &mut GpuBuffer) {
        check_len("clip_scale", "acc", acc, 1);
        check_len("clip_scale", "scale", scale, 1);
        check_f32("clip_scale", "acc", acc);
        check_f32("clip_scale", "scale", scale);
        self.dispatch(&OPTIM, "clip_scale", &[acc, scale], &[f(max_norm)], [1, 1, 1]);
    }

    fn decay(&self, p: &mut GpuBuffer, n: usize, factor: f32) {
        check_len("decay", "p", p, n);
        self.dispatch(&OPTIM, "decay", &[p], &[u(n), f(factor)], grid_1d(n, 256));
    }

    fn grad_norm_clip(&self, g: &GpuBuffer, n: usize, max_norm: f32, acc: &mut GpuBuffer, scale: &mut GpuBuffer) {
        const OP: &str = "grad_norm_clip";
        check_len(OP, "g", g, n);
        check_len(OP, "acc", acc, 1);
        check_len(OP, "scale", scale, 1);
        check_f32(OP, "acc", acc);
        check_f32(OP, "scale", scale);
        // Partial sums of 256-wide workgroups striding over g (at most NORM_GROUPS of them, a
        // fixed function of n: the sum's order, hence its bits, do not depend on timing), then one
        // workgroup adds them and writes the norm and the scale.
        let groups = n.div_ceil(256).clamp(1, NORM_GROUPS);
        self.with_scratch("grad_norm_clip", groups, |part| {
            let unscale = f(1.0 / self.loss_scale());
            self.dispatch(&OPTIM, "norm_partials", &[g, part], &[u(n), 0, 0, 0, 0, 0, 0, unscale], [u(groups), 1, 1]);
            self.dispatch(&OPTIM, "norm_finish", &[part, acc, scale], &[u(groups), f(max_norm)], [1, 1, 1]);
        });
    }

    fn adamw(
        &self,
        p: &mut GpuBuffer,
        g: &GpuBuffer,
        m: &mut GpuBuffer,
        v: &mut GpuBuffer,
        n: usize,
        hp: AdamParams,
        factor: f32,
        scale: &GpuBuffer,
    ) {
        self.adam_op("adamw", p, g, m, v, n, hp, factor, scale)
    }

    fn conv1d_fwd(&self, x: &GpuBuffer, w: &GpuBuffer, bias: &GpuBuffer, y: &mut GpuBuffer, c: Conv1d) {
        conv::forward(self, x, w, bias, y, c)
    }

    fn conv1d_bwd_input(&self, dy: &GpuBuffer, w: &GpuBuffer, dx: &mut GpuBuffer, c: Conv1d, accumulate: bool) {
        conv::backward_input(self, dy, w, dx, c, accumulate)
    }

    fn conv1d_bwd_weight(&self, x: &GpuBuffer, dy: &GpuBuffer, dw: &mut GpuBuffer, dbias: &mut GpuBuffer, c: Conv1d) {
        conv::backward_weight(self, x, dy, dw, dbias, c)
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
        attention::forward(self, q, k, v, out, p, a)
    }

    fn attention_bwd(
        &self,
        q: &GpuBuffer,
        k: &GpuBuffer,
        v: &GpuBuffer,
        p: &GpuBuffer,
        dout: &GpuBuffer,
        dq: &mut GpuBuffer,
        dk: &mut GpuBuffer,
        dv: &mut GpuBuffer,
        a: Attention,
    ) {
        attention::backward(self, q, k, v, p, dout, dq, dk, dv, a)
    }

    fn lstm_fwd(
        &self,
        xw: &GpuBuffer,
        w_hh: &GpuBuffer,
        h0: &GpuBuffer,
        c0: &GpuBuffer,
        hs: &mut GpuBuffer,
        cs: &mut GpuBuffer,
        gates: &mut GpuBuffer,
        l: Lstm,
    ) {
        lstm::forward(self, xw, w_hh, h0, c0, hs, cs, gates, l)
    }

    fn lstm_bwd(
        &self,
        w_hh: &GpuBuffer,
        h0: &GpuBuffer,
        c0: &GpuBuffer,
        hs: &GpuBuffer,
        cs: &GpuBuffer,
        gates: &GpuBuffer,
        dhs: &GpuBuffer,
        dxw: &mut GpuBuffer,
        dw_hh: &mut GpuBuffer,
        l: Lstm,
    ) {
        lstm::backward(self, w_hh, h0, c0, hs, cs, gates, dhs, dxw, dw_hh, l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_splits_only_few_tiles_with_a_long_k() {
        // The weight gradients of the default models: dW_ih [512, 100] and dW_fc2 [300, 256] over
        // B*T = 16384 rows: 16 and 20 tiles -> 8 and 7 ranges (about 128 workgroups).
        assert_eq!(matmul_splits(16, 16384), 8);
        assert_eq!(matmul_splits(20, 16384), 7);
        assert_eq!(matmul_splits(16, 1000), 1, "each range keeps at least SPLIT_MIN_K rows");
        assert_eq!(matmul_splits(1, 1 << 20), SPLIT_MAX);
        assert_eq!(matmul_splits(SMALL_MATMUL_BELOW, 1 << 20), 1, "enough tiles already");
    }

    fn fake(index: usize, name: &str, device_type: wgpu::DeviceType) -> AdapterReport {
        AdapterReport {
            index,
            name: name.into(),
            backend: wgpu::Backend::Vulkan,
            device_type,
            driver: String::new(),
            driver_info: String::new(),
            shader_f16: false,
            timestamp_query: false,
            max_workgroup_storage: 16384,
            max_invocations_per_workgroup: 256,
            max_storage_binding: 1 << 27,
            max_buffer: 1 << 28,
        }
    }

    #[test]
    fn picks_discrete_then_integrated_then_virtual_then_software() {
        use wgpu::DeviceType::*;
        let all = vec![
            fake(0, "llvmpipe (LLVM 15.0.6, 256 bits)", Cpu),
            fake(1, "Virtio GPU", VirtualGpu),
            fake(2, "Intel(R) UHD Graphics 630", IntegratedGpu),
            fake(3, "NVIDIA GeForce RTX 4090", DiscreteGpu),
        ];
        assert_eq!(pick_adapter_index(&all, None), Ok(3));
        assert_eq!(pick_adapter_index(&all[..3], None), Ok(2));
        assert_eq!(pick_adapter_index(&all[..2], None), Ok(1));
        assert_eq!(pick_adapter_index(&all[..1], None), Ok(0));
        // a software device reported as "Other" still comes last
        let other = vec![fake(0, "SwiftShader Device", Other), fake(1, "Some GPU", Other)];
        assert_eq!(pick_adapter_index(&other, None), Ok(1));
    }

    #[test]
    fn override_by_index_or_name_substring() {
        use wgpu::DeviceType::*;
        let all = vec![fake(0, "llvmpipe (LLVM 15)", Cpu), fake(1, "NVIDIA H100", DiscreteGpu)];
        assert_eq!(pick_adapter_index(&all, Some("llvmpipe")), Ok(0));
        assert_eq!(pick_adapter_index(&all, Some("h100")), Ok(1));
        assert_eq!(pick_adapter_index(&all, Some("0")), Ok(0));
        assert_eq!(pick_adapter_index(&all, Some(" ")), Ok(1), "blank means no override");
        assert!(pick_adapter_index(&all, Some("7")).unwrap_err().contains("no adapter with index 7"));
        assert!(pick_adapter_index(&all, Some("radeon")).unwrap_err().contains("NVIDIA H100"));
        assert_eq!(pick_adapter_index(&[], None), Err(NO_ADAPTER.to_string()));
        assert!(all[0].is_software() && !all[1].is_software());
    }

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

    /// The software-renderer product (8x8 register blocks) against an f64 reference, for every
    /// transpose/accumulate combination, at sizes that are multiples of 4 but not of 8 (the
    /// clamped edge blocks) as well as of 8. The timestamp profile shows which kernel ran.
    #[test]
    fn register_blocked_matmul_matches_a_reference() {
        let g = own_gpu();
        g.set_kernel_variant(KernelVariant::Software);
        let profiled = g.set_profiling(true).is_ok();
        for (s, &(m, k, n)) in [(4, 4, 4), (12, 8, 20), (8, 16, 4), (36, 100, 300), (20, 12, 44)].iter().enumerate() {
            for variant in 0..8u64 {
                let (ta, tb, acc) = (variant & 1 != 0, variant & 2 != 0, variant & 4 != 0);
                let seed = 10 * s as u64 + variant;
                let (a, b, c0) = (random(seed, m * k), random(seed + 100, k * n), random(seed + 200, m * n));
                let (ga, gb) = (upload(&g, &a), upload(&g, &b));
                let mut gc = upload(&g, &c0);
                g.matmul(&ga, &gb, &mut gc, MatMul { m, k, n, trans_a: ta, trans_b: tb, accumulate: acc });
                let got = g.read(&gc, m * n);
                if profiled {
                    let entries: Vec<&str> = g.take_profile().iter().map(|d| d.entry).collect();
                    assert_eq!(entries, ["matmul_regs"], "({m},{k},{n})");
                }
                for i in 0..m {
                    for j in 0..n {
                        let (mut want, mut mag) = (if acc { c0[i * n + j] as f64 } else { 0.0 }, 0.0f64);
                        for l in 0..k {
                            let x = if ta { a[l * m + i] } else { a[i * k + l] } as f64;
                            let y = if tb { b[j * k + l] } else { b[l * n + j] } as f64;
                            want += x * y;
                            mag += (x * y).abs();
                        }
                        // f32 sums of k products: rounding grows like sqrt(k) ulp of sum |terms|.
                        let tol = 1e-6 * (k as f64).sqrt() * (mag + 1.0);
                        let e = got[i * n + j] as f64;
                        assert!((e - want).abs() <= tol, "({m},{k},{n}) ta={ta} tb={tb} acc={acc} [{i},{j}]: {e} vs {want}");
                    }
                }
            }
        }
    }

    /// The vec4 bias kernels of software renderers (inner = 1, channels % 4 = 0) against the
    /// portable ones: bias_add is the same single addition (exact); bias_grad sums the rows in
    /// another order (f32 rounding ~ sqrt(outer) ulp of the sum of |terms|).
    #[test]
    fn vec4_bias_kernels_match_the_portable_ones() {
        for (outer, channels) in [(1, 4), (37, 12), (300, 512)] {
            let (dy, b0) = (random(outer as u64, outer * channels), random(7, channels));
            let run = |variant| {
                let g = own_gpu();
                g.set_kernel_variant(variant);
                let bias = upload(&g, &b0);
                let mut y = upload(&g, &dy);
                g.bias_add(&mut y, &bias, outer, channels, 1);
                let mut db = upload(&g, &b0);
                g.bias_grad(&upload(&g, &dy), &mut db, outer, channels, 1);
                (g.read(&y, outer * channels), g.read(&db, channels))
            };
            let (ys, dbs) = run(KernelVariant::Software);
            let (yp, dbp) = run(KernelVariant::Portable);
            assert_eq!(ys, yp, "bias_add ({outer}, {channels})");
            for c in 0..channels {
                let mag: f32 = (0..outer).map(|o| dy[o * channels + c].abs()).sum::<f32>() + b0[c].abs();
                let tol = 1e-6 * (outer as f32).sqrt() * (mag + 1.0);
                assert!((dbs[c] - dbp[c]).abs() <= tol, "bias_grad ({outer}, {channels}) [{c}]: {} vs {}", dbs[c], dbp[c]);
            }
        }
    }

    #[test]
    fn profiling_reports_each_dispatch_in_order() {
        let g = own_gpu();
        if g.timestamps() == Timestamps::None {
            assert!(g.set_profiling(true).is_err(), "no timestamps: profiling must refuse");
            return;
        }
        let mut x = g.alloc(1000);
        let y = upload(&g, &vec![1.0; 1000]);
        g.fill(&mut x, 1000, 0.0); // before profiling: not reported
        g.set_profiling(true).expect("timestamps offered");
        g.fill(&mut x, 1000, 2.0);
        g.add(&y, &mut x, 1000);
        g.act_fwd(Act::Relu, &y, &mut x, 1000);
        let got = g.take_profile();
        let names: Vec<(&str, &str)> = got.iter().map(|d| (d.shader, d.entry)).collect();
        assert_eq!(names, [("elementwise", "fill"), ("elementwise", "add"), ("elementwise", "act_fwd")]);
        assert!(got.iter().all(|d| d.ns.is_finite() && d.ns >= 0.0));
        assert_eq!(got[0].groups, grid_1d(1000, 256));
        assert!(g.take_profile().is_empty(), "taken once");
        g.set_profiling(false).expect("switching off always works");
        g.fill(&mut x, 1000, 3.0);
        assert!(g.take_profile().is_empty(), "nothing recorded while off");
        assert_eq!(g.read(&x, 2), [3.0, 3.0]);
        let totals = by_kernel(&got);
        assert_eq!(totals.len(), 3);
        assert!(totals.windows(2).all(|w| w[0].3 >= w[1].3), "largest first");
    }

    #[test]
    fn variants_prepend_the_alias_after_the_directives() {
        assert_eq!(variant_source("// c\nfn f() {}\n", Precision::F32), "alias elem = f32;\n// c\nfn f() {}\n");
        assert_eq!(variant_source("fn f() {}", Precision::F16), "enable f16;\nalias elem = f16;\nfn f() {}");
        let with = "// c\nenable subgroups;\nfn f() {}\n";
        assert_eq!(variant_source(with, Precision::F16), "// c\nenable subgroups;\nenable f16;\nalias elem = f16;\nfn f() {}\n");
        assert_eq!("f16".parse::<Precision>(), Ok(Precision::F16));
        assert!("f64".parse::<Precision>().is_err());
    }

    #[test]
    fn f16_needs_shader_f16() {
        let none = wgpu::Features::empty();
        assert_eq!(precision_features(Precision::F32, none, "x"), Ok(none));
        let err = precision_features(Precision::F16, none, "Old GPU").unwrap_err();
        assert!(err.contains("Old GPU") && err.contains("SHADER_F16") && !err.contains('\n'), "{err}");
        let f16 = wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY;
        assert_eq!(precision_features(Precision::F16, f16, "x"), Ok(wgpu::Features::SHADER_F16));
    }

    #[test]
    fn grids_stay_within_the_dimension_limit() {
        assert_eq!(grid_1d(0, 256), [0, 0, 0]);
        assert_eq!(grid_1d(1, 256), [1, 1, 1]);
        assert_eq!(grid_1d(65535 * 256, 256), [65535, 1, 1]);
        let [x, y, _] = grid_1d(65535 * 256 + 1, 256);
        assert!(x <= 65535 && (x as usize) * (y as usize) >= 65536);
        assert_eq!(grid_2d(65, 1, 64, 1), [2, 1, 1]);
    }
}
