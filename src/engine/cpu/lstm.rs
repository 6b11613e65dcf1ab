//! CPU twin of `shaders/lstm.wgsl`: the fused LSTM recurrence and its backpropagation through time.
//!
//! Layouts (all row-major, batch-major like the models' activations):
//! `xw, gates, dxw [batch, time, 4H]` (gate blocks i, f, g, o), `hs, cs, dhs [batch, time, H]`,
//! `h0, c0 [batch, H]`, `w_hh, dw_hh [4H, H]` (PyTorch `weight_hh_l*`).
//!
//! The input projection `x W_ih^T + b_ih + b_hh` is one big matrix product done by the model
//! beforehand; what is left here is inherently sequential in time but independent across batch rows.
//! So the batch is split into one chunk of rows per thread, and each chunk runs its whole time loop
//! on its own: per step one sgemm `h_{t-1} [rows, H] x W_hh^T -> [rows, 4H]` on strided views of
//! `hs` / `gates` (step t's rows lie `time*H` / `time*4H` apart), then the fused gate nonlinearities
//! and cell update. No synchronisation between steps is needed.

use super::sgemm;
use crate::engine::Lstm;
use rayon::prelude::*;

/// `e^x` for f32 without a libm call, so that the gate loops vectorise: Cephes' `expf`
/// (range reduction `x = n ln2 + r`, |r| <= ln2/2, a degree-6 polynomial, then `2^n` through the
/// exponent bits); within 2 ulp of `f32::exp` over the clamped range `[-87, 88]`, which covers
/// every value the LSTM needs (outside it the gates are saturated anyway).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without a floor() call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `tanh(x) = sign(x) (1 - e^{-2|x|}) / (1 + e^{-2|x|})`: never overflows, and is the formula the
/// shader uses; within ~1e-7 absolute of a libm tanh.
#[inline(always)]
fn tanh(x: f32) -> f32 {
    let e = exp(-2.0 * x.abs());
    ((1.0 - e) / (1.0 + e)).copysign(x)
}

/// Panics with the operation's name when a buffer is shorter than the sizes need.
fn need(op: &str, what: &str, buf: &[f32], len: usize) {
    assert!(buf.len() >= len, "{op}: {what} holds {} values, needs {len}", buf.len());
}

/// Batch rows per parallel chunk: one chunk per thread, never empty.
fn rows_per_chunk(batch: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    batch.div_ceil(threads).max(1)
}

