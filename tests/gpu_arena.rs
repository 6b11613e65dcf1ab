//! One parameter arena per model (issue 11, `src/engine/arena.rs`): every model's weights,
//! gradients and Adam moments are one buffer each on the GPU, each tensor an aligned view; the
//! bookkeeping of a step (zeroing, the global norm, clipping, the Adam/AdamW update) is then at
//! most 4 dispatches whatever the model; the arena ops against their CPU twins (sizes off the
//! workgroup multiple, padding left at zero); the other ops on views; and an arena step against
//! the per-tensor step it replaces, on the GPU and on the CPU.

mod common;

use common::{for_every_model, rand_vec, standalone};
use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::{AdamStep, Strided};
use etude::engine::gpu::{GpuBackend, GpuBuffer};
use etude::engine::arena::{whole_arena, zero_grads, Param};
use etude::engine::{Adam, AdamParams, Backend, MatMul};
use etude::rng::Rng;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// One backend for the whole file, held by one test at a time: the dispatch counters are the
/// backend's, so tests running beside each other would count each other's work.
fn gpu() -> MutexGuard<'static, GpuBackend> {
    static GPU: OnceLock<Mutex<GpuBackend>> = OnceLock::new();
    GPU.get_or_init(|| Mutex::new(common::open_gpu())).lock().unwrap_or_else(|e| e.into_inner())
}

fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32, abs: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= abs + rel * w.abs(), "{what}[{i}]: got {g}, want {w}");
    }
}

/// Dispatches of one step's bookkeeping (zero_grads, then Adam with clipping and AdamW decay),
/// with the parameters as given.
fn bookkeeping_dispatches(g: &GpuBackend, params: &mut [&mut Param<GpuBackend>]) -> u64 {
    let mut adam = Adam::new(g, &*params, AdamParams::default(), 1.0);
    adam.decoupled_decay = 0.01;
    g.flush();
    g.reset_stats();
    zero_grads(g, &mut *params);
    adam.step(g, &mut *params);
    g.flush();
    let (dispatches, submissions) = g.stats();
    assert_eq!(submissions, 1, "the bookkeeping is recorded into one submission");
    dispatches
}

#[test]
fn bookkeeping_is_at_most_four_dispatches_for_every_model() {
    let g = gpu();
    let mut report = Vec::new();
    let mut check = |name: &str, params: &mut [&mut Param<GpuBackend>]| {
        assert!(params.iter().all(|p| p.in_arena()), "{name}: every parameter lives in the model's arena");
        assert!(whole_arena(params).is_some(), "{name}: the model's list is its whole arena");
        let arena = bookkeeping_dispatches(&g, params);
        let before = bookkeeping_dispatches(&g, &mut standalone(&*g, params).iter_mut().collect::<Vec<_>>());
        // zero_grads: one fill per tensor; clipping: a fill, one sum_squares per tensor and
        // clip_scale; then one fused decay+Adam per tensor.
        assert_eq!(before as usize, 3 * params.len() + 2, "{name}: the per-tensor path's count");
        assert!(arena <= 4, "{name}: bookkeeping takes {arena} dispatches, at most 4 wanted");
        report.push(format!("{name}: {} tensors, bookkeeping {before} -> {arena} dispatches", params.len()));
    };
    for_every_model(&*g, 0, &mut check);
    println!("{}", report.join("\n"));
}

/// Three Adam steps (clipping active, L2 and decoupled decay both on) with the same random
/// gradients: the arena on the GPU against the same tensors with buffers of their own on the GPU
/// (the per-tensor dispatches it replaces) and on the CPU (the reference).
#[test]
fn arena_steps_match_per_tensor_steps_for_every_model() {
    let g = gpu();
    for_every_model(&*g, 0, |name, params| steps_match(&g, name, params));
}

