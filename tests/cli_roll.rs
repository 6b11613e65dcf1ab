//! Piano-roll mode through the `etude` binary (issue 14): the independent-Bernoulli baseline
//! through `etude eval` (a model whose output is only each key's log-odds on the training frames),
//! a tiny end-to-end run (train on a piano-roll file and on MIDI files, eval, generate), and the
//! one-line errors of bad input.

#[path = "cli_common/mod.rs"]
mod cli_common;

use cli_common::{etude, etude_fails, etude_ok, stderr};
use etude::engine::cpu::CpuBackend;
use etude::music::midi::{read_midi, ReadOptions};
use etude::rng::Rng;
use etude::data::roll::{to_json_gz, Frame, Sequence, KEYS};
use etude::model::roll::{build, RollConfig};
use etude::train::roll::{save, RollMeta, RollTrainSettings, MODE};
use std::path::Path;

fn write_data(dir: &Path, name: &str, splits: &[(&str, &[Sequence])]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, to_json_gz(splits)).unwrap();
    path.display().to_string()
}

#[test]
fn a_bias_only_model_gives_the_independent_bernoulli_baseline_through_eval() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(1);
    let (train, valid) = (cli_common::random_roll_split(&mut rng, 12), cli_common::random_roll_split(&mut rng, 7));
    // one key on in most training frames, so that one probability exceeds 1/2 and the accuracy
    // has true and false positives to count
    let train: Vec<Sequence> = train
        .into_iter()
        .map(|s| s.into_iter().enumerate().map(|(t, mut f)| {
            if t % 4 != 0 && !f.contains(&20) {
                f.push(20);
                f.sort_unstable();
            }
            f
        }).collect())
        .collect();
    let data = write_data(dir.path(), "toy.pianoroll.json.gz", &[("train", &train), ("valid", &valid)]);

    // Each key's probability on the training frames (add-one smoothing, as SOURCE.md's baseline).
    let frames: Vec<&Frame> = train.iter().flatten().collect();
    let mut count = [0usize; KEYS];
    for f in &frames {
        for &k in f.iter() {
            count[k as usize] += 1;
        }
    }
    let p: Vec<f64> = count.iter().map(|&c| (c as f64 + 1.0) / (frames.len() as f64 + 2.0)).collect();
    assert!(p[20] > 0.5);
    // The baseline on the valid split, by hand in float64: every frame but each sequence's first.
    let (mut nll, mut n, mut tp, mut fp, mut fn_) = (0.0f64, 0usize, 0usize, 0usize, 0usize);
    for s in &valid {
        for f in &s[1..] {
            n += 1;
            for (k, &pk) in p.iter().enumerate() {
                let on = f.contains(&(k as u8));
                nll -= if on { pk.ln() } else { (1.0 - pk).ln() };
                match (pk > 0.5, on) {
                    (true, true) => tp += 1,
                    (true, false) => fp += 1,
                    (false, true) => fn_ += 1,
                    _ => {}
                }
            }
        }
    }
    let baseline = nll / n as f64;
    let accuracy = tp as f64 / (tp + fp + fn_) as f64;

    // The model: an LSTM whose output layer is zero, its bias the log-odds.
    let b = CpuBackend::new();
    let cfg = RollConfig::Lstm { embed: 4, hidden: 3, layers: 1 };
    let mut m = build(&b, &cfg, 64, &mut Rng::new(0));
    let zeros = vec![0.0f32; KEYS * 3];
    let bias: Vec<f32> = p.iter().map(|&q| (q / (1.0 - q)).ln() as f32).collect();
    for param in m.params_mut() {
        match param.name.as_str() {
            "out.weight" => param.value.set(&b, &zeros),
            "out.bias" => param.value.set(&b, &bias),
            _ => {}
        }
    }
    let meta = RollMeta {
        mode: MODE.into(),
        config: cfg.clone(),
        settings: RollTrainSettings::for_test(),
        frame_quarters: 0.5,
        data: data.clone(),
        epoch: 0,
        valid_nll: None,
        params: cfg.n_params(),
        head: Default::default(),
    };
    let ck = dir.path().join("bias.safetensors");
    save(&b, m.as_ref(), &meta, &ck).unwrap();
    let ck = ck.display().to_string();
    let (out, _) = etude_ok(&["eval", "--model", &ck, "--data", &data, "--split", "valid", "--json", "--backend", "cpu"], dir.path());
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let got = v["nll_per_frame"].as_f64().unwrap();
    assert!((got - baseline).abs() < 1e-4 * baseline, "eval {got} vs baseline {baseline}");
    assert_eq!(v["frames"].as_u64().unwrap() as usize, n);
    assert_eq!(v["sequences"].as_u64().unwrap() as usize, valid.len());
    assert!((v["accuracy"].as_f64().unwrap() - accuracy).abs() < 1e-9, "{v} vs accuracy {accuracy}");
    // the same through the GPU backend
    let (out, _) = etude_ok(&["eval", "--model", &ck, "--data", &data, "--split", "valid", "--json", "--backend", "gpu"], dir.path());
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!((v["nll_per_frame"].as_f64().unwrap() - baseline).abs() < 1e-4 * baseline);
    // the split that is not there, and a token-mode option
    etude_fails(&["eval", "--model", &ck, "--data", &data, "--split", "test", "--backend", "cpu"], dir.path(), &["toy.pianoroll.json.gz: no \"test\" split (the file holds train, valid)"]);
}