/// Forward recurrence, see [`crate::engine::Backend::lstm_fwd`]. For each step t:
/// `a = xw[:, t] + h_{t-1} W_hh^T`; `i, f, o = sigmoid(a_i, a_f, a_o)`, `g = tanh(a_g)`;
/// `c_t = f c_{t-1} + i g`; `h_t = o tanh(c_t)`. Stores the activated gates for the backward.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    xw: &[f32],
    w_hh: &[f32],
    h0: &[f32],
    c0: &[f32],
    hs: &mut [f32],
    cs: &mut [f32],
    gates: &mut [f32],
    l: Lstm,
) {
    let Lstm { batch, time, hidden: h } = l;
    let (g4, seq_g, seq_h) = (4 * h, time * 4 * h, time * h);
    let op = "lstm_fwd";
    need(op, "xw", xw, batch * seq_g);
    need(op, "w_hh", w_hh, g4 * h);
    need(op, "h0", h0, batch * h);
    need(op, "c0", c0, batch * h);
    need(op, "hs", hs, batch * seq_h);
    need(op, "cs", cs, batch * seq_h);
    need(op, "gates", gates, batch * seq_g);
    if batch == 0 || time == 0 || h == 0 {
        return;
    }
    let rows = rows_per_chunk(batch);
    gates[..batch * seq_g]
        .par_chunks_mut(rows * seq_g)
        .zip(hs[..batch * seq_h].par_chunks_mut(rows * seq_h))
        .zip(cs[..batch * seq_h].par_chunks_mut(rows * seq_h))
        .enumerate()
        .for_each(|(chunk, ((gates, hs), cs))| {
            let b0 = chunk * rows;
            let nb = hs.len() / seq_h;
            let xw = &xw[b0 * seq_g..(b0 + nb) * seq_g];
            let h0 = &h0[b0 * h..(b0 + nb) * h];
            let c0 = &c0[b0 * h..(b0 + nb) * h];
            for t in 0..time {
                // Pre-activations: xw[:, t], plus the recurrent product.
                for r in 0..nb {
                    let at = r * seq_g + t * g4;
                    gates[at..at + g4].copy_from_slice(&xw[at..at + g4]);
                }
                if t == 0 {
                    sgemm(nb, h, g4, h0, (h, 1), w_hh, (1, h), &mut gates[..], (seq_g, 1), 1.0);
                } else {
                    let hprev = &hs[(t - 1) * h..];
                    sgemm(nb, h, g4, hprev, (seq_h, 1), w_hh, (1, h), &mut gates[t * g4..], (seq_g, 1), 1.0);
                }
                // Gates (activated in place, block by block so the loops vectorise), then the
                // cell and hidden state.
                for r in 0..nb {
                    let a = &mut gates[r * seq_g + t * g4..][..g4];
                    let (ifg, o) = a.split_at_mut(3 * h);
                    let (i_f, g) = ifg.split_at_mut(2 * h);
                    i_f.iter_mut().for_each(|v| *v = sigmoid(*v));
                    g.iter_mut().for_each(|v| *v = tanh(*v));
                    o.iter_mut().for_each(|v| *v = sigmoid(*v));
                    let (i, f) = i_f.split_at(h);
                    let at = r * seq_h + t * h;
                    let (cs_prev, cs_t) = cs.split_at_mut(at);
                    let cprev = if t == 0 { &c0[r * h..][..h] } else { &cs_prev[at - h..] };
                    let c_t = &mut cs_t[..h];
                    let h_t = &mut hs[at..at + h];
                    for j in 0..h {
                        let c = f[j] * cprev[j] + i[j] * g[j];
                        c_t[j] = c;
                        h_t[j] = o[j] * tanh(c);
                    }
                }
            }
        });
}

