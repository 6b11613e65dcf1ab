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

/// Pieces composed together at most (`generate --count N` runs them in batches of this many):
/// a batch shares every read of the weights; 64 rows keep the products' blocks full.
pub const BATCH: usize = 64;

/// The seed of piece `i` (from 0) of a `--count`: `seed + i`, so piece `i` is the piece that
/// `--seed (seed + i)` composes alone (token and piano-roll checkpoints alike).
pub fn piece_seed(seed: u64, i: usize) -> u64 {
    seed.wrapping_add(i as u64)
}

/// Upper bound on generated tokens, whatever the length asked.
pub const MAX_TOKENS: usize = 100_000;

/// A token generator over a loaded model: `batch` pieces at once, each row of every product
/// computed alone ([`Backend::set_rows_alone`], on for the generator's life), so that a piece's
/// logits do not depend on the pieces beside it: a batch of N pieces equals the same N pieces
/// generated one by one, bit for bit on the CPU.
pub struct Generator<'a, B: Backend> {
    b: &'a B,
    model: AnyModel<B>,
    mode: Mode,
    window: usize,
    vocab_len: usize,
    /// Pieces generated together.
    batch: usize,
    ids: B::Ids,
    lstm_state: Option<LstmState<B>>,
    /// One fast-WaveNet stepper per piece (its one-step convs run one window of one step).
    gated: Vec<GatedStepper>,
    /// The Transformer's key/value caches (incremental mode).
    cache: Option<TransformerCache<B>>,
    /// Logits `[batch, V]` of the next tokens once primed (incremental mode).
    pending: Option<Vec<f32>>,
    /// The copy mixture mixed into every next-token distribution ([`crate::model::copy`]).
    copy: Option<CopyMix>,
}

/// Windows of `window` tokens the model's arena must hold to generate `batch` pieces in `mode`:
/// the batch for the LSTMs' steps and the sliding window, as many windows as hold `batch` rows
/// for the Transformer's steps (one token per piece), one for the fast WaveNet (its steppers
/// copy the weights).
pub fn arena_windows(cfg: &ModelConfig, mode: Mode, batch: usize, window: usize) -> usize {
    match (mode, cfg) {
        (Mode::Incremental, ModelConfig::Transformer(_)) => batch.div_ceil(window.max(1)),
        (Mode::Incremental, ModelConfig::WavenetGated(_)) => 1,
        _ => batch,
    }
    .max(1)
}

impl<'a, B: Backend> Generator<'a, B> {
    /// A generator of one piece for `loaded`'s model on `b` (see [`Generator::batched`]).
    pub fn new(b: &'a B, loaded: &Loaded, mode: Mode, origin: &Path) -> Result<Self, String> {
        Self::batched(b, loaded, mode, origin, 1)
    }

    /// A generator of `batch` pieces at once for `loaded`'s model on `b`; `window` is the context
    /// length of sliding-window mode (the training window).
    pub fn batched(b: &'a B, loaded: &Loaded, mode: Mode, origin: &Path, batch: usize) -> Result<Self, String> {
        let window = loaded.meta.data.data.window;
        let resolved = mode.resolve(&loaded.meta.model)?;
        let model = loaded.model(b, arena_windows(&loaded.meta.model, resolved, batch, window), window, origin)?;
        let mut gen = Self::from_model(b, model, &loaded.meta.model, mode, window, batch)?;
        gen.copy = loaded.meta.copy.clone();
        Ok(gen)
    }

    /// Use `copy` (`None`: the model alone) instead of the checkpoint's copy mixture.
    pub fn set_copy(&mut self, copy: Option<CopyMix>) {
        self.copy = copy;
    }

    /// What the next token of each piece is drawn from (`[batch, V]`): the log-probabilities of
    /// the model's distribution after its history mixed with the copy distribution of its last
    /// window, or the model's logits without a copy mixture.
    pub fn next_scores_all(&mut self, histories: &[&[u32]]) -> Vec<f32> {
        let mut scores = self.next_logits_all(histories);
        if let Some(mix) = &self.copy {
            let v = self.vocab_len;
            for (row, history) in scores.chunks_exact_mut(v).zip(histories) {
                let mixed = mix.mix_logits(&history[history.len().saturating_sub(self.window)..], row);
                row.copy_from_slice(&mixed);
            }
        }
        scores
    }