fn steps_match(g: &GpuBackend, name: &str, arena: &mut [&mut Param<GpuBackend>]) {
    let c = CpuBackend::new();
    let hp = AdamParams { lr: 1e-2, weight_decay: 0.01, ..AdamParams::default() };
    assert!(whole_arena(arena).is_some(), "{name}: an arena");
    let mut alone = standalone(g, arena);
    let mut cpu: Vec<Param<CpuBackend>> =
        arena.iter().map(|p| Param::new(&c, &p.name, &p.value.shape, &p.value.to_vec(g))).collect();
    let (mut oa, mut ob, mut oc) = (Adam::new(g, &*arena, hp, 0.5), Adam::new(g, &alone, hp, 0.5), Adam::new(&c, &cpu, hp, 0.5));
    oa.decoupled_decay = 0.1;
    ob.decoupled_decay = 0.1;
    oc.decoupled_decay = 0.1;
    let mut rng = Rng::new(9);
    for step in 0..3 {
        zero_grads(g, &mut *arena);
        zero_grads(g, &mut alone);
        zero_grads(&c, &mut cpu);
        for ((pa, pb), pc) in arena.iter_mut().zip(alone.iter_mut()).zip(cpu.iter_mut()) {
            let grad = rand_vec(&mut rng, pa.grad.len(), 2.0);
            pa.grad.set(g, &grad);
            pb.grad.set(g, &grad);
            pc.grad.set(&c, &grad);
        }
        oa.step(g, &mut *arena);
        ob.step(g, &mut alone);
        oc.step(&c, &mut cpu);
        let norms = [oa.last_grad_norm(g), ob.last_grad_norm(g), oc.last_grad_norm(&c)];
        assert!(norms[2] > 0.5, "{name}: the test must exercise clipping (norm {})", norms[2]);
        assert_close(&format!("{name} step {step} norm vs per-tensor"), &norms[..1], &norms[1..2], 1e-5, 0.0);
        assert_close(&format!("{name} step {step} norm vs cpu"), &norms[..1], &norms[2..], 1e-5, 0.0);
    }
    for (i, p) in arena.iter().enumerate() {
        let what = format!("{name} {}", p.name);
        let got = p.value.to_vec(g);
        // Same kernels; only the norm's summation order differs (a scale a few ulps apart).
        assert_close(&format!("{what} vs per-tensor"), &got, &alone[i].value.to_vec(g), 1e-5, 1e-6);
        assert_close(&format!("{what} vs cpu"), &got, &cpu[i].value.to_vec(&c), 1e-5, 1e-5);
        assert_close(&format!("{what} m vs cpu"), &oa.m[i].to_vec(g), &oc.m[i].to_vec(&c), 1e-4, 1e-7);
        assert_close(&format!("{what} v vs cpu"), &oa.v[i].to_vec(g), &oc.v[i].to_vec(&c), 1e-4, 1e-9);
    }
}

