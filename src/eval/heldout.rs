//! The held-out metric, one for every model, and the counting baselines on the same targets.
//!
//! **Targets.** Every token at position `i >= T` of each piece (T = the checkpoint's window), each
//! predicted from the `T` tokens `ids[i-T .. i]` before it: the windows of a piece at stride 1.
//! A many-to-one model (`lstm`, `wavenet`) predicts exactly that; a many-to-many model (`lstm-seq`,
//! `wavenet-gated`) reads the same window and is scored at its last position only. So the four
//! models are scored on the same (context, target) pairs, and figures compare across models and
//! runs of one tokenizer (and window).
//!
//! **Figures** ([`HeldoutReport`]): mean NLL per target in nats, perplexity `exp(NLL)`, top-1
//! accuracy, nats per note, the share of `<unk>` targets, and for many-to-many models the mean
//! loss over every position of the same windows (labelled `all_positions_loss`: positions early in
//! a window see less context, so it is higher). **Nats per note** compares across tokenizers: each
//! piece's summed NLL over its targets, divided by the notes those targets cover, counted as the
//! piece's notes times the share of its tokens that are targets (`notes x targets / tokens`),
//! summed over pieces.
//!
//! [`TargetSet`] holds the pairs; [`crate::eval::targets::score_model`] runs a model over them in batches on any backend;
//! [`baseline_for`] fits the n-grams of [`crate::eval::ngram`] on a checkpoint's training pieces (with the
//! run's transposition) and scores the same pairs; [`evaluate_checkpoint`] does it all for
//! `etude eval` and for the end of `etude train`.

use crate::eval::targets::{eval_picks, picks_or_all, sample_targets, score_model_with, HeldoutReport, TargetSample, TargetSet};
use crate::eval::validation::Scores;
use crate::data::corpus::LoadedPiece;
use crate::engine::Backend;
use crate::eval::ngram::{baselines, BaselineReport};
use crate::model::copy::{CopyMix, CopyTarget};
use crate::model::step::Stepper;
use crate::music::tokens::Tokenizer;
use crate::run::Loaded;
use serde::Serialize;
use std::path::{Path, PathBuf};


/// The training sequences of a checkpoint's run: the pieces of its corpus that are not among its
/// validation pieces, encoded with its vocabulary, each also transposed by every shift of the
/// run's `--transpose` as training saw them (at batch time, token by token:
/// [`crate::eval::data::transposed_sequences`]).
pub fn training_sequences(loaded: &Loaded, all: &[LoadedPiece], tokenizer: &dyn Tokenizer) -> Vec<Vec<u32>> {
    let vocab = &loaded.meta.vocab;
    let pieces = all
        .iter()
        .filter(|p| !loaded.meta.valid_pieces.contains(&p.name))
        .map(|p| vocab.encode(&tokenizer.encode(&p.piece.notes)))
        .collect();
    crate::eval::data::transposed_sequences(loaded, pieces, tokenizer)
}

/// The n-gram baselines of a checkpoint on `set` (the targets `picks`, all when `None`), fitted
/// on its run's training pieces.
pub fn baseline_for(loaded: &Loaded, set: &TargetSet, picks: Option<&[usize]>) -> Result<BaselineReport, String> {
    baseline_from(loaded, None, set, picks)
}

/// Training tokens (before the run's shifts) the n-gram baselines are fitted on at most: a run
/// whose training pieces hold more fits them on a seeded sample of its training pieces
/// ([`crate::eval::data::training_pieces`]), so that their time and memory (about 12 bytes per
/// token per shift while counting) stay bounded. The built-in corpus (233,064 training tokens)
/// is fitted whole.
pub const BASELINE_TOKENS: usize = 2_000_000;

/// [`baseline_for`] with the run's corpus from the token cache in `cache` (read in memory when
/// `None`).
pub fn baseline_from(loaded: &Loaded, cache: Option<&Path>, set: &TargetSet, picks: Option<&[usize]>) -> Result<BaselineReport, String> {
    let tokenizer = loaded.meta.data.tokenizer()?;
    let valid: std::collections::HashSet<&str> = loaded.meta.valid_pieces.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let (pieces, sample) = crate::eval::data::training_pieces(loaded, cache, &valid, BASELINE_TOKENS)?;
    let shifts = 2 * loaded.meta.data.data.transpose.min(127) as usize + 1;
    let tokens: usize = pieces.ids.iter().map(Vec::len).sum();
    let train = crate::eval::data::transposed_sequences(loaded, pieces.ids, tokenizer.as_ref());
    if train.is_empty() {
        return Err("the checkpoint's run has no training piece left in its corpus".into());
    }
    let pairs: Vec<(usize, usize)> = match picks {
        Some(p) => p.iter().map(|&i| set.pair(i)).collect(),
        None => set.pairs(),
    };
    let eval: Vec<Vec<u32>> = set.sequences().into_iter().map(<[u32]>::to_vec).collect();
    let what = sample.clone().unwrap_or_else(|| format!("all {} training pieces ({tokens} tokens)", train.len() / shifts));
    eprintln!("n-gram baselines: fitting on {what} at {shifts} shifts, scoring {} targets", pairs.len());
    let mut r = baselines(&train, loaded.meta.vocab.len(), &eval, &pairs)?;
    eprintln!("n-gram baselines: done in {:.1} s", started.elapsed().as_secs_f64());
    r.fitted_on = sample;
    Ok(r)
}

