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

use etude::engine::cpu::CpuBackend;
use etude::engine::gpu::{list_adapters, pick_adapter_index, GpuBackend, GpuBuffer};
use etude::engine::{Act, AdamParams, Backend, MatMul};
use etude::rng::Rng;
use std::sync::OnceLock;

fn gpu() -> &'static GpuBackend {
    static GPU: OnceLock<GpuBackend> = OnceLock::new();
    GPU.get_or_init(|| {
        GpuBackend::new(None).unwrap_or_else(|e| {
            panic!(
                "{e}\n(the GPU tests need an adapter: on Debian/Ubuntu `apt-get install mesa-vulkan-drivers` \
                 provides the software one, lavapipe)"
            )
        })
    })
}

fn rand_vec(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.uniform_range(-scale, scale)).collect()
}

fn upload(data: &[f32]) -> GpuBuffer {
    let g = gpu();
    let mut b = g.alloc(data.len());
    g.write(&mut b, data);
    b
}

fn upload_ids(data: &[u32]) -> GpuBuffer {
    let g = gpu();
    let mut b = g.alloc_ids(data.len());
    g.write_ids(&mut b, data);
    b
}

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
        let want: Vec<f32> = x.iter().zip(&y0).map(|(a, b)| a + b).collect();
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
