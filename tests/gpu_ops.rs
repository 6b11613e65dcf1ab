//! Every GPU operation against the CPU reference backend, on random inputs in several shapes
//! (sizes off the workgroup multiples, a batch of one, k = 1 products, all transpose/accumulate
//! combinations, repeated ids, huge logits, Adam with weight decay and clipping over several steps).
//!
//! One device is shared by all tests (`OnceLock`). With no adapter the tests fail, saying how to get
//! one: the software Vulkan driver is enough.
//!
//! Tolerances. Both backends compute in f32. An element-wise op evaluates the same formula, so only
//! the transcendental functions differ (the GPU's exp/tanh are allowed a few ulp): relative 1e-5 on
//! top of an absolute 1e-6 floor. A sum of k products is accumulated in a different order on each
//! side; the rounding error of such a sum grows like sqrt(k) ulp of the sum of |terms|, so
//! reductions compare with `|gpu - cpu| <= 1e-5 * sqrt(k) * (sum |terms|) + 1e-6`, using a bound
//! computed from the inputs.

mod common;

use common::{gpu, rand_vec, upload, upload_ids};
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::{AdamStep, Strided, Xent};
use etude::engine::gpu::{list_adapters, pick_adapter_index};
use etude::engine::{Act, AdamParams, Backend, MatMul};
use etude::rng::Rng;

/// Element-wise comparison: `|g - c| <= abs + rel * |c|`.
fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], rel: f32, abs: f32) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let tol = abs + rel * c.abs();
        assert!((g - c).abs() <= tol || (g.is_nan() && c.is_nan()), "{what}[{i}]: gpu {g} cpu {c} (tol {tol})");
    }
}

/// Element-wise comparison with a per-element bound (reductions).
fn assert_within(what: &str, gpu: &[f32], cpu: &[f32], bound: &[f32]) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    for (i, ((&g, &c), &b)) in gpu.iter().zip(cpu).zip(bound).enumerate() {
        assert!((g - c).abs() <= b, "{what}[{i}]: gpu {g} cpu {c} (bound {b})");
    }
}

/// Relative and absolute tolerance for element-wise formulas (see the module doc).
const EW_REL: f32 = 1e-5;
const EW_ABS: f32 = 1e-6;

#[test]
fn adapters_are_listed_and_one_is_picked() {
    let list = list_adapters();
    assert!(!list.is_empty(), "no adapter listed");
    let i = pick_adapter_index(&list, None).expect("an adapter is picked");
    assert!(i < list.len());
    // picking by index and by name substring
    assert_eq!(pick_adapter_index(&list, Some("0")).unwrap(), 0);
    let name = list[i].name.clone();
    assert_eq!(list[pick_adapter_index(&list, Some(&name.to_uppercase())).unwrap()].name, name);
    assert!(pick_adapter_index(&list, Some("no such adapter name")).is_err());
    assert!(pick_adapter_index(&[], None).unwrap_err().contains("mesa-vulkan-drivers"));
    let g = gpu();
    assert!(!g.adapter_info().name.is_empty());
    if g.adapter_info().name.contains("llvmpipe") {
        assert!(g.is_software());
    }
}

#[test]
fn fill_add_and_write_read_round_trip() {
    let g = gpu();
    let mut rng = Rng::new(1);
    for &n in &[1usize, 7, 256, 257, 1000, 70_000] {
        let x = rand_vec(&mut rng, n, 1.0);
        let y0 = rand_vec(&mut rng, n, 1.0);
        let xb = upload(&x);
        let mut yb = upload(&y0);
        assert_eq!(g.read(&xb, n), x, "round trip n={n}");
        g.add(&xb, &mut yb, n);
        let want: CpuBuf = x.iter().zip(&y0).map(|(a, b)| a + b).collect();
        assert_eq!(g.read(&yb, n), want, "add n={n}: one f32 addition must match exactly");
        // fill only the first n-1, the last element keeps its value
        g.fill(&mut yb, n - 1, 2.5);
        let got = g.read(&yb, n);
        assert!(got[..n - 1].iter().all(|&v| v == 2.5), "fill n={n}");
        assert_eq!(got[n - 1], want[n - 1], "fill must stop at n");
    }
}

