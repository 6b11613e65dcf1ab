//! The Transformer's GPU ops (issue 26: LayerNorm, GELU, attention with a relative term and its
//! one-step decode) against their CPU twins on random inputs, at f32 and at f16 storage. Sizes sit
//! below, at and past the 64-invocation workgroup multiple (rows 1, 3, 64, 67, 130; heads 1 and 3;
//! dims 1, 5, 8; times 1, 7, 64, 67 with relative tables longer than the window; the decode inside
//! the window, at it and past it with the ring wrapped). Outputs that must be written start as
//! garbage; gradients that accumulate start from a known offset; what must not be read (relative
//! rows past the window, cache slots not yet filled, the k and v columns of the decode's row) holds
//! NaN, which would poison any output that read it. One device per precision is shared by the
//! tests; with no adapter they fail saying how to get one.
mod common;

use common::{gpu, random_vec, upload};
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::gpu::{Elem, GpuBackend, GpuBuffer, Precision};
use etude::engine::{Backend, LayerNorm, RelAttention, RelDecode};
use std::sync::OnceLock;

/// Both sides sum in f32 in different orders and their `exp` and `tanh` differ by a few ulp: per
/// element `|gpu - cpu| <= 1e-5 * sqrt(n) * (|cpu| + scale) + 1e-6`, `n` the terms of the longest
/// sum behind it and `scale` the largest magnitude in the array (the style of gpu_attention.rs).
/// A wrong index, mask or a missed accumulation is off by O(1). Returns the largest difference.
fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], n: usize) -> f32 {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    let scale = cpu.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    let mut worst = 0.0f32;
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let tol = 1e-5 * (n.max(1) as f32).sqrt() * (c.abs() + scale) + 1e-6;
        assert!((g - c).abs() <= tol, "{what}[{i}]: gpu {g}, cpu {c} (tolerance {tol:e})");
        worst = worst.max((g - c).abs());
    }
    worst
}

/// `x` with every element scaled by `k` and shifted by `c`.
fn affine(x: &[f32], k: f32, c: f32) -> CpuBuf {
    x.iter().map(|v| k * v + c).collect()
}

fn upload_f32(g: &GpuBackend, data: &[f32]) -> GpuBuffer {
    let mut b = g.alloc_f32(data.len());
    g.write(&mut b, data);
    b
}

// ---- LayerNorm ---------------------------------------------------------------------------------

/// The forward, then the backward from the CPU's stats on both sides, for one size; returns the
/// worst differences (y, stats, dx, dweight and dbias).
fn layer_norm_case(g: &GpuBackend, up: &dyn Fn(&[f32]) -> GpuBuffer, ln: LayerNorm, seed: u64) -> [f32; 5] {
    let cpu = CpuBackend::new();
    let (rows, width) = (ln.rows, ln.width);
    let n = rows * width;
    // Rows off zero mean, as a residual stream is.
    let x = affine(&random_vec(seed, n), 3.0, 0.5);
    let w = affine(&random_vec(seed + 1, width), 1.0, 1.0);
    let b = random_vec(seed + 2, width);
    let (mut y_c, mut st_c) = (CpuBuf::filled(n, 7.0), CpuBuf::filled(2 * rows, 7.0));
    cpu.layer_norm_fwd(&x, &w, &b, &mut y_c, &mut st_c, ln);
    let (xg, wg) = (up(&x), up(&w));
    let (mut y_g, mut st_g) = (up(&random_vec(seed + 3, n)), upload_f32(g, &random_vec(seed + 4, 2 * rows)));
    g.layer_norm_fwd(&xg, &wg, &up(&b), &mut y_g, &mut st_g, ln);
    let what = format!("layer_norm {rows}x{width}");
    let wy = assert_close(&format!("{what} y"), &g.read(&y_g, n), &y_c, width);
    let wst = assert_close(&format!("{what} stats"), &g.read(&st_g, 2 * rows), &st_c, width);

    // Accumulating gradients start from known values (dx a residual gradient, dweight and dbias
    // a previous batch's sums).
    let dy = random_vec(seed + 5, n);
    let (dx0, dw0, db0) = (random_vec(seed + 6, n), CpuBuf::filled(width, 0.5), CpuBuf::filled(width, -2.0));
    let (mut dx_c, mut dw_c, mut db_c) = (dx0.clone(), dw0.clone(), db0.clone());
    cpu.layer_norm_bwd(&x, &w, &st_c, &dy, &mut dx_c, &mut dw_c, &mut db_c, ln);
    let (mut dx_g, mut dw_g, mut db_g) = (up(&dx0), up(&dw0), up(&db0));
    g.layer_norm_bwd(&xg, &wg, &upload_f32(g, &st_c), &up(&dy), &mut dx_g, &mut dw_g, &mut db_g, ln);
    let wdx = assert_close(&format!("{what} dx"), &g.read(&dx_g, n), &dx_c, width);
    let wdw = assert_close(&format!("{what} dweight"), &g.read(&dw_g, width), &dw_c, rows);
    let wdb = assert_close(&format!("{what} dbias"), &g.read(&db_g, width), &db_c, rows);
    [wy, wst, wdx, wdw, wdb]
}

