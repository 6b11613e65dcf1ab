//! Pieces of token ids -> training windows and batches.
//!
//! - [`split_by_piece`]: train / validation split by piece (never by window), deterministic for a seed.
//! - [`crate::data::prepare`]: tokenise the pieces (or take them from the token cache), build the
//!   vocabulary and make the two [`Dataset`]s.
//! - [`Dataset`]: windows of `T` ids every `stride` positions. Window `i` starting at `s` in a
//!   piece `ids` has input `x = ids[s .. s+T]` and target `ids[s+T]` (many-to-one,
//!   [`Targets::Last`]) or `y = ids[s+1 .. s+T+1]` (many-to-many, [`Targets::Every`]). A piece
//!   shorter than `T + 1` ids gives no window and is listed in [`Dataset::short_pieces`].
//! - [`Dataset::batches`]: the windows of one epoch in an order shuffled by an [`Rng`] seeded from
//!   `(seed, epoch)` alone, so a resumed run needs only (seed, epoch, batches done) to continue
//!   exactly ([`Batches::skip_batches`]).
//! - Transposition at batch time ([`Transposer`], [`window_shift`]): with `transpose` = N, each
//!   training window of an epoch is moved by a shift in -N..=N drawn from (seed, epoch, window),
//!   its ids mapped through a precomputed id -> id table per shift; a token whose moved version
//!   does not exist (a pitch leaving 0..=127) or is not in the vocabulary becomes `<unk>`. Memory
//!   does not grow with N, and the windows are those of the untransposed pieces (one shift each per
//!   epoch). Validation is never transposed.

use crate::rng::Rng;
use crate::data::token_set::{IdView, TokenSet};
use crate::music::tokens::{Tokenizer, Vocab};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Where a model puts its targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// One target per window: the token after it (the tutorial's many-to-one).
    Last,
    /// One target per position: the token after each input token (many-to-many).
    Every,
}

/// Indices of the pieces on each side of the split, each sorted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
}

/// Split `n` pieces: `round(n x valid_fraction)` of them, chosen by a shuffle seeded with `seed`,
/// go to validation. With a fraction > 0 and at least 2 pieces, each side gets at least one piece.
pub fn split_by_piece(n: usize, valid_fraction: f64, seed: u64) -> Split {
    let fraction = if valid_fraction.is_finite() { valid_fraction.clamp(0.0, 1.0) } else { 0.0 };
    let mut n_valid = (n as f64 * fraction).round() as usize;
    if fraction > 0.0 && n >= 2 {
        n_valid = n_valid.clamp(1, n - 1);
    }
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(seed ^ 0x5EED_0F5B_1170_0000).shuffle(&mut order);
    let mut valid = order[..n_valid].to_vec();
    let mut train = order[n_valid..].to_vec();
    valid.sort_unstable();
    train.sort_unstable();
    Split { train, valid }
}

/// Where a sequence of a [`Dataset`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Index of the piece in the list given to [`prepare`].
    pub piece: usize,
    /// Transposition in semitones of the stored ids: always 0 since transposition happens at batch
    /// time ([`Dataset::shift_of`]); kept for sequences made by hand.
    pub shift: i32,
}

/// Id -> id tables of transposition at batch time: `tables[s + max]` maps a vocabulary id to the id
/// of its token moved by `s` semitones (`<unk>` where the moved token has none or is not in the
/// vocabulary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transposer {
    max: u32,
    tables: Vec<Vec<u32>>,
}

impl Transposer {
    /// Tables for every shift in `-max..=max` over `vocab`, moving tokens with `tokenizer`.
    pub fn new(vocab: &Vocab, tokenizer: &dyn Tokenizer, max: u32) -> Transposer {
        let max = max.min(127);
        let tables = (-(max as i32)..=max as i32)
            .map(|s| {
                (0..vocab.len() as u32)
                    .map(|v| {
                        if v == 0 || s == 0 {
                            return v;
                        }
                        tokenizer.transpose_token(vocab.token(v), s).and_then(|t| vocab.id(&t)).unwrap_or(0)
                    })
                    .collect()
            })
            .collect();
        Transposer { max, tables }
    }

    /// The largest shift N (shifts are -N..=N).
    pub fn max(&self) -> u32 {
        self.max
    }

    /// The table of shift `s` (`|s| <= max`).
    pub fn table(&self, s: i32) -> &[u32] {
        &self.tables[(s + self.max as i32) as usize]
    }
}

