//! `--precision f16` on the GPU backend (issue 7): every operation with f16 storage against the CPU
//! f32 reference, host conversion at odd lengths, the checks on element types, and short training
//! runs whose f16 loss follows the f32 one.
//!
//! One f16 and one f32 device are shared by all tests (`OnceLock`). The adapter must have
//! SHADER_F16 (lavapipe has it).
//!
//! Inputs are rounded to f16 on the host before both backends see them, so the comparisons measure
//! what the f16 path adds: the rounding of each stored output to f16's 11-bit significand, a
//! relative error of at most 2^-11 = 4.9e-4 (round to nearest), or 2^-25 = 3e-8 absolute below
//! f16's smallest normal number, 6.1e-5. On top of that come the f32 differences of `gpu_ops.rs`
//! (a few ulp in exp/tanh: 1e-5 relative; sums in another order: 1e-5 * sqrt(k) * sum |terms|).
//! Hence, per element:
//!   element-wise: |gpu - cpu| <= (2^-11 + 1e-5) |cpu| + 1e-7
//!   reductions:   |gpu - cpu| <= 2^-11 |cpu| + 1e-5 sqrt(k) sum|terms| + 1e-7
//! and where the GPU feeds an f16 intermediate it wrote itself into a later sum (the LSTM's dxw
//! into dW_hh), that sum may also differ by 2^-11 * sum |terms|.

mod cli_common;

use cli_common::{etude_fails, etude_ok, metrics_rows, tiny_train};
use etude::run::checkpoint::Checkpoint;
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::{AdamStep, LstmSaved, LstmSeqs, Qkv, Strided, Xent};
use etude::engine::gpu::{Elem, GpuBackend, GpuBuffer, KernelVariant, Precision, F16_LOSS_SCALE};
use etude::engine::{Act, AdamParams, Backend, Conv1d, Lstm, MatMul};
use etude::engine::Adam;
use etude::model::any::{AnyModel, ModelConfig, Sizes};
use etude::model::Model;
use etude::rng::Rng;
use etude::model::step::Stepper;
use std::sync::OnceLock;

fn open(precision: Precision) -> GpuBackend {
    GpuBackend::with_precision(None, precision).unwrap_or_else(|e| {
        panic!("{e}\n(these tests need an adapter with SHADER_F16: `apt-get install mesa-vulkan-drivers` gives lavapipe)")
    })
}

fn gpu() -> &'static GpuBackend {
    static GPU: OnceLock<GpuBackend> = OnceLock::new();
    GPU.get_or_init(|| open(Precision::F16))
}

fn gpu32() -> &'static GpuBackend {
    static GPU: OnceLock<GpuBackend> = OnceLock::new();
    GPU.get_or_init(|| open(Precision::F32))
}

/// Half an f16 ulp, relative: the rounding of a stored result.
const HALF_ULP: f32 = 1.0 / 2048.0;
/// f32 differences of element-wise formulas (see `gpu_ops.rs`).
const EW_REL: f32 = HALF_ULP + 1e-5;
/// Absolute floor: rounding below f16's normal range (3e-8) and f32 noise around zero.
const ABS: f32 = 1e-7;

/// `n` uniform values in `[-scale, scale)`, already f16 numbers.
fn rand16(rng: &mut Rng, n: usize, scale: f32) -> CpuBuf {
    (0..n).map(|_| half::f16::from_f32(rng.uniform_range(-scale, scale)).to_f32()).collect()
}

fn up(data: &[f32]) -> GpuBuffer {
    let g = gpu();
    let mut b = g.alloc(data.len());
    assert_eq!(b.elem(), Elem::F16);
    g.write(&mut b, data);
    b
}

fn up32(data: &[f32]) -> GpuBuffer {
    let g = gpu();
    let mut b = g.alloc_f32(data.len());
    g.write(&mut b, data);
    b
}

fn up_ids(data: &[u32]) -> GpuBuffer {
    let g = gpu();
    let mut b = g.alloc_ids(data.len());
    g.write_ids(&mut b, data);
    b
}

fn cpu_buf(c: &CpuBackend, data: &[f32]) -> CpuBuf {
    let mut b = c.alloc(data.len());
    c.write(&mut b, data);
    b
}

fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32, abs: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &c)) in got.iter().zip(want).enumerate() {
        let tol = abs + rel * c.abs();
        assert!((g - c).abs() <= tol, "{what}[{i}]: gpu f16 {g} cpu {c} (tol {tol})");
    }
}

fn assert_within(what: &str, got: &[f32], want: &[f32], bound: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, ((&g, &c), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        assert!((g - c).abs() <= b, "{what}[{i}]: gpu f16 {g} cpu {c} (bound {b})");
    }
}

/// The reduction bound for results `want` whose sums have `k` terms of absolute sum `abs_sum`.
fn sum_bound(want: &[f32], abs_sum: &[f32], k: usize, extra_rel: f32) -> Vec<f32> {
    want.iter()
        .zip(abs_sum)
        .map(|(&c, &s)| HALF_ULP * c.abs() + (1e-5 * (k as f32).sqrt() + extra_rel) * s + ABS)
        .collect()
}

