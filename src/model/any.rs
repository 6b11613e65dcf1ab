//! Choosing a model by name: [`ModelConfig`] (what a checkpoint stores) and [`AnyModel`] (one
//! of the concrete models behind the [`Model`] trait, keeping each one's extras reachable, such as
//! the LSTM's one-step inference).

use super::lstm::{LstmConfig, LstmModel};
use super::transformer::{Transformer, TransformerConfig};
use super::wavenet::{Wavenet, WavenetConfig};
use super::wavenet_gated::{GatedConfig, WavenetGated, DEFAULT_ATTENTION_DIM};
use super::Model;
use crate::data::dataset::Targets;
use crate::engine::{Backend, Dropout, Param, Tensor};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// The names `--model` accepts.
pub const MODEL_NAMES: [&str; 5] = ["lstm", "lstm-seq", "wavenet", "wavenet-gated", "transformer"];

/// A model's kind and sizes: everything needed to rebuild it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ModelConfig {
    /// `lstm` (many-to-one) and `lstm-seq` (many-to-many, `seq = true`).
    Lstm(LstmConfig),
    /// The tutorial's simple WaveNet (many-to-one).
    Wavenet(WavenetConfig),
    /// The gated WaveNet with residual and skip connections (many-to-many).
    WavenetGated(GatedConfig),
    /// The Transformer with relative attention (many-to-many).
    Transformer(TransformerConfig),
}

/// Sizes a user may override; `None` keeps the model's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sizes {
    pub embed: Option<usize>,
    pub hidden: Option<usize>,
    pub layers: Option<usize>,
    pub dense: Option<usize>,
    pub channels: Option<usize>,
    pub residual: Option<usize>,
    pub skip: Option<usize>,
    pub stacks: Option<usize>,
    /// wavenet-gated: attention heads (0 = none) and the width of each.
    pub attention: Option<usize>,
    pub attention_dim: Option<usize>,
    /// transformer: model width, attention heads, feed-forward width.
    pub width: Option<usize>,
    pub heads: Option<usize>,
    pub ff: Option<usize>,
}

impl ModelConfig {
    /// The default configuration of the model called `name` for a vocabulary and window, with
    /// `sizes` applied; errors on an unknown name or a size the model does not have.
    pub fn from_name(name: &str, vocab: usize, window: usize, sizes: &Sizes) -> Result<Self, String> {
        let unused = |what: &[(&str, Option<usize>)]| -> Result<(), String> {
            match what.iter().find(|(_, v)| v.is_some()) {
                Some((flag, _)) => Err(format!("--{flag} does not apply to the {name} model")),
                None => Ok(()),
            }
        };
        if name != "transformer" {
            unused(&[("width", sizes.width), ("heads", sizes.heads), ("ff", sizes.ff)])?;
        }
        let cfg = match name {
            "transformer" => {
                unused(&[("embed", sizes.embed), ("hidden", sizes.hidden), ("dense", sizes.dense), ("channels", sizes.channels)])?;
                unused(&[("residual", sizes.residual), ("skip", sizes.skip), ("stacks", sizes.stacks)])?;
                unused(&[("attention", sizes.attention), ("attention-dim", sizes.attention_dim)])?;
                let mut c = TransformerConfig::new(vocab, window);
                c.width = sizes.width.unwrap_or(c.width);
                c.heads = sizes.heads.unwrap_or(c.heads);
                c.ff = sizes.ff.unwrap_or(c.ff);
                c.layers = sizes.layers.unwrap_or(c.layers);
                c.validate()?;
                ModelConfig::Transformer(c)
            }
            "lstm" | "lstm-seq" => {
                unused(&[("channels", sizes.channels), ("residual", sizes.residual), ("skip", sizes.skip), ("stacks", sizes.stacks)])?;
                unused(&[("attention", sizes.attention), ("attention-dim", sizes.attention_dim)])?;
                let mut c = LstmConfig::new(vocab, name == "lstm-seq");
                c.embed = sizes.embed.unwrap_or(c.embed);
                c.hidden = sizes.hidden.unwrap_or(c.hidden);
                c.layers = sizes.layers.unwrap_or(c.layers);
                c.dense = sizes.dense.unwrap_or(c.dense);
                c.validate()?;
                ModelConfig::Lstm(c)
            }
            "wavenet" => {
                unused(&[("hidden", sizes.hidden), ("residual", sizes.residual), ("skip", sizes.skip), ("stacks", sizes.stacks)])?;
                unused(&[("attention", sizes.attention), ("attention-dim", sizes.attention_dim)])?;
                let mut c = WavenetConfig::new(vocab, window);
                c.embed = sizes.embed.unwrap_or(c.embed);
                c.channels = sizes.channels.unwrap_or(c.channels);
                c.layers = sizes.layers.unwrap_or(c.layers);
                c.dense = sizes.dense.unwrap_or(c.dense);
                c.validate()?;
                ModelConfig::Wavenet(c)
            }
            "wavenet-gated" => {
                unused(&[("hidden", sizes.hidden), ("dense", sizes.dense), ("channels", sizes.channels)])?;
                let mut c = GatedConfig::new(vocab, window);
                c.embed = sizes.embed.unwrap_or(c.embed);
                c.residual = sizes.residual.unwrap_or(c.residual);
                c.skip = sizes.skip.unwrap_or(c.skip);
                c.layers = sizes.layers.unwrap_or(c.layers);
                c.stacks = sizes.stacks.unwrap_or(c.stacks);
                c.attention = sizes.attention.unwrap_or(0);
                c.attention_dim = match (c.attention, sizes.attention_dim) {
                    (_, Some(0)) => return Err("--attention-dim must be at least 1".into()),
                    (0, Some(_)) => return Err("--attention-dim needs --attention HEADS (at least 1)".into()),
                    (0, None) => 0,
                    (_, d) => d.unwrap_or(DEFAULT_ATTENTION_DIM),
                };
                c.validate()?;
                ModelConfig::WavenetGated(c)
            }
            _ => return Err(format!("unknown model '{name}' (expected one of: {})", MODEL_NAMES.join(", "))),
        };
        Ok(cfg)
    }

