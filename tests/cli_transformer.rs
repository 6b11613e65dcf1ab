//! `--model transformer` end to end on the CPU (issue 26): a tiny run trains, writes checkpoints
//! whose tensors are torch_transformer.py's names and shapes, composes its sample through the
//! key/value cache, and `generate` and `eval` read it; bad sizes are one-line errors naming the
//! option.
mod cli_common;

use cli_common::*;
use etude::run::checkpoint::Checkpoint;

#[test]
fn a_tiny_transformer_trains_generates_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, err) = etude_ok(&tiny_train("transformer", "cpu", "run", "2", &["--dropout", "0.1"]), dir);
    assert!(err.contains("Incremental mode"), "the sample is composed with the cache: {err}");
    check_run_folder(&dir.join("run"), 2);
    let ck = Checkpoint::load(&dir.join("run/best.safetensors")).unwrap();
    let shape = |n: &str| ck.tensor(n).map(|t| t.shape.clone());
    assert_eq!(shape("blocks.1.attn.rel"), Some(vec![2, 16, 8]), "rel [heads, window, width / heads]");
    assert_eq!(shape("blocks.0.attn.qkv.weight"), Some(vec![48, 16]));
    assert_eq!(shape("blocks.1.mlp.fc.weight"), Some(vec![24, 16]));
    assert_eq!(shape("ln_f.weight"), Some(vec![16]));
    assert!(shape("blocks.2.ln1.weight").is_none(), "two blocks");

    // Generation runs past the window (16) with the cache, in both modes.
    let (_, err) = etude_ok(&["generate", "--model", "run/best.safetensors", "--length", "60", "--out", "a.mid", "--seed", "2"], dir);
    check_written(dir, &err, 1);
    let (_, err) =
        etude_ok(&["generate", "--model", "run/best.safetensors", "--length", "60", "--out", "b.mid", "--seed", "2", "--sliding-window"], dir);
    check_written(dir, &err, 1);
    // The transformer draws from the model alone unless --copy asks for the run's copy mixture.
    let piece = |name: &str, extra: &[&str]| {
        let args = [&["generate", "--model", "run/best.safetensors", "--length", "60", "--out", name, "--seed", "2"][..], extra].concat();
        etude_ok(&args, dir);
        std::fs::read(dir.join(name)).unwrap()
    };
    let a = std::fs::read(dir.join("a.mid")).unwrap();
    assert!(piece("plain.mid", &["--no-copy"]) == a, "the default is --no-copy");
    assert!(piece("mixed.mid", &["--copy"]) != a, "--copy mixes the copy distribution in");
    let (out, _) = etude_ok(&["eval", "--model", "run/best.safetensors"], dir);
    assert!(out.contains("transformer") && out.contains("NLL"), "{out}");
}

#[test]
fn bad_transformer_sizes_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    one_line_error(&["train", "--model", "transformer", "--width", "10", "--heads", "3"], dir, &["--heads 3 does not divide --width 10"]);
    one_line_error(&["train", "--model", "lstm", "--heads", "2"], dir, &["--heads does not apply to the lstm model"]);
    one_line_error(&["train", "--model", "transformer", "--attention", "2"], dir, &["--attention does not apply to the transformer model"]);
    one_line_error(&["train", "--model", "transformer", "--ff", "0"], dir, &["--ff must be at least 1"]);

    // A checkpoint whose data window is longer than its relative table (16 distances) is refused
    // by every command that reads it, in one line naming both.
    etude_ok(&tiny_train("transformer", "cpu", "run", "1", &["--sample-length", "0"]), dir);
    let mut c = Checkpoint::load(&dir.join("run/best.safetensors")).unwrap();
    c.meta["data"]["data"]["window"] = serde_json::json!(32);
    c.save(&dir.join("long.safetensors")).unwrap();
    let expect = ["long.safetensors", "relative table covers 16 tokens, the data's window is 32"];
    one_line_error(&["generate", "--model", "long.safetensors", "--out", "x.mid"], dir, &expect);
    one_line_error(&["eval", "--model", "long.safetensors"], dir, &expect);
}

/// The transformer's recipe: without `--dropout` it trains with its own rate (0.1, chosen on the
/// validation split), not the gated WaveNet's 0.3; a given `--dropout` is kept.
#[test]
fn the_transformer_recipe_has_its_own_dropout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let dropout_of = |run: &str| Checkpoint::load(&dir.join(run).join("last.safetensors")).unwrap().meta["optim"]["dropout"].as_f64().unwrap() as f32;
    let mut args = tiny_train("transformer", "cpu", "own", "1", &["--sample-length", "0"]);
    let at = args.iter().position(|a| a == "--dropout").unwrap();
    args.drain(at..at + 2);
    etude_ok(&args, dir);
    assert_eq!(dropout_of("own"), 0.1);
    etude_ok(&tiny_train("transformer", "cpu", "given", "1", &["--sample-length", "0", "--dropout", "0.25"]), dir);
    assert_eq!(dropout_of("given"), 0.25);
}
