//! From tokenised pieces to the two datasets of a run: [`prepare`] / [`prepare_tokens`] tokenise
//! the pieces (or take them from the token cache, [`crate::data::token_cache`]), drop duplicate
//! pieces ([`unique_pieces`]), split by piece ([`split_by_piece`]), build the [`Vocab`] from the
//! training pieces (counted at every shift in `-transpose..=transpose` when transposing), and make
//! the training and validation [`Dataset`]s.

use crate::data::corpus::LoadedPiece;
use crate::data::dataset::{split_by_piece, Dataset, Origin, Split, Transposer};
use crate::data::token_set::TokenSet;
use crate::music::tokens::{Tokenizer, Vocab};
use serde::{Deserialize, Serialize};

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
    /// Every training window is moved by a shift in -transpose..=transpose semitones drawn per
    /// (seed, epoch, window) at batch time.
    pub transpose: u32,
    /// Tokens seen fewer times in training become `<unk>`.
    pub min_count: u64,
    /// Validation targets scored every epoch (and for `best.safetensors`, the copy mixture and
    /// the baselines at the end): a seeded sample of this many, spread over the validation pieces
    /// ([`crate::eval::targets::sample_targets`]); `None` = every target. A run stores it only when its
    /// validation pieces hold more targets than that (so runs that score all store nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_targets: Option<usize>,
    /// Keep pieces whose tokens equal an earlier piece's (false: each is kept once, so that
    /// copies cannot fall on both sides of the split; [`unique_pieces`]).
    #[serde(skip_serializing_if = "is_false")]
    pub keep_duplicates: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            window: 128,
            stride: 1,
            valid_fraction: 0.1,
            seed: 0,
            transpose: 0,
            min_count: 1,
            valid_targets: None,
            keep_duplicates: false,
        }
    }
}

/// The pieces of `tokens` to use, in corpus order: each distinct sequence of ids once (its first
/// occurrence; a later piece whose ids equal it is a duplicate). Hashes every piece's ids once,
/// comparing the ids only where two hashes agree.
pub fn unique_pieces(tokens: &TokenSet) -> Vec<usize> {
    use std::hash::{Hash, Hasher};
    let identity: Vec<u32> = (0..tokens.vocab().len() as u32).collect();
    let mut seen: std::collections::HashMap<u64, Vec<usize>> = std::collections::HashMap::new();
    let mut kept = Vec::with_capacity(tokens.len());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..tokens.len() {
        a.clear();
        tokens.extend_mapped(i, &identity, &mut a);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        a.hash(&mut h);
        let firsts = seen.entry(h.finish()).or_default();
        let duplicate = firsts.iter().any(|&j| {
            b.clear();
            tokens.extend_mapped(j, &identity, &mut b);
            a == b
        });
        if !duplicate {
            firsts.push(i);
            kept.push(i);
        }
    }
    kept
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
    /// Pieces left out as duplicates of an earlier one (0 with `keep_duplicates`).
    pub duplicates: usize,
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
                    ds.sequence_len(i),
                    ds.window() + 1
                ));
            }
        }
        out
    }
}

/// Tokenise `pieces`, split them, build the vocabulary from the training side (or use `vocab`,
/// e.g. the one stored in a checkpoint being resumed) and make the windows. Errors when no
/// training window is left. The same as [`prepare_tokens`] over the pieces tokenised in memory.
pub fn prepare(
    pieces: &[LoadedPiece],
    tokenizer: &dyn Tokenizer,
    cfg: &DataConfig,
    vocab: Option<Vocab>,
) -> Result<Prepared, String> {
    prepare_tokens(&TokenSet::from_pieces(pieces, tokenizer), tokenizer, cfg, vocab)
}

/// The counts of the vocabulary that training with transposition by up to `max` semitones sees:
/// every token of the training pieces counted once at each shift -max..=max it has
/// ([`Tokenizer::transpose_token`]), so that every transposed token gets an id.
fn transposed_counts(tokens: &TokenSet, counts: &[u64], tokenizer: &dyn Tokenizer, max: i32) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (c, &n) in counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let token = tokens.vocab().token(c as u32);
        for s in -max..=max {
            let moved = if s == 0 { Some(token.to_string()) } else { tokenizer.transpose_token(token, s) };
            if let Some(t) = moved {
                out.push((t, n));
            }
        }
    }
    out
}

