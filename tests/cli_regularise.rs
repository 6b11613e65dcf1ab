//! `etude train` with dropout, AdamW's decay, the warm-up + cosine schedule and early stopping
//! (issue 13), on the CPU backend with tiny models: a run interrupted and resumed is bit-identical
//! to one that never stopped, early stopping stops (and stays stopped), nonsense options are
//! one-line errors, and checkpoints saved before these options existed still resume.
mod cli_common;

use cli_common::*;
use etude::run::checkpoint::Checkpoint;

const ALL_ON: [&str; 14] = [
    "--dropout",
    "0.3",
    "--lr-schedule",
    "cosine",
    "--warmup-steps",
    "2",
    "--min-lr",
    "1e-4",
    "--adamw-decay",
    "0.05",
    "--patience",
    "3",
    "--checkpoint-every",
    "1",
];

/// A 4-epoch run, and the same run "crashed" after epoch 2 (its `epoch-2.safetensors` put back
/// as `last.safetensors`, as if epochs 3 and 4 had never been written) then resumed: the same
/// metrics, bit-identical checkpoints (metadata included) and the same sample.
fn resume_is_exact_with_everything_on(model: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, err) = etude_ok(&tiny_train(model, "cpu", "whole", "4", &ALL_ON), dir);
    // The schedule is visible: warm-up to the peak, then down towards the floor.
    let lrs: Vec<f64> = err
        .lines()
        .filter_map(|l| l.split("| lr ").nth(1))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(lrs.len(), 4, "{err}");
    assert!(lrs.windows(2).all(|w| w[1] < w[0]) && lrs[3] >= 1e-4 && lrs[3] < 2e-4, "{lrs:?}");

    etude_ok(&tiny_train(model, "cpu", "crash", "4", &ALL_ON), dir);
    let run = dir.join("crash");
    std::fs::copy(run.join("epoch-2.safetensors"), run.join("last.safetensors")).unwrap();
    for e in [3, 4] {
        std::fs::remove_file(run.join(format!("epoch-{e}.safetensors"))).unwrap();
    }
    std::fs::remove_file(run.join("sample.mid")).unwrap();
    let (_, err) = etude_ok(
        &["train", "--backend", "cpu", "--out", "crash", "--resume", "--epochs", "4", "--sample-length", "20", "--checkpoint-every", "1"],
        dir,
    );
    assert!(err.contains("epoch 3/4") && !err.contains("epoch 2/4"), "{err}");

    let (whole, crash) = (metrics_rows(&dir.join("whole")), metrics_rows(&run));
    assert_eq!(crash.len(), 4);
    for epoch in 0..4 {
        assert_eq!(whole[epoch][..7], crash[epoch][..7], "{model}: metrics of epoch {}", epoch + 1);
    }
    for file in ["last.safetensors", "epoch-3.safetensors", "epoch-4.safetensors", "best.safetensors", "sample.mid"] {
        let read = |r: &str| std::fs::read(dir.join(r).join(file)).unwrap();
        assert!(read("whole") == read("crash"), "{model}: {file} differs after resume");
    }
    // Everything is stored in the checkpoint.
    let meta = Checkpoint::load(&run.join("last.safetensors")).unwrap().meta;
    let o = &meta["optim"];
    assert_eq!(o["dropout"].as_f64().unwrap() as f32, 0.3);
    assert_eq!(o["adamw_decay"].as_f64().unwrap() as f32, 0.05);
    assert_eq!(o["lr_schedule"], "cosine");
    assert_eq!(o["warmup_steps"], 2);
    assert_eq!(o["min_lr"].as_f64().unwrap() as f32, 1e-4);
    assert_eq!(o["schedule_steps"], 12, "4 epochs of 3 steps");
    assert_eq!(o["patience"], 3);
    assert!(meta["progress"]["epochs_without_improvement"].is_u64());

    // The per-epoch validation scores the model without dropout: the last epoch's validation loss
    // is what `eval` gives for its checkpoint.
    let (ev, _) = etude_ok(&["eval", "--model", "whole/last.safetensors", "--backend", "cpu", "--no-baseline", "--json"], dir);
    let ev: serde_json::Value = serde_json::from_str(ev.trim()).unwrap();
    let csv_val: f64 = whole[3][col("val_loss")].parse().unwrap();
    let eval_loss = ev["loss"].as_f64().unwrap();
    assert!((csv_val - eval_loss).abs() < 1e-5, "{model}: validation {csv_val} with dropout on, eval {eval_loss}");

    // Dropout and the rest changed the run: without them the losses differ.
    etude_ok(&tiny_train(model, "cpu", "plain", "1", &[]), dir);
    assert_ne!(metrics_rows(&dir.join("plain"))[0][2], whole[0][2], "{model}: the options changed nothing");
}

#[test]
fn resume_is_exact_with_dropout_schedule_and_early_stopping_lstm_seq() {
    resume_is_exact_with_everything_on("lstm-seq");
}

#[test]
fn resume_is_exact_with_dropout_schedule_and_early_stopping_lstm() {
    resume_is_exact_with_everything_on("lstm");
}

#[test]
fn resume_is_exact_with_dropout_schedule_and_early_stopping_wavenet() {
    resume_is_exact_with_everything_on("wavenet");
}

#[test]
fn resume_is_exact_with_dropout_schedule_and_early_stopping_wavenet_gated() {
    resume_is_exact_with_everything_on("wavenet-gated");
}

