//! Checks made before anything big is allocated or trusted.
//!
//! * [`param_shapes`]: the parameters a [`ModelConfig`] builds (names and shapes, PyTorch order),
//!   computed without allocating, with overflow-checked arithmetic; a checkpoint's tensors are
//!   compared with them before its model is built.
//! * [`check_meta`]: a checkpoint's settings in their ranges (optimizer, data, tokenizer,
//!   progress) and its vocabulary made of tokens its tokenizer can produce.
//! * [`check_tensors`]: exactly the model's parameters (and, when present, both Adam moments of
//!   every one), each of its shape: no tensor missing, none extra.
//! * [`Footprint`]: the memory a model needs for a batch and window (parameters with gradients,
//!   Adam moments and a host copy; the activation arena; the fast WaveNet's queues), compared with
//!   the memory available and, on the GPU, with the largest buffer the adapter binds.

use crate::run::checkpoint::{Checkpoint, EXP_AVG, EXP_AVG_SQ};
use crate::model::any::ModelConfig;
use crate::model::wavenet_gated::GatedConfig;
use crate::music::tokens::{Tokenizer, UNK};
use crate::run::meta::{Meta, OptimConfig};
use std::collections::HashMap;

/// The largest `--step` / `note_length` of the notechord tokenizer, in quarter notes.
pub const MAX_NOTECHORD_QUARTERS: f64 = 64.0;

/// Names and shapes of the parameters `cfg` builds, in the models' order (the same as
/// `AnyModel::new(..).params()`), without allocating them.
pub fn param_shapes(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = Vec::new();
    let linear = |out: &mut Vec<(String, Vec<usize>)>, name: &str, shape: Vec<usize>| {
        let bias = vec![shape[0]];
        out.push((format!("{name}.weight"), shape));
        out.push((format!("{name}.bias"), bias));
    };
    match cfg {
        ModelConfig::Lstm(c) => {
            let (v, e, h, d) = (c.vocab, c.embed, c.hidden, c.dense);
            let h4 = h.saturating_mul(4);
            out.push(("emb.weight".into(), vec![v, e]));
            for l in 0..c.layers {
                let inp = if l == 0 { e } else { h };
                out.push((format!("lstm.weight_ih_l{l}"), vec![h4, inp]));
                out.push((format!("lstm.weight_hh_l{l}"), vec![h4, h]));
                out.push((format!("lstm.bias_ih_l{l}"), vec![h4]));
                out.push((format!("lstm.bias_hh_l{l}"), vec![h4]));
            }
            linear(&mut out, "fc1", vec![d, h]);
            linear(&mut out, "fc2", vec![v, d]);
        }
        ModelConfig::Wavenet(c) => {
            out.push(("emb.weight".into(), vec![c.vocab, c.embed]));
            for i in 0..c.layers {
                let cin = if i == 0 { c.embed } else { c.channels };
                linear(&mut out, &format!("convs.{i}"), vec![c.channels, cin, c.kernel]);
            }
            linear(&mut out, "out_conv", vec![1, c.channels, 1]);
            linear(&mut out, "fc1", vec![c.dense, c.window]);
            linear(&mut out, "fc2", vec![c.vocab, c.dense]);
        }
        ModelConfig::WavenetGated(c) => {
            let (v, e, r, s, k) = (c.vocab, c.embed, c.residual, c.skip, c.kernel);
            out.push(("emb.weight".into(), vec![v, e]));
            linear(&mut out, "inp", vec![r, e, 1]);
            let n = c.blocks();
            for i in 0..n {
                linear(&mut out, &format!("blocks.{i}.dil"), vec![r.saturating_mul(2), r, k]);
                if i + 1 < n {
                    linear(&mut out, &format!("blocks.{i}.res"), vec![r, r, 1]);
                }
                linear(&mut out, &format!("blocks.{i}.skip"), vec![s, r, 1]);
            }
            let hd = c.attention_channels();
            if hd > 0 {
                for name in ["attn.q", "attn.k", "attn.v"] {
                    linear(&mut out, name, vec![hd, s, 1]);
                }
                linear(&mut out, "attn.o", vec![s, hd, 1]);
            }
            linear(&mut out, "post1", vec![s, s, 1]);
            linear(&mut out, "post2", vec![v, s, 1]);
        }
        ModelConfig::Transformer(c) => {
            let (v, d, f) = (c.vocab, c.width, c.ff);
            out.push(("emb.weight".into(), vec![v, d]));
            for l in 0..c.layers {
                linear(&mut out, &format!("blocks.{l}.ln1"), vec![d]);
                out.push((format!("blocks.{l}.attn.rel"), vec![c.heads, c.window, c.head_dim()]));
                linear(&mut out, &format!("blocks.{l}.attn.qkv"), vec![d.saturating_mul(3), d]);
                linear(&mut out, &format!("blocks.{l}.attn.proj"), vec![d, d]);
                linear(&mut out, &format!("blocks.{l}.ln2"), vec![d]);
                linear(&mut out, &format!("blocks.{l}.mlp.fc"), vec![f, d]);
                linear(&mut out, &format!("blocks.{l}.mlp.proj"), vec![d, f]);
            }
            linear(&mut out, "ln_f", vec![d]);
            linear(&mut out, "head", vec![v, d]);
        }
    }
    out
}

