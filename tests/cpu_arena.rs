//! One parameter arena per model on the CPU (issue 11, `src/engine/arena.rs`,
//! `src/engine/cpu/buf.rs`): every model's weights and gradients are one host buffer each (and
//! Adam's moments one each), every tensor a view starting on its own cache line, so the
//! bookkeeping of a step is one pass over each arena; and an arena step equals the per-tensor step
//! it replaces: bit for bit without clipping (the same kernel on every element), and to the
//! rounding of the norm's summation order with clipping.

mod common;

use common::{for_every_model, rand_vec, standalone};
use etude::engine::cpu::buf::ALIGN;
use etude::engine::cpu::CpuBackend;
use etude::engine::arena::{into_arena, whole_arena, zero_grads, Param};
use etude::engine::{Adam, AdamParams};
use etude::rng::Rng;

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn every_models_parameters_are_aligned_disjoint_views_of_one_arena() {
    let c = CpuBackend::new();
    let mut report = Vec::new();
    for_every_model(&c, 2, |name, params| {
        assert!(params.len() > 3, "{name}: a model with several tensors");
        assert!(params.iter().all(|p| p.in_arena()), "{name}: every parameter lives in the model's arena");
        assert!(params.iter().all(|p| p.is_placed()), "{name}: no parameter is left declared without storage");
        assert!(whole_arena(&*params).is_some(), "{name}: the model's list is its whole arena");
        // A list of the right length naming one tensor twice is not the whole arena (its moments
        // would be two views of one window): it takes the per-tensor path.
        let mut twice: Vec<&Param<CpuBackend>> = params.iter().map(|p| &**p).collect();
        twice[1] = twice[0];
        assert!(whole_arena(&twice).is_none(), "{name}: a tensor listed twice");
        assert!(whole_arena(&twice[1..]).is_none(), "{name}: part of the list");
        let first = &params[0];
        let mut spans = Vec::new();
        for p in params.iter() {
            for (what, t) in [("value", &p.value), ("grad", &p.grad)] {
                let buf = &t.buf;
                assert_eq!(buf.len(), t.len(), "{name} {} {what}: a view of exactly its tensor", p.name);
                assert_eq!(buf.as_ptr() as usize % ALIGN, 0, "{name} {} {what}: starts on a cache line", p.name);
            }
            assert!(p.value.buf.shares_storage(&first.value.buf), "{name} {}: weights share one buffer", p.name);
            assert!(p.grad.buf.shares_storage(&first.grad.buf), "{name} {}: gradients share one buffer", p.name);
            assert!(!p.grad.buf.shares_storage(&p.value.buf), "{name} {}: weights and gradients are two buffers", p.name);
            let start = p.value.buf.as_ptr() as usize;
            spans.push((start, start + 4 * p.value.len(), p.name.clone()));
        }
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "{name}: {} and {} overlap", w[0].2, w[1].2);
        }
        report.push(format!("{name}: {} tensors in one arena", params.len()));
    });
    println!("{}", report.join("\n"));
}

/// Three Adam steps with the same random gradients, L2 and decoupled decay both on: the arena
/// (one `fill`, one `grad_norm_clip`, one `adamw` over each arena) against the same tensors with
/// buffers of their own (one pass per tensor). Without clipping every element goes through the
/// same arithmetic: equal bit for bit. With clipping (active: the norm is above 0.5) the arena
/// sums the squares in one f64 pass where the per-tensor path rounds each tensor's sum to f32
/// first (one rounding of 6e-8 per tensor, 73 for wavenet-gated, on the squared norm), so the
/// clip scale may differ in its last bits: 4e-6 relative.
#[test]
fn arena_steps_equal_per_tensor_steps_for_every_model() {
    let c = CpuBackend::new();
    for clip in [0.0f32, 0.5] {
        for_every_model(&c, 2, |name, arena| {
            let name = format!("{name} clip {clip}");
            let mut alone = standalone(&c, arena);
            assert!(alone.iter().all(|p| !p.in_arena()));
            let hp = AdamParams { lr: 1e-2, weight_decay: 0.01, ..AdamParams::default() };
            let (mut oa, mut ob) = (Adam::new(&c, &*arena, hp, clip), Adam::new(&c, &alone, hp, clip));
            oa.decoupled_decay = 0.1;
            ob.decoupled_decay = 0.1;
            let mut rng = Rng::new(9);
            for step in 0..3 {
                zero_grads(&c, &mut *arena);
                zero_grads(&c, &mut alone);
                for (pa, pb) in arena.iter_mut().zip(alone.iter_mut()) {
                    assert!(pa.grad.to_vec(&c).iter().all(|&g| g == 0.0), "{name}: zero_grads over the arena");
                    let grad = rand_vec(&mut rng, pa.grad.len(), 2.0);
                    pa.grad.set(&c, &grad);
                    pb.grad.set(&c, &grad);
                }
                oa.step(&c, &mut *arena);
                ob.step(&c, &mut alone);
                if clip > 0.0 {
                    let (na, nb) = (oa.last_grad_norm(&c), ob.last_grad_norm(&c));
                    assert!(nb > clip, "{name}: the test must exercise clipping (norm {nb})");
                    assert!((na - nb).abs() <= 4e-6 * nb, "{name} step {step}: norm {na} vs per-tensor {nb}");
                }
            }
            for (i, (pa, pb)) in arena.iter().zip(&alone).enumerate() {
                let what = format!("{name} {}", pa.name);
                let pairs = [
                    ("value", pa.value.to_vec(&c), pb.value.to_vec(&c)),
                    ("m", oa.m[i].to_vec(&c), ob.m[i].to_vec(&c)),
                    ("v", oa.v[i].to_vec(&c), ob.v[i].to_vec(&c)),
                ];
                for (part, got, want) in pairs {
                    if clip == 0.0 {
                        assert_eq!(bits(&got), bits(&want), "{what} {part}: arena vs per-tensor");
                    } else {
                        for (j, (&g, &w)) in got.iter().zip(&want).enumerate() {
                            assert!((g - w).abs() <= 4e-6 * w.abs() + 1e-9, "{what} {part}[{j}]: arena {g}, per-tensor {w}");
                        }
                    }
                }
            }
        });
    }
}