/// [`prepare`] over a tokenised corpus (from the token cache or tokenised in memory): the split,
/// the vocabulary (counted on the training pieces at every shift in -transpose..=transpose, unless
/// `vocab` is given), the training windows (transposed at batch time) and the validation windows.
pub fn prepare_tokens(
    tokens: &TokenSet,
    tokenizer: &dyn Tokenizer,
    cfg: &DataConfig,
    vocab: Option<Vocab>,
) -> Result<Prepared, String> {
    prepare_with(tokens, tokenizer, cfg, vocab, false)
}

/// [`prepare_tokens`] whose training windows read their ids in place from the mapped cache file
/// when `tokens` was mapped from one ([`Dataset::mapped`]; otherwise the same as
/// [`prepare_tokens`]): the same windows and batches, without a copy of the training ids (4 bytes
/// per token). The validation side is held as before.
pub fn prepare_tokens_mapped(
    tokens: &TokenSet,
    tokenizer: &dyn Tokenizer,
    cfg: &DataConfig,
    vocab: Option<Vocab>,
) -> Result<Prepared, String> {
    prepare_with(tokens, tokenizer, cfg, vocab, true)
}

fn prepare_with(
    tokens: &TokenSet,
    tokenizer: &dyn Tokenizer,
    cfg: &DataConfig,
    vocab: Option<Vocab>,
    map_train: bool,
) -> Result<Prepared, String> {
    // Duplicates are dropped before the split, so that no copy falls on both sides of it.
    let (split, duplicates) = if cfg.keep_duplicates {
        (split_by_piece(tokens.len(), cfg.valid_fraction, cfg.seed), 0)
    } else {
        let kept = unique_pieces(tokens);
        let s = split_by_piece(kept.len(), cfg.valid_fraction, cfg.seed);
        let back = |v: Vec<usize>| v.into_iter().map(|k| kept[k]).collect();
        (Split { train: back(s.train), valid: back(s.valid) }, tokens.len() - kept.len())
    };
    let shift = cfg.transpose.min(127);
    let vocab = match vocab {
        Some(v) => v,
        None => {
            let counts = tokens.count_ids(&split.train);
            Vocab::from_counts(&transposed_counts(tokens, &counts, tokenizer, shift as i32), cfg.min_count)
        }
    };
    // Corpus id -> vocabulary id.
    let table: Vec<u32> = tokens.vocab().tokens().iter().map(|t| vocab.id(t).unwrap_or(0)).collect();
    let side = |pieces: &[usize]| -> Result<Dataset, String> {
        let mut ids = Vec::with_capacity(pieces.iter().map(|&p| tokens.piece_len(p)).sum());
        let mut bounds = vec![0];
        for &p in pieces {
            tokens.extend_mapped(p, &table, &mut ids);
            bounds.push(ids.len());
        }
        let origins = pieces.iter().map(|&piece| Origin { piece, shift: 0 }).collect();
        Dataset::from_flat(ids, bounds, origins, cfg.window, cfg.stride)
    };
    let train = match tokens.id_view().filter(|_| map_train) {
        Some(view) => {
            let origins = split.train.iter().map(|&piece| Origin { piece, shift: 0 }).collect();
            Dataset::mapped(tokens, view, table.clone(), &split.train, origins, cfg.window, cfg.stride)?
        }
        None => side(&split.train)?,
    };
    let train = train.with_transposer(Transposer::new(&vocab, tokenizer, shift));
    let valid = side(&split.valid)?;
    if train.is_empty() {
        return Err(format!(
            "no training window: {} training pieces, none has more than {} tokens (try a smaller window)",
            split.train.len(),
            cfg.window
        ));
    }
    Ok(Prepared { vocab, split, train, valid, names: tokens.names().to_vec(), duplicates })
}
