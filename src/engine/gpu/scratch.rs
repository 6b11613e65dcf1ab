//! Scratch: temporary storage an op passes data through between its own dispatches (split-K
//! partial sums, packed weights, gathered operands).
//!
//! Each op family names its own buffers (a key such as `"matmul_split"`), kept between calls and
//! grown on demand. An op *takes* its buffer out of the store for as long as it records the
//! dispatches that use it (`Recording::with_scratch` in `recorder.rs`) and puts it back afterwards, so the buffer
//! belongs to that op alone meanwhile: an op that records another inside (the LSTM backward's
//! dW_hh product runs the split-K matrix product on its gathered operand) gets buffers of its own,
//! and a nested use of the same key would get a fresh buffer rather than share one. No lock is
//! involved: the store lives in the [`super::recorder::Recorder`], which an op holds exclusively
//! while it records (see `recorder.rs`).

use super::{Elem, GpuBuffer};
use std::collections::HashMap;

/// The scratch buffers not in use, by key.
#[derive(Default)]
pub(crate) struct Scratch {
    free: HashMap<&'static str, GpuBuffer>,
}

impl Scratch {
    /// The buffer kept under `key` when it holds at least `len` elements of type `elem`, taken out
    /// of the store (it is the caller's until [`Scratch::put`] returns it).
    pub(crate) fn take(&mut self, key: &'static str, len: usize, elem: Elem) -> Option<GpuBuffer> {
        match self.free.remove(key) {
            Some(b) if b.len >= len && b.elem == elem => Some(b),
            _ => None,
        }
    }

    /// Keeps `buf` under `key` for the next [`Scratch::take`].
    pub(crate) fn put(&mut self, key: &'static str, buf: GpuBuffer) {
        self.free.insert(key, buf);
    }

    /// Keys of the buffers not in use (tests).
    #[cfg(test)]
    fn free_keys(&self) -> Vec<&'static str> {
        let mut keys: Vec<_> = self.free.keys().copied().collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::gpu::tests::{own_gpu, random, upload};
    use crate::engine::gpu::KernelVariant;
    use crate::engine::{Backend, Lstm, LstmSaved, LstmSeqs};

    /// A buffer is kept between uses of its key and grown on demand; while an op holds it, a
    /// nested use of the same key gets a buffer of its own; afterwards it is back in the store.
    #[test]
    fn scratch_is_owned_while_in_use_and_kept_between_uses() {
        let g = own_gpu();
        let mut r = g.recording();
        let first = r.with_scratch("t", 10, |_, b| b.id);
        assert_eq!(r.with_scratch("t", 10, |_, b| b.id), first, "kept between uses");
        assert_eq!(r.with_scratch("t", 4, |_, b| (b.id, b.len)), (first, 10), "a smaller request reuses it");
        let (outer, inner) = r.with_scratch("t", 10, |r, a| (a.id, r.with_scratch("t", 10, |_, b| b.id)));
        assert_eq!(outer, first);
        assert_ne!(inner, outer, "a nested use of the key must not share the buffer in use");
        let grown = r.with_scratch("t", 11, |_, b| (b.id, b.len));
        assert!(grown.0 != first && grown.1 == 11, "grown on demand: {grown:?}");
        assert_eq!(r.rec.scratch.free_keys(), ["t"]);
    }

    /// The LSTM backward records the split-K product (portable kernels, k = B*T long, few output
    /// tiles) on the Hprev it gathered into its own scratch: nested scratch of two families, one
    /// recording, no second lock; every buffer is back in the store afterwards.
    #[test]
    fn lstm_backward_nests_the_matmul_scratch_in_one_recording() {
        let g = own_gpu();
        g.set_kernel_variant(KernelVariant::Portable);
        let l = Lstm { batch: 16, time: 64, hidden: 8 };
        let (n, h) = (l.batch * l.time, l.hidden);
        let xw = upload(&g, &random(1, n * 4 * h));
        let w_hh = upload(&g, &random(2, 4 * h * h));
        let (h0, c0, dhs) = (upload(&g, &random(3, l.batch * h)), upload(&g, &random(4, l.batch * h)), upload(&g, &random(5, n * h)));
        let (mut hs, mut cs, mut gates) = (g.alloc(n * h), g.alloc(n * h), g.alloc(n * 4 * h));
        let (mut dxw, mut dw_hh) = (g.alloc(n * 4 * h), g.alloc(4 * h * h));
        g.lstm_fwd(&xw, &w_hh, &h0, &c0, LstmSeqs { hs: &mut hs, cs: &mut cs, gates: &mut gates }, l);
        g.lstm_bwd(&w_hh, LstmSaved { h0: &h0, c0: &c0, seqs: LstmSeqs { hs: &hs, cs: &cs, gates: &gates } }, &dhs, &mut dxw, &mut dw_hh, l);
        assert!(g.read(&dw_hh, 4 * h * h).iter().all(|x| x.is_finite()));
        assert_eq!(g.recording().rec.scratch.free_keys(), ["lstm_hprev", "lstm_pack", "matmul_split"]);
    }
}