    /// The name `--model` takes for this configuration.
    pub fn name(&self) -> &'static str {
        match self {
            ModelConfig::Lstm(c) if c.seq => "lstm-seq",
            ModelConfig::Lstm(_) => "lstm",
            ModelConfig::Wavenet(_) => "wavenet",
            ModelConfig::WavenetGated(_) => "wavenet-gated",
            ModelConfig::Transformer(_) => "transformer",
        }
    }

    pub fn vocab(&self) -> usize {
        match self {
            ModelConfig::Lstm(c) => c.vocab,
            ModelConfig::Wavenet(c) => c.vocab,
            ModelConfig::WavenetGated(c) => c.vocab,
            ModelConfig::Transformer(c) => c.vocab,
        }
    }

    pub fn targets(&self) -> Targets {
        match self {
            ModelConfig::Lstm(c) if c.seq => Targets::Every,
            ModelConfig::Lstm(_) | ModelConfig::Wavenet(_) => Targets::Last,
            ModelConfig::WavenetGated(_) | ModelConfig::Transformer(_) => Targets::Every,
        }
    }

    /// Forward multiply-adds for one window of `window` tokens (matmuls and convs only, the
    /// convention of `../shared/peers/modelspec.py`); forward + backward is three times this.
    pub fn forward_macs(&self, window: usize) -> u64 {
        let t = window as u64;
        match self {
            ModelConfig::Lstm(c) => {
                let (v, e, h, d) = (c.vocab as u64, c.embed as u64, c.hidden as u64, c.dense as u64);
                let rec: u64 = (0..c.layers as u64).map(|l| 4 * h * (if l == 0 { e } else { h } + h)).sum::<u64>() * t;
                let head = h * d + d * v;
                rec + if c.seq { t * head } else { head }
            }
            ModelConfig::Wavenet(c) => {
                let (v, e, ch, k, l, d) =
                    (c.vocab as u64, c.embed as u64, c.channels as u64, c.kernel as u64, c.layers as u64, c.dense as u64);
                t * k * ch * e + (l - 1) * t * k * ch * ch + t * ch + t * d + d * v
            }
            ModelConfig::WavenetGated(c) => {
                let (v, e, r, s, k) = (c.vocab as u64, c.embed as u64, c.residual as u64, c.skip as u64, c.kernel as u64);
                let blocks = c.blocks() as u64;
                // Attention: q, k, v and o (4 products S x H*D per token), then the scores and the
                // weighted sum over the causal half of the T x T grid (T^2 H*D in all).
                let hd = c.attention_channels() as u64;
                let attention = 4 * t * s * hd + t * t * hd;
                t * e * r + blocks * t * k * r * 2 * r + (blocks - 1) * t * r * r + blocks * t * r * s + t * s * s + t * s * v
                    + attention
            }
            ModelConfig::Transformer(c) => {
                let (v, d, f, l) = (c.vocab as u64, c.width as u64, c.ff as u64, c.layers as u64);
                // Per token and block: qkv, proj, fc and mlp.proj; then the causal half of the
                // T x T scores, relative logits and weighted sum (1.5 T^2 d per block); the head.
                t * l * (4 * d * d + 2 * d * f) + l * 3 * t * t * d / 2 + t * d * v
            }
        }
    }
}