#[test]
fn layer_norm_matches_cpu() {
    let g = gpu();
    let mut worst = [0.0f32; 5];
    for (s, (rows, width)) in [(1, 1), (1, 5), (3, 8), (64, 64), (67, 5), (130, 67), (3, 130), (200, 96)].into_iter().enumerate() {
        let ln = LayerNorm { rows, width, eps: 1e-5 };
        let w = layer_norm_case(g, &upload, ln, 1000 + 10 * s as u64);
        worst.iter_mut().zip(w).for_each(|(a, b)| *a = a.max(b));
    }
    eprintln!("layer_norm: largest gpu-cpu difference y {:e}, stats {:e}, dx {:e}, dweight {:e}, dbias {:e}", worst[0], worst[1], worst[2], worst[3], worst[4]);
}

// ---- GELU --------------------------------------------------------------------------------------

/// Element-wise, one `tanh` each side (a few ulp apart), whose error the formula multiplies by up
/// to `|x|` (forward) or `x^2` (the derivative's cubic term): `rel |cpu| + 1e-6 (1 + x^2) |dy|`,
/// `rel` 1e-5 at f32 (plus f16's rounding at f16).
fn assert_gelu(what: &str, gpu: &[f32], cpu: &[f32], x: &[f32], dy: Option<&[f32]>, rel: f32) -> f32 {
    let mut worst = 0.0f32;
    for i in 0..cpu.len() {
        let (g, c) = (gpu[i], cpu[i]);
        let tol = rel * c.abs() + 1e-6 * (1.0 + x[i] * x[i]) * dy.map_or(1.0, |d| d[i].abs());
        assert!(g.is_finite() && (g - c).abs() <= tol, "{what}[{i}] at x = {}: gpu {g}, cpu {c} (tolerance {tol:e})", x[i]);
        worst = worst.max((g - c).abs());
    }
    worst
}

/// `n` inputs over [-6, 6) with the tails and zero spliced in (a cubic's tanh argument at x = 100
/// is 3.6e4: the kernel must saturate, not overflow).
fn gelu_inputs(seed: u64, n: usize) -> CpuBuf {
    let mut x = affine(&random_vec(seed, n), 6.0, 0.0);
    for (i, v) in [0.0, -100.0, 100.0, -30.0, 30.0, -8.0, 8.0].into_iter().enumerate().take(n) {
        x[(i * 37) % n] = v;
    }
    x
}

#[test]
fn gelu_matches_cpu() {
    let (g, cpu) = (gpu(), CpuBackend::new());
    let (mut wf, mut wb) = (0.0f32, 0.0f32);
    for (s, n) in [1usize, 3, 255, 256, 257, 1001].into_iter().enumerate() {
        let seed = 2000 + 10 * s as u64;
        let (x, dy) = (gelu_inputs(seed, n), random_vec(seed + 1, n));
        let mut y_c = CpuBuf::filled(n, 9.0);
        cpu.gelu_fwd(&x, &mut y_c, n);
        let mut y_g = upload(&random_vec(seed + 2, n));
        g.gelu_fwd(&upload(&x), &mut y_g, n);
        wf = wf.max(assert_gelu(&format!("gelu n {n}"), &g.read(&y_g, n), &y_c, &x, None, 1e-5));
        let mut dx_c = CpuBuf::filled(n, 9.0);
        cpu.gelu_bwd(&x, &dy, &mut dx_c, n);
        let mut dx_g = upload(&random_vec(seed + 3, n));
        g.gelu_bwd(&upload(&x), &upload(&dy), &mut dx_g, n);
        wb = wb.max(assert_gelu(&format!("gelu' n {n}"), &g.read(&dx_g, n), &dx_c, &x, Some(&dy), 1e-5));
    }
    eprintln!("gelu: largest gpu-cpu difference forward {wf:e}, backward {wb:e}");
}

