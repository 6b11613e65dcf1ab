//! The stage of `etude train` after the training loop: say what the run did, score the best
//! checkpoint beside the n-gram baselines and fit the copy mixture on the validation pieces
//! (`baseline.json`, the mixture stored in the checkpoint), compose the sample (`sample.mid`, its
//! picture, audio and `stats.json`), and redraw the loss curves and the report. Each is a named
//! step of [`after_run`], in that order.

use super::compose::{write_pieces, PieceOptions};
use etude::engine::Backend;
use etude::eval::heldout::{describe, evaluate_checkpoint, CopyChoice, EvalOptions};
use etude::files::atomic_write;
use etude::run::{load_checkpoint, Loaded};
use etude::train::{TrainOptions, TrainReport};
use std::path::Path;

/// Everything after the loop, for the run `report` trained with `opts`.
pub fn after_run<B: Backend>(b: &B, opts: &TrainOptions, report: &TrainReport, greedy_sample: bool) -> Result<(), String> {
    say_what_the_run_did(opts, report);
    // The model with the lowest validation loss is scored and composes the sample: read once.
    let best = report.out.join("best.safetensors");
    let source = if best.exists() { best } else { report.last_checkpoint.clone() };
    let mut loaded = if report.valid_windows > 0 || opts.sample_length > 0 { Some(load_checkpoint(&source)?) } else { None };
    if let Some(loaded) = loaded.as_mut().filter(|_| report.valid_windows > 0) {
        score_and_fit_copy(b, opts, report, loaded, &source)?;
    }
    if let Some(loaded) = loaded.as_ref().filter(|_| opts.sample_length > 0) {
        compose_sample(b, opts, report, loaded, &source, greedy_sample)?;
    }
    redraw(report)
}

/// The pieces skipped, the windows and the last epoch's figures (or why nothing was trained).
fn say_what_the_run_did(opts: &TrainOptions, report: &TrainReport) {
    for s in &report.skipped {
        eprintln!("skipped {}: {}", s.name, s.cause);
    }
    for line in &report.short_pieces {
        eprintln!("short piece {line}");
    }
    eprintln!(
        "{} training windows, {} validation windows, vocabulary {}",
        report.train_windows, report.valid_windows, report.vocab_size
    );
    if report.stopped_early && report.metrics.is_empty() {
        eprintln!("the run in {} stopped early: nothing to train", report.out.display());
    } else if let Some(last) = report.metrics.last() {
        println!(
            "finished epoch {}: validation loss {:.4} (perplexity {:.2}, accuracy {:.3}); run folder {}",
            last.epoch,
            last.val_loss,
            last.val_perplexity,
            last.val_accuracy,
            report.out.display()
        );
    } else {
        eprintln!(
            "the run in {} has already completed {} epochs (--epochs {}): nothing to train",
            report.out.display(),
            report.epochs_done,
            opts.epochs
        );
    }
}

/// `baseline.json`: the best checkpoint beside the n-gram baselines; the copy mixture fitted on
/// the validation pieces travels with the model (the checkpoint is written again with it).
fn score_and_fit_copy<B: Backend>(b: &B, opts: &TrainOptions, report: &TrainReport, loaded: &mut Loaded, source: &Path) -> Result<(), String> {
    if let Some(mix) = write_baseline(b, &report.out, loaded, source, report.best_scores.clone(), opts.cache.clone())? {
        loaded.meta.copy = Some(mix);
        loaded.checkpoint.meta = serde_json::to_value(&loaded.meta).map_err(|e| e.to_string())?;
        loaded.checkpoint.save(source)?;
    }
    Ok(())
}

/// `sample.mid` (with its picture and audio) from the best checkpoint, and its `stats.json`.
fn compose_sample<B: Backend>(b: &B, opts: &TrainOptions, report: &TrainReport, loaded: &Loaded, source: &Path, greedy_sample: bool) -> Result<(), String> {
    // The run's own seed (a resumed run's comes from its checkpoint, not from --seed); the
    // tutorial composed with argmax (its decoder puts the events 0.5 quarter apart).
    let sample = PieceOptions::sample(
        opts.sample_length,
        loaded.meta.optim.seed,
        report.out.join("sample.mid"),
        greedy_sample,
        opts.cache.clone(),
    );
    eprintln!("composing sample.mid with {}", source.display());
    write_pieces(b, loaded, source, &sample)?;
    write_sample_stats(loaded, &report.out)?;
    Ok(())
}

