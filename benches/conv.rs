//! CPU Conv1d throughput at the simple WaveNet's real shape: batch 128, 64 -> 64 channels,
//! T = 128, K = 3, for a few dilations. Prints GFLOP/s of useful work (2 flops per multiply-add
//! that reads data, not padding) for the forward, backward-to-input and backward-to-weights.
//!
//! `cargo bench --bench conv` (release), or `cargo bench --bench conv --profile dev` for a quick
//! look without a release build (dependencies, sgemm included, are optimised in dev too).

use etude::engine::cpu::CpuBackend;
use etude::engine::{Backend, Conv1d};
use std::hint::black_box;
use std::time::Instant;

/// Useful flops of one pass: every tap j multiplies a [Cout, Cin] block into T - s_j columns.
fn flops(c: &Conv1d) -> f64 {
    let cols: usize = (0..c.k).map(|j| c.time.saturating_sub((c.k - 1 - j) * c.dilation)).sum();
    2.0 * (c.batch * c.cout * c.cin * cols) as f64
}

/// Best-of-`reps` seconds for `f` after one warm-up call.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let cpu = CpuBackend::new();
    println!("{}", cpu.name());
    println!("{:<44} {:>10} {:>10} {:>10}", "shape", "fwd GF/s", "bwd-x GF/s", "bwd-w GF/s");
    for (cin, dilation) in [(100, 1), (64, 1), (64, 8), (64, 64)] {
        let c = Conv1d { batch: 128, cin, cout: 64, time: 128, k: 3, dilation };
        let x = vec![0.5f32; c.batch * c.cin * c.time];
        let w = vec![0.01f32; c.cout * c.cin * c.k];
        let bias = vec![0.1f32; c.cout];
        let mut y = vec![0.0f32; c.batch * c.cout * c.time];
        let mut dx = vec![0.0f32; x.len()];
        let mut dw = vec![0.0f32; w.len()];
        let mut db = vec![0.0f32; c.cout];
        let reps = 10;
        let fwd = time(reps, || cpu.conv1d_fwd(black_box(&x), &w, &bias, &mut y, c));
        let bx = time(reps, || cpu.conv1d_bwd_input(black_box(&y), &w, &mut dx, c, false));
        let bw = time(reps, || cpu.conv1d_bwd_weight(black_box(&x), &y, &mut dw, &mut db, c));
        let gf = flops(&c) / 1e9;
        let shape = format!("B{} {}->{} T{} K{} d{}", c.batch, c.cin, c.cout, c.time, c.k, c.dilation);
        println!("{shape:<44} {:>10.1} {:>10.1} {:>10.1}", gf / fwd, gf / bx, gf / bw);
        black_box((&dx, &dw, &db));
    }
}