// ---- attention with a relative term ------------------------------------------------------------

fn ra(batch: usize, heads: usize, dim: usize, time: usize, window: usize) -> RelAttention {
    RelAttention { batch, heads, dim, time, window }
}

/// A random table whose rows `time..window` (never read) hold NaN.
fn rel_table(seed: u64, a: RelAttention) -> CpuBuf {
    let mut rel = random_vec(seed, a.rel_len());
    for h in 0..a.heads {
        rel[(h * a.window + a.time) * a.dim..(h + 1) * a.window * a.dim].fill(f32::NAN);
    }
    rel
}

/// The forward, then the backward from the CPU's `p` on both sides; returns the worst
/// differences (p, out, dq, dk, dv, drel).
fn rel_attention_case(g: &GpuBackend, up: &dyn Fn(&[f32]) -> GpuBuffer, a: RelAttention, seed: u64) -> [f32; 6] {
    let cpu = CpuBackend::new();
    let (n3, no, np, nr) = (a.qkv_len(), a.out_len(), a.p_len(), a.rel_len());
    let qkv = affine(&random_vec(seed, n3), 2.0, 0.0);
    let rel = rel_table(seed + 1, a);
    let (mut out_c, mut p_c) = (CpuBuf::filled(no, 7.0), CpuBuf::filled(np, -3.0));
    cpu.rel_attention_fwd(&qkv, &rel, &mut out_c, &mut p_c, a);
    let (qg, rg) = (up(&qkv), up(&rel));
    let (mut out_g, mut p_g) = (up(&random_vec(seed + 2, no)), up(&random_vec(seed + 3, np)));
    g.rel_attention_fwd(&qg, &rg, &mut out_g, &mut p_g, a);
    let what = format!("{a:?}");
    let wp = assert_close(&format!("{what} p"), &g.read(&p_g, np), &p_c, 2 * a.dim);
    let wo = assert_close(&format!("{what} out"), &g.read(&out_g, no), &out_c, a.time);

    // dqkv is written (garbage before), drel accumulates onto 0.5 in rows 0..time (NaN past them
    // on both sides: those rows must stay untouched).
    let dout = random_vec(seed + 4, no);
    let drel0: CpuBuf = rel.iter().map(|r| if r.is_nan() { f32::NAN } else { 0.5 }).collect();
    let (mut dqkv_c, mut drel_c) = (CpuBuf::filled(n3, 9.0), drel0.clone());
    cpu.rel_attention_bwd(&qkv, &rel, &p_c, &dout, &mut dqkv_c, &mut drel_c, a);
    let (mut dqkv_g, mut drel_g) = (up(&random_vec(seed + 5, n3)), up(&drel0));
    g.rel_attention_bwd(&qg, &rg, &up(&p_c), &up(&dout), &mut dqkv_g, &mut drel_g, a);
    let got = g.read(&dqkv_g, n3);
    let w3 = a.width();
    let part = |v: &[f32], k: usize| -> Vec<f32> { v.chunks_exact(3 * w3).flat_map(|row| row[k * w3..][..w3].to_vec()).collect() };
    let terms = a.time * a.dim;
    let wdq = assert_close(&format!("{what} dq"), &part(&got, 0), &part(&dqkv_c, 0), terms);
    let wdk = assert_close(&format!("{what} dk"), &part(&got, 1), &part(&dqkv_c, 1), terms);
    let wdv = assert_close(&format!("{what} dv"), &part(&got, 2), &part(&dqkv_c, 2), a.time);
    let drel_g = g.read(&drel_g, nr);
    let live = |v: &[f32]| v.iter().copied().filter(|x| !x.is_nan()).collect::<Vec<f32>>();
    assert_eq!(drel_g.iter().filter(|x| x.is_nan()).count(), drel0.iter().filter(|x| x.is_nan()).count(), "{what}: drel rows past time");
    let wdr = assert_close(&format!("{what} drel"), &live(&drel_g), &live(&drel_c), a.batch * terms);
    [wp, wo, wdq, wdk, wdv, wdr]
}

