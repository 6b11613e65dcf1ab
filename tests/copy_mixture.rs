//! The copy mixture end to end: `train` fits it on the validation pieces and stores it in the
//! best checkpoint; `eval` scores it (stored, refitted with `--fit-copy`, or off with
//! `--no-copy`), never fitting on `--data`; `generate` draws from it unless `--no-copy`.
mod cli_common;

use cli_common::*;
use etude::run::checkpoint::Checkpoint;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn train_fits_the_copy_mixture_on_validation_and_eval_and_generate_use_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    builtin_pieces(dir, "three", &["bethena.mid", "maple-leaf-rag.mid", "solace.mid"]);
    builtin_pieces(dir, "other", &["peacherine-rag.mid"]);
    let small = ["--model", "wavenet-gated", "--embed", "8", "--residual", "8", "--skip", "8", "--layers", "4", "--window", "32", "--batch", "4"];
    let run = ["train", "--epochs", "1", "--steps-per-epoch", "3", "--sample-length", "40", "--backend", "cpu", "--out", "r", "--data", "three"];
    let (out, _) = etude_ok(&run.iter().chain(&small).collect::<Vec<_>>(), dir);
    assert!(out.contains("with the copy mixture"), "{out}");

    // baseline.json: the mixture on the validation targets, fitted there.
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("r/baseline.json")).unwrap()).unwrap();
    let c = &b["copy"];
    assert_eq!(c["mix"]["fitted_on"], "the checkpoint's validation pieces", "{b}");
    let weights: Vec<f64> = c["mix"]["weights"].as_array().unwrap().iter().map(f).collect();
    assert_eq!(weights.len(), etude::model::copy::BUCKETS.len());
    assert!(weights.iter().all(|w| (0.0..=etude::model::copy::MAX_WEIGHT).contains(w)), "{weights:?}");
    // A barely trained model gains from copying what came next before.
    assert!(weights.iter().any(|&w| w > 0.0), "{weights:?}");
    let fitted: u64 = c["mix"]["fitted_targets"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).sum();
    let targets = b["targets"].as_u64().unwrap();
    assert!(fitted > 0 && fitted <= targets, "{fitted} of {targets}");
    assert!((f(&c["matched_share"]) - fitted as f64 / targets as f64).abs() < 1e-12);
    // Fitted by maximum likelihood on these very targets: never worse than the model alone (a
    // weight of 0 is among the candidates), and here better.
    let (alone, mixed) = (f(&b["loss"]), f(&c["heldout"]["loss"]));
    assert!(mixed < alone, "mixture {mixed}, model {alone}");
    assert_eq!(c["heldout"]["targets"].as_u64(), Some(targets));
    assert!((f(&c["ratio"]) - mixed / f(&b["ngram_best"])).abs() < 1e-12);
    // The n-gram with the copy mixture, fitted on these targets: never worse than the n-gram alone.
    assert!(f(&c["ngram_with_copy"]) <= f(&b["ngram_best"]) + 1e-12, "{b}");
    // Per kind: the weighted kind losses give back the mixture's loss.
    let kinds = c["by_kind"].as_array().unwrap();
    let shares: Vec<f64> = b["by_kind"].as_array().unwrap().iter().map(|k| f(&k["share"])).collect();
    let back: f64 = kinds.iter().zip(&shares).map(|(k, s)| s * f(&k["loss"])).sum();
    assert!((back - mixed).abs() < 1e-9, "{back} vs {mixed}");

    // The weights travel in the best checkpoint.
    let meta = Checkpoint::load(&dir.join("r/best.safetensors")).unwrap().meta;
    assert_eq!(meta["copy"], c["mix"], "{meta}");

    // eval: the stored mixture gives the same figures as the end of training ...
    let (e, _) = etude_ok(&["eval", "--model", "r/best.safetensors", "--backend", "cpu", "--json", "--no-baseline"], dir);
    let e = json(&e);
    assert!((f(&e["copy"]["heldout"]["loss"]) - mixed).abs() < 1e-9, "{e}");
    // ... off with --no-copy ...
    let (e, _) = etude_ok(&["eval", "--model", "r/best.safetensors", "--backend", "cpu", "--json", "--no-baseline", "--no-copy"], dir);
    assert!(json(&e)["copy"].is_null());
    // ... and refitted with --fit-copy on the validation pieces, never on --data: on other
    // pieces the weights are the stored ones.
    let (e, _) = etude_ok(
        &["eval", "--model", "r/best.safetensors", "--backend", "cpu", "--json", "--no-baseline", "--fit-copy", "--data", "other"],
        dir,
    );
    let e = json(&e);
    assert_eq!(e["copy"]["mix"], c["mix"], "{e}");
    assert_ne!(e["targets"].as_u64(), Some(targets));
    etude_fails(&["eval", "--model", "r/best.safetensors", "--fit-copy", "--no-copy"], dir, &["--no-copy"]);

    // generate: the same seed with and without the mixture draws other pieces; each is repeatable.
    let gen = |out: &str, extra: &[&str]| {
        let mut args = vec!["generate", "--model", "r/best.safetensors", "--backend", "cpu", "--length", "60", "--seed", "3", "--out", out];
        args.extend_from_slice(extra);
        etude_ok(&args, dir);
        std::fs::read(dir.join(out)).unwrap()
    };
    let with = gen("with.mid", &[]);
    assert_eq!(with, gen("with2.mid", &[]));
    assert_ne!(with, gen("without.mid", &["--no-copy"]));
}