#[test]
fn train_eval_and_generate_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = Rng::new(2);
    let (train, valid) = (cli_common::random_roll_split(&mut rng, 10), cli_common::random_roll_split(&mut rng, 4));
    let data = write_data(d, "toy.pianoroll.json.gz", &[("train", &train), ("valid", &valid)]);
    for model in ["lstm", "wavenet-gated"] {
        let out = d.join(format!("run-{model}"));
        let out_s = out.display().to_string();
        let sizes: &[&str] =
            if model == "lstm" { &["--embed", "8", "--hidden", "8"] } else { &["--residual", "8", "--skip", "8", "--layers", "3"] };
        let mut args = vec!["train", "--data", &data, "--model", model, "--epochs", "2", "--batch", "4", "--backend", "cpu", "--out", &out_s];
        args.extend_from_slice(sizes);
        let (_, err) = etude_ok(&args, d);
        assert!(err.contains("epoch 2/2") && err.contains("best valid NLL"), "{err}");
        let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
        assert_eq!(csv.lines().count(), 3, "{csv}");
        let ck = out.join("best.safetensors").display().to_string();
        let (text, _) = etude_ok(&["eval", "--model", &ck, "--backend", "cpu"], d);
        assert!(text.contains("[valid]") && text.contains("nats/frame"), "{text}");
        // generate from silence and from a piece, with a cap on the keys
        let mid = d.join(format!("{model}.mid"));
        let mid_s = mid.display().to_string();
        let (text, _) = etude_ok(
            &["generate", "--model", &ck, "--length", "24", "--max-keys", "3", "--temperature", "1.5", "--out", &mid_s, "--backend", "cpu"],
            d,
        );
        assert!(text.contains("24 frames"), "{text}");
        let piece = read_midi(&std::fs::read(&mid).unwrap(), &ReadOptions::default());
        if let Ok(piece) = piece {
            assert!(piece.notes.iter().all(|n| (21..=108).contains(&n.pitch)));
            // at most 3 notes start at any one time
            let mut starts = std::collections::HashMap::new();
            for n in &piece.notes {
                *starts.entry((n.start * 1000.0).round() as i64).or_insert(0) += 1;
            }
            assert!(starts.values().all(|&c| c <= 3), "{starts:?}");
        }
        // never overwritten without --force
        etude_fails(&["generate", "--model", &ck, "--out", &mid_s, "--backend", "cpu"], d, &["exists"]);
        etude_ok(&["generate", "--model", &ck, "--prime", &data, "--length", "8", "--out", &mid_s, "--force", "--frame-quarters", "0.25", "--backend", "cpu"], d);
        // the run folder is not reused
        etude_fails(&args, d, &["already holds a run"]);
    }
}

