//! Branch-free `exp`, `sigmoid` and `tanh` for f32 that the compiler turns into SIMD loops.
//!
//! The C library's `expf` / `tanhf` are scalar calls (tens of cycles each) and dominated the
//! element-wise ops (the gated units, the softmax). These are the Cephes single-precision
//! algorithms, written without branches or library calls so that a loop over a slice vectorises:
//!
//! * `exp(x)`: `x = n ln2 + r` with `|r| <= ln2/2` (`n` rounded by adding and subtracting 1.5 * 2^23,
//!   `ln2` split in two constants so that `r` is exact), `e^r` by a degree-7 polynomial, `2^n` put
//!   straight into the exponent bits. `x` is clamped to `[-87.3, 88.3]`, the range where `e^x` is
//!   a normal float, so the result is never 0, infinite or NaN for finite input (for `x < -87.3` it
//!   returns `e^-87.3 ~ 1.2e-38` instead of a smaller number or 0). Error about 1 ulp.
//! * `tanh(x)`: for `|x| < 0.625` the odd polynomial `x + x^3 P(x^2)` (no cancellation near 0),
//!   else `sign(x) (1 - 2 / (e^{2|x|} + 1))`; the argument of `exp` is clamped at 2|x| <= 88, where
//!   tanh is 1 in f32 anyway. Error a few ulp.
//! * `sigmoid(x) = 1 / (1 + e^-x)`.
//!
//! NaN inputs give NaN for `tanh` and `sigmoid` (the clamp keeps NaN) like the library versions.

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split into a part with few mantissa bits (exact when multiplied by n) and the rest.
const LN2_HI: f32 = 0.693_359_4; // 0.693359375 = 355/512 exactly
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding it rounds a float of magnitude < 2^22 to an integer, held in the low bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Below 128 ln 2 = 88.72 with room: round(x / ln2) must stay <= 127.
const EXP_MAX: f32 = 88.3;
const EXP_MIN: f32 = -87.33;

/// `e^x` (see the module doc for range and accuracy).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN, EXP_MAX);
    // n = round(x / ln2), read from the low bits of t: t = 1.5 * 2^23 + n exactly.
    let t = x * LOG2E + ROUND_MAGIC;
    let n = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let nf = t - ROUND_MAGIC;
    let r = x - nf * LN2_HI - nf * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5e-1;
    let er = p * r * r + r + 1.0;
    // 2^n for n in [-126, 127]: EXP_MAX / ln2 = 127.4 rounds to 127.
    let scale = f32::from_bits(((n + 127) as u32) << 23);
    er * scale
}

/// `1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh(x)` (see the module doc).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    // Small |x|: Cephes' odd polynomial.
    let z = x * x;
    let mut p = -5.704_988_7e-3f32;
    p = p * z + 2.063_909e-2;
    p = p * z - 5.373_971_6e-2;
    p = p * z + 1.333_144_2e-1;
    p = p * z - 3.333_328e-1;
    let small = p * z * x + x;
    // Large |x|: 1 - 2 / (e^{2|x|} + 1), with the sign of x.
    let e = exp((2.0 * a).min(88.0));
    let large = (1.0 - 2.0 / (e + 1.0)).copysign(x);
    // Written so that NaN (for which both comparisons are false) takes the polynomial, giving NaN.
    if a >= 0.625 {
        large
    } else {
        small
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 97th f32 bit pattern in [lo, hi] plus the ends: a few hundred thousand points.
    fn sweep(lo: f32, hi: f32) -> Vec<f32> {
        let mut xs = Vec::new();
        for sign in [1.0f32, -1.0] {
            let (a, b) = if sign > 0.0 { (0.0f32, hi) } else { (0.0f32, -lo) };
            let mut bits = a.to_bits();
            while f32::from_bits(bits) <= b {
                xs.push(sign * f32::from_bits(bits));
                bits += 97;
            }
            xs.push(sign * b);
        }
        xs
    }

    /// Relative error against the f64 function, with an absolute floor for results near 0.
    fn max_err(f: impl Fn(f32) -> f32, g: impl Fn(f64) -> f64, xs: &[f32], floor: f64) -> (f64, f32) {
        xs.iter().fold((0.0, 0.0), |(worst, at), &x| {
            let want = g(x as f64);
            let err = (f(x) as f64 - want).abs() / want.abs().max(floor);
            if err > worst {
                (err, x)
            } else {
                (worst, at)
            }
        })
    }

    #[test]
    fn exp_is_within_a_few_ulp_over_the_normal_range() {
        // f32 epsilon is 1.19e-7; Cephes' expf is within about 1 ulp: allow 3 (3.6e-7).
        let (err, at) = max_err(exp, f64::exp, &sweep(-87.0, 88.0), 0.0);
        assert!(err < 3.6e-7, "exp: relative error {err:e} at {at}");
        assert_eq!(exp(0.0), 1.0);
        // Clamped ends: tiny and huge but finite, never 0 or infinity.
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 2e-38);
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 2e38);
    }

    #[test]
    fn tanh_and_sigmoid_match_f64_closely() {
        let xs = sweep(-30.0, 30.0);
        // A few ulp relative error (floor 1e-30 only guards the division at x = 0).
        let (err, at) = max_err(tanh, f64::tanh, &xs, 1e-30);
        assert!(err < 6e-7, "tanh: relative error {err:e} at {at}");
        // sigmoid -> 0 for very negative x, where its relative error grows with that of exp
        // and of 1 + e^-x: compare relative to max(value, 1e-6), well below what training sees.
        let (err, at) = max_err(sigmoid, |x| 1.0 / (1.0 + (-x).exp()), &xs, 1e-6);
        assert!(err < 6e-7, "sigmoid: relative error {err:e} at {at}");
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
        assert!(tanh(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan());
        // Odd symmetry holds exactly.
        for &x in &xs[..1000] {
            assert_eq!(tanh(-x), -tanh(x));
        }
    }
}
