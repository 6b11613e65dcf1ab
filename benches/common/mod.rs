//! Helpers shared by the kernel benchmarks (`conv`, `matmul`).
#![allow(dead_code)]

use etude::engine::Backend;
use std::time::{Duration, Instant};

/// Repeats `run(reps)` with growing `reps` (at most `max_reps`) until one call takes at least
/// `target`; seconds per rep.
pub fn time_per_rep(target: Duration, max_reps: usize, mut run: impl FnMut(usize)) -> f64 {
    let mut reps = 1;
    loop {
        let t = Instant::now();
        run(reps);
        let dt = t.elapsed();
        if dt >= target || reps >= max_reps {
            return dt.as_secs_f64() / reps as f64;
        }
        let grow = (target.as_secs_f64() / dt.as_secs_f64().max(1e-6)).ceil() as usize;
        reps *= grow.clamp(2, 16);
    }
}

/// A buffer of `len` deterministic values in [-0.5, 0.5).
pub fn filled<B: Backend>(b: &B, len: usize, seed: u32) -> B::Buf {
    let data: Vec<f32> =
        (0..len).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 1000.0 - 0.5).collect();
    let mut buf = b.alloc(len);
    b.write(&mut buf, &data);
    buf
}
