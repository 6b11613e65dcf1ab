//! Host I/O: allocating buffers, views into them, uploads (`queue.write_buffer`, after the recorded
//! work is submitted so that it sees the old contents) and read-backs (through a staging buffer,
//! converting f16 with the `half` crate).

use super::context::Context;
use super::{Elem, GpuBackend, GpuBuffer, Precision};
use crate::engine::contract;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Context {
    /// The element type of [`crate::engine::Backend::alloc`] buffers.
    pub(super) fn float_elem(&self) -> Elem {
        match self.precision {
            Precision::F32 => Elem::F32,
            Precision::F16 => Elem::F16,
        }
    }

    /// A zero-filled buffer of `len` elements of type `elem`, rounded up to whole 4-byte words.
    pub(super) fn alloc_typed(&self, len: usize, elem: Elem) -> GpuBuffer {
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
}

impl GpuBackend {
    /// A zero-filled buffer of `len` elements of type `elem` (see [`Context::alloc_typed`]).
    pub(super) fn alloc_typed(&self, len: usize, elem: Elem) -> GpuBuffer {
        self.ctx.alloc_typed(len, elem)
    }

    /// The element type of [`crate::engine::Backend::alloc`] buffers.
    pub(super) fn float_elem(&self) -> Elem {
        self.ctx.float_elem()
    }

    /// [`crate::engine::Backend::view`]: `len` elements of `buf` from element `offset` (aligned, checked).
    pub(super) fn view_of(&self, buf: &GpuBuffer, offset: usize, len: usize) -> GpuBuffer {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= buf.len),
            "view: elements {offset}..{} of a buffer of {}",
            offset + len,
            buf.len
        );
        let bytes = (offset * buf.elem.size()) as u64;
        let align = self.ctx.limits.min_storage_buffer_offset_alignment as u64;
        assert!(bytes.is_multiple_of(align), "view: offset {offset} ({bytes} bytes) is not a multiple of {align} bytes");
        GpuBuffer { buffer: buf.buffer.clone(), len, id: buf.id, elem: buf.elem, offset: buf.offset + bytes }
    }

    /// [`crate::engine::Backend::view_align`], in f16 elements (2 bytes), so that an offset is aligned at f32 (4
    /// bytes) too.
    pub(super) fn view_align_elems(&self) -> usize {
        (self.ctx.limits.min_storage_buffer_offset_alignment as usize).div_ceil(2).max(2)
    }

    /// [`crate::engine::Backend::write`]: floats into a buffer of f32 or f16.
    pub(super) fn write_floats(&self, dst: &GpuBuffer, src: &[f32]) {
        match dst.elem {
            Elem::F16 => self.write_halves(dst, src),
            Elem::F32 | Elem::U32 => self.write_words(dst, bytemuck::cast_slice(src), "write"),
        }
    }

    /// [`crate::engine::Backend::read`]: the first `len` floats of a buffer of f32 or f16.
    pub(super) fn read_floats(&self, src: &GpuBuffer, len: usize) -> Vec<f32> {
        match src.elem {
            Elem::F16 => self.read_halves(src, len),
            Elem::F32 | Elem::U32 => bytemuck::cast_slice(&self.read_words(src, len)).to_vec(),
        }
    }

    pub(super) fn write_words(&self, dst: &GpuBuffer, words: &[u32], op: &'static str) {
        assert!(dst.elem != Elem::F16, "{op}: buffer `dst` holds f16, not 32-bit words");
        contract::write(op, words.len(), [dst.len]);
        self.write_bytes(dst, bytemuck::cast_slice(words));
    }

    /// `src` rounded to f16 into the start of an f16 buffer. An odd count ends in half a word:
    /// its other half is padding when `src` fills the buffer, else the next element, read back
    /// first so that it is kept (a slow path no model takes: they write whole tensors).
    fn write_halves(&self, dst: &GpuBuffer, src: &[f32]) {
        contract::write("write", src.len(), [dst.len]);
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
        let mut r = self.recording();
        r.submit(); // recorded work must see the old contents
        r.ctx.queue.write_buffer(&dst.buffer, dst.offset, bytes);
    }

    /// The first `len` 32-bit words of `src`, after all recorded work.
    fn read_words(&self, src: &GpuBuffer, len: usize) -> Vec<u32> {
        assert!(src.elem != Elem::F16, "read: buffer holds f16, not 32-bit words");
        contract::read(len, [src.len]);
        // (collected, not cast: a Vec<u8> need not be aligned for u32)
        bytemuck::pod_collect_to_vec(&self.read_bytes(src, 4 * len))
    }

    /// The first `len` elements of an f16 buffer, widened to f32.
    fn read_halves(&self, src: &GpuBuffer, len: usize) -> Vec<f32> {
        contract::read(len, [src.len]);
        let bytes = self.read_bytes(src, 2 * len);
        bytes.chunks_exact(2).take(len).map(|h| half::f16::from_le_bytes([h[0], h[1]]).to_f32()).collect()
    }

    /// The first `want` bytes of `src` rounded up to whole words (the buffer holds them), after all
    /// recorded work.
    fn read_bytes(&self, src: &GpuBuffer, want: usize) -> Vec<u8> {
        if want == 0 {
            return Vec::new();
        }
        let mut r = self.recording();
        r.submit();
        let (ctx, rec) = (r.ctx, &mut *r.rec);
        let bytes = want.next_multiple_of(4) as u64;
        if rec.staging_cap < bytes || rec.staging.is_none() {
            let cap = bytes.next_power_of_two().max(4096);
            rec.staging = Some(ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size: cap,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
            rec.staging_cap = cap;
        }
        let staging = rec.staging.clone().expect("staging buffer exists");
        let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        encoder.copy_buffer_to_buffer(&src.buffer, src.offset, &staging, 0, bytes);
        ctx.queue.submit([encoder.finish()]);
        rec.count_submission();
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
        ctx.device.poll(wgpu::PollType::wait_indefinitely()).expect("GPU device lost while waiting");
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
}
