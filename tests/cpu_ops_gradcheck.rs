//! Every basic op of the CPU backend (`src/engine/cpu/`) against central finite differences:
//! each backward op, or each product a model uses as a backward, is compared with the numeric
//! gradient of `sum(r * forward(x))` for fixed random weights `r`. Plus Adam against a two-step
//! example computed by hand, and the dense / embedding / loss / Adam parts of the PyTorch fixtures.
mod common;

use common::{check_abs, check_grad, numeric_grad, random_vec, Fixture};
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::{Strided, Xent};
use etude::engine::{Act, Adam, AdamParams, Backend, MatMul, Param};

/// Central differences with h = 1e-2 on an f32 forward, loss summed in f64. Linear ops: only f32
/// rounding of the few outputs an input touches, ~1e-7 * |out| / h ~ 1e-5. Smooth non-linear
/// ops (tanh, sigmoid, softmax): truncation h^2/6 |f'''| <= ~2e-5 * |f'''|, relative ~1e-4.
/// So 1e-4 absolute + 2e-3 relative; a wrong formula (factor, sign, index) is off by O(|g|).
fn fd_check(what: &str, analytic: &[f32], numeric: &[f64]) {
    assert_eq!(analytic.len(), numeric.len(), "{what}: length");
    for (i, (&a, &n)) in analytic.iter().zip(numeric).enumerate() {
        let tol = 1e-4 + 2e-3 * n.abs();
        assert!((a as f64 - n).abs() <= tol, "{what}[{i}]: analytic {a}, numeric {n} (tolerance {tol:e})");
    }
}

/// `sum(r * y)` in f64.
fn dot(r: &[f32], y: &[f32]) -> f64 {
    r.iter().zip(y).map(|(&r, &y)| r as f64 * y as f64).sum()
}

const FD_H: f32 = 1e-2;

fn mm(m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool, accumulate: bool) -> MatMul {
    MatMul { m, k, n, trans_a, trans_b, accumulate }
}

// ---- matmul -------------------------------------------------------------------------------------

/// `op(A)[i, p]` for A stored `[m, k]`, or `[k, m]` when transposed.
fn at(a: &[f32], i: usize, p: usize, rows: usize, cols: usize, trans: bool) -> f32 {
    if trans {
        a[p * rows + i]
    } else {
        a[i * cols + p]
    }
}

#[test]
fn matmul_forward_and_its_gradients_for_every_transpose_flag() {
    let be = CpuBackend::new();
    let (m, k, n) = (5, 3, 4);
    for (case, (ta, tb)) in [(false, false), (true, false), (false, true), (true, true)].into_iter().enumerate() {
        let seed = 10 * case as u64;
        let a = random_vec(seed, m * k);
        let b = random_vec(seed + 1, k * n);
        let c0 = random_vec(seed + 2, m * n);
        let r = random_vec(seed + 3, m * n);
        for accumulate in [false, true] {
            // Forward against the plain triple loop.
            let mut c = c0.clone();
            be.matmul(&a, &b, &mut c, mm(m, k, n, ta, tb, accumulate));
            for i in 0..m {
                for j in 0..n {
                    let mut want = if accumulate { c0[i * n + j] as f64 } else { 0.0 };
                    for p in 0..k {
                        want += at(&a, i, p, m, k, ta) as f64 * at(&b, p, j, k, n, tb) as f64;
                    }
                    assert!((c[i * n + j] as f64 - want).abs() < 1e-5, "ta={ta} tb={tb} acc={accumulate} c[{i},{j}]");
                }
            }
        }
        let loss = |a: &[f32], b: &[f32]| {
            let mut c = c0.clone();
            be.matmul(&CpuBuf::from(a), &CpuBuf::from(b), &mut c, mm(m, k, n, ta, tb, true));
            dot(&r, &c)
        };
        // dA = R op(B)^T, stored like A: for a transposed A, (R op(B)^T)^T = op(B) R^T.
        let mut da = CpuBuf::zeros(m * k);
        if ta {
            be.matmul(&b, &r, &mut da, mm(k, n, m, tb, true, false));
        } else {
            be.matmul(&r, &b, &mut da, mm(m, n, k, false, !tb, false));
        }
        // dB = op(A)^T R, stored like B: for a transposed B, R^T op(A).
        let mut db = CpuBuf::zeros(k * n);
        if tb {
            be.matmul(&r, &a, &mut db, mm(n, m, k, true, ta, false));
        } else {
            be.matmul(&a, &r, &mut db, mm(k, m, n, !ta, false, false));
        }
        let num_a = numeric_grad(&mut a.clone(), FD_H, |a| loss(a, &b));
        let num_b = numeric_grad(&mut b.clone(), FD_H, |b| loss(&a, b));
        fd_check(&format!("matmul ta={ta} tb={tb} dA"), &da, &num_a);
        fd_check(&format!("matmul ta={ta} tb={tb} dB"), &db, &num_b);
    }
    // k = 0: an empty sum, zero unless accumulating.
    let mut c = CpuBuf::filled(4, 3.0);
    be.matmul(&CpuBuf::zeros(0), &CpuBuf::zeros(0), &mut c, mm(2, 0, 2, false, false, true));
    assert_eq!(c, vec![3.0; 4]);
    be.matmul(&CpuBuf::zeros(0), &CpuBuf::zeros(0), &mut c, mm(2, 0, 2, false, false, false));
    assert_eq!(c, vec![0.0; 4]);
}

