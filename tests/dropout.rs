//! Dropout (issue 13) on the CPU backend: the op against its definition, the mask's determinism,
//! its gradient by finite differences (op alone, and through every model with the mask fixed),
//! identity outside training; and AdamW's decoupled decay against a hand computation.
mod common;

use common::{numeric_grad, random_vec, ModelCase};
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::dropout::{drop_site, mask_hash, DropMask, Dropout};
use etude::engine::{Adam, AdamParams, Backend, Param};
use etude::model::any::{AnyModel, ModelConfig, Sizes};
use etude::rng::Rng;

fn dot(r: &[f32], y: &[f32]) -> f64 {
    r.iter().zip(y).map(|(&r, &y)| r as f64 * y as f64).sum()
}

#[test]
fn the_op_keeps_scales_or_zeroes_each_element_by_its_hash() {
    let b = CpuBackend::new();
    for (n, p) in [(1usize, 0.5f32), (255, 0.1), (257, 0.3), (1000, 0.9), (200_000, 0.25)] {
        let d = Dropout { p, seed: 42, step: 3 };
        let mask = DropMask::new(&d, 1);
        let x = random_vec(n as u64, n);
        let mut y = x.clone();
        b.dropout(&mut y, n, mask);
        let scale = 1.0 / (1.0 - p);
        let mut kept = 0;
        for i in 0..n {
            let keep = mask_hash(mask.key0, mask.key1, i as u32) >= mask.threshold;
            assert_eq!(keep, mask.keep(i));
            let want = if keep { x[i] * scale } else { 0.0 };
            assert_eq!(y[i].to_bits(), want.to_bits(), "n={n} p={p} element {i}");
            kept += keep as usize;
        }
        if n >= 1000 {
            let rate = kept as f64 / n as f64;
            assert!((rate - (1.0 - p as f64)).abs() < 0.03, "n={n} p={p}: kept {rate}");
        }
        // The same (seed, step, site) gives the same mask; any other gives another.
        let mut again = x.clone();
        b.dropout(&mut again, n, DropMask::new(&d, 1));
        assert_eq!(y, again);
        if n >= 1000 {
            for other in [DropMask::new(&d, 2), DropMask::new(&Dropout { step: 4, ..d }, 1), DropMask::new(&Dropout { seed: 43, ..d }, 1)]
            {
                let mut z = x.clone();
                b.dropout(&mut z, n, other);
                assert_ne!(y, z, "n={n} p={p}: {other:?} gave the same mask");
            }
        }
    }
    // A buffer longer than n keeps its tail.
    let mut x = CpuBuf::filled(10, 1.0f32);
    b.dropout(&mut x, 6, DropMask::new(&Dropout { p: 0.99, seed: 0, step: 1 }, 0));
    assert_eq!(&x[6..], &[1.0; 4]);
    assert!(x[..6].iter().all(|&v| v == 0.0 || v == 100.0));
}

#[test]
fn the_op_is_its_own_backward_by_finite_differences() {
    let b = CpuBackend::new();
    let n = 37;
    let mask = DropMask::new(&Dropout { p: 0.4, seed: 9, step: 17 }, 5);
    let r = random_vec(1, n);
    let mut x = random_vec(2, n);
    let numeric = numeric_grad(&mut x, 1e-2, |x| {
        let mut y = CpuBuf::from(x);
        b.dropout(&mut y, n, mask);
        dot(&r, &y)
    });
    let mut analytic = r.clone();
    b.dropout(&mut analytic, n, mask);
    for i in 0..n {
        assert!((analytic[i] as f64 - numeric[i]).abs() < 1e-4, "[{i}]: analytic {} numeric {}", analytic[i], numeric[i]);
    }
    assert!(analytic.contains(&0.0) && analytic.iter().any(|&g| g != 0.0));
}

#[test]
fn drop_site_does_nothing_without_dropout_or_at_rate_zero() {
    let b = CpuBackend::new();
    let x = random_vec(3, 50);
    for d in [None, Some(Dropout { p: 0.0, seed: 1, step: 1 })] {
        let mut y = x.clone();
        assert!(!drop_site(&b, d.as_ref(), 0, &mut y, 50));
        assert_eq!(x, y);
    }
    let mut y = x.clone();
    assert!(drop_site(&b, Some(&Dropout { p: 0.5, seed: 1, step: 1 }), 0, &mut y, 50));
    assert_ne!(x, y);
}

// ---- through the models -----------------------------------------------------------------------

const V: usize = 7;
const T: usize = 6;
const BATCH: usize = 3;

fn tiny(name: &str) -> ModelConfig {
    let sizes = match name {
        "lstm" | "lstm-seq" => Sizes { embed: Some(4), hidden: Some(5), layers: Some(3), dense: Some(6), ..Default::default() },
        "wavenet" => Sizes { embed: Some(4), channels: Some(5), layers: Some(2), dense: Some(6), ..Default::default() },
        "transformer" => Sizes { width: Some(6), heads: Some(2), ff: Some(7), layers: Some(2), ..Default::default() },
        _ => Sizes { embed: Some(4), residual: Some(5), skip: Some(6), layers: Some(3), ..Default::default() },
    };
    ModelConfig::from_name(name, V, T, &sizes).unwrap()
}

fn case(name: &str, seed: u64) -> ModelCase {
    let b = CpuBackend::new();
    let model = AnyModel::new(&b, &tiny(name), BATCH, T, &mut Rng::new(seed)).unwrap();
    ModelCase::new(b, model, BATCH, seed)
}

