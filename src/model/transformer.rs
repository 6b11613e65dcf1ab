//! The Transformer with relative attention (issue 26; Music Transformer, Huang et al. 2018),
//! exactly as `../shared/peers/torch_transformer.py` defines it: token embedding, `layers`
//! pre-norm blocks, a final LayerNorm and a separate output head; no absolute positions, the
//! relative table `rel[h, i - j]` of every block's attention says how far back a key lies.
//!
//! ```text
//! h_0     = drop_0(emb.weight[x])                                   [rows, d], rows = batch * T
//! block l:  m   = h + drop(attn(ln1(h)))                            attn: qkv, rel, proj
//!           h'  = m + drop(mlp.proj(gelu(mlp.fc(ln2(m)))))          GELU in its tanh form
//! logits  = head(ln_f(h_L))                                         [batch, T, V]
//! ```
//!
//! Activations are token-major rows (PyTorch's `[B, T, C]`), so every Linear is one matrix product
//! over all rows. The residual streams `h_0, m_0, h_1, ...` are kept for the backward, which runs
//! one gradient stream back through them: each LayerNorm adds its input's gradient into it.
//!
//! Generation: [`TransformerCache`] keeps every block's keys and values of the last `window`
//! positions, so a token costs O(window) per block (see [`crate::engine::RelDecode`]).

use super::Model;
use crate::data::dataset::Targets;
use crate::engine::arena::into_arena;
use crate::engine::{Backend, Dropout, Param, Strided, Tensor};
use crate::layers::{DropSite, Embedding, Layer, LayerNorm, Linear, RelSelfAttention};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// LayerNorm's epsilon (PyTorch's default, the spec's).
pub const LN_EPS: f32 = 1e-5;

/// Hyper-parameters of the Transformer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransformerConfig {
    /// Vocabulary size V.
    pub vocab: usize,
    /// Window T: the longest context in training, and the relative table's length.
    pub window: usize,
    /// Model width d.
    pub width: usize,
    /// Attention heads H (each `d / H` wide).
    pub heads: usize,
    /// Feed-forward width F.
    pub ff: usize,
    /// Blocks L.
    pub layers: usize,
}

impl TransformerConfig {
    /// Default sizes for a vocabulary and window.
    pub fn new(vocab: usize, window: usize) -> Self {
        TransformerConfig { vocab, window, width: 128, heads: 4, ff: 512, layers: 4 }
    }

    /// The width of one head, `d / H`.
    pub fn head_dim(&self) -> usize {
        self.width / self.heads.max(1)
    }

    /// Checks that every size is usable.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [("vocab", self.vocab), ("window", self.window), ("width", self.width), ("heads", self.heads), ("ff", self.ff), ("layers", self.layers)] {
            if v == 0 {
                return Err(format!("transformer: --{name} must be at least 1"));
            }
        }
        if !self.width.is_multiple_of(self.heads) {
            return Err(format!("--heads {} does not divide --width {} (each head is width / heads wide)", self.heads, self.width));
        }
        Ok(())
    }
}

/// One pre-norm block: `ln1`, `attn`, `ln2`, `mlp.fc`, `mlp.proj`.
struct Block<B: Backend> {
    ln1: LayerNorm<B>,
    attn: RelSelfAttention<B>,
    ln2: LayerNorm<B>,
    fc: Linear<B>,
    /// `gelu(fc.y)` `[rows, F]`.
    act: B::Buf,
    proj: Linear<B>,
}

impl<B: Backend> Block<B> {
    fn params(&self) -> Vec<&Param<B>> {
        let mut v = self.ln1.params();
        v.extend(self.attn.params());
        v.extend(self.ln2.params());
        v.extend(self.fc.params());
        v.extend(self.proj.params());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut v = self.ln1.params_mut();
        v.extend(self.attn.params_mut());
        v.extend(self.ln2.params_mut());
        v.extend(self.fc.params_mut());
        v.extend(self.proj.params_mut());
        v
    }
}

/// The Transformer: its layers and the activations of its wiring, for `max_batch` windows.
pub struct Transformer<B: Backend> {
    cfg: TransformerConfig,
    max_batch: usize,
    emb: Embedding<B>,
    blocks: Vec<Block<B>>,
    ln_f: LayerNorm<B>,
    head: Linear<B>,
    /// The residual streams `[rows, d]`: `res[2l]` enters block l, `res[2l+1]` is its middle,
    /// `res[2L]` goes to `ln_f`.
    res: Vec<B::Buf>,
    // ---- backward scratch ----
    /// The gradient of the residual stream being walked back.
    dres: B::Buf,
    /// A branch's gradient after its dropout mask (only with dropout).
    dbranch: B::Buf,
    /// The gradient of a LayerNorm's output `[rows, d]`, of `act` and of `fc.y` `[rows, F]`.
    dln: B::Buf,
    dact: B::Buf,
    dfc: B::Buf,
    dropout: Option<Dropout>,
}

