//! Inverted dropout with a counter-based mask (issue 13).
//!
//! A training step that uses dropout carries a [`Dropout`]: the rate `p`, the run's seed and the
//! optimizer step. Each place a model drops values (a *site*) has its own small integer id, and
//! [`DropMask::new`] derives from `(seed, step, site)` two 32-bit keys on the host. Element `i` of
//! the site's tensor is kept when [`mask_hash`]`(key, i) >= threshold`, `threshold = round(p * 2^32)`:
//! a pure function of `(seed, step, site, i)` in 32-bit integer arithmetic, computed identically by
//! the CPU backend and the WGSL shader (`shaders/dropout.wgsl`). Nothing random is stored or
//! carried: a resumed run draws the very same masks, a GPU run is deterministic, and the backward
//! recomputes the forward's mask instead of keeping it.
//!
//! Kept values are scaled by `1 / (1 - p)` (inverted dropout), so the expected value of every
//! element is unchanged and evaluation and generation use the model as it is: no dropout there.
//!
//! The op ([`crate::engine::Backend::dropout`]) works in place: `x[i] = keep(i) ? x[i] * scale : 0`.
//! It is linear and diagonal, so its backward is the same op on the gradient with the same mask:
//! `dx[i] = keep(i) ? dy[i] * scale : 0`. [`drop_site`] is the helper a model calls on a tensor.

use super::Backend;

/// The dropout of one training step: rate `p` in `[0, 1)`, the run's seed and the step (the
/// optimizer step being taken, 1-based), which together choose every mask of the step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub p: f32,
    pub seed: u64,
    pub step: u64,
}

/// The mask of one site in one step, ready for a backend: the hash keys, the integer threshold and
/// the scale of the kept values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropMask {
    pub key0: u32,
    pub key1: u32,
    /// Element `i` is kept when `mask_hash(key0, key1, i) >= threshold`.
    pub threshold: u32,
    /// `1 / (1 - p)` as f32 bits (bits, so that the mask is `Eq`).
    pub scale_bits: u32,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 32-bit finaliser (Chris Wellons' `lowbias32`): a bijection with good avalanche, written
/// with wrapping 32-bit multiplies so that WGSL's `u32` arithmetic gives the same bits.
pub fn mix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x7FEB_352D);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846C_A68B);
    h ^= h >> 16;
    h
}

/// The per-element hash: `mix32(mix32(i * 0x9E3779B9 + key0) ^ key1)`.
pub fn mask_hash(key0: u32, key1: u32, i: u32) -> u32 {
    mix32(mix32(i.wrapping_mul(0x9E37_79B9).wrapping_add(key0)) ^ key1)
}

impl DropMask {
    /// The mask of site `site` in the step `d`. Panics when `p` is outside `[0, 1)` (the options
    /// are checked before training starts).
    pub fn new(d: &Dropout, site: u32) -> DropMask {
        assert!((0.0..1.0).contains(&d.p), "dropout rate {} outside [0, 1)", d.p);
        let k = splitmix64(d.seed ^ splitmix64(d.step ^ splitmix64(0xD80F_0000_0000_0000 ^ site as u64)));
        let threshold = ((d.p as f64) * 4_294_967_296.0).round().min(u32::MAX as f64) as u32;
        DropMask { key0: k as u32, key1: (k >> 32) as u32, threshold, scale_bits: (1.0 / (1.0 - d.p)).to_bits() }
    }

    /// The scale of the kept values, `1 / (1 - p)`.
    pub fn scale(&self) -> f32 {
        f32::from_bits(self.scale_bits)
    }

    /// Whether element `i` is kept.
    pub fn keep(&self, i: usize) -> bool {
        mask_hash(self.key0, self.key1, i as u32) >= self.threshold
    }
}

/// Apply the dropout of site `site` to `x[0..n]` in place when `d` is on with `p > 0`; returns
/// whether it did. A model calls it at the same site, with the same `d` and `n`, on the forward
/// value and later on its gradient (the backward), so both see one mask.
pub fn drop_site<B: Backend>(b: &B, d: Option<&Dropout>, site: u32, x: &mut B::Buf, n: usize) -> bool {
    match d {
        Some(d) if d.p > 0.0 => {
            assert!(n <= u32::MAX as usize, "dropout: {n} elements exceed the 32-bit mask index");
            b.dropout(x, n, DropMask::new(d, site));
            true
        }
        _ => false,
    }
}

/// Whether `d` drops anything.
pub fn active(d: Option<&Dropout>) -> bool {
    d.is_some_and(|d| d.p > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keep_rate_is_one_minus_p_and_masks_differ_by_site_and_step() {
        let d = Dropout { p: 0.3, seed: 7, step: 11 };
        let m = DropMask::new(&d, 2);
        let n = 100_000;
        let kept = (0..n).filter(|&i| m.keep(i)).count() as f64 / n as f64;
        assert!((kept - 0.7).abs() < 0.01, "kept {kept}");
        assert_eq!(m.scale(), 1.0 / 0.7);
        for other in [DropMask::new(&d, 3), DropMask::new(&Dropout { step: 12, ..d }, 2), DropMask::new(&Dropout { seed: 8, ..d }, 2)] {
            let same = (0..n).filter(|&i| m.keep(i) == other.keep(i)).count() as f64 / n as f64;
            // Independent masks agree on 0.7^2 + 0.3^2 = 58% of the elements.
            assert!((same - 0.58).abs() < 0.01, "{other:?} agrees with {m:?} on {same}");
        }
        assert_eq!(DropMask::new(&d, 2), m, "the mask is a function of (seed, step, site)");
        assert_eq!(DropMask::new(&Dropout { p: 0.0, ..d }, 2).threshold, 0, "p = 0 keeps everything");
    }

    #[test]
    fn mix32_matches_known_values() {
        // lowbias32's published test vector: lowbias32(0) = 0, and it is a bijection on small ranges.
        assert_eq!(mix32(0), 0);
        let mut seen: Vec<u32> = (0..4096).map(mix32).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 4096);
    }
}
