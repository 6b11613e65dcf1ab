//! The validation pass of training: the loss of every validation target each epoch
//! ([`validation_totals`]), and the per-piece scores kept for the end of the run ([`Scores`]), so
//! that the baselines and the copy mixture need not score the model again.

use crate::eval::targets::{score_model_with, TargetSet};
use crate::engine::Backend;
use crate::model::step::Stepper;
use crate::model::Model;

/// Per-target scores of a [`TargetSet`] (what [`score_model`] returns), kept per piece with the
/// piece's ids, so that the same model's figures on the same pieces can be reused instead of
/// scored again: training keeps its best epoch's validation scores, and the end of `etude train`
/// hands them to [`evaluate_checkpoint`] (the best checkpoint is exactly that model).
#[derive(Clone, Debug, Default)]
pub struct Scores {
    /// Every piece with targets.
    pieces: Vec<ScoredPiece>,
    all_positions: Option<f64>,
    /// The scores of a sample of the targets instead ([`sample_targets`]; `pieces` is then empty).
    sampled: Option<SampledScores>,
}

/// [`Scores`] of a sample of a set's targets: a fingerprint of the set (names and ids of its pieces
/// with targets), the targets scored, and their scores.
#[derive(Clone, Debug)]
struct SampledScores {
    fingerprint: u64,
    picks: Vec<usize>,
    nll: Vec<f64>,
    hits: Vec<f32>,
}

/// A hash of the names and ids of the pieces of `set` that have targets.
fn fingerprint(set: &TargetSet) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (piece, seq) in set.pieces().iter().zip(set.sequences()) {
        if piece.targets > 0 {
            piece.name.hash(&mut h);
            seq.hash(&mut h);
        }
    }
    h.finish()
}

/// One piece of [`Scores`]: its name, its ids, and its targets' NLL and hits.
#[derive(Clone, Debug)]
struct ScoredPiece {
    name: String,
    ids: Vec<u32>,
    nll: Vec<f64>,
    hits: Vec<f32>,
}

impl Scores {
    /// Split the scores of every target of `set` (window order, no picks) by piece.
    pub fn new(set: &TargetSet, nll: &[f64], hits: &[f32], all_positions: Option<f64>) -> Scores {
        assert_eq!(nll.len(), set.len(), "one score per target");
        let mut pieces = Vec::new();
        let mut at = 0;
        for (piece, seq) in set.pieces().iter().zip(set.sequences()) {
            let n = piece.targets;
            if n > 0 {
                pieces.push(ScoredPiece {
                    name: piece.name.clone(),
                    ids: seq.to_vec(),
                    nll: nll[at..at + n].to_vec(),
                    hits: hits[at..at + n].to_vec(),
                });
            }
            at += n;
        }
        Scores { pieces, all_positions, sampled: None }
    }

    /// The scores of the targets `picks` of `set` (a sample, in the order of `picks`).
    pub fn sampled(set: &TargetSet, picks: &[usize], nll: &[f64], hits: &[f32], all_positions: Option<f64>) -> Scores {
        assert_eq!(nll.len(), picks.len(), "one score per target scored");
        let sampled = SampledScores { fingerprint: fingerprint(set), picks: picks.to_vec(), nll: nll.to_vec(), hits: hits.to_vec() };
        Scores { pieces: Vec::new(), all_positions, sampled: Some(sampled) }
    }

    /// The scores of `set`'s targets `picks` (all when `None`) in their order, when exactly these
    /// were scored here on a set with the same pieces and ids; `None` otherwise.
    pub(crate) fn for_set(&self, set: &TargetSet, picks: Option<&[usize]>) -> Option<(Vec<f64>, Vec<f32>, Option<f64>)> {
        match (&self.sampled, picks) {
            (Some(s), Some(p)) if s.picks == p && s.fingerprint == fingerprint(set) => {
                return Some((s.nll.clone(), s.hits.clone(), self.all_positions));
            }
            (None, None) => {}
            _ => return None,
        }
        let (mut nll, mut hits) = (Vec::with_capacity(set.len()), Vec::with_capacity(set.len()));
        let mut used = 0;
        for (piece, seq) in set.pieces().iter().zip(set.sequences()) {
            if piece.targets == 0 {
                continue;
            }
            let p = self.pieces.iter().find(|p| p.name == piece.name && p.ids.as_slice() == seq)?;
            nll.extend_from_slice(&p.nll);
            hits.extend_from_slice(&p.hits);
            used += 1;
        }
        (used == self.pieces.len() && nll.len() == set.len()).then_some((nll, hits, self.all_positions))
    }
}

/// A validation loss above this many nats per target (a probability of e^-10^6 for the average
/// target) only comes from weights that have blown up: training's validation reports it as
/// infinite, which stops the run.
pub const DIVERGED_NATS: f64 = 1e6;

/// Training's per-epoch validation: the held-out metric on the targets `picks` of `set` (all when
/// `None`: [`crate::eval::targets::sample_targets`]) as [`crate::model::step::Totals`], the
/// all-position loss of a many-to-many model, and the per-target [`Scores`] (`None` for an empty
/// set), counting the targets on `stage`.
pub fn validation_totals<B: Backend, M: Model<B> + ?Sized>(
    b: &B,
    model: &mut M,
    stepper: &mut Stepper<B>,
    set: &TargetSet,
    batch: usize,
    picks: Option<&[usize]>,
    stage: Option<&mut crate::run::progress::Stage>,
) -> (crate::model::step::Totals, Option<f64>, Option<Scores>) {
    if set.is_empty() {
        return (crate::model::step::Totals::default(), None, None);
    }
    let (nll, hits, all) = score_model_with(b, model, stepper, set, batch, picks, stage);
    let scores = match picks {
        Some(p) => Scores::sampled(set, p, &nll, &hits, all),
        None => Scores::new(set, &nll, &hits, all),
    };
    // A mean beyond DIVERGED_NATS means the weights have blown up (finite, but useless): it is
    // reported as infinite so that training stops there rather than saving that model.
    let sum: f64 = nll.iter().sum();
    let totals = crate::model::step::Totals {
        loss_sum: if sum / nll.len().max(1) as f64 > DIVERGED_NATS { f64::INFINITY } else { sum },
        correct: hits.iter().map(|&h| h as f64).sum(),
        rows: nll.len(),
    };
    (totals, all, Some(scores))
}
