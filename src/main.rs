//! The `etude` command line: parse, call the library, print. Each subcommand lives in `cli/`.

mod cli;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "etude",
    version,
    about = "Learns to compose piano music from MIDI files, on a hand-written CPU + WGSL engine",
    after_help = "Examples:\n  etude inspect                      # the built-in corpus of 102 public-domain piano pieces\n  etude inspect --tokenizer timed ../shared/corpus/mutopia-piano"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on MIDI files (default: the built-in corpus) and write a sample piece.
    Train(Box<cli::train::TrainArgs>),
    /// Compose new pieces with a trained checkpoint and write them as MIDI.
    Generate(cli::generate::GenArgs),
    /// Loss, perplexity and accuracy of a checkpoint on MIDI files.
    Eval(cli::eval::EvalArgs),
    /// Read MIDI files and show their tracks, piano notes, durations and tokens.
    Inspect(cli::inspect::InspectArgs),
    /// Tokenise MIDI files into the token cache that train reads (done by train when missing).
    Prepare(cli::prepare::PrepareArgs),
    /// Musical statistics of MIDI files, alone or against a reference set (--against).
    Stats(cli::stats::StatsArgs),
    /// List the GPU adapters wgpu sees and the one etude would pick.
    Devices(cli::devices::DevicesArgs),
    /// Benchmarks: training throughput, generation latency, per-operation timings.
    Bench(cli::bench::BenchArgs),
    /// Render MIDI files to WAV (SoundFont, or a built-in piano voice).
    Render(cli::render::RenderArgs),
    /// Draw piano-roll pictures (PNG) of MIDI files.
    Plot(cli::render::PlotArgs),
    /// Rebuild a run's report.html (settings, metrics, loss curves, samples to see and hear).
    Report(cli::report::ReportArgs),
}

/// `etude generate`: the checkpoint is read once, then composes in piano-roll mode or with a token
/// model.
fn generate(args: cli::generate::GenArgs) -> Result<(), String> {
    let read = etude::run::checkpoint::Checkpoint::load(&args.checkpoint);
    cli::roll::generate(&args, &read).unwrap_or_else(|| cli::generate::run(args, read))
}

/// `etude eval`: the checkpoint is read once, then scored in piano-roll mode or as a token model.
fn eval(args: cli::eval::EvalArgs) -> Result<(), String> {
    cli::eval::check_outputs(&args)?;
    let read = etude::run::checkpoint::Checkpoint::load(&args.checkpoint);
    cli::roll::eval(&args, &read).unwrap_or_else(|| cli::eval::run(args, read))
}

fn main() -> ExitCode {
    // Mesa's Vulkan device-select layer prints an error twice when this is unset; any folder will do.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    // The matches too: `train --preset` needs to know which options were given explicitly.
    // A value may be negative (`--temperature -1`): it reaches the option's range (`cli::values`)
    // and is refused there in words, not by clap as "unexpected argument '-1'"; a value out of its
    // range is one line and status 1, like every other refusal.
    let matches = Cli::command()
        .mut_subcommands(|s| s.mut_args(|a| if a.get_action().takes_values() { a.allow_negative_numbers(true) } else { a }))
        .try_get_matches()
        .unwrap_or_else(|e| match cli::values::refused_value(&e) {
            Some(line) => {
                eprintln!("error: {line}");
                std::process::exit(1)
            }
            None => e.exit(),
        });
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Train(mut args) => {
            let explicit = |id: &str| {
                matches.subcommand_matches("train").and_then(|m| m.value_source(id))
                    == Some(clap::parser::ValueSource::CommandLine)
            };
            if cli::roll::wants_roll(&args) {
                cli::roll::train(*args, &explicit)
            } else if args.kernel.is_some() {
                Err("--kernel applies in piano-roll mode (--data FILE.pianoroll.json.gz or --tokenizer pianoroll)".into())
            } else if args.head.is_some() || args.nade_hidden.is_some() {
                Err("--head and --nade-hidden apply in piano-roll mode (--data FILE.pianoroll.json.gz or --tokenizer pianoroll)".into())
            } else {
                cli::train::apply_preset(&mut args, &explicit).and_then(|()| cli::train::run(*args))
            }
        }
        Command::Generate(args) => generate(args),
        Command::Eval(args) => eval(args),
        Command::Inspect(args) => cli::inspect::run(args),
        Command::Prepare(args) => cli::prepare::run(args),
        Command::Stats(args) => cli::stats::run(args),
        Command::Devices(args) => cli::devices::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Render(args) => cli::render::run_render(args),
        Command::Plot(args) => cli::render::run_plot(args),
        Command::Report(args) => cli::report::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
