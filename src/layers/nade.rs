//! `NadeHead`: the joint output of a piano-roll frame (issue 27), RNN-NADE's head
//! (Boulanger-Lewandowski, Bengio and Vincent 2012) over the op [`RollOps::nade_fwd`]. From the
//! sequence model's features `s_t` (what its sigmoid output layer reads) and that layer's logits
//! `bv(t) = b_v + W_sv s_t`, the head makes the hidden biases `bh(t) = b_h + W_sh s_t` (its
//! `Linear` `nade.hidden`: weight `W_sh [H, S]`, bias `b_h [H]`) and scores the frame's keys in
//! ascending order with `nade.w` (`W [88, H]`, row `i` added to the hidden pre-activations when key
//! `i` is on) and `nade.v` (`V [88, H]`, key `i`'s output weights); see [`crate::engine::nade`].
//! `W_sv` and `b_v` are the sequence model's own output layer (`out` or `post2`), so a sigmoid
//! model is this head with `V = 0`, and `V` starts at 0: training starts from the sigmoid model
//! (its output bias at the keys' log-odds).

use super::{init, Layer, Linear};
use crate::engine::nade::{Nade, NadeGrads, NadeIn};
use crate::engine::roll::{bce_one, sigmoid, RollOps};
use crate::engine::{Backend, Bce, Param};
use crate::rng::Rng;

/// The NADE head; see the module documentation.
pub struct NadeHead<B: Backend> {
    /// `W_sh`, `b_h`: features `[rows, S]` -> hidden biases `[rows, H]` (its output `y`).
    pub hidden: Linear<B>,
    /// `W [keys, H]`.
    pub w: Param<B>,
    /// `V [keys, H]`.
    pub v: Param<B>,
    pub keys: usize,
    pub units: usize,
    /// The conditional logits `[rows, keys]` of the last [`NadeHead::loss`].
    pub logits: B::Buf,
    /// `dL/dbh [rows, H]` of the last loss with gradients.
    dbh: B::Buf,
}

impl<B: RollOps> NadeHead<B> {
    /// `H` hidden units over features of width `s`, for `rows` rows; `W` drawn as
    /// `nn.Linear(keys, H)`'s weight (transposed), `V` zero.
    pub fn new(b: &B, name: &str, s: usize, units: usize, keys: usize, rows: usize, rng: &mut Rng) -> Self {
        let hidden = Linear::new(b, &format!("{name}.hidden"), s, units, rows, rng);
        let w = Param::new(b, &format!("{name}.w"), &[keys, units], &init::uniform(rng, keys * units, 1.0 / (keys as f32).sqrt()));
        let v = Param::new(b, &format!("{name}.v"), &[keys, units], &vec![0.0; keys * units]);
        NadeHead { hidden, w, v, keys, units, logits: b.alloc(rows * keys), dbh: b.alloc(rows * units) }
    }

    /// The hidden biases of `rows` rows of features `[rows, S]` (into `hidden.y`).
    pub fn forward(&mut self, b: &B, feat: &B::Buf, rows: usize) {
        self.hidden.forward(b, feat, rows);
    }

    /// The loss of the frames `y [rows, keys]` (row weights `rw`) given the visible biases `bv`
    /// (the sequence model's logits) and the last forward's hidden biases: `stats` as
    /// [`RollOps::bce_logits`] writes them, the conditional logits into [`NadeHead::logits`]; with
    /// `bce.grad_scale` not 0 also `dbv` (the gradient of the visible biases), and `W`'s, `V`'s
    /// and the hidden biases' gradients for [`NadeHead::backward`].
    #[allow(clippy::too_many_arguments)]
    pub fn loss(&mut self, b: &B, bv: &B::Buf, y: &B::Buf, rw: &B::Buf, dbv: &mut B::Buf, stats: &mut B::Buf, bce: Bce) {
        let d = Nade { n: bce.n, k: self.keys, h: self.units, grad_scale: bce.grad_scale };
        let x = NadeIn { bh: &self.hidden.y.buf, bv, w: &self.w.value.buf, v: &self.v.value.buf, y, rw };
        b.nade_fwd(x, &mut self.logits, stats, d);
        if bce.grad_scale != 0.0 {
            let x = NadeIn { bh: &self.hidden.y.buf, bv, w: &self.w.value.buf, v: &self.v.value.buf, y, rw };
            let g = NadeGrads { dbh: &mut self.dbh, dbv, dw: &mut self.w.grad.buf, dv: &mut self.v.grad.buf };
            b.nade_bwd(x, &self.logits, g, d);
        }
    }

    /// From the last loss: accumulates `W_sh`'s and `b_h`'s gradients and writes the features'
    /// gradient `dfeat [rows, S]`.
    pub fn backward(&mut self, b: &B, feat: &B::Buf, dfeat: &mut B::Buf, rows: usize) {
        self.hidden.backward(b, feat, &self.dbh, Some(dfeat), rows);
    }
}

impl<B: Backend> Layer<B> for NadeHead<B> {
    fn params(&self) -> Vec<&Param<B>> {
        let mut p = self.hidden.params();
        p.extend([&self.w, &self.v]);
        p
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut p = self.hidden.params_mut();
        p.extend([&mut self.w, &mut self.v]);
        p
    }
}

/// The NADE's distribution of one frame, host side: the frame's biases and the head's weights.
#[derive(Clone, Debug)]
pub struct NadeFrame {
    pub bh: Vec<f32>,
    pub bv: Vec<f32>,
    /// `W [88, H]`.
    pub w: Vec<f32>,
    /// `V [88, H]`.
    pub v: Vec<f32>,
}

impl NadeFrame {
    /// Draws the keys in ascending order, each from `sigmoid(logit / temperature)` given the keys
    /// drawn below it; once `max_keys` (0: no limit) are on, the rest stay off. One uniform draw
    /// per key tried.
    pub fn sample(&self, temperature: f32, max_keys: usize, rng: &mut Rng) -> Vec<u8> {
        let hn = self.bh.len();
        let mut a = self.bh.clone();
        let mut on = Vec::new();
        for i in 0..self.bv.len() {
            if max_keys > 0 && on.len() >= max_keys {
                break;
            }
            let v = &self.v[i * hn..][..hn];
            let logit = self.bv[i] + v.iter().zip(&a).map(|(&vc, &ac)| vc * sigmoid(ac)).sum::<f32>();
            if rng.uniform() < sigmoid(logit / temperature.max(1e-6)) as f64 {
                on.push(i as u8);
                a.iter_mut().zip(&self.w[i * hn..][..hn]).for_each(|(a, &w)| *a += w);
            }
        }
        on
    }

    /// `-log p(frame)` (nats): the sum over the keys of their conditionals' BCE.
    pub fn nll(&self, frame: &[u8]) -> f64 {
        let hn = self.bh.len();
        let mut a = self.bh.clone();
        let mut nll = 0.0;
        for i in 0..self.bv.len() {
            let v = &self.v[i * hn..][..hn];
            let logit = self.bv[i] + v.iter().zip(&a).map(|(&vc, &ac)| vc * sigmoid(ac)).sum::<f32>();
            let y = if frame.contains(&(i as u8)) { 1.0 } else { 0.0 };
            nll += bce_one(logit, y) as f64;
            if y > 0.0 {
                a.iter_mut().zip(&self.w[i * hn..][..hn]).for_each(|(a, &w)| *a += w);
            }
        }
        nll
    }
}