/// The loss curves again, now with the baseline's line, and the report with the sample's piano
/// roll and audio.
fn redraw(report: &TrainReport) -> Result<(), String> {
    etude::run::plots::run_loss_curve_of(&report.out, &report.log.losses(etude::run::metrics::LOSS_COLUMNS))?;
    let page = etude::run::report::write_report_with(&report.out, report.last_meta.as_ref(), Some(report.log.table()))?;
    eprintln!("report: {}", page.display());
    Ok(())
}

/// The most validation pieces `stats.json` compares the sample with: the comparison of every pair
/// of reference pieces (16 features, a density estimate on 1,001 points each) took minutes with
/// the 1,000 validation pieces of a 10,000-file corpus.
const STATS_REFERENCE: usize = 100;

/// `stats.json`: the statistics of `sample.mid` against the run's validation pieces (the JSON of
/// `etude stats sample.mid --against VALIDATION --json`).
fn write_sample_stats(loaded: &Loaded, out: &std::path::Path) -> Result<(), String> {
    let sample = out.join("sample.mid");
    let piece = match std::fs::read(&sample).map_err(|e| e.to_string()).and_then(|bytes| {
        etude::music::midi::read_midi(&bytes, &etude::music::midi::ReadOptions::default()).map_err(|e| e.to_string())
    }) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("note: no stats.json: {}: {e}", sample.display());
            return Ok(());
        }
    };
    // Against at most STATS_REFERENCE validation pieces (the built-in corpus has 10).
    let (names, of) = etude::eval::data::stats_reference(loaded, STATS_REFERENCE);
    if names.len() < of {
        eprintln!("stats.json: sample.mid against a seeded sample of {} of the {of} validation pieces", names.len());
    }
    let reference = etude::eval::data::validation_notes_of(loaded, &names)?;
    let report = etude::music::stats::compare(&[("sample.mid".to_string(), piece.notes)], &reference);
    if let Some(p) = report.pieces.first().filter(|p| !p.flags.is_empty()) {
        eprintln!("sample.mid: {}", p.flags.join("; "));
    }
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    atomic_write(&out.join("stats.json"), json.as_bytes())
}

/// The held-out metric of the run's best checkpoint (`loaded`, read from `source`) on its
/// validation pieces, beside the n-gram baselines fitted on its training pieces and with the copy
/// mixture fitted on the same pieces: printed, and written to `baseline.json` in the run folder
/// (the JSON of `etude eval --fit-copy --json`). Returns the fitted copy mixture.
/// `reuse`: the best checkpoint's validation scores from training, when this run wrote it.
fn write_baseline<B: Backend>(
    b: &B,
    out: &std::path::Path,
    loaded: &Loaded,
    source: &std::path::Path,
    reuse: Option<etude::eval::validation::Scores>,
    cache: Option<std::path::PathBuf>,
) -> Result<Option<etude::model::copy::CopyMix>, String> {
    let opts = EvalOptions {
        batch: loaded.meta.optim.batch,
        baselines: true,
        reuse,
        cache,
        copy: CopyChoice::Fit,
        // The run's own sample of its validation targets (none: all of them).
        valid_targets: loaded.meta.data.data.valid_targets,
        ..EvalOptions::default()
    };
    match evaluate_checkpoint(b, loaded, source, &opts) {
        Ok(r) => {
            println!("{}", describe(&r));
            let json = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
            atomic_write(&out.join("baseline.json"), json.as_bytes())?;
            Ok(r.copy.map(|c| c.mix))
        }
        Err(e) => {
            eprintln!("note: no baseline.json: {e}");
            Ok(None)
        }
    }
}