// ---- bias ---------------------------------------------------------------------------------------

#[test]
fn bias_grad_is_the_gradient_of_bias_add_and_accumulates() {
    let be = CpuBackend::new();
    for (outer, channels, inner) in [(4, 3, 1), (2, 3, 5), (1, 1, 1)] {
        let len = outer * channels * inner;
        let y0 = random_vec(1, len);
        let bias = random_vec(2, channels);
        let r = random_vec(3, len);
        let mut y = y0.clone();
        be.bias_add(&mut y, &bias, outer, channels, inner);
        for o in 0..outer {
            for (c, &bc) in bias.iter().enumerate() {
                for i in 0..inner {
                    let at = (o * channels + c) * inner + i;
                    assert!((y[at] - y0[at] - bc).abs() < 1e-6);
                }
            }
        }
        let num = numeric_grad(&mut bias.clone(), FD_H, |bias| {
            let mut y = y0.clone();
            be.bias_add(&mut y, &CpuBuf::from(bias), outer, channels, inner);
            dot(&r, &y)
        });
        let mut db = CpuBuf::filled(channels, 0.5);
        be.bias_grad(&r, &mut db, outer, channels, inner);
        let db: CpuBuf = db.iter().map(|v| v - 0.5).collect();
        fd_check(&format!("bias_grad {outer}x{channels}x{inner}"), &db, &num);
    }
}

// ---- activations --------------------------------------------------------------------------------

#[test]
fn act_bwd_is_the_gradient_of_act_fwd() {
    let be = CpuBackend::new();
    let n = 50;
    // ReLU's kink at 0 is kept more than h away from every sample.
    let x: CpuBuf = random_vec(4, n).iter().map(|&v| 3.0 * v).map(|v| if v.abs() < 0.05 { v + 0.1 } else { v }).collect();
    let r = random_vec(5, n);
    for act in [Act::Relu, Act::Tanh, Act::Sigmoid] {
        let mut y = CpuBuf::zeros(n);
        be.act_fwd(act, &x, &mut y, n);
        for (&x, &y) in x.iter().zip(&y) {
            let want = match act {
                Act::Relu => x.max(0.0) as f64,
                Act::Tanh => (x as f64).tanh(),
                Act::Sigmoid => 1.0 / (1.0 + (-x as f64).exp()),
            };
            assert!((y as f64 - want).abs() < 1e-6, "{act:?}({x}) = {y}, want {want}");
        }
        let mut dx = CpuBuf::zeros(n);
        be.act_bwd(act, &y, &r, &mut dx, n);
        let num = numeric_grad(&mut x.clone(), FD_H, |x| {
            let mut y = CpuBuf::zeros(n);
            be.act_fwd(act, &CpuBuf::from(x), &mut y, n);
            dot(&r, &y)
        });
        fd_check(&format!("act_bwd {act:?}"), &dx, &num);
    }
}