/// Backpropagation through time, see [`crate::engine::Backend::lstm_bwd`]. Going backward over t,
/// with `dh = dhs[:, t] + dgates_{t+1} W_hh` and `dc` carried from step t+1 (`dc_{t+1} f_{t+1}`):
/// `dc += dh o (1 - tanh^2 c_t)`; `da_i = dc g i(1-i)`, `da_f = dc c_{t-1} f(1-f)`,
/// `da_g = dc i (1-g^2)`, `da_o = dh tanh(c_t) o(1-o)`. Then, after the loop, in two sgemms:
/// `dw_hh += sum_{b,t} da[b,t]^T h_{t-1}[b]` with `h_{-1} = h0`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    w_hh: &[f32],
    h0: &[f32],
    c0: &[f32],
    hs: &[f32],
    cs: &[f32],
    gates: &[f32],
    dhs: &[f32],
    dxw: &mut [f32],
    dw_hh: &mut [f32],
    l: Lstm,
) {
    let Lstm { batch, time, hidden: h } = l;
    let (g4, seq_g, seq_h) = (4 * h, time * 4 * h, time * h);
    let op = "lstm_bwd";
    need(op, "w_hh", w_hh, g4 * h);
    need(op, "h0", h0, batch * h);
    need(op, "c0", c0, batch * h);
    need(op, "hs", hs, batch * seq_h);
    need(op, "cs", cs, batch * seq_h);
    need(op, "gates", gates, batch * seq_g);
    need(op, "dhs", dhs, batch * seq_h);
    need(op, "dxw", dxw, batch * seq_g);
    need(op, "dw_hh", dw_hh, g4 * h);
    if batch == 0 || time == 0 || h == 0 {
        return;
    }
    let rows = rows_per_chunk(batch);
    dxw[..batch * seq_g].par_chunks_mut(rows * seq_g).enumerate().for_each(|(chunk, dxw)| {
        let b0 = chunk * rows;
        let nb = dxw.len() / seq_g;
        let gates = &gates[b0 * seq_g..(b0 + nb) * seq_g];
        let cs = &cs[b0 * seq_h..(b0 + nb) * seq_h];
        let dhs = &dhs[b0 * seq_h..(b0 + nb) * seq_h];
        let c0 = &c0[b0 * h..(b0 + nb) * h];
        // Gradients flowing into step t from step t+1: through h_t (dgates_{t+1} W_hh) and c_t.
        let mut dh_next = vec![0.0f32; nb * h];
        let mut dc_next = vec![0.0f32; nb * h];
        for t in (0..time).rev() {
            for r in 0..nb {
                let a = &gates[r * seq_g + t * g4..][..g4];
                let d = &mut dxw[r * seq_g + t * g4..][..g4];
                let at = r * seq_h + t * h;
                for j in 0..h {
                    let (i, f, g, o) = (a[j], a[h + j], a[2 * h + j], a[3 * h + j]);
                    let c = cs[at + j];
                    let cprev = if t == 0 { c0[r * h + j] } else { cs[at - h + j] };
                    let tc = tanh(c);
                    let dh = dhs[at + j] + dh_next[r * h + j];
                    let dc = dc_next[r * h + j] + dh * o * (1.0 - tc * tc);
                    d[j] = dc * g * i * (1.0 - i);
                    d[h + j] = dc * cprev * f * (1.0 - f);
                    d[2 * h + j] = dc * i * (1.0 - g * g);
                    d[3 * h + j] = dh * tc * o * (1.0 - o);
                    dc_next[r * h + j] = dc * f;
                }
            }
            if t > 0 {
                // dh_{t-1} = dgates_t [nb, 4H] x W_hh [4H, H].
                sgemm(nb, g4, h, &dxw[t * g4..], (seq_g, 1), w_hh, (h, 1), &mut dh_next, (h, 1), 0.0);
            }
        }
    });

    // dW_hh [4H, H] += sum over all (b, t) of da[b,t]^T h_{t-1}[b]. Viewing the rows (b, t) of `dxw`
    // and `hs` as one sequence r = b*T + t, row r of dxw pairs with row r-1 of hs, except at t = 0
    // where the partner is h0[b] rather than hs[b-1, T-1]. So: one sgemm over the shifted views
    // (r = 1 .. B*T-1), then one of rank B over the rows t = 0 with `h0[b] - hs[b-1, T-1]`
    // (just `h0[0]` for b = 0, which the shifted product skipped) to fix those pairs.
    let n = batch * time;
    if n > 1 {
        sgemm(g4, n - 1, h, &dxw[g4..n * g4], (1, g4), &hs[..(n - 1) * h], (h, 1), dw_hh, (h, 1), 1.0);
    }
    let mut fix = h0[..batch * h].to_vec();
    for b in 1..batch {
        let last_prev = &hs[(b * time - 1) * h..][..h];
        fix[b * h..(b + 1) * h].iter_mut().zip(last_prev).for_each(|(f, p)| *f -= p);
    }
    sgemm(g4, batch, h, &dxw[..n * g4], (1, seq_g), &fix, (h, 1), dw_hh, (h, 1), 1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_sigmoid_and_tanh_match_libm() {
        let mut worst_exp = 0.0f32;
        for k in -86_999..=87_999 {
            let x = k as f32 * 1e-3;
            let (got, want) = (exp(x), x.exp());
            worst_exp = worst_exp.max(((got - want) / want).abs());
            let s = 1.0 / (1.0 + (-x as f64).exp());
            assert!((sigmoid(x) as f64 - s).abs() < 2e-7, "sigmoid({x})");
            assert!((tanh(x) as f64 - (x as f64).tanh()).abs() < 2e-7, "tanh({x})");
        }
        // 2 ulp relative.
        assert!(worst_exp < 2.5e-7, "exp relative error {worst_exp}");
        // Saturation, no NaN or infinity.
        for x in [-1e30f32, -200.0, 200.0, 1e30] {
            assert!(sigmoid(x).is_finite() && tanh(x).is_finite());
            assert!((tanh(x).abs() - 1.0).abs() < 1e-7 && (sigmoid(x) - if x > 0.0 { 1.0 } else { 0.0 }).abs() < 1e-7);
        }
    }
}
