//! `etude inspect` driven as a user would.

use etude::music::midi::{write_midi, Note, WriteOptions};
use std::process::Command;

fn etude(args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_etude")).args(args).current_dir(dir).output().expect("run etude")
}

#[test]
fn inspect_builtin_corpus_from_any_directory() {
    let elsewhere = tempfile::tempdir().unwrap();
    let out = etude(&["inspect"], elsewhere.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("builtin:maple-leaf-rag.mid"), "{text}");
    assert!(text.contains("files used     102"), "{text}");
    assert!(text.contains("most frequent"), "{text}");

    let out = etude(&["inspect", "--json", "--tokenizer", "timed"], elsewhere.path());
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(v["totals"]["files_used"], 102);
    assert_eq!(v["totals"]["tokenizer"], "timed");
    assert_eq!(v["files"].as_array().unwrap().len(), 102);
    assert!(v["totals"]["tokens"].as_u64().unwrap() > 10_000);
    assert_eq!(v["totals"]["top_tokens"].as_array().unwrap().len(), 10);
    assert!(v["files"][0]["tracks"].as_array().unwrap().len() >= 2);
}

#[test]
fn bad_files_are_skipped_by_name_and_only_all_bad_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mixed = dir.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    let notes: Vec<Note> = (0..8).map(|i| Note::new(60 + i, i as f64 * 0.5, i as f64 * 0.5 + 0.5, 90)).collect();
    std::fs::write(mixed.join("good.mid"), write_midi(&notes, &WriteOptions::default())).unwrap();
    std::fs::write(mixed.join("bad.mid"), b"MThd garbage").unwrap();
    let out = etude(&["inspect", "mixed"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("skipped ")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("bad.mid:"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("good.mid: 8 piano notes"), "{stdout}");
    assert!(stdout.contains("files skipped  1"), "{stdout}");

    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("empty.mid"), b"").unwrap();
    std::fs::write(bad.join("text.midi"), b"hello").unwrap();
    let out = etude(&["inspect", "bad"], dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("skipped bad/empty.mid: empty file"), "{stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("error: ")), "{stderr}");

    let out = etude(&["inspect", "--tokenizer", "nope"], dir.path());
    assert!(!out.status.success());
}

#[test]
fn help_has_examples() {
    let dir = tempfile::tempdir().unwrap();
    for args in [vec!["--help"], vec!["inspect", "--help"]] {
        let out = etude(&args, dir.path());
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("Examples:"), "{args:?}");
    }
}
