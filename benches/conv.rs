//! Conv1d throughput of both backends at the simple WaveNet's real shape: batch 128, 64 -> 64
//! channels (100 -> 64 for the first layer), T = 128, K = 3, a few dilations. GFLOP/s of useful
//! work: 2 flops per multiply-add that reads data, not padding, for the forward, the backward to
//! the input and the backward to the weights (+ bias).
//!
//! `cargo bench --bench conv` (release; add `-- --quick` for shorter timings, `-- --cpu` to skip
//! the GPU), or `cargo bench --bench conv --profile dev` for a quick look without a release build
//! (dependencies, sgemm included, are optimised in the dev profile too). GPU timings include the
//! submit and the wait (a one-element read), amortised over the repetitions recorded into one
//! submission; the first call (shader compilation) is not timed.

mod common;

use common::{filled, time_per_rep};
use etude::engine::cpu::CpuBackend;
use etude::engine::gpu::GpuBackend;
use etude::engine::{Backend, Conv1d};
use std::time::Duration;

/// (first-layer input channels or 64, dilation)
const SHAPES: &[(usize, usize)] = &[(100, 1), (64, 1), (64, 8), (64, 64)];

/// Most repetitions of one timing.
const MAX_REPS: usize = 1 << 12;

/// Useful flops of one pass: every tap j multiplies a [Cout, Cin] block into T - s_j columns.
fn flops(c: &Conv1d) -> f64 {
    let cols: usize = (0..c.k).map(|j| c.time.saturating_sub((c.k - 1 - j) * c.dilation)).sum();
    2.0 * (c.batch * c.cout * c.cin * cols) as f64
}

/// GFLOP/s of (forward, backward input, backward weight) on one backend.
fn bench<B: Backend>(b: &B, c: Conv1d, target: Duration) -> [f64; 3] {
    let x = filled(b, c.batch * c.cin * c.time, 1);
    let w = filled(b, c.cout * c.cin * c.k, 2);
    let bias = filled(b, c.cout, 3);
    let dy = filled(b, c.batch * c.cout * c.time, 4);
    let mut y = b.alloc(c.batch * c.cout * c.time);
    let mut dx = b.alloc(c.batch * c.cin * c.time);
    let mut dw = b.alloc(c.cout * c.cin * c.k);
    let mut db = b.alloc(c.cout);
    // Reading it waits for all recorded work (the GPU submits everything before a read).
    let sync = b.alloc(1);
    let gf = flops(&c) / 1e9;
    let timed = |op: &mut dyn FnMut()| {
        op(); // warm-up: shader compilation, first allocations
        b.flush();
        let secs = time_per_rep(target, MAX_REPS, |reps| {
            for _ in 0..reps {
                op();
            }
            b.flush();
            b.read(&sync, 1);
        });
        gf / secs
    };
    let fwd = timed(&mut || b.conv1d_fwd(&x, &w, &bias, &mut y, c));
    let bx = timed(&mut || b.conv1d_bwd_input(&dy, &w, &mut dx, c, false));
    let bw = timed(&mut || b.conv1d_bwd_weight(&x, &dy, &mut dw, &mut db, c));
    [fwd, bx, bw]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let target = Duration::from_millis(if quick { 200 } else { 1000 });
    let cpu = CpuBackend::new();
    let gpu = if args.iter().any(|a| a == "--cpu") {
        None
    } else {
        GpuBackend::new(None).map_err(|e| eprintln!("GPU backend unavailable: {e}")).ok()
    };
    println!("cpu: {}", cpu.name());
    if let Some(g) = &gpu {
        let i = g.adapter_info();
        println!("gpu: {} ({:?}, {:?}, driver {} {})", i.name, i.backend, i.device_type, i.driver, i.driver_info);
    }
    println!("\n{:<30} {:<4} {:>10} {:>10} {:>10}", "conv1d (GFLOP/s)", "", "fwd", "bwd-x", "bwd-w");
    for &(cin, dilation) in SHAPES {
        let c = Conv1d { batch: 128, cin, cout: 64, time: 128, k: 3, dilation };
        let label = format!("B{} {}->{} T{} K{} d{}", c.batch, c.cin, c.cout, c.time, c.k, c.dilation);
        let [f, x, w] = bench(&cpu, c, target);
        println!("{label:<30} {:<4} {f:>10.1} {x:>10.1} {w:>10.1}", "cpu");
        if let Some(g) = &gpu {
            let [f, x, w] = bench(g, c, target);
            println!("{:<30} {:<4} {f:>10.2} {x:>10.2} {w:>10.2}", "", "gpu");
        }
    }
}
