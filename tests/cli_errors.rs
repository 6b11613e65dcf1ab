//! What the binary refuses, and that refusing leaves nothing behind: damaged or foreign
//! checkpoints, a prime the model cannot read, corpora without music, contradictory options.
mod cli_common;

use cli_common::*;
use etude::music::midi::{write_midi, Note, WriteOptions};
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

/// A tiny trained lstm run in `dir/run`.
fn trained(dir: &Path) {
    etude_ok(&tiny_train("lstm", "cpu", "run", "1", &["--sample-length", "0"]), dir);
}

/// `generate` and `eval` both refuse `ck` with a one-line error naming it, print nothing on
/// stdout and write no file.
fn refused(dir: &Path, ck: &str, expect: &str) {
    let before: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    for args in [
        vec!["generate", "--model", ck, "--backend", "cpu", "--length", "10", "--out", "out.mid"],
        vec!["eval", "--model", ck, "--backend", "cpu", "--json"],
    ] {
        let o = etude(&args, dir);
        let err = stderr(&o);
        assert!(!o.status.success(), "{} accepted {ck}", args[0]);
        assert_eq!(err.lines().count(), 1, "{} {ck}: one line expected:\n{err}", args[0]);
        assert!(err.starts_with(&format!("error: {ck}")), "{} {ck}: the error should name the file:\n{err}", args[0]);
        assert!(err.contains(expect), "{} {ck}: expected {expect:?} in:\n{err}", args[0]);
        assert!(o.stdout.is_empty(), "{}", stdout(&o));
    }
    let after: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before, after, "a refused checkpoint left a file behind");
}

