//! Matrix-product throughput of both backends (GFLOP/s = 2 m k n / seconds) at the models' shapes,
//! and the cost of one dispatch in a long chain of small ops recorded into one submission.
//!
//! `cargo bench --bench matmul` (add `-- --quick` for fewer repetitions). GPU timings include the
//! submit and the wait for completion (a one-element read), amortised over the repetitions that
//! are recorded into one submission; the first call (shader compilation) is not timed.

mod common;

use common::{filled, time_per_rep};
use etude::engine::cpu::CpuBackend;
use etude::engine::Xent;
use etude::engine::gpu::GpuBackend;
use etude::engine::{Backend, MatMul};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// (label, m, k, n)
const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("dense head [128x256]x[256x300]", 128, 256, 300),
    ("LSTM step  [128x128]x[128x512]", 128, 128, 512),
    ("LSTM input [16384x100]x[100x512]", 16384, 100, 512),
    ("reference  1024^3", 1024, 1024, 1024),
];

fn bench_matmul<B: Backend>(b: &B, m: usize, k: usize, n: usize, target: Duration) -> f64 {
    let a = filled(b, m * k, 1);
    let w = filled(b, k * n, 2);
    let mut c = b.alloc(m * n);
    let mm = MatMul { m, k, n, trans_a: false, trans_b: false, accumulate: false };
    b.matmul(&a, &w, &mut c, mm); // warm-up: shader compilation, first allocation
    b.read(&c, 1);
    let secs = time_per_rep(target, MAX_REPS, |reps| {
        for _ in 0..reps {
            b.matmul(&a, &w, &mut c, mm);
        }
        b.read(&c, 1);
    });
    2.0 * (m * k * n) as f64 / secs / 1e9
}

/// Most repetitions of one timing.
const MAX_REPS: usize = 1 << 14;

/// Milliseconds per call of the non-matmul ops that touch the most data in a training step.
fn other_ops<B: Backend>(b: &B, target: Duration) -> Vec<(&'static str, f64)> {
    let (bt, v, e) = (128 * 128, 300, 100);
    let ids_host: Vec<u32> = (0..bt as u32).map(|i| i.wrapping_mul(2654435761) % v as u32).collect();
    let mut ids = b.alloc_ids(bt);
    b.write_ids(&mut ids, &ids_host);
    let logits = filled(b, bt * v, 3);
    let dout = filled(b, bt * e, 4);
    let mut dl = b.alloc(bt * v);
    let mut stats = b.alloc(2 * bt);
    let mut dtable = b.alloc(v * e);
    let mut dbias = b.alloc(v);
    let sync = b.alloc(1); // reading it waits for everything submitted before
    let mut out = Vec::new();
    let mut time = |label: &'static str, f: &mut dyn FnMut()| {
        f(); // warm-up
        b.flush();
        let secs = time_per_rep(target, MAX_REPS, |reps| {
            for _ in 0..reps {
                f();
            }
            black_box(b.read(&sync, 1));
        });
        out.push((label, secs * 1e3));
    };
    time("embedding_bwd (n=16384, rows=300, e=100)", &mut || b.embedding_bwd(&ids, &dout, &mut dtable, bt, e));
    time("softmax_xent (n=16384, v=300)", &mut || b.softmax_xent(&logits, &ids, &mut dl, &mut stats, Xent { n: bt, v, grad_scale: 1.0 }));
    time("bias_grad (outer=16384, channels=300)", &mut || b.bias_grad(&logits, &mut dbias, bt, v, 1));
    out
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let target = Duration::from_millis(if quick { 200 } else { 1000 });
    let cpu = CpuBackend::new();
    let gpu = match GpuBackend::new(None) {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("GPU backend unavailable: {e}");
            None
        }
    };
    println!("cpu: {}", cpu.name());
    if let Some(g) = &gpu {
        let i = g.adapter_info();
        println!("gpu: {} ({:?}, {:?}, driver {} {})", i.name, i.backend, i.device_type, i.driver, i.driver_info);
    }
    println!("\n{:<36} {:>12} {:>12}", "matmul (GFLOP/s)", "cpu", "gpu");
    for &(label, m, k, n) in SHAPES {
        let c = bench_matmul(&cpu, m, k, n, target);
        let g = gpu.as_ref().map(|g| bench_matmul(g, m, k, n, target));
        let gs = g.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        println!("{label:<36} {c:>12.2} {gs:>12}");
    }

    println!("\nother ops at the models' shapes (ms per call; B=128, T=128, V=300, E=100) {:>6} {:>12}", "cpu", "gpu");
    let c_ms = other_ops(&cpu, target);
    let g_ms = gpu.as_ref().map(|g| other_ops(g, target));
    for (i, (label, c)) in c_ms.iter().enumerate() {
        let gs = g_ms.as_ref().map(|v| format!("{:.2}", v[i].1)).unwrap_or_else(|| "-".into());
        println!("{label:<44} {c:>12.2} {gs:>12}");
    }

    if let Some(g) = &gpu {
        println!("\ndispatch cost: chains of small `add`s (256 elements) recorded into one submission");
        let x = g.alloc(256);
        let mut y = g.alloc(256);
        g.add(&x, &mut y, 256); // compile the shader before timing
        g.read(&y, 1);
        for &chain in &[10usize, 100, 1000, 5000] {
            // first run creates the bind groups; the second finds them all in the cache
            for run in ["cold bind groups", "cached bind groups"] {
                g.reset_stats();
                let t = Instant::now();
                for _ in 0..chain {
                    g.add(&x, &mut y, 256);
                }
                let recorded = t.elapsed().as_secs_f64();
                g.read(&y, 1);
                let dt = t.elapsed().as_secs_f64();
                let (d, s) = g.stats();
                println!(
                    "  {chain:>5} dispatches, {run:<18}: {:>7.1} us per dispatch = {:>5.1} recording + {:>5.1} submit and run ({d} dispatches, {s} submissions)",
                    dt * 1e6 / chain as f64,
                    recorded * 1e6 / chain as f64,
                    (dt - recorded) * 1e6 / chain as f64
                );
            }
        }
    }
}