#[test]
fn host_conversion_round_trips_at_odd_lengths() {
    let g = gpu();
    let mut rng = Rng::new(1);
    for n in [1usize, 2, 3, 255, 257] {
        let data = rand16(&mut rng, n, 3.0);
        let b = up(&data);
        assert_eq!(g.read(&b, n), data, "f16 values survive the round trip exactly (n = {n})");
        // f32 buffers at f16 precision keep f32 values exactly
        let exact: CpuBuf = (0..n).map(|i| 1.0 + i as f32 * 1e-7).collect();
        assert_eq!(g.read(&up32(&exact), n), exact);
    }
    // Values are rounded to nearest on the way in; out of range saturates to infinity.
    let b = up(&[1.0 + 1.0 / 2048.0 + 1e-6, 70000.0, -1e-9]); // just past half an ulp (2^-11) above 1
    assert_eq!(g.read(&b, 3), vec![1.0 + 1.0 / 1024.0, f32::INFINITY, -0.0]);
    // An odd-length write into a longer buffer keeps the element after it.
    let mut b = up(&[1.0, 2.0, 3.0, 4.0, 5.0]);
    g.write(&mut b, &[7.0, 8.0, 9.0]);
    assert_eq!(g.read(&b, 5), vec![7.0, 8.0, 9.0, 4.0, 5.0]);
}

#[test]
fn elementwise_ops_match_the_cpu() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(2);
    let n = 1001; // off the workgroup size of 256, odd (half a word at the end)
    let x = rand16(&mut rng, n, 3.0);
    let y0 = rand16(&mut rng, n, 3.0);

    let mut gb = up(&y0);
    g.fill(&mut gb, n - 2, 0.3);
    let mut cb = cpu_buf(&c, &y0);
    c.fill(&mut cb, n - 2, 0.3);
    assert_close("fill", &g.read(&gb, n), &cb, EW_REL, ABS);

    let mut gy = up(&y0);
    g.add(&up(&x), &mut gy, n);
    let mut cy = cpu_buf(&c, &y0);
    c.add(&x, &mut cy, n);
    assert_close("add", &g.read(&gy, n), &cy, EW_REL, ABS);

    for acc in [false, true] {
        let (rows, cols) = (7, 13);
        let mut gd = up(&y0);
        g.copy_strided(&up(&x), &mut gd, Strided { rows, cols, src_off: 5, src_stride: 20, dst_off: 3, dst_stride: 17, accumulate: acc });
        let mut cd = cpu_buf(&c, &y0);
        c.copy_strided(&x, &mut cd, Strided { rows, cols, src_off: 5, src_stride: 20, dst_off: 3, dst_stride: 17, accumulate: acc });
        assert_close(&format!("copy_strided acc={acc}"), &g.read(&gd, n), &cd, EW_REL, ABS);
    }

    for act in [Act::Relu, Act::Tanh, Act::Sigmoid] {
        let mut gy = up(&y0);
        g.act_fwd(act, &up(&x), &mut gy, n);
        let mut cy = cpu_buf(&c, &y0);
        c.act_fwd(act, &x, &mut cy, n);
        let gyv = CpuBuf::from(g.read(&gy, n));
        assert_close(&format!("act_fwd {act:?}"), &gyv, &cy, EW_REL, ABS);
        // backward from the (f16) forward output both sides share
        let dy = rand16(&mut rng, n, 1.0);
        let mut gdx = g.alloc(n);
        g.act_bwd(act, &gy, &up(&dy), &mut gdx, n);
        let mut cdx = c.alloc(n);
        c.act_bwd(act, &gyv, &dy, &mut cdx, n);
        assert_close(&format!("act_bwd {act:?}"), &g.read(&gdx, n), &cdx, EW_REL, ABS);
    }

    let (batch, r, t) = (3, 5, 7);
    let a = rand16(&mut rng, batch * 2 * r * t, 3.0);
    let dz = rand16(&mut rng, batch * r * t, 1.0);
    let mut gz = g.alloc(batch * r * t);
    g.gated_fwd(&up(&a), &mut gz, batch, r, t);
    let mut cz = c.alloc(batch * r * t);
    c.gated_fwd(&a, &mut cz, batch, r, t);
    assert_close("gated_fwd", &g.read(&gz, cz.len()), &cz, EW_REL, ABS);
    let mut gda = g.alloc(a.len());
    g.gated_bwd(&up(&a), &up(&dz), &mut gda, batch, r, t);
    let mut cda = c.alloc(a.len());
    c.gated_bwd(&a, &dz, &mut cda, batch, r, t);
    assert_close("gated_bwd", &g.read(&gda, a.len()), &cda, EW_REL, ABS);

    // transpose moves f16 values: exact
    let (batch, rows, cols) = (2, 19, 33);
    let xt = rand16(&mut rng, batch * rows * cols, 3.0);
    let mut gt = g.alloc(xt.len());
    g.transpose(&up(&xt), &mut gt, batch, rows, cols);
    let mut ct = c.alloc(xt.len());
    c.transpose(&xt, &mut ct, batch, rows, cols);
    assert_eq!(g.read(&gt, xt.len()), ct, "transpose");
}