/// The shift in `-max..=max` of window `window` in `epoch`: a hash of (seed, epoch, window) alone,
/// so a resumed run draws the same shifts, and nothing per window is stored.
pub fn window_shift(seed: u64, epoch: u64, window: u64, max: u32) -> i32 {
    if max == 0 {
        return 0;
    }
    let key = seed
        ^ epoch.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03)
        ^ window.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ 0x7A05_E5E0_0000_0000;
    let n = 2 * max as usize + 1;
    Rng::new(key).below(n) as i32 - max as i32
}

/// Windows over sequences of ids.
///
/// The ids of all sequences live in one flat array; a window is a view into it, found from its
/// index by a binary search over the sequences' first windows, so nothing is stored per window.
#[derive(Clone, Debug)]
pub struct Dataset {
    window: usize,
    stride: usize,
    /// All sequences' ids, one after the other (shared by the datasets [`Dataset::with_stride`]
    /// makes).
    ids: Arc<Vec<u32>>,
    /// Sequence i is `ids[bounds[i]..bounds[i + 1]]`.
    bounds: Vec<usize>,
    origins: Vec<Origin>,
    /// Index of the first window of sequence i; the last entry is the number of windows.
    first_window: Vec<usize>,
    short: Vec<usize>,
    transposer: Option<Arc<Transposer>>,
    /// The ids are read in place from a mapped token cache file instead of `ids` (which is then
    /// empty): the training side of a run on a cached corpus, so that its memory does not grow
    /// with the corpus ([`prepare_tokens_mapped`]).
    mapped: Option<Arc<MappedIds>>,
}

/// The ids of a [`Dataset`] read from a mapped cache file: sequence `i` is the `bounds[i+1] -
/// bounds[i]` corpus ids from `starts[i]`, each mapped through `table` (corpus id -> vocabulary id).
#[derive(Debug)]
struct MappedIds {
    view: IdView,
    table: Vec<u32>,
    starts: Vec<usize>,
}

/// One batch: `x` is `[rows, T]` row-major; `y` is `[rows]` ([`Targets::Last`]) or `[rows, T]`
/// ([`Targets::Every`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub x: Vec<u32>,
    pub y: Vec<u32>,
    /// Windows in this batch (the last batch of an epoch may be smaller).
    pub rows: usize,
}

impl Dataset {
    /// Windows of `window` ids every `stride` positions over `sequences` (`origins[i]` says where
    /// sequence i came from; pass an empty list for "sequence i is piece i, unshifted").
    pub fn new(sequences: Vec<Vec<u32>>, origins: Vec<Origin>, window: usize, stride: usize) -> Result<Dataset, String> {
        let mut bounds = Vec::with_capacity(sequences.len() + 1);
        bounds.push(0);
        let mut ids = Vec::with_capacity(sequences.iter().map(Vec::len).sum());
        // Each sequence is let go once copied: the ids are not held twice (eval's pieces).
        for s in sequences {
            ids.extend_from_slice(&s);
            bounds.push(ids.len());
        }
        Dataset::from_flat(ids, bounds, origins, window, stride)
    }

    /// [`Dataset::new`] over sequences already laid end to end: sequence i is
    /// `ids[bounds[i]..bounds[i + 1]]` (`bounds` starts at 0, ends at `ids.len()`, never decreases).
    pub fn from_flat(ids: Vec<u32>, bounds: Vec<usize>, origins: Vec<Origin>, window: usize, stride: usize) -> Result<Dataset, String> {
        if bounds.last() != Some(&ids.len()) {
            return Err("sequence bounds must run from 0 to the number of ids".into());
        }
        Dataset::with_store(Arc::new(ids), None, bounds, origins, window, stride)
    }

    /// The same sequences (sharing their ids, not copying them) as windows every `stride`
    /// positions, with sequence i as piece i (no origins, no transposition): the validation
    /// targets of a run are its validation side at stride 1. Not for a mapped dataset.
    pub fn with_stride(&self, stride: usize) -> Result<Dataset, String> {
        assert!(self.mapped.is_none(), "a mapped dataset is not restrided");
        Dataset::with_store(self.ids.clone(), None, self.bounds.clone(), Vec::new(), self.window, stride)
    }

