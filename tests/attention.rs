//! The attention op (issue 13) on the CPU backend: hand-computed tiny cases (forward and backward),
//! the backward against central finite differences of `sum(r * out)` for every head count, odd
//! widths and shifts 0, 1, 2 and one past the window, and outputs that are written, not added to.
mod common;

use common::{numeric_grad, random_vec};
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::{Attention, Backend, Qkv};

fn att(batch: usize, heads: usize, dim: usize, time: usize, shift: usize) -> Attention {
    Attention { batch, heads, dim, time, shift }
}

fn close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
    }
}

/// Forward: `(out, p)`, both buffers pre-filled with garbage (they must be overwritten).
fn fwd(be: &CpuBackend, q: &[f32], k: &[f32], v: &[f32], a: Attention) -> (CpuBuf, CpuBuf) {
    let (mut out, mut p) = (CpuBuf::filled(a.qkv_len(), 7.0), CpuBuf::filled(a.p_len(), -3.0));
    be.attention_fwd(&CpuBuf::from(q), &CpuBuf::from(k), &CpuBuf::from(v), &mut out, &mut p, a);
    (out, p)
}

/// Backward: `(dq, dk, dv)`, pre-filled with garbage.
fn bwd(be: &CpuBackend, q: &[f32], k: &[f32], v: &[f32], p: &[f32], dout: &[f32], a: Attention) -> [CpuBuf; 3] {
    let n = a.qkv_len();
    let (mut dq, mut dk, mut dv) = (CpuBuf::filled(n, 5.0), CpuBuf::filled(n, -5.0), CpuBuf::filled(n, 9.0));
    be.attention_bwd(Qkv { q: &CpuBuf::from(q), k: &CpuBuf::from(k), v: &CpuBuf::from(v) }, &CpuBuf::from(p), &CpuBuf::from(dout), Qkv { q: &mut dq, k: &mut dk, v: &mut dv }, a);
    [dq, dk, dv]
}

/// T = 3, one head, D = 1 (scale 1), q = [0, 0, 1], k = [ln 2, 0, 0], v = [5, 1, 4].
#[test]
fn hand_case_shift_1() {
    let be = CpuBackend::new();
    let a = att(1, 1, 1, 3, 1);
    let ln2 = std::f32::consts::LN_2;
    let (q, k, v) = ([0.0, 0.0, 1.0], [ln2, 0.0, 0.0], [5.0, 1.0, 4.0]);
    let (out, p) = fwd(&be, &q, &k, &v, a);
    // Row 0 sees no key (0 < shift); row 1 only j = 1 (key k0); row 2: j = 1, 2 with scores
    // q2 k0 = ln 2 and q2 k1 = 0, so p = 2/3, 1/3 and out = 2/3 * 1 + 1/3 * 4 = 2.
    close("p", &p, &[0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0 / 3.0, 1.0 / 3.0], 1e-6);
    close("out", &out, &[0.0, 1.0, 2.0], 1e-6);
    // dout = 1: dv_j = sum_t p[t,j] = [0, 5/3, 1/3]. Row 2: dP = [v1, v2] = [1, 4], sum p dP = 2,
    // dS = [2/3 (1-2), 1/3 (4-2)] = [-2/3, 2/3]; row 1: dS = 1 (1 - 1) = 0.
    // dq2 = dS21 k0 + dS22 k1 = -2/3 ln 2; dk0 = dS21 q2 = -2/3, dk1 = dS22 q2 = 2/3, dk2 = 0.
    let [dq, dk, dv] = bwd(&be, &q, &k, &v, &p, &[1.0, 1.0, 1.0], a);
    close("dv", &dv, &[0.0, 5.0 / 3.0, 1.0 / 3.0], 1e-6);
    close("dq", &dq, &[0.0, 0.0, -2.0 / 3.0 * std::f64::consts::LN_2], 1e-6);
    close("dk", &dk, &[-2.0 / 3.0, 2.0 / 3.0, 0.0], 1e-6);
}

/// The same inputs with shift 0 (every row sees itself): row 0 p = [1], row 1 scores [0, 0],
/// row 2 scores [ln 2, 0, 0] -> p = [1/2, 1/4, 1/4]; out = [5, 3, 3.75].
#[test]
fn hand_case_shift_0() {
    let be = CpuBackend::new();
    let a = att(1, 1, 1, 3, 0);
    let ln2 = std::f32::consts::LN_2;
    let (q, k, v) = ([0.0, 0.0, 1.0], [ln2, 0.0, 0.0], [5.0, 1.0, 4.0]);
    let (out, p) = fwd(&be, &q, &k, &v, a);
    close("p", &p, &[1.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.5, 0.25, 0.25], 1e-6);
    close("out", &out, &[5.0, 3.0, 3.75], 1e-6);
}

