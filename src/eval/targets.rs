//! The held-out targets: every token at position `i >= T` of each piece with the `T` tokens before
//! it ([`TargetSet`], see [`crate::eval::heldout`] for why), seeded samples of them
//! ([`sample_targets`], [`TargetSample`]), the validation set of a run ([`validation_set`]), and a
//! model's scores on them in batches on any backend ([`score_model`]).

use crate::data::corpus::LoadedPiece;
use crate::data::dataset::{Dataset, Targets};
use crate::engine::Backend;
use crate::model::step::Stepper;
use crate::model::Model;
use crate::music::tokens::{Tokenizer, Vocab};
use serde::Serialize;

/// A piece of a [`TargetSet`].
#[derive(Clone, Debug, Serialize)]
pub struct SetPiece {
    pub name: String,
    /// Notes of the piece as read from MIDI.
    pub notes: usize,
    /// Tokens of the piece.
    pub tokens: usize,
    /// Targets it contributes: `tokens - T`, or 0 when it is not longer than the window.
    pub targets: usize,
}

/// The (context, target) pairs of the held-out metric over a list of pieces.
#[derive(Clone, Debug)]
pub struct TargetSet {
    data: Dataset,
    pieces: Vec<SetPiece>,
    unk: u32,
}

impl TargetSet {
    /// The targets of `sequences` (ids; `names` and `notes` per piece) for a window of `window`.
    /// `unk` is the id counted as unknown (0 in etude's vocabularies).
    pub fn new(sequences: Vec<Vec<u32>>, names: Vec<String>, notes: Vec<usize>, window: usize, unk: u32) -> Result<Self, String> {
        if names.len() != sequences.len() || notes.len() != sequences.len() {
            return Err("TargetSet: one name and one note count per sequence".into());
        }
        let pieces = sequences
            .iter()
            .zip(names)
            .zip(notes)
            .map(|((s, name), notes)| SetPiece { name, notes, tokens: s.len(), targets: s.len().saturating_sub(window) })
            .collect();
        let data = Dataset::new(sequences, Vec::new(), window, 1)?;
        Ok(TargetSet { data, pieces, unk })
    }

    /// The targets of the sequences of `data` (their ids shared, not copied), named by `names`
    /// with `notes` notes each.
    pub fn of_dataset(data: &Dataset, names: Vec<String>, notes: Vec<usize>, unk: u32) -> Result<Self, String> {
        let n = data.num_sequences();
        if names.len() != n || notes.len() != n {
            return Err("TargetSet: one name and one note count per sequence".into());
        }
        let window = data.window();
        let pieces = names
            .into_iter()
            .zip(notes)
            .enumerate()
            .map(|(i, (name, notes))| {
                let tokens = data.sequence_len(i);
                SetPiece { name, notes, tokens, targets: tokens.saturating_sub(window) }
            })
            .collect();
        Ok(TargetSet { data: data.with_stride(1)?, pieces, unk })
    }

    /// Tokenise `pieces` with `tokenizer`, encode with `vocab` and take their targets.
    pub fn from_pieces(pieces: &[LoadedPiece], tokenizer: &dyn Tokenizer, vocab: &Vocab, window: usize) -> Result<Self, String> {
        let seqs = pieces.iter().map(|p| vocab.encode(&tokenizer.encode(&p.piece.notes))).collect();
        let names = pieces.iter().map(|p| p.name.clone()).collect();
        let notes = pieces.iter().map(|p| p.piece.notes.len()).collect();
        TargetSet::new(seqs, names, notes, window, 0)
    }

