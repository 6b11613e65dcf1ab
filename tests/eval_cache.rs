//! `etude eval`, `etude inspect` and the end of `etude train` (baseline.json, stats.json) read
//! the token cache and give exactly what reading the MIDI gives.

mod cli_common;

use cli_common::{etude_ok, tiny_train};
use std::path::Path;

/// Builtin pieces `range` as flat files in `dir`, and one file that is not MIDI.
fn write_pieces(dir: &Path, range: std::ops::Range<usize>) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in etude::data::corpus::builtin().into_iter().skip(range.start).take(range.len()) {
        std::fs::write(dir.join(name.rsplit(['/', ':']).next().unwrap()), bytes).unwrap();
    }
    std::fs::write(dir.join("broken.mid"), b"not a midi file").unwrap();
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn eval_inspect_and_train_read_the_cache_and_agree_with_the_midi() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_pieces(&dir.join("data"), 0..10);
    write_pieces(&dir.join("other"), 20..24);

    // Training with and without the cache: the same baseline.json (the n-grams are fitted on the
    // transposed training pieces) and stats.json.
    let train = |out: &str, cache: &[&str]| {
        let mut a = tiny_train("lstm-seq", "cpu", out, "1", &["--transpose", "2"]);
        a.extend(["--data", "data"].iter().chain(cache).map(|s| s.to_string()));
        etude_ok(&a, dir)
    };
    train("memory", &["--no-cache"]);
    let (_, err) = train("cached", &["--cache", "tc"]);
    assert!(err.contains("tokenised 11 files"), "{err}");
    let read = |run: &str, file: &str| {
        let mut v = json(&std::fs::read_to_string(dir.join(run).join(file)).unwrap());
        v.as_object_mut().unwrap().remove("checkpoint");
        v
    };
    let baseline = read("memory", "baseline.json");
    assert!(baseline["baseline"]["best"].as_f64().unwrap() > 0.0, "{baseline}");
    assert!(baseline["heldout"].is_null() && baseline["loss"].as_f64().unwrap() > 0.0, "{baseline}");
    assert_eq!(read("cached", "baseline.json"), baseline);
    assert_eq!(read("cached", "stats.json"), read("memory", "stats.json"));

    // eval of the validation pieces and of other files: cold cache, warm cache, no cache.
    let ckpt = "memory/last.safetensors";
    for data in [&[][..], &["--data", "other"][..]] {
        let eval = |cache: &[&str]| {
            let args: Vec<&str> = ["eval", "--model", ckpt, "--json"].iter().chain(data).chain(cache).copied().collect();
            etude_ok(&args, dir)
        };
        let (memory, err) = eval(&["--no-cache"]);
        assert!(!err.contains("token cache"), "{err}");
        let (cold, err_cold) = eval(&["--cache", "tc2"]);
        let (warm, err_warm) = eval(&["--cache", "tc2"]);
        let memory = json(&memory);
        assert!(memory["targets"].as_u64().unwrap() > 0 && memory["nats_per_note"].as_f64().unwrap() > 0.0, "{memory}");
        assert_eq!(json(&cold), memory, "{data:?}");
        assert_eq!(json(&warm), memory, "{data:?}");
        assert!(err_cold.contains("tokenised 11") || err_cold.contains("tokenised 5"), "{err_cold}");
        assert!(!err_warm.contains("tokenised"), "{err_warm}");
        if !data.is_empty() {
            for e in [&err, &err_cold, &err_warm] {
                assert_eq!(e.matches("broken.mid: ").count(), 1, "{e}");
            }
        }
    }

    // inspect: the same report, text and JSON, from the cache (cold, warm) and from the MIDI.
    for format in [&["--json"][..], &[][..]] {
        let inspect = |cache: &[&str]| {
            let args: Vec<&str> = ["inspect", "data", "--tokenizer", "timed"].iter().chain(format).chain(cache).copied().collect();
            etude_ok(&args, dir)
        };
        let (memory, err) = inspect(&["--no-cache"]);
        assert_eq!(err.matches("skipped ").count(), 1, "{err}");
        let (cold, err_cold) = inspect(&["--cache", "tc3"]);
        let (warm, err_warm) = inspect(&["--cache", "tc3"]);
        assert!(memory.contains("broken.mid") && memory.len() > 500, "{memory}");
        assert_eq!(cold, memory);
        assert_eq!(warm, memory);
        assert_eq!(err_warm.matches("skipped ").count(), 1, "{err_warm}");
        assert!(err_cold.contains("tokenised 11 files") || format.is_empty(), "{err_cold}");
    }
}