/// `grad_norm_clip` and `adamw` over one buffer holding views at aligned offsets with zeros
/// between them, against the CPU twins over the views' values, for sizes around the workgroup
/// (256) and past the norm's 256 partial workgroups (65536): the padding stays exactly zero and
/// adds nothing to the norm.
#[test]
fn arena_ops_match_the_cpu_and_leave_the_padding_at_zero() {
    let g = gpu();
    let c = CpuBackend::new();
    let align = g.view_align();
    assert!(align > 1, "a GPU view offset is aligned (min_storage_buffer_offset_alignment)");
    let mut rng = Rng::new(21);
    for lens in [vec![1usize], vec![255, 1, 257], vec![70_001, 3]] {
        let mut offsets = Vec::new();
        let mut end = 0usize;
        for &n in &lens {
            let at = end.next_multiple_of(align);
            offsets.push(at);
            end = at + n;
        }
        let total = end + 5; // trailing padding too
        let arena = |g: &GpuBackend, f32_only: bool| if f32_only { g.alloc_f32(total) } else { g.alloc(total) };
        let (mut p, mut gr, mut m, mut v) = (arena(&g, false), arena(&g, false), arena(&g, true), arena(&g, true));
        // Host images: the views' values in place, zeros elsewhere.
        let mut host = [CpuBuf::filled(total, 0f32), CpuBuf::filled(total, 0f32)];
        for (&at, &n) in offsets.iter().zip(&lens) {
            for (k, buf) in [&mut p, &mut gr].into_iter().enumerate() {
                let data = rand_vec(&mut rng, n, if k == 0 { 1.0 } else { 3.0 });
                // SAFETY: device memory; each view is written once, alone.
                let mut view = unsafe { g.view(buf, at, n) }.expect("the GPU backend has views");
                g.write(&mut view, &data);
                host[k][at..at + n].copy_from_slice(&data);
            }
        }
        let (mut acc, mut scale) = (g.alloc_f32(1), g.alloc_f32(1));
        let (mut cacc, mut cscale) = (CpuBuf::zeros(1), CpuBuf::zeros(1));
        let all: CpuBuf = host[1].clone();
        c.grad_norm_clip(&all, total, 0.5, &mut cacc, &mut cscale);
        g.grad_norm_clip(&gr, total, 0.5, &mut acc, &mut scale);
        let what = format!("lens {lens:?}");
        assert_close(&format!("{what} norm^2"), &g.read(&acc, 1), &cacc, 1e-5, 0.0);
        assert_close(&format!("{what} clip scale"), &g.read(&scale, 1), &cscale, 1e-5, 0.0);
        assert!(cscale[0] < 1.0, "{what}: the test must exercise clipping");
        // The CPU twin, its norm over the views only: the padding adds nothing.
        let mut per_view = CpuBuf::zeros(1);
        for (&at, &n) in offsets.iter().zip(&lens) {
            c.sum_squares(&CpuBuf::from(&host[1][at..at + n]), n, &mut per_view);
        }
        assert_close(&format!("{what} norm^2 of the views"), &cacc, &per_view, 1e-6, 0.0);
        // Two AdamW steps with L2 decay too, on the GPU's own scale.
        let sc = CpuBuf::from(g.read(&scale, 1));
        let (mut cp, mut cm, mut cv) = (host[0].clone(), CpuBuf::filled(total, 0f32), CpuBuf::filled(total, 0f32));
        for step in 1..=2 {
            let hp = AdamParams { lr: 1e-2, weight_decay: 0.02, step, ..AdamParams::default() };
            g.adamw(&mut p, &gr, &mut m, &mut v, &scale, AdamStep::adamw(total, hp, 0.999));
            c.adamw(&mut cp, &host[1], &mut cm, &mut cv, &sc, AdamStep::adamw(total, hp, 0.999));
        }
        let (gp, gm, gv) = (g.read(&p, total), g.read(&m, total), g.read(&v, total));
        assert_close(&format!("{what} adamw p"), &gp, &cp, 1e-5, 1e-6);
        assert_close(&format!("{what} adamw m"), &gm, &cm, 1e-4, 1e-7);
        assert_close(&format!("{what} adamw v"), &gv, &cv, 1e-4, 1e-9);
        let inside = |i: usize| offsets.iter().zip(&lens).any(|(&at, &n)| (at..at + n).contains(&i));
        for i in (0..total).filter(|&i| !inside(i)) {
            assert!(gp[i] == 0.0 && gm[i] == 0.0 && gv[i] == 0.0, "{what}: padding element {i} changed");
        }
        // zero_grads' pass: a fill over the arena.
        g.fill(&mut gr, total, 0.0);
        assert!(g.read(&gr, total).iter().all(|&x| x == 0.0), "{what}: fill over the arena");
    }
}

/// The CPU twins are the per-tensor passes they fuse, bit for bit: `adamw` = `decay` then
/// `adam`, `adamw` with factor 1 = `adam`, `grad_norm_clip` = zeroed `sum_squares` then
/// `clip_scale`.
#[test]
fn cpu_fused_bookkeeping_equals_the_separate_passes_bit_for_bit() {
    let c = CpuBackend::new();
    let mut rng = Rng::new(4);
    for n in [1usize, 257, 200_000] {
        let p0 = rand_vec(&mut rng, n, 1.0);
        let grad = rand_vec(&mut rng, n, 2.0);
        let (mut acc, mut scale) = (CpuBuf::from([7.0f32]), CpuBuf::zeros(1));
        c.grad_norm_clip(&grad, n, 0.3, &mut acc, &mut scale);
        let (mut acc2, mut scale2) = (CpuBuf::zeros(1), CpuBuf::zeros(1));
        c.sum_squares(&grad, n, &mut acc2);
        c.clip_scale(&acc2, 0.3, &mut scale2);
        assert_eq!((acc[0].to_bits(), scale[0].to_bits()), (acc2[0].to_bits(), scale2[0].to_bits()), "norm n={n}");
        for factor in [1.0f32, 0.99] {
            let hp = AdamParams { lr: 1e-2, weight_decay: 0.01, step: 3, ..AdamParams::default() };
            let (mut p, mut m, mut v) = (p0.clone(), CpuBuf::filled(n, 0.1f32), CpuBuf::filled(n, 0.2f32));
            c.adamw(&mut p, &grad, &mut m, &mut v, &scale, AdamStep::adamw(n, hp, factor));
            let (mut p2, mut m2, mut v2) = (p0.clone(), CpuBuf::filled(n, 0.1f32), CpuBuf::filled(n, 0.2f32));
            if factor != 1.0 {
                c.decay(&mut p2, n, factor);
            }
            c.adamw(&mut p2, &grad, &mut m2, &mut v2, &scale, AdamStep::adam(n, hp));
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&p), bits(&p2), "adamw p n={n} factor={factor}");
            assert_eq!(bits(&m), bits(&m2), "adamw m n={n} factor={factor}");
            assert_eq!(bits(&v), bits(&v2), "adamw v n={n} factor={factor}");
        }
    }
}

