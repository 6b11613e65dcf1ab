//! LSTM timings (no harness; `cargo bench --bench lstm`): one LSTM layer's forward + backward at
//! batch 128, T = 128, in = H = 128 (input projection, recurrence, BPTT, weight gradients), and a
//! whole `lstm` training step (forward, loss, backward, Adam) with the default sizes.
//! Prints the median of a few repetitions after one warm-up, for the CPU backend and, when a
//! hardware adapter is present, the GPU backend. Timings are never asserted.

use std::time::Instant;

use etude::engine::cpu::CpuBackend;
use etude::engine::Xent;
use etude::engine::gpu::GpuBackend;
use etude::engine::{Adam, AdamParams, Backend, Lstm, LstmSaved, LstmSeqs, MatMul, arena::zero_grads};
use etude::model::lstm::{LstmConfig, LstmModel};
use etude::model::Model;
use etude::rng::Rng;

const BATCH: usize = 128;
const T: usize = 128;
const IN: usize = 128;
const H: usize = 128;
const REPS: usize = 5;

/// Median wall time of `reps` runs of `f` (after one warm-up), in milliseconds. `f` must finish
/// its work (read something back on the GPU) before returning.
fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[reps / 2]
}

fn fill_random<B: Backend>(b: &B, len: usize, seed: u64, scale: f32) -> B::Buf {
    let mut r = Rng::new(seed);
    let data: Vec<f32> = (0..len).map(|_| scale * r.uniform_range(-1.0, 1.0)).collect();
    let mut buf = b.alloc(len);
    b.write(&mut buf, &data);
    buf
}

fn mm(m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool, accumulate: bool) -> MatMul {
    MatMul { m, k, n, trans_a, trans_b, accumulate }
}

/// One layer, forward then backward, as the model runs it. Returns (forward ms, forward+backward
/// ms, recurrence-only forward ms, recurrence-only backward ms).
fn bench_layer<B: Backend>(b: &B) -> (f64, f64, f64, f64) {
    let n = BATCH * T;
    let x = fill_random(b, n * IN, 1, 1.0);
    let w_ih = fill_random(b, 4 * H * IN, 2, 0.088);
    let w_hh = fill_random(b, 4 * H * H, 3, 0.088);
    let bias = fill_random(b, 4 * H, 4, 0.088);
    let zeros = b.alloc(BATCH * H);
    let dhs = fill_random(b, n * H, 5, 1e-3);
    let (mut xw, mut gates, mut dxw) = (b.alloc(n * 4 * H), b.alloc(n * 4 * H), b.alloc(n * 4 * H));
    let (mut hs, mut cs, mut dx) = (b.alloc(n * H), b.alloc(n * H), b.alloc(n * IN));
    let (mut dw_ih, mut dw_hh, mut db) = (b.alloc(4 * H * IN), b.alloc(4 * H * H), b.alloc(4 * H));
    let dims = Lstm { batch: BATCH, time: T, hidden: H };
    let fwd = |b: &B, xw: &mut B::Buf, hs: &mut B::Buf, cs: &mut B::Buf, gates: &mut B::Buf| {
        b.matmul(&x, &w_ih, xw, mm(n, IN, 4 * H, false, true, false));
        b.bias_add(xw, &bias, n, 4 * H, 1);
        b.bias_add(xw, &bias, n, 4 * H, 1);
        b.lstm_fwd(xw, &w_hh, &zeros, &zeros, LstmSeqs { hs, cs, gates }, dims);
    };
    let f = median_ms(REPS, || {
        fwd(b, &mut xw, &mut hs, &mut cs, &mut gates);
        b.read(&hs, 1);
    });
    let fb = median_ms(REPS, || {
        fwd(b, &mut xw, &mut hs, &mut cs, &mut gates);
        b.lstm_bwd(&w_hh, LstmSaved { h0: &zeros, c0: &zeros, seqs: LstmSeqs { hs: &hs, cs: &cs, gates: &gates } }, &dhs, &mut dxw, &mut dw_hh, dims);
        b.bias_grad(&dxw, &mut db, n, 4 * H, 1);
        b.matmul(&dxw, &x, &mut dw_ih, mm(4 * H, n, IN, true, false, true));
        b.matmul(&dxw, &w_ih, &mut dx, mm(n, 4 * H, IN, false, false, false));
        b.read(&dx, 1);
    });
    let rf = median_ms(REPS, || {
        b.lstm_fwd(&xw, &w_hh, &zeros, &zeros, LstmSeqs { hs: &mut hs, cs: &mut cs, gates: &mut gates }, dims);
        b.read(&hs, 1);
    });
    let rb = median_ms(REPS, || {
        b.lstm_bwd(&w_hh, LstmSaved { h0: &zeros, c0: &zeros, seqs: LstmSeqs { hs: &hs, cs: &cs, gates: &gates } }, &dhs, &mut dxw, &mut dw_hh, dims);
        b.read(&dxw, 1);
    });
    (f, fb, rf, rb)
}

/// A whole training step of the `lstm` model (defaults E=100, H=128, 2 layers, D=256), V = 128.
fn bench_step<B: Backend>(b: &B, seq: bool) -> f64 {
    let v = 128;
    let cfg = LstmConfig::new(v, seq);
    let mut model = LstmModel::new(b, cfg, BATCH, T, &mut Rng::new(1));
    let mut adam = Adam::new(b, model.params(), AdamParams::default(), 1.0);
    let mut r = Rng::new(2);
    let mut x = b.alloc_ids(BATCH * T);
    b.write_ids(&mut x, &(0..BATCH * T).map(|_| r.below(v) as u32).collect::<Vec<_>>());
    let rows = model.target_rows(BATCH);
    let mut y = b.alloc_ids(rows);
    b.write_ids(&mut y, &(0..rows).map(|_| r.below(v) as u32).collect::<Vec<_>>());
    let (mut dlogits, mut stats) = (b.alloc(rows * v), b.alloc(2 * rows));
    median_ms(REPS, || {
        zero_grads(b, model.params_mut());
        model.forward(b, &x, BATCH);
        b.softmax_xent(&model.logits().buf, &y, &mut dlogits, &mut stats, Xent { n: rows, v, grad_scale: 1.0 / rows as f32 });
        model.backward(b, &x, &dlogits, BATCH);
        adam.step(b, model.params_mut());
        b.read(&stats, 2);
    })
}

fn report<B: Backend>(b: &B) {
    let (f, fb, rf, rb) = bench_layer(b);
    println!("{}: LSTM layer B={BATCH} T={T} in={IN} H={H}: forward {f:.1} ms, forward+backward {fb:.1} ms", b.name());
    println!("{}:   of which the recurrence alone: lstm_fwd {rf:.1} ms, lstm_bwd {rb:.1} ms", b.name());
    println!("{}: lstm training step (B={BATCH}, T={T}, defaults, V=128): {:.1} ms", b.name(), bench_step(b, false));
    println!("{}: lstm-seq training step (same sizes): {:.1} ms", b.name(), bench_step(b, true));
}

fn main() {
    report(&CpuBackend::new());
    match GpuBackend::new(None) {
        // A software adapter (lavapipe) would take minutes at these sizes and says nothing about GPUs.
        Ok(gpu) if gpu.is_software() && std::env::var_os("ETUDE_BENCH_SOFTWARE").is_none() => {
            println!("{}: software adapter, skipped (set ETUDE_BENCH_SOFTWARE=1 to time it anyway)", gpu.name())
        }
        Ok(gpu) => report(&gpu),
        Err(e) => println!("no GPU timings: {e}"),
    }
}
