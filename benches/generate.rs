//! Generation latency of every model at batch 1 (no harness; `cargo bench --bench generate`):
//! the library's `etude::bench::generate` suite (50 tokens after a 128-token prime, sampling
//! included, 1 warm-up + 3 timed passes), incremental where the model has it and sliding window,
//! on the CPU backend (and the GPU backend with `-- --gpu`). Timings are printed, never asserted.

use etude::bench::{format_generate, generate, BenchBackend, GenerateOptions};
use etude::engine::cpu::CpuBackend;
use etude::engine::gpu::GpuBackend;
use etude::model::any::MODEL_NAMES;

fn run_all<B: BenchBackend>(b: &B, tokens: usize) {
    for model in MODEL_NAMES {
        let opts = GenerateOptions { model: model.into(), tokens, ..GenerateOptions::default() };
        match generate(b, &opts) {
            Ok(reports) => reports.iter().for_each(|r| println!("{}", format_generate(r))),
            Err(e) => println!("{model}: {e}"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tokens = if args.iter().any(|a| a == "--quick") { 10 } else { 50 };
    run_all(&CpuBackend::new(), tokens);
    if args.iter().any(|a| a == "--gpu") {
        match GpuBackend::new(None) {
            Ok(g) => run_all(&g, 5),
            Err(e) => println!("gpu: {e}"),
        }
    }
}