#[test]
fn trains_on_midi_files_with_the_pianoroll_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let midi = d.join("midi");
    cli_common::write_toy_midi(&midi, 4);
    std::fs::write(midi.join("broken.mid"), b"MThd garbage").unwrap();
    let out = d.join("run").display().to_string();
    let m = midi.display().to_string();
    let (_, err) = etude_ok(
        &["train", "--data", &m, "--tokenizer", "pianoroll", "--steps-per-quarter", "2", "--epochs", "1", "--embed", "4", "--hidden", "4", "--backend", "cpu", "--out", &out],
        d,
    );
    assert!(err.contains("skipped") && err.contains("broken.mid"), "{err}");
    let ck = d.join("run/best.safetensors").display().to_string();
    let (text, _) = etude_ok(&["eval", "--model", &ck, "--data", &m, "--backend", "cpu"], d);
    assert!(text.contains("MIDI files at 2 steps per quarter"), "{text}");
    // A token model's checkpoint given piano-roll data, and piano-roll options, are refused.
    let tok = d.join("tok").display().to_string();
    etude_ok(
        &["train", "--data", &m, "--model", "lstm", "--embed", "4", "--hidden", "4", "--dense", "4", "--window", "8", "--batch", "8", "--epochs", "1", "--sample-length", "0", "--no-cache", "--backend", "cpu", "--out", &tok],
        d,
    );
    let tck = d.join("tok/last.safetensors").display().to_string();
    std::fs::write(d.join("toy.pianoroll.json"), br#"{"valid": [[[60], [61]]]}"#).unwrap();
    etude_fails(&["eval", "--model", &tck, "--data", "toy.pianoroll.json", "--backend", "cpu"], d, &["a token model's checkpoint cannot score piano-roll data"]);
    etude_fails(&["eval", "--model", &tck, "--split", "valid", "--backend", "cpu"], d, &["--split applies to piano-roll data"]);
    etude_fails(&["generate", "--model", &tck, "--max-keys", "3", "--backend", "cpu"], d, &["apply to piano-roll checkpoints"]);
}

#[test]
fn bad_input_gives_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = d.join("bad.pianoroll.json.gz");
    std::fs::write(&bad, to_json_gz(&[("train", &[vec![vec![3u8]]][..])])).unwrap();
    // a pitch of 3 + 21 = 24 is fine: make a real out-of-range one by hand
    std::fs::write(d.join("pitch.pianoroll.json"), br#"{"train": [[[60], [110]]], "valid": [[[60], [61]]]}"#).unwrap();
    etude_fails(&["train", "--data", "pitch.pianoroll.json", "--backend", "cpu"], d, &["pitch.pianoroll.json: train sequence 0 step 1: pitch 110 outside 21..108"]);
    std::fs::write(d.join("cut.pianoroll.json"), br#"{"train": [[[60], [62]"#).unwrap();
    etude_fails(&["train", "--data", "cut.pianoroll.json", "--backend", "cpu"], d, &["cut.pianoroll.json: truncated JSON"]);
    etude_fails(&["train", "--data", &bad.display().to_string(), "--backend", "cpu"], d, &["no \"valid\" split (the file holds train)"]);
    let o = etude(&["train", "--data", "pitch.pianoroll.json", "--stride", "2"], d);
    assert!(stderr(&o).contains("--stride does not apply in piano-roll mode"));
    std::fs::write(d.join("ok.pianoroll.json"), br#"{"train": [[[60], [62]]], "valid": [[[60], [61]]]}"#).unwrap();
    etude_fails(&["train", "--data", "ok.pianoroll.json", "--model", "wavenet"], d, &["--model wavenet has no piano-roll form"]);
    etude_fails(&["train", "--data", "ok.pianoroll.json", "more.mid"], d, &["a piano-roll file is the whole data set"]);
    etude_fails(&["train", "--data", "ok.pianoroll.json", "--sample-length", "10"], d, &["--sample-length does not apply in piano-roll mode"]);
    etude_fails(&["train", "--data", "ok.pianoroll.json", "--val-fraction", "0.2"], d, &["ok.pianoroll.json has its own valid split"]);
    etude_fails(&["train", "--data", "ok.pianoroll.json", "--model", "lstm", "--kernel", "3"], d, &["--kernel applies to --model wavenet-gated"]);
}