    /// A generator over an already built `model` (made from `cfg` with an arena for at least
    /// [`arena_windows`] windows of `window` tokens), e.g. a freshly initialised one for benchmarks.
    pub fn from_model(b: &'a B, model: AnyModel<B>, cfg: &ModelConfig, mode: Mode, window: usize, batch: usize) -> Result<Self, String> {
        let mode = mode.resolve(cfg)?;
        assert!(batch >= 1, "a generator of no piece");
        if let (Mode::Incremental, ModelConfig::WavenetGated(c)) = (mode, cfg) {
            // The fast WaveNet keeps (K-1) x dilation past inputs per block: 2^(layers-1) grows fast.
            let fp = crate::run::verify::Footprint::of(cfg, 1, window, true);
            let queues = crate::run::verify::Footprint { params: 0, activations: 0, queues: fp.queues * batch as u128, ..fp };
            let culprit = format!("wavenet-gated with {} layers per stack (one-step generation)", c.layers);
            crate::run::verify::check_footprint(&queues, crate::run::verify::available_memory(), None, &culprit)
                .map_err(|e| format!("{e}; --sliding-window needs no queues"))?;
        }
        let vocab_len = model.vocab();
        b.set_rows_alone(true);
        Ok(Generator {
            b,
            model,
            mode,
            window,
            vocab_len,
            batch,
            ids: b.alloc_ids(batch * window),
            lstm_state: None,
            gated: Vec::new(),
            cache: None,
            pending: None,
            copy: None,
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Feed each piece its prime (all of one length); afterwards [`Generator::next_logits_all`]
    /// gives the first new tokens' logits.
    pub fn prime_all(&mut self, primes: &[Vec<u32>]) -> Result<(), String> {
        assert_eq!(primes.len(), self.batch, "one prime per piece");
        let len = primes[0].len();
        if len == 0 {
            return Err("the prime is empty".into());
        }
        assert!(primes.iter().all(|p| p.len() == len), "the primes of one batch have one length");
        if self.mode == Mode::SlidingWindow && len < self.window {
            return Err(format!("the prime has {len} tokens; sliding-window generation needs a full window of {}", self.window));
        }
        if self.mode == Mode::Incremental {
            match &mut self.model {
                AnyModel::Lstm(m) => self.lstm_state = Some(m.zero_state(self.b, self.batch)),
                AnyModel::WavenetGated(m) => self.gated = (0..self.batch).map(|_| GatedStepper::new(self.b, m)).collect(),
                AnyModel::Transformer(m) => self.cache = Some(TransformerCache::new(self.b, m, self.batch)),
                AnyModel::Wavenet(_) => unreachable!("resolved in Generator::new"),
            }
            for t in 0..len {
                let ids: Vec<u32> = primes.iter().map(|p| p[t]).collect();
                self.push_all(&ids)?;
            }
        }
        Ok(())
    }

    /// [`Generator::prime_all`] of a generator of one piece.
    pub fn prime(&mut self, prime: &[u32]) -> Result<(), String> {
        self.prime_all(&[prime.to_vec()])
    }

    /// Logits `[batch, V]` of the tokens after `histories` (one per piece, all of one length,
    /// whose tails were fed by [`Generator::prime_all`] and [`Generator::push_all`]).
    pub fn next_logits_all(&mut self, histories: &[&[u32]]) -> Vec<f32> {
        assert_eq!(histories.len(), self.batch, "one history per piece");
        match self.mode {
            Mode::Incremental => self.pending.clone().expect("primed"),
            _ => {
                let t = self.window;
                let x: Vec<u32> = histories.iter().flat_map(|h| h[h.len() - t..].iter().copied()).collect();
                self.b.write_ids(&mut self.ids, &x);
                self.model.forward(self.b, &self.ids, self.batch);
                let v = self.vocab_len;
                let (rows, last) = match self.model.targets() {
                    Targets::Last => (1, 0),
                    Targets::Every => (t, t - 1),
                };
                let all = self.b.read(&self.model.logits().buf, self.batch * rows * v);
                all.chunks_exact(rows * v).flat_map(|item| item[last * v..(last + 1) * v].iter().copied()).collect()
            }
        }
    }

    /// [`Generator::next_logits_all`] of a generator of one piece.
    pub fn next_logits(&mut self, history: &[u32]) -> Vec<f32> {
        self.next_logits_all(&[history])
    }

    /// Tell the generator the token chosen for each piece (in incremental mode, this runs the
    /// step). A piece that has ended still takes a token (any in the vocabulary): its row is
    /// computed alone, so it changes nothing for the others.
    pub fn push_all(&mut self, ids: &[u32]) -> Result<(), String> {
        assert_eq!(ids.len(), self.batch, "one token per piece");
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_len) {
            return Err(format!("token id {id} outside the vocabulary of {}", self.vocab_len));
        }
        if self.mode == Mode::Incremental {
            let n = self.batch * self.vocab_len;
            let logits = match (&mut self.model, &mut self.lstm_state) {
                (AnyModel::Lstm(m), Some(state)) => {
                    self.b.write_ids(&mut self.ids, ids);
                    let out = m.step(self.b, &self.ids, state);
                    self.b.read(&out.buf, n)
                }
                (AnyModel::WavenetGated(_), _) => {
                    let mut all = Vec::with_capacity(n);
                    for (stepper, &id) in self.gated.iter_mut().zip(ids) {
                        all.extend(stepper.step(id)?);
                    }
                    all
                }
                (AnyModel::Transformer(m), _) => {
                    let cache = self.cache.as_mut().expect("the cache is made by prime");
                    self.b.write_ids(&mut self.ids, ids);
                    m.step(self.b, &self.ids, cache);
                    self.b.read(&m.logits().buf, n)
                }
                _ => unreachable!("the incremental state is made by prime"),
            };
            self.pending = Some(logits);
        }
        Ok(())
    }

    /// [`Generator::push_all`] of a generator of one piece.
    pub fn push(&mut self, id: u32) -> Result<(), String> {
        self.push_all(&[id])
    }
}

impl<B: Backend> Drop for Generator<'_, B> {
    fn drop(&mut self) {
        self.b.set_rows_alone(false);
    }
}

/// Generate after `prime` until `length` is reached with a generator of one piece; returns the
/// new ids only.
pub fn generate_ids<B: Backend>(
    gen: &mut Generator<'_, B>,
    prime: &[u32],
    length: Length,
    opts: &SampleOptions,
    rng: &mut Rng,
    seconds_of: &dyn Fn(&[u32]) -> f64,
) -> Result<Vec<u32>, String> {
    let mut pieces = generate_batch(gen, &[prime.to_vec()], length, opts, std::slice::from_mut(rng), seconds_of)?;
    Ok(pieces.pop().expect("one piece"))
}

/// One piece of a batch being generated: its tokens and where its length check stands.
struct Piece {
    history: Vec<u32>,
    out: Vec<u32>,
    /// The longest prefix of `out` known to last less than the seconds asked.
    checked: usize,
    next_check: usize,
    done: bool,
}

impl Piece {
    /// Whether the piece has reached `length` (and, for a length in seconds, cut it to the
    /// shortest prefix that lasts it).
    ///
    /// A length in seconds: decoding the piece after every token would be quadratic, so it is
    /// decoded at lengths that grow geometrically (each check costs the length, all of them
    /// together a few times the final length); once one lasts `s`, the shortest prefix that does
    /// is found by bisection (a prefix's duration never decreases as it grows). The tokens drawn
    /// do not depend on when the checks happen, so the piece is the one a check per token gives.
    fn reached(&mut self, length: Length, seconds_of: &dyn Fn(&[u32]) -> f64) -> bool {
        let out = &mut self.out;
        let done = match length {
            Length::Tokens(n) => out.len() >= n,
            Length::Seconds(s) if out.len() >= self.next_check || out.len() >= MAX_TOKENS => {
                if seconds_of(out) >= s {
                    let (mut lo, mut hi) = (self.checked, out.len());
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
                    self.checked = out.len();
                    self.next_check = (out.len() + out.len() / 4).max(out.len() + 8);
                    false
                }
            }
            Length::Seconds(_) => false,
        };
        if done {
            return true;
        }
        if out.len() >= MAX_TOKENS {
            if let Length::Seconds(s) = length {
                eprintln!(
                    "note: stopped at {MAX_TOKENS} tokens (the most generated in one piece), which last {:.1} s of the {s} s asked",
                    seconds_of(out)
                );
            }
            return true;
        }
        false
    }
}

/// Generate after each of `primes` (all of one length, one per piece of `gen`'s batch) until
/// `length` is reached, piece `i` drawing from `rngs[i]`; returns the new ids of each piece. A
/// piece that reaches its length leaves the batch (nothing more is drawn for it) while the
/// others go on. Each piece is the one [`generate_ids`] gives alone with the same prime and
/// stream: every row is computed alone, and each piece draws only from its own stream.
pub fn generate_batch<B: Backend>(
    gen: &mut Generator<'_, B>,
    primes: &[Vec<u32>],
    length: Length,
    opts: &SampleOptions,
    rngs: &mut [Rng],
    seconds_of: &dyn Fn(&[u32]) -> f64,
) -> Result<Vec<Vec<u32>>, String> {
    if let Length::Tokens(n) = length {
        if n > MAX_TOKENS {
            return Err(format!("--length {n}: at most {MAX_TOKENS} tokens are generated in one piece"));
        }
    }
    assert_eq!(rngs.len(), primes.len(), "one sampling stream per piece");
    gen.prime_all(primes)?;
    let v = gen.vocab_len;
    let mut pieces: Vec<Piece> =
        primes.iter().map(|p| Piece { history: p.clone(), out: Vec::new(), checked: 0, next_check: 8, done: false }).collect();
    loop {
        for piece in pieces.iter_mut().filter(|p| !p.done) {
            piece.done = piece.reached(length, seconds_of);
        }
        if pieces.iter().all(|p| p.done) {
            break;
        }
        let histories: Vec<&[u32]> = pieces.iter().map(|p| p.history.as_slice()).collect();
        let scores = gen.next_scores_all(&histories);
        let mut ids = Vec::with_capacity(pieces.len());
        for ((piece, row), rng) in pieces.iter_mut().zip(scores.chunks_exact(v)).zip(rngs.iter_mut()) {
            if piece.done {
                // Any token keeps its row going; nothing is drawn from its stream.
                ids.push(*piece.history.last().expect("primed"));
                continue;
            }
            let id = sample(row, opts, rng) as u32;
            piece.history.push(id);
            piece.out.push(id);
            ids.push(id);
        }
        gen.push_all(&ids)?;
    }
    Ok(pieces.into_iter().map(|p| p.out).collect())
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