#[test]
fn gated_bwd_is_the_gradient_of_gated_fwd() {
    let be = CpuBackend::new();
    let (batch, rch, t) = (2, 3, 4);
    let a: CpuBuf = random_vec(6, batch * 2 * rch * t).iter().map(|v| 2.0 * v).collect();
    let r = random_vec(7, batch * rch * t);
    let mut z = CpuBuf::zeros(batch * rch * t);
    be.gated_fwd(&a, &mut z, batch, rch, t);
    for b in 0..batch {
        for i in 0..rch * t {
            let (f, g) = (a[b * 2 * rch * t + i] as f64, a[b * 2 * rch * t + rch * t + i] as f64);
            let want = f.tanh() / (1.0 + (-g).exp());
            assert!((z[b * rch * t + i] as f64 - want).abs() < 1e-6);
        }
    }
    let mut da = CpuBuf::zeros(a.len());
    be.gated_bwd(&a, &r, &mut da, batch, rch, t);
    let num = numeric_grad(&mut a.clone(), FD_H, |a| {
        let mut z = CpuBuf::zeros(batch * rch * t);
        be.gated_fwd(&CpuBuf::from(a), &mut z, batch, rch, t);
        dot(&r, &z)
    });
    fd_check("gated_bwd", &da, &num);
}

// ---- layout ops ---------------------------------------------------------------------------------

#[test]
fn transpose_and_its_gradient() {
    let be = CpuBackend::new();
    let (batch, rows, cols) = (2, 3, 5);
    let x = random_vec(8, batch * rows * cols);
    let r = random_vec(9, batch * rows * cols);
    let mut y = CpuBuf::zeros(x.len());
    be.transpose(&x, &mut y, batch, rows, cols);
    assert_eq!(y[rows * cols + 4 * rows + 2], x[rows * cols + 2 * cols + 4]);
    // The gradient of a transpose is the transpose back.
    let mut dx = CpuBuf::zeros(x.len());
    be.transpose(&r, &mut dx, batch, cols, rows);
    let num = numeric_grad(&mut x.clone(), FD_H, |x| {
        let mut y = CpuBuf::zeros(x.len());
        be.transpose(&CpuBuf::from(x), &mut y, batch, rows, cols);
        dot(&r, &y)
    });
    fd_check("transpose", &dx, &num);
}

#[test]
fn copy_strided_and_its_gradient() {
    let be = CpuBackend::new();
    // A 3 x 2 block from src (offset 1, stride 4) into dst (offset 2, stride 3).
    let (rows, cols) = (3, 2);
    let src = random_vec(10, 13);
    let dst0 = random_vec(11, 10);
    let r = random_vec(12, 10);
    for accumulate in [false, true] {
        let mut dst = dst0.clone();
        be.copy_strided(&src, &mut dst, Strided { rows, cols, src_off: 1, src_stride: 4, dst_off: 2, dst_stride: 3, accumulate });
        for (i, &d) in dst.iter().enumerate() {
            let inside = i >= 2 && (i - 2) % 3 < cols && (i - 2) / 3 < rows;
            let want = if inside {
                let s = src[1 + (i - 2) / 3 * 4 + (i - 2) % 3];
                if accumulate {
                    dst0[i] + s
                } else {
                    s
                }
            } else {
                dst0[i]
            };
            assert_eq!(d, want, "accumulate={accumulate} dst[{i}]");
        }
        // The gradient w.r.t. src gathers r back from the block (accumulating into zeros).
        let mut dsrc = CpuBuf::zeros(src.len());
        be.copy_strided(&r, &mut dsrc, Strided::block(rows, cols).from(2, 3).to(1, 4).adding());
        let num = numeric_grad(&mut src.clone(), FD_H, |s| {
            let mut dst = dst0.clone();
            be.copy_strided(&CpuBuf::from(s), &mut dst, Strided { rows, cols, src_off: 1, src_stride: 4, dst_off: 2, dst_stride: 3, accumulate });
            dot(&r, &dst)
        });
        fd_check(&format!("copy_strided accumulate={accumulate}"), &dsrc, &num);
    }
}

#[test]
fn fill_and_add() {
    let be = CpuBackend::new();
    let mut x = CpuBuf::filled(5, 1.0);
    be.fill(&mut x, 3, 2.5);
    assert_eq!(x, vec![2.5, 2.5, 2.5, 1.0, 1.0]);
    let mut y = CpuBuf::filled(5, 1.0);
    be.add(&x, &mut y, 4);
    assert_eq!(y, vec![3.5, 3.5, 3.5, 2.0, 1.0]);
    // Large enough for the parallel path.
    let n = 100_000;
    let a = random_vec(13, n);
    let mut b = random_vec(14, n);
    let b0 = b.clone();
    be.add(&a, &mut b, n);
    assert!(b.iter().zip(&a).zip(&b0).all(|((&b, &a), &b0)| b == a + b0));
}

// ---- embedding ----------------------------------------------------------------------------------

