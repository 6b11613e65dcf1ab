//! Piano-roll runs go through the training loop of the token runs (issue 25 item 2, issue 27):
//! `--resume` continues a run exactly, `--checkpoint-every` keeps `epoch-N.safetensors`, the run
//! folder gets its loss curve and report, and the new options fail in one line (CPU backend,
//! tiny models on random piano-roll data).

#[path = "cli_common/mod.rs"]
mod cli_common;

use cli_common::{etude_fails, etude_ok};
use etude::data::roll::to_json_gz;
use etude::rng::Rng;
use std::path::Path;

/// The rows of a run's `metrics.csv` after the header.
fn metrics_rows(run: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).expect("metrics.csv");
    text.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

/// A toy piano-roll file in `dir`, its name.
fn toy(dir: &Path, name: &str, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let (train, valid) = (cli_common::random_roll_split(&mut rng, 12), cli_common::random_roll_split(&mut rng, 4));
    std::fs::write(dir.join(name), to_json_gz(&[("train", &train), ("valid", &valid)])).unwrap();
    name.to_string()
}

/// `etude train` of a tiny piano-roll model on `data` into `out` for `epochs` epochs; `extra`
/// after. A constant learning rate after a warm-up (a cosine schedule's length is fixed when a run
/// starts, so a run of 2 epochs resumed to 4 follows another curve than a run of 4), with dropout
/// and transposition, which draw from the step and the epoch.
fn tiny<'a>(data: &'a str, out: &'a str, epochs: &'a str, head: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["train", "--data", data, "--out", out, "--epochs", epochs, "--backend", "cpu", "--model", "lstm"];
    a.extend_from_slice(&["--embed", "8", "--hidden", "8", "--layers", "1", "--batch", "3", "--window", "8", "--head", head]);
    a.extend_from_slice(&["--lr-schedule", "constant", "--warmup-steps", "3", "--dropout", "0.1", "--transpose", "2"]);
    a.extend_from_slice(extra);
    a
}

/// A run of 4 epochs, and one of 2 epochs then `--resume --epochs 4`, end with the same
/// checkpoints, byte for byte, and the same metrics (but the seconds).
fn resume_equals_uninterrupted(head: &str, extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let data = toy(d, "toy.pianoroll.json.gz", 3);
    let mut with_cadence = vec!["--checkpoint-every", "2"];
    with_cadence.extend_from_slice(extra);
    etude_ok(&tiny(&data, "whole", "4", head, &with_cadence), d);
    etude_ok(&tiny(&data, "split", "2", head, &with_cadence), d);
    assert_eq!(metrics_rows(&d.join("split")).len(), 2);
    // --out, --resume and --epochs alone: the data, model and settings are the run's.
    let (_, err) = etude_ok(&["train", "--out", "split", "--resume", "--epochs", "4", "--backend", "cpu"], d);
    assert!(err.contains("resuming the piano-roll run") && err.contains("epoch 3/4") && !err.contains("epoch 2/4"), "{err}");
    let (whole, split) = (metrics_rows(&d.join("whole")), metrics_rows(&d.join("split")));
    assert_eq!(split.len(), 4, "the resumed run appends epochs 3 and 4");
    for e in 0..4 {
        // epoch, train NLL, valid NLL, accuracy, lr (then the seconds).
        assert_eq!(whole[e][..5], split[e][..5], "{head}: metrics of epoch {}", e + 1);
    }
    let bytes = |run: &str, f: &str| std::fs::read(d.join(run).join(f)).unwrap_or_else(|e| panic!("{run}/{f}: {e}"));
    for f in ["last.safetensors", "best.safetensors", "epoch-4.safetensors"] {
        assert!(bytes("whole", f) == bytes("split", f), "{head}: {f} differs after resume");
    }
    for f in ["epoch-2.safetensors", "loss.png", "report.html", "resume.safetensors"] {
        assert!(d.join("whole").join(f).exists(), "{f} is missing");
    }
    assert!(!d.join("whole/epoch-1.safetensors").exists() && !d.join("whole/epoch-3.safetensors").exists());
    let report = String::from_utf8(bytes("split", "report.html")).unwrap();
    assert!(report.contains("valid nll per frame"), "the report shows the run's metrics");
    // The checkpoints still load as piano-roll models.
    let (text, _) = etude_ok(&["eval", "--model", "split/best.safetensors", "--backend", "cpu"], d);
    assert!(text.contains("nats/frame"), "{text}");
    // Resuming a run that has reached its epochs trains nothing and changes no checkpoint.
    let last = bytes("split", "last.safetensors");
    etude_ok(&["train", "--out", "split", "--resume", "--epochs", "4", "--backend", "cpu"], d);
    assert_eq!(metrics_rows(&d.join("split")).len(), 4);
    assert!(bytes("split", "last.safetensors") == last);
}

#[test]
fn resume_equals_uninterrupted_sigmoid() {
    resume_equals_uninterrupted("sigmoid", &[]);
}

#[test]
fn resume_equals_uninterrupted_nade() {
    resume_equals_uninterrupted("nade", &["--nade-hidden", "6"]);
}

