//! Each backend operation alone at the models' real shapes ([`kernels`]).

use crate::engine::{AdamParams, Backend, Conv1d, Lstm, MatMul};
use crate::engine::{AdamStep, LstmSaved, LstmSeqs, Xent};
use crate::rng::Rng;
use serde::Serialize;
use std::time::Instant;

use super::{round, summary, BenchBackend};

/// One operation's timing.
#[derive(Clone, Debug, Serialize)]
pub struct KernelReport {
    pub framework: &'static str,
    pub kind: &'static str,
    pub backend: &'static str,
    pub device: String,
    /// Operation and shape, e.g. "matmul lstm-seq fc2 fwd [16384x256]x[256x300]".
    pub op: String,
    /// Host clock per call, submission and wait included.
    pub ms_median: f64,
    pub ms_min: f64,
    /// Device time per call from timestamp queries (the sum over the call's dispatches, median
    /// over samples); absent on the CPU and where the adapter lacks `TIMESTAMP_QUERY`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_ms: Option<f64>,
    /// Multiply-add work (2 FLOP each) per call, when the op is compute-bound (per wall time).
    pub gflops: Option<f64>,
    /// Bytes read + written per call / time, when the op is memory-bound (per wall time).
    pub gbytes_per_s: Option<f64>,
}

/// A buffer of `len` values in [-0.5, 0.5).
fn filled<B: Backend>(b: &B, len: usize, rng: &mut Rng) -> B::Buf {
    let data: Vec<f32> = (0..len).map(|_| rng.uniform_range(-0.5, 0.5)).collect();
    let mut buf = b.alloc(len);
    b.write(&mut buf, &data);
    buf
}

/// Times `f` (after one warm-up call): each sample runs `f` `inner` times then waits for the
/// backend (a one-value read); returns the median and min milliseconds per call.
fn time_op<B: Backend>(b: &B, sync: &B::Buf, samples: usize, inner: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    b.read(sync, 1);
    let times: Vec<f64> = (0..samples)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..inner {
                f();
            }
            b.read(sync, 1);
            t0.elapsed().as_secs_f64() * 1e3 / inner as f64
        })
        .collect();
    let (med, min, _) = summary(&times);
    (med, min)
}

/// Device milliseconds per call of `f` from timestamp queries: `samples` calls, each alone in a
/// submission, the median of their summed dispatch times. `None` where `b` has no device timing.
/// Run after [`time_op`] (which warmed `f` up): profiling makes every submission wait.
fn device_time_op<B: BenchBackend>(b: &B, sync: &B::Buf, samples: usize, mut f: impl FnMut()) -> Option<f64> {
    b.set_device_timing(true).ok()?;
    let _ = b.take_device_times();
    let times: Vec<f64> = (0..samples)
        .map(|_| {
            f();
            b.flush();
            b.take_device_times().iter().map(|d| d.ns).sum::<f64>() / 1e6
        })
        .collect();
    b.read(sync, 1);
    let _ = b.set_device_timing(false);
    Some(summary(&times).0)
}

/// How long [`kernels`] spends per operation: `(samples, calls per sample)`, and which ones run.
#[derive(Clone, Debug)]
pub struct KernelOptions {
    pub samples: usize,
    pub inner: usize,
    /// Only the operations whose label contains this (case-insensitive).
    pub only: Option<String>,
    /// Also measure the device time of each op with timestamp queries, where the backend has them
    /// (a few extra calls per op, after the wall-clock samples).
    pub device_time: bool,
}

impl Default for KernelOptions {
    fn default() -> Self {
        KernelOptions { samples: 5, inner: 2, only: None, device_time: true }
    }
}

/// The matrix products of the models' dense layers and LSTM input projections:
/// (label, m, k, n) of `Y [m, n] = X [m, k] W^T` with `W [n, k]`.
const DENSE_SHAPES: &[(&str, usize, usize, usize)] = &[
    ("lstm-seq w_ih l0", 16384, 100, 512),
    ("lstm-seq w_ih l1", 16384, 128, 512),
    ("lstm-seq fc1", 16384, 128, 256),
    ("lstm-seq fc2", 16384, 256, 300),
    ("lstm fc1", 128, 128, 256),
    ("lstm fc2", 128, 256, 300),
    ("wavenet fc1", 128, 128, 128),
];

/// Runs the operations of [`kernels`] and collects their reports.
struct KernelTimer<'a, B: BenchBackend> {
    b: &'a B,
    sync: B::Buf,
    opts: KernelOptions,
    out: Vec<KernelReport>,
}

