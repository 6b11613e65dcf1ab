//! Scratch: temporary storage an op passes data through between its own dispatches (split-K
//! partial sums, packed weights, gathered operands), one buffer per key, kept between calls and
//! grown as needed.

use super::{Elem, GpuBackend, GpuBuffer};
use std::cell::RefCell;

impl GpuBackend {
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
}
