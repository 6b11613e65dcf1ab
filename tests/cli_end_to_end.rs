//! The whole job through the binary, for every model on both backends: train a tiny model on the
//! built-in corpus, check the run folder, generate from it in every mode (the MIDI reads back with
//! the notes the command reported), and evaluate it.
//!
//! The GPU runs use whatever adapter wgpu finds (lavapipe, the software driver, is enough).
mod cli_common;

use cli_common::*;
use std::path::Path;

/// Two built-in pieces written into `dir/held` (a folder for `eval --data`).
fn held_out_folder(dir: &Path) -> &'static str {
    let held = dir.join("held");
    std::fs::create_dir_all(&held).unwrap();
    for (name, bytes) in etude::data::corpus::builtin().into_iter().take(2) {
        let file = name.trim_start_matches(etude::data::corpus::BUILTIN_PREFIX);
        std::fs::write(held.join(file), bytes).unwrap();
    }
    "held"
}

/// `etude eval --json` output, checked for a finite loss.
fn eval_json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["eval", "--json"];
    a.extend_from_slice(args);
    let (out, _) = etude_ok(&a, dir);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("--json: {e}: {out}"));
    let loss = v["loss"].as_f64().expect("loss is a number");
    assert!(loss.is_finite() && loss > 0.0, "{v}");
    assert!(v["targets"].as_u64().unwrap() > 0, "{v}");
    v
}

/// Every generation mode and option on the CPU backend, from `ck`.
fn generate_everything(dir: &Path, ck: &str, model: &str) {
    let gen = |extra: &[&str], count: usize| {
        let mut a = vec!["generate", "--model", ck, "--backend", "cpu"];
        a.extend_from_slice(extra);
        let (_, err) = etude_ok(&a, dir);
        check_written(dir, &err, count)
    };
    // Two pieces of 30 tokens, named NAME-1 and NAME-2.
    let w = gen(&["--count", "2", "--length", "30", "--out", "two.mid"], 2);
    assert_eq!(w.iter().map(|x| x.path.to_string_lossy().into_owned()).collect::<Vec<_>>(), ["two-1.mid", "two-2.mid"]);
    assert!(w.iter().all(|x| x.tokens == 30), "{w:?}");
    // Greedy, and the tutorial's sliding window (the simple WaveNet's only mode).
    let w = gen(&["--greedy", "--length", "30", "--out", "greedy.mid"], 1);
    assert_eq!(w[0].tokens, 30);
    let (_, err) = etude_ok(
        &["generate", "--model", ck, "--backend", "cpu", "--sliding-window", "--length", "30", "--out", "sw.mid"],
        dir,
    );
    check_written(dir, &err, 1);
    assert!(err.contains("SlidingWindow mode"), "{err}");
    if model != "wavenet" {
        // Incremental is the default where the model has it.
        let (_, err) =
            etude_ok(&["generate", "--model", ck, "--backend", "cpu", "--length", "5", "--out", "inc.mid"], dir);
        assert!(err.contains("Incremental mode"), "{err}");
    } else {
        etude_fails(&["generate", "--model", ck, "--incremental", "--out", "inc.mid"], dir, &["--sliding-window"]);
        assert!(!dir.join("inc.mid").exists());
    }
    // A length in seconds: the piece (at the default 120 quarter notes per minute) lasts at least
    // that long, and is cut at the first token that reaches it. Every notechord token sounds for
    // 0.5 quarter note (0.25 s) starting 0.25 s after the previous one, so the first prefix that
    // lasts 5 s ends at 5 s (at 5.25 s at most, should a token decode to nothing).
    let w = gen(&["--seconds", "5", "--out", "secs.mid"], 1);
    let piece = read_mid(&dir.join("secs.mid"));
    let end_s = piece.notes.iter().map(|n| n.end).fold(0.0, f64::max) * 0.5;
    assert!((5.0..=5.25).contains(&end_s), "--seconds 5 gave a piece of {end_s} s ({w:?})");
    // The same seed gives the same bytes; another seed (another prime, other draws) does not.
    for (seed, out) in [("7", "a.mid"), ("7", "b.mid"), ("8", "c.mid")] {
        gen(&["--seed", seed, "--length", "30", "--out", out], 1);
    }
    let bytes = |f: &str| std::fs::read(dir.join(f)).unwrap();
    assert_eq!(bytes("a.mid"), bytes("b.mid"), "same --seed, different MIDI");
    assert_ne!(bytes("a.mid"), bytes("c.mid"), "--seed 7 and 8 gave the same MIDI");
    // An existing output is not overwritten without --force.
    etude_fails(&["generate", "--model", ck, "--backend", "cpu", "--out", "a.mid"], dir, &["a.mid", "--force"]);
    assert_eq!(bytes("a.mid"), bytes("b.mid"));
}

