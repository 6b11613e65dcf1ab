//! The checks and the first draw of a new token run, before its first step: a vocabulary with
//! something to learn, settings its checkpoints can be loaded with, a size that fits (naming the
//! option to change), and a model whose output depends on its input.

use crate::data::dataset::Dataset;
use crate::engine::Backend;
use crate::model::any::{AnyModel, ModelConfig, Sizes};
use crate::model::step::Stepper;
use crate::model::Model;
use crate::music::tokens::{Tokenizer, Vocab};
use crate::rng::Rng;
use crate::run::verify::Footprint;
use crate::run::{DataSpec, Meta, OptimConfig, Progress, RunSettings};

/// The settings of a new run, written into a checkpoint's metadata and read back as loading reads
/// them, then checked by [`crate::run::verify::check_meta`], the check [`Loaded::from_checkpoint`]
/// makes: an error names the option.
pub fn check_loadable(model: &ModelConfig, spec: &DataSpec, vocab: &Vocab, optim: &OptimConfig, tokenizer: &dyn Tokenizer) -> Result<(), String> {
    let meta = Meta {
        etude_version: env!("CARGO_PKG_VERSION").to_string(),
        model: model.clone(),
        data: spec.clone(),
        vocab: vocab.clone(),
        optim: optim.clone(),
        progress: Progress::default(),
        valid_pieces: Vec::new(),
        rng: Rng::new(optim.seed),
        run: RunSettings::default(),
        copy: None,
    };
    let json = serde_json::to_value(&meta).map_err(|e| e.to_string())?;
    let back: Meta = serde_json::from_value(json).map_err(|e| format!("the run's settings do not read back from a checkpoint: {e}"))?;
    crate::run::verify::check_meta(&back, tokenizer).map_err(|e| {
        const FLAGS: [(&str, &str); 9] = [
            ("data.transpose", "--transpose"),
            ("data.valid_fraction", "--val-fraction"),
            ("data.window", "--window"),
            ("tokenizer_options.step", "the tokenizer's step"),
            ("tokenizer_options.note_length", "the tokenizer's note length"),
            ("optim.lr", "--lr"),
            ("optim.clip", "--clip"),
            ("optim.weight_decay", "--weight-decay"),
            ("optim.batch", "--batch"),
        ];
        let flag = FLAGS.iter().find(|(k, _)| e.starts_with(k)).map_or("a setting", |(_, f)| f);
        format!("{flag}: {e}; the run's checkpoints could not be loaded, so it does not start")
    })
}


/// A fresh model whose output depends on its input, and the [`Stepper`] that will train it. The simple WaveNet funnels everything through
/// one ReLU channel (`out_conv`, C -> 1); for many seeds that channel starts negative everywhere, so
/// no gradient ever reaches the convolutions and the model only learns the token frequencies (the
/// PyTorch fixture generator skips such seeds for the same reason). Such a draw is detected on a
/// few training windows (every row of logits equal) and redrawn from the same generator.
pub fn live_init<B: Backend>(
    b: &B,
    cfg: &ModelConfig,
    max_batch: usize,
    window: usize,
    seed: u64,
    train: &Dataset,
) -> Result<(AnyModel<B>, Stepper<B>), String> {
    const TRIES: usize = 20;
    let mut rng = Rng::new(seed);
    let probe: Vec<usize> = (0..train.len().min(8).min(max_batch)).map(|i| i * train.len() / 8).collect();
    let mut stepper: Option<Stepper<B>> = None;
    for attempt in 1..=TRIES {
        let mut model = AnyModel::new(b, cfg, max_batch, window, &mut rng)?;
        // Every draw has the same shapes: one stepper serves them all, then the training.
        let mut s = stepper.take().unwrap_or_else(|| Stepper::new(b, &model, max_batch));
        if probe.len() < 2 {
            return Ok((model, s));
        }
        let batch = train.batch_of(&probe, model.targets());
        let logits = s.logits(b, &mut model, &batch.x);
        let v = model.vocab();
        let first = &logits[..v];
        let alive = logits.chunks_exact(v).any(|row| row.iter().zip(first).any(|(a, b)| (a - b).abs() > 1e-6));
        if alive || attempt == TRIES {
            if attempt > 1 {
                eprintln!("note: initialisation redrawn {} time(s): the model's output did not depend on its input", attempt - 1);
            }
            return Ok((model, s));
        }
        stepper = Some(s);
    }
    unreachable!("the last attempt returns")
}