/// Everything `etude eval` reports (and `etude train` writes to `baseline.json`).
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub checkpoint: String,
    pub model: String,
    pub tokenizer: String,
    pub window: usize,
    /// What was evaluated ("the checkpoint's validation pieces", or the paths given).
    pub data: String,
    /// Tokens of all the pieces evaluated, and how many of them are `<unk>`.
    pub tokens: usize,
    pub unknown_tokens: usize,
    #[serde(flatten)]
    pub heldout: HeldoutReport,
    /// The counting baselines on the same targets (None with `--no-baseline`).
    pub baseline: Option<BaselineReport>,
    /// The best n-gram's NLL, and the model's NLL divided by it (< 1: the model beat counting).
    pub ngram_best: Option<f64>,
    pub ratio: Option<f64>,
    /// The same figures per kind of target token (time shift, pitch, duration, ...): where the
    /// loss goes, and where the model gains on counting.
    pub by_kind: Vec<KindReport>,
    /// The model mixed with the copy distribution (None: `--no-copy`, or a checkpoint without a
    /// fitted mixture and no `--fit-copy`).
    pub copy: Option<CopyReport>,
    /// The sample of targets scored, when not all were (`--val-targets`, or a run's own sample).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<TargetSample>,
}

/// The model's and the best n-gram's figures on the targets of one kind of token.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KindReport {
    /// The token's prefix before `_` (`TS`, `P`, `D`, `V` for `timed`), the token itself for a
    /// special (`<unk>`), or `other`.
    pub kind: String,
    pub targets: usize,
    /// Share of the targets scored.
    pub share: f64,
    /// Mean NLL of the model, its top-1 accuracy, and the best n-gram's mean NLL (same order as
    /// the whole set's best), on these targets.
    pub loss: f64,
    pub accuracy: f64,
    pub ngram: Option<f64>,
}

/// The kind of a token for [`KindReport`].
pub fn token_kind(token: &str) -> &str {
    match token.split_once('_') {
        Some((kind, _)) if !kind.is_empty() && !token.starts_with('<') => kind,
        _ if token.starts_with('<') => token,
        _ => "other",
    }
}

/// Group per-target losses (`nll`, `hits`, and the best n-gram's `ngram` when known) by the kind
/// of their target token (`targets`: ids of `vocab`), kinds in order of first appearance in the
/// vocabulary.
pub fn by_kind(vocab: &crate::music::tokens::Vocab, targets: &[u32], nll: &[f64], hits: &[f32], ngram: Option<&[f64]>) -> Vec<KindReport> {
    let mut kinds: Vec<&str> = Vec::new();
    let kind_of: Vec<usize> = (0..vocab.len() as u32)
        .map(|id| {
            let k = token_kind(vocab.token(id));
            kinds.iter().position(|&x| x == k).unwrap_or_else(|| {
                kinds.push(k);
                kinds.len() - 1
            })
        })
        .collect();
    let mut sums = vec![(0usize, 0.0f64, 0.0f64, 0.0f64); kinds.len()];
    for (i, &t) in targets.iter().enumerate() {
        let s = &mut sums[kind_of[t as usize]];
        s.0 += 1;
        s.1 += nll[i];
        s.2 += hits[i] as f64;
        s.3 += ngram.map_or(0.0, |g| g[i]);
    }
    let n = targets.len().max(1) as f64;
    kinds
        .iter()
        .zip(&sums)
        .filter(|(_, s)| s.0 > 0)
        .map(|(k, &(c, l, h, g))| KindReport {
            kind: k.to_string(),
            targets: c,
            share: c as f64 / n,
            loss: l / c as f64,
            accuracy: h / c as f64,
            ngram: ngram.map(|_| g / c as f64),
        })
        .collect()
}