    /// Number of targets.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn window(&self) -> usize {
        self.data.window()
    }

    pub fn pieces(&self) -> &[SetPiece] {
        &self.pieces
    }

    pub fn sequences(&self) -> Vec<&[u32]> {
        self.data.sequences()
    }

    /// The windows at stride 1: window `i`'s input is [`Dataset::input`] and its target
    /// [`Dataset::target_last`].
    pub fn windows(&self) -> &Dataset {
        &self.data
    }

    /// Target `i` as (sequence, position in it): [`TargetSet::pairs`]`()[i]`.
    pub fn pair(&self, i: usize) -> (usize, usize) {
        let (s, start) = self.data.locate(i);
        (s, start + self.window())
    }

    /// Every target as (sequence, position in it), in window order.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        let t = self.window();
        let mut out = Vec::with_capacity(self.len());
        for (s, seq) in self.sequences().iter().enumerate() {
            if seq.len() > t {
                out.extend((t..seq.len()).map(|i| (s, i)));
            }
        }
        out
    }

    /// The target ids, in window order.
    pub fn target_ids(&self) -> Vec<u32> {
        (0..self.len()).map(|i| self.data.target_last(i)).collect()
    }

    /// The figures of per-target losses `nll` (window order; `correct[i]` = 1 when the argmax was
    /// right, when known) over this set. `picks` are the targets scored (all when `None`).
    pub fn summarise(&self, nll: &[f64], correct: Option<&[f32]>, picks: Option<&[usize]>) -> HeldoutReport {
        let all: Vec<usize>;
        let picks = match picks {
            Some(p) => p,
            None => {
                all = (0..self.len()).collect();
                &all
            }
        };
        assert_eq!(nll.len(), picks.len(), "one loss per target scored");
        // The piece of a window: its sequence (one per piece, stride 1), found by a binary search
        // rather than an array of one entry per target.
        let piece_of = |i: usize| self.data.locate(i).0;
        let mut piece_sum = vec![0.0f64; self.pieces.len()];
        let mut piece_count = vec![0usize; self.pieces.len()];
        let mut unk = 0usize;
        for (&i, &l) in picks.iter().zip(nll) {
            let p = piece_of(i);
            piece_sum[p] += l;
            piece_count[p] += 1;
            unk += usize::from(self.data.target_last(i) == self.unk);
        }
        let n = picks.len();
        let total: f64 = nll.iter().sum();
        let notes_covered: f64 = self
            .pieces
            .iter()
            .zip(&piece_count)
            .filter(|(p, _)| p.tokens > 0)
            .map(|(p, &c)| p.notes as f64 * c as f64 / p.tokens as f64)
            .sum();
        let mean = if n == 0 { f64::NAN } else { total / n as f64 };
        HeldoutReport {
            targets: n,
            pieces: self.pieces.iter().filter(|p| p.targets > 0).count(),
            short_pieces: self.pieces.iter().filter(|p| p.targets == 0).count(),
            loss: mean,
            perplexity: mean.exp(),
            accuracy: correct.map(|c| if n == 0 { f64::NAN } else { c.iter().map(|&x| x as f64).sum::<f64>() / n as f64 }),
            nats_per_note: if notes_covered > 0.0 { total / notes_covered } else { f64::NAN },
            unknown_target_share: if n == 0 { f64::NAN } else { unk as f64 / n as f64 },
            all_positions_loss: None,
        }
    }
}

/// A seeded sample of `cap` of `len` targets (window indices of a [`TargetSet`]), spread over
/// them and so over its pieces in proportion to their targets: the targets are cut into `cap`
/// strata of equal length (in window order, which is piece order) and one target is drawn from
/// each. Sorted and distinct; `None` (every target) when `cap` is 0 or not below `len`. The same
/// (len, cap, seed) always give the same sample: every epoch of a run scores the same targets.
pub fn sample_targets(len: usize, cap: usize, seed: u64) -> Option<Vec<usize>> {
    if cap == 0 || cap >= len {
        return None;
    }
    let mut rng = crate::rng::Rng::new(seed ^ 0x5A3B_1E0F_7A26_0001);
    let at = |k: usize| (k as u128 * len as u128 / cap as u128) as usize;
    Some((0..cap).map(|k| at(k) + rng.below(at(k + 1) - at(k))).collect())
}

/// `limit` evenly spaced indices out of `n`, or all of them when `n <= limit` (`eval --max-windows`).
pub fn eval_picks(n: usize, limit: usize) -> Vec<usize> {
    if n <= limit {
        (0..n).collect()
    } else {
        (0..limit).map(|i| i * n / limit).collect()
    }
}

/// A seeded sample of the targets ([`sample_targets`]): how many, of how many.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetSample {
    pub targets: usize,
    pub of: usize,
    /// `targets / of`.
    pub share: f64,
}