#[test]
fn embedding_bwd_is_the_gradient_of_embedding_fwd_with_repeated_ids() {
    let be = CpuBackend::new();
    let (v, e) = (6, 3);
    let ids: Vec<u32> = vec![2, 5, 2, 0, 2, 5, 1];
    let n = ids.len();
    let table = random_vec(15, v * e);
    let r = random_vec(16, n * e);
    let mut out = CpuBuf::zeros(n * e);
    be.embedding_fwd(&ids, &table, &mut out, n, e);
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(out[i * e..][..e], table[id as usize * e..][..e]);
    }
    let mut dtable = CpuBuf::zeros(v * e);
    be.embedding_bwd(&ids, &r, &mut dtable, n, e);
    let num = numeric_grad(&mut table.clone(), FD_H, |t| {
        let mut out = CpuBuf::zeros(n * e);
        be.embedding_fwd(&ids, &CpuBuf::from(t), &mut out, n, e);
        dot(&r, &out)
    });
    fd_check("embedding_bwd", &dtable, &num);
    // Rows 3 and 4 never occur: exactly zero.
    assert!(dtable[3 * e..5 * e].iter().all(|&g| g == 0.0));
}

// ---- loss ---------------------------------------------------------------------------------------

#[test]
fn softmax_xent_gradient_matches_finite_differences_of_the_summed_loss() {
    let be = CpuBackend::new();
    let (n, v) = (40, 7);
    let logits: CpuBuf = random_vec(17, n * v).iter().map(|x| 3.0 * x).collect();
    let targets: Vec<u32> = (0..n).map(|i| ((i * 5 + 3) % v) as u32).collect();
    let scale = 1.0 / n as f32;
    let loss = |l: &[f32]| -> f64 {
        let (mut d, mut st) = (CpuBuf::zeros(n * v), CpuBuf::zeros(2 * n));
        be.softmax_xent(&CpuBuf::from(l), &targets, &mut d, &mut st, Xent { n, v, grad_scale: scale });
        st.iter().step_by(2).map(|&s| s as f64).sum::<f64>() * scale as f64
    };
    let (mut d, mut st) = (CpuBuf::zeros(n * v), CpuBuf::zeros(2 * n));
    be.softmax_xent(&logits, &targets, &mut d, &mut st, Xent { n, v, grad_scale: scale });
    // Per row: the loss in f64, and the accuracy flag.
    for i in 0..n {
        let row: Vec<f64> = logits[i * v..][..v].iter().map(|&x| x as f64).collect();
        let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        let t = targets[i] as usize;
        assert!((st[2 * i] as f64 - (lse - row[t])).abs() < 1e-5, "row {i} loss");
        let argmax = row.iter().position(|&x| x == max).unwrap();
        assert_eq!(st[2 * i + 1], if argmax == t { 1.0 } else { 0.0 }, "row {i} accuracy");
    }
    let num = numeric_grad(&mut logits.clone(), FD_H, loss);
    fd_check("softmax_xent dlogits", &d, &num);
    // Ties go to the first maximum; a row far from 0 stays finite (stable log-sum-exp).
    let tie = vec![1000.0, 1000.0, -5.0];
    let (mut d, mut st) = (CpuBuf::zeros(3), CpuBuf::zeros(2));
    be.softmax_xent(&CpuBuf::from(tie), &vec![1], &mut d, &mut st, Xent { n: 1, v: 3, grad_scale: 1.0 });
    assert_eq!(st[1], 0.0, "argmax is the first maximum, not the target");
    assert!((st[0] as f64 - 2f64.ln()).abs() < 1e-6 && d.iter().all(|x| x.is_finite()));
}

// ---- optimizer ----------------------------------------------------------------------------------