#[test]
fn matmul_matches_the_cpu_in_every_layout() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(3);
    // Portable kernels: (37, 19, 45) takes the 32x32-tile kernel, (1030, 9, 520) the 64x64 one;
    // the software-renderer kernel (vec4<f16> loads) needs multiples of 4: (36, 20, 44).
    let cases = [
        (KernelVariant::Portable, (37, 19, 45)),
        (KernelVariant::Portable, (1030, 9, 520)),
        (KernelVariant::Software, (36, 20, 44)),
        (KernelVariant::Software, (12, 8, 4)),
    ];
    for (variant, (m, k, n)) in cases {
        g.set_kernel_variant(variant);
        for (ta, tb, acc) in [(false, false, false), (true, false, true), (false, true, false), (true, true, true)] {
            let a = rand16(&mut rng, m * k, 1.0);
            let b = rand16(&mut rng, k * n, 1.0);
            let c0 = rand16(&mut rng, m * n, 1.0);
            let mm = MatMul { m, k, n, trans_a: ta, trans_b: tb, accumulate: acc };
            let mut gc = up(&c0);
            g.matmul(&up(&a), &up(&b), &mut gc, mm);
            let mut cc = cpu_buf(&c, &c0);
            c.matmul(&a, &b, &mut cc, mm);
            // sum |terms| from |A| |B| (+ |C| when accumulating)
            let abs_a: CpuBuf = a.iter().map(|v| v.abs()).collect();
            let abs_b: CpuBuf = b.iter().map(|v| v.abs()).collect();
            let mut abs_sum = if acc { c0.iter().map(|v| v.abs()).collect() } else { CpuBuf::zeros(m * n) };
            c.matmul(&abs_a, &abs_b, &mut abs_sum, MatMul { accumulate: true, ..mm });
            let bound = sum_bound(&cc, &abs_sum, k + 1, 0.0);
            let what = format!("matmul {variant:?} {m}x{k}x{n} ta={ta} tb={tb} acc={acc}");
            assert_within(&what, &g.read(&gc, m * n), &cc, &bound);
        }
    }
    g.set_kernel_variant(KernelVariant::Auto);
}

#[test]
fn bias_and_embedding_match_the_cpu() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(4);
    // (5, 37, 11): a conv's bias; (7, 36, 1): a Linear's, which software adapters do with vec4s.
    let cases = [
        (KernelVariant::Portable, (5, 37, 11)),
        (KernelVariant::Portable, (7, 36, 1)),
        (KernelVariant::Software, (7, 36, 1)),
    ];
    for (variant, (outer, ch, inner)) in cases {
        g.set_kernel_variant(variant);
        let what = format!("{variant:?} {outer}x{ch}x{inner}");
        let n = outer * ch * inner;
        let y0 = rand16(&mut rng, n, 2.0);
        let bias = rand16(&mut rng, ch, 2.0);
        let mut gy = up(&y0);
        g.bias_add(&mut gy, &up(&bias), outer, ch, inner);
        let mut cy = cpu_buf(&c, &y0);
        c.bias_add(&mut cy, &bias, outer, ch, inner);
        assert_close(&format!("bias_add {what}"), &g.read(&gy, n), &cy, EW_REL, ABS);

        let db0 = rand16(&mut rng, ch, 1.0);
        let mut gdb = up(&db0);
        g.bias_grad(&up(&y0), &mut gdb, outer, ch, inner);
        let mut cdb = cpu_buf(&c, &db0);
        c.bias_grad(&y0, &mut cdb, outer, ch, inner);
        let abs_y: CpuBuf = y0.iter().map(|v| v.abs()).collect();
        let mut abs_sum: CpuBuf = db0.iter().map(|v| v.abs()).collect();
        c.bias_grad(&abs_y, &mut abs_sum, outer, ch, inner);
        let bound = sum_bound(&cdb, &abs_sum, outer * inner + 1, 0.0);
        assert_within(&format!("bias_grad {what}"), &g.read(&gdb, ch), &cdb, &bound);
    }
    g.set_kernel_variant(KernelVariant::Auto);

    // embedding, with repeated ids
    let (rows, e, n) = (23, 13, 301);
    let table = rand16(&mut rng, rows * e, 1.0);
    let ids: Vec<u32> = (0..n).map(|i| ((i * 7) % rows) as u32 % 9).collect();
    let mut gout = g.alloc(n * e);
    g.embedding_fwd(&up_ids(&ids), &up(&table), &mut gout, n, e);
    let mut cout = c.alloc(n * e);
    c.embedding_fwd(&ids, &table, &mut cout, n, e);
    assert_eq!(g.read(&gout, n * e), cout, "embedding_fwd copies f16 values exactly");
    let dout = rand16(&mut rng, n * e, 1.0);
    let dt0 = rand16(&mut rng, rows * e, 1.0);
    let mut gdt = up(&dt0);
    g.embedding_bwd(&up_ids(&ids), &up(&dout), &mut gdt, n, e);
    let mut cdt = cpu_buf(&c, &dt0);
    c.embedding_bwd(&ids, &dout, &mut cdt, n, e);
    let abs_d: CpuBuf = dout.iter().map(|v| v.abs()).collect();
    let mut abs_sum: CpuBuf = dt0.iter().map(|v| v.abs()).collect();
    c.embedding_bwd(&ids, &abs_d, &mut abs_sum, n, e);
    assert_within("embedding_bwd", &g.read(&gdt, rows * e), &cdt, &sum_bound(&cdt, &abs_sum, n + 1, 0.0));
}