const MODELS: [&str; 5] = ["lstm", "lstm-seq", "wavenet", "wavenet-gated", "transformer"];

/// Every parameter's gradient with dropout on (p = 0.5, so a forgotten scale doubles or halves
/// a gradient), against central differences of the loss with the same mask (the same step):
/// [`ModelCase::check_gradients`].
#[test]
fn model_gradients_with_the_mask_fixed_match_finite_differences() {
    for name in MODELS {
        let mut c = case(name, 5);
        let (_, checked) = c.check_gradients(Some(Dropout { p: 0.5, seed: 11, step: 2 }), name);
        assert!(checked > 50, "{name}: only {checked} entries checked");
    }
}

#[test]
fn masks_are_a_function_of_seed_and_step_and_dropout_is_identity_outside_training() {
    for name in MODELS {
        let mut c = case(name, 8);
        c.loss(None, true);
        let (plain_logits, plain_grads) = (c.logits(), c.grads());
        let d = Dropout { p: 0.3, seed: 4, step: 10 };
        c.loss(Some(d), true);
        let (l1, g1) = (c.logits(), c.grads());
        assert_ne!(l1, plain_logits, "{name}: dropout changed nothing");
        // The same step again: bit for bit the same logits and gradients.
        c.loss(Some(d), true);
        assert_eq!((c.logits(), c.grads()), (l1.clone(), g1), "{name}: the same step drew another mask");
        // Another step or seed: another mask.
        c.loss(Some(Dropout { step: 11, ..d }), false);
        assert_ne!(c.logits(), l1, "{name}: step 11 used step 10's mask");
        c.loss(Some(Dropout { seed: 5, ..d }), false);
        assert_ne!(c.logits(), l1, "{name}: seed 5 used seed 4's mask");
        // Off (evaluation, generation) or at rate 0: exactly the model without dropout.
        c.loss(None, true);
        assert_eq!((c.logits(), c.grads()), (plain_logits.clone(), plain_grads.clone()), "{name}: None after dropout");
        c.loss(Some(Dropout { p: 0.0, ..d }), true);
        assert_eq!((c.logits(), c.grads()), (plain_logits, plain_grads), "{name}: p = 0");
    }
}

// ---- AdamW --------------------------------------------------------------------------------------

/// Two AdamW steps (decoupled decay 0.1, with L2 decay and clipping off) on three values, against
/// PyTorch AdamW's update written out in f64:
/// `p *= 1 - lr wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps)`.
#[test]
fn adamw_two_steps_match_a_hand_computation() {
    let b = CpuBackend::new();
    let (lr, b1, b2, eps, wd) = (0.1f64, 0.8f64, 0.9f64, 1e-3f64, 0.1f64);
    let p0 = [0.5f32, -1.5, 2.0];
    let grads = [[0.3f32, -0.2, 0.0], [-0.1, 0.4, 0.25]];
    let mut params = vec![Param::new(&b, "w", &[3], &p0)];
    let hp = AdamParams { lr: lr as f32, beta1: b1 as f32, beta2: b2 as f32, eps: eps as f32, weight_decay: 0.0, step: 0 };
    let mut adam = Adam::new(&b, &params, hp, 0.0);
    adam.decoupled_decay = wd as f32;

    let (mut p, mut m, mut v) = (p0.map(|x| x as f64), [0.0f64; 3], [0.0f64; 3]);
    for (t, g) in grads.iter().enumerate() {
        params[0].grad.set(&b, g);
        adam.step(&b, &mut params);
        let t = (t + 1) as i32;
        for i in 0..3 {
            let gi = g[i] as f64;
            p[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            p[i] -= lr / (1.0 - b1.powi(t)) * m[i] / (v[i].sqrt() / (1.0 - b2.powi(t)).sqrt() + eps);
        }
        let got = params[0].value.to_vec(&b);
        for i in 0..3 {
            assert!((got[i] as f64 - p[i]).abs() < 2e-6, "step {t} p[{i}]: {} vs hand {}", got[i], p[i]);
        }
    }
    // The element with a zero first gradient moved by the decay alone in step 1: 2.0 * (1 - 0.01).
    // And decoupled decay differs from the L2 decay of the same size.
    let mut l2 = vec![Param::new(&b, "w", &[3], &p0)];
    let mut adam_l2 = Adam::new(&b, &l2, AdamParams { weight_decay: wd as f32, ..hp }, 0.0);
    l2[0].grad.set(&b, &grads[0]);
    adam_l2.step(&b, &mut l2);
    let mut w = vec![Param::new(&b, "w", &[3], &p0)];
    let mut adam_w = Adam::new(&b, &w, hp, 0.0);
    adam_w.decoupled_decay = wd as f32;
    w[0].grad.set(&b, &grads[0]);
    adam_w.step(&b, &mut w);
    assert_eq!(w[0].value.to_vec(&b)[2], 2.0 * (1.0 - 0.1 * 0.1) as f32);
    assert_ne!(l2[0].value.to_vec(&b), w[0].value.to_vec(&b));
}

#[test]
fn decay_multiplies_in_place_and_leaves_the_tail() {
    let b = CpuBackend::new();
    let mut x = CpuBuf::from([1.0f32, -2.0, 4.0, 8.0]);
    b.decay(&mut x, 3, 0.5);
    assert_eq!(x, [0.5, -1.0, 2.0, 8.0]);
}