#[test]
fn damaged_and_foreign_checkpoints_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    trained(dir);
    let good = std::fs::read(dir.join("run/last.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();

    // Truncated: in the header, and by one byte of tensor data.
    write("cut-header.safetensors", &good[..header_len / 2]);
    refused(dir, "cut-header.safetensors", "not a safetensors checkpoint");
    write("cut-data.safetensors", &good[..good.len() - 1]);
    refused(dir, "cut-data.safetensors", "not a safetensors checkpoint");
    write("empty.safetensors", b"");
    refused(dir, "empty.safetensors", "not a safetensors checkpoint");

    // One flipped bit: in the header's length, and in the JSON header (a quote becomes a
    // control character).
    let mut flipped = good.clone();
    flipped[5] ^= 0x10;
    write("flip-length.safetensors", &flipped);
    refused(dir, "flip-length.safetensors", "not a safetensors checkpoint");
    let header = std::str::from_utf8(&good[8..8 + header_len]).unwrap();
    let quote = 8 + header.find('"').unwrap();
    let mut flipped = good.clone();
    flipped[quote] ^= 0x20; // '"' (0x22) -> 0x02
    write("flip-json.safetensors", &flipped);
    refused(dir, "flip-json.safetensors", "not a safetensors checkpoint");
    // A flipped bit that keeps the header valid JSON but changes a parameter's shape
    // ("shape":[8,...] -> "shape":[9,...] moves no byte, yet breaks the offsets or the model).
    let at = 8 + header.find("\"shape\":[8").expect("a dimension of 8") + "\"shape\":[".len();
    let mut flipped = good.clone();
    flipped[at] ^= 0x01; // '8' -> '9'
    write("flip-shape.safetensors", &flipped);
    refused(dir, "flip-shape.safetensors", "not a safetensors checkpoint");
    // Bits flipped in a tensor's data that make a value non-finite (exponent all ones).
    let mut flipped = good.clone();
    let value = 8 + header_len + 4; // the second f32 of the first tensor
    flipped[value + 3] |= 0x7f;
    flipped[value + 2] |= 0x80;
    write("flip-data.safetensors", &flipped);
    refused(dir, "flip-data.safetensors", "non-finite");

    // Valid safetensors, but not etude's: no metadata at all, and a format tag over foreign JSON.
    let w = [0u8; 8];
    let tensor = || vec![("w".to_string(), TensorView::new(Dtype::F32, vec![2], &w).unwrap())];
    write("foreign.safetensors", &safetensors::serialize(tensor(), None).unwrap());
    refused(dir, "foreign.safetensors", "not an etude checkpoint");
    let md = [("format", etude::run::checkpoint::FORMAT), ("etude", "{\"hello\": 1}")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    write("alien-meta.safetensors", &safetensors::serialize(tensor(), Some(md)).unwrap());
    refused(dir, "alien-meta.safetensors", "not etude's");

    // Not there, and a directory.
    refused(dir, "missing.safetensors", "missing.safetensors");
    refused(dir, "run", "run");
}

/// `notes` as a MIDI file at `dir/name`.
fn midi_file(dir: &Path, name: &str, pitches: impl Iterator<Item = u8>) {
    let notes: Vec<Note> =
        pitches.enumerate().map(|(i, p)| Note::new(p, i as f64 * 0.5, i as f64 * 0.5 + 0.5, 80)).collect();
    std::fs::write(dir.join(name), write_midi(&notes, &WriteOptions::default())).unwrap();
}

#[test]
fn a_prime_the_model_cannot_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    trained(dir);
    let gen = |prime: &str, extra: &[&str]| -> Vec<String> {
        let a = ["generate", "--model", "run/last.safetensors", "--backend", "cpu", "--prime", prime];
        a.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    // Pitches the built-in corpus never plays (C-1..F-1, G#8..G9): not in the vocabulary.
    midi_file(dir, "alien.mid", (0..6).chain(120..128));
    let err = etude_fails(&gen("alien.mid", &[]), dir, &["alien.mid", "not in the model's vocabulary", "C-1"]);
    assert!(err.contains("14 of its 14 tokens"), "{err}");
    // Not a MIDI file.
    std::fs::write(dir.join("text.mid"), b"not music").unwrap();
    etude_fails(&gen("text.mid", &[]), dir, &["text.mid", "not a MIDI file"]);
    // Missing.
    etude_fails(&gen("nowhere.mid", &[]), dir, &["nowhere.mid"]);
    // Known tokens, but fewer than the window sliding-window generation needs.
    midi_file(dir, "short.mid", [60u8, 62, 64].into_iter());
    etude_fails(&gen("short.mid", &["--sliding-window"]), dir, &["the prime has 3 tokens", "window of 16"]);
    assert!(!dir.join("generated.mid").exists(), "a refused prime left a MIDI file");
    // The same short prime is fine for incremental generation.
    let (_, err) = etude_ok(&gen("short.mid", &["--length", "5", "--include-prime"]), dir);
    let w = check_written(dir, &err, 1);
    assert_eq!(w[0].tokens, 5);
}

#[test]
fn corpora_without_music_are_refused_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("empty")).unwrap();
    let garbage = dir.join("garbage");
    std::fs::create_dir(&garbage).unwrap();
    std::fs::write(garbage.join("a.mid"), b"MThd\0\0\0\x06 nonsense").unwrap();
    std::fs::write(garbage.join("b.midi"), b"").unwrap();
    std::fs::write(garbage.join("notes.txt"), b"not even a MIDI name").unwrap();
    let train = |data: &str, out: &str| {
        let mut a = tiny_train("lstm", "cpu", out, "1", &[]);
        a.extend(["--data".to_string(), data.to_string()]);
        a
    };
    // The stored paths are absolute (so generate and eval find the corpus from anywhere).
    etude_fails(&train("empty", "r1"), dir, &["no .mid or .midi file found in /", "/empty"]);
    etude_fails(
        &train("garbage", "r2"),
        dir,
        &["no usable MIDI file in /", "/garbage", "2 skipped", "a.mid", "b.midi: empty file"],
    );
    etude_fails(&train("nowhere", "r3"), dir, &["nowhere"]);
    for out in ["r1", "r2", "r3"] {
        assert!(!dir.join(out).join("last.safetensors").exists(), "{out}: a checkpoint was written");
    }
    // A file with notes but shorter than one window: no training window.
    midi_file(dir, "tiny.mid", [60u8, 62, 64].into_iter());
    etude_fails(&train("tiny.mid", "r4"), dir, &["no training window"]);
    assert!(!dir.join("r4/last.safetensors").exists());
}