#[test]
fn writes_are_ordered_after_recorded_work() {
    // add recorded, then the input overwritten before any flush: the add must see the old input.
    let g = gpu();
    let mut x = upload(&[1.0, 2.0, 3.0]);
    let mut y = upload(&[10.0, 20.0, 30.0]);
    g.add(&x, &mut y, 3);
    g.write(&mut x, &[100.0, 100.0, 100.0]);
    g.add(&x, &mut y, 3);
    assert_eq!(g.read(&y, 3), vec![111.0, 122.0, 133.0]);
}

#[test]
fn large_one_dimensional_dispatch_uses_a_two_dimensional_grid() {
    // 65535 * 256 + 300 elements need more than 65535 workgroups in x.
    let g = gpu();
    let n = 65535 * 256 + 300;
    let mut x = g.alloc(n);
    g.fill(&mut x, n, 1.5);
    let got = g.read(&x, n);
    assert!(got.iter().all(|&v| v == 1.5), "every element filled");
}

#[test]
fn copy_strided_plain_and_accumulating() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(2);
    // (rows, cols, src_off, src_stride, dst_off, dst_stride)
    for &(rows, cols, so, ss, d_o, ds) in &[(1, 1, 0, 1, 0, 1), (3, 5, 2, 7, 1, 6), (40, 300, 5, 301, 0, 333), (1, 1000, 0, 0, 3, 0)] {
        for acc in [false, true] {
            let src = rand_vec(&mut rng, so + (rows - 1) * ss + cols + 2, 1.0);
            let dst0 = rand_vec(&mut rng, d_o + (rows - 1) * ds + cols + 2, 1.0);
            let mut want = dst0.clone();
            c.copy_strided(&src, &mut want, Strided { rows, cols, src_off: so, src_stride: ss, dst_off: d_o, dst_stride: ds, accumulate: acc });
            let sb = upload(&src);
            let mut db = upload(&dst0);
            g.copy_strided(&sb, &mut db, Strided { rows, cols, src_off: so, src_stride: ss, dst_off: d_o, dst_stride: ds, accumulate: acc });
            // a copy is exact; one addition is exact-rounded on both sides
            assert_eq!(g.read(&db, dst0.len()), want, "copy_strided {rows}x{cols} acc={acc}");
        }
    }
}

#[test]
fn activations_forward_and_backward() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(3);
    for &n in &[1usize, 255, 1031] {
        for act in [Act::Relu, Act::Tanh, Act::Sigmoid] {
            let x = rand_vec(&mut rng, n, 4.0);
            let dy = rand_vec(&mut rng, n, 1.0);
            let mut y = CpuBuf::zeros(n);
            let mut dx = CpuBuf::zeros(n);
            c.act_fwd(act, &x, &mut y, n);
            c.act_bwd(act, &y, &dy, &mut dx, n);
            let xb = upload(&x);
            let dyb = upload(&dy);
            let mut yb = g.alloc(n);
            let mut dxb = g.alloc(n);
            g.act_fwd(act, &xb, &mut yb, n);
            let yg = g.read(&yb, n);
            assert_close(&format!("{act:?} fwd n={n}"), &yg, &y, EW_REL, EW_ABS);
            // backward from the CPU's y so that only the backward formula is compared
            let y_exact = upload(&y);
            g.act_bwd(act, &y_exact, &dyb, &mut dxb, n);
            assert_close(&format!("{act:?} bwd n={n}"), &g.read(&dxb, n), &dx, EW_REL, EW_ABS);
        }
    }
}

#[test]
fn gated_unit_forward_and_backward() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(4);
    for &(batch, r, t) in &[(1, 1, 1), (1, 3, 17), (3, 8, 33), (2, 32, 100)] {
        let a = rand_vec(&mut rng, batch * 2 * r * t, 3.0);
        let dz = rand_vec(&mut rng, batch * r * t, 1.0);
        let mut z = CpuBuf::zeros(batch * r * t);
        let mut da = CpuBuf::zeros(batch * 2 * r * t);
        c.gated_fwd(&a, &mut z, batch, r, t);
        c.gated_bwd(&a, &dz, &mut da, batch, r, t);
        let ab = upload(&a);
        let dzb = upload(&dz);
        let mut zb = g.alloc(z.len());
        let mut dab = g.alloc(da.len());
        g.gated_fwd(&ab, &mut zb, batch, r, t);
        g.gated_bwd(&ab, &dzb, &mut dab, batch, r, t);
        // a product of two transcendental results: twice the element-wise tolerance
        assert_close(&format!("gated_fwd {batch}x{r}x{t}"), &g.read(&zb, z.len()), &z, 2.0 * EW_REL, EW_ABS);
        assert_close(&format!("gated_bwd {batch}x{r}x{t}"), &g.read(&dab, da.len()), &da, 4.0 * EW_REL, EW_ABS);
    }
}

