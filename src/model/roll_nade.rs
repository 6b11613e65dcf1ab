//! The piano-roll models with a joint output head (issue 27): `--head nade` puts a
//! [`NadeHead`] beside the sequence model's sigmoid output layer (RNN-NADE, Boulanger-Lewandowski,
//! Bengio and Vincent 2012). The sequence model is the plain one ([`crate::model::roll`]); its
//! logits become the NADE's visible biases `bv(t)`, the features its output layer reads give the
//! hidden biases `bh(t)`, and the loss is the NADE's exact `-log p(frame)`:
//!
//! ```text
//! features s_t  (lstm: the top layer's output after dropout [B*T, H]; conv: relu(post1) [B, S, T],
//!                transposed to rows)
//! bv(t) = out(s_t)  or  post2(s_t)           the sigmoid model's logits (W_sv, b_v)
//! bh(t) = nade.hidden(s_t)                    W_sh [Hn, S], b_h [Hn]
//! -log p(v_{t+1}) = NADE(bv(t), bh(t), nade.w, nade.v; v_{t+1})     RollOps::nade_fwd
//! ```
//!
//! Parameters: the head's first (`nade.hidden.weight [Hn, S]`, `nade.hidden.bias`, `nade.w
//! [88, Hn]`, `nade.v [88, Hn]`), then the sequence model's in its order, so that its output bias
//! stays the last parameter (where `init_output_bias` sets the keys' log-odds). The head's
//! parameters are an arena of their own (the optimizer then takes the per-tensor path).

use crate::data::roll::KEYS;
use crate::engine::arena::into_arena;
use crate::engine::roll::RollOps;
use crate::engine::{Bce, Dropout, Param};
use crate::layers::{Layer, NadeHead};
pub use crate::layers::nade::NadeFrame;
use crate::model::roll::{build, RollConfig, RollModel};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// A piano-roll model's output head (stored in its checkpoint's metadata; absent: sigmoid).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "head", rename_all = "kebab-case")]
pub enum RollHead {
    /// 88 independent sigmoids.
    #[default]
    Sigmoid,
    /// NADE over the 88 keys in ascending order, `hidden` units.
    Nade { hidden: usize },
}

impl RollHead {
    pub fn is_sigmoid(&self) -> bool {
        *self == RollHead::Sigmoid
    }

    /// `sigmoid` or `nade`.
    pub fn name(&self) -> &'static str {
        match self {
            RollHead::Sigmoid => "sigmoid",
            RollHead::Nade { .. } => "nade",
        }
    }

    /// From `--head` and `--nade-hidden`.
    pub fn parse(name: &str, hidden: usize) -> Result<RollHead, String> {
        match name {
            "sigmoid" => Ok(RollHead::Sigmoid),
            "nade" if hidden == 0 => Err("--nade-hidden must be positive".into()),
            "nade" if hidden > crate::engine::nade::NADE_MAX_HIDDEN => {
                Err(format!("--nade-hidden {hidden}: at most {}", crate::engine::nade::NADE_MAX_HIDDEN))
            }
            "nade" => Ok(RollHead::Nade { hidden }),
            other => Err(format!("--head {other}: sigmoid or nade")),
        }
    }

    /// Trainable values the head adds to the sequence model's, whose features are `s` wide.
    pub fn extra_params(&self, cfg: &RollConfig) -> usize {
        match *self {
            RollHead::Sigmoid => 0,
            RollHead::Nade { hidden } => hidden * feature_width(cfg) + hidden + 2 * KEYS * hidden,
        }
    }
}

/// Width of the features the output layer reads (H of the LSTM, S of the conv model).
pub fn feature_width(cfg: &RollConfig) -> usize {
    match *cfg {
        RollConfig::Lstm { hidden, .. } => hidden,
        RollConfig::WavenetGated { skip, .. } => skip,
    }
}

/// A freshly initialised model with `head` (the sequence model drawn first, as [`build`] draws
/// it, so a sigmoid model is exactly `build`'s).
pub fn build_headed<B: RollOps + 'static>(b: &B, cfg: &RollConfig, head: RollHead, capacity: usize, rng: &mut Rng) -> Box<dyn RollModel<B>> {
    let inner = build(b, cfg, capacity, rng);
    match head {
        RollHead::Sigmoid => inner,
        RollHead::Nade { hidden } => Box::new(RollNade::new(b, inner, hidden, capacity, rng)),
    }
}