/// Options of [`evaluate_checkpoint`].
#[derive(Clone, Debug, Default)]
pub struct EvalOptions {
    /// MIDI files or folders; empty = the checkpoint's validation pieces.
    pub data: Vec<PathBuf>,
    /// Windows per batch.
    pub batch: usize,
    /// Score at most this many targets, evenly spaced (0 = all).
    pub max_targets: usize,
    /// Fit and score the n-gram baselines.
    pub baselines: bool,
    /// Write the scored (context, target) pairs as JSON here.
    pub dump_windows: Option<PathBuf>,
    /// Scores of this very checkpoint on (some of) these pieces, reused where they cover the whole
    /// target set with the same ids (no `max_targets`); otherwise the model is scored.
    pub reuse: Option<Scores>,
    /// Token cache folder of the pieces and of the run's corpus (`None`: read the MIDI files).
    pub cache: Option<PathBuf>,
    /// Which copy mixture to score beside the model alone.
    pub copy: CopyChoice,
    /// Score a seeded sample of this many targets ([`sample_targets`], seeded with the run's
    /// seed): `etude eval --val-targets`, and the end of `etude train` with the run's own sample.
    /// `None` = every target.
    pub valid_targets: Option<usize>,
}

/// Which copy mixture ([`crate::model::copy`]) `etude eval` scores beside the model alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CopyChoice {
    /// The checkpoint's own (none when it has none).
    #[default]
    Stored,
    /// Fitted now on the checkpoint's validation pieces (`--fit-copy`, and the end of training).
    Fit,
    /// None (`--no-copy`).
    Off,
}

/// The model mixed with the copy distribution, on the same targets.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CopyReport {
    /// The weights used, and what they were fitted on.
    pub mix: CopyMix,
    /// Share of the targets whose context holds a match (the others score as the model alone).
    pub matched_share: f64,
    /// The held-out figures of the mixture (no accuracy: only the targets' probabilities are mixed).
    pub heldout: HeldoutReport,
    /// The mixture's NLL divided by the best n-gram's.
    pub ratio: Option<f64>,
    /// The best n-gram mixed with the same copy distribution, its weights fitted on the very
    /// targets scored (which favours the n-gram): how much the network adds to counting and
    /// copying together.
    pub ngram_with_copy: Option<f64>,
    /// The mixture's mean NLL per kind of target, in the order of the model's `by_kind`.
    pub by_kind: Vec<KindLoss>,
}

/// A mean NLL over the targets of one kind of token.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KindLoss {
    pub kind: String,
    pub loss: f64,
}

/// The copy targets of the windows `picks` of `set` (all when `None`), whose model NLLs are `nll`.
pub fn copy_targets(set: &TargetSet, picks: Option<&[usize]>, nll: &[f64]) -> Vec<CopyTarget> {
    let picks = picks_or_all(picks, set.len());
    let mut stage = crate::run::progress::Stage::on_stderr("copy distributions", "targets", picks.len() as u64);
    let mut out = Vec::with_capacity(picks.len());
    for chunk in picks.chunks(4096).zip(nll.chunks(4096)) {
        out.extend(chunk.0.iter().zip(chunk.1).map(|(&i, &l)| CopyTarget::new(set.windows().input(i), set.windows().target_last(i), l)));
        stage.inc(chunk.0.len() as u64);
    }
    // Said when it took a while (the built-in corpus's 13,095 take a fraction of a second).
    let secs = stage.seconds();
    let done = stage.finish();
    if secs >= 1.0 {
        eprintln!("copy distributions: {done}");
    }
    out
}