#[test]
fn transpose_matches() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(5);
    for &(batch, rows, cols) in &[(1, 1, 1), (1, 1, 37), (2, 17, 5), (3, 64, 48), (1, 100, 129)] {
        let x = rand_vec(&mut rng, batch * rows * cols, 1.0);
        let mut y = CpuBuf::zeros(x.len());
        c.transpose(&x, &mut y, batch, rows, cols);
        let xb = upload(&x);
        let mut yb = g.alloc(x.len());
        g.transpose(&xb, &mut yb, batch, rows, cols);
        assert_eq!(g.read(&yb, x.len()), y, "transpose {batch}x{rows}x{cols} is a permutation: exact");
    }
}

/// Bound for a matrix product element: `1e-5 * sqrt(k) * sum_k |a||b| + 1e-6` (+ |c0| for accumulate).
fn matmul_bound(a: &[f32], b: &[f32], c0: &[f32], mm: MatMul) -> CpuBuf {
    let MatMul { m, k, n, trans_a, trans_b, accumulate } = mm;
    let at = |i: usize, kk: usize| if trans_a { a[kk * m + i] } else { a[i * k + kk] };
    let bt = |kk: usize, j: usize| if trans_b { b[j * k + kk] } else { b[kk * n + j] };
    let mut out = CpuBuf::zeros(m * n);
    for i in 0..m {
        for j in 0..n {
            let mut s: f32 = (0..k).map(|kk| (at(i, kk) * bt(kk, j)).abs()).sum();
            if accumulate {
                s += c0[i * n + j].abs();
            }
            out[i * n + j] = 1e-5 * ((k + 1) as f32).sqrt() * s + 1e-6;
        }
    }
    out
}

#[test]
fn matmul_all_transposes_and_accumulate() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(6);
    // (m, k, n): a batch of one, k = 1, sizes off the 64 / 32 / 16 tiles, and a few full tiles; all
    // but the last two use the 32x32-tile kernel (few output tiles), (70, 1500, 37) is split along
    // k (2 tiles, k >= 1024: ranges of 752 and 748), the last the 64x64 one.
    let shapes = [
        (1, 1, 1),
        (1, 7, 5),
        (5, 1, 9),
        (1, 300, 1),
        (13, 17, 70),
        (64, 16, 64),
        (65, 33, 129),
        (128, 130, 31),
        (70, 1500, 37),
        (16 * 64 + 3, 20, 8 * 64 + 5),
    ];
    for &(m, k, n) in &shapes {
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                for accumulate in [false, true] {
                    let mm = MatMul { m, k, n, trans_a, trans_b, accumulate };
                    let a = rand_vec(&mut rng, m * k, 1.0);
                    let b = rand_vec(&mut rng, k * n, 1.0);
                    let c0 = rand_vec(&mut rng, m * n, 1.0);
                    let mut want = c0.clone();
                    c.matmul(&a, &b, &mut want, mm);
                    let ab = upload(&a);
                    let bb = upload(&b);
                    let mut cb = upload(&c0);
                    g.matmul(&ab, &bb, &mut cb, mm);
                    let got = g.read(&cb, m * n);
                    assert_within(&format!("{mm:?}"), &got, &want, &matmul_bound(&a, &b, &c0, mm));
                }
            }
        }
    }
}