/// A sequence model with a [`NadeHead`]; see the module documentation.
pub struct RollNade<B: RollOps> {
    inner: Box<dyn RollModel<B>>,
    head: NadeHead<B>,
    s: usize,
    cap: usize,
    /// The features as rows `[cap, S]` (the conv model's, transposed).
    feat: B::Buf,
    /// Their gradient, rows, and in the conv layout.
    dfeat: B::Buf,
    dfeat_t: B::Buf,
}

impl<B: RollOps + 'static> RollNade<B> {
    fn new(b: &B, inner: Box<dyn RollModel<B>>, hidden: usize, cap: usize, rng: &mut Rng) -> Self {
        let s = feature_width(inner.config());
        let mut head = NadeHead::new(b, "nade", s, hidden, KEYS, cap, rng);
        into_arena(b, head.params_mut());
        RollNade { inner, head, s, cap, feat: b.alloc(cap * s), dfeat: b.alloc(cap * s), dfeat_t: b.alloc(cap * s) }
    }

    /// The features as rows (the conv model's transposed into `self.feat`).
    fn rows(&self) -> &B::Buf {
        let (f, _, channels_first) = self.inner.features();
        if channels_first { &self.feat } else { f }
    }
}

impl<B: RollOps + 'static> RollModel<B> for RollNade<B> {
    fn config(&self) -> &RollConfig {
        self.inner.config()
    }
    fn params(&self) -> Vec<&Param<B>> {
        let mut p = self.head.params();
        p.extend(self.inner.params());
        p
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut p = self.head.params_mut();
        p.extend(self.inner.params_mut());
        p
    }
    fn capacity(&self) -> usize {
        self.cap
    }
    /// The conditional logits of the last [`RollModel::loss`] (teacher-forced: key i's given the
    /// true keys below it).
    fn logits(&self) -> &B::Buf {
        &self.head.logits
    }
    fn set_dropout(&mut self, d: Option<Dropout>) {
        self.inner.set_dropout(d);
    }

    fn forward(&mut self, b: &B, ids: &B::Ids, slots: usize, batch: usize, time: usize) {
        let n = batch * time;
        self.inner.forward(b, ids, slots, batch, time);
        let (f, s, channels_first) = self.inner.features();
        if channels_first {
            b.transpose(f, &mut self.feat, batch, s, time);
        }
        let feat = if channels_first { &self.feat } else { f };
        self.head.forward(b, feat, n);
    }

    fn loss(&mut self, b: &B, y: &B::Buf, w: &B::Buf, dlogits: &mut B::Buf, stats: &mut B::Buf, bce: Bce) {
        self.head.loss(b, self.inner.logits(), y, w, dlogits, stats, bce);
    }

    fn backward(&mut self, b: &B, ids: &B::Ids, slots: usize, dlogits: &B::Buf, batch: usize, time: usize) {
        self.backward_features(b, ids, slots, dlogits, None, batch, time)
    }

    fn features(&self) -> (&B::Buf, usize, bool) {
        (self.rows(), self.s, false)
    }

    /// The backward from the last loss (`dlogits`: the visible biases' gradient), with `dfeat`
    /// (rows) added to the features' gradient.
    fn backward_features(&mut self, b: &B, ids: &B::Ids, slots: usize, dlogits: &B::Buf, dfeat: Option<&B::Buf>, batch: usize, time: usize) {
        let n = batch * time;
        let (_, s, channels_first) = self.inner.features();
        let feat = if channels_first { &self.feat } else { self.inner.features().0 };
        self.head.backward(b, feat, &mut self.dfeat, n);
        if let Some(extra) = dfeat {
            b.add(extra, &mut self.dfeat, n * s);
        }
        let df = if channels_first {
            b.transpose(&self.dfeat, &mut self.dfeat_t, batch, time, s);
            &self.dfeat_t
        } else {
            &self.dfeat
        };
        self.inner.backward_features(b, ids, slots, dlogits, Some(df), batch, time);
    }

    fn joint_frames(&self, b: &B, rows: &[usize]) -> Option<Vec<NadeFrame>> {
        let hn = self.head.units;
        let end = rows.iter().max().map_or(0, |&r| r + 1);
        let (bh, bv) = (b.read(&self.head.hidden.y.buf, end * hn), b.read(self.inner.logits(), end * KEYS));
        let (w, v) = (self.head.w.value.to_vec(b), self.head.v.value.to_vec(b));
        let frame = |r: usize| NadeFrame { bh: bh[r * hn..][..hn].to_vec(), bv: bv[r * KEYS..][..KEYS].to_vec(), w: w.clone(), v: v.clone() };
        Some(rows.iter().map(|&r| frame(r)).collect())
    }
}