/// Number of parameter tensors of `cfg` (what [`param_shapes`] lists), without listing them.
pub fn param_tensors(cfg: &ModelConfig) -> f64 {
    match cfg {
        ModelConfig::Lstm(c) => 5.0 + 4.0 * c.layers as f64,
        ModelConfig::Wavenet(c) => 7.0 + 2.0 * c.layers as f64,
        ModelConfig::WavenetGated(c) => {
            5.0 + 6.0 * c.layers as f64 * c.stacks as f64 + if c.attention_channels() > 0 { 8.0 } else { 0.0 }
        }
        ModelConfig::Transformer(c) => 5.0 + 13.0 * c.layers as f64,
    }
}

/// Trainable values of the gated WaveNet's attention layer: q, k, v (S -> H*D) and o (H*D -> S).
fn attention_params(c: &GatedConfig) -> f64 {
    let (a, s) = (c.attention as f64 * c.attention_dim as f64, c.skip as f64);
    if c.attention == 0 {
        0.0
    } else {
        3.0 * (a * s + a) + (s * a + s)
    }
}

/// Number of trainable values of `cfg`, in closed form and in f64 (a config may claim sizes
/// whose products overflow any integer).
pub fn param_count(cfg: &ModelConfig) -> f64 {
    let u = |x: usize| x as f64;
    match cfg {
        ModelConfig::Lstm(c) => {
            let (v, e, h, d, l) = (u(c.vocab), u(c.embed), u(c.hidden), u(c.dense), u(c.layers));
            let first = 4.0 * h * e + 4.0 * h * h + 8.0 * h;
            let rest = (l - 1.0) * (8.0 * h * h + 8.0 * h);
            v * e + first + rest + d * h + d + v * d + v
        }
        ModelConfig::Wavenet(c) => {
            let (v, e, ch, k, l, d, t) = (u(c.vocab), u(c.embed), u(c.channels), u(c.kernel), u(c.layers), u(c.dense), u(c.window));
            v * e + (ch * e * k + ch) + (l - 1.0) * (ch * ch * k + ch) + (ch + 1.0) + (d * t + d) + (v * d + v)
        }
        ModelConfig::WavenetGated(c) => {
            let (v, e, r, s, k) = (u(c.vocab), u(c.embed), u(c.residual), u(c.skip), u(c.kernel));
            let blocks = u(c.layers) * u(c.stacks);
            v * e
                + (r * e + r)
                + blocks * (2.0 * r * r * k + 2.0 * r)
                + (blocks - 1.0) * (r * r + r)
                + blocks * (s * r + s)
                + (s * s + s)
                + (v * s + v)
                + attention_params(c)
        }
        ModelConfig::Transformer(c) => {
            let (v, d, f, l, w) = (u(c.vocab), u(c.width), u(c.ff), u(c.layers), u(c.window));
            // Per block: ln1, ln2 (2d each), rel (H x W x D = W d), qkv, proj, fc, mlp.proj.
            let block = 4.0 * d + w * d + (3.0 * d * d + 3.0 * d) + (d * d + d) + (f * d + f) + (d * f + d);
            v * d + l * block + 2.0 * d + (v * d + v)
        }
    }
}

