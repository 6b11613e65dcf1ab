//! `etude prepare` and the token cache from the command line: built once, then up to date; a
//! damaged cache file is reported in one line and rebuilt; skipped files are reported once per
//! run, also from the cache; training with and without the cache writes the same metrics.

mod cli_common;

use cli_common::{col, etude_ok, metrics_rows, tiny_train};
use std::path::Path;

fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    // Ten built-in pieces (some live in subfolders of the built-in corpus: flattened here).
    for (name, bytes) in etude::data::corpus::builtin().into_iter().take(10) {
        std::fs::write(dir.join(name.rsplit(['/', ':']).next().unwrap()), bytes).unwrap();
    }
    std::fs::write(dir.join("broken.mid"), b"not a midi file").unwrap();
}

fn count(text: &str, what: &str) -> usize {
    text.matches(what).count()
}

#[test]
fn prepare_then_train_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_corpus(&dir.join("data"));
    // The tokenizer of the tests' tiny training runs (`tiny_train`), so that training maps this cache.
    let prepare = ["prepare", "--data", "data", "--cache", "tc", "--tokenizer", "notechord"];
    let (out, err) = etude_ok(&prepare, dir);
    assert!(err.contains("tokenised 11 files (1 skipped)") && err.contains("files/s"), "{err}");
    assert_eq!(count(&err, "skipped "), 1, "{err}");
    assert!(err.contains("broken.mid: "), "{err}");
    assert!(out.is_empty(), "{out}");
    let (out, err) = etude_ok(&prepare, dir);
    assert!(out.starts_with("up to date: 10 pieces"), "{out}");
    assert_eq!(count(&err, "broken.mid: "), 1, "skipped files are reported from the cache too: {err}");
    let (_, err) = etude_ok(&["prepare", "--data", "data", "--cache", "tc", "--tokenizer", "notechord", "--force"], dir);
    assert!(err.contains("tokenised 11 files"), "{err}");
    // One file changed: only it is tokenised again.
    let first = std::fs::read_dir(dir.join("data")).unwrap().map(|e| e.unwrap().path()).find(|p| !p.ends_with("broken.mid")).unwrap();
    let mut bytes = std::fs::read(&first).unwrap();
    bytes.extend_from_slice(b"trailing bytes");
    std::fs::write(&first, bytes).unwrap();
    let (out, err) = etude_ok(&prepare, dir);
    assert!(err.contains("out of date (1 files changed, 0 added, 0 removed); rebuilding"), "{err}");
    assert!(err.contains("tokenised 1 files (1 skipped)") && err.contains("10 unchanged files taken from the old cache"), "{err}");
    assert!(out.is_empty(), "{out}");
    let files: Vec<_> = std::fs::read_dir(dir.join("tc")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");

    // Training maps it (and reports the skipped file once).
    let args = |out: &str, cache: &[&str]| {
        let mut a = tiny_train("lstm", "cpu", out, "2", &["--transpose", "2"]);
        a.extend(["--data".to_string(), "data".to_string()]);
        a.extend(cache.iter().map(|s| s.to_string()));
        a
    };
    let (_, err) = etude_ok(&args("cached", &["--cache", "tc"]), dir);
    assert!(err.contains("10 pieces") && err.contains("from the token cache"), "{err}");
    assert!(!err.contains("tokenised"), "{err}");
    assert_eq!(count(&err, "broken.mid: "), 1, "{err}");
    // A damaged cache file: one line, rebuilt, and the run is the same.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0xFF;
    std::fs::write(&files[0], bytes).unwrap();
    let (_, err) = etude_ok(&args("rebuilt", &["--cache", "tc"]), dir);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("damaged")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("checksum mismatch") && lines[0].ends_with("rebuilding"), "{err}");
    assert!(err.contains("tokenised 11 files"), "{err}");
    let (_, err) = etude_ok(&args("memory", &["--no-cache"]), dir);
    assert!(!err.contains("token cache"), "{err}");
    let rows = |run: &str| -> Vec<Vec<String>> {
        metrics_rows(&dir.join(run))
            .into_iter()
            .map(|r| ["train_loss", "val_loss", "val_accuracy"].iter().map(|c| r[col(c)].clone()).collect())
            .collect()
    };
    assert_eq!(rows("cached").len(), 2);
    assert_eq!(rows("cached"), rows("memory"));
    assert_eq!(rows("rebuilt"), rows("memory"));
}
