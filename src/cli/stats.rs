//! `etude stats`: musical statistics of MIDI files, alone or against a reference set.

use clap::Args;
use etude::data::corpus::{load_corpus, Corpus};
use etude::music::midi::ReadOptions;
use etude::music::stats::{compare, describe};
use etude::data::corpus::no_usable_file;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  etude stats runs/lstm-x/sample.mid
  etude stats generated-*.mid --against ../shared/corpus/mutopia-piano-heldout
  etude stats ../shared/corpus/mutopia-piano --json

Per piece: notes, length, pitch range, distinct pitches, pitch and pitch-class entropy, polyphony,
scale consistency, notes per quarter, inter-onset-interval and duration histograms (entropy,
distinct values), repetition (share of recurring 8-note pitch n-grams, longest repeated run).
With --against: the reference's range of each feature, how many pieces fall outside it, and the
overlap of the intra-set and inter-set distance distributions (Yang & Lerch 2018). Collapsed
pieces (few pitches, low pitch entropy, repetitive, one rhythm) are flagged.")]
pub struct StatsArgs {
    /// MIDI files or folders (recursive).
    #[arg(value_name = "PATH", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Reference MIDI files or folders to compare against.
    #[arg(long, value_name = "PATH", num_args = 1..)]
    pub against: Vec<PathBuf>,
    /// Keep every pitched part, not only piano parts.
    #[arg(long)]
    pub all_parts: bool,
    /// Hold notes while the sustain pedal (CC64) is down.
    #[arg(long)]
    pub sustain: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn read(paths: &[PathBuf], opts: &ReadOptions, what: &str) -> Result<Corpus, String> {
    let corpus = load_corpus(paths, opts);
    for s in &corpus.skipped {
        eprintln!("skipped {}: {}", s.name, s.cause);
    }
    if corpus.pieces.is_empty() {
        let names = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        return Err(format!("{what}: {}", no_usable_file(&names, &corpus.skipped)));
    }
    Ok(corpus)
}

pub fn run(args: StatsArgs) -> Result<(), String> {
    let opts = ReadOptions { all_parts: args.all_parts, sustain: args.sustain };
    let notes = |c: Corpus| c.pieces.into_iter().map(|p| (p.name, p.piece.notes)).collect::<Vec<_>>();
    let pieces = notes(read(&args.paths, &opts, "stats")?);
    let reference = if args.against.is_empty() { Vec::new() } else { notes(read(&args.against, &opts, "--against")?) };
    let report = compare(&pieces, &reference);
    if args.json {
        println!("{}", serde_json::to_string(&report).map_err(|e| e.to_string())?);
    } else {
        print!("{}", describe(&report));
    }
    Ok(())
}