/// The tensors of `ck` are exactly the parameters of `meta`'s model, each of its shape, plus
/// (all or none) their two Adam moments. Returns whether the moments are there (a checkpoint
/// that can be resumed). Nothing is allocated; the error names the first tensor at fault.
pub fn check_tensors(meta: &Meta, ck: &Checkpoint) -> Result<bool, String> {
    // Counted before listing: a config may claim more tensors than any file holds.
    let n = param_tensors(&meta.model);
    if n > ck.tensors.len() as f64 {
        return Err(format!("its {} model has {n} parameter tensors, the file holds {}", meta.model.name(), ck.tensors.len()));
    }
    let shapes = param_shapes(&meta.model);
    let expected: HashMap<&str, &Vec<usize>> = shapes.iter().map(|(n, s)| (n.as_str(), s)).collect();
    let mut moments = 0;
    for t in &ck.tensors {
        let param = t.name.strip_prefix(EXP_AVG_SQ).or_else(|| t.name.strip_prefix(EXP_AVG)).unwrap_or(&t.name);
        let Some(&shape) = expected.get(param) else {
            return Err(format!("tensor {} is not a parameter of its {} model", t.name, meta.model.name()));
        };
        if &t.shape != shape {
            return Err(format!("{} has shape {:?}, the model expects {:?}", t.name, t.shape, shape));
        }
        if param != t.name {
            moments += 1;
        }
    }
    for (name, _) in &shapes {
        if ck.tensor(name).is_none() {
            return Err(format!("checkpoint has no tensor {name}"));
        }
    }
    if ck.tensors.len() != shapes.len() + moments {
        return Err("a tensor is repeated".into());
    }
    match moments {
        0 => Ok(false),
        m if m == 2 * shapes.len() => Ok(true),
        _ => Err("the checkpoint holds the optimizer moments of some parameters only".into()),
    }
}

/// `v` as `{}` writes it when that is short, else in exponent form (`{}` writes 1e308 with 309
/// digits).
fn short(v: f64) -> String {
    let plain = format!("{v}");
    if plain.len() <= 16 {
        plain
    } else {
        format!("{v:e}")
    }
}

/// `what` is a finite number in `lo..hi` (`hi_inclusive`: `lo..=hi`).
fn in_range(what: &str, v: f64, lo: f64, hi: f64, hi_inclusive: bool) -> Result<(), String> {
    let ok = v.is_finite() && v >= lo && (v < hi || (hi_inclusive && v == hi));
    if ok {
        Ok(())
    } else {
        let close = if hi_inclusive { "]" } else { ")" };
        Err(format!("{what} = {} is out of its range [{}, {}{close}", short(v), short(lo), short(hi)))
    }
}

/// Optimizer settings in their ranges: a positive finite learning rate, betas in [0, 1), a
/// positive eps, and a weight decay and clip that are finite and not negative.
pub fn check_optim(o: &OptimConfig) -> Result<(), String> {
    if o.batch == 0 {
        return Err("optim.batch = 0 is out of its range".into());
    }
    in_range("optim.lr", o.lr as f64, f64::MIN_POSITIVE, f64::MAX, true)?;
    in_range("optim.beta1", o.beta1 as f64, 0.0, 1.0, false)?;
    in_range("optim.beta2", o.beta2 as f64, 0.0, 1.0, false)?;
    in_range("optim.eps", o.eps as f64, f64::MIN_POSITIVE, 1.0, true)?;
    in_range("optim.weight_decay", o.weight_decay as f64, 0.0, f64::MAX, true)?;
    in_range("optim.clip", o.clip as f64, 0.0, f64::MAX, true)
}