/// Dropout sites: 0 the embedding, `1 + 2l` block l's attention branch, `2 + 2l` its MLP branch.
fn site(i: usize) -> DropSite {
    DropSite(i as u32)
}

/// The gradient reaching a residual branch's output through its dropout site: `dres` itself
/// without dropout, else a copy in `scratch` under the site's mask (`dres` must stay intact: it
/// is also the residual path's gradient).
fn through_dropout<'a, B: Backend>(b: &B, drop: Option<&Dropout>, s: DropSite, dres: &'a B::Buf, scratch: &'a mut B::Buf, n: usize) -> &'a B::Buf {
    match drop.filter(|d| d.p > 0.0) {
        None => dres,
        Some(d) => {
            b.copy_strided(dres, scratch, Strided::contiguous(n));
            s.apply(b, Some(d), scratch, n);
            scratch
        }
    }
}

impl<B: Backend> Transformer<B> {
    /// PyTorch's initialisation in PyTorch's construction order, drawn from `rng`; an arena for
    /// `max_batch` windows of `cfg.window` tokens.
    pub fn new(b: &B, cfg: &TransformerConfig, max_batch: usize, rng: &mut Rng) -> Self {
        let (d, f, t) = (cfg.width, cfg.ff, cfg.window);
        let rows = max_batch * t;
        let emb = Embedding::new(b, "emb", cfg.vocab, d, rows, rng);
        let blocks = (0..cfg.layers)
            .map(|l| {
                let name = |s: &str| format!("blocks.{l}.{s}");
                Block {
                    ln1: LayerNorm::new(b, &name("ln1"), d, LN_EPS, rows),
                    attn: RelSelfAttention::new(b, &name("attn"), d, cfg.heads, t, max_batch, rng),
                    ln2: LayerNorm::new(b, &name("ln2"), d, LN_EPS, rows),
                    fc: Linear::new(b, &name("mlp.fc"), d, f, rows, rng),
                    act: b.alloc(rows * f),
                    proj: Linear::new(b, &name("mlp.proj"), f, d, rows, rng),
                }
            })
            .collect();
        let ln_f = LayerNorm::new(b, "ln_f", d, LN_EPS, rows);
        let head = Linear::new(b, "head", d, cfg.vocab, rows, rng);
        let mut model = Transformer {
            cfg: cfg.clone(),
            max_batch,
            emb,
            blocks,
            ln_f,
            head,
            res: (0..=2 * cfg.layers).map(|_| b.alloc(rows * d)).collect(),
            dres: b.alloc(rows * d),
            dbranch: b.alloc(rows * d),
            dln: b.alloc(rows * d),
            dact: b.alloc(rows * f),
            dfc: b.alloc(rows * f),
            dropout: None,
        };
        // One arena for every parameter (see `crate::engine::arena`).
        into_arena(b, model.params_mut());
        model
    }

    pub fn config(&self) -> &TransformerConfig {
        &self.cfg
    }

    /// The forward over `rows` token rows after the embedding (`res[0]` filled): every block, then
    /// `ln_f` and the head. `attend` runs a block's attention on its `ln1.y` (the whole-window op
    /// in training, one cached step in generation).
    fn blocks_forward(&mut self, b: &B, rows: usize, mut attend: impl FnMut(&B, usize, &mut RelSelfAttention<B>, &B::Buf)) {
        let (d, f) = (self.cfg.width, self.cfg.ff);
        let n = rows * d;
        let drop = self.dropout;
        for (l, blk) in self.blocks.iter_mut().enumerate() {
            // m = h + drop(attn(ln1(h)))
            let (before, after) = self.res.split_at_mut(2 * l + 1);
            let (h, m) = (&before[2 * l], &mut after[0]);
            blk.ln1.forward(b, h, rows);
            attend(b, l, &mut blk.attn, &blk.ln1.y);
            site(1 + 2 * l).apply(b, drop.as_ref(), &mut blk.attn.proj.y.buf, n);
            b.copy_strided(h, m, Strided::contiguous(n));
            b.add(&blk.attn.proj.y.buf, m, n);
            // h' = m + drop(mlp(ln2(m)))
            let (before, after) = self.res.split_at_mut(2 * l + 2);
            let (m, h2) = (&before[2 * l + 1], &mut after[0]);
            blk.ln2.forward(b, m, rows);
            blk.fc.forward(b, &blk.ln2.y, rows);
            b.gelu_fwd(&blk.fc.y.buf, &mut blk.act, rows * f);
            blk.proj.forward(b, &blk.act, rows);
            site(2 + 2 * l).apply(b, drop.as_ref(), &mut blk.proj.y.buf, n);
            b.copy_strided(m, h2, Strided::contiguous(n));
            b.add(&blk.proj.y.buf, h2, n);
        }
        let last = &self.res[2 * self.cfg.layers];
        self.ln_f.forward(b, last, rows);
        self.head.forward(b, &self.ln_f.y, rows);
    }

