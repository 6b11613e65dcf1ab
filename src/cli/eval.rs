//! `etude eval`: loss, perplexity and accuracy of a checkpoint on MIDI files.

use super::backend::{BackendArgs, Engine};
use clap::Args;
use etude::corpus::load_corpus;
use etude::dataset::Dataset;
use etude::engine::Backend;
use etude::step::Stepper;
use etude::model::Targets;
use etude::train::{eval_picks, evaluate, load_checkpoint, no_usable_file, Loaded};
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  etude eval --model runs/lstm-x/best.safetensors                       # its validation pieces
  etude eval --model CKPT --data ../shared/corpus/mutopia-piano-heldout --json

Unknown tokens count as <unk> (the model was never asked to predict them, so they weigh on the loss).")]
pub struct EvalArgs {
    /// Checkpoint to evaluate.
    #[arg(long = "model", value_name = "CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// MIDI files or folders (default: the checkpoint's validation pieces).
    #[arg(long = "data", value_name = "PATH", num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Windows per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Evaluate at most this many windows, evenly spaced (0 = all).
    #[arg(long, default_value_t = 0)]
    pub max_windows: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write the evaluated windows' token ids and targets to this JSON file (to check the
    /// loss with another framework: see scripts/torch_roundtrip.py).
    #[arg(long, value_name = "FILE.json")]
    pub dump_windows: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

pub fn run(args: EvalArgs) -> Result<(), String> {
    if args.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    let loaded = load_checkpoint(&args.checkpoint)?;
    match args.backend.open()? {
        Engine::Cpu(b) => go(&b, &loaded, &args),
        Engine::Gpu(g) => go(g.as_ref(), &loaded, &args),
    }
}

fn go<B: Backend>(b: &B, loaded: &Loaded, args: &EvalArgs) -> Result<(), String> {
    let spec = &loaded.meta.data;
    let tokenizer = spec.tokenizer()?;
    let (pieces, what) = if args.data.is_empty() {
        let (all, _) = spec.load()?;
        let valid: Vec<_> = all.into_iter().filter(|p| loaded.meta.valid_pieces.contains(&p.name)).collect();
        if valid.is_empty() {
            return Err("the checkpoint's run had no validation pieces; give --data".into());
        }
        (valid, "the checkpoint's validation pieces".to_string())
    } else {
        let corpus = load_corpus(&args.data, &spec.read);
        if corpus.pieces.is_empty() {
            let what = args.data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
            return Err(no_usable_file(&what, &corpus.skipped));
        }
        for s in &corpus.skipped {
            eprintln!("skipped {}: {}", s.name, s.cause);
        }
        (corpus.pieces, format!("{} files", args.data.len()))
    };
    let window = spec.data.window;
    let seqs: Vec<Vec<u32>> = pieces.iter().map(|p| loaded.meta.vocab.encode(&tokenizer.encode(&p.piece.notes))).collect();
    let unk = seqs.iter().flatten().filter(|&&id| id == 0).count();
    let tokens: usize = seqs.iter().map(Vec::len).sum();
    let data = Dataset::new(seqs, Vec::new(), window, spec.data.stride)?;
    if data.is_empty() {
        return Err(format!("no piece of {what} is longer than the window of {window} tokens"));
    }
    let fp = etude::verify::Footprint::of(&loaded.meta.model, args.batch, window, false);
    let limit_bytes = b.max_buffer_bytes().map(u128::from);
    etude::verify::check_footprint(&fp, etude::verify::available_memory(), limit_bytes, &format!("--batch {}", args.batch))?;
    let mut model = loaded.model(b, args.batch, window, &args.checkpoint)?;
    let mut stepper = Stepper::new(b, &model, args.batch);
    let limit = if args.max_windows == 0 { usize::MAX } else { args.max_windows };
    let t = evaluate(b, &mut model, &mut stepper, &data, args.batch, limit);
    if let Some(path) = &args.dump_windows {
        dump_windows(path, &data, eval_picks(data.len(), limit), loaded.meta.model.targets(), t.loss())?;
    }
    if args.json {
        let j = serde_json::json!({
            "checkpoint": args.checkpoint.display().to_string(),
            "model": loaded.meta.model.name(),
            "pieces": pieces.len(),
            "tokens": tokens,
            "unknown_tokens": unk,
            "windows": data.len().min(limit),
            "targets": t.rows,
            "loss": t.loss(),
            "perplexity": t.perplexity(),
            "accuracy": t.accuracy(),
        });
        println!("{j}");
    } else {
        println!(
            "{} on {what} ({} pieces, {} tokens, {} unknown): loss {:.4}, perplexity {:.2}, top-1 accuracy {:.3} over {} targets",
            loaded.meta.model.name(),
            pieces.len(),
            tokens,
            unk,
            t.loss(),
            t.perplexity(),
            t.accuracy(),
            t.rows
        );
    }
    Ok(())
}

/// Write the windows `picks` of `data` as JSON: `{"window": T, "per_position": bool, "inputs":
/// [[ids; T]; N], "targets": [id; N] or [[ids; T]; N], "loss": mean}` — `per_position` when the
/// model predicts the next token at every position (targets `[N, T]`), else one target per
/// window. The ids are the checkpoint vocabulary's.
fn dump_windows(path: &Path, data: &Dataset, picks: Vec<usize>, targets: Targets, loss: f64) -> Result<(), String> {
    let inputs: Vec<&[u32]> = picks.iter().map(|&i| data.input(i)).collect();
    let per_position = targets == Targets::Every;
    let ys: serde_json::Value = if per_position {
        picks.iter().map(|&i| data.target_every(i)).collect::<Vec<_>>().into()
    } else {
        picks.iter().map(|&i| data.target_last(i)).collect::<Vec<_>>().into()
    };
    let j = serde_json::json!({
        "window": data.window(),
        "per_position": per_position,
        "inputs": inputs,
        "targets": ys,
        "loss": loss,
    });
    // Through a temporary file: a full disk leaves no empty or partial JSON behind.
    etude::checkpoint::atomic_write(path, j.to_string().as_bytes())
}