#[test]
fn softmax_xent_matches_the_cpu_with_a_loss_scaled_gradient() {
    let (g, c) = (gpu(), CpuBackend::new());
    assert_eq!(g.loss_scale(), F16_LOSS_SCALE);
    let mut rng = Rng::new(5);
    let (n, v) = (37, 301);
    let logits = rand16(&mut rng, n * v, 8.0);
    let targets: Vec<u32> = (0..n).map(|i| ((i * 13) % v) as u32).collect();
    let grad_scale = 1.0 / n as f32;
    let mut gd = g.alloc(n * v);
    let mut gs = g.alloc_f32(2 * n);
    g.softmax_xent(&up(&logits), &up_ids(&targets), &mut gd, &mut gs, Xent { n, v, grad_scale });
    let mut cd = c.alloc(n * v);
    let mut cs = c.alloc(2 * n);
    c.softmax_xent(&logits, &targets, &mut cd, &mut cs, Xent { n, v, grad_scale });
    // The gradient leaves multiplied by the loss scale (a power of two: dividing is exact).
    let gdv: CpuBuf = g.read(&gd, n * v).iter().map(|d| d / F16_LOSS_SCALE).collect();
    // softmax sums v exps: 1e-5 sqrt(v) relative on top of the f16 rounding
    assert_close("dlogits / loss scale", &gdv, &cd, EW_REL + 1e-5 * (v as f32).sqrt(), ABS);
    // the statistics are f32: the loss only carries the f32 differences (log-sum-exp over v)
    assert_close("stats", &g.read(&gs, 2 * n), &cs, 1e-5 * (v as f32).sqrt(), 1e-5);
}

#[test]
fn optimizer_unscales_the_gradient_and_keeps_f32_moments() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(6);
    let n = 1001;
    let s = F16_LOSS_SCALE;
    let p0 = rand16(&mut rng, n, 1.0);
    // true gradients whose loss-scaled values are f16 numbers
    let grad: CpuBuf = rand16(&mut rng, n, 1e-3 * s).iter().map(|x| x / s).collect();
    let scaled: CpuBuf = grad.iter().map(|x| x * s).collect();
    let (gg, mut gp) = (up(&scaled), up(&p0));
    let (mut gm, mut gv) = (g.alloc_f32(n), g.alloc_f32(n));
    let mut cp = cpu_buf(&c, &p0);
    let (mut cm, mut cv) = (c.alloc(n), c.alloc(n));
    let (mut gacc, mut gscale) = (up32(&[0.0]), up32(&[1.0]));
    let (mut cacc, mut cscale) = (CpuBuf::zeros(1), CpuBuf::from([1.0]));
    g.sum_squares(&gg, n, &mut gacc);
    c.sum_squares(&grad, n, &mut cacc);
    // the norm is that of the true gradient, summed in f32
    assert_close("sum_squares", &g.read(&gacc, 1), &cacc, 1e-5 * (n as f32).sqrt(), 0.0);
    g.clip_scale(&gacc, 0.01, &mut gscale);
    c.clip_scale(&cacc, 0.01, &mut cscale);
    assert_close("clip_scale", &g.read(&gscale, 1), &cscale, 1e-5 * (n as f32).sqrt(), 0.0);
    for step in 1..=3 {
        let hp = AdamParams { lr: 1e-2, weight_decay: 0.01, step, ..AdamParams::default() };
        g.adamw(&mut gp, &gg, &mut gm, &mut gv, &gscale, AdamStep::adam(n, hp));
        c.adamw(&mut cp, &grad, &mut cm, &mut cv, &cscale, AdamStep::adam(n, hp));
        // compare from the same (f16) parameters each step
        let gpv = g.read(&gp, n);
        // the update (<= lr) is computed in f32 and the parameter rounded: half an ulp of |p|
        assert_close(&format!("adam p, step {step}"), &gpv, &cp, EW_REL, 1e-6);
        cp = CpuBuf::from(gpv);
        // moments are f32; they follow the CPU's from the same rounded parameters (weight decay)
        assert_close(&format!("adam m, step {step}"), &g.read(&gm, n), &cm, 1e-4, 1e-9);
        assert_close(&format!("adam v, step {step}"), &g.read(&gv, n), &cv, 1e-4, 1e-12);
        cm = CpuBuf::from(g.read(&gm, n));
        cv = CpuBuf::from(g.read(&gv, n));
    }
}

