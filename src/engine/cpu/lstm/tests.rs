//! Tests of the CPU LSTM recurrence: the packed kernel against the plain FMA chain, the panels,
//! independence from the thread count, and the fast exp/sigmoid/tanh against libm.

use super::*;

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 8e6 - 1.0).collect()
}

/// The packed kernel sums every element exactly as one FMA chain in ascending k: bit-equal to
/// that plain loop, for sizes that leave short row blocks and short panels, on both tiles.
#[test]
fn packed_gemm_is_the_ascending_fma_chain() {
    fn check<const MR: usize, const NR: usize>(m: usize, k: usize, n: usize) {
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let packed = pack_panels(k, n, &b, (n, 1), NR);
        let mut c = vec![f32::NAN; m * n];
        packed_gemm::<MR, NR>(m, k, n, &a, k, &packed, |r, j0, v| c[r * n + j0..][..v.len()].copy_from_slice(v));
        for r in 0..m {
            for j in 0..n {
                let want = (0..k).fold(0.0f32, |s, kk| a[r * k + kk].mul_add(b[kk * n + j], s));
                assert_eq!(c[r * n + j].to_bits(), want.to_bits(), "({r}, {j}) of {m}x{k}x{n}");
            }
        }
    }
    for (m, k, n) in [(1, 1, 1), (5, 7, 20), (9, 33, 70), (4, 16, 32), (3, 5, 130)] {
        check::<4, 16>(m, k, n);
        check::<4, 32>(m, k, n);
        check::<WIDE_MR, 32>(m, k, n);
        check::<1, ROW_NR>(m, k, n);
    }
}

/// Packing gives `B[kk, p*nr + jj]` at `(p*k + kk)*nr + jj` and zeros past column n, on the
/// transposing 16 x 16 tile path (B's columns contiguous, as for `W_hh^T`) and the plain one.
#[test]
fn pack_panels_places_every_value() {
    for (k, n, nr, sb) in [(32, 64, 32, (1, 32)), (48, 256, 128, (1, 48)), (32, 70, 32, (1, 32)), (20, 40, 16, (40, 1))] {
        let b = values(k * n, 9);
        let packed = pack_panels(k, n, &b, sb, nr);
        assert_eq!(packed.len(), n.div_ceil(nr) * k * nr);
        for p in 0..n.div_ceil(nr) {
            for kk in 0..k {
                for jj in 0..nr {
                    let j = p * nr + jj;
                    let want = if j < n { b[kk * sb.0 + j * sb.1] } else { 0.0 };
                    assert_eq!(packed[(p * k + kk) * nr + jj], want, "k={k} n={n} nr={nr} ({kk}, {j})");
                }
            }
        }
    }
}

/// Forward and backward give bit-identical results whatever the number of threads (so the
/// batch chunking) is.
#[test]
fn recurrence_does_not_depend_on_the_thread_count() {
    let l = Lstm { batch: 7, time: 5, hidden: 6 };
    let (n, h) = (l.batch * l.time, l.hidden);
    let (xw, w_hh) = (values(n * 4 * h, 3), values(4 * h * h, 4));
    let (h0, c0, dhs) = (values(l.batch * h, 5), values(l.batch * h, 6), values(n * h, 7));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("thread pool");
        pool.install(|| {
            let (mut hs, mut cs, mut gates) = (vec![0.0; n * h], vec![0.0; n * h], vec![0.0; n * 4 * h]);
            forward(&xw, &w_hh, &h0, &c0, LstmSeqs { hs: &mut hs, cs: &mut cs, gates: &mut gates }, l);
            let (mut dxw, mut dw_hh) = (vec![0.0; n * 4 * h], vec![0.0; 4 * h * h]);
            let saved = LstmSaved { h0: &h0[..], c0: &c0[..], seqs: LstmSeqs { hs: &hs[..], cs: &cs[..], gates: &gates[..] } };
            backward(&w_hh, saved, &dhs, &mut dxw, &mut dw_hh, l);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            [bits(&hs), bits(&cs), bits(&gates), bits(&dxw), bits(&dw_hh)]
        })
    };
    let one = run(1);
    for threads in [2, 3, 7] {
        assert!(one == run(threads), "{threads} threads differ from 1");
    }
}

#[test]
fn fast_exp_sigmoid_and_tanh_match_libm() {
    let mut worst_exp = 0.0f32;
    for k in -86_999..=87_999 {
        let x = k as f32 * 1e-3;
        let (got, want) = (exp(x), x.exp());
        worst_exp = worst_exp.max(((got - want) / want).abs());
        let s = 1.0 / (1.0 + (-x as f64).exp());
        assert!((sigmoid(x) as f64 - s).abs() < 2e-7, "sigmoid({x})");
        assert!((tanh(x) as f64 - (x as f64).tanh()).abs() < 2e-7, "tanh({x})");
    }
    // 2 ulp relative.
    assert!(worst_exp < 2.5e-7, "exp relative error {worst_exp}");
    // Saturation, no NaN or infinity.
    for x in [-1e30f32, -200.0, 200.0, 1e30] {
        assert!(sigmoid(x).is_finite() && tanh(x).is_finite());
        assert!((tanh(x).abs() - 1.0).abs() < 1e-7 && (sigmoid(x) - if x > 0.0 { 1.0 } else { 0.0 }).abs() < 1e-7);
    }
}