/// Ops read and write views exactly as buffers of their own: the same op on a view at a
/// non-zero offset and on a standalone buffer gives the same bits, and the view's neighbours are
/// untouched (write, read, matmul, bias_add, bias_grad, add, fill, embedding_bwd, copy_strided).
/// (One dispatch may bind views of one buffer read-write together, or read-only together, but
/// not both: wgpu's usage rule is per buffer. The models never read a gradient view while
/// writing another, nor write a weight view in the forward or backward.)
#[test]
fn ops_on_views_equal_ops_on_buffers() {
    let g = gpu();
    let slot = 64usize.next_multiple_of(g.view_align());
    let mut rng = Rng::new(33);
    let (m, k, n) = (5usize, 7usize, 3usize);
    // Three arenas (inputs, outputs, outputs read back in) with views in slots of `slot`
    // elements, guard values around them.
    let total = 6 * slot;
    let guard = rand_vec(&mut rng, total, 1.0);
    let mut ins = g.alloc(total);
    let mut outs = g.alloc(total);
    let mut outs2 = g.alloc(total);
    g.write(&mut ins, &guard);
    g.write(&mut outs, &guard);
    g.write(&mut outs2, &guard);
    // SAFETY: device memory, and the slots are disjoint.
    let view = |buf: &GpuBuffer, at: usize, len: usize| unsafe { g.view(buf, at * slot, len) }.expect("views");
    let (a_data, w_data) = (rand_vec(&mut rng, m * k, 1.0), rand_vec(&mut rng, n * k, 1.0));
    let (mut a, mut w) = (view(&ins, 1, m * k), view(&ins, 3, n * k));
    g.write(&mut a, &a_data);
    g.write(&mut w, &w_data);
    let upload = |data: &[f32]| {
        let mut b = g.alloc(data.len());
        g.write(&mut b, data);
        b
    };
    let (a2, w2) = (upload(&a_data), upload(&w_data));
    assert_eq!(g.read(&a, m * k), a_data, "read of a view");
    let (mut y, mut y2) = (view(&outs, 1, m * n), g.alloc(m * n));
    let mm = MatMul { m, k, n, trans_a: false, trans_b: true, accumulate: false };
    g.matmul(&a, &w, &mut y, mm);
    g.matmul(&a2, &w2, &mut y2, mm);
    let bias = rand_vec(&mut rng, n, 1.0);
    let (mut bv, b2) = (view(&ins, 2, n), upload(&bias));
    g.write(&mut bv, &bias);
    g.bias_add(&mut y, &bv, m, n, 1);
    g.bias_add(&mut y2, &b2, m, n, 1);
    g.add(&a, &mut y, m * n.min(k));
    g.add(&a2, &mut y2, m * n.min(k));
    let (mut db, mut db2) = (view(&outs2, 3, n), g.alloc(n));
    g.fill(&mut db, n, 0.5);
    g.fill(&mut db2, n, 0.5);
    g.bias_grad(&y, &mut db, m, n, 1);
    g.bias_grad(&y2, &mut db2, m, n, 1);
    let ids = [1u32, 0, 2, 1];
    let mut idb = g.alloc_ids(ids.len());
    g.write_ids(&mut idb, &ids);
    let (mut table, mut table2) = (view(&outs2, 4, 3 * k), g.alloc(3 * k));
    g.fill(&mut table, 3 * k, 0.0);
    g.embedding_bwd(&idb, &a, &mut table, ids.len(), k);
    g.embedding_bwd(&idb, &a2, &mut table2, ids.len(), k);
    let (mut cp, mut cp2) = (view(&outs2, 2, 2 * n), g.alloc(2 * n));
    g.fill(&mut cp, 2 * n, -1.0); // (the copy leaves a column of each)
    g.fill(&mut cp2, 2 * n, -1.0);
    g.copy_strided(&y, &mut cp, Strided::block(2, n - 1).from(1, n).to(0, n));
    g.copy_strided(&y2, &mut cp2, Strided::block(2, n - 1).from(1, n).to(0, n));
    let bits = |x: Vec<f32>| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(g.read(&y, m * n)), bits(g.read(&y2, m * n)), "matmul, bias_add, add on views");
    assert_eq!(bits(g.read(&db, n)), bits(g.read(&db2, n)), "bias_grad into a view");
    assert_eq!(bits(g.read(&table, 3 * k)), bits(g.read(&table2, 3 * k)), "embedding_bwd into a view");
    assert_eq!(bits(g.read(&cp, 2 * n)), bits(g.read(&cp2, 2 * n)), "copy_strided into a view");
    // Everything outside the views is the guard as written.
    let used = |at: usize, len: usize| (at * slot)..(at * slot + len);
    for (what, buf, spans) in [
        ("inputs", &ins, vec![used(1, m * k), used(3, n * k), used(2, n)]),
        ("outputs", &outs, vec![used(1, m * n)]),
        ("outputs read back", &outs2, vec![used(3, n), used(4, 3 * k), used(2, 2 * n)]),
    ] {
        let got = g.read(buf, total);
        for i in (0..total).filter(|i| !spans.iter().any(|s| s.contains(i))) {
            assert_eq!(got[i].to_bits(), guard[i].to_bits(), "{what}: element {i} outside every view changed");
        }
    }
}