/// Evaluate the checkpoint `loaded` (read from `origin`) on backend `b`.
pub fn evaluate_checkpoint<B: Backend>(b: &B, loaded: &Loaded, origin: &Path, opts: &EvalOptions) -> Result<EvalReport, String> {
    let spec = &loaded.meta.data;
    let cache = opts.cache.as_deref();
    let (pieces, what) = if opts.data.is_empty() {
        let valid: std::collections::HashSet<&str> = loaded.meta.valid_pieces.iter().map(String::as_str).collect();
        let pieces = crate::eval::data::run_pieces(loaded, cache, |name| valid.contains(name))?;
        if pieces.ids.is_empty() {
            return Err("the checkpoint's run had no validation pieces; give --data".into());
        }
        (pieces, "the checkpoint's validation pieces".to_string())
    } else {
        let paths = opts.data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        (crate::eval::data::path_pieces(loaded, &opts.data, cache)?, paths)
    };
    let window = spec.data.window;
    let set = TargetSet::new(pieces.ids, pieces.names, pieces.notes, window, 0)?;
    if set.is_empty() {
        return Err(format!("no piece of {what} is longer than the window of {window} tokens"));
    }
    let picks = match opts.valid_targets {
        Some(cap) if opts.max_targets == 0 => sample_targets(set.len(), cap, spec.data.seed),
        _ => (opts.max_targets > 0 && opts.max_targets < set.len()).then(|| eval_picks(set.len(), opts.max_targets)),
    };
    // A seeded sample: said, and kept in the report.
    let sample = opts.valid_targets.filter(|_| opts.max_targets == 0 && picks.is_some()).map(|_| TargetSample::new(picks.as_ref().map_or(0, Vec::len), set.len()));
    if let Some(s) = &sample {
        eprintln!("scoring {}", s.describe(&what));
    }
    let batch = opts.batch.max(1);
    // Before anything is allocated: --batch against memory and the adapter's binding limit.
    let fp = crate::run::verify::Footprint::of(&loaded.meta.model, batch, window, false);
    let limit_bytes = b.max_buffer_bytes().map(u128::from);
    crate::run::verify::check_footprint(&fp, crate::run::verify::available_memory(), limit_bytes, &format!("--batch {batch}"))?;
    let reused = opts.reuse.as_ref().and_then(|s| s.for_set(&set, picks.as_deref()));
    let (nll, hits, all_positions) = match reused {
        Some(scores) => scores,
        None => {
            let mut model = loaded.model(b, batch, window, origin)?;
            let mut stepper = Stepper::new(b, &model, batch);
            let n = picks.as_ref().map_or(set.len(), Vec::len);
            let mut stage = crate::run::progress::Stage::on_stderr("scoring", "targets", n as u64);
            let r = score_model_with(b, &mut model, &mut stepper, &set, batch, picks.as_deref(), Some(&mut stage));
            eprintln!("scored {}", stage.finish());
            r
        }
    };
    let mut heldout = set.summarise(&nll, Some(&hits), picks.as_deref());
    heldout.all_positions_loss = all_positions;
    if let Some(path) = &opts.dump_windows {
        dump_windows(path, &set, picks.as_deref(), heldout.loss)?;
    }
    // The model's figures stand without the baselines (say, its training corpus has moved).
    let baseline = if opts.baselines {
        match baseline_from(loaded, cache, &set, picks.as_deref()) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("note: no n-gram baseline: {e}");
                None
            }
        }
    } else {
        None
    };
    let ngram_best = baseline.as_ref().map(|r| r.best);
    let target_ids: Vec<u32> =
        picks_or_all(picks.as_deref(), set.len()).iter().map(|&i| set.windows().target_last(i)).collect();
    let kinds = by_kind(&loaded.meta.vocab, &target_ids, &nll, &hits, baseline.as_ref().map(|r| &r.best_per_target[..]));
    let copy = match opts.copy {
        CopyChoice::Off => None,
        CopyChoice::Stored => loaded.meta.copy.clone().map(|m| (m, copy_targets(&set, picks.as_deref(), &nll))),
        CopyChoice::Fit => {
            let targets = copy_targets(&set, picks.as_deref(), &nll);
            let mix = if opts.data.is_empty() {
                let on = match &sample {
                    Some(s) => format!("a seeded sample of {} of the {} targets of the checkpoint's validation pieces", s.targets, s.of),
                    None => "the checkpoint's validation pieces".to_string(),
                };
                CopyMix::fit(&targets, &on)
            } else {
                // Fitted on the validation pieces, never on the pieces evaluated.
                let on_valid = EvalOptions {
                    data: Vec::new(),
                    max_targets: 0,
                    baselines: false,
                    dump_windows: None,
                    reuse: None,
                    copy: CopyChoice::Fit,
                    ..opts.clone()
                };
                let r = evaluate_checkpoint(b, loaded, origin, &on_valid)?;
                r.copy.expect("fitted").mix
            };
            Some((mix, targets))
        }
    };
    let copy = copy.map(|(mix, targets)| {
        let mixed: Vec<f64> = targets.iter().map(|t| mix.nll(t)).collect();
        let heldout = set.summarise(&mixed, None, picks.as_deref());
        let kinds = by_kind(&loaded.meta.vocab, &target_ids, &mixed, &hits, None);
        let ngram_with_copy = baseline.as_ref().map(|r| {
            let counted: Vec<CopyTarget> =
                targets.iter().zip(&r.best_per_target).map(|(t, &l)| CopyTarget { p: (-l).exp(), ..*t }).collect();
            let fitted = CopyMix::fit(&counted, "the targets scored");
            counted.iter().map(|t| fitted.nll(t)).sum::<f64>() / counted.len().max(1) as f64
        });
        CopyReport {
            ngram_with_copy,
            matched_share: targets.iter().filter(|t| t.bucket.is_some()).count() as f64 / targets.len().max(1) as f64,
            ratio: ngram_best.map(|best| heldout.loss / best),
            heldout,
            by_kind: kinds.into_iter().map(|k| KindLoss { kind: k.kind, loss: k.loss }).collect(),
            mix,
        }
    });
    let seqs = set.sequences();
    Ok(EvalReport {
        checkpoint: origin.display().to_string(),
        model: loaded.meta.model.name().to_string(),
        tokenizer: spec.tokenizer.clone(),
        window,
        data: what,
        tokens: seqs.iter().map(|s| s.len()).sum(),
        unknown_tokens: seqs.iter().flat_map(|s| s.iter()).filter(|&&id| id == 0).count(),
        ratio: ngram_best.map(|best| heldout.loss / best),
        heldout,
        baseline,
        ngram_best,
        by_kind: kinds,
        copy,
        sample,
    })
}

