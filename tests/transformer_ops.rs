//! The Transformer's ops on the CPU backend (issue 26): LayerNorm, GELU (tanh form) and causal
//! attention with a relative term, forward against plain f64 loops of the formulas, backward
//! against central finite differences (sizes off every power of two, several heads, a relative
//! table longer than the window); outputs that must be written are pre-filled with garbage and
//! gradients that must accumulate start from a known offset. The one-step decode with its ring
//! cache against the full forward (inside the window) and against the windowed formula past it.
mod common;

use common::{numeric_grad, random_vec};
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::{Backend, LayerNorm, RelAttention, RelDecode};

fn close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f64, |m, w| m.max(w.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= tol * (1.0 + scale), "{what}[{i}]: got {g}, want {w} (scale {scale})");
    }
}

fn ra(batch: usize, heads: usize, dim: usize, time: usize, window: usize) -> RelAttention {
    RelAttention { batch, heads, dim, time, window }
}

/// `out [B, T, H*D]` of the relative attention in f64, straight from the formula.
fn rel_reference(qkv: &[f32], rel: &[f32], a: RelAttention) -> Vec<f64> {
    let (hh, d, t, w) = (a.heads, a.dim, a.time, a.width());
    let scale = 1.0 / (d as f64).sqrt();
    let at = |b: usize, i: usize, part: usize, h: usize, x: usize| qkv[(b * t + i) * 3 * w + part * w + h * d + x] as f64;
    let mut out = vec![0.0f64; a.out_len()];
    for b in 0..a.batch {
        for h in 0..hh {
            for i in 0..t {
                let s: Vec<f64> = (0..=i)
                    .map(|j| {
                        scale * (0..d).map(|x| at(b, i, 0, h, x) * (at(b, j, 1, h, x) + rel[(h * a.window + i - j) * d + x] as f64)).sum::<f64>()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|v| (v - mx).exp()).sum();
                for x in 0..d {
                    out[(b * t + i) * w + h * d + x] = (0..=i).map(|j| (s[j] - mx).exp() / z * at(b, j, 2, h, x)).sum();
                }
            }
        }
    }
    out
}

fn rel_fwd(be: &CpuBackend, qkv: &[f32], rel: &[f32], a: RelAttention) -> (CpuBuf, CpuBuf) {
    let (mut out, mut p) = (CpuBuf::filled(a.out_len(), 7.0), CpuBuf::filled(a.p_len(), -3.0));
    be.rel_attention_fwd(&CpuBuf::from(qkv), &CpuBuf::from(rel), &mut out, &mut p, a);
    (out, p)
}

#[test]
fn rel_attention_forward_matches_the_formula() {
    let be = CpuBackend::new();
    for (s, a) in [ra(1, 1, 1, 1, 1), ra(2, 1, 3, 5, 5), ra(1, 3, 5, 13, 17), ra(3, 2, 4, 9, 9), ra(2, 2, 8, 70, 70)].into_iter().enumerate() {
        let seed = 10 * s as u64;
        let qkv: CpuBuf = random_vec(seed, a.qkv_len()).iter().map(|v| 2.0 * v).collect();
        let rel = random_vec(seed + 1, a.rel_len());
        let (out, p) = rel_fwd(&be, &qkv, &rel, a);
        close(&format!("{a:?} out"), &out, &rel_reference(&qkv, &rel, a), 2e-5);
        // Rows sum to one, nothing above the diagonal.
        for (r, row) in p.chunks_exact(a.time).enumerate() {
            let i = r % a.time;
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{a:?}: row {r} of p sums to {}", row.iter().sum::<f32>());
            assert!(row[i + 1..].iter().all(|&v| v == 0.0), "{a:?}: row {r} of p looks ahead");
        }
    }
}

/// The relative term matters: the same q, k, v with another table give another output, and a
/// table whose rows differ only past the window gives the same one.
#[test]
fn rel_attention_reads_only_the_distances_inside_the_window() {
    let be = CpuBackend::new();
    let a = ra(1, 2, 3, 6, 10);
    let qkv = random_vec(5, a.qkv_len());
    let rel = random_vec(6, a.rel_len());
    let (out, _) = rel_fwd(&be, &qkv, &rel, a);
    let mut far = rel.clone();
    for h in 0..a.heads {
        for r in a.time..a.window {
            for x in 0..a.dim {
                far[(h * a.window + r) * a.dim + x] += 5.0;
            }
        }
    }
    assert_eq!(&out[..], &rel_fwd(&be, &qkv, &far, a).0[..], "rows past the window changed the output");
    let mut near = rel.clone();
    near[a.dim] += 1.0; // head 0, distance 1
    assert_ne!(&out[..], &rel_fwd(&be, &qkv, &near, a).0[..], "distance 1 of head 0 is ignored");
}

#[test]
fn rel_attention_backward_matches_finite_differences() {
    let be = CpuBackend::new();
    for (s, a) in [ra(1, 1, 2, 3, 3), ra(2, 3, 3, 7, 9), ra(1, 2, 5, 11, 11)].into_iter().enumerate() {
        let seed = 50 + 10 * s as u64;
        let mut qkv = random_vec(seed, a.qkv_len());
        let mut rel = random_vec(seed + 1, a.rel_len());
        let r = random_vec(seed + 2, a.out_len());
        let loss = |qkv: &[f32], rel: &[f32]| -> f64 {
            let (out, _) = rel_fwd(&be, qkv, rel, a);
            out.iter().zip(r.iter()).map(|(&o, &r)| o as f64 * r as f64).sum()
        };
        let (_, p) = rel_fwd(&be, &qkv, &rel, a);
        let mut dqkv = CpuBuf::filled(a.qkv_len(), 9.0);
        let mut drel = CpuBuf::filled(a.rel_len(), 0.5);
        be.rel_attention_bwd(&CpuBuf::from(&qkv[..]), &CpuBuf::from(&rel[..]), &p, &CpuBuf::from(&r[..]), &mut dqkv, &mut drel, a);
        let rel_now = rel.clone();
        let num_qkv = numeric_grad(&mut qkv, 1e-2, |x| loss(x, &rel_now));
        let qkv_now = qkv.clone();
        let num_rel = numeric_grad(&mut rel, 1e-2, |x| loss(&qkv_now, x));
        close(&format!("{a:?} dqkv"), &dqkv, &num_qkv, 2e-3);
        // drel accumulates onto the 0.5 it held; rows past the window are left alone (their
        // finite difference is exactly 0).
        let got: Vec<f32> = drel.iter().map(|g| g - 0.5).collect();
        close(&format!("{a:?} drel"), &got, &num_rel, 2e-3);
    }
}

fn decode(be: &CpuBackend, qkv_row: &[f32], kc: &[f32], vc: &[f32], rel: &[f32], a: RelDecode) -> CpuBuf {
    let mut out = CpuBuf::filled(a.batch * a.width(), 4.0);
    be.rel_attention_decode(&CpuBuf::from(qkv_row), &CpuBuf::from(kc), &CpuBuf::from(vc), &CpuBuf::from(rel), &mut out, a);
    out
}

/// Steps 1..=n through the ring cache: inside the window each step equals the last row of the
/// full forward over the prefix; past it, the formula over the last `window` positions.
#[test]
fn decode_with_a_ring_cache_matches_the_full_forward_and_the_windowed_formula() {
    let be = CpuBackend::new();
    let (batch, heads, dim, window) = (2, 3, 4, 7);
    let w = heads * dim;
    let steps = 2 * window + 3;
    let seq = ra(batch, heads, dim, steps, steps);
    let qkv = random_vec(77, seq.qkv_len());
    let rel = random_vec(78, heads * window * dim);
    let (mut kc, mut vc) = (vec![0.0f32; batch * window * w], vec![0.0f32; batch * window * w]);
    for len in 1..=steps {
        let pos = len - 1;
        let mut row = vec![0.0f32; batch * 3 * w];
        for b in 0..batch {
            let src = &qkv[(b * steps + pos) * 3 * w..][..3 * w];
            row[b * 3 * w..][..3 * w].copy_from_slice(src);
            kc[(b * window + pos % window) * w..][..w].copy_from_slice(&src[w..2 * w]);
            vc[(b * window + pos % window) * w..][..w].copy_from_slice(&src[2 * w..]);
        }
        let a = RelDecode { batch, heads, dim, window, len };
        let got = decode(&be, &row, &kc, &vc, &rel, a);
        // The windowed formula: the last min(len, window) positions of each item, as a sequence
        // of their own, with the query its last row.
        let n = len.min(window);
        let sub = ra(batch, heads, dim, n, window);
        let mut sub_qkv = vec![0.0f32; sub.qkv_len()];
        for b in 0..batch {
            for i in 0..n {
                let src = &qkv[(b * steps + len - n + i) * 3 * w..][..3 * w];
                sub_qkv[(b * n + i) * 3 * w..][..3 * w].copy_from_slice(src);
            }
        }
        let want = rel_reference(&sub_qkv, &rel, sub);
        let last: Vec<f64> = (0..batch).flat_map(|b| want[(b * n + n - 1) * w..][..w].to_vec()).collect();
        close(&format!("decode len {len}"), &got, &last, 2e-5);
        if len <= window {
            // Inside the window the formula is the full forward's row.
            let full = ra(batch, heads, dim, len, window);
            let mut prefix = vec![0.0f32; full.qkv_len()];
            for b in 0..batch {
                prefix[b * len * 3 * w..][..len * 3 * w].copy_from_slice(&qkv[b * steps * 3 * w..][..len * 3 * w]);
            }
            let (out, _) = rel_fwd(&be, &prefix, &rel, full);
            let rows: Vec<f64> = (0..batch).flat_map(|b| out[(b * len + len - 1) * w..][..w].iter().map(|&v| v as f64).collect::<Vec<_>>()).collect();
            close(&format!("decode len {len} vs forward"), &got, &rows, 1e-5);
        }
    }
}

fn ln_reference(x: &[f32], w: &[f32], b: &[f32], rows: usize, width: usize) -> Vec<f64> {
    let mut y = vec![0.0; rows * width];
    for r in 0..rows {
        let xr: Vec<f64> = x[r * width..][..width].iter().map(|&v| v as f64).collect();
        let mean = xr.iter().sum::<f64>() / width as f64;
        let var = xr.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
        for c in 0..width {
            y[r * width + c] = (xr[c] - mean) / (var + 1e-5).sqrt() * w[c] as f64 + b[c] as f64;
        }
    }
    y
}

#[test]
fn layer_norm_forward_and_backward() {
    let be = CpuBackend::new();
    for (s, (rows, width)) in [(1, 1), (3, 5), (7, 13), (130, 67), (2100, 96)].into_iter().enumerate() {
        let ln = LayerNorm { rows, width, eps: 1e-5 };
        let seed = 200 + 10 * s as u64;
        let mut x: CpuBuf = random_vec(seed, rows * width).iter().map(|v| 3.0 * v + 0.5).collect();
        let mut w: CpuBuf = random_vec(seed + 1, width).iter().map(|v| 1.0 + v).collect();
        let mut b = random_vec(seed + 2, width);
        let (mut y, mut stats) = (CpuBuf::filled(rows * width, 7.0), CpuBuf::filled(2 * rows, 7.0));
        be.layer_norm_fwd(&x, &w, &b, &mut y, &mut stats, ln);
        close(&format!("layer norm {rows}x{width}"), &y, &ln_reference(&x, &w, &b, rows, width), 1e-5);
        if rows * width > 2000 {
            continue; // the finite differences below cost rows * width forwards each
        }
        let r = random_vec(seed + 3, rows * width);
        let fwd = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
            let (mut y, mut st) = (CpuBuf::zeros(rows * width), CpuBuf::zeros(2 * rows));
            be.layer_norm_fwd(&CpuBuf::from(x), &CpuBuf::from(w), &CpuBuf::from(b), &mut y, &mut st, ln);
            y.iter().zip(r.iter()).map(|(&y, &r)| y as f64 * r as f64).sum()
        };
        let (mut dx, mut dw, mut db) = (CpuBuf::filled(rows * width, 1.0), CpuBuf::filled(width, 2.0), CpuBuf::filled(width, 3.0));
        be.layer_norm_bwd(&x, &w, &stats, &r, &mut dx, &mut dw, &mut db, ln);
        let (w0, b0) = (w.clone(), b.clone());
        let nx = numeric_grad(&mut x, 1e-2, |x| fwd(x, &w0, &b0));
        let x0 = x.clone();
        let nw = numeric_grad(&mut w, 1e-2, |w| fwd(&x0, w, &b0));
        let w0 = w.clone();
        let nb = numeric_grad(&mut b, 1e-2, |b| fwd(&x0, &w0, b));
        let minus = |g: &CpuBuf, c: f32| g.iter().map(|v| v - c).collect::<Vec<f32>>();
        close("dx", &minus(&dx, 1.0), &nx, 2e-3);
        close("dweight", &minus(&dw, 2.0), &nw, 2e-3);
        close("dbias", &minus(&db, 3.0), &nb, 2e-3);
    }
}

