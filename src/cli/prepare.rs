//! `etude prepare`: tokenise a corpus into the token cache (train does it too when the cache is
//! missing or out of date; this makes it ahead of time, or again with --force).

use super::DataArgs;
use clap::Args;
use etude::data::token_cache::{default_dir, load_or_build, Outcome};
use etude::data::cache_file::CacheKey;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  etude prepare --data ../shared/corpus/mutopia-piano          # tokenise once; train maps the result
  etude prepare --data big/ --tokenizer timed --force          # rebuild even when up to date
  etude prepare --data big/ --cache /scratch/etude-tokens      # another cache folder (train --cache too)

The cache depends on the files (size, modification and change times, content) and on the reading and
tokenizer options: prepare with the options you will train with. Skipped files are listed on
stderr, one line each: `skipped PATH: cause`.")]
pub struct PrepareArgs {
    /// MIDI files or folders (walked recursively for .mid/.midi).
    #[arg(long = "data", value_name = "PATH", num_args = 1.., required = true)]
    pub data_paths: Vec<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Token cache folder [default: etude/tokens in the user's cache folder, e.g. ~/.cache].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Tokenise again even when the cache is up to date.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: PrepareArgs) -> Result<(), String> {
    let tokenizer = args.data.tokenizer()?;
    for p in &args.data_paths {
        if !p.exists() {
            return Err(format!("--data {}: no such file or folder", p.display()));
        }
    }
    let key = CacheKey {
        // Absolute, as train makes them, so that both find the same cache file.
        paths: args.data_paths.iter().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())).collect(),
        read: args.data.read_options(),
        tokenizer: args.data.tokenizer.clone(),
        tokenizer_options: args.data.tokenizer_options(),
    };
    let dir = args.cache.clone().unwrap_or_else(default_dir);
    // prepare is there to write the cache: a file where its folder should be is an error (train
    // and eval go on without the cache).
    if dir.exists() && !dir.is_dir() {
        return Err(format!("--cache {}: is a file, not a folder; give a folder for the token cache", dir.display()));
    }
    let (set, outcome) = load_or_build(&dir, &key, tokenizer.as_ref(), args.force, std::io::stderr().is_terminal())?;
    for s in set.skipped() {
        eprintln!("skipped {}: {}", s.name, s.cause);
    }
    if outcome == Outcome::Hit {
        println!(
            "up to date: {} pieces, {} tokens, vocabulary {} ({} skipped) in {}",
            set.len(),
            set.total_ids(),
            set.vocab().len(),
            set.skipped().len(),
            key.file_in(&dir).display()
        );
    }
    if set.is_empty() {
        return Err(etude::data::corpus::no_usable_file(
            &key.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
            set.skipped(),
        ));
    }
    Ok(())
}