#[test]
fn rel_attention_matches_cpu() {
    let g = gpu();
    let mut worst = [0.0f32; 6];
    for (s, a) in [
        ra(1, 1, 1, 1, 1),
        ra(1, 1, 1, 1, 4),
        ra(2, 1, 5, 7, 9),
        ra(1, 3, 8, 7, 7),
        ra(2, 1, 8, 64, 64),
        ra(3, 3, 5, 67, 70),
        ra(1, 3, 1, 130, 131),
    ]
    .into_iter()
    .enumerate()
    {
        let w = rel_attention_case(g, &upload, a, 3000 + 10 * s as u64);
        worst.iter_mut().zip(w).for_each(|(a, b)| *a = a.max(b));
    }
    let [p, o, dq, dk, dv, dr] = worst;
    eprintln!("rel_attention: largest gpu-cpu difference p {p:e}, out {o:e}, dq {dq:e}, dk {dk:e}, dv {dv:e}, drel {dr:e}");
}

// ---- the one-step decode -----------------------------------------------------------------------

/// One decode step at `len` against the CPU: random caches whose slots not yet written (`len <
/// window`) hold NaN, a query row whose k and v columns hold NaN, a table whose distances past
/// `len` hold NaN, and `out` garbage. Returns the worst difference.
fn decode_case(g: &GpuBackend, up: &dyn Fn(&[f32]) -> GpuBuffer, a: RelDecode, seed: u64) -> f32 {
    let cpu = CpuBackend::new();
    let (w, win) = (a.width(), a.window);
    let mut row = affine(&random_vec(seed, a.batch * 3 * w), 2.0, 0.0);
    row.chunks_exact_mut(3 * w).for_each(|r| r[w..].fill(f32::NAN));
    let (mut kc, mut vc) = (affine(&random_vec(seed + 1, a.cache_len()), 2.0, 0.0), random_vec(seed + 2, a.cache_len()));
    if a.len < win {
        for b in 0..a.batch {
            kc[(b * win + a.len) * w..(b + 1) * win * w].fill(f32::NAN);
            vc[(b * win + a.len) * w..(b + 1) * win * w].fill(f32::NAN);
        }
    }
    let mut rel = random_vec(seed + 3, a.heads * win * a.dim);
    for h in 0..a.heads {
        rel[(h * win + a.len.min(win)) * a.dim..(h + 1) * win * a.dim].fill(f32::NAN);
    }
    let mut out_c = CpuBuf::filled(a.batch * w, 4.0);
    cpu.rel_attention_decode(&row, &kc, &vc, &rel, &mut out_c, a);
    let mut out_g = up(&random_vec(seed + 4, a.batch * w));
    g.rel_attention_decode(&up(&row), &up(&kc), &up(&vc), &up(&rel), &mut out_g, a);
    assert!(out_c.iter().all(|x| x.is_finite()), "{a:?}: the CPU read what it must not");
    assert_close(&format!("{a:?} out"), &g.read(&out_g, a.batch * w), &out_c, (2 * a.dim).max(a.len.min(win)))
}

#[test]
fn rel_attention_decode_matches_cpu() {
    let g = gpu();
    let mut worst = 0.0f32;
    for (s, (batch, heads, dim, window)) in [(1usize, 1, 1, 1usize), (2, 3, 5, 7), (1, 1, 8, 64), (3, 3, 8, 67), (1, 3, 1, 130)].into_iter().enumerate() {
        for len in [1, 2, window.saturating_sub(1).max(1), window, window + 1, 2 * window + 3] {
            let a = RelDecode { batch, heads, dim, window, len };
            worst = worst.max(decode_case(g, &upload, a, 4000 + 100 * s as u64 + len as u64));
        }
    }
    eprintln!("rel_attention_decode: largest gpu-cpu difference {worst:e}");
}

// ---- f16 storage -------------------------------------------------------------------------------

fn gpu16() -> &'static GpuBackend {
    static GPU: OnceLock<GpuBackend> = OnceLock::new();
    GPU.get_or_init(|| {
        GpuBackend::with_precision(None, Precision::F16).unwrap_or_else(|e| {
            panic!("{e}\n(these tests need an adapter with SHADER_F16: `apt-get install mesa-vulkan-drivers` gives lavapipe)")
        })
    })
}