fn full_cycle(model: &str, backend: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (out, err) = etude_ok(&tiny_train(model, backend, "run", "2", &[]), dir);
    assert!(out.contains("finished epoch 2"), "{out}");
    // The sample written at the end of training reads back with the reported notes.
    let w = check_written(dir, &err, 1);
    assert_eq!((w[0].path.as_path(), w[0].tokens), (Path::new("run/sample.mid"), 20));
    check_run_folder(&dir.join("run"), 2);
    let ck = "run/last.safetensors";

    let held = held_out_folder(dir);
    let v = eval_json(dir, &["--model", ck, "--backend", backend]);
    assert_eq!(v["model"], model);
    let on_folder = eval_json(dir, &["--model", ck, "--backend", backend, "--data", held]);
    assert_eq!(on_folder["pieces"], 2, "{on_folder}");
    // The windows it evaluated, for checking the loss elsewhere (scripts/torch_roundtrip.py).
    let v = eval_json(
        dir,
        &["--model", ck, "--backend", backend, "--data", held, "--max-windows", "5", "--dump-windows", "w.json"],
    );
    let w: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("w.json")).unwrap()).unwrap();
    // One target per window for every model (many-to-many models are read at their last position).
    assert_eq!(w["per_position"].as_bool(), Some(false));
    assert_eq!((w["inputs"].as_array().unwrap().len(), w["targets"].as_array().unwrap().len()), (5, 5));
    assert_eq!(w["inputs"][0].as_array().unwrap().len(), 16);
    assert_eq!(v["targets"].as_u64().unwrap(), 5);
    assert_eq!(w["loss"], v["loss"]);
    // The n-gram baselines on the same targets, and the ratio.
    let best = v["ngram_best"].as_f64().expect("ngram_best");
    assert!(best.is_finite() && best > 0.0, "{v}");
    assert!((v["ratio"].as_f64().unwrap() - v["loss"].as_f64().unwrap() / best).abs() < 1e-9, "{v}");

    if backend == "cpu" {
        generate_everything(dir, ck, model);
    } else {
        // The default mode (incremental where the model has it) and the sliding window, on the GPU.
        for (mode, out) in [("--greedy", "g.mid"), ("--sliding-window", "gsw.mid")] {
            let args = ["generate", "--model", ck, "--backend", "gpu", "--length", "30", mode, "--out", out];
            let (_, err) = etude_ok(&args, dir);
            assert_eq!(check_written(dir, &err, 1)[0].tokens, 30);
        }
        // Both engines evaluate the checkpoint alike. Each sums ~1000 f32 cross-entropies in its
        // own order; 1e-4 relative is two orders above that rounding and far below any real bug.
        let cpu = eval_json(dir, &["--model", ck, "--backend", "cpu", "--data", held]);
        let (a, b) = (cpu["loss"].as_f64().unwrap(), on_folder["loss"].as_f64().unwrap());
        assert!((a - b).abs() <= 1e-4 * a, "eval loss: cpu {a}, gpu {b}");
    }
}

#[test]
fn lstm_cpu() {
    full_cycle("lstm", "cpu");
}

#[test]
fn lstm_seq_cpu() {
    full_cycle("lstm-seq", "cpu");
}

