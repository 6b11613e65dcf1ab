//! `etude generate`: prime, then one token at a time, then MIDI.
//!
//! Two ways to get the next token's logits:
//! * **incremental** — the LSTMs carry their state (h, c) per layer, the gated WaveNet keeps
//!   each block's past inputs in queues (fast WaveNet), so a token costs one step; this equals a
//!   full forward pass over the whole history generated so far. The Transformer keeps every block's
//!   keys and values of the last `window` positions in a ring (a token costs O(window) per block):
//!   inside the first window that is its full forward, past it each query sees the last `window`
//!   positions (see [`crate::engine::RelDecode`]).
//! * **sliding window** (the tutorial's way) — rerun the model on the last `T` tokens for every new
//!   token. The only way for the simple WaveNet, whose dense head reads exactly one window.
//!
//! Sampling is [`crate::generate::sample`]: greedy (the tutorial's argmax) or temperature / top-k / top-p.

pub mod sample;

use crate::model::copy::CopyMix;
use crate::engine::Backend;
use crate::music::midi::{write_midi, Note, WriteOptions};
use crate::model::any::{AnyModel, ModelConfig};
use crate::model::lstm::LstmState;
use crate::model::transformer::TransformerCache;
use crate::model::wavenet_gated::GatedStepper;
use crate::data::dataset::Targets;
use crate::model::Model;
use crate::rng::Rng;
use crate::generate::sample::{sample, SampleOptions};
use crate::music::tokens::{Tokenizer, Vocab, UNK};
use crate::run::Loaded;
use std::path::Path;

/// How the logits of the next token are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Incremental where the model has it (LSTMs), sliding window otherwise.
    Auto,
    /// One step per token with carried state; an error for models without it.
    Incremental,
    /// Rerun the last `T` tokens for every new token (the tutorial's way).
    SlidingWindow,
}

impl Mode {
    /// The mode actually used for `cfg`.
    ///
    /// A gated WaveNet whose receptive field is longer than its training window has no exact
    /// incremental mode: in training, the taps of its widest dilations only ever read the zeros
    /// before the window, so one step per token (which keeps the whole receptive field of real
    /// tokens) would feed them context they never learned from. It generates with the sliding
    /// window, which reads the last position exactly as training did. So does a gated WaveNet with
    /// attention heads: its one-step form is not written (the attention over the window would need
    /// the keys and values of every past position).
    pub fn resolve(self, cfg: &ModelConfig) -> Result<Mode, String> {
        let has_incremental = match cfg {
            ModelConfig::Lstm(_) | ModelConfig::Transformer(_) => true,
            ModelConfig::WavenetGated(c) => c.receptive_field() <= c.window && c.attention == 0,
            ModelConfig::Wavenet(_) => false,
        };
        match self {
            Mode::Auto if has_incremental => Ok(Mode::Incremental),
            Mode::Auto => Ok(Mode::SlidingWindow),
            Mode::Incremental if !has_incremental => Err(match cfg {
                ModelConfig::WavenetGated(c) if c.attention > 0 => format!(
                    "--incremental: the wavenet-gated model with attention ({} heads) has no incremental generation; \
                     use --sliding-window",
                    c.attention
                ),
                ModelConfig::WavenetGated(c) => format!(
                    "--incremental: the wavenet-gated model's receptive field ({} tokens) is longer than its training \
                     window ({} tokens), so one step per token would feed its widest dilations context they never \
                     saw in training; use --sliding-window (or train with a receptive field of at most the window: fewer \
                     --layers or --stacks)",
                    c.receptive_field(),
                    c.window,
                ),
                _ => format!("the {} model has no incremental generation; use --sliding-window", cfg.name()),
            }),
            m => Ok(m),
        }
    }
}

/// Whether `generate` (and a run's `sample.mid`) mixes the checkpoint's copy mixture into every
/// draw when neither `--copy` nor `--no-copy` is given: yes for every model but the transformer.
/// The transformer's attention copies by itself; with the mixture on top, 20 pieces of 60 s from
/// the default run loop (pitch-class entropy below the built-in corpus's range in 12 of 20,
/// 65% of 8-note pitch n-grams recurring where the corpus's pieces average 45%); without it all 20
/// fall inside the corpus's range of pitch-class entropy, though they seldom repeat a figure (1%)
/// (docs/models-and-recipes.md, "The default recipe"). The mixture still scores `eval`'s figures
/// (it lowers the NLL).
pub fn copies_by_default(cfg: &ModelConfig) -> bool {
    !matches!(cfg, ModelConfig::Transformer(_))
}

/// How long a piece is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Length {
    Tokens(usize),
    /// Until the decoded notes span this many seconds (at the output tempo).
    Seconds(f64),
}

/// Upper bound on generated tokens, whatever the length asked.
pub const MAX_TOKENS: usize = 100_000;