#[test]
fn gelu_forward_and_backward() {
    let be = CpuBackend::new();
    let n = 1001;
    let mut x: CpuBuf = random_vec(300, n).iter().map(|v| 6.0 * v).collect();
    let mut y = CpuBuf::filled(n, 9.0);
    be.gelu_fwd(&x, &mut y, n);
    let want: Vec<f64> = x
        .iter()
        .map(|&v| {
            let v = v as f64;
            0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh())
        })
        .collect();
    close("gelu", &y, &want, 1e-6);
    let r = random_vec(301, n);
    let mut dx = CpuBuf::filled(n, 9.0);
    be.gelu_bwd(&x, &r, &mut dx, n);
    // Element-wise: the finite difference of each element alone.
    let num: Vec<f64> = (0..n)
        .map(|i| {
            let mut one = numeric_grad(&mut x[i..i + 1], 1e-3, |v| {
                let (mut y, v) = (CpuBuf::zeros(1), CpuBuf::from(v));
                be.gelu_fwd(&v, &mut y, 1);
                y[0] as f64
            });
            one.pop().unwrap() * r[i] as f64
        })
        .collect();
    close("gelu'", &dx, &num, 2e-3);
}

/// A window past the table's is refused by the op's contract, naming it.
#[test]
fn a_window_longer_than_the_table_is_refused() {
    let be = CpuBackend::new();
    let a = ra(1, 1, 2, 5, 4);
    let err = std::panic::catch_unwind(|| rel_fwd(&be, &vec![0.0; a.qkv_len()], &[0.0; 8], a)).expect_err("must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("time 5 is longer than the relative table's window 4"), "{msg}");
}
