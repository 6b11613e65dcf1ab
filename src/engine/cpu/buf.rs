//! [`CpuBuf`], the CPU backend's float storage: a run of f32 in host memory that is either a
//! buffer of its own or a view into another's storage (a parameter arena, see
//! [`crate::engine::optim`]). Every operation sees it as a slice (`Deref<Target = [f32]>`), so
//! the kernels are the same whichever it is.
//!
//! # Storage and aliasing
//!
//! The storage is one zeroed allocation whose first element sits on a cache line ([`ALIGN`]
//! bytes), shared by reference count between a buffer and its views and freed with the last of
//! them. A view is a
//! window `offset..offset + len` of it. Borrowing a buffer (`&buf[..]`, `&mut buf[..]`) borrows
//! its window only, so Rust's borrow rules hold as long as windows that are borrowed at the same
//! time, mutably by one of them, do not overlap. Buffers of their own never overlap; views are made
//! only through [`CpuBuf::view`], which is `unsafe` and states that rule as its contract. The
//! parameter arenas keep it by construction: the tensors' views are disjoint, and the whole-arena
//! views are used only by the bookkeeping ops (zeroing, the norm, Adam), which take no tensor's
//! view beside them.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Alignment of every storage allocation, in bytes: one cache line, one AVX-512 vector.
pub const ALIGN: usize = 64;

/// One zeroed allocation holding `len` f32 from an [`ALIGN`]-aligned address. It asks the system
/// allocator for `len + PAD` f32 at f32's own alignment, which it serves with `calloc` (fresh pages
/// come zeroed from the kernel and are committed only when touched, as with `vec![0.0; n]`; a
/// stricter alignment would make it write every page at once), and starts at the first cache-line
/// boundary inside. A dangling, aligned address when `len` is 0.
struct Storage {
    /// What the allocator returned (freed with `layout`).
    base: NonNull<f32>,
    /// The first element: `base` rounded up to [`ALIGN`] bytes.
    ptr: NonNull<f32>,
    len: usize,
    /// A number no other storage of this process has (never reused, unlike an address).
    id: u64,
    /// Mutable borrows of any of its windows so far (see [`CpuBuf::stamp`]).
    writes: AtomicU64,
}

/// The next [`Storage::id`].
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Spare f32 at the start of an allocation, enough to reach an [`ALIGN`] boundary from any
/// f32-aligned address.
const PAD: usize = ALIGN / 4 - 1;

impl Storage {
    fn layout(len: usize) -> Layout {
        len.checked_add(PAD).and_then(|n| Layout::array::<f32>(n).ok()).expect("cpu buffer: size overflows")
    }

    fn zeroed(len: usize) -> Self {
        if len == 0 {
            // An aligned, non-null, never-read address (no allocation for an empty buffer).
            let ptr = NonNull::new(ALIGN as *mut f32).expect("non-null");
            return Storage { base: ptr, ptr, len, id: NEXT_ID.fetch_add(1, Ordering::Relaxed), writes: AtomicU64::new(0) };
        }
        let layout = Self::layout(len);
        // SAFETY: `layout` has a non-zero size (len > 0).
        let raw = unsafe { alloc::alloc_zeroed(layout) } as *mut f32;
        let base = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        let skip = (raw as usize).next_multiple_of(ALIGN) - raw as usize;
        // SAFETY: `raw` is f32-aligned, so `skip` is a whole number of f32 and at most PAD of them:
        // the window `skip / 4 .. skip / 4 + len` lies inside the allocation.
        let ptr = unsafe { base.add(skip / 4) };
        Storage { base, ptr, len, id: NEXT_ID.fetch_add(1, Ordering::Relaxed), writes: AtomicU64::new(0) }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: allocated in `zeroed` with this same layout, at `base`.
            unsafe { alloc::dealloc(self.base.as_ptr() as *mut u8, Self::layout(self.len)) };
        }
    }
}

// SAFETY: `Storage` owns plain f32 memory. Access to it goes through `CpuBuf`'s windows, whose
// borrows follow Rust's rules as long as overlapping views are not borrowed at once, which is the
// contract of the only way to make a view (`CpuBuf::view`, unsafe).
unsafe impl Send for Storage {}
unsafe impl Sync for Storage {}

/// The CPU backend's float buffer: a slice of f32 that may share its storage with other views
/// (see the module documentation). Cloning copies the values into a buffer of its own, like a
/// `Vec`.
pub struct CpuBuf {
    storage: Arc<Storage>,
    offset: usize,
    len: usize,
}

impl CpuBuf {
    /// `len` zeros, in storage of its own.
    pub fn zeros(len: usize) -> Self {
        CpuBuf { storage: Arc::new(Storage::zeroed(len)), offset: 0, len }
    }

    /// `len` copies of `value`, in storage of its own.
    pub fn filled(len: usize, value: f32) -> Self {
        let mut buf = CpuBuf::zeros(len);
        buf.fill(value);
        buf
    }