/// A token generator over a loaded model, batch 1.
pub struct Generator<'a, B: Backend> {
    b: &'a B,
    model: AnyModel<B>,
    mode: Mode,
    window: usize,
    vocab_len: usize,
    ids: B::Ids,
    lstm_state: Option<LstmState<B>>,
    gated: Option<GatedStepper>,
    /// The Transformer's key/value caches (incremental mode).
    cache: Option<TransformerCache<B>>,
    /// Logits of the next token once primed (incremental mode).
    pending: Option<Vec<f32>>,
    /// The copy mixture mixed into every next-token distribution ([`crate::model::copy`]).
    copy: Option<CopyMix>,
}

impl<'a, B: Backend> Generator<'a, B> {
    /// A generator for `loaded`'s model on `b`; `window` is the context length of sliding-window
    /// mode (the training window).
    pub fn new(b: &'a B, loaded: &Loaded, mode: Mode, origin: &Path) -> Result<Self, String> {
        let window = loaded.meta.data.data.window;
        let model = loaded.model(b, 1, window, origin)?;
        let mut gen = Self::from_model(b, model, &loaded.meta.model, mode, window)?;
        gen.copy = loaded.meta.copy.clone();
        Ok(gen)
    }

    /// Use `copy` (`None`: the model alone) instead of the checkpoint's copy mixture.
    pub fn set_copy(&mut self, copy: Option<CopyMix>) {
        self.copy = copy;
    }

    /// What the next token is drawn from: the log-probabilities of the model's distribution after
    /// `history` mixed with the copy distribution of its last window, or the model's logits
    /// without a copy mixture.
    pub fn next_scores(&mut self, history: &[u32]) -> Vec<f32> {
        let logits = self.next_logits(history);
        match &self.copy {
            Some(mix) => mix.mix_logits(&history[history.len().saturating_sub(self.window)..], &logits),
            None => logits,
        }
    }

