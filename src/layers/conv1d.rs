//! `nn.Conv1d` over `[batch, channels, time]`, causal (left zero padding of `(k-1) * dilation`),
//! with a one-column step mode for incremental generation.

use super::{init, Layer};
use crate::engine::{self, Backend, MatMul, Param, Strided};
use crate::rng::Rng;

/// A causal dilated convolution; owns `weight [cout, cin, k]`, `bias [cout]` and (when made
/// [`Conv1d::with_output`]) its output `y [max_batch, cout, window]`.
pub struct Conv1d<B: Backend> {
    pub weight: Param<B>,
    pub bias: Param<B>,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub dilation: usize,
    /// The output (empty where the model gives the output buffer: [`Conv1d::forward_into`]).
    pub y: B::Buf,
    /// The past inputs of step mode ([`Conv1d::start_steps`]); `None` for whole windows.
    past: Option<Past<B>>,
}

/// Step mode's memory: the last `(k-1) * dilation` input columns in a ring (zeros before the
/// first step: the causal padding), and the `k` taps of the current step gathered as `[cin, k]`.
struct Past<B: Backend> {
    ring: B::Buf,
    slots: usize,
    /// The slot of the oldest column (where the next input goes).
    head: usize,
    taps: B::Buf,
}

impl<B: Backend> Conv1d<B> {
    /// PyTorch's initialisation: `U(+-1/sqrt(cin * k))` for weight and bias. No output buffer.
    pub fn new(b: &B, name: &str, cin: usize, cout: usize, k: usize, dilation: usize, rng: &mut Rng) -> Self {
        let bound = 1.0 / ((cin * k) as f32).sqrt();
        let w = init::uniform(rng, cout * cin * k, bound);
        let weight = Param::declare(b, &format!("{name}.weight"), &[cout, cin, k], w);
        let bias = Param::declare(b, &format!("{name}.bias"), &[cout], init::uniform(rng, cout, bound));
        Conv1d { weight, bias, cin, cout, k, dilation, y: b.alloc(0), past: None }
    }

    /// The same, with its own output for `max_batch` windows of `window` steps.
    pub fn with_output(mut self, b: &B, max_batch: usize, window: usize) -> Self {
        self.y = b.alloc(max_batch * self.cout * window);
        self
    }

    /// The op's sizes over `batch` windows of `time` steps.
    pub fn shape(&self, batch: usize, time: usize) -> engine::Conv1d {
        engine::Conv1d { batch, cin: self.cin, cout: self.cout, time, k: self.k, dilation: self.dilation }
    }

    /// `y = conv(x)` into the layer's own output.
    pub fn forward(&mut self, b: &B, x: &B::Buf, batch: usize, time: usize) {
        let c = self.shape(batch, time);
        run(b, &self.weight, &self.bias, self.past.as_mut(), c, x, &mut self.y);
    }

    /// `y [batch, cout, time] = conv(x [batch, cin, time])` into `y`.
    pub fn forward_into(&mut self, b: &B, x: &B::Buf, y: &mut B::Buf, batch: usize, time: usize) {
        let c = self.shape(batch, time);
        run(b, &self.weight, &self.bias, self.past.as_mut(), c, x, y);
    }

    /// From `dy` and the forward's input `x`: accumulates the weight and bias gradients, then
    /// writes `dx` (adds into it with `accumulate`).
    #[allow(clippy::too_many_arguments)]
    pub fn backward(&mut self, b: &B, x: &B::Buf, dy: &B::Buf, dx: &mut B::Buf, accumulate: bool, batch: usize, time: usize) {
        let c = self.shape(batch, time);
        b.conv1d_bwd_weight(x, dy, &mut self.weight.grad.buf, &mut self.bias.grad.buf, c);
        b.conv1d_bwd_input(dy, &self.weight.value.buf, dx, c, accumulate);
    }

    /// Step mode from here on: every forward is one step of one stream, starting from the
    /// causal padding, computed as one row times the weight (a conv of one column would be a
    /// `[cout, cin]` by `[cin, 1]` product, which the CPU backend packs for sgemm). A conv with
    /// one tap keeps no past.
    pub fn start_steps(&mut self, b: &B) {
        assert!(self.dilation >= 1, "conv1d step mode: dilation 0");
        let slots = (self.k - 1) * self.dilation;
        let taps = if slots > 0 { self.cin * self.k } else { 0 };
        self.past = Some(Past { ring: b.alloc(slots * self.cin), slots, head: 0, taps: b.alloc(taps) });
    }

