//! The buffer type ([`GpuBuffer`], possibly a view into another's storage), its element types
//! ([`Elem`]), and the element-type checks an op makes before it records anything (its lengths
//! are checked by its contract, `crate::engine::contract`).

use std::sync::Arc;

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

/// A GPU buffer of f32, f16 or u32 elements (the backend uses this one type for values and ids; see
/// [`Elem`]). Dropping it releases the memory once no recorded work (and no view) uses it.
///
/// It may also be a *view*: `len` elements starting `offset` bytes into another buffer's storage
/// (see [`crate::engine::Backend::view`]; the parameter arenas of `crate::engine::optim`). A view shares its
/// parent's id; ops bind it as `BufferBinding { offset, size }`, reads and writes start at its
/// offset, so every op works on a view exactly as on a buffer of its own.
pub struct GpuBuffer {
    pub(super) buffer: Arc<wgpu::Buffer>,
    pub(super) len: usize,
    /// Which allocation this is (views share their parent's): a bind-group cache key.
    pub(super) id: u64,
    pub(super) elem: Elem,
    /// Where the elements start in `buffer`, in bytes (0 but for views; a multiple of the
    /// adapter's `min_storage_buffer_offset_alignment`).
    pub(super) offset: u64,
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
    pub(super) fn binding_bytes(&self) -> u64 {
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