    /// A view of `len` elements of `self` from element `offset`, sharing its storage.
    ///
    /// # Safety
    /// While the view lives, no window of the same storage that overlaps it may be borrowed at
    /// the same time as the view when one of the two borrows is mutable (`&mut buf[..]`, or any
    /// operation that writes either): overlapping views are for use one at a time.
    ///
    /// # Panics
    /// When the view does not lie inside `self`.
    pub unsafe fn view(&self, offset: usize, len: usize) -> CpuBuf {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.len),
            "cpu view: {offset}..{offset}+{len} lies outside a buffer of {} elements",
            self.len
        );
        CpuBuf { storage: self.storage.clone(), offset: self.offset + offset, len }
    }

    /// What the window holds, as far as a cache of values derived from it needs: its storage (by
    /// a number never reused), its place in it, and how many times any window of that storage has
    /// been borrowed mutably so far. Two equal stamps mean equal contents (a write anywhere in the
    /// storage changes the stamp, so a stale stamp is never taken for a fresh one). The CPU
    /// backend keeps each LSTM's packed `W_hh` under its stamp, so it is packed once per
    /// weight update.
    pub fn stamp(&self) -> (u64, usize, usize, u64) {
        (self.storage.id, self.offset, self.len, self.storage.writes.load(Ordering::Acquire))
    }

    /// Whether `self` and `other` are windows of one storage.
    pub fn shares_storage(&self, other: &CpuBuf) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }
}

impl Deref for CpuBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: the window lies inside the storage (checked when it was made), which lives as
        // long as `self`; see the module documentation for aliasing.
        unsafe { std::slice::from_raw_parts(self.storage.ptr.as_ptr().add(self.offset), self.len) }
    }
}

impl DerefMut for CpuBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        self.storage.writes.fetch_add(1, Ordering::AcqRel);
        // SAFETY: as in `deref`; a mutable borrow of this window while an overlapping one is
        // borrowed is excluded by `view`'s contract.
        unsafe { std::slice::from_raw_parts_mut(self.storage.ptr.as_ptr().add(self.offset), self.len) }
    }
}

impl Clone for CpuBuf {
    fn clone(&self) -> Self {
        CpuBuf::from(&self[..])
    }
}

impl Default for CpuBuf {
    fn default() -> Self {
        CpuBuf::zeros(0)
    }
}

impl From<&[f32]> for CpuBuf {
    fn from(values: &[f32]) -> Self {
        let mut buf = CpuBuf::zeros(values.len());
        buf.copy_from_slice(values);
        buf
    }
}

impl From<Vec<f32>> for CpuBuf {
    fn from(values: Vec<f32>) -> Self {
        CpuBuf::from(&values[..])
    }
}

impl<const N: usize> From<[f32; N]> for CpuBuf {
    fn from(values: [f32; N]) -> Self {
        CpuBuf::from(&values[..])
    }
}

impl FromIterator<f32> for CpuBuf {
    fn from_iter<I: IntoIterator<Item = f32>>(iter: I) -> Self {
        CpuBuf::from(iter.into_iter().collect::<Vec<f32>>())
    }
}

impl<'a> IntoIterator for &'a CpuBuf {
    type Item = &'a f32;
    type IntoIter = std::slice::Iter<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<'a> IntoIterator for &'a mut CpuBuf {
    type Item = &'a mut f32;
    type IntoIter = std::slice::IterMut<'a, f32>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter_mut()
    }
}

impl PartialEq<CpuBuf> for Vec<f32> {
    fn eq(&self, other: &CpuBuf) -> bool {
        self[..] == other[..]
    }
}

impl PartialEq<CpuBuf> for [f32] {
    fn eq(&self, other: &CpuBuf) -> bool {
        *self == other[..]
    }
}

impl fmt::Debug for CpuBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for CpuBuf {
    fn eq(&self, other: &CpuBuf) -> bool {
        self[..] == other[..]
    }
}

impl PartialEq<Vec<f32>> for CpuBuf {
    fn eq(&self, other: &Vec<f32>) -> bool {
        self[..] == other[..]
    }
}

impl PartialEq<[f32]> for CpuBuf {
    fn eq(&self, other: &[f32]) -> bool {
        self[..] == *other
    }
}

impl<const N: usize> PartialEq<[f32; N]> for CpuBuf {
    fn eq(&self, other: &[f32; N]) -> bool {
        self[..] == other[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_share_storage_and_clones_do_not() {
        let mut whole = CpuBuf::zeros(40);
        // SAFETY: the two views are disjoint, and `whole` is not borrowed while they are.
        let (mut a, b) = unsafe { (whole.view(16, 8), whole.view(32, 8)) };
        a.fill(2.0);
        assert_eq!(&whole[16..24], &[2.0; 8]);
        assert_eq!(b, vec![0.0; 8]);
        let copy = a.clone();
        a.fill(3.0);
        assert_eq!(copy, vec![2.0; 8], "a clone is a buffer of its own");
        assert!(a.shares_storage(&whole) && !copy.shares_storage(&whole));
        whole[20] = 5.0;
        assert_eq!(a[4], 5.0);
        drop(whole);
        assert_eq!(a[4], 5.0, "the storage lives as long as a view of it");
    }

    #[test]
    fn storage_is_aligned_to_a_cache_line() {
        for n in [1, 3, 17, 1000] {
            assert_eq!(CpuBuf::zeros(n).as_ptr() as usize % ALIGN, 0);
        }
        assert!(CpuBuf::zeros(0).is_empty());
    }

    #[test]
    #[should_panic(expected = "cpu view: 8..8+4 lies outside a buffer of 10 elements")]
    fn a_view_outside_its_buffer_panics() {
        // SAFETY: panics before a view exists.
        let _ = unsafe { CpuBuf::zeros(10).view(8, 4) };
    }
}