impl<B: BenchBackend> KernelTimer<'_, B> {
    /// Times `f` as the operation `op` (unless filtered out), `flop` / `bytes` per call.
    fn op(&mut self, op: String, flop: Option<f64>, bytes: Option<f64>, mut f: impl FnMut()) {
        if let Some(only) = &self.opts.only {
            if !op.to_lowercase().contains(&only.to_lowercase()) {
                return;
            }
        }
        let (s, inner) = (self.opts.samples.max(1), self.opts.inner.max(1));
        let (med, min) = time_op(self.b, &self.sync, s, inner, &mut f);
        let gpu_ms = if self.opts.device_time { device_time_op(self.b, &self.sync, s.min(3), &mut f) } else { None };
        self.out.push(KernelReport {
            framework: "etude",
            kind: "kernel",
            backend: self.b.kind(),
            device: self.b.device(),
            op,
            ms_median: round(med, 3),
            ms_min: round(min, 3),
            gpu_ms: gpu_ms.map(|g| round(g, 3)),
            gflops: flop.map(|f| round(f / med / 1e6, 2)),
            gbytes_per_s: bytes.map(|by| round(by / med / 1e6, 2)),
        });
    }
}

/// Times every operation at the models' shapes on `b`.
pub fn kernels<B: BenchBackend>(b: &B, opts: KernelOptions) -> Vec<KernelReport> {
    let mut rng = Rng::new(7);
    let mut kt = KernelTimer { b, sync: b.alloc(1), opts, out: Vec::new() };

    // Dense layers: forward, backward to the input, backward to the weight.
    for &(label, m, k, n) in DENSE_SHAPES {
        let x = filled(b, m * k, &mut rng);
        let w = filled(b, n * k, &mut rng);
        let dy = filled(b, m * n, &mut rng);
        let mut y = b.alloc(m * n);
        let mut dx = b.alloc(m * k);
        let mut dw = b.alloc(n * k);
        let flop = Some(2.0 * (m * k * n) as f64);
        let fwd = MatMul { m, k, n, trans_a: false, trans_b: true, accumulate: false };
        kt.op(format!("matmul {label} fwd [{m}x{k}]x[{k}x{n}]"), flop, None, || b.matmul(&x, &w, &mut y, fwd));
        let bwd_x = MatMul { m, k: n, n: k, trans_a: false, trans_b: false, accumulate: false };
        kt.op(format!("matmul {label} bwd-input"), flop, None, || b.matmul(&dy, &w, &mut dx, bwd_x));
        let bwd_w = MatMul { m: n, k: m, n: k, trans_a: true, trans_b: false, accumulate: true };
        kt.op(format!("matmul {label} bwd-weight"), flop, None, || b.matmul(&dy, &x, &mut dw, bwd_w));
    }

    // One LSTM layer's recurrence at batch 128, T 128, H 128 (the input projection is above).
    {
        let l = Lstm { batch: 128, time: 128, hidden: 128 };
        let (bt, h) = (l.batch * l.time, l.hidden);
        let xw = filled(b, bt * 4 * h, &mut rng);
        let w_hh = filled(b, 4 * h * h, &mut rng);
        let h0 = b.alloc(l.batch * h);
        let c0 = b.alloc(l.batch * h);
        let dhs = filled(b, bt * h, &mut rng);
        let (mut hs, mut cs, mut gates) = (b.alloc(bt * h), b.alloc(bt * h), b.alloc(bt * 4 * h));
        let (mut dxw, mut dw_hh) = (b.alloc(bt * 4 * h), b.alloc(4 * h * h));
        // Recurrent product only: 4H x H multiply-adds per row and step; backward twice that.
        let flop = 2.0 * (bt * 4 * h * h) as f64;
        kt.op("lstm_fwd B=128 T=128 H=128".into(), Some(flop), None, || b.lstm_fwd(&xw, &w_hh, &h0, &c0, LstmSeqs { hs: &mut hs, cs: &mut cs, gates: &mut gates }, l));
        kt.op("lstm_bwd B=128 T=128 H=128".into(), Some(2.0 * flop), None, || {
                b.lstm_bwd(&w_hh, LstmSaved { h0: &h0, c0: &c0, seqs: LstmSeqs { hs: &hs, cs: &cs, gates: &gates } }, &dhs, &mut dxw, &mut dw_hh, l)
            });
    }

    // Convolutions of the simple WaveNet (K = 3) and the gated one (K = 2), 64 -> 64 channels.
    for (k, cout, dilation) in [(3, 64, 1), (3, 64, 8), (2, 128, 1)] {
        let c = Conv1d { batch: 128, cin: 64, cout, time: 128, k, dilation };
        let x = filled(b, c.batch * c.cin * c.time, &mut rng);
        let w = filled(b, c.cout * c.cin * c.k, &mut rng);
        let bias = filled(b, c.cout, &mut rng);
        let dy = filled(b, c.batch * c.cout * c.time, &mut rng);
        let mut y = b.alloc(c.batch * c.cout * c.time);
        let mut dx = b.alloc(c.batch * c.cin * c.time);
        let (mut dw, mut db) = (b.alloc(c.cout * c.cin * c.k), b.alloc(c.cout));
        // Counted at full length T, as modelspec.py does.
        let flop = Some(2.0 * (c.batch * c.cout * c.cin * c.k * c.time) as f64);
        let shape = format!("B=128 {}->{} T=128 K={k} d={dilation}", c.cin, c.cout);
        kt.op(format!("conv1d_fwd {shape}"), flop, None, || b.conv1d_fwd(&x, &w, &bias, &mut y, c));
        kt.op(format!("conv1d_bwd_input {shape}"), flop, None, || b.conv1d_bwd_input(&dy, &w, &mut dx, c, false));
        kt.op(format!("conv1d_bwd_weight {shape}"), flop, None, || b.conv1d_bwd_weight(&x, &dy, &mut dw, &mut db, c));
    }

    // Bias gradients: of the LSTM input projection ([B*T, 4H], inner 1) and of a conv ([B, C, T]).
    for (label, outer, channels, len) in [("lstm b_ih", 128 * 128, 512, 1), ("conv", 128, 128, 128)] {
        let dy = filled(b, outer * channels * len, &mut rng);
        let mut db = b.alloc(channels);
        kt.op(format!("bias_grad {label} [{outer}, {channels}, {len}]"), None, Some(4.0 * (outer * channels * len) as f64), || b.bias_grad(&dy, &mut db, outer, channels, len));
    }

    // Gated unit of the gated WaveNet: a [128, 128, 128] -> z [128, 64, 128].
    {
        let (batch, r, t) = (128, 64, 128);
        let a = filled(b, batch * 2 * r * t, &mut rng);
        let dz = filled(b, batch * r * t, &mut rng);
        let (mut z, mut da) = (b.alloc(batch * r * t), b.alloc(batch * 2 * r * t));
        let n = (batch * r * t) as f64;
        kt.op("gated_fwd B=128 R=64 T=128".into(), None, Some(12.0 * n), || b.gated_fwd(&a, &mut z, batch, r, t));
        kt.op("gated_bwd B=128 R=64 T=128".into(), None, Some(20.0 * n), || b.gated_bwd(&a, &dz, &mut da, batch, r, t));
    }

    // Loss over every position of a batch: logits [128*128, 300].
    {
        let (n, v) = (128 * 128, 300);
        let logits = filled(b, n * v, &mut rng);
        let ids: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
        let mut targets = b.alloc_ids(n);
        b.write_ids(&mut targets, &ids);
        let (mut dlogits, mut stats) = (b.alloc(n * v), b.alloc(2 * n));
        kt.op(format!("softmax_xent [{n}, {v}]"), None, Some(8.0 * (n * v) as f64), || {
                b.softmax_xent(&logits, &targets, &mut dlogits, &mut stats, Xent { n, v, grad_scale: 1.0 / n as f32 })
            });
    }

    // Embedding of a batch: 16384 ids into rows of 100 from a 300-row table.
    {
        let (n, e, v) = (128 * 128, 100, 300);
        let table = filled(b, v * e, &mut rng);
        let ids: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
        let mut dev_ids = b.alloc_ids(n);
        b.write_ids(&mut dev_ids, &ids);
        let dout = filled(b, n * e, &mut rng);
        let (mut emb, mut dtable) = (b.alloc(n * e), b.alloc(v * e));
        let bytes = Some(8.0 * (n * e) as f64);
        kt.op(format!("embedding_fwd n={n} E={e}"), None, bytes, || b.embedding_fwd(&dev_ids, &table, &mut emb, n, e));
        kt.op(format!("embedding_bwd n={n} E={e}"), None, bytes, || b.embedding_bwd(&dev_ids, &dout, &mut dtable, n, e));
    }

    // Adam over 400k parameters in one tensor: reads p, g, m, v; writes p, m, v.
    {
        let n = 400_000;
        let g = filled(b, n, &mut rng);
        let (mut p, mut m, mut v) = (filled(b, n, &mut rng), b.alloc(n), b.alloc(n));
        let mut scale = b.alloc(1);
        b.write(&mut scale, &[1.0]);
        kt.op(format!("adam n={n}"), None, Some(28.0 * n as f64), || b.adamw(&mut p, &g, &mut m, &mut v, &scale, AdamStep::adam(n, AdamParams::default())));
    }
    kt.out
}

/// A human-readable line for a kernel report.
pub fn format_kernel(r: &KernelReport) -> String {
    let rate = match (r.gflops, r.gbytes_per_s) {
        (Some(g), _) => format!("{g:8.1} GFLOP/s"),
        (None, Some(g)) => format!("{g:8.1} GB/s"),
        _ => String::new(),
    };
    let gpu = r.gpu_ms.map(|g| format!(", gpu {g:9.3} ms")).unwrap_or_default();
    format!("{:<4} {:<58} {:9.3} ms (min {:9.3}{gpu}) {rate}", r.backend, r.op, r.ms_median, r.ms_min)
}