    /// Forget the past inputs of step mode (back to the causal padding).
    pub fn reset_steps(&mut self, b: &B) {
        if let Some(p) = self.past.as_mut() {
            b.fill(&mut p.ring, p.slots * self.cin, 0.0);
            p.head = 0;
        }
    }
}

impl<B: Backend> Layer<B> for Conv1d<B> {
    fn params(&self) -> Vec<&Param<B>> {
        vec![&self.weight, &self.bias]
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        vec![&mut self.weight, &mut self.bias]
    }
}

/// The conv over whole windows, or in step mode (one window of one step) the output column from
/// the current input and the layer's past inputs, after which the input joins the past.
fn run<B: Backend>(
    b: &B,
    weight: &Param<B>,
    bias: &Param<B>,
    past: Option<&mut Past<B>>,
    c: engine::Conv1d,
    x: &B::Buf,
    y: &mut B::Buf,
) {
    let Some(past) = past else {
        return b.conv1d_fwd(x, &weight.value.buf, &bias.value.buf, y, c);
    };
    assert!(c.batch == 1 && c.time == 1, "conv1d step mode: one window of one step");
    let (cin, k, d) = (c.cin, c.k, c.dilation);
    let mm = MatMul { m: 1, k: cin * k, n: c.cout, trans_a: false, trans_b: true, accumulate: false };
    if past.slots == 0 {
        // One tap (k = 1): y = W x + bias.
        b.matmul(x, &weight.value.buf, y, mm);
        b.bias_add(y, &bias.value.buf, 1, c.cout, 1);
        return;
    }
    // taps[i, j] = input channel i, (k-1-j) * d steps back: the weight's rows [cin * k] times
    // this column are the conv's output column.
    for j in 0..k {
        let back = (k - 1 - j) * d;
        if back == 0 {
            b.copy_strided(x, &mut past.taps, Strided::block(cin, 1).from(0, 1).to(j, k));
        } else {
            let slot = (past.head + past.slots - back) % past.slots;
            b.copy_strided(&past.ring, &mut past.taps, Strided::block(cin, 1).from(slot * cin, 1).to(j, k));
        }
    }
    b.matmul(&past.taps, &weight.value.buf, y, mm);
    b.bias_add(y, &bias.value.buf, 1, c.cout, 1);
    b.copy_strided(x, &mut past.ring, Strided::contiguous(cin).to(past.head * cin, cin));
    past.head = (past.head + 1) % past.slots;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::{CpuBackend, CpuBuf};

    /// Step mode, fed a window column by column from the causal padding, gives every column of
    /// the whole-window conv (kernels 2 and 3, dilations 1 to 4, channels off any multiple); the
    /// past is forgotten by `reset_steps`. Different summation orders: 1e-5 on O(1) values.
    #[test]
    fn step_mode_matches_the_whole_window() {
        let b = CpuBackend::new();
        let mut rng = Rng::new(7);
        let (cin, cout, time) = (3, 5, 13);
        for (k, dilation) in [(2, 1), (3, 2), (2, 4), (1, 1)] {
            let mut conv = Conv1d::new(&b, "c", cin, cout, k, dilation, &mut rng).with_output(&b, 1, time);
            crate::engine::arena::into_arena(&b, conv.params_mut());
            let x: CpuBuf = (0..cin * time).map(|_| rng.uniform_range(-1.0, 1.0)).collect();
            conv.forward(&b, &x, 1, time);
            let want = conv.y.clone();
            conv.y = CpuBuf::zeros(cout);
            conv.start_steps(&b);
            for round in 0..2 {
                for t in 0..time {
                    let col: CpuBuf = (0..cin).map(|i| x[i * time + t]).collect();
                    conv.forward(&b, &col, 1, 1);
                    for o in 0..cout {
                        let (got, w) = (conv.y[o], want[o * time + t]);
                        assert!((got - w).abs() <= 1e-5, "k {k} d {dilation} round {round} t {t} o {o}: step {got}, window {w}");
                    }
                }
                conv.reset_steps(&b);
            }
        }
    }
}
