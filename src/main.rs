//! The `etude` command line: parse, call the library, print. Each subcommand lives in `cli/`.

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "etude",
    version,
    about = "Learns to compose piano music from MIDI files, on a hand-written CPU + WGSL engine",
    after_help = "Examples:\n  etude inspect                      # the built-in corpus of 10 public-domain piano pieces\n  etude inspect --tokenizer timed ../shared/corpus/mutopia-piano"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read MIDI files and show their tracks, piano notes, durations and tokens.
    Inspect(cli::inspect::InspectArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => cli::inspect::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
