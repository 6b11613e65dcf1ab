//! `etude eval`: the held-out metric of a checkpoint on MIDI files, beside the n-gram baselines.

use super::backend::{BackendArgs, Engine};
use super::CacheArgs;
use clap::Args;
use etude::engine::Backend;
use etude::run::checkpoint::Checkpoint;
use etude::eval::heldout::{describe, evaluate_checkpoint, CopyChoice, EvalOptions};
use etude::run::Loaded;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  etude eval --model runs/lstm-x/best.safetensors                       # its validation pieces
  etude eval --model CKPT --data ../shared/corpus/mutopia-piano-heldout --json

Every token at position >= T of each piece (T = the checkpoint's window) is a target, predicted
from the T tokens before it; many-to-many models are read at their last position, so all four
models are scored on the same pairs. The n-gram baselines are fitted on the run's training pieces.
Unknown tokens count as <unk> (the model was never asked to predict them, so they weigh on the loss).
A checkpoint whose run fitted the copy mixture (the end of etude train) is also scored mixed with
what followed earlier matches of its window's end (see the README).
The pieces (and the run's corpus, for the baselines) come from the token cache, as in train.")]
pub struct EvalArgs {
    /// Checkpoint to evaluate.
    #[arg(long = "model", value_name = "CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// MIDI files or folders (default: the checkpoint's validation pieces).
    #[arg(long = "data", value_name = "PATH", num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Windows per batch.
    #[arg(long, default_value_t = 64, value_parser = super::values::at_least_one)]
    pub batch: usize,
    /// Score at most this many targets, evenly spaced (0 = all; a quick estimate, not the metric).
    #[arg(long, default_value_t = 0)]
    pub max_windows: usize,
    /// Score a seeded sample of this many targets, spread over the pieces (the run's seed; the
    /// sample `etude train --val-targets` draws on the same pieces) [default: every target].
    #[arg(long, value_name = "N", conflicts_with = "max_windows")]
    pub val_targets: Option<usize>,
    /// Skip the n-gram baselines (they re-read the run's training corpus).
    #[arg(long)]
    pub no_baseline: bool,
    /// Piano-roll data: the split of the --data file to score (train, valid or test) [default: valid].
    #[arg(long, value_parser = ["train", "valid", "test"])]
    pub split: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Also write the scored (context, target) pairs as token ids to this JSON file (to check the
    /// loss with another framework: see scripts/torch_roundtrip.py).
    #[arg(long, value_name = "FILE.json")]
    pub dump_windows: Option<PathBuf>,
    /// Overwrite an existing --dump-windows file.
    #[arg(long)]
    pub force: bool,
    /// Fit the copy mixture's weights on the checkpoint's validation pieces now (never on --data)
    /// and score it, whether or not the checkpoint holds fitted weights.
    #[arg(long, conflicts_with = "no_copy")]
    pub fit_copy: bool,
    /// Score the model alone, without the checkpoint's copy mixture.
    #[arg(long)]
    pub no_copy: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// The checks of `--dump-windows` made before any work: never over the checkpoint or the data it
/// scores, and over an existing file only with `--force`.
pub fn check_outputs(args: &EvalArgs) -> Result<(), String> {
    if let Some(out) = &args.dump_windows {
        let inputs: Vec<(&std::path::Path, &str)> = std::iter::once((args.checkpoint.as_path(), "the checkpoint --model reads"))
            .chain(args.data.iter().map(|d| (d.as_path(), "a --data file")))
            .collect();
        etude::files::check_output(out, "--dump-windows", args.force, &inputs)?;
    }
    Ok(())
}

/// `etude eval` with a token model's checkpoint, `read` once by the caller (`main.rs`, which sends
/// piano-roll checkpoints to [`super::roll::eval`]).
pub fn run(args: EvalArgs, read: Result<Checkpoint, String>) -> Result<(), String> {
    let loaded = Loaded::from_checkpoint(read?, &args.checkpoint)?;
    match args.backend.open()? {
        Engine::Cpu(b) => go(&b, &loaded, &args),
        Engine::Gpu(g) => go(g.as_ref(), &loaded, &args),
    }
}

fn go<B: Backend>(b: &B, loaded: &Loaded, args: &EvalArgs) -> Result<(), String> {
    let opts = EvalOptions {
        data: args.data.clone(),
        batch: args.batch,
        max_targets: args.max_windows,
        baselines: !args.no_baseline,
        dump_windows: args.dump_windows.clone(),
        reuse: None,
        valid_targets: args.val_targets.filter(|&n| n > 0),
        cache: args.cache.dir(),
        copy: if args.no_copy {
            CopyChoice::Off
        } else if args.fit_copy {
            CopyChoice::Fit
        } else {
            CopyChoice::Stored
        },
    };
    let report = evaluate_checkpoint(b, loaded, &args.checkpoint, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string(&report).map_err(|e| e.to_string())?);
    } else {
        println!("{}", describe(&report));
    }
    Ok(())
}
