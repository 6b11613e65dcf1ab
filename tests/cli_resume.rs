//! `etude train --resume` continues a run exactly, and a diverging run stops without leaving a
//! broken checkpoint (CPU backend, tiny models on the built-in corpus).
mod cli_common;

use cli_common::*;
use etude::run::checkpoint::Checkpoint;
use std::path::Path;

/// A run of 4 epochs, and one of 2 epochs then `--resume --epochs 4` in the same folder, end
/// with the same metrics (as written) in epochs 3 and 4, bit-identical tensors and the same
/// sample.
fn resume_equals_uninterrupted(model: &str, extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    etude_ok(&tiny_train(model, "cpu", "whole", "4", extra), dir);
    etude_ok(&tiny_train(model, "cpu", "split", "2", extra), dir);
    assert_eq!(metrics_rows(&dir.join("split")).len(), 2);
    // Only --out, --resume, --epochs and the sample's length: the run's own settings come from its checkpoint.
    let (_, err) = etude_ok(
        &["train", "--backend", "cpu", "--out", "split", "--resume", "--epochs", "4", "--sample-length", "20"],
        dir,
    );
    assert!(err.contains("epoch 3/4") && !err.contains("epoch 2/4"), "{err}");

    let (whole, split) = (metrics_rows(&dir.join("whole")), metrics_rows(&dir.join("split")));
    assert_eq!(split.len(), 4, "the resumed run appends epochs 3 and 4");
    for epoch in 0..4 {
        // epoch, step, train_loss, train_accuracy, val_loss, val_perplexity, val_accuracy (the
        // rest are timings).
        assert_eq!(whole[epoch][..7], split[epoch][..7], "{model}: metrics of epoch {}", epoch + 1);
    }
    let tensors = |run: &str| Checkpoint::load(&dir.join(run).join("last.safetensors")).unwrap().tensors;
    let (a, b) = (tensors("whole"), tensors("split"));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().any(|t| t.name.starts_with("optimizer.exp_avg_sq.")), "the Adam moments are saved");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
        let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert!(bits(&x.data) == bits(&y.data), "{model}: {} differs after resume", x.name);
    }
    assert_eq!(params(&dir.join("whole/best.safetensors")), params(&dir.join("split/best.safetensors")));
    // Metadata included (progress, settings, RNG state): the very same file.
    let bytes = |run: &str| std::fs::read(dir.join(run).join("last.safetensors")).unwrap();
    assert!(bytes("whole") == bytes("split"), "{model}: last.safetensors differs in its metadata");
    // The sample comes from the same model with the run's own seed (not --seed's default).
    let sample = |run: &str| std::fs::read(dir.join(run).join("sample.mid")).unwrap();
    assert!(sample("whole") == sample("split"), "{model}: the samples differ");
    // Resuming a run that already reached --epochs trains nothing and changes no checkpoint.
    let last = std::fs::read(dir.join("split/last.safetensors")).unwrap();
    let (_, err) = etude_ok(
        &["train", "--backend", "cpu", "--out", "split", "--resume", "--epochs", "3", "--sample-length", "0"],
        dir,
    );
    assert!(err.contains("already completed 4 epochs"), "{err}");
    assert_eq!(metrics_rows(&dir.join("split")).len(), 4);
    assert!(std::fs::read(dir.join("split/last.safetensors")).unwrap() == last);
}

#[test]
fn resume_equals_uninterrupted_lstm() {
    resume_equals_uninterrupted("lstm", &["--seed", "3"]);
}

#[test]
fn resume_equals_uninterrupted_lstm_seq() {
    resume_equals_uninterrupted("lstm-seq", &[]);
}

#[test]
fn resume_equals_uninterrupted_wavenet() {
    resume_equals_uninterrupted("wavenet", &[]);
}

/// Big enough for the CPU backend's multi-threaded paths (the conv weight gradient is reduced
/// from per-thread partial sums above 2^18 multiply-adds: 16 windows x 32 steps x 2 taps x 16 x 32
/// = 2^19 for a gated block's dilated conv; the softmax and the LSTM split rows across threads).
#[test]
fn resume_equals_uninterrupted_wavenet_gated_multithreaded() {
    resume_equals_uninterrupted("wavenet-gated", &["--batch", "16", "--window", "32", "--residual", "16"]);
}

/// With attention heads (issue 13): the heads travel in the checkpoint's config and the resumed
/// run rebuilds them (its options come from the checkpoint).
#[test]
fn resume_equals_uninterrupted_wavenet_gated_with_attention() {
    resume_equals_uninterrupted("wavenet-gated", &["--attention", "2", "--attention-dim", "4"]);
}

/// The Transformer (issue 26) with dropout on its embedding and residual branches (the masks are
/// recomputed from the step, so the resumed run draws the same ones), big enough for the
/// attention's items to run on both threads.
#[test]
fn resume_equals_uninterrupted_transformer() {
    resume_equals_uninterrupted("transformer", &["--batch", "16", "--window", "32", "--dropout", "0.2"]);
}

/// Set a run's learning rate absurdly high and clipping off, in its checkpoint (what a resumed
/// run reads its optimizer settings from).
fn make_explosive(ck: &Path) {
    let mut c = Checkpoint::load(ck).unwrap();
    c.meta["optim"]["lr"] = serde_json::json!(1e30);
    c.meta["optim"]["clip"] = serde_json::json!(0.0);
    c.save(ck).unwrap();
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    etude_ok(&tiny_train("lstm", "cpu", "run", "1", &[]), dir);
    let last = dir.join("run/last.safetensors");
    make_explosive(&last);
    let before = std::fs::read(&last).unwrap();
    let best_before = std::fs::read(dir.join("run/best.safetensors")).unwrap();

    let err = etude_fails(
        &["train", "--backend", "cpu", "--out", "run", "--resume", "--epochs", "3"],
        dir,
        &["training stopped in epoch 2", "non-finite", "the last good checkpoint is kept in run/last.safetensors"],
    );
    assert!(!err.contains("epoch 2/3"), "no metrics line for the broken epoch:\n{err}");
    assert_eq!(std::fs::read(&last).unwrap(), before, "last.safetensors was overwritten");
    assert_eq!(std::fs::read(dir.join("run/best.safetensors")).unwrap(), best_before);
    assert_eq!(metrics_rows(&dir.join("run")).len(), 1, "no metrics row for the broken epoch");
    // The kept checkpoint still composes.
    let (_, err) =
        etude_ok(&["generate", "--model", "run/last.safetensors", "--backend", "cpu", "--length", "10"], dir);
    check_written(dir, &err, 1);
}

#[test]
fn a_run_diverging_from_the_start_writes_no_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let args = tiny_train("lstm", "cpu", "run", "2", &["--lr", "1e30", "--clip", "0"]);
    etude_fails(&args, dir, &["training stopped in epoch 1", "non-finite", "no checkpoint had been written yet"]);
    for f in ["last.safetensors", "best.safetensors", "metrics.csv", "sample.mid"] {
        assert!(!dir.join("run").join(f).exists(), "{f} was written");
    }
    // With one step per epoch, the losses of epoch 1 are taken before the step that breaks the
    // model: its validation loss is what shows it, and that model must not be saved either.
    let args = tiny_train("lstm", "cpu", "one", "2", &["--lr", "1e30", "--clip", "0", "--steps-per-epoch", "1"]);
    etude_fails(&args, dir, &["training stopped in epoch 1", "validation loss", "no checkpoint had been written yet"]);
    assert!(!dir.join("one/last.safetensors").exists());
}