    /// `res[0] = drop_0(emb(x))` for the first `rows` ids.
    fn embed(&mut self, b: &B, x: &B::Ids, rows: usize) {
        let n = rows * self.cfg.width;
        self.emb.forward(b, x, rows);
        b.copy_strided(&self.emb.out, &mut self.res[0], Strided::contiguous(n));
        site(0).apply(b, self.dropout.as_ref(), &mut self.res[0], n);
    }

    /// One generation step for `batch` sequences: `x [batch]` the newest token of each, `cache`
    /// their blocks' keys and values. Leaves the next token's logits in the first `batch` rows of
    /// [`super::Model::logits`].
    pub fn step(&mut self, b: &B, x: &B::Ids, cache: &mut TransformerCache<B>) {
        let batch = cache.batch;
        assert!(batch <= self.max_batch * self.cfg.window, "transformer step: batch {batch} past the arena");
        cache.len += 1;
        let len = cache.len;
        self.embed(b, x, batch);
        let caches = &mut cache.kv;
        self.blocks_forward(b, batch, |b, l, attn, x| {
            let (kc, vc) = &mut caches[l];
            attn.step(b, x, kc, vc, batch, len);
        });
    }
}

/// Every block's key/value ring cache of `batch` sequences (see [`crate::engine::RelDecode`]).
pub struct TransformerCache<B: Backend> {
    /// `(kcache, vcache)` per block, each `[batch, window, d]`.
    kv: Vec<(B::Buf, B::Buf)>,
    batch: usize,
    /// Positions fed so far.
    len: usize,
}

impl<B: Backend> TransformerCache<B> {
    /// An empty cache for `batch` sequences of `model`.
    pub fn new(b: &B, model: &Transformer<B>, batch: usize) -> Self {
        let c = &model.cfg;
        let n = batch * c.window * c.width;
        TransformerCache { kv: (0..c.layers).map(|_| (b.alloc(n), b.alloc(n))).collect(), batch, len: 0 }
    }

    /// Positions fed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<B: Backend> Model<B> for Transformer<B> {
    fn params(&self) -> Vec<&Param<B>> {
        let mut v = self.emb.params();
        self.blocks.iter().for_each(|blk| v.extend(blk.params()));
        v.extend(self.ln_f.params());
        v.extend(self.head.params());
        v
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        let mut v = self.emb.params_mut();
        self.blocks.iter_mut().for_each(|blk| v.extend(blk.params_mut()));
        v.extend(self.ln_f.params_mut());
        v.extend(self.head.params_mut());
        v
    }
    fn vocab(&self) -> usize {
        self.cfg.vocab
    }
    fn window(&self) -> usize {
        self.cfg.window
    }
    fn targets(&self) -> Targets {
        Targets::Every
    }

    fn forward(&mut self, b: &B, x: &B::Ids, batch: usize) {
        assert!(batch <= self.max_batch, "transformer: batch {batch} > max_batch {}", self.max_batch);
        let t = self.cfg.window;
        self.embed(b, x, batch * t);
        self.blocks_forward(b, batch * t, |b, _, attn, x| attn.forward(b, x, batch, t));
    }

    fn logits(&self) -> &Tensor<B> {
        &self.head.y
    }

    fn set_dropout(&mut self, d: Option<Dropout>) {
        self.dropout = d;
    }

    fn backward(&mut self, b: &B, x: &B::Ids, dlogits: &B::Buf, batch: usize) {
        let (t, d, f) = (self.cfg.window, self.cfg.width, self.cfg.ff);
        let rows = batch * t;
        let n = rows * d;
        let drop = self.dropout;
        b.fill(&mut self.dres, n, 0.0);
        self.head.backward(b, &self.ln_f.y, dlogits, Some(&mut self.dln), rows);
        self.ln_f.backward(b, &self.res[2 * self.cfg.layers], &self.dln, &mut self.dres, rows);
        for (l, blk) in self.blocks.iter_mut().enumerate().rev() {
            // h' = m + drop(mlp(ln2(m))): dres is dh'; afterwards dm.
            let dy = through_dropout(b, drop.as_ref(), site(2 + 2 * l), &self.dres, &mut self.dbranch, n);
            blk.proj.backward(b, &blk.act, dy, Some(&mut self.dact), rows);
            b.gelu_bwd(&blk.fc.y.buf, &self.dact, &mut self.dfc, rows * f);
            blk.fc.backward(b, &blk.ln2.y, &self.dfc, Some(&mut self.dln), rows);
            blk.ln2.backward(b, &self.res[2 * l + 1], &self.dln, &mut self.dres, rows);
            // m = h + drop(attn(ln1(h))): dres is dm; afterwards dh.
            let dy = through_dropout(b, drop.as_ref(), site(1 + 2 * l), &self.dres, &mut self.dbranch, n);
            blk.attn.backward(b, &blk.ln1.y, dy, &mut self.dln, batch, t);
            blk.ln1.backward(b, &self.res[2 * l], &self.dln, &mut self.dres, rows);
        }
        site(0).apply(b, drop.as_ref(), &mut self.dres, n);
        self.emb.backward(b, x, &self.dres, rows);
    }
}