/// A checkpoint's settings are ones etude could have trained with: optimizer, data and tokenizer
/// settings in range, a model config that validates, a progress that fits the optimizer's step
/// counter, and a vocabulary of tokens its tokenizer produces. The error names the setting.
pub fn check_meta(meta: &Meta, tokenizer: &dyn Tokenizer) -> Result<(), String> {
    check_optim(&meta.optim)?;
    if let Some(copy) = &meta.copy {
        copy.validate()?;
    }
    let d = &meta.data.data;
    if d.window == 0 || d.stride == 0 {
        return Err("data.window and data.stride must be at least 1".into());
    }
    in_range("data.valid_fraction", d.valid_fraction, 0.0, 1.0, false)?;
    if d.transpose > 127 {
        return Err(format!("data.transpose = {} is out of its range [0, 127]", d.transpose));
    }
    let t = &meta.data.tokenizer_options;
    in_range("tokenizer_options.step", t.step, f64::MIN_POSITIVE, MAX_NOTECHORD_QUARTERS, true)?;
    in_range("tokenizer_options.note_length", t.note_length, f64::MIN_POSITIVE, MAX_NOTECHORD_QUARTERS, true)?;
    let model_check = match &meta.model {
        ModelConfig::Lstm(c) => c.validate(),
        ModelConfig::Wavenet(c) => c.validate().and_then(|()| {
            (c.window == d.window)
                .then_some(())
                .ok_or_else(|| format!("the wavenet model reads {} tokens, the data's window is {}", c.window, d.window))
        }),
        ModelConfig::WavenetGated(c) => c.validate(),
        ModelConfig::Transformer(c) => c.validate().and_then(|()| {
            (c.window == d.window)
                .then_some(())
                .ok_or_else(|| format!("the transformer's relative table covers {} tokens, the data's window is {}", c.window, d.window))
        }),
    };
    model_check?;
    if meta.progress.best_val_loss.is_nan() || meta.progress.best_val_loss < 0.0 {
        return Err(format!("progress.best_val_loss = {} is not a loss", short(meta.progress.best_val_loss)));
    }
    if let Some(p) = &meta.progress.partial {
        if p.steps == 0 || p.steps > meta.progress.step || !(p.loss_sum.is_finite() && p.correct.is_finite() && p.seconds.is_finite()) {
            return Err(format!("progress.partial ({} steps) does not fit progress.step = {}", p.steps, meta.progress.step));
        }
    }
    if meta.progress.step > u64::from(u32::MAX) {
        return Err(format!("progress.step = {} is more than the optimizer counts", meta.progress.step));
    }
    if let Some(bad) = meta.vocab.tokens().iter().skip(1).find(|t| t.as_str() == UNK || !tokenizer.is_token(t)) {
        return Err(format!("vocabulary token {bad:?} is not a {} token", tokenizer.name()));
    }
    Ok(())
}

/// What a model takes in memory, in bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Footprint {
    /// Parameters, gradients, Adam moments and the host copy a checkpoint is written from.
    pub params: u128,
    /// The activation arena and the step's logit gradients for `batch` windows.
    pub activations: u128,
    /// The fast WaveNet's queues (composing with wavenet-gated); 0 for the other models.
    pub queues: u128,
    /// The largest single buffer (what one GPU storage binding must hold).
    pub largest_buffer: u128,
}