#[test]
fn conv1d_matches_the_cpu() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(7);
    let cv = Conv1d { batch: 3, cin: 5, cout: 70, time: 19, k: 2, dilation: 4 };
    let (nx, nw, ny) = (cv.batch * cv.cin * cv.time, cv.cout * cv.cin * cv.k, cv.batch * cv.cout * cv.time);
    let x = rand16(&mut rng, nx, 1.0);
    let w = rand16(&mut rng, nw, 1.0);
    let bias = rand16(&mut rng, cv.cout, 1.0);
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<CpuBuf>();

    let mut gy = g.alloc(ny);
    g.conv1d_fwd(&up(&x), &up(&w), &up(&bias), &mut gy, cv);
    let mut cy = c.alloc(ny);
    c.conv1d_fwd(&x, &w, &bias, &mut cy, cv);
    let mut abs_y = c.alloc(ny);
    c.conv1d_fwd(&abs(&x), &abs(&w), &abs(&bias), &mut abs_y, cv);
    let k_in = cv.cin * cv.k + 1;
    assert_within("conv1d_fwd", &g.read(&gy, ny), &cy, &sum_bound(&cy, &abs_y, k_in, 0.0));

    let dy = rand16(&mut rng, ny, 1.0);
    let dx0 = rand16(&mut rng, nx, 1.0);
    let mut gdx = up(&dx0);
    g.conv1d_bwd_input(&up(&dy), &up(&w), &mut gdx, cv, true);
    let mut cdx = cpu_buf(&c, &dx0);
    c.conv1d_bwd_input(&dy, &w, &mut cdx, cv, true);
    let mut abs_dx = abs(&dx0);
    c.conv1d_bwd_input(&abs(&dy), &abs(&w), &mut abs_dx, cv, true);
    assert_within("conv1d_bwd_input", &g.read(&gdx, nx), &cdx, &sum_bound(&cdx, &abs_dx, cv.cout * cv.k + 1, 0.0));

    let dw0 = rand16(&mut rng, nw, 1.0);
    let db0 = rand16(&mut rng, cv.cout, 1.0);
    let (mut gdw, mut gdb) = (up(&dw0), up(&db0));
    g.conv1d_bwd_weight(&up(&x), &up(&dy), &mut gdw, &mut gdb, cv);
    let (mut cdw, mut cdb) = (cpu_buf(&c, &dw0), cpu_buf(&c, &db0));
    c.conv1d_bwd_weight(&x, &dy, &mut cdw, &mut cdb, cv);
    let (mut abs_dw, mut abs_db) = (abs(&dw0), abs(&db0));
    c.conv1d_bwd_weight(&abs(&x), &abs(&dy), &mut abs_dw, &mut abs_db, cv);
    let k_w = cv.batch * cv.time + 1;
    assert_within("conv1d_bwd_weight dw", &g.read(&gdw, nw), &cdw, &sum_bound(&cdw, &abs_dw, k_w, 0.0));
    assert_within("conv1d_bwd_weight db", &g.read(&gdb, cv.cout), &cdb, &sum_bound(&cdb, &abs_db, k_w, 0.0));
}

/// The attention op (issue 13) with f16 storage. Inputs are f16 numbers on both sides. The
/// forward's `out` sums the GPU's own f16-rounded `p`, so it may differ by 2^-11 * sum_j p|v| <=
/// 2^-11 max|v| on top of its own rounding; the backward reads the same (f16) `p` on both sides,
/// so its outputs differ by their f16 rounding and f32 summation order only.
#[test]
fn attention_matches_the_cpu() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(11);
    let a = etude::engine::Attention { batch: 2, heads: 3, dim: 5, time: 37, shift: 1 };
    let (n, np) = (a.qkv_len(), a.p_len());
    let (q, k, v) = (rand16(&mut rng, n, 2.0), rand16(&mut rng, n, 2.0), rand16(&mut rng, n, 1.0));
    let (mut gout, mut gp) = (g.alloc(n), g.alloc(np));
    g.attention_fwd(&up(&q), &up(&k), &up(&v), &mut gout, &mut gp, a);
    let (mut cout, mut cp) = (c.alloc(n), c.alloc(np));
    c.attention_fwd(&q, &k, &v, &mut cout, &mut cp, a);
    let sum_rel = 1e-5 * (a.time as f32).sqrt();
    assert_close("attention p", &g.read(&gp, np), &cp, HALF_ULP + sum_rel, ABS);
    let vmax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert_close("attention out", &g.read(&gout, n), &cout, HALF_ULP + sum_rel, HALF_ULP * vmax + sum_rel + ABS);

    let p16: CpuBuf = cp.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
    let dout = rand16(&mut rng, n, 1.0);
    let (mut gdq, mut gdk, mut gdv) = (g.alloc(n), g.alloc(n), g.alloc(n));
    g.attention_bwd(Qkv { q: &up(&q), k: &up(&k), v: &up(&v) }, &up(&p16), &up(&dout), Qkv { q: &mut gdq, k: &mut gdk, v: &mut gdv }, a);
    let (mut cdq, mut cdk, mut cdv) = (c.alloc(n), c.alloc(n), c.alloc(n));
    c.attention_bwd(Qkv { q: &q, k: &k, v: &v }, &p16, &dout, Qkv { q: &mut cdq, k: &mut cdk, v: &mut cdv }, a);
    for (what, got, want) in [("dq", &gdq, &cdq), ("dk", &gdk, &cdk), ("dv", &gdv, &cdv)] {
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let terms = 1e-5 * ((a.time * a.dim) as f32).sqrt();
        assert_close(&format!("attention {what}"), &g.read(got, n), want, HALF_ULP + terms, terms * scale + ABS);
    }
}