/// On the GPU too, parameters declared and placed straight into the arena (no buffer of their own,
/// no trip through the host) hold the values of the old path: made with buffers of their own and
/// copied into the arena; and every model's parameters match the CPU's model of the same seed.
#[test]
fn declared_parameters_placed_in_the_gpu_arena_equal_made_ones_moved_there() {
    let g = gpu();
    let mut rng = Rng::new(4);
    let shapes: [&[usize]; 4] = [&[9, 3], &[9], &[65], &[2, 2]];
    let specs: Vec<(String, Vec<usize>, Vec<f32>)> =
        shapes.iter().enumerate().map(|(i, s)| (format!("t{i}"), s.to_vec(), rand_vec(&mut rng, s.iter().product(), 1.0).to_vec())).collect();
    let mut declared: Vec<Param<GpuBackend>> = specs.iter().map(|(n, s, d)| Param::declare(&*g, n, s, d.clone())).collect();
    let mut made: Vec<Param<GpuBackend>> = specs.iter().map(|(n, s, d)| Param::new(&*g, n, s, d)).collect();
    etude::engine::arena::into_arena(&*g, &mut declared);
    etude::engine::arena::into_arena(&*g, &mut made);
    for ((d, m), (_, _, data)) in declared.iter().zip(&made).zip(&specs) {
        assert!(d.in_arena() && m.in_arena(), "{}", d.name);
        assert_eq!(d.value.to_vec(&*g), m.value.to_vec(&*g), "{}", d.name);
        assert_eq!(&d.value.to_vec(&*g), data, "{}", d.name);
        assert!(d.grad.to_vec(&*g).iter().all(|&x| x == 0.0), "{}", d.name);
    }
    let c = CpuBackend::new();
    let mut on_cpu: Vec<(String, Vec<f32>)> = Vec::new();
    for_every_model(&c, 2, |_, params| on_cpu.extend(params.iter().map(|p| (p.name.clone(), p.value.to_vec(&c)))));
    let mut on_gpu: Vec<(String, Vec<f32>)> = Vec::new();
    for_every_model(&*g, 2, |_, params| on_gpu.extend(params.iter().map(|p| (p.name.clone(), p.value.to_vec(&*g)))));
    assert_eq!(on_gpu, on_cpu);
}