/// Without --epochs, a resumed run trains to the epochs it was started with.
#[test]
fn resume_keeps_the_runs_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let data = toy(d, "toy.pianoroll.json.gz", 4);
    etude_ok(&tiny(&data, "run", "1", "sigmoid", &[]), d);
    assert!(!d.join("run/epoch-1.safetensors").exists(), "--checkpoint-every is 50 unless given");
    let (_, err) = etude_ok(&["train", "--out", "run", "--resume", "--backend", "cpu"], d);
    assert!(err.contains("after epoch 1, until epoch 1"), "{err}");
    assert_eq!(metrics_rows(&d.join("run")).len(), 1);
    etude_ok(&["train", "--out", "run", "--resume", "--epochs", "2", "--backend", "cpu"], d);
    assert_eq!(metrics_rows(&d.join("run")).len(), 2);
}

/// A run on MIDI files (`--tokenizer pianoroll`) resumes on the same pieces, split the same way,
/// from another directory.
#[test]
fn a_run_on_midi_files_resumes_on_its_own_split() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    cli_common::write_toy_midi(&d.join("midi"), 5);
    std::fs::create_dir_all(d.join("elsewhere")).unwrap();
    let midi = ["--tokenizer", "pianoroll", "--steps-per-quarter", "2", "--val-fraction", "0.4", "--seed", "7"];
    etude_ok(&tiny("midi", "whole", "3", "sigmoid", &midi), d);
    etude_ok(&tiny("midi", "split", "1", "sigmoid", &midi), d);
    etude_ok(&["train", "--out", "../split", "--resume", "--epochs", "3", "--backend", "cpu"], &d.join("elsewhere"));
    let bytes = |run: &str| std::fs::read(d.join(run).join("last.safetensors")).unwrap();
    assert!(bytes("whole") == bytes("split"), "the resumed run differs");
}

#[test]
fn bad_resume_input_gives_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let data = toy(d, "toy.pianoroll.json.gz", 6);
    etude_ok(&tiny(&data, "run", "1", "sigmoid", &[]), d);
    etude_fails(&tiny(&data, "run", "1", "sigmoid", &[]), d, &["already holds a run; continue it with --resume"]);
    etude_fails(&["train", "--out", "run", "--resume", "--head", "nade", "--backend", "cpu"], d, &["--head: a resumed run keeps its own model"]);
    // A run without its resume state (an older build's) is named as such, not read as a token run.
    std::fs::create_dir(d.join("old")).unwrap();
    std::fs::copy(d.join("run/last.safetensors"), d.join("old/last.safetensors")).unwrap();
    etude_fails(&["train", "--out", "old", "--resume", "--backend", "cpu"], d, &["--resume: old holds a piano-roll run without its resume.safetensors"]);
    std::fs::write(d.join("run/resume.safetensors"), b"not a checkpoint").unwrap();
    etude_fails(&["train", "--out", "run", "--resume", "--backend", "cpu"], d, &["resume.safetensors"]);
}

/// Ctrl-C part-way through an epoch of a piano-roll run keeps a state that `--resume` continues
/// exactly: the chunks left in the epoch, with the transpositions and dropout masks they would have
/// drawn, give the checkpoint of a run never interrupted.
#[test]
#[cfg(unix)]
fn ctrl_c_part_way_through_an_epoch_resumes_exactly() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut rng = Rng::new(8);
    let (train, valid) = (cli_common::random_roll_split(&mut rng, 700), cli_common::random_roll_split(&mut rng, 4));
    std::fs::write(d.join("many.pianoroll.json.gz"), to_json_gz(&[("train", &train), ("valid", &valid)])).unwrap();
    // Steps of one chunk, each long enough that the epoch lasts seconds.
    let args = |out: &'static str| {
        let mut a = tiny("many.pianoroll.json.gz", out, "1", "sigmoid", &[]);
        for (flag, value) in [("--embed", "32"), ("--hidden", "128"), ("--layers", "2"), ("--batch", "1")] {
            let at = a.iter().position(|x| *x == flag).unwrap();
            a[at + 1] = value;
        }
        a
    };
    etude_ok(&args("whole"), d);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_etude"))
        .args(args("cut"))
        .current_dir(d)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in std::io::BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok) {
        if line.contains("first step starts") {
            // SAFETY: kill(2) on our own child's PID.
            assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
        }
        seen.push(line);
    }
    let status = child.wait().unwrap();
    let err = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("interrupted at epoch 1 step") && err.contains("cut/resume.safetensors holds it"), "{err}");
    assert!(!d.join("cut/last.safetensors").exists(), "no epoch ended: no model checkpoint");
    etude_ok(&["train", "--out", "cut", "--resume", "--backend", "cpu"], d);
    let bytes = |run: &str| std::fs::read(d.join(run).join("last.safetensors")).unwrap();
    assert!(bytes("whole") == bytes("cut"), "the resumed run differs");
    assert_eq!(metrics_rows(&d.join("cut")).len(), 1);
}