#[test]
fn matmul_into_longer_buffers() {
    // buffers longer than the sizes need (an arena sized for a bigger batch): only [0, m*n) is written
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(7);
    let mm = MatMul { m: 3, k: 4, n: 5, trans_a: false, trans_b: true, accumulate: false };
    let a = rand_vec(&mut rng, 100, 1.0);
    let b = rand_vec(&mut rng, 100, 1.0);
    let c0 = rand_vec(&mut rng, 100, 1.0);
    let mut want = c0.clone();
    c.matmul(&a, &b, &mut want, mm);
    let mut cb = upload(&c0);
    g.matmul(&upload(&a), &upload(&b), &mut cb, mm);
    let got = g.read(&cb, 100);
    assert_within("matmul head", &got[..15], &want[..15], &matmul_bound(&a[..12], &b[..20], &c0[..15], mm));
    assert_eq!(&got[15..], &c0[15..], "matmul wrote past m*n");
}

#[test]
fn bias_add_and_grad() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(8);
    for &(outer, channels, inner) in &[(1, 1, 1), (1, 300, 1), (128, 256, 1), (3, 17, 29), (2, 5, 1000)] {
        let n = outer * channels * inner;
        let y0 = rand_vec(&mut rng, n, 1.0);
        let bias = rand_vec(&mut rng, channels, 1.0);
        let db0 = rand_vec(&mut rng, channels, 1.0);
        let mut y = y0.clone();
        let mut db = db0.clone();
        c.bias_add(&mut y, &bias, outer, channels, inner);
        c.bias_grad(&y0, &mut db, outer, channels, inner);
        let mut yb = upload(&y0);
        let dyb = upload(&y0);
        let mut dbb = upload(&db0);
        g.bias_add(&mut yb, &upload(&bias), outer, channels, inner);
        g.bias_grad(&dyb, &mut dbb, outer, channels, inner);
        assert_eq!(g.read(&yb, n), y, "bias_add {outer}x{channels}x{inner}: one addition, exact");
        // sum of outer*inner terms (the CPU sums in f64): reduction bound
        let terms = outer * inner;
        let bound: CpuBuf = (0..channels)
            .map(|ch| {
                let s: f32 = (0..outer).flat_map(|o| (0..inner).map(move |i| (o, i))).map(|(o, i)| y0[(o * channels + ch) * inner + i].abs()).sum();
                1e-5 * ((terms + 1) as f32).sqrt() * (s + db0[ch].abs()) + 1e-6
            })
            .collect();
        assert_within(&format!("bias_grad {outer}x{channels}x{inner}"), &g.read(&dbb, channels), &db, &bound);
    }
}

#[test]
fn embedding_forward_and_backward_with_repeated_ids() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(9);
    // (rows, n, e)
    for &(rows, n, e) in &[(1, 1, 1), (5, 40, 3), (50, 300, 65), (300, 129, 128), (20, 5000, 3)] {
        let table = rand_vec(&mut rng, rows * e, 1.0);
        // few distinct ids so that most repeat; the first id repeats on purpose
        let mut ids: Vec<u32> = (0..n).map(|_| rng.below(rows.min(7)) as u32).collect();
        ids[n - 1] = ids[0];
        let dout = rand_vec(&mut rng, n * e, 1.0);
        let dt0 = rand_vec(&mut rng, rows * e, 1.0);
        let mut out = CpuBuf::zeros(n * e);
        let mut dt = dt0.clone();
        c.embedding_fwd(&ids, &table, &mut out, n, e);
        c.embedding_bwd(&ids, &dout, &mut dt, n, e);
        let idb = upload_ids(&ids);
        assert_eq!(g.read_ids(&idb, n), ids);
        let mut outb = g.alloc(n * e);
        let mut dtb = upload(&dt0);
        g.embedding_fwd(&idb, &upload(&table), &mut outb, n, e);
        g.embedding_bwd(&idb, &upload(&dout), &mut dtb, n, e);
        assert_eq!(g.read(&outb, n * e), out, "embedding_fwd {rows}x{n}x{e} copies: exact");
        // each dtable element sums the occurrences of its row, in a different order than the CPU
        let mut bound = CpuBuf::zeros(rows * e);
        for (i, &id) in ids.iter().enumerate() {
            for col in 0..e {
                bound[id as usize * e + col] += dout[i * e + col].abs();
            }
        }
        let count = n as f32;
        for (bd, d0) in bound.iter_mut().zip(&dt0) {
            *bd = 1e-5 * (count + 1.0).sqrt() * (*bd + d0.abs()) + 1e-6;
        }
        assert_within(&format!("embedding_bwd {rows}x{n}x{e}"), &g.read(&dtb, rows * e), &dt, &bound);
    }
}