#[test]
fn lstm_recurrence_matches_the_cpu() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(8);
    // H = 20 is off every tile size; T = 300 rows of B*T split the dW_hh sum (and at B*T = 5, a
    // single split still goes through the f32 partials at f16); both kernel families (portable,
    // and the software-renderer ones: 8 batch rows per workgroup, B = 9 > 8, and dW_hh as a
    // register-blocked product, B*T a multiple of 4).
    let cases = [(3, 5, 20), (1, 300, 20), (1, 5, 20), (9, 4, 20)];
    for (variant, (batch, time, h)) in [KernelVariant::Portable, KernelVariant::Software]
        .into_iter()
        .flat_map(|v| cases.into_iter().map(move |c| (v, c)))
    {
        g.set_kernel_variant(variant);
        let l = Lstm { batch, time, hidden: h };
        let (nx, ns) = (batch * time * 4 * h, batch * time * h);
        let xw = rand16(&mut rng, nx, 1.0);
        let whh = rand16(&mut rng, 4 * h * h, 0.3);
        let h0 = rand16(&mut rng, batch * h, 1.0);
        let c0 = rand16(&mut rng, batch * h, 1.0);
        let (mut ghs, mut gcs, mut gg) = (g.alloc(ns), g.alloc(ns), g.alloc(nx));
        let (gwhh, gh0, gc0) = (up(&whh), up(&h0), up(&c0));
        g.lstm_fwd(&up(&xw), &gwhh, &gh0, &gc0, LstmSeqs { hs: &mut ghs, cs: &mut gcs, gates: &mut gg }, l);
        let (mut chs, mut ccs, mut cg) = (c.alloc(ns), c.alloc(ns), c.alloc(nx));
        c.lstm_fwd(&xw, &whh, &h0, &c0, LstmSeqs { hs: &mut chs, cs: &mut ccs, gates: &mut cg }, l);
        // The recurrence runs in f32 on the GPU (state in workgroup memory): only the stored
        // outputs are rounded. A step's dot product has H terms bounded by sum |w| |h| <= H * 0.3;
        // tanh/sigmoid are 1-Lipschitz, and errors carried through c are damped by f < 1.
        let tol_rel = EW_REL + 1e-5 * (h as f32).sqrt() * 0.3 * h as f32;
        let ghv = CpuBuf::from(g.read(&ghs, ns));
        let gcv = CpuBuf::from(g.read(&gcs, ns));
        let ggv = CpuBuf::from(g.read(&gg, nx));
        assert_close(&format!("lstm_fwd hs {l:?} {variant:?}"), &ghv, &chs, tol_rel, 1e-5);
        assert_close(&format!("lstm_fwd cs {l:?} {variant:?}"), &gcv, &ccs, tol_rel, 1e-5);
        assert_close(&format!("lstm_fwd gates {l:?} {variant:?}"), &ggv, &cg, tol_rel, 1e-5);

        // The backward from the same (f16) forward results on both sides.
        let dhs = rand16(&mut rng, ns, 1.0);
        let dw0 = rand16(&mut rng, 4 * h * h, 1.0);
        let (mut gdxw, mut gdw) = (g.alloc(nx), up(&dw0));
        g.lstm_bwd(&gwhh, LstmSaved { h0: &gh0, c0: &gc0, seqs: LstmSeqs { hs: &ghs, cs: &gcs, gates: &gg } }, &up(&dhs), &mut gdxw, &mut gdw, l);
        let (mut cdxw, mut cdw) = (c.alloc(nx), cpu_buf(&c, &dw0));
        c.lstm_bwd(&whh, LstmSaved { h0: &h0, c0: &c0, seqs: LstmSeqs { hs: &ghv, cs: &gcv, gates: &ggv } }, &dhs, &mut cdxw, &mut cdw, l);
        // dxw: f32 recurrence backward in time, rounded at the store; its dh sums 4H terms per step.
        let gdxv = g.read(&gdxw, nx);
        let scale = cdxw.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert_close(&format!("lstm_bwd dxw {l:?} {variant:?}"), &gdxv, &cdxw, EW_REL, 1e-5 * (4.0 * h as f32).sqrt() * scale + ABS);
        // dW_hh sums B*T products of dxw (rounded to f16 by the GPU first) with h_{t-1}.
        let abs_dxw: CpuBuf = cdxw.iter().map(|v| v.abs()).collect();
        let abs_hs: CpuBuf = ghv.iter().map(|v| v.abs()).collect();
        let abs_h0: CpuBuf = h0.iter().map(|v| v.abs()).collect();
        let mut abs_dw: CpuBuf = dw0.iter().map(|v| v.abs()).collect();
        // sum_{b,t} |dxw[b,t]|^T |h_{t-1}[b]| as a matrix product over the rows (b, t)
        let mut hprev = CpuBuf::filled(ns, 0f32);
        for b in 0..batch {
            for t in 0..time {
                for j in 0..h {
                    hprev[(b * time + t) * h + j] = if t == 0 { abs_h0[b * h + j] } else { abs_hs[(b * time + t - 1) * h + j] };
                }
            }
        }
        c.matmul(&abs_dxw, &hprev, &mut abs_dw, MatMul { m: 4 * h, k: batch * time, n: h, trans_a: true, trans_b: false, accumulate: true });
        let bound = sum_bound(&cdw, &abs_dw, batch * time + 1, HALF_ULP);
        assert_within(&format!("lstm_bwd dw_hh {l:?} {variant:?}"), &g.read(&gdw, 4 * h * h), &cdw, &bound);
    }
    g.set_kernel_variant(KernelVariant::Auto);
}