#[test]
fn wavenet_cpu() {
    full_cycle("wavenet", "cpu");
}

#[test]
fn wavenet_gated_cpu() {
    full_cycle("wavenet-gated", "cpu");
}

#[test]
fn lstm_gpu() {
    full_cycle("lstm", "gpu");
}

#[test]
fn lstm_seq_gpu() {
    full_cycle("lstm-seq", "gpu");
}

#[test]
fn wavenet_gpu() {
    full_cycle("wavenet", "gpu");
}

#[test]
fn wavenet_gated_gpu() {
    full_cycle("wavenet-gated", "gpu");
}

/// The default model is the default recipe's: a gated WaveNet with 4 attention heads of width 32
/// (issue 13), which composes with the sliding window; `--attention 0` is the plain gated WaveNet,
/// and the other models get no heads.
#[test]
fn wavenet_gated_has_the_default_recipes_attention_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let heads = |run: &str| match etude::run::load_checkpoint(&dir.join(run).join("last.safetensors")).unwrap().meta.model {
        etude::model::any::ModelConfig::WavenetGated(c) => (c.attention, c.attention_dim),
        other => panic!("{run}: not a gated WaveNet: {other:?}"),
    };
    // tiny_train's sizes without its `--attention 0`.
    let mut args = tiny_train("wavenet-gated", "cpu", "default", "1", &["--sample-length", "0"]);
    let at = args.iter().position(|a| a == "--attention").unwrap();
    args.drain(at..at + 2);
    etude_ok(&args, dir);
    assert_eq!(heads("default"), (4, 32));
    let gen = ["generate", "--model", "default/last.safetensors", "--backend", "cpu", "--length", "5", "--out", "g.mid"];
    let (_, err) = etude_ok(&gen, dir);
    assert!(err.contains("SlidingWindow mode"), "{err}");
    // --attention-dim alone sets the width of the default heads.
    let out = args.iter().position(|a| a == "--out").unwrap();
    args[out + 1] = "wide".into();
    args.extend(["--attention-dim".into(), "8".into()]);
    etude_ok(&args, dir);
    assert_eq!(heads("wide"), (4, 8));
    etude_ok(&tiny_train("wavenet-gated", "cpu", "plain", "1", &["--sample-length", "0"]), dir);
    assert_eq!(heads("plain"), (0, 0));
}

/// `etude bench train --attention H --attention-dim D` times the default model as `etude train`
/// builds it: the report names the heads, and the parameters grow by exactly the attention
/// layer's (q, k, v: S -> H*D and o: H*D -> S, with biases). Without the option the bench keeps
/// the plain gated WaveNet (the PyTorch peers' protocol); on another model it is a one-line error.
#[test]
fn bench_train_takes_the_attention_heads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tiny = ["bench", "train", "--model", "wavenet-gated", "--batch", "1", "--window", "8", "--vocab", "11"];
    let report = |extra: &[&str]| -> serde_json::Value {
        let (out, _) = etude_ok(&[&tiny[..], &["--steps", "1", "--warmup", "0", "--json"], extra].concat(), dir);
        serde_json::from_str(out.trim()).expect("one JSON object")
    };
    let plain = report(&[]);
    let attn = report(&["--attention", "2", "--attention-dim", "4"]);
    assert!(plain.get("attention_heads").is_none(), "{plain}");
    assert_eq!((attn["attention_heads"].as_u64(), attn["attention_dim"].as_u64()), (Some(2), Some(4)), "{attn}");
    let (s, hd) = (etude::model::wavenet_gated::GatedConfig::new(11, 8).skip as u64, 2 * 4);
    let added = attn["params"].as_u64().unwrap() - plain["params"].as_u64().unwrap();
    assert_eq!(added, 3 * (s * hd + hd) + (hd * s + s), "{plain}\n{attn}");
    let lstm = ["bench", "train", "--model", "lstm", "--attention", "2", "--steps", "1"];
    one_line_error(&lstm, dir, &["--attention does not apply to the lstm model"]);
}