/// Two Adam steps on two small tensors with weight decay and global-norm clipping that bites
/// (scale < 1), against the same arithmetic written out in f64.
#[test]
fn adam_two_steps_with_weight_decay_and_clipping_match_a_hand_computation() {
    let be = CpuBackend::new();
    let p0 = [vec![0.5f32, -1.0, 2.0], vec![0.25f32, -0.75]];
    let grads = [[vec![0.3f32, -0.4, 1.2], vec![-2.0f32, 0.1]], [vec![-0.1f32, 0.6, 0.9], vec![1.5f32, -0.2]]];
    let hp = AdamParams { lr: 0.1, beta1: 0.8, beta2: 0.9, eps: 1e-3, weight_decay: 0.05, step: 1 };
    let max_norm = 1.0;
    let mut params: Vec<Param<CpuBackend>> =
        p0.iter().enumerate().map(|(i, p)| Param::new(&be, &format!("p{i}"), &[p.len()], p)).collect();
    let mut adam = Adam::new(&be, &params, hp, max_norm);

    let mut want: Vec<Vec<f64>> = p0.iter().map(|p| p.iter().map(|&x| x as f64).collect()).collect();
    let mut m: Vec<Vec<f64>> = p0.iter().map(|p| vec![0.0; p.len()]).collect();
    let mut v = m.clone();
    for (step, g) in grads.iter().enumerate() {
        for (p, g) in params.iter_mut().zip(g) {
            p.grad.set(&be, g);
        }
        adam.step(&be, &mut params);

        let t = (step + 1) as i32;
        let norm = g.iter().flatten().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let scale = (max_norm as f64 / (norm + 1e-6)).min(1.0);
        assert!(scale < 1.0, "the example must clip");
        assert!((adam.last_grad_norm(&be) as f64 - norm).abs() < 1e-5, "global norm");
        let (b1, b2) = (hp.beta1 as f64, hp.beta2 as f64);
        for j in 0..2 {
            for i in 0..want[j].len() {
                let gi = g[j][i] as f64 * scale + hp.weight_decay as f64 * want[j][i];
                m[j][i] = b1 * m[j][i] + (1.0 - b1) * gi;
                v[j][i] = b2 * v[j][i] + (1.0 - b2) * gi * gi;
                let mhat = m[j][i] / (1.0 - b1.powi(t));
                let denom = v[j][i].sqrt() / (1.0 - b2.powi(t)).sqrt() + hp.eps as f64;
                want[j][i] -= hp.lr as f64 * mhat / denom;
            }
        }
        for (p, w) in params.iter().zip(&want) {
            // f32 arithmetic on O(1) numbers: 1e-6.
            check_abs(&format!("adam step {} {}", step + 1, p.name), &p.value.to_vec(&be), w, 1e-6).unwrap();
        }
    }
}

#[test]
fn sum_squares_and_clip_scale() {
    let be = CpuBackend::new();
    let mut acc = CpuBuf::from([1.0]);
    be.sum_squares(&CpuBuf::from([3.0, 4.0, 100.0]), 2, &mut acc);
    assert_eq!(acc[0], 26.0, "accumulates and reads only n values");
    let mut scale = CpuBuf::zeros(1);
    be.clip_scale(&CpuBuf::from([25.0]), 2.0, &mut scale);
    assert!((scale[0] - 2.0 / (5.0 + 1e-6)).abs() < 1e-7);
    be.clip_scale(&CpuBuf::from([25.0]), 10.0, &mut scale);
    assert_eq!(scale[0], 1.0, "never scales up");
    be.clip_scale(&CpuBuf::from([25.0]), 0.0, &mut scale);
    assert_eq!(scale[0], 1.0, "max_norm <= 0 turns clipping off");
}

// ---- the dense, embedding, loss and Adam parts of the PyTorch fixtures ---------------------------