#[test]
#[should_panic(expected = "differ in precision")]
fn mixing_f16_and_f32_buffers_in_an_op_is_refused() {
    let g = gpu();
    let x = g.alloc_f32(4);
    let mut y = g.alloc(4);
    g.add(&x, &mut y, 4);
}

#[test]
#[should_panic(expected = "must hold f32")]
fn loss_statistics_must_be_f32() {
    let g = gpu();
    let (logits, mut d, mut stats) = (g.alloc(6), g.alloc(6), g.alloc(4));
    g.softmax_xent(&logits, &up_ids(&[0, 1]), &mut d, &mut stats, Xent { n: 2, v: 3, grad_scale: 0.5 });
}

#[test]
fn f32_is_the_default_and_allocates_f32() {
    let g = gpu32();
    assert_eq!(g.precision(), Precision::F32);
    assert_eq!(g.loss_scale(), 1.0);
    assert_eq!(g.alloc(3).elem(), Elem::F32);
    assert_eq!(GpuBackend::new(None).expect("adapter").precision(), Precision::F32);
}

// ---- training --------------------------------------------------------------------------------

/// Per-step mean losses of `steps` Adam steps (the real training path: `Stepper`, `Adam` with
/// clipping at 1) of `model` on windows of a periodic 12-token stream, from seed `seed`.
fn train_losses<B: Backend>(b: &B, model: &str, sizes: &Sizes, steps: usize, seed: u64) -> Vec<f64> {
    const PATTERN: [u32; 11] = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5];
    let (vocab, window, batch) = (12, 16, 8);
    let cfg = ModelConfig::from_name(model, vocab, window, sizes).expect("model config");
    let mut rng = Rng::new(seed);
    let mut m = AnyModel::new(b, &cfg, batch, window, &mut rng).expect("model");
    let hp = AdamParams { lr: 1e-2, ..AdamParams::default() };
    let mut adam = Adam::new(b, m.params(), hp, 1.0);
    let mut stepper = Stepper::new(b, &m, batch);
    let targets = m.targets();
    let mut data = Rng::new(seed + 1);
    let mut losses = Vec::with_capacity(steps);
    for _ in 0..steps {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..batch {
            let off = data.below(1000);
            let tok = |i: usize| PATTERN[(off + i) % PATTERN.len()];
            x.extend((0..window).map(tok));
            match targets {
                etude::data::dataset::Targets::Last => y.push(tok(window)),
                etude::data::dataset::Targets::Every => y.extend((1..=window).map(tok)),
            }
        }
        stepper.train(b, &mut m, &mut adam, &x, &y);
        losses.push(stepper.last_batch_loss(b));
    }
    losses
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// 50 steps at f16 and at f32 from the same initialisation and batches: the f16 curve falls like
/// the f32 one. Margin: the mean of the last 10 losses within 0.05 nats (or 5%) of f32's, and
/// every step within 0.15 nats. Rounding weights to f16 (2^-11 relative) moves each logit by about
/// 1e-3; the curves separate slowly as training amplifies differences. Measured on lavapipe: lstm
/// last-10 difference 0.0065, worst step 0.024; wavenet 0.0002 and 0.0005 (the margins leave room
/// for other adapters' rounding of exp and tanh).
fn check_training(model: &str, sizes: Sizes, seed: u64) {
    let steps = 50;
    let l16 = train_losses(gpu(), model, &sizes, steps, seed);
    let l32 = train_losses(gpu32(), model, &sizes, steps, seed);
    let (first16, last16) = (mean(&l16[..10]), mean(&l16[steps - 10..]));
    let (first32, last32) = (mean(&l32[..10]), mean(&l32[steps - 10..]));
    let worst = l16.iter().zip(&l32).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    eprintln!(
        "{model}: f32 {first32:.4} -> {last32:.4}, f16 {first16:.4} -> {last16:.4}; last-10 difference {:.4}, worst step {worst:.4}",
        last16 - last32
    );
    assert!(l16.iter().all(|l| l.is_finite()), "{model}: non-finite f16 loss");
    assert!(last32 < 0.8 * first32, "{model}: the f32 reference did not learn ({first32} -> {last32})");
    assert!(
        (last16 - last32).abs() <= 0.05f64.max(0.05 * last32),
        "{model}: f16 ends at {last16}, f32 at {last32}"
    );
    assert!(worst <= 0.15, "{model}: a step's f16 loss differs from f32's by {worst}");
}