/// Half an f16 ulp, relative: the rounding of a stored result.
const HALF_ULP: f32 = 1.0 / 2048.0;

fn round16(x: &[f32]) -> CpuBuf {
    x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
}

fn up16(data: &[f32]) -> GpuBuffer {
    let g = gpu16();
    let mut b = g.alloc(data.len());
    assert_eq!(b.elem(), Elem::F16);
    g.write(&mut b, data);
    b
}

/// f16 storage against the f32 CPU on the same f16 numbers (the style of gpu_f16.rs): each stored
/// output is rounded to f16 (2^-11 relative), and where the GPU's own rounded output feeds a later
/// sum (p into out), that sum is off by 2^-11 of its terms' magnitude. Per element
/// `|gpu - cpu| <= 2^-11 (|cpu| + scale) + 1e-5 sqrt(n) (|cpu| + scale) + 1e-6`.
fn assert_close16(what: &str, gpu: &[f32], cpu: &[f32], n: usize) -> f32 {
    let scale = cpu.iter().map(|x| x.abs()).fold(0.0f32, f32::max);
    let mut worst = 0.0f32;
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let tol = (HALF_ULP + 1e-5 * (n.max(1) as f32).sqrt()) * (c.abs() + scale) + 1e-6;
        assert!((g - c).abs() <= tol, "{what}[{i}]: gpu f16 {g}, cpu {c} (tolerance {tol:e})");
        worst = worst.max((g - c).abs());
    }
    worst
}