#[test]
fn softmax_xent_matches_and_is_stable() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(10);
    // (n, v, logit scale): a row of one class, v off the 256 multiple, and logits of 1e4 whose
    // naive exp would overflow
    for &(n, v, scale) in &[(1, 1, 1.0f32), (1, 7, 3.0), (5, 300, 5.0), (64, 257, 1.0), (3, 1000, 1e4), (2, 600, 80.0)] {
        let logits = rand_vec(&mut rng, n * v, scale);
        let targets: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
        let grad_scale = 1.0 / n as f32;
        let mut dl = CpuBuf::zeros(n * v);
        let mut st = CpuBuf::zeros(2 * n);
        c.softmax_xent(&logits, &targets, &mut dl, &mut st, Xent { n, v, grad_scale });
        let mut dlb = g.alloc(n * v);
        let mut stb = g.alloc(2 * n);
        g.softmax_xent(&upload(&logits), &upload_ids(&targets), &mut dlb, &mut stb, Xent { n, v, grad_scale });
        let dg = g.read(&dlb, n * v);
        let sg = g.read(&stb, 2 * n);
        assert!(dg.iter().chain(&sg).all(|x| x.is_finite()), "softmax_xent {n}x{v} scale {scale}: finite");
        // probabilities are exp(x - max) / sum: exp and a sum of v terms of at most 1
        let rel = 1e-5 * ((v + 1) as f32).sqrt();
        assert_close(&format!("dlogits {n}x{v} scale {scale}"), &dg, &dl, rel, rel * grad_scale);
        for i in 0..n {
            // the loss is log(sum) - (x_t - max): absolute error ~ rel * (1 + |x_t - max|)
            let tol = rel * (1.0 + (st[2 * i]).abs()) + 1e-6;
            assert!((sg[2 * i] - st[2 * i]).abs() <= tol, "loss row {i}: gpu {} cpu {}", sg[2 * i], st[2 * i]);
            assert_eq!(sg[2 * i + 1], st[2 * i + 1], "argmax hit row {i}");
        }
    }
}

#[test]
fn softmax_argmax_prefers_the_first_maximum() {
    let g = gpu();
    // row 0: tie between class 1 and 300, target 1 -> hit; row 1: same tie, target 300 -> miss
    let v = 400;
    let mut logits = CpuBuf::zeros(2 * v);
    for row in 0..2 {
        logits[row * v + 1] = 5.0;
        logits[row * v + 300] = 5.0;
    }
    let mut dl = g.alloc(2 * v);
    let mut st = g.alloc(4);
    g.softmax_xent(&upload(&logits), &upload_ids(&[1, 300]), &mut dl, &mut st, Xent { n: 2, v, grad_scale: 1.0 });
    let s = g.read(&st, 4);
    assert_eq!((s[1], s[3]), (1.0, 0.0), "first maximum wins ties");
}

#[test]
fn sum_squares_clip_scale() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(11);
    for &n in &[1usize, 255, 4097, 100_000] {
        let x = rand_vec(&mut rng, n, 1.0);
        let mut acc = CpuBuf::from([0.5f32]);
        c.sum_squares(&x, n, &mut acc);
        c.sum_squares(&x, n, &mut acc); // twice: it accumulates
        let mut accb = upload(&[0.5]);
        let xb = upload(&x);
        g.sum_squares(&xb, n, &mut accb);
        g.sum_squares(&xb, n, &mut accb);
        let got = g.read(&accb, 1)[0];
        // all terms positive: the sum itself bounds the error
        let tol = 1e-5 * ((n + 1) as f32).sqrt() * acc[0];
        assert!((got - acc[0]).abs() <= tol, "sum_squares n={n}: gpu {got} cpu {}", acc[0]);
        for max_norm in [0.0f32, 1.0, 1e6] {
            let mut sc = CpuBuf::from([0.0f32]);
            c.clip_scale(&acc, max_norm, &mut sc);
            let mut scb = g.alloc(1);
            g.clip_scale(&upload(&acc), max_norm, &mut scb);
            assert_close(&format!("clip_scale n={n} max={max_norm}"), &g.read(&scb, 1), &sc, EW_REL, 0.0);
        }
    }
}