/// Write the scored pairs as JSON: `{"window": T, "per_position": false, "inputs": [[ids; T]; N],
/// "targets": [id; N], "loss": mean}`: each window's T context ids and the id after them (a
/// many-to-many model is scored at its last position). The ids are the checkpoint vocabulary's.
fn dump_windows(path: &Path, set: &TargetSet, picks: Option<&[usize]>, loss: f64) -> Result<(), String> {
    let picks = picks_or_all(picks, set.len());
    let picks: &[usize] = &picks;
    let data = set.windows();
    let inputs: Vec<&[u32]> = picks.iter().map(|&i| data.input(i)).collect();
    let targets: Vec<u32> = picks.iter().map(|&i| data.target_last(i)).collect();
    let j = serde_json::json!({
        "window": data.window(),
        "per_position": false,
        "inputs": inputs,
        "targets": targets,
        "loss": loss,
    });
    crate::files::atomic_write(path, j.to_string().as_bytes())
}

/// One line for humans: the model's figures, the baselines and the ratio.
pub fn describe(r: &EvalReport) -> String {
    let h = &r.heldout;
    let mut s = format!(
        "{} on {} ({} pieces, {} targets, {:.1}% <unk>): NLL {:.4} nats/token, perplexity {:.2}, top-1 accuracy {:.3}, {:.3} nats/note",
        r.model,
        r.data,
        h.pieces,
        h.targets,
        100.0 * h.unknown_target_share,
        h.loss,
        h.perplexity,
        h.accuracy.unwrap_or(f64::NAN),
        h.nats_per_note
    );
    if let Some(all) = h.all_positions_loss {
        s.push_str(&format!(" (all positions of the windows: {all:.4})"));
    }
    if let Some(b) = &r.baseline {
        let kn: Vec<String> = b.kneser_ney.iter().map(|(n, l)| format!("{n}-gram {l:.4}")).collect();
        s.push_str(&format!(
            "\nbaselines on the same targets: unigram {:.4}, Kneser-Ney {}; best {}-gram {:.4}; model / best n-gram = {:.3}",
            b.unigram,
            kn.join(", "),
            b.best_order,
            b.best,
            r.ratio.unwrap_or(f64::NAN)
        ));
    }
    if r.by_kind.len() > 1 {
        let parts: Vec<String> = r
            .by_kind
            .iter()
            .map(|k| {
                let g = k.ngram.map(|g| format!(", n-gram {g:.3}")).unwrap_or_default();
                format!("{} {:.1}%: {:.3}{g}", k.kind, 100.0 * k.share, k.loss)
            })
            .collect();
        s.push_str(&format!("\nby target kind (share: model NLL): {}", parts.join("; ")));
    }
    if let Some(c) = &r.copy {
        let kinds: Vec<String> = c.by_kind.iter().map(|k| format!("{} {:.3}", k.kind, k.loss)).collect();
        let ratio = c.ratio.map(|x| format!("; with copy / best n-gram = {x:.3}")).unwrap_or_default();
        let counted = c
            .ngram_with_copy
            .map(|x| format!("; the best n-gram with the copy mixture (weights fitted on these targets) {x:.4}"))
            .unwrap_or_default();
        s.push_str(&format!(
            "\nwith the copy mixture (weights fitted on {}; {:.1}% of the targets have a match): NLL {:.4}, perplexity {:.2}, {:.3} nats/note{ratio}{counted}; by kind {}",
            c.mix.fitted_on,
            100.0 * c.matched_share,
            c.heldout.loss,
            c.heldout.perplexity,
            c.heldout.nats_per_note,
            kinds.join(", ")
        ));
    }
    s
}