/// From the LSTM fixtures' stored activations: the embedding rows, the dense head
/// (`fc2(relu(fc1(z)))` with z the LSTM output), the loss, the dense and embedding-free gradients
/// and one Adam step of the dense parameters, each with the basic ops alone.
#[test]
fn dense_embedding_loss_and_adam_parts_of_the_lstm_fixtures() {
    let be = CpuBackend::new();
    for name in ["lstm", "lstm_seq"] {
        let f = Fixture::load(name);
        let j = &f.json;
        let (v, t, batch) = (j["V"].as_u64().unwrap() as usize, j["T"].as_u64().unwrap() as usize, j["B"].as_u64().unwrap() as usize);
        let (e, h, d) = (j["hyper"]["E"].as_u64().unwrap() as usize, j["hyper"]["H"].as_u64().unwrap() as usize, j["hyper"]["D"].as_u64().unwrap() as usize);
        let seq = name == "lstm_seq";
        let rows = if seq { batch * t } else { batch };

        // Embedding: act.emb = emb.weight[x], exactly (f32 weights widened to f64).
        let x = f.get("x").u32();
        let mut emb = CpuBuf::zeros(batch * t * e);
        be.embedding_fwd(&x, &f.get("param.emb.weight").f32(), &mut emb, batch * t, e);
        check_abs(&format!("{name} act.emb"), &emb, &f.get("act.emb").data, 0.0).unwrap();

        // z = the top LSTM layer's output at the last step (lstm) or every step (lstm_seq).
        let hs = f.get("act.lstm").f32();
        let mut z = CpuBuf::zeros(rows * h);
        if seq {
            z.copy_from_slice(&hs);
        } else {
            be.copy_strided(&hs, &mut z, Strided::block(batch, h).from((t - 1) * h, t * h));
        }
        let (w1, b1, w2, b2) =
            (f.get("param.fc1.weight").f32(), f.get("param.fc1.bias").f32(), f.get("param.fc2.weight").f32(), f.get("param.fc2.bias").f32());
        let mut fc1 = CpuBuf::zeros(rows * d);
        be.matmul(&z, &w1, &mut fc1, mm(rows, h, d, false, true, false));
        be.bias_add(&mut fc1, &b1, rows, d, 1);
        // Inputs rounded to f32 (act.lstm), a sum over H = 8 products: 1e-6.
        check_abs(&format!("{name} act.fc1"), &fc1, &f.get("act.fc1").data, 1e-6).unwrap();
        // fc2 applied to relu(act.fc1) reproduces the logits.
        let mut a1 = CpuBuf::zeros(rows * d);
        be.act_fwd(Act::Relu, &f.get("act.fc1").f32(), &mut a1, rows * d);
        let mut logits = CpuBuf::zeros(rows * v);
        be.matmul(&a1, &w2, &mut logits, mm(rows, d, v, false, true, false));
        be.bias_add(&mut logits, &b2, rows, v, 1);
        check_abs(&format!("{name} logits"), &logits, &f.get("logits").data, 1e-6).unwrap();

        // The loss from the reference logits.
        let y = f.get("y").u32();
        let (mut dlogits, mut stats) = (CpuBuf::zeros(rows * v), CpuBuf::zeros(2 * rows));
        be.softmax_xent(&f.get("logits").f32(), &y, &mut dlogits, &mut stats, Xent { n: rows, v, grad_scale: 1.0 / rows as f32 });
        let loss = stats.iter().step_by(2).map(|&s| s as f64).sum::<f64>() / rows as f64;
        assert!((loss - f.get("loss").data[0]).abs() < common::LOSS_TOL, "{name} loss {loss}");

        // Dense gradients from the softmax gradient and relu(act.fc1).
        let mut gw2 = CpuBuf::zeros(v * d);
        be.matmul(&dlogits, &a1, &mut gw2, mm(v, rows, d, true, false, true));
        let mut gb2 = CpuBuf::zeros(v);
        be.bias_grad(&dlogits, &mut gb2, rows, v, 1);
        check_grad(&format!("{name} grad.fc2.weight"), &gw2, &f.get("grad.fc2.weight").data).unwrap();
        check_grad(&format!("{name} grad.fc2.bias"), &gb2, &f.get("grad.fc2.bias").data).unwrap();
        let mut da1 = CpuBuf::zeros(rows * d);
        be.matmul(&dlogits, &w2, &mut da1, mm(rows, v, d, false, false, false));
        let mut dfc1 = CpuBuf::zeros(rows * d);
        be.act_bwd(Act::Relu, &a1, &da1, &mut dfc1, rows * d);
        let mut gw1 = CpuBuf::zeros(d * h);
        be.matmul(&dfc1, &z, &mut gw1, mm(d, rows, h, true, false, true));
        let mut gb1 = CpuBuf::zeros(d);
        be.bias_grad(&dfc1, &mut gb1, rows, d, 1);
        check_grad(&format!("{name} grad.fc1.weight"), &gw1, &f.get("grad.fc1.weight").data).unwrap();
        check_grad(&format!("{name} grad.fc1.bias"), &gb1, &f.get("grad.fc1.bias").data).unwrap();

        // One Adam step of the dense parameters from the reference gradients.
        let hp = f.adam_params();
        let names = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"];
        let mut params: Vec<Param<CpuBackend>> = names
            .iter()
            .map(|n| {
                let p = f.get(&format!("param.{n}"));
                let mut param = Param::new(&be, n, &p.shape, &p.f32());
                param.grad.set(&be, &f.get(&format!("grad.{n}")).f32());
                param
            })
            .collect();
        let mut adam = Adam::new(&be, &params, hp, 0.0);
        adam.step(&be, &mut params);
        for p in &params {
            check_abs(&format!("{name} adam1.{}", p.name), &p.value.to_vec(&be), &f.get(&format!("adam1.{}", p.name)).data, common::ADAM1_TOL)
                .unwrap();
        }
    }
}