impl Footprint {
    /// The footprint of `cfg` training on `batch` windows of `window` tokens (f32 everywhere;
    /// `queues` counts the wavenet-gated generator's queues too).
    pub fn of(cfg: &ModelConfig, batch: usize, window: usize, queues: bool) -> Footprint {
        // In f64: the sizes asked for may overflow any integer; `as u128` saturates.
        let bytes = |floats: f64| (floats * 4.0) as u128;
        let u = |x: usize| x as f64;
        let p = param_count(cfg);
        let (m, t) = (u(batch), u(window));
        let n = m * t;
        let (acts, largest, q) = match cfg {
            ModelConfig::Lstm(c) => {
                let (v, e, h, d, l) = (u(c.vocab), u(c.embed), u(c.hidden), u(c.dense), u(c.layers));
                let rows = if c.seq { n } else { m };
                let acts = l * n * h * 11.0 + n * 4.0 * h + 2.0 * n * e + 4.0 * rows * d + 3.0 * rows * v + 4.0 * m * h;
                (acts, (n * 4.0 * h).max(rows * v), 0.0)
            }
            ModelConfig::Wavenet(c) => {
                let (v, e, ch, d, l) = (u(c.vocab), u(c.embed), u(c.channels), u(c.dense), u(c.layers));
                (4.0 * n * e + (l + 3.0) * n * ch + 4.0 * n + 4.0 * m * d + 3.0 * m * v, (n * ch).max(n * e).max(m * v), 0.0)
            }
            ModelConfig::WavenetGated(c) => {
                let (v, e, r, s) = (u(c.vocab), u(c.embed), u(c.residual), u(c.skip));
                let blocks = u(c.layers) * u(c.stacks);
                let a = 4.0 * n * e + blocks * n * 4.0 * r + 9.0 * n * s + 3.0 * n * r + 4.0 * n * v;
                // Attention: q, k, v, out and their gradients (8 x H*D channels), skip2, relu(skip2),
                // du and dskip_u (4 x S), and p [B, H, T, T].
                let (hd, heads) = (u(c.attention) * u(c.attention_dim), u(c.attention));
                let a = if c.attention > 0 { a + 8.0 * n * hd + 4.0 * n * s + n * heads * t } else { a };
                // One queue per block of (K-1) x dilation past inputs of R channels (batch 1):
                // per stack (K-1) x (2^L - 1) x R.
                // (None with attention heads: those generate with the sliding window.)
                let q = if queues && c.attention == 0 { u(c.stacks) * (u(c.kernel) - 1.0) * (2f64.powi(c.layers.min(1000) as i32) - 1.0) * r } else { 0.0 };
                let attn_largest = if c.attention > 0 { (n * heads * t).max(n * hd) } else { 0.0 };
                (a, (n * 2.0 * r).max(n * v).max(n * s).max(attn_largest), q)
            }
            ModelConfig::Transformer(c) => {
                let (v, d, f, l, h) = (u(c.vocab), u(c.width), u(c.ff), u(c.layers), u(c.heads));
                // Per block: ln1.y, ln2.y, qkv.y (3d), out, proj.y (attn and mlp), dout, dqkv (3d),
                // fc.y and act (2F), p (H T per row); the 2L+1 residual streams; emb, ln_f.y and
                // the four d-wide and two F-wide scratch rows; logits, their gradient and the
                // stepper's copy (3V). Generation's caches (queues): 2 x window x d per block.
                let block = n * (12.0 * d + 2.0 * f + h * t);
                let a = l * block + (2.0 * l + 1.0) * n * d + 6.0 * n * d + 2.0 * n * f + 3.0 * n * v;
                let q = if queues { l * 2.0 * u(c.window) * d } else { 0.0 };
                (a, (n * v).max(n * 3.0 * d).max(n * f).max(n * h * t), q)
            }
        };
        Footprint { params: bytes(8.0 * p), activations: bytes(acts), queues: bytes(q), largest_buffer: bytes(largest) }
    }

    pub fn total(&self) -> u128 {
        self.params.saturating_add(self.activations).saturating_add(self.queues)
    }
}

/// The memory the system can give (Linux: `MemAvailable` plus free swap); `None` where unknown.
pub fn available_memory() -> Option<u128> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |key: &str| -> Option<u128> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let kb: u128 = line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    };
    Some(field("MemAvailable:")? + field("SwapFree:").unwrap_or(0))
}

/// `bytes` for people: "3.2 GB", "512 MB", "12 kB".
pub fn human_bytes(bytes: u128) -> String {
    let b = bytes as f64;
    if b >= 1e12 {
        format!("{:.3} TB", b / 1e12)
    } else if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} kB", b / 1e3)
    }
}