/// With a learning rate too small to move any weight, the validation loss never improves after
/// epoch 1: `--patience 2` stops after epoch 3, and resuming the stopped run trains nothing.
#[test]
fn early_stopping_stops_and_stays_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, err) = etude_ok(&tiny_train("lstm", "cpu", "run", "8", &["--lr", "1e-30", "--patience", "2"]), dir);
    assert!(err.contains("early stop after epoch 3"), "{err}");
    assert!(!err.contains("epoch 4/8"), "{err}");
    assert_eq!(metrics_rows(&dir.join("run")).len(), 3);
    let meta = Checkpoint::load(&dir.join("run/last.safetensors")).unwrap().meta;
    assert_eq!(meta["progress"]["epochs_without_improvement"], 2);
    assert_eq!(meta["progress"]["epoch"], 3);

    let last = std::fs::read(dir.join("run/last.safetensors")).unwrap();
    let (_, err) = etude_ok(&["train", "--backend", "cpu", "--out", "run", "--resume", "--epochs", "8", "--sample-length", "0"], dir);
    assert!(err.contains("stopped early"), "{err}");
    assert!(std::fs::read(dir.join("run/last.safetensors")).unwrap() == last, "a stopped run was changed");
    assert_eq!(metrics_rows(&dir.join("run")).len(), 3);

    // Without --patience the same run goes on.
    let (_, err) = etude_ok(&tiny_train("lstm", "cpu", "on", "4", &["--lr", "1e-30"]), dir);
    assert!(err.contains("epoch 4/4") && !err.contains("early stop"), "{err}");
}

#[test]
fn nonsense_values_are_one_line_errors_naming_the_option() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (extra, expect) in [
        (&["--dropout", "1"][..], "--dropout must be in [0, 1)"),
        (&["--dropout=-0.1"], "--dropout"),
        (&["--dropout", "NaN"], "--dropout"),
        (&["--adamw-decay=-1"], "--adamw-decay"),
        (&["--adamw-decay", "1000"], "--adamw-decay"),
        (&["--min-lr", "0.1"], "--min-lr"),
        (&["--min-lr=-1"], "--min-lr"),
        (&["--lr-schedule", "linear"], "--lr-schedule"),
        (&["--patience=-2"], "--patience"),
        (&["--warmup-steps", "x"], "--warmup-steps"),
    ] {
        let err = etude_fails(&tiny_train("lstm", "cpu", "bad", "1", extra), dir, &[expect]);
        if !extra[0].contains("schedule") && !extra[0].contains("patience") && !extra[0].contains("warmup") {
            // Ours (clap's own errors come with a usage line).
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        assert!(!dir.join("bad").exists(), "{extra:?}: a run folder was made");
    }
    // A resumed run keeps its own settings: changing them is refused.
    etude_ok(&tiny_train("lstm", "cpu", "run", "1", &["--dropout", "0.2"]), dir);
    etude_fails(&["train", "--backend", "cpu", "--out", "run", "--resume", "--epochs", "2", "--dropout", "0.5"], dir, &["--dropout"]);
}

/// A checkpoint saved before these options existed (no such fields in its metadata) resumes as a
/// run with all of them off.
#[test]
fn checkpoints_without_the_new_fields_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    etude_ok(&tiny_train("lstm", "cpu", "old", "1", &[]), dir);
    let path = dir.join("old/last.safetensors");
    let mut ck = Checkpoint::load(&path).unwrap();
    let optim = ck.meta["optim"].as_object_mut().unwrap();
    for key in ["dropout", "adamw_decay", "lr_schedule", "warmup_steps", "min_lr", "schedule_steps", "patience"] {
        assert!(optim.remove(key).is_some(), "{key} is saved");
    }
    ck.meta["progress"].as_object_mut().unwrap().remove("epochs_without_improvement").unwrap();
    ck.save(&path).unwrap();
    let (_, err) =
        etude_ok(&["train", "--backend", "cpu", "--out", "old", "--resume", "--epochs", "2", "--sample-length", "0"], dir);
    assert!(err.contains("epoch 2/2") && !err.contains("| lr"), "{err}");
    let meta = Checkpoint::load(&path).unwrap().meta;
    assert_eq!(meta["optim"]["dropout"], 0.0);
    assert_eq!(meta["optim"]["lr_schedule"], "constant");
}

/// On the GPU backend a run with dropout (and the rest) is deterministic: twice the same command,
/// the very same checkpoint; and its masks are the CPU's, so the first epoch's losses agree with a
/// CPU run to f32 rounding.
#[test]
fn gpu_runs_with_dropout_are_deterministic_and_agree_with_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for out in ["g1", "g2"] {
        etude_ok(&tiny_train("lstm-seq", "gpu", out, "2", &ALL_ON), dir);
    }
    let read = |r: &str| std::fs::read(dir.join(r).join("last.safetensors")).unwrap();
    assert!(read("g1") == read("g2"), "two GPU runs with dropout differ");
    etude_ok(&tiny_train("lstm-seq", "cpu", "c", "2", &ALL_ON), dir);
    let (g, c) = (metrics_rows(&dir.join("g1")), metrics_rows(&dir.join("c")));
    for col in [2, 4] {
        let (a, b): (f64, f64) = (g[0][col].parse().unwrap(), c[0][col].parse().unwrap());
        assert!((a - b).abs() < 1e-4, "column {col}: gpu {a}, cpu {b}");
    }
}