    /// A dataset whose ids stay in the mapped cache file `view`: sequence i is the corpus ids of
    /// piece `pieces[i]` of `tokens` (whose ids `view` holds), mapped through `table`.
    pub fn mapped(tokens: &TokenSet, view: IdView, table: Vec<u32>, pieces: &[usize], origins: Vec<Origin>, window: usize, stride: usize) -> Result<Dataset, String> {
        let mut bounds = Vec::with_capacity(pieces.len() + 1);
        bounds.push(0);
        for &p in pieces {
            bounds.push(bounds.last().copied().unwrap_or(0) + tokens.piece_len(p));
        }
        let starts = pieces.iter().map(|&p| tokens.piece_start(p)).collect();
        let mapped = Some(Arc::new(MappedIds { view, table, starts }));
        Dataset::with_store(Arc::default(), mapped, bounds, origins, window, stride)
    }

    fn with_store(ids: Arc<Vec<u32>>, mapped: Option<Arc<MappedIds>>, bounds: Vec<usize>, origins: Vec<Origin>, window: usize, stride: usize) -> Result<Dataset, String> {
        if window == 0 || stride == 0 {
            return Err(format!("window ({window}) and stride ({stride}) must be at least 1"));
        }
        if bounds.first() != Some(&0) || bounds.windows(2).any(|w| w[0] > w[1]) {
            return Err("sequence bounds must run from 0 to the number of ids".into());
        }
        let n = bounds.len() - 1;
        let origins = if origins.is_empty() { (0..n).map(|piece| Origin { piece, shift: 0 }).collect() } else { origins };
        if origins.len() != n {
            return Err("one origin per sequence".into());
        }
        let mut first_window = Vec::with_capacity(n + 1);
        let mut short = Vec::new();
        let mut total = 0usize;
        for i in 0..n {
            first_window.push(total);
            let len = bounds[i + 1] - bounds[i];
            if len < window + 1 {
                short.push(i);
            } else {
                total += (len - window - 1) / stride + 1;
            }
        }
        first_window.push(total);
        if total > u32::MAX as usize {
            return Err(format!("too many windows for one dataset ({total}; try a larger --stride)"));
        }
        Ok(Dataset { window, stride, ids, bounds, origins, first_window, short, transposer: None, mapped })
    }

    /// Transpose the windows of [`Dataset::batches`] at batch time, each by
    /// [`Dataset::shift_of`], through `transposer`'s tables (whose vocabulary must be this
    /// dataset's).
    pub fn with_transposer(mut self, transposer: Transposer) -> Dataset {
        self.transposer = (transposer.max > 0).then(|| Arc::new(transposer));
        self
    }

