//! `etude generate`: compose new pieces from a checkpoint and write them as MIDI.

use super::backend::{BackendArgs, Engine};
use super::compose::{write_pieces, PieceOptions, SampleSettings};
use clap::Args;
use etude::run::checkpoint::Checkpoint;
use etude::generate::{Length, Mode};
use etude::run::Loaded;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
#[command(after_help = "Examples:
  etude generate --model runs/lstm-x/best.safetensors                 # 100 tokens, nucleus sampling
  etude generate --model CKPT --greedy --length 50                    # the tutorial's argmax
  etude generate --model CKPT --seconds 60 --temperature 0.9 --top-k 20 --count 3 --out piece.mid
  etude generate --model CKPT --prime my-opening.mid --seed 7 --tempo 96
  etude generate --model CKPT --sliding-window                        # rerun the last window per token

The same --seed gives the same piece. Without --prime, a random window of the training corpus
primes the model (the tutorial's way).")]
pub struct GenArgs {
    /// Checkpoint to compose with (a .safetensors written by etude train).
    #[arg(long = "model", value_name = "CHECKPOINT")]
    pub checkpoint: PathBuf,
    /// Tokens to generate.
    #[arg(long, default_value_t = 100, conflicts_with = "seconds", value_parser = super::values::at_least_one)]
    pub length: usize,
    /// Generate until the piece lasts this many seconds instead.
    #[arg(long, value_parser = super::values::positive_f64)]
    pub seconds: Option<f64>,
    /// Softmax temperature (< 1 safer, > 1 wilder).
    #[arg(long, default_value_t = 1.0, value_parser = super::values::positive_f32)]
    pub temperature: f32,
    /// Sample only among the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample only among the most likely tokens that make up this probability.
    #[arg(long, default_value_t = 0.95, value_parser = super::values::probability)]
    pub top_p: f32,
    /// Always take the most likely token (the tutorial's argmax; repeats itself).
    #[arg(long)]
    pub greedy: bool,
    /// Draw from the model alone, without the checkpoint's copy mixture (what followed earlier
    /// matches of the window's end; see the README). The transformer's default.
    #[arg(long, conflicts_with = "copy")]
    pub no_copy: bool,
    /// Mix the checkpoint's copy mixture into every draw: the default for every model but the
    /// transformer, whose pieces loop with it (it copies well enough by itself).
    #[arg(long)]
    pub copy: bool,
    /// A MIDI file whose tokens start the piece (default: a random window of the training corpus).
    #[arg(long, value_name = "FILE.mid")]
    pub prime: Option<PathBuf>,
    /// Seed of the prime choice and the sampling. With --count N, piece K draws from seed + K - 1:
    /// it is the piece that seed composes alone.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tempo of the written MIDI, quarter notes per minute.
    #[arg(long, default_value_t = 120.0, value_parser = super::values::positive_f64)]
    pub tempo: f64,
    /// Output file; with --count N, NAME-1.mid ... NAME-N.mid.
    #[arg(long, default_value = "generated.mid")]
    pub out: PathBuf,
    /// Number of pieces, composed together in batches of up to 64 (each piece as it would be alone).
    #[arg(long, default_value_t = 1, value_parser = super::values::at_least_one)]
    pub count: usize,
    /// Rerun the model on the last window for every token (the tutorial's way; always so for wavenet).
    #[arg(long, conflicts_with = "incremental")]
    pub sliding_window: bool,
    /// Insist on one step per token with carried state (LSTM models).
    #[arg(long)]
    pub incremental: bool,
    /// Write the prime before the generated notes: what the model read of it (the last --window
    /// tokens of --prime, or the training window drawn without it), not the whole --prime file.
    #[arg(long)]
    pub include_prime: bool,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
    /// Piano-roll checkpoints: most keys sounding in one frame (the most probable of those drawn;
    /// 0 = no cap).
    #[arg(long, default_value_t = 0)]
    pub max_keys: usize,
    /// Piano-roll checkpoints: quarter notes per frame in the written MIDI [default: the training
    /// data's grid].
    #[arg(long)]
    pub frame_quarters: Option<f64>,
    /// Also render each piece to a WAV beside it (see `etude render`).
    #[arg(long)]
    pub wav: bool,
    /// SoundFont for --wav (a file, `bundled` or `builtin`; default: ETUDE_SOUNDFONT, else the bundled piano).
    #[arg(long, value_name = "FILE.sf2", requires = "wav")]
    pub soundfont: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Where the prime's corpus is tokenised (without --prime): the token cache.
    #[command(flatten)]
    pub cache: super::CacheArgs,
}

impl GenArgs {
    /// What to compose and where, from the options.
    fn pieces(&self) -> PieceOptions {
        let mode = if self.sliding_window {
            Mode::SlidingWindow
        } else if self.incremental {
            Mode::Incremental
        } else {
            Mode::Auto
        };
        PieceOptions {
            outputs: self.outputs(),
            length: match self.seconds {
                Some(s) => Length::Seconds(s),
                None => Length::Tokens(self.length),
            },
            mode,
            sampling: SampleSettings { greedy: self.greedy, temperature: self.temperature, top_k: self.top_k, top_p: self.top_p },
            prime: self.prime.clone(),
            seed: self.seed,
            tempo: self.tempo,
            include_prime: self.include_prime,
            wav: self.wav,
            soundfont: self.soundfont.clone(),
            cache: self.cache.dir(),
            copy: if self.copy {
                Some(true)
            } else if self.no_copy {
                Some(false)
            } else {
                None
            },
        }
    }

    fn outputs(&self) -> Vec<PathBuf> {
        if self.count <= 1 {
            return vec![self.out.clone()];
        }
        let stem = self.out.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "generated".into());
        let ext = self.out.extension().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "mid".into());
        (1..=self.count).map(|i| self.out.with_file_name(format!("{stem}-{i}.{ext}"))).collect()
    }
}

/// `etude generate` with a token model's checkpoint, `read` once by the caller (`main.rs`, which
/// sends piano-roll checkpoints to [`super::roll::generate`]).
pub fn run(args: GenArgs, read: Result<Checkpoint, String>) -> Result<(), String> {
    if args.length > etude::generate::MAX_TOKENS {
        return Err(format!("--length {}: at most {} tokens are generated in one piece", args.length, etude::generate::MAX_TOKENS));
    }
    etude::music::midi::check_tempo(args.tempo)?;
    // The piece, its piano roll and (--wav) its audio; --force overwrites MIDI files, never the
    // checkpoint composing them nor the prime.
    let exts: &[&str] = if args.wav { &["png", "wav"] } else { &["png"] };
    let inputs: Vec<(&Path, &str)> = std::iter::once((args.checkpoint.as_path(), "the checkpoint --model reads"))
        .chain(args.prime.as_deref().map(|p| (p, "the --prime file")))
        .collect();
    for p in args.outputs() {
        for q in std::iter::once(p.clone()).chain(exts.iter().map(|e| p.with_extension(e))) {
            etude::files::check_output(&q, "--out", args.force, &inputs)?;
        }
    }
    let loaded = Loaded::from_checkpoint(read?, &args.checkpoint)?;
    let pieces = args.pieces();
    match args.backend.open()? {
        Engine::Cpu(b) => write_pieces(&b, &loaded, &args.checkpoint, &pieces),
        Engine::Gpu(g) => write_pieces(g.as_ref(), &loaded, &args.checkpoint, &pieces),
    }
}
