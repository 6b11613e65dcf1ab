//! An etude checkpoint loads into the PyTorch models of ../shared/peers/torch_models.py and gives
//! the loss etude computes on the same windows (scripts/torch_roundtrip.py), for every model.
//!
//! Needs a Python with torch and safetensors: `$ETUDE_PYTHON` if set, else `python3`. Without one
//! the test says it was skipped and why, and passes (the one external-tool test that may skip).
mod cli_common;

use cli_common::*;
use etude::run::checkpoint::Checkpoint;
use std::path::Path;
use std::process::Command;

fn python() -> String {
    std::env::var("ETUDE_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Why the round trip cannot run here, if it cannot.
fn missing_python() -> Option<String> {
    let py = python();
    match Command::new(&py).args(["-c", "import torch, safetensors"]).output() {
        Err(e) => Some(format!("{py}: {e}")),
        Ok(o) if !o.status.success() => {
            let err = String::from_utf8_lossy(&o.stderr);
            Some(format!("{py} cannot import torch and safetensors: {}", err.lines().last().unwrap_or("")))
        }
        Ok(_) => None,
    }
}

/// Multiply every parameter of the checkpoint by `factor`: a tiny model trained for a few steps
/// predicts almost uniformly (loss ~ ln V whatever the weights), so a wrong mapping of a tensor
/// could go unseen; larger weights give logits that depend strongly on every tensor.
fn sharpen(ck: &Path, factor: f32) {
    let mut c = Checkpoint::load(ck).unwrap();
    for t in c.tensors.iter_mut().filter(|t| !t.name.starts_with("optimizer.")) {
        t.data.iter_mut().for_each(|v| *v *= factor);
    }
    c.save(ck).unwrap();
}

#[test]
fn pytorch_computes_etudes_loss_from_its_checkpoint() {
    if let Some(why) = missing_python() {
        println!("skipped: {why} (set ETUDE_PYTHON to a Python with torch and safetensors)");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/torch_roundtrip.py");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (name, bytes) = etude::data::corpus::builtin().into_iter().next().unwrap();
    std::fs::write(dir.join("held.mid"), bytes).unwrap();
    // lstm with 3 layers and the gated WaveNet with 2 stacks: the configurations the peers'
    // models do not take directly.
    let runs: [(&str, &[&str]); 4] =
        [("lstm", &["--layers", "3"]), ("lstm-seq", &[]), ("wavenet", &[]), ("wavenet-gated", &["--stacks", "2"])];
    for (model, extra) in runs {
        let extra: Vec<&str> = extra.iter().copied().chain(["--sample-length", "0"]).collect();
        etude_ok(&tiny_train(model, "cpu", model, "1", &extra), dir);
        let ck = dir.join(model).join("last.safetensors");
        sharpen(&ck, 3.0);
        let vocab = Checkpoint::load(&ck).unwrap().meta["vocab"]["tokens"].as_array().expect("vocabulary").len();
        let out = Command::new(python())
            .arg(&script)
            .arg(&ck)
            .arg(dir.join("held.mid"))
            .args(["--etude", env!("CARGO_BIN_EXE_etude"), "--max-windows", "64"])
            .output()
            .expect("run the script");
        let text = String::from_utf8_lossy(&out.stdout);
        println!("{model} on {name}:\n{text}");
        assert!(out.status.success(), "{model}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
        let field = |label: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no {label} in {text}"));
            line[label.len()..].split_whitespace().next().unwrap().parse().unwrap()
        };
        let (etude_loss, torch_loss) = (field("etude loss"), field("torch loss"));
        // The comparison means something only away from the uniform prediction.
        let uniform = (vocab as f64).ln();
        assert!((etude_loss - uniform).abs() > 0.5, "{model}: loss {etude_loss} is too close to ln V");
        assert!((etude_loss - torch_loss).abs() <= 1e-4, "{model}: etude {etude_loss}, torch {torch_loss}");
    }
}
