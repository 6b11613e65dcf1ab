//! Pieces of token ids -> training windows and batches.
//!
//! - [`split_by_piece`]: train / validation split by piece (never by window), deterministic for a seed.
//! - [`prepare`]: tokenise the pieces (training pieces also transposed by every shift in
//!   `-transpose..=transpose`: the notes are moved and pitches leaving 0..=127 dropped, then
//!   tokenised), build the [`Vocab`] from the training sequences, and make the two [`Dataset`]s.
//! - [`Dataset`]: windows of `T` ids every `stride` positions. Window `i` starting at `s` in a
//!   piece `ids` has input `x = ids[s .. s+T]` and target `ids[s+T]` (many-to-one,
//!   [`Targets::Last`]) or `y = ids[s+1 .. s+T+1]` (many-to-many, [`Targets::Every`]). A piece
//!   shorter than `T + 1` ids gives no window and is listed in [`Dataset::short_pieces`].
//! - [`Dataset::batches`]: the windows of one epoch in an order shuffled by an [`Rng`] seeded from
//!   `(seed, epoch)` alone, so a resumed run needs only (seed, epoch, batches done) to continue
//!   exactly ([`Batches::skip_batches`]).

use crate::corpus::LoadedPiece;
use crate::model::Targets;
use crate::rng::Rng;
use crate::tokens::{transpose, Tokenizer, Vocab};
use serde::{Deserialize, Serialize};

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
    /// Transposition in semitones (0 for the original; always 0 in validation).
    pub shift: i32,
}

/// Windows over sequences of ids.
#[derive(Clone, Debug)]
pub struct Dataset {
    window: usize,
    stride: usize,
    sequences: Vec<Vec<u32>>,
    origins: Vec<Origin>,
    /// (sequence, start) of every window.
    windows: Vec<(u32, u32)>,
    short: Vec<usize>,
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
        if window == 0 || stride == 0 {
            return Err(format!("window ({window}) and stride ({stride}) must be at least 1"));
        }
        let origins = if origins.is_empty() {
            (0..sequences.len()).map(|piece| Origin { piece, shift: 0 }).collect()
        } else {
            origins
        };
        if origins.len() != sequences.len() {
            return Err("one origin per sequence".into());
        }
        if sequences.len() > u32::MAX as usize || sequences.iter().any(|s| s.len() > u32::MAX as usize) {
            return Err("too many ids for one dataset".into());
        }
        let mut windows = Vec::new();
        let mut short = Vec::new();
        for (i, ids) in sequences.iter().enumerate() {
            if ids.len() < window + 1 {
                short.push(i);
                continue;
            }
            let mut s = 0;
            while s + window < ids.len() {
                windows.push((i as u32, s as u32));
                s += stride;
            }
        }
        Ok(Dataset { window, stride, sequences, origins, windows, short })
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Window length T.
    pub fn window(&self) -> usize {
        self.window
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The id sequences, one per piece (and per transposition).
    pub fn sequences(&self) -> &[Vec<u32>] {
        &self.sequences
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
        self.sequences.iter().map(Vec::len).sum()
    }

    fn span(&self, i: usize) -> (&[u32], usize) {
        let (seq, start) = self.windows[i];
        (&self.sequences[seq as usize], start as usize)
    }

    /// Input of window `i`: `T` ids.
    pub fn input(&self, i: usize) -> &[u32] {
        let (ids, s) = self.span(i);
        &ids[s..s + self.window]
    }

    /// Many-to-one target of window `i`: the id after it.
    pub fn target_last(&self, i: usize) -> u32 {
        let (ids, s) = self.span(i);
        ids[s + self.window]
    }

    /// Many-to-many target of window `i`: the next id at every position.
    pub fn target_every(&self, i: usize) -> &[u32] {
        let (ids, s) = self.span(i);
        &ids[s + 1..s + self.window + 1]
    }

    /// The order of the windows in `epoch`: a permutation shuffled by `Rng::new(f(seed, epoch))`.
    pub fn epoch_order(&self, seed: u64, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        Rng::new(seed ^ epoch.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15)).shuffle(&mut order);
        order
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

    /// The batches of one epoch, in [`Dataset::epoch_order`]. With `drop_last` a last batch smaller
    /// than `batch` is left out (for models whose buffers are sized for exactly `batch` rows).
    pub fn batches(&self, batch: usize, targets: Targets, seed: u64, epoch: u64, drop_last: bool) -> Batches<'_> {
        Batches { data: self, order: self.epoch_order(seed, epoch), next: 0, batch: batch.max(1), targets, drop_last }
    }