    /// The transposition tables, when batches are transposed.
    pub fn transposer(&self) -> Option<&Transposer> {
        self.transposer.as_deref()
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        *self.first_window.last().unwrap_or(&0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Window length T.
    pub fn window(&self) -> usize {
        self.window
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Number of sequences (one per piece).
    pub fn num_sequences(&self) -> usize {
        self.bounds.len() - 1
    }

    /// The ids held in memory (every dataset but a mapped one, [`Dataset::mapped`], whose ids
    /// are read by [`Dataset::batches`], [`Dataset::batch_of`] and [`Dataset::input_vec`]).
    fn owned(&self) -> &[u32] {
        assert!(self.mapped.is_none(), "the ids of a dataset mapped from the token cache are read by batch, not as slices");
        &self.ids
    }

    /// The ids of sequence `i`.
    pub fn sequence(&self, i: usize) -> &[u32] {
        &self.owned()[self.bounds[i]..self.bounds[i + 1]]
    }

    /// The number of ids of sequence `i`.
    pub fn sequence_len(&self, i: usize) -> usize {
        self.bounds[i + 1] - self.bounds[i]
    }

    /// Ids `a..b` of the flat sequence (an owned dataset's `ids[a..b]`).
    fn span(&self, a: usize, b: usize, out: &mut Vec<u32>) {
        match &self.mapped {
            None => out.extend_from_slice(&self.ids[a..b]),
            Some(m) => {
                let seq = self.bounds.partition_point(|&x| x <= a) - 1;
                let base = m.starts[seq] + (a - self.bounds[seq]);
                m.view.extend_mapped(base, base + (b - a), &m.table, out);
            }
        }
    }

    /// Input of window `i` (T ids), owned or mapped alike.
    pub fn input_vec(&self, i: usize) -> Vec<u32> {
        let s = self.at(i);
        let mut out = Vec::with_capacity(self.window);
        self.span(s, s + self.window, &mut out);
        out
    }

    /// The id sequences, one per piece.
    pub fn sequences(&self) -> Vec<&[u32]> {
        (0..self.num_sequences()).map(|i| self.sequence(i)).collect()
    }

    /// Where each sequence came from.
    pub fn origins(&self) -> &[Origin] {
        &self.origins
    }

    /// Indices of the sequences shorter than T + 1, which give no window.
    pub fn short_pieces(&self) -> &[usize] {
        &self.short
    }

    /// Total number of ids in all sequences.
    pub fn total_ids(&self) -> usize {
        *self.bounds.last().unwrap_or(&0)
    }

    /// (sequence, start within the sequence) of window `i`.
    pub fn locate(&self, i: usize) -> (usize, usize) {
        assert!(i < self.len(), "window {i} of {}", self.len());
        let seq = self.first_window.partition_point(|&w| w <= i) - 1;
        (seq, (i - self.first_window[seq]) * self.stride)
    }

    /// Where window `i` starts in the flat id array.
    fn at(&self, i: usize) -> usize {
        let (seq, start) = self.locate(i);
        self.bounds[seq] + start
    }

    /// Input of window `i`: `T` ids.
    pub fn input(&self, i: usize) -> &[u32] {
        let s = self.at(i);
        &self.owned()[s..s + self.window]
    }

    /// Many-to-one target of window `i`: the id after it.
    pub fn target_last(&self, i: usize) -> u32 {
        let s = self.at(i);
        self.owned()[s + self.window]
    }

    /// Many-to-many target of window `i`: the next id at every position.
    pub fn target_every(&self, i: usize) -> &[u32] {
        let s = self.at(i);
        &self.owned()[s + 1..s + self.window + 1]
    }

    /// The shift of window `i` in `epoch` (0 without transposition): [`window_shift`].
    pub fn shift_of(&self, seed: u64, epoch: u64, i: usize) -> i32 {
        self.transposer.as_ref().map_or(0, |t| window_shift(seed, epoch, i as u64, t.max))
    }

    /// Input of window `i` moved by `shift` semitones (`|shift|` at most the transposer's N; 0
    /// without one).
    pub fn input_shifted(&self, i: usize, shift: i32) -> Vec<u32> {
        self.map_shift(self.input(i), shift).collect()
    }

    fn map_shift<'a>(&'a self, ids: &'a [u32], shift: i32) -> impl Iterator<Item = u32> + 'a {
        let table = if shift == 0 {
            None
        } else {
            Some(self.transposer.as_ref().expect("a shift needs a transposer").table(shift))
        };
        ids.iter().map(move |&v| table.map_or(v, |t| t[v as usize]))
    }

    /// The order of the windows in `epoch`: a permutation shuffled by `Rng::new(f(seed, epoch))`.
    pub fn epoch_order(&self, seed: u64, epoch: u64) -> Vec<usize> {
        let order = self.order(seed, epoch);
        (0..order.len()).map(|k| order.get(k)).collect()
    }

    /// [`Dataset::epoch_order`]: up to [`LAZY_ORDER_WINDOWS`] windows, a Fisher-Yates shuffle
    /// held at 4 bytes per window; beyond, a seeded permutation computed window by window
    /// ([`Permutation`]), so that memory does not grow with the corpus.
    fn order(&self, seed: u64, epoch: u64) -> Order {
        let key = seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        if self.len() > LAZY_ORDER_WINDOWS {
            return Order::Lazy(Permutation::new(self.len() as u64, key));
        }
        let mut order: Vec<u32> = (0..self.len() as u32).collect();
        Rng::new(key).shuffle(&mut order);
        Order::Shuffled(order)
    }

    /// Number of batches of `batch` windows in an epoch (a smaller last batch counts unless
    /// `drop_last`).
    pub fn batches_per_epoch(&self, batch: usize, drop_last: bool) -> usize {
        let batch = batch.max(1);
        if drop_last {
            self.len() / batch
        } else {
            self.len().div_ceil(batch)
        }
    }

    /// The batches of one epoch, in [`Dataset::epoch_order`], each window moved by
    /// [`Dataset::shift_of`] when the dataset transposes. With `drop_last` a last batch smaller
    /// than `batch` is left out (for models whose buffers are sized for exactly `batch` rows).
    pub fn batches(&self, batch: usize, targets: Targets, seed: u64, epoch: u64, drop_last: bool) -> Batches<'_> {
        Batches { data: self, order: self.order(seed, epoch), next: 0, batch: batch.max(1), targets, drop_last, seed, epoch }
    }

    /// The windows `indices` as one batch (in that order), untransposed.
    pub fn batch_of(&self, indices: &[usize], targets: Targets) -> Batch {
        self.batch_shifted(indices, targets, |_| 0)
    }

    /// The windows `indices` as one batch, window `i` moved by `shift(i)` semitones.
    pub fn batch_shifted(&self, indices: &[usize], targets: Targets, shift: impl Fn(usize) -> i32) -> Batch {
        let t = self.window;
        let mut x = Vec::with_capacity(indices.len() * t);
        let mut y = Vec::with_capacity(match targets {
            Targets::Last => indices.len(),
            Targets::Every => indices.len() * t,
        });
        let mut read = Vec::with_capacity(t + 1);
        for &i in indices {
            let s = self.at(i);
            let k = shift(i);
            // The window and the id after it: in place, or read from the mapped cache file.
            let ids: &[u32] = if self.mapped.is_none() {
                &self.ids[s..s + t + 1]
            } else {
                read.clear();
                self.span(s, s + t + 1, &mut read);
                &read
            };
            x.extend(self.map_shift(&ids[..t], k));
            match targets {
                Targets::Last => y.extend(self.map_shift(&ids[t..t + 1], k)),
                Targets::Every => y.extend(self.map_shift(&ids[1..t + 1], k)),
            }
        }
        Batch { x, y, rows: indices.len() }
    }
}

/// Datasets of more windows than this draw an epoch's order window by window ([`Permutation`])
/// instead of holding a shuffled array of 4 bytes per window (16 MiB at this size). The built-in
/// corpus (221,288 training windows at the default settings) is far below it.
pub const LAZY_ORDER_WINDOWS: usize = 1 << 22;

/// A seeded permutation of `0..n` computed one index at a time, in O(1) memory: a 4-round
/// Feistel network over the smallest even number of bits that holds `n`, walked until it lands
/// below `n` (cycle walking keeps it a bijection of `0..n`; at most 4 tries on average).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permutation {
    n: u64,
    half: u32,
    keys: [u64; 4],
}

impl Permutation {
    pub fn new(n: u64, seed: u64) -> Permutation {
        let bits = (64 - n.saturating_sub(1).leading_zeros()).max(2);
        let half = bits.div_ceil(2);
        let mut rng = Rng::new(seed ^ 0xFE15_7E1C_0000_0001);
        let keys = [rng.next_u64(), rng.next_u64(), rng.next_u64(), rng.next_u64()];
        Permutation { n, half, keys }
    }