impl TargetSample {
    pub fn new(targets: usize, of: usize) -> TargetSample {
        TargetSample { targets, of, share: targets as f64 / of.max(1) as f64 }
    }

    /// "a seeded sample of N of the M targets (P%) of WHAT".
    pub fn describe(&self, what: &str) -> String {
        format!("a seeded sample of {} of the {} targets ({:.2}%) of {what}", self.targets, self.of, 100.0 * self.share)
    }
}

/// The validation targets of a prepared run (its validation sequences, untransposed): what
/// training's per-epoch validation scores. The token cache keeps ids, not notes, so the pieces'
/// note counts are 0 here: per-epoch validation reports loss and accuracy, not nats per note
/// (`eval` and `baseline.json` read the MIDI and have them). The ids are the validation side's,
/// shared, not a second copy.
pub fn validation_set(prepared: &crate::data::prepare::Prepared) -> Result<TargetSet, String> {
    let valid = &prepared.valid;
    let names = valid.origins().iter().map(|o| prepared.names[o.piece].clone()).collect();
    let notes = vec![0; valid.num_sequences()];
    TargetSet::of_dataset(valid, names, notes, 0)
}

/// Per-target losses and hits of `model` on the windows `picks` of `set` (all when `None`), in
/// batches of at most `batch` windows (the stepper's size), with the all-position mean loss for a
/// many-to-many model.
pub fn score_model<B: Backend, M: Model<B> + ?Sized>(
    b: &B,
    model: &mut M,
    stepper: &mut Stepper<B>,
    set: &TargetSet,
    batch: usize,
    picks: Option<&[usize]>,
) -> (Vec<f64>, Vec<f32>, Option<f64>) {
    score_model_with(b, model, stepper, set, batch, picks, None)
}

/// [`score_model`], counting the targets scored on `stage` (a progress bar or lines).
pub fn score_model_with<B: Backend, M: Model<B> + ?Sized>(
    b: &B,
    model: &mut M,
    stepper: &mut Stepper<B>,
    set: &TargetSet,
    batch: usize,
    picks: Option<&[usize]>,
    mut stage: Option<&mut crate::run::progress::Stage>,
) -> (Vec<f64>, Vec<f32>, Option<f64>) {
    let picks = picks_or_all(picks, set.len());
    let picks: &[usize] = &picks;
    let targets = model.targets();
    let t = set.window();
    let mut nll = Vec::with_capacity(picks.len());
    let mut hits = Vec::with_capacity(picks.len());
    stepper.take_totals(b);
    for chunk in picks.chunks(batch.max(1)) {
        let bt = set.windows().batch_of(chunk, targets);
        stepper.eval(b, model, &bt.x, &bt.y);
        let rows = stepper.last_batch_rows(b);
        for r in 0..chunk.len() {
            let row = match targets {
                Targets::Last => r,
                Targets::Every => r * t + t - 1,
            };
            nll.push(rows[2 * row] as f64);
            hits.push(rows[2 * row + 1]);
        }
        if let Some(s) = stage.as_deref_mut() {
            s.inc(chunk.len() as u64);
        }
    }
    let totals = stepper.take_totals(b);
    let all_positions = (targets == Targets::Every && totals.rows > 0).then(|| totals.loss());
    (nll, hits, all_positions)
}

/// The held-out figures of a model or a baseline over a [`TargetSet`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeldoutReport {
    /// Targets scored.
    pub targets: usize,
    /// Pieces with at least one target, and pieces not longer than the window (no target).
    pub pieces: usize,
    pub short_pieces: usize,
    /// Mean NLL per target, nats.
    pub loss: f64,
    pub perplexity: f64,
    /// Top-1 accuracy (models only).
    pub accuracy: Option<f64>,
    pub nats_per_note: f64,
    /// Share of the targets that are `<unk>`.
    pub unknown_target_share: f64,
    /// Many-to-many models: the mean loss over every position of the same windows.
    pub all_positions_loss: Option<f64>,
}

/// The targets `picks`, or all `len` of them.
pub(crate) fn picks_or_all(picks: Option<&[usize]>, len: usize) -> std::borrow::Cow<'_, [usize]> {
    match picks {
        Some(p) => std::borrow::Cow::Borrowed(p),
        None => std::borrow::Cow::Owned((0..len).collect()),
    }
}