#[test]
fn lstm_trains_at_f16_like_at_f32() {
    let sizes = Sizes { embed: Some(8), hidden: Some(24), layers: Some(2), dense: Some(32), ..Sizes::default() };
    check_training("lstm", sizes, 42);
}

#[test]
fn wavenet_trains_at_f16_like_at_f32() {
    let sizes = Sizes { embed: Some(8), channels: Some(16), layers: Some(4), dense: Some(32), ..Sizes::default() };
    check_training("wavenet", sizes, 13);
}

#[test]
fn wavenet_gated_with_attention_trains_at_f16_like_at_f32() {
    let sizes = Sizes {
        embed: Some(8),
        residual: Some(8),
        skip: Some(16),
        layers: Some(3),
        attention: Some(2),
        attention_dim: Some(8),
        ..Sizes::default()
    };
    check_training("wavenet-gated", sizes, 13);
}

// ---- the command line ------------------------------------------------------------------------

#[test]
fn precision_f16_is_refused_on_the_cpu_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let expect = ["--precision f16 needs the GPU backend"];
    etude_fails(&tiny_train("lstm", "cpu", "run", "1", &["--precision", "f16"]), tmp.path(), &expect);
    let bench = ["bench", "train", "--model", "lstm", "--backend", "cpu", "--precision", "f16", "--steps", "1"];
    etude_fails(&bench, tmp.path(), &expect);
}

#[test]
fn bench_train_compares_both_precisions_in_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["bench", "train", "--model", "wavenet", "--backend", "gpu", "--precision", "both"];
    let small = ["--batch", "2", "--window", "16", "--steps", "1", "--warmup", "0"];
    let (out, _) = etude_ok(&[&args[..], &small[..]].concat(), tmp.path());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].contains(" f32 B=2") && lines[1].contains(" f16 B=2"), "{out}");
    assert!(lines[2].starts_with("f16 / f32: step time x"), "{out}");
    let (json, _) = etude_ok(&[&args[..], &small[..], &["--json"][..]].concat(), tmp.path());
    let precisions: Vec<String> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON object per line")["precision"].to_string())
        .collect();
    assert_eq!(precisions, ["\"f32\"", "\"f16\""]);
}

/// An f16 run stores its precision in the checkpoint (whose tensors stay f32), and `--resume`
/// continues it at f16 exactly as if it had never stopped; `--precision` with `--resume` is refused.
#[test]
fn an_f16_run_resumes_at_f16() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let f16 = ["--precision", "f16"];
    etude_ok(&tiny_train("lstm", "gpu", "whole", "2", &f16), dir);
    etude_ok(&tiny_train("lstm", "gpu", "split", "1", &f16), dir);
    let (_, err) =
        etude_ok(&["train", "--backend", "gpu", "--out", "split", "--resume", "--epochs", "2", "--sample-length", "0"], dir);
    assert!(err.contains("f16)"), "the resumed run says it runs at f16: {err}");
    let (whole, split) = (metrics_rows(&dir.join("whole")), metrics_rows(&dir.join("split")));
    assert_eq!(whole[1][..7], split[1][..7], "epoch 2 of the resumed f16 run");
    let ck = Checkpoint::load(&dir.join("split").join("last.safetensors")).unwrap();
    assert_eq!(ck.meta["optim"]["precision"], "f16");
    assert!(ck.tensors.iter().all(|t| t.data.iter().all(|v| v.is_finite())));
    let resume_f32 = ["train", "--out", "split", "--resume", "--epochs", "3", "--precision", "f32"];
    etude_fails(&resume_f32, dir, &["--precision"]);
}