/// Two heads of D = 2 see only their own channels: head 1's values leave head 0's output alone.
#[test]
fn heads_are_independent() {
    let be = CpuBackend::new();
    let a = att(2, 2, 2, 4, 1);
    let n = a.qkv_len();
    let (q, k, mut v) = (random_vec(1, n), random_vec(2, n), random_vec(3, n));
    let (out0, _) = fwd(&be, &q, &k, &v, a);
    // Head 1 of item 0 is channels 2..4: block (0*2 + 1) * D*T.
    for x in &mut v[8..16] {
        *x += 1.0;
    }
    let (out1, _) = fwd(&be, &q, &k, &v, a);
    assert_eq!(out0[..8], out1[..8], "head 0 of item 0 unchanged");
    assert_ne!(out0[8..16], out1[8..16], "head 1 of item 0 changed");
    assert_eq!(out0[16..], out1[16..], "item 1 unchanged");
    // and every row t >= shift of p sums to 1, rows before shift to 0
    let (_, p) = fwd(&be, &q, &k, &v, a);
    for (r, row) in p.chunks_exact(4).enumerate() {
        let s: f32 = row.iter().sum();
        let want = if r % 4 < 1 { 0.0 } else { 1.0 };
        assert!((s - want).abs() < 1e-6, "row {r}: {s}");
    }
}

/// Central differences with h = 1e-2 on the f32 forward (loss in f64): softmax's truncation error
/// is ~h^2/6 |f'''|, relative ~1e-4; so 1e-4 absolute + 2e-3 relative. A wrong formula (sign,
/// missing row sum, wrong shift) is off by O(|g|).
fn fd_check(what: &str, analytic: &[f32], numeric: &[f64]) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: length");
    for (i, (&a, &n)) in analytic.iter().zip(numeric).enumerate() {
        let tol = 1e-4 + 2e-3 * n.abs();
        assert!((a as f64 - n).abs() <= tol, "{what}[{i}]: analytic {a}, numeric {n} (tolerance {tol:e})");
    }
}

#[test]
fn backward_matches_finite_differences() {
    let be = CpuBackend::new();
    for (s, a) in [
        att(1, 1, 1, 3, 0),
        att(2, 1, 3, 5, 1),
        att(1, 3, 1, 6, 1),
        att(2, 3, 3, 5, 0),
        att(1, 2, 5, 7, 2),
        att(2, 1, 2, 4, 5),
    ]
    .into_iter()
    .enumerate()
    {
        let n = a.qkv_len();
        let seed = 10 * s as u64;
        // Inputs in [-2, 2) so that the softmax is far from uniform.
        let big = |v: CpuBuf| v.iter().map(|x| 2.0 * x).collect::<CpuBuf>();
        let (q, k, v, r) = (big(random_vec(seed, n)), big(random_vec(seed + 1, n)), random_vec(seed + 2, n), random_vec(seed + 3, n));
        let (_, p) = fwd(&be, &q, &k, &v, a);
        let [dq, dk, dv] = bwd(&be, &q, &k, &v, &p, &r, a);
        let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
            let (out, _) = fwd(&be, q, k, v, a);
            out.iter().zip(&r).map(|(&o, &r)| o as f64 * r as f64).sum()
        };
        let h = 1e-2;
        fd_check(&format!("{a:?} dq"), &dq, &numeric_grad(&mut q.clone(), h, |x| loss(x, &k, &v)));
        fd_check(&format!("{a:?} dk"), &dk, &numeric_grad(&mut k.clone(), h, |x| loss(&q, x, &v)));
        fd_check(&format!("{a:?} dv"), &dv, &numeric_grad(&mut v.clone(), h, |x| loss(&q, &k, x)));
        // Something actually flowed (except when every row is masked).
        let mass: f32 = dq.iter().chain(&dk).chain(&dv).map(|x| x.abs()).sum();
        assert_eq!(mass > 0.0, a.shift < a.time, "{a:?}: gradient mass {mass}");
    }
}

/// A window past the parallel threshold (rayon over the (b, h) blocks) gives the same bits as
/// the blocks run one at a time.
#[test]
fn parallel_blocks_match_one_block_at_a_time() {
    let be = CpuBackend::new();
    let a = att(8, 4, 16, 64, 1);
    let n = a.qkv_len();
    let (q, k, v, g) = (random_vec(1, n), random_vec(2, n), random_vec(3, n), random_vec(4, n));
    let (out, p) = fwd(&be, &q, &k, &v, a);
    let grads = bwd(&be, &q, &k, &v, &p, &g, a);
    let one = att(1, 1, 16, 64, 1);
    let (dt, tt) = (16 * 64, 64 * 64);
    for blk in 0..32 {
        let sl = |x: &[f32]| x[blk * dt..][..dt].to_vec();
        let (o1, p1) = fwd(&be, &sl(&q), &sl(&k), &sl(&v), one);
        assert_eq!(o1, out[blk * dt..][..dt], "out block {blk}");
        assert_eq!(p1, p[blk * tt..][..tt], "p block {blk}");
        let g1 = bwd(&be, &sl(&q), &sl(&k), &sl(&v), &p1, &sl(&g), one);
        for (w, (a1, full)) in g1.iter().zip(&grads).enumerate() {
            assert_eq!(a1[..], full[blk * dt..][..dt], "grad {w} block {blk}");
        }
    }
}