/// Refuses a vocabulary with nothing to learn: fewer than two tokens besides `<unk>` (every
/// target would be `<unk>`, or one token, and the run would report a perfect loss).
pub fn degenerate_vocab(vocab: &Vocab, min_count: u64) -> Result<(), String> {
    let kept = vocab.len() - 1;
    if kept >= 2 {
        return Ok(());
    }
    let cause = if min_count > 1 {
        format!("--min-count {min_count} keeps {kept} token(s) besides <unk> ({} occurrences became <unk>); lower --min-count", vocab.counts()[0])
    } else {
        format!("the training pieces hold {kept} distinct token(s)")
    };
    Err(format!("nothing to learn: {cause}"))
}

/// The option(s) that make a model big, for the error of a size check: of the sizes the user
/// gave (and --batch and --window), the one whose default shrinks the footprint most.
/// `sizes`: those given; `resumed`: the run's model is its checkpoint's; `sample`: the run composes
/// a sample at the end.
pub fn size_culprit(cfg: &ModelConfig, sizes: &Sizes, resumed: bool, sample: bool, optim: &OptimConfig, window: usize) -> String {
    let total = |cfg: &ModelConfig, batch: usize, window: usize| Footprint::of(cfg, batch, window, sample).total();
    let mut best: Option<(u128, String)> = None;
    let mut consider = |size: u128, flag: String| {
        if best.as_ref().is_none_or(|(s, _)| size < *s) {
            best = Some((size, flag));
        }
    };
    if !resumed {
        consider(total(cfg, 128, window), format!("--batch {}", optim.batch));
        let given = [
            ("embed", sizes.embed),
            ("hidden", sizes.hidden),
            ("layers", sizes.layers),
            ("dense", sizes.dense),
            ("channels", sizes.channels),
            ("residual", sizes.residual),
            ("skip", sizes.skip),
            ("stacks", sizes.stacks),
            ("attention", sizes.attention),
            ("attention-dim", sizes.attention_dim),
        ];
        for (flag, value) in given {
            let Some(v) = value else { continue };
            let mut sizes = sizes.clone();
            match flag {
                "embed" => sizes.embed = None,
                "hidden" => sizes.hidden = None,
                "layers" => sizes.layers = None,
                "dense" => sizes.dense = None,
                "channels" => sizes.channels = None,
                "residual" => sizes.residual = None,
                "skip" => sizes.skip = None,
                "attention" => (sizes.attention, sizes.attention_dim) = (None, None),
                "attention-dim" => sizes.attention_dim = None,
                _ => sizes.stacks = None,
            }
            if let Ok(c) = ModelConfig::from_name(cfg.name(), cfg.vocab(), window, &sizes) {
                consider(total(&c, optim.batch, window), format!("--{flag} {v}"));
            }
        }
        if let Ok(c) = ModelConfig::from_name(cfg.name(), cfg.vocab(), 128, sizes) {
            consider(total(&c, optim.batch, 128), format!("--window {window}"));
        }
    }
    match best {
        Some((_, flag)) => flag,
        None => format!("--model {} (batch {}, window {window})", cfg.name(), optim.batch),
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::cpu::CpuBackend;

    #[test]
    fn live_init_gives_a_simple_wavenet_that_reads_its_input() {
        let b = CpuBackend::new();
        let (v, t) = (12, 16);
        let seq: Vec<u32> = (0..400).map(|i| ((i * 7 + i / 3) % v) as u32).collect();
        let data = Dataset::new(vec![seq], Vec::new(), t, 1).unwrap();
        let cfg = ModelConfig::from_name("wavenet", v, t, &Sizes { channels: Some(4), layers: Some(3), dense: Some(6), ..Default::default() })
            .unwrap();
        let probe: Vec<usize> = (0..8).map(|i| i * 40).collect();
        let batch = data.batch_of(&probe, crate::data::dataset::Targets::Last);
        let mut ids = b.alloc_ids(8 * t);
        b.write_ids(&mut ids, &batch.x);
        let mut dead_draws = 0;
        for seed in 0..10 {
            // A plain draw may be dead; live_init's never is.
            let mut plain = AnyModel::new(&b, &cfg, 8, t, &mut Rng::new(seed)).unwrap();
            plain.forward(&b, &ids, 8);
            let l = b.read(&plain.logits().buf, 8 * v);
            if l.chunks_exact(v).all(|r| r == &l[..v]) {
                dead_draws += 1;
            }
            let (mut m, _) = live_init(&b, &cfg, 8, t, seed, &data).unwrap();
            m.forward(&b, &ids, 8);
            let l = b.read(&m.logits().buf, 8 * v);
            assert!(l.chunks_exact(v).any(|r| r != &l[..v]), "seed {seed}: output ignores the input");
        }
        assert!(dead_draws > 0, "the test shape should include dead draws, or it proves nothing");
    }
}