/// One of the models, built from a [`ModelConfig`]. (Each is a struct of layers, a few hundred
/// bytes whose size differs by model; one is built per command and never moved in a loop, so
/// the variants stay unboxed.)
#[allow(clippy::large_enum_variant)]
pub enum AnyModel<B: Backend> {
    Lstm(LstmModel<B>),
    Wavenet(Wavenet<B>),
    WavenetGated(WavenetGated<B>),
    Transformer(Transformer<B>),
}

impl<B: Backend> AnyModel<B> {
    /// A freshly initialised model (PyTorch's initialisation, drawn from `rng`) with an arena for
    /// `max_batch` windows of `window` tokens.
    pub fn new(b: &B, cfg: &ModelConfig, max_batch: usize, window: usize, rng: &mut Rng) -> Result<Self, String> {
        Ok(match cfg {
            ModelConfig::Lstm(c) => {
                c.validate()?;
                AnyModel::Lstm(LstmModel::new(b, c.clone(), max_batch, window, rng))
            }
            ModelConfig::Wavenet(c) => {
                c.validate()?;
                if c.window != window {
                    return Err(format!("the wavenet model reads windows of exactly {} tokens, not {window}", c.window));
                }
                AnyModel::Wavenet(Wavenet::new(b, c, max_batch, rng))
            }
            ModelConfig::WavenetGated(c) => {
                c.validate()?;
                let c = GatedConfig { window, ..c.clone() };
                AnyModel::WavenetGated(WavenetGated::new(b, &c, max_batch, rng))
            }
            ModelConfig::Transformer(c) => {
                c.validate()?;
                if window != c.window {
                    return Err(format!(
                        "--window {window}: the transformer's relative table covers windows of exactly {} tokens (its training window)",
                        c.window
                    ));
                }
                AnyModel::Transformer(Transformer::new(b, c, max_batch, rng))
            }
        })
    }

    fn inner(&self) -> &dyn Model<B> {
        match self {
            AnyModel::Lstm(m) => m,
            AnyModel::Wavenet(m) => m,
            AnyModel::WavenetGated(m) => m,
            AnyModel::Transformer(m) => m,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn Model<B> {
        match self {
            AnyModel::Lstm(m) => m,
            AnyModel::Wavenet(m) => m,
            AnyModel::WavenetGated(m) => m,
            AnyModel::Transformer(m) => m,
        }
    }
}

impl<B: Backend> Model<B> for AnyModel<B> {
    fn params(&self) -> Vec<&Param<B>> {
        self.inner().params()
    }
    fn params_mut(&mut self) -> Vec<&mut Param<B>> {
        self.inner_mut().params_mut()
    }
    fn vocab(&self) -> usize {
        self.inner().vocab()
    }
    fn window(&self) -> usize {
        self.inner().window()
    }
    fn targets(&self) -> Targets {
        self.inner().targets()
    }
    fn forward(&mut self, b: &B, x: &B::Ids, batch: usize) {
        self.inner_mut().forward(b, x, batch)
    }
    fn logits(&self) -> &Tensor<B> {
        self.inner().logits()
    }
    fn backward(&mut self, b: &B, x: &B::Ids, dlogits: &B::Buf, batch: usize) {
        self.inner_mut().backward(b, x, dlogits, batch)
    }
    fn set_dropout(&mut self, d: Option<Dropout>) {
        self.inner_mut().set_dropout(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuBackend;

    #[test]
    fn every_name_builds_and_round_trips_through_json() {
        let b = CpuBackend::new();
        for name in MODEL_NAMES {
            let sizes = match name {
                "transformer" => Sizes { width: Some(4), heads: Some(2), ff: Some(6), layers: Some(2), ..Default::default() },
                _ => Sizes { embed: Some(4), layers: Some(2), ..Default::default() },
            };
            let cfg = ModelConfig::from_name(name, 11, 8, &sizes).unwrap();
            assert_eq!(cfg.name(), name);
            let json = serde_json::to_string(&cfg).unwrap();
            assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), cfg);
            let m = AnyModel::new(&b, &cfg, 2, 8, &mut Rng::new(1)).unwrap();
            assert_eq!(m.vocab(), 11);
            assert_eq!(m.targets(), cfg.targets());
            assert!(m.params()[0].name == "emb.weight");
        }
        assert!(ModelConfig::from_name("gru", 5, 8, &Sizes::default()).is_err());
        let err = ModelConfig::from_name("lstm", 5, 8, &Sizes { channels: Some(3), ..Default::default() }).unwrap_err();
        assert!(err.contains("--channels"), "{err}");
    }

    #[test]
    fn macs_match_the_peers_convention() {
        // ../shared/peers/modelspec.py, V=300, T=128: fwd_flop_per_window / 2.
        let lstm = ModelConfig::from_name("lstm", 300, 128, &Sizes::default()).unwrap();
        assert_eq!(2 * lstm.forward_macs(128), 63_657_984);
    }
}