/// Every op at f16 once, at sizes off the workgroup multiple. Inputs are f16 numbers on both sides;
/// LayerNorm's stats stay f32; the rel backward reads the f16-rounded CPU `p` on both sides.
#[test]
fn every_op_matches_cpu_at_f16() {
    let (g, cpu) = (gpu16(), CpuBackend::new());
    // LayerNorm.
    let ln = LayerNorm { rows: 67, width: 13, eps: 1e-5 };
    let n = ln.rows * ln.width;
    let x = round16(&affine(&random_vec(1, n), 3.0, 0.5));
    let (w, b) = (round16(&affine(&random_vec(2, ln.width), 1.0, 1.0)), round16(&random_vec(3, ln.width)));
    let (mut y_c, mut st_c) = (CpuBuf::zeros(n), CpuBuf::zeros(2 * ln.rows));
    cpu.layer_norm_fwd(&x, &w, &b, &mut y_c, &mut st_c, ln);
    let (mut y_g, mut st_g) = (g.alloc(n), g.alloc_f32(2 * ln.rows));
    g.layer_norm_fwd(&up16(&x), &up16(&w), &up16(&b), &mut y_g, &mut st_g, ln);
    let mut worst = vec![];
    worst.push(("layer_norm y", assert_close16("f16 layer_norm y", &g.read(&y_g, n), &y_c, ln.width)));
    worst.push(("layer_norm stats", assert_close("f16 layer_norm stats", &g.read(&st_g, 2 * ln.rows), &st_c, ln.width)));
    let (dy, dx0) = (round16(&random_vec(4, n)), round16(&random_vec(5, n)));
    let (mut dx_c, mut dw_c, mut db_c) = (dx0.clone(), CpuBuf::filled(ln.width, 0.5), CpuBuf::filled(ln.width, -2.0));
    cpu.layer_norm_bwd(&x, &w, &st_c, &dy, &mut dx_c, &mut dw_c, &mut db_c, ln);
    let (mut dx_g, mut dw_g, mut db_g) = (up16(&dx0), up16(&[0.5; 13]), up16(&[-2.0; 13]));
    g.layer_norm_bwd(&up16(&x), &up16(&w), &st_g, &up16(&dy), &mut dx_g, &mut dw_g, &mut db_g, ln);
    worst.push(("layer_norm dx", assert_close16("f16 layer_norm dx", &g.read(&dx_g, n), &dx_c, ln.width)));
    worst.push(("layer_norm dweight", assert_close16("f16 layer_norm dweight", &g.read(&dw_g, ln.width), &dw_c, ln.rows)));
    worst.push(("layer_norm dbias", assert_close16("f16 layer_norm dbias", &g.read(&db_g, ln.width), &db_c, ln.rows)));

    // GELU (element-wise: the rounding of the stored result on top of gelu_matches_cpu's bound).
    let (x, dy) = (round16(&gelu_inputs(6, 301)), round16(&random_vec(7, 301)));
    let (mut y_c, mut dx_c, mut y_g, mut dx_g) = (CpuBuf::zeros(301), CpuBuf::zeros(301), g.alloc(301), g.alloc(301));
    cpu.gelu_fwd(&x, &mut y_c, 301);
    cpu.gelu_bwd(&x, &dy, &mut dx_c, 301);
    g.gelu_fwd(&up16(&x), &mut y_g, 301);
    g.gelu_bwd(&up16(&x), &up16(&dy), &mut dx_g, 301);
    worst.push(("gelu", assert_gelu("f16 gelu", &g.read(&y_g, 301), &y_c, &x, None, HALF_ULP + 1e-5)));
    worst.push(("gelu'", assert_gelu("f16 gelu'", &g.read(&dx_g, 301), &dx_c, &x, Some(&dy), HALF_ULP + 1e-5)));

    // Attention with a relative term, forward and backward.
    let a = ra(2, 3, 5, 37, 41);
    let (n3, no, np) = (a.qkv_len(), a.out_len(), a.p_len());
    let (qkv, rel) = (round16(&affine(&random_vec(8, n3), 2.0, 0.0)), round16(&random_vec(9, a.rel_len())));
    let (mut out_c, mut p_c) = (CpuBuf::zeros(no), CpuBuf::zeros(np));
    cpu.rel_attention_fwd(&qkv, &rel, &mut out_c, &mut p_c, a);
    let (mut out_g, mut p_g) = (g.alloc(no), g.alloc(np));
    g.rel_attention_fwd(&up16(&qkv), &up16(&rel), &mut out_g, &mut p_g, a);
    worst.push(("rel p", assert_close16("f16 rel p", &g.read(&p_g, np), &p_c, 2 * a.dim)));
    worst.push(("rel out", assert_close16("f16 rel out", &g.read(&out_g, no), &out_c, a.time)));
    let (p16, dout) = (round16(&p_c), round16(&random_vec(10, no)));
    let (mut dqkv_c, mut drel_c) = (CpuBuf::zeros(n3), CpuBuf::filled(a.rel_len(), 0.5));
    cpu.rel_attention_bwd(&qkv, &rel, &p16, &dout, &mut dqkv_c, &mut drel_c, a);
    let (mut dqkv_g, mut drel_g) = (g.alloc(n3), up16(&vec![0.5; a.rel_len()]));
    g.rel_attention_bwd(&up16(&qkv), &up16(&rel), &up16(&p16), &up16(&dout), &mut dqkv_g, &mut drel_g, a);
    worst.push(("rel dqkv", assert_close16("f16 rel dqkv", &g.read(&dqkv_g, n3), &dqkv_c, a.time * a.dim)));
    worst.push(("rel drel", assert_close16("f16 rel drel", &g.read(&drel_g, a.rel_len()), &drel_c, a.batch * a.time * a.dim)));

    // The decode past the window (the ring wrapped).
    for len in [5, 41, 50] {
        let d = RelDecode { batch: 2, heads: 3, dim: 5, window: 41, len };
        let (kc, vc) = (round16(&random_vec(11, d.cache_len())), round16(&random_vec(12, d.cache_len())));
        let row = round16(&random_vec(13, d.batch * 3 * d.width()));
        let mut o_c = CpuBuf::zeros(d.batch * d.width());
        cpu.rel_attention_decode(&row, &kc, &vc, &rel, &mut o_c, d);
        let mut o_g = g.alloc(d.batch * d.width());
        g.rel_attention_decode(&up16(&row), &up16(&kc), &up16(&vc), &up16(&rel), &mut o_g, d);
        worst.push(("decode", assert_close16(&format!("f16 decode len {len}"), &g.read(&o_g, d.batch * d.width()), &o_c, len.min(41))));
    }
    let worst: Vec<String> = worst.iter().map(|(what, w)| format!("{what} {w:e}")).collect();
    eprintln!("f16: largest gpu-cpu difference {}", worst.join(", "));
}
