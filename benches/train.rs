//! Training throughput of every model (no harness; `cargo bench --bench train`): the library's
//! `etude::bench::train` suite with few steps, on the CPU backend, and on the GPU backend too with
//! `-- --gpu` (lavapipe is slow: the GPU runs use batch 8). Prints one line per model; for the
//! reference protocol (batch 128, 20 steps) use `etude bench train` or `benches/compare.sh`.
//! Timings are printed, never asserted.

use etude::bench::{format_train, train, BenchBackend, TrainOptions};
use etude::engine::cpu::CpuBackend;
use etude::engine::gpu::GpuBackend;
use etude::model::any::MODEL_NAMES;

fn run_all<B: BenchBackend>(b: &B, batch: usize, steps: usize) {
    for model in MODEL_NAMES {
        let opts = TrainOptions { model: model.into(), batch, steps, warmup: 1, ..TrainOptions::default() };
        match train(b, &opts) {
            Ok(r) => println!("{}", format_train(&r)),
            Err(e) => println!("{model}: {e}"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    run_all(&CpuBackend::new(), if quick { 32 } else { 128 }, if quick { 2 } else { 5 });
    if args.iter().any(|a| a == "--gpu") {
        match GpuBackend::new(None) {
            Ok(g) => run_all(&g, 8, 2),
            Err(e) => println!("gpu: {e}"),
        }
    }
}