/// Parameters declared by layers (name, shape, initial values, no storage) and placed by
/// `into_arena` straight into the arena equal the old path's: each made with buffers of its own,
/// then copied into the arena through the host. Same names, shapes, offsets, value bits and zero
/// gradients; a list mixing both kinds places both; where there is no arena to place them in (a
/// list already in one), declared parameters get buffers of their own with their values.
#[test]
fn declared_parameters_placed_in_the_arena_equal_made_ones_moved_there() {
    let c = CpuBackend::new();
    let mut rng = Rng::new(3);
    let shapes: [&[usize]; 5] = [&[7, 3], &[7], &[2, 5, 4], &[1], &[33]];
    let specs: Vec<(String, Vec<usize>, Vec<f32>)> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("t{i}"), s.to_vec(), rand_vec(&mut rng, s.iter().product(), 1.0).to_vec()))
        .collect();
    let declare = || specs.iter().map(|(n, s, d)| Param::declare(&c, n, s, d.clone())).collect::<Vec<_>>();
    let make = || specs.iter().map(|(n, s, d)| Param::new(&c, n, s, d)).collect::<Vec<_>>();

    let mut declared = declare();
    assert!(declared.iter().all(|p| !p.is_placed() && !p.in_arena()));
    let mut made = make();
    assert!(made.iter().all(|p| p.is_placed()));
    into_arena(&c, &mut declared);
    into_arena(&c, &mut made);
    let base = |ps: &[Param<CpuBackend>]| ps[0].value.buf.as_ptr() as usize;
    let (bd, bm) = (base(&declared), base(&made));
    for (d, m) in declared.iter().zip(&made) {
        assert!(d.is_placed() && d.in_arena(), "{}", d.name);
        assert_eq!((&d.name, &d.value.shape, &d.grad.shape), (&m.name, &m.value.shape, &m.grad.shape));
        assert_eq!(d.value.buf.as_ptr() as usize - bd, m.value.buf.as_ptr() as usize - bm, "{}: same offset", d.name);
        assert_eq!(bits(&d.value.to_vec(&c)), bits(&m.value.to_vec(&c)), "{}: same values", d.name);
        assert!(d.grad.to_vec(&c).iter().all(|&g| g == 0.0), "{}: zero gradient", d.name);
    }
    assert!(whole_arena(&declared).is_some());

    // Mixed: the odd tensors declared, the even ones made.
    let mut mixed: Vec<Param<CpuBackend>> = declare().into_iter().zip(make()).enumerate().map(|(i, (d, m))| if i % 2 == 1 { d } else { m }).collect();
    into_arena(&c, &mut mixed);
    for (x, m) in mixed.iter().zip(&made) {
        assert!(x.in_arena(), "{}", x.name);
        assert_eq!(bits(&x.value.to_vec(&c)), bits(&m.value.to_vec(&c)), "{}: mixed list, same values", x.name);
    }

    // No arena to place in (the first tensor is already in one): buffers of their own.
    let mut rest = declare();
    let mut list: Vec<&mut Param<CpuBackend>> = vec![&mut declared[0]];
    list.extend(rest.iter_mut().skip(1));
    into_arena(&c, &mut list);
    for (r, m) in rest.iter().zip(&made).skip(1) {
        assert!(r.is_placed() && !r.in_arena(), "{}", r.name);
        assert_eq!(bits(&r.value.to_vec(&c)), bits(&m.value.to_vec(&c)), "{}: own buffers, same values", r.name);
        assert_eq!(r.grad.to_vec(&c), vec![0.0; r.grad.len()]);
    }
}