    pub fn len(&self) -> u64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn round(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half) - 1;
        let (mut l, mut r) = (x >> self.half, x & mask);
        for k in self.keys {
            let mut h = (r ^ k).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 29;
            h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            h ^= h >> 32;
            (l, r) = (r, (l ^ h) & mask);
        }
        (l << self.half) | r
    }

    /// The image of `i` (`i < n`).
    pub fn get(&self, i: u64) -> u64 {
        assert!(i < self.n, "index {i} of a permutation of {}", self.n);
        let mut x = i;
        loop {
            x = self.round(x);
            if x < self.n {
                return x;
            }
        }
    }
}

/// An epoch's order of the windows: held (small datasets) or computed on the fly (large ones).
enum Order {
    Shuffled(Vec<u32>),
    Lazy(Permutation),
}

impl Order {
    fn len(&self) -> usize {
        match self {
            Order::Shuffled(v) => v.len(),
            Order::Lazy(p) => p.len() as usize,
        }
    }

    fn get(&self, k: usize) -> usize {
        match self {
            Order::Shuffled(v) => v[k] as usize,
            Order::Lazy(p) => p.get(k as u64) as usize,
        }
    }
}

/// Iterator over one epoch's batches (see [`Dataset::batches`]).
pub struct Batches<'a> {
    data: &'a Dataset,
    order: Order,
    next: usize,
    batch: usize,
    targets: Targets,
    drop_last: bool,
    seed: u64,
    epoch: u64,
}

impl Batches<'_> {
    /// Skip the first `k` batches (to resume an epoch part-way).
    pub fn skip_batches(mut self, k: usize) -> Self {
        self.next = (self.next + k.saturating_mul(self.batch)).min(self.order.len());
        self
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        let remaining = self.order.len() - self.next;
        if remaining == 0 || (self.drop_last && remaining < self.batch) {
            return None;
        }
        let end = self.next + remaining.min(self.batch);
        let picks: Vec<usize> = (self.next..end).map(|k| self.order.get(k)).collect();
        let (data, seed, epoch) = (self.data, self.seed, self.epoch);
        let b = data.batch_shifted(&picks, self.targets, |i| data.shift_of(seed, epoch, i));
        self.next = end;
        Some(b)
    }
}