/// Checks `fp` against the memory available (`memory`, bytes) and the largest buffer one binding
/// holds (`max_buffer`, bytes, GPU only). `culprit` names the option(s) that set the size (e.g.
/// "--hidden 1000000"); the error is one line naming it, the need and the limit.
pub fn check_footprint(fp: &Footprint, memory: Option<u128>, max_buffer: Option<u128>, culprit: &str) -> Result<(), String> {
    if let Some(limit) = max_buffer {
        if fp.largest_buffer > limit {
            return Err(format!(
                "{culprit}: one buffer of the model would take {}, more than this adapter's largest storage buffer ({}); use smaller sizes",
                human_bytes(fp.largest_buffer),
                human_bytes(limit)
            ));
        }
    }
    if let Some(limit) = memory {
        if fp.total() > limit {
            let queues = if fp.queues > 0 { format!(", composing queues {}", human_bytes(fp.queues)) } else { String::new() };
            return Err(format!(
                "{culprit}: the model would need about {} (parameters and optimizer {}, activations {}{queues}), more than the {} of memory available",
                human_bytes(fp.total()),
                human_bytes(fp.params),
                human_bytes(fp.activations),
                human_bytes(limit)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuBackend;
    use crate::model::any::{AnyModel, Sizes, MODEL_NAMES};
    use crate::model::Model;
    use crate::rng::Rng;

    fn configs() -> Vec<ModelConfig> {
        let mut out = Vec::new();
        // The transformer has no --embed: its sizes are below.
        for name in MODEL_NAMES.into_iter().filter(|&n| n != "transformer") {
            for sizes in [
                Sizes { embed: Some(3), layers: Some(1), ..Default::default() },
                Sizes { embed: Some(5), layers: Some(3), ..Default::default() },
            ] {
                out.push(ModelConfig::from_name(name, 13, 8, &sizes).unwrap());
            }
        }
        let gated = Sizes { embed: Some(4), layers: Some(2), stacks: Some(3), residual: Some(5), skip: Some(6), ..Default::default() };
        out.push(ModelConfig::from_name("wavenet-gated", 7, 8, &gated).unwrap());
        let tf = Sizes { width: Some(6), heads: Some(3), ff: Some(5), layers: Some(2), ..Default::default() };
        out.push(ModelConfig::from_name("transformer", 7, 8, &tf).unwrap());
        out
    }

    #[test]
    fn param_shapes_and_counts_are_the_models_own() {
        let b = CpuBackend::new();
        for cfg in configs() {
            let model = AnyModel::new(&b, &cfg, 2, 8, &mut Rng::new(0)).unwrap();
            let built: Vec<(String, Vec<usize>)> = model.params().iter().map(|p| (p.name.clone(), p.value.shape.clone())).collect();
            assert_eq!(param_shapes(&cfg), built, "{}", cfg.name());
            let values: usize = built.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
            assert_eq!(param_count(&cfg), values as f64, "{}", cfg.name());
            assert_eq!(param_tensors(&cfg), built.len() as f64, "{}", cfg.name());
        }
    }

    #[test]
    fn footprints_are_refused_over_memory_and_over_the_largest_buffer() {
        let cfg = ModelConfig::from_name("lstm", 300, 128, &Sizes::default()).unwrap();
        let fp = Footprint::of(&cfg, 128, 128, true);
        // The default model at batch 128 takes about 245 MB: fine with 1 GB, refused with 1 MB.
        assert!(check_footprint(&fp, Some(1 << 30), Some(1 << 30), "--batch 128").is_ok());
        let err = check_footprint(&fp, Some(1 << 20), None, "--batch 128").unwrap_err();
        assert!(err.starts_with("--batch 128: the model would need about") && err.contains("1.0 MB of memory available"), "{err}");
        assert!(!err.contains('\n'));
        // One buffer over a storage binding of 1 MB (the LSTM's gates: 128 x 128 x 4 x 128 floats).
        let err = check_footprint(&fp, None, Some(1 << 20), "--batch 128").unwrap_err();
        assert!(err.contains("largest storage buffer"), "{err}");
        assert!(fp.largest_buffer >= 4 * 128 * 128 * 4 * 128);
        // Sizes whose products overflow every integer still give a (saturated) footprint.
        let huge = ModelConfig::from_name("lstm", 300, 128, &Sizes { hidden: Some(usize::MAX / 2), ..Default::default() }).unwrap();
        assert!(check_footprint(&Footprint::of(&huge, usize::MAX, usize::MAX, false), Some(u128::MAX / 2), None, "x").is_err());
        // Queues: only wavenet-gated has them, doubling with each layer.
        let g = |layers| ModelConfig::from_name("wavenet-gated", 300, 128, &Sizes { layers: Some(layers), ..Default::default() }).unwrap();
        assert_eq!(Footprint::of(&cfg, 1, 128, true).queues, 0);
        let (q20, q21) = (Footprint::of(&g(20), 1, 128, true).queues, Footprint::of(&g(21), 1, 128, true).queues);
        assert_eq!(q21 - q20, 4 << 20 << 6, "block 21 adds 2^20 x 64 floats");
        // Attention heads: no queues (sliding-window generation), and p [B, H, T, T] among the
        // activations: 4 heads at batch 64, window 128 keep 16 MB of probabilities.
        let heads = Sizes { layers: Some(20), attention: Some(4), ..Default::default() };
        let a = ModelConfig::from_name("wavenet-gated", 300, 128, &heads).unwrap();
        assert_eq!(Footprint::of(&a, 1, 128, true).queues, 0);
        let (with, without) = (Footprint::of(&a, 64, 128, false), Footprint::of(&g(20), 64, 128, false));
        assert!(with.activations >= without.activations + 4 * 64 * 4 * 128 * 128, "{with:?} vs {without:?}");
        assert!(with.params > without.params);
    }
}
