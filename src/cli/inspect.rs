//! `etude inspect`: what a corpus holds, file by file, and its totals.

use super::{CacheArgs, DataArgs};
use clap::Args;
use etude::data::corpus::{inspect, load_corpus, FileReport, InspectReport};
use etude::data::token_cache::load_or_build;
use etude::data::cache_file::CacheKey;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  etude inspect                                   # the built-in corpus
  etude inspect --tokenizer timed                 # the same, as time-shift/pitch/duration tokens
  etude inspect ../shared/corpus/mutopia-piano    # a folder, walked recursively
  etude inspect --all-parts --sustain song.mid    # every pitched part, pedal held
  etude inspect --json > corpus.json              # machine-readable
  etude inspect big/ --no-cache                   # read the MIDI, not the token cache

Folders and files are tokenised into the token cache (as train and prepare do, same --cache).

Skipped files are listed on stderr, one line each: `skipped PATH: cause`.
Exits non-zero only when no file is usable.")]
pub struct InspectArgs {
    /// MIDI files or folders (walked recursively for .mid/.midi); none = the built-in corpus.
    #[arg(value_name = "PATH")]
    pub paths: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

pub fn run(args: InspectArgs) -> Result<(), String> {
    let tokenizer = args.data.tokenizer()?;
    let report = match args.cache.dir() {
        // The built-in corpus is never cached.
        Some(dir) if !args.paths.is_empty() => {
            let key = CacheKey {
                paths: etude::eval::data::absolute(&args.paths),
                read: args.data.read_options(),
                tokenizer: args.data.tokenizer.clone(),
                tokenizer_options: args.data.tokenizer_options(),
            };
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let (set, _) = load_or_build(&dir, &key, tokenizer.as_ref(), false, progress)?;
            etude::eval::data::inspect_tokens(&set, tokenizer.name(), &args.paths)?
        }
        _ => inspect(&load_corpus(&args.paths, &args.data.read_options()), tokenizer.as_ref()),
    };
    for s in &report.skipped {
        eprintln!("skipped {}: {}", s.name, s.cause);
    }
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        let kept = if args.data.all_parts { "pitched" } else { "piano" };
        print_text(&report, kept);
    }
    if report.files.is_empty() {
        return Err(if report.skipped.is_empty() {
            "no .mid or .midi file found in the given paths".to_string()
        } else {
            format!("no usable MIDI file ({} skipped)", report.skipped.len())
        });
    }
    Ok(())
}

/// `kept`: what the kept notes are ("piano", or "pitched" with --all-parts).
fn print_file(f: &FileReport, kept: &str) {
    println!(
        "{}: {} {kept} notes, {:.1} s, {:.1} quarter notes, {} tokens",
        f.name, f.notes, f.duration_seconds, f.duration_quarters, f.tokens
    );
    for t in &f.tracks {
        if t.notes == 0 && t.drum_notes == 0 && t.name.is_none() {
            continue;
        }
        let name = t.name.as_deref().unwrap_or("");
        let programs = if t.programs.is_empty() {
            "-".to_string()
        } else {
            t.programs.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")
        };
        let drums = if t.drum_notes > 0 { format!(", {} drum notes left out", t.drum_notes) } else { String::new() };
        println!(
            "  track {:>2} {:<24} programs {:<6} {} notes, {} kept{}",
            t.index,
            format!("\"{name}\""),
            programs,
            t.notes,
            t.kept_notes,
            drums
        );
    }
}

fn print_text(r: &InspectReport, kept: &str) {
    for f in &r.files {
        print_file(f, kept);
    }
    let t = &r.totals;
    println!();
    println!("tokenizer      {}", t.tokenizer);
    println!("files used     {}", t.files_used);
    println!("files skipped  {}", t.files_skipped);
    for s in &r.skipped {
        println!("  {}: {}", s.name, s.cause);
    }
    println!("notes          {}", t.notes);
    println!("duration       {:.1} min", t.duration_seconds / 60.0);
    println!("tokens         {}", t.tokens);
    println!("vocabulary     {} (with <unk>)", t.vocab_size);
    let top: Vec<String> = t.top_tokens.iter().map(|(tok, c)| format!("{tok} ({c})")).collect();
    println!("most frequent  {}", top.join(", "));
}
