//! Subcommands of the `etude` binary, one file each: argument struct (clap derive) and `run`.

pub mod after_run;
pub mod backend;
pub mod bench;
pub mod compose;
pub mod devices;
pub mod eval;
pub mod generate;
pub mod inspect;
pub mod render;
pub mod report;
pub mod roll;
pub mod prepare;
#[cfg(test)]
mod read_once;
pub mod stats;
pub mod train;
pub mod values;

use clap::Args;
use std::path::PathBuf;
use etude::music::midi::ReadOptions;
use etude::music::tokens::{tokenizer_by_name, Tokenizer, TokenizerOptions};

/// Where the music comes from and how it is read and tokenised; shared by every command that
/// reads a corpus.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Tokenizer: timed (time shift, pitch, duration), notechord (the tutorial's notes and chords),
    /// or pianoroll (88-key frames on the --steps-per-quarter grid: piano-roll mode, train only).
    #[arg(long, default_value = "timed", value_parser = ["notechord", "timed", "pianoroll"])]
    pub tokenizer: String,
    /// Keep every pitched part, not only piano parts (GM programs 0-7 or a track named "piano").
    #[arg(long)]
    pub all_parts: bool,
    /// Hold notes while the sustain pedal (CC64) is down.
    #[arg(long)]
    pub sustain: bool,
    /// timed: grid steps per quarter note.
    #[arg(long, default_value_t = 12)]
    pub steps_per_quarter: u32,
    /// timed: velocity bins (0 = no velocity tokens).
    #[arg(long, default_value_t = 0)]
    pub velocity_bins: u32,
}

impl DataArgs {
    pub fn read_options(&self) -> ReadOptions {
        ReadOptions { all_parts: self.all_parts, sustain: self.sustain }
    }

    pub fn tokenizer_options(&self) -> TokenizerOptions {
        TokenizerOptions {
            steps_per_quarter: self.steps_per_quarter,
            velocity_bins: self.velocity_bins,
            ..TokenizerOptions::default()
        }
    }

    pub fn tokenizer(&self) -> Result<Box<dyn Tokenizer>, String> {
        tokenizer_by_name(&self.tokenizer, &self.tokenizer_options())
    }
}

/// Where tokenised corpora are kept between runs (the token cache).
#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Token cache folder [default: etude/tokens in the user's cache folder, e.g. ~/.cache].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Read and tokenise the MIDI files in memory, without the token cache.
    #[arg(long, conflicts_with = "cache")]
    pub no_cache: bool,
}

impl CacheArgs {
    /// The cache folder to use, or `None` with `--no-cache`.
    pub fn dir(&self) -> Option<PathBuf> {
        (!self.no_cache).then(|| self.cache.clone().unwrap_or_else(etude::data::token_cache::default_dir))
    }
}