    /// A generator over an already built `model` (made from `cfg` with an arena for at least one
    /// window of `window` tokens), e.g. a freshly initialised one for benchmarks.
    pub fn from_model(b: &'a B, model: AnyModel<B>, cfg: &ModelConfig, mode: Mode, window: usize) -> Result<Self, String> {
        let mode = mode.resolve(cfg)?;
        if let (Mode::Incremental, ModelConfig::WavenetGated(c)) = (mode, cfg) {
            // The fast WaveNet keeps (K-1) x dilation past inputs per block: 2^(layers-1) grows fast.
            let fp = crate::run::verify::Footprint::of(cfg, 1, window, true);
            let queues = crate::run::verify::Footprint { params: 0, activations: 0, ..fp };
            let culprit = format!("wavenet-gated with {} layers per stack (one-step generation)", c.layers);
            crate::run::verify::check_footprint(&queues, crate::run::verify::available_memory(), None, &culprit)
                .map_err(|e| format!("{e}; --sliding-window needs no queues"))?;
        }
        let vocab_len = model.vocab();
        Ok(Generator { b, model, mode, window, vocab_len, ids: b.alloc_ids(window), lstm_state: None, gated: None, cache: None, pending: None, copy: None })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Feed the prime; afterwards [`Generator::next_logits`] gives the first new token's logits.
    pub fn prime(&mut self, prime: &[u32]) -> Result<(), String> {
        if prime.is_empty() {
            return Err("the prime is empty".into());
        }
        if self.mode == Mode::SlidingWindow && prime.len() < self.window {
            return Err(format!(
                "the prime has {} tokens; sliding-window generation needs a full window of {}",
                prime.len(),
                self.window
            ));
        }
        if self.mode == Mode::Incremental {
            match &mut self.model {
                AnyModel::Lstm(m) => self.lstm_state = Some(m.zero_state(self.b, 1)),
                AnyModel::WavenetGated(m) => self.gated = Some(GatedStepper::new(self.b, m)),
                AnyModel::Transformer(m) => self.cache = Some(TransformerCache::new(self.b, m, 1)),
                AnyModel::Wavenet(_) => unreachable!("resolved in Generator::new"),
            }
            for &id in prime {
                self.push(id)?;
            }
        }
        Ok(())
    }

    /// Logits of the token after `history` (whose tail was fed by [`Generator::prime`] and
    /// [`Generator::push`]).
    pub fn next_logits(&mut self, history: &[u32]) -> Vec<f32> {
        match self.mode {
            Mode::Incremental => self.pending.clone().expect("primed"),
            _ => {
                let t = self.window;
                let x = &history[history.len() - t..];
                self.b.write_ids(&mut self.ids, x);
                self.model.forward(self.b, &self.ids, 1);
                let v = self.vocab_len;
                let row = match self.model.targets() {
                    Targets::Last => 0,
                    Targets::Every => t - 1,
                };
                let all = self.b.read(&self.model.logits().buf, (row + 1) * v);
                all[row * v..].to_vec()
            }
        }
    }

    /// Tell the generator the token that was chosen (in incremental mode, this runs the step).
    pub fn push(&mut self, id: u32) -> Result<(), String> {
        if id as usize >= self.vocab_len {
            return Err(format!("token id {id} outside the vocabulary of {}", self.vocab_len));
        }
        if self.mode == Mode::Incremental {
            let logits = match (&mut self.model, &mut self.lstm_state, &mut self.gated) {
                (AnyModel::Lstm(m), Some(state), _) => {
                    self.b.write_ids(&mut self.ids, &[id]);
                    let out = m.step(self.b, &self.ids, state);
                    self.b.read(&out.buf, self.vocab_len)
                }
                (AnyModel::WavenetGated(_), _, Some(stepper)) => stepper.step(id)?,
                (AnyModel::Transformer(m), _, _) => {
                    let cache = self.cache.as_mut().expect("the cache is made by prime");
                    self.b.write_ids(&mut self.ids, &[id]);
                    m.step(self.b, &self.ids, cache);
                    self.b.read(&m.logits().buf, self.vocab_len)
                }
                _ => unreachable!("the incremental state is made by prime"),
            };
            self.pending = Some(logits);
        }
        Ok(())
    }
}

/// Generate after `prime` until `length` is reached; returns the new ids only.
pub fn generate_ids<B: Backend>(
    gen: &mut Generator<'_, B>,
    prime: &[u32],
    length: Length,
    opts: &SampleOptions,
    rng: &mut Rng,
    seconds_of: &dyn Fn(&[u32]) -> f64,
) -> Result<Vec<u32>, String> {
    if let Length::Tokens(n) = length {
        if n > MAX_TOKENS {
            return Err(format!("--length {n}: at most {MAX_TOKENS} tokens are generated in one piece"));
        }
    }
    gen.prime(prime)?;
    let mut history = prime.to_vec();
    let mut out = Vec::new();
    // A length in seconds: decoding the piece after every token would be quadratic, so it is
    // decoded at lengths that grow geometrically (each check costs the length, all of them
    // together a few times the final length); once one lasts `s`, the shortest prefix that does
    // is found by bisection (a prefix's duration never decreases as it grows). The tokens drawn
    // do not depend on when the checks happen, so the piece is the one a check per token gives.
    let mut checked = 0; // the longest prefix known to last less than `s`
    let mut next_check = 8;
    loop {
        let done = match length {
            Length::Tokens(n) => out.len() >= n,
            Length::Seconds(s) if out.len() >= next_check || out.len() >= MAX_TOKENS => {
                if seconds_of(&out) >= s {
                    let (mut lo, mut hi) = (checked, out.len());
                    while hi - lo > 1 {
                        let mid = lo + (hi - lo) / 2;
                        if seconds_of(&out[..mid]) >= s {
                            hi = mid;
                        } else {
                            lo = mid;
                        }
                    }
                    out.truncate(hi);
                    true
                } else {
                    checked = out.len();
                    next_check = (out.len() + out.len() / 4).max(out.len() + 8);
                    false
                }
            }
            Length::Seconds(_) => false,
        };
        if done {
            break;
        }
        if out.len() >= MAX_TOKENS {
            if let Length::Seconds(s) = length {
                eprintln!(
                    "note: stopped at {MAX_TOKENS} tokens (the most generated in one piece), which last {:.1} s of the {s} s asked",
                    seconds_of(&out)
                );
            }
            break;
        }
        let scores = gen.next_scores(&history);
        let id = sample(&scores, opts, rng) as u32;
        history.push(id);
        out.push(id);
        gen.push(id)?;
    }
    Ok(out)
}

/// Encode a prime's tokens, refusing tokens the vocabulary does not know.
pub fn encode_prime(tokens: &[String], vocab: &Vocab, origin: &str) -> Result<Vec<u32>, String> {
    let unknown: Vec<&str> = tokens.iter().filter(|t| vocab.id(t).is_none()).map(String::as_str).collect();
    if !unknown.is_empty() {
        let mut shown: Vec<&str> = unknown.clone();
        shown.sort_unstable();
        shown.dedup();
        let list = shown.iter().take(8).copied().collect::<Vec<_>>().join(", ");
        return Err(format!(
            "{origin}: {} of its {} tokens are not in the model's vocabulary ({list}{})",
            unknown.len(),
            tokens.len(),
            if shown.len() > 8 { ", ..." } else { "" }
        ));
    }
    Ok(vocab.encode(tokens))
}

/// Ids -> tokens -> notes -> MIDI bytes.
pub fn to_midi(ids: &[u32], vocab: &Vocab, tokenizer: &dyn Tokenizer, bpm: f64) -> (Vec<Note>, Vec<u8>) {
    let tokens: Vec<String> = vocab.decode(ids).into_iter().filter(|t| t != UNK).collect();
    let notes = tokenizer.decode(&tokens);
    let bytes = write_midi(&notes, &WriteOptions { bpm, ..WriteOptions::default() });
    (notes, bytes)
}

/// The notes a MIDI file written by [`write_midi`] holds, read back: what to report of it (writing
/// drops a note of a pitch that starts twice on one tick, so the decoded notes can be one more).
pub fn written_notes(bytes: &[u8]) -> Vec<Note> {
    crate::music::midi::read_midi(bytes, &crate::music::midi::ReadOptions::default()).map(|p| p.notes).unwrap_or_default()
}