#[test]
fn contradictory_options_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    trained(dir);
    let files = ["last.safetensors", "best.safetensors", "metrics.csv", "loss.png"];
    let snapshot = || files.map(|f| std::fs::read(dir.join("run").join(f)).unwrap());
    let before = snapshot();

    // --resume needs --out.
    etude_fails(&["train", "--resume", "--backend", "cpu"], dir, &["--out"]);
    // Training into a folder that holds a run, without --resume.
    etude_fails(&tiny_train("lstm", "cpu", "run", "2", &[]), dir, &["run already holds a run", "--resume"]);
    // --resume with an option that would change the run.
    for (flag, value) in
        [("--model", "wavenet"), ("--lr", "0.1"), ("--window", "8"), ("--data", "x.mid"), ("--seed", "4")]
    {
        let args = ["train", "--out", "run", "--resume", "--epochs", "2", flag, value, "--backend", "cpu"];
        etude_fails(&args, dir, &["--resume", flag]);
    }
    // --resume where there is no run.
    etude_fails(
        &["train", "--out", "elsewhere", "--resume", "--backend", "cpu"],
        dir,
        &["elsewhere", "nothing to resume"],
    );
    assert!(!dir.join("elsewhere").exists());
    // Sizes the model does not have, impossible fractions, and zero sizes.
    let bad: [(&str, &[&str], &[&str]); 8] = [
        ("wavenet", &["--hidden", "8"], &["--hidden does not apply to the wavenet model"]),
        ("lstm", &["--attention", "2"], &["--attention does not apply to the lstm model"]),
        ("wavenet-gated", &["--attention", "2", "--attention-dim", "0"], &["--attention-dim must be at least 1"]),
        ("wavenet-gated", &["--attention-dim", "8"], &["--attention-dim needs --attention"]),
        ("lstm", &["--channels", "8"], &["--channels does not apply to the lstm model"]),
        ("lstm", &["--val-fraction", "1.5"], &["--val-fraction", "1.5"]),
        ("lstm", &["--batch", "0"], &["--batch"]),
        ("lstm", &["--lr", "0"], &["--lr must be a positive number"]),
    ];
    for (model, extra, expect) in bad {
        etude_fails(&tiny_train(model, "cpu", "fresh", "1", extra), dir, expect);
        // Into the existing run: refused too (by whichever check comes first).
        etude_fails(&tiny_train(model, "cpu", "run", "1", extra), dir, &[]);
    }
    assert!(!dir.join("fresh/last.safetensors").exists());
    // Generation modes that contradict each other or the model.
    etude_fails(
        &["generate", "--model", "run/last.safetensors", "--sliding-window", "--incremental"],
        dir,
        &["--sliding-window", "--incremental"],
    );
    etude_fails(
        &["generate", "--model", "run/last.safetensors", "--length", "5", "--seconds", "2"],
        dir,
        &["--seconds"],
    );
    for (flag, value) in [("--count", "0"), ("--temperature", "0"), ("--top-p", "1.5"), ("--seconds", "0")] {
        etude_fails(&["generate", "--model", "run/last.safetensors", "--backend", "cpu", flag, value], dir, &[flag]);
    }
    assert!(!dir.join("generated.mid").exists());
    assert!(before == snapshot(), "a refused command changed the existing run");
}

/// A gated WaveNet with attention heads has no one-step generation: `--incremental` is a one-line
/// error naming the cause and the way out, writing nothing; the default mode composes.
#[test]
fn an_attention_model_refuses_incremental_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let heads = ["--attention", "2", "--attention-dim", "4", "--sample-length", "0"];
    etude_ok(&tiny_train("wavenet-gated", "cpu", "att", "1", &heads), dir);
    let model = "att/last.safetensors";
    let base = ["generate", "--model", model, "--backend", "cpu", "--length", "5", "--out", "g.mid"];
    let err = etude_fails(&[&base[..], &["--incremental"]].concat(), dir, &["attention", "--sliding-window"]);
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_default();
    assert!(line.contains("attention") && line.contains("--sliding-window"), "the cause on one line: {err}");
    assert!(!dir.join("g.mid").exists());
    etude_ok(&base, dir);
    assert!(dir.join("g.mid").exists());
}