    /// The windows `indices` as one batch (in that order).
    pub fn batch_of(&self, indices: &[usize], targets: Targets) -> Batch {
        let t = self.window;
        let mut x = Vec::with_capacity(indices.len() * t);
        let mut y = Vec::with_capacity(match targets {
            Targets::Last => indices.len(),
            Targets::Every => indices.len() * t,
        });
        for &i in indices {
            x.extend_from_slice(self.input(i));
            match targets {
                Targets::Last => y.push(self.target_last(i)),
                Targets::Every => y.extend_from_slice(self.target_every(i)),
            }
        }
        Batch { x, y, rows: indices.len() }
    }
}

/// Iterator over one epoch's batches (see [`Dataset::batches`]).
pub struct Batches<'a> {
    data: &'a Dataset,
    order: Vec<usize>,
    next: usize,
    batch: usize,
    targets: Targets,
    drop_last: bool,
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
        let b = self.data.batch_of(&self.order[self.next..end], self.targets);
        self.next = end;
        Some(b)
    }
}

/// How [`prepare`] cuts the data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataConfig {
    /// Window length T.
    pub window: usize,
    pub stride: usize,
    /// Fraction of the pieces held out for validation.
    pub valid_fraction: f64,
    /// Seed of the split.
    pub seed: u64,
    /// Training pieces are also used transposed by every shift in -transpose..=transpose semitones.
    pub transpose: u32,
    /// Tokens seen fewer times in training become `<unk>`.
    pub min_count: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig { window: 128, stride: 1, valid_fraction: 0.1, seed: 0, transpose: 0, min_count: 1 }
    }
}

/// The result of [`prepare`].
#[derive(Clone, Debug)]
pub struct Prepared {
    pub vocab: Vocab,
    pub split: Split,
    pub train: Dataset,
    pub valid: Dataset,
    /// Names of the pieces (as given), by index.
    pub names: Vec<String>,
}

impl Prepared {
    /// One line per piece too short to give a window: `NAME: N tokens < T+1 (train|valid)`.
    pub fn short_piece_report(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (side, ds) in [("train", &self.train), ("valid", &self.valid)] {
            for &i in ds.short_pieces() {
                let o = ds.origins()[i];
                if o.shift != 0 {
                    continue; // reported once, for the original
                }
                out.push(format!(
                    "{}: {} tokens < window + 1 = {} ({side}, skipped)",
                    self.names[o.piece],
                    ds.sequences()[i].len(),
                    ds.window() + 1
                ));
            }
        }
        out
    }
}

/// Tokenise `pieces`, split them, build the vocabulary from the training side (or use `vocab`,
/// e.g. the one stored in a checkpoint being resumed) and make the windows. Errors when no
/// training window is left.
pub fn prepare(
    pieces: &[LoadedPiece],
    tokenizer: &dyn Tokenizer,
    cfg: &DataConfig,
    vocab: Option<Vocab>,
) -> Result<Prepared, String> {
    let split = split_by_piece(pieces.len(), cfg.valid_fraction, cfg.seed);
    let shift = cfg.transpose.min(127) as i32;

    let mut train_tokens = Vec::new();
    let mut train_origins = Vec::new();
    for &p in &split.train {
        for s in -shift..=shift {
            let notes = if s == 0 { pieces[p].piece.notes.clone() } else { transpose(&pieces[p].piece.notes, s) };
            train_tokens.push(tokenizer.encode(&notes));
            train_origins.push(Origin { piece: p, shift: s });
        }
    }
    let valid_tokens: Vec<Vec<String>> = split.valid.iter().map(|&p| tokenizer.encode(&pieces[p].piece.notes)).collect();
    let valid_origins = split.valid.iter().map(|&piece| Origin { piece, shift: 0 }).collect();

    let vocab = vocab.unwrap_or_else(|| Vocab::build(&train_tokens, cfg.min_count));
    let ids = |seqs: &[Vec<String>]| seqs.iter().map(|t| vocab.encode(t)).collect::<Vec<_>>();
    let train = Dataset::new(ids(&train_tokens), train_origins, cfg.window, cfg.stride)?;
    let valid = Dataset::new(ids(&valid_tokens), valid_origins, cfg.window, cfg.stride)?;
    if train.is_empty() {
        return Err(format!(
            "no training window: {} training pieces, none has more than {} tokens (try a smaller window)",
            split.train.len(),
            cfg.window
        ));
    }
    let names = pieces.iter().map(|p| p.name.clone()).collect();
    Ok(Prepared { vocab, split, train, valid, names })
}
