//! `train --preset tutorial`, the files a run leaves for the held-out figures (baseline.json,
//! stats.json), and `etude stats` from the command line.
mod cli_common;

use cli_common::*;
use etude::run::checkpoint::Checkpoint;
use etude::music::midi::{write_midi, Note, WriteOptions};

#[test]
fn the_tutorial_preset_and_its_overrides() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Three pieces (one for validation), to keep the full-sized model quick.
    builtin_pieces(dir, "three", &["bethena.mid", "maple-leaf-rag.mid", "solace.mid"]);
    // --batch given beside the preset overrides it; the rest is the tutorial's.
    let (out, err) = etude_ok(
        &["train", "--preset", "tutorial", "--batch", "8", "--epochs", "1", "--steps-per-epoch", "1"]
            .iter()
            .chain(&["--backend", "cpu", "--out", "t", "--data", "three"])
            .collect::<Vec<_>>(),
        dir,
    );
    let meta = Checkpoint::load(&dir.join("t/last.safetensors")).unwrap().meta;
    assert_eq!(meta["model"]["kind"], "lstm", "{meta}");
    assert_eq!(meta["model"]["seq"], false);
    assert_eq!((meta["model"]["hidden"].as_u64(), meta["model"]["layers"].as_u64()), (Some(128), Some(2)));
    assert_eq!(meta["model"]["dense"].as_u64(), Some(256));
    assert_eq!(meta["data"]["tokenizer"], "notechord");
    assert_eq!(meta["data"]["data"]["window"].as_u64(), Some(128));
    assert_eq!(meta["data"]["data"]["transpose"].as_u64(), Some(0));
    assert_eq!(meta["optim"]["batch"].as_u64(), Some(8), "the explicit --batch wins");
    // The default recipe's regularisation and schedule are off in the preset.
    assert_eq!(meta["optim"]["dropout"].as_f64(), Some(0.0), "{meta}");
    assert_eq!(meta["optim"]["lr_schedule"], "constant");
    assert_eq!(meta["optim"]["warmup_steps"].as_u64(), Some(0));
    // An argmax sample of 50 events.
    let w = check_written(dir, &err, 1);
    assert_eq!(w[0].tokens, 50, "{err}");
    // The held-out figures beside the baselines, on stdout and in baseline.json.
    assert!(out.contains("model / best n-gram"), "{out}");
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("t/baseline.json")).unwrap()).unwrap();
    let (loss, best) = (b["loss"].as_f64().unwrap(), b["ngram_best"].as_f64().unwrap());
    assert!((b["ratio"].as_f64().unwrap() - loss / best).abs() < 1e-9, "{b}");
    assert_eq!(b["data"], "the checkpoint's validation pieces");
    let csv_val: f64 = metrics_rows(&dir.join("t"))[0][col("val_loss")].parse().unwrap();
    assert!((csv_val - loss).abs() < 1e-5, "per-epoch validation {csv_val} and eval {loss} are one metric");
    // baseline.json reuses the best epoch's validation scores from training: `eval` scoring the
    // checkpoint afresh gives the same figures.
    let (fresh, _) = etude_ok(&["eval", "--model", "t/best.safetensors", "--backend", "cpu", "--batch", "8", "--json"], dir);
    let fresh: serde_json::Value = serde_json::from_str(fresh.trim()).unwrap();
    for key in ["loss", "accuracy", "nats_per_note", "targets", "ngram_best"] {
        let (a, e) = (b[key].as_f64().unwrap(), fresh[key].as_f64().unwrap());
        assert!((a - e).abs() <= 1e-6 * e.abs().max(1.0), "{key}: train's baseline.json {a}, eval {e}");
    }
    // Per kind of target (notechord: notes and chords are `other`; no `_` in them), the shares
    // add up to 1 and the weighted losses to the whole set's, for the model and the n-gram.
    let kinds = fresh["by_kind"].as_array().unwrap();
    assert!(!kinds.is_empty(), "{fresh}");
    let sum = |f: &dyn Fn(&serde_json::Value) -> f64| kinds.iter().map(f).sum::<f64>();
    assert!((sum(&|k| k["share"].as_f64().unwrap()) - 1.0).abs() < 1e-9, "{fresh}");
    let model = sum(&|k| k["share"].as_f64().unwrap() * k["loss"].as_f64().unwrap());
    let ngram = sum(&|k| k["share"].as_f64().unwrap() * k["ngram"].as_f64().unwrap());
    assert!((model - fresh["loss"].as_f64().unwrap()).abs() < 1e-9, "{fresh}");
    assert!((ngram - fresh["ngram_best"].as_f64().unwrap()).abs() < 1e-9, "{fresh}");
    // The sample's statistics against the validation pieces.
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("t/stats.json")).unwrap()).unwrap();
    assert_eq!(s["pieces"].as_array().unwrap().len(), 1);
    assert_eq!(s["reference_pieces"].as_u64(), Some(1));
    assert_eq!(s["against"].as_array().unwrap().len(), etude::music::stats::FEATURES.len());

    // An unknown preset: one line naming the option and the choices.
    let err = etude_fails(&["train", "--preset", "tutorail", "--out", "u"], dir, &["--preset", "tutorail", "tutorial"]);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!dir.join("u").exists());
}

#[test]
fn stats_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let loop_notes: Vec<Note> = (0..40).map(|i| Note::new(if i % 2 == 0 { 60 } else { 64 }, i as f64 * 0.5, i as f64 * 0.5 + 0.5, 80)).collect();
    std::fs::write(dir.join("loop.mid"), write_midi(&loop_notes, &WriteOptions::default())).unwrap();
    std::fs::write(dir.join("empty.mid"), write_midi(&[], &WriteOptions::default())).unwrap();
    std::fs::create_dir(dir.join("real")).unwrap();
    for (name, bytes) in etude::data::corpus::builtin().into_iter().take(3) {
        std::fs::write(dir.join("real").join(name.trim_start_matches("builtin:")), bytes).unwrap();
    }
    let (out, _) = etude_ok(&["stats", "loop.mid", "--against", "real", "--json"], dir);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let flags: Vec<&str> = v["pieces"][0]["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    for f in ["few pitches", "repetitive", "pitch_entropy below the reference"] {
        assert!(flags.contains(&f), "{f} missing: {flags:?}");
    }
    assert_eq!(v["reference_pieces"].as_u64(), Some(3));
    let (text, _) = etude_ok(&["stats", "real", "loop.mid"], dir);
    assert!(text.contains("loop.mid") && text.contains("mean of 4 pieces"), "{text}");
    // A file without notes: one line naming it.
    etude_fails(&["stats", "empty.mid"], dir, &["empty.mid", "no notes"]);
    etude_fails(&["stats", "loop.mid", "--against", "empty.mid"], dir, &["--against", "empty.mid"]);
}
