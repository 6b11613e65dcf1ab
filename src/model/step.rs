//! One training or evaluation step, written once for every model and backend.
//!
//! A training step uploads the batch's ids, zeroes the gradients, runs the model forward, the fused
//! softmax cross-entropy, the model backward and Adam — all recorded without reading anything back
//! (on the GPU: one submission). Each step's per-row loss and accuracy are added into a running
//! sum on the backend, which the host reads once when it wants the numbers (end of an epoch, or a
//! progress refresh).

use crate::engine::{arena, Adam, Backend, Xent};
use crate::model::Model;

/// Loss and accuracy summed over target rows.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    pub loss_sum: f64,
    pub correct: f64,
    pub rows: usize,
}

impl Totals {
    /// Mean cross-entropy (nats per target token).
    pub fn loss(&self) -> f64 {
        if self.rows == 0 {
            f64::NAN
        } else {
            self.loss_sum / self.rows as f64
        }
    }
    pub fn perplexity(&self) -> f64 {
        self.loss().exp()
    }
    pub fn accuracy(&self) -> f64 {
        if self.rows == 0 {
            f64::NAN
        } else {
            self.correct / self.rows as f64
        }
    }
}

/// The buffers a step needs besides the model's: ids, the logits' gradient, per-row stats and
/// their running sum. Allocated once for `max_batch`.
pub struct Stepper<B: Backend> {
    x: B::Ids,
    y: B::Ids,
    dlogits: B::Buf,
    stats: B::Buf,
    stats_sum: B::Buf,
    max_rows: usize,
    window: usize,
    max_batch: usize,
    rows_since_read: usize,
    last_rows: usize,
}

impl<B: Backend> Stepper<B> {
    pub fn new<M: Model<B> + ?Sized>(b: &B, model: &M, max_batch: usize) -> Self {
        let max_rows = model.target_rows(max_batch);
        Stepper {
            x: b.alloc_ids(max_batch * model.window()),
            y: b.alloc_ids(max_rows),
            dlogits: b.alloc(max_rows * model.vocab()),
            // f32 at any precision: the running sums add up many steps' losses.
            stats: b.alloc_f32(2 * max_rows),
            stats_sum: b.alloc_f32(2 * max_rows),
            max_rows,
            window: model.window(),
            max_batch,
            rows_since_read: 0,
            last_rows: 0,
        }
    }

    fn load_batch<M: Model<B> + ?Sized>(&mut self, b: &B, model: &M, x: &[u32], y: &[u32]) -> (usize, usize) {
        let batch = x.len() / self.window;
        assert!(batch >= 1 && batch <= self.max_batch && x.len() == batch * self.window, "bad batch shape");
        let rows = model.target_rows(batch);
        assert_eq!(y.len(), rows, "targets: expected {rows}, got {}", y.len());
        b.write_ids(&mut self.x, x);
        b.write_ids(&mut self.y, y);
        (batch, rows)
    }

    /// Forward and loss only; with `train`, also backward and one Adam step.
    fn run<M: Model<B> + ?Sized>(&mut self, b: &B, model: &mut M, adam: Option<&mut Adam<B>>, x: &[u32], y: &[u32]) {
        let (batch, rows) = self.load_batch(b, model, x, y);
        if adam.is_some() {
            arena::zero_grads(b, model.params_mut());
        }
        model.forward(b, &self.x, batch);
        let v = model.vocab();
        b.softmax_xent(&model.logits().buf, &self.y, &mut self.dlogits, &mut self.stats, Xent { n: rows, v, grad_scale: 1.0 / rows as f32 });
        b.add(&self.stats, &mut self.stats_sum, 2 * rows);
        self.rows_since_read += rows;
        self.last_rows = rows;
        if let Some(adam) = adam {
            model.backward(b, &self.x, &self.dlogits, batch);
            adam.step(b, model.params_mut());
        }
        b.flush();
    }

    /// One training step on `x [batch * T]` with targets `y` (`[batch]` or `[batch * T]`).
    pub fn train<M: Model<B> + ?Sized>(&mut self, b: &B, model: &mut M, adam: &mut Adam<B>, x: &[u32], y: &[u32]) {
        self.run(b, model, Some(adam), x, y)
    }

    /// The model's logits for `x [batch * T]`, forward only (one read-back): what a model computes
    /// from a batch, without a loss (a fresh draw's check that its output depends on its input).
    pub fn logits<M: Model<B> + ?Sized>(&mut self, b: &B, model: &mut M, x: &[u32]) -> Vec<f32> {
        let batch = x.len() / self.window;
        assert!(batch >= 1 && batch <= self.max_batch && x.len() == batch * self.window, "bad batch shape");
        b.write_ids(&mut self.x, x);
        model.forward(b, &self.x, batch);
        b.read(&model.logits().buf, model.target_rows(batch) * model.vocab())
    }

    /// Loss and accuracy of a batch without touching the parameters.
    pub fn eval<M: Model<B> + ?Sized>(&mut self, b: &B, model: &mut M, x: &[u32], y: &[u32]) {
        self.run(b, model, None, x, y)
    }

    /// Mean loss of the last batch alone (one small read-back; for progress display).
    pub fn last_batch_loss(&self, b: &B) -> f64 {
        let s = b.read(&self.stats, 2 * self.last_rows);
        s.chunks_exact(2).map(|p| p[0] as f64).sum::<f64>() / self.last_rows.max(1) as f64
    }

    /// Per-row `(loss, correct)` pairs of the last batch: `2 * rows` values, row-major like the
    /// targets (one read-back; the held-out metric picks the rows it scores).
    pub fn last_batch_rows(&self, b: &B) -> Vec<f32> {
        b.read(&self.stats, 2 * self.last_rows)
    }

    /// The totals accumulated since the last call, then restarts the sums (one read-back).
    pub fn take_totals(&mut self, b: &B) -> Totals {
        let n = self.max_rows;
        let s = b.read(&self.stats_sum, 2 * n);
        let mut t = Totals { rows: self.rows_since_read, ..Default::default() };
        for pair in s.chunks_exact(2) {
            t.loss_sum += pair[0] as f64;
            t.correct += pair[1] as f64;
        }
        b.fill(&mut self.stats_sum, 2 * n, 0.0);
        self.rows_since_read = 0;
        t
    }
}
