//! Every command reads each checkpoint file once: `train` (fresh, resumed, and resumed with
//! nothing left to train), `generate` and `eval` on a token checkpoint and on a piano-roll one.
//! The commands run in this thread, which logs every [`Checkpoint::load`].

use crate::{Cli, Command};
use clap::Parser;
use etude::run::checkpoint::reads_on_this_thread;
use etude::engine::cpu::CpuBackend;
use etude::rng::Rng;
use etude::data::roll::to_json_gz;
use etude::model::roll::{build, RollConfig};
use etude::train::roll::{save, RollMeta, RollTrainSettings, MODE};
use std::path::{Path, PathBuf};

/// Run `etude ARGS` in this thread, returning its error, and the checkpoint files it read.
fn run(args: &[&str]) -> (Result<(), String>, Vec<PathBuf>) {
    reads_on_this_thread();
    let cli = Cli::try_parse_from(std::iter::once("etude").chain(args.iter().copied())).expect("valid arguments");
    let result = match cli.command {
        Command::Train(a) => super::train::run(*a),
        Command::Generate(a) => crate::generate(a),
        Command::Eval(a) => crate::eval(a),
        _ => unreachable!("only train, generate and eval read checkpoints"),
    };
    (result, reads_on_this_thread())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_generate_and_eval_read_each_checkpoint_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let (last, best) = (out.join("last.safetensors"), out.join("best.safetensors"));
    let tiny = [
        "--model", "lstm", "--embed", "8", "--hidden", "8", "--dense", "8", "--layers", "1", "--window", "16",
        "--batch", "8", "--steps-per-epoch", "2", "--tokenizer", "notechord", "--transpose", "0", "--dropout",
        "0", "--warmup-steps", "0", "--lr-schedule", "constant",
    ];
    let common = ["--backend", "cpu", "--no-cache", "--out", s(&out)];
    let train = |extra: &[&str]| run(&[&["train"][..], &common, extra].concat());

    // A fresh run writes its checkpoints and reads one, once: the best, which is scored against
    // the baselines and composes the sample.
    let (r, reads) = train(&[&tiny[..], &["--epochs", "1", "--sample-length", "8"]].concat());
    r.unwrap();
    assert_eq!(reads, std::slice::from_ref(&best));
    // Resumed: the last checkpoint once (its precision and settings, then the run itself), the
    // new best once.
    let (r, reads) = train(&["--resume", "--epochs", "2", "--sample-length", "8"]);
    r.unwrap();
    assert_eq!(reads, [last.clone(), best.clone()]);
    // Nothing left to train: the epochs done come from the checkpoint read at the start.
    let (r, reads) = train(&["--resume", "--epochs", "2", "--sample-length", "0"]);
    r.unwrap();
    assert_eq!(reads, [last.clone(), best.clone()]);

    let g = tmp.path().join("g.mid");
    let (r, reads) = run(&["generate", "--model", s(&best), "--length", "8", "--out", s(&g), "--backend", "cpu", "--no-cache"]);
    r.unwrap();
    assert_eq!(reads, std::slice::from_ref(&best));
    let (r, reads) = run(&["eval", "--model", s(&best), "--no-baseline", "--max-windows", "16", "--backend", "cpu", "--no-cache"]);
    r.unwrap();
    assert_eq!(reads, std::slice::from_ref(&best));
    // An unreadable checkpoint: read once, and the error names it.
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let (r, reads) = run(&["eval", "--model", s(&junk), "--backend", "cpu", "--no-cache"]);
    assert!(r.unwrap_err().contains("junk.safetensors"));
    assert_eq!(reads, [junk]);
}

#[test]
fn piano_roll_generate_and_eval_read_the_checkpoint_once() {
    let tmp = tempfile::tempdir().unwrap();
    let seq: Vec<Vec<u8>> = (0..12).map(|t| vec![40 + (t % 5) as u8]).collect();
    let data = tmp.path().join("toy.pianoroll.json.gz");
    std::fs::write(&data, to_json_gz(&[("train", &[seq.clone()][..]), ("valid", &[seq][..])])).unwrap();
    let b = CpuBackend::new();
    let cfg = RollConfig::Lstm { embed: 4, hidden: 3, layers: 1 };
    let m = build(&b, &cfg, 64, &mut Rng::new(0));
    let meta = RollMeta {
        mode: MODE.into(),
        config: cfg.clone(),
        settings: RollTrainSettings::for_test(),
        frame_quarters: 0.5,
        data: data.display().to_string(),
        epoch: 0,
        valid_nll: None,
        params: cfg.n_params(),
        head: Default::default(),
    };
    let ck = tmp.path().join("roll.safetensors");
    save(&b, m.as_ref(), &meta, &ck).unwrap();
    let g = tmp.path().join("g.mid");
    let (r, reads) = run(&["generate", "--model", s(&ck), "--length", "4", "--out", s(&g), "--backend", "cpu"]);
    r.unwrap();
    assert_eq!(reads, std::slice::from_ref(&ck));
    let (r, reads) = run(&["eval", "--model", s(&ck), "--data", s(&data), "--backend", "cpu"]);
    r.unwrap();
    assert_eq!(reads, [ck]);
}