#[test]
fn adam_with_weight_decay_and_clipping_over_steps() {
    let (g, c) = (gpu(), CpuBackend::new());
    let mut rng = Rng::new(12);
    for &n in &[1usize, 300, 5000] {
        let p0 = rand_vec(&mut rng, n, 1.0);
        let (mut p, mut m, mut v) = (p0.clone(), CpuBuf::zeros(n), CpuBuf::zeros(n));
        let (mut pb, mut mb, mut vb) = (upload(&p0), g.alloc(n), g.alloc(n));
        let mut gb = g.alloc(n);
        let mut accb = g.alloc(1);
        let mut scb = g.alloc(1);
        for step in 1..=5u32 {
            let grad = rand_vec(&mut rng, n, 3.0);
            let hp = AdamParams { lr: 1e-2, weight_decay: 0.01, step, ..AdamParams::default() };
            // clipping: the gradient norm is far above 0.5, so the scale is < 1
            let mut acc = CpuBuf::from([0.0f32]);
            c.sum_squares(&grad, n, &mut acc);
            let mut sc = CpuBuf::from([0.0f32]);
            c.clip_scale(&acc, 0.5, &mut sc);
            if n > 1 {
                assert!(sc[0] < 1.0, "the test must exercise clipping");
            }
            c.adamw(&mut p, &grad, &mut m, &mut v, &sc, AdamStep::adam(n, hp));
            g.write(&mut gb, &grad);
            g.fill(&mut accb, 1, 0.0);
            g.sum_squares(&gb, n, &mut accb);
            g.clip_scale(&accb, 0.5, &mut scb);
            // the update runs with the GPU's own scale; compare the scales separately
            let scg = g.read(&scb, 1);
            assert_close("clip scale", &scg, &sc, 1e-5 * ((n + 1) as f32).sqrt(), 0.0);
            g.write(&mut scb, &sc);
            g.adamw(&mut pb, &gb, &mut mb, &mut vb, &scb, AdamStep::adam(n, hp));
        }
        // five steps of element-wise f32 formulas with a division by sqrt(v): relative 1e-4 on
        // the moments, and the parameters move by at most 5 * lr from values of order 1
        assert_close(&format!("adam m n={n}"), &g.read(&mb, n), &m, 1e-4, 1e-7);
        assert_close(&format!("adam v n={n}"), &g.read(&vb, n), &v, 1e-4, 1e-9);
        assert_close(&format!("adam p n={n}"), &g.read(&pb, n), &p, 1e-5, 1e-5);
    }
}

#[test]
fn dispatches_and_submissions_are_counted() {
    // Counters are shared with the tests running beside this one, so only lower bounds hold.
    let g = gpu();
    let (d0, s0) = g.stats();
    let mut x = g.alloc(1000);
    let y = g.alloc(1000);
    for _ in 0..50 {
        g.add(&y, &mut x, 1000);
    }
    g.flush();
    let (d1, s1) = g.stats();
    assert!(d1 - d0 >= 50, "50 dispatches recorded");
    assert!(s1 > s0, "flush submitted");
}

#[test]
#[should_panic(expected = "add: buffer `x` holds 3 elements")]
fn lengths_are_checked_with_the_operation_name() {
    let g = gpu();
    let x = g.alloc(3);
    let mut y = g.alloc(10);
    g.add(&x, &mut y, 10);
}

#[test]
fn a_long_chain_in_one_submission_sees_every_previous_write() {
    // 1000 dependent dispatches in one pass (more than the params arena's first size): each add
    // must see the previous one's result.
    let g = gpu();
    let ones = upload(&[1.0; 300]);
    let mut y = g.alloc(300);
    for _ in 0..1000 {
        g.add(&ones, &mut y, 300);
    }
    let got = g.read(&y, 300);
    assert!(got.iter().all(|&v| v == 1000.0), "got {:?}", &got[..4]);
    // and again, now that every bind group comes from the cache
    for _ in 0..1000 {
        g.add(&ones, &mut y, 300);
    }
    assert!(g.read(&y, 300).iter().all(|&v| v == 2000.0));
}

#[test]
fn adapter_report_prints_one_line() {
    for a in list_adapters() {
        let line = a.to_string();
        assert!(line.contains(&a.name) && !line.contains('\n'), "{line}");
    }
}
