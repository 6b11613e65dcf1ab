//! `etude generate`: compose new pieces from a checkpoint and write them as MIDI.

use super::backend::{BackendArgs, BackendChoice, Engine};
use clap::Args;
use etude::checkpoint::atomic_write;
use etude::dataset::prepare_tokens;
use etude::engine::Backend;
use etude::generate::{encode_prime, generate_ids, to_midi, Generator, Length, Mode};
use etude::midi::read_midi;
use etude::rng::Rng;
use etude::sample::SampleOptions;
use etude::tokens::UNK;
use etude::train::{load_checkpoint, Loaded};
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    #[arg(long, default_value_t = 100, conflicts_with = "seconds")]
    pub length: usize,
    /// Generate until the piece lasts this many seconds instead.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Softmax temperature (< 1 safer, > 1 wilder).
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Sample only among the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Sample only among the most likely tokens that make up this probability.
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Always take the most likely token (the tutorial's argmax; repeats itself).
    #[arg(long)]
    pub greedy: bool,
    /// A MIDI file whose tokens start the piece (default: a random window of the training corpus).
    #[arg(long, value_name = "FILE.mid")]
    pub prime: Option<PathBuf>,
    /// Seed of the prime choice and the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tempo of the written MIDI, quarter notes per minute.
    #[arg(long, default_value_t = 120.0)]
    pub tempo: f64,
    /// Output file; with --count N, NAME-1.mid ... NAME-N.mid.
    #[arg(long, default_value = "generated.mid")]
    pub out: PathBuf,
    /// Number of pieces.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Rerun the model on the last window for every token (the tutorial's way; always so for wavenet).
    #[arg(long, conflicts_with = "incremental")]
    pub sliding_window: bool,
    /// Insist on one step per token with carried state (LSTM models).
    #[arg(long)]
    pub incremental: bool,
    /// Write the prime's notes before the generated ones.
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
    /// SoundFont for --wav (default: ETUDE_SOUNDFONT, the system's, the built-in voice).
    #[arg(long, value_name = "FILE.sf2", requires = "wav")]
    pub soundfont: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Where the prime's corpus is tokenised (without --prime): the token cache.
    #[command(flatten)]
    pub cache: super::CacheArgs,
}

impl GenArgs {
    /// The sample `etude train` writes at the end of a run.
    pub fn for_sample(length: usize, seed: u64, out: PathBuf) -> GenArgs {
        GenArgs {
            checkpoint: PathBuf::new(),
            length,
            seconds: None,
            temperature: 1.0,
            top_k: 0,
            top_p: 0.95,
            greedy: false,
            prime: None,
            seed,
            tempo: 120.0,
            out,
            count: 1,
            sliding_window: false,
            incremental: false,
            include_prime: false,
            force: true,
            max_keys: 0,
            frame_quarters: None,
            wav: true,
            soundfont: None,
            backend: BackendArgs { backend: BackendChoice::Cpu, device: None },
            cache: super::CacheArgs { cache: None, no_cache: false },
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

pub fn run(args: GenArgs) -> Result<(), String> {
    if let Some(done) = super::roll::generate(&args) {
        return done;
    }
    if args.count == 0 {
        return Err("--count must be at least 1".into());
    }
    if args.length == 0 {
        return Err("--length must be at least 1 (a piece without tokens has no notes)".into());
    }
    if args.length > etude::generate::MAX_TOKENS {
        return Err(format!("--length {}: at most {} tokens are generated in one piece", args.length, etude::generate::MAX_TOKENS));
    }
    if !(args.temperature > 0.0 && args.temperature.is_finite()) {
        return Err(format!("--temperature must be positive, not {}", args.temperature));
    }
    if !(args.top_p > 0.0 && args.top_p <= 1.0) {
        return Err(format!("--top-p must be in (0, 1], not {}", args.top_p));
    }
    if !(args.tempo > 0.0 && args.tempo.is_finite()) {
        return Err(format!("--tempo must be positive, not {}", args.tempo));
    }
    if let Some(s) = args.seconds {
        if !(s > 0.0 && s.is_finite()) {
            return Err(format!("--seconds must be positive, not {s}"));
        }
    }
    if !args.force {
        // The piece, its piano roll and (--wav) its audio.
        let exts: &[&str] = if args.wav { &["png", "wav"] } else { &["png"] };
        let all = args.outputs().into_iter().flat_map(|p| [p.clone()].into_iter().chain(exts.iter().map(|e| p.with_extension(e))).collect::<Vec<_>>());
        if let Some(p) = all.into_iter().find(|p| p.exists()) {
            return Err(format!("{} exists; choose another --out or pass --force to overwrite it", p.display()));
        }
    }
    // --force overwrites MIDI files, never the checkpoint composing them.
    let same_file = |p: &Path| match (std::fs::canonicalize(p), std::fs::canonicalize(&args.checkpoint)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if let Some(p) = args.outputs().iter().find(|p| same_file(p)) {
        return Err(format!("--out {} is the checkpoint --model reads; choose another --out", p.display()));
    }
    let loaded = load_checkpoint(&args.checkpoint)?;
    match args.backend.open()? {
        Engine::Cpu(b) => write_pieces(&b, &loaded, &args.checkpoint, &args),
        Engine::Gpu(g) => write_pieces(g.as_ref(), &loaded, &args.checkpoint, &args),
    }
}

/// The prime's ids: from `--prime`, or a random training window of the checkpoint's corpus.
fn prime_ids(loaded: &Loaded, args: &GenArgs, rng: &mut Rng) -> Result<Vec<u32>, String> {
    let spec = &loaded.meta.data;
    let tokenizer = spec.tokenizer()?;
    let window = spec.data.window;
    match &args.prime {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let piece = read_midi(&bytes, &spec.read).map_err(|e| format!("{}: {e}", path.display()))?;
            let tokens = tokenizer.encode(&piece.notes);
            // The model was trained on windows of T tokens: the last T are all the context it uses,
            // so only they must be in its vocabulary.
            let tail = &tokens[tokens.len().saturating_sub(window)..];
            encode_prime(tail, &loaded.meta.vocab, &path.display().to_string())
        }
        None => {
            let tokens = spec.tokens(args.cache.dir().as_deref(), false)?;
            let prepared = prepare_tokens(&tokens, tokenizer.as_ref(), &spec.data, Some(loaded.meta.vocab.clone()))?;
            let i = rng.below(prepared.train.len());
            Ok(prepared.train.input(i).to_vec())
        }
    }
}

/// Generate `args.count` pieces with `loaded` on `b` and write them.
pub fn write_pieces<B: Backend>(b: &B, loaded: &Loaded, origin: &Path, args: &GenArgs) -> Result<(), String> {
    let mode = if args.sliding_window {
        Mode::SlidingWindow
    } else if args.incremental {
        Mode::Incremental
    } else {
        Mode::Auto
    };
    let vocab = &loaded.meta.vocab;
    let tokenizer = loaded.meta.data.tokenizer()?;
    let unk = vocab.id(UNK).map(|i| i as usize);
    let opts = SampleOptions {
        greedy: args.greedy,
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        banned: unk.into_iter().collect(),
    };
    let length = match args.seconds {
        Some(s) => Length::Seconds(s),
        None => Length::Tokens(args.length),
    };
    let seconds_per_quarter = 60.0 / args.tempo;
    let seconds_of = |ids: &[u32]| {
        let (notes, _) = to_midi(ids, vocab, tokenizer.as_ref(), args.tempo);
        notes.iter().map(|n| n.end).fold(0.0, f64::max) * seconds_per_quarter
    };
    let voice = if args.wav {
        let chosen = etude::render::find_voice(args.soundfont.as_deref())?;
        eprintln!("voice: {}", chosen.description);
        Some(chosen.voice)
    } else {
        None
    };
    let mut rng = Rng::new(args.seed);
    for out in args.outputs() {
        let prime = prime_ids(loaded, args, &mut rng)?;
        let mut gen = Generator::new(b, loaded, mode, origin)?;
        let started = Instant::now();
        let ids = generate_ids(&mut gen, &prime, length, &opts, &mut rng, &seconds_of)?;
        let ms_per_token = started.elapsed().as_secs_f64() * 1e3 / ids.len().max(1) as f64;
        let all: Vec<u32> = if args.include_prime { prime.iter().chain(&ids).copied().collect() } else { ids.clone() };
        let (notes, bytes) = to_midi(&all, vocab, tokenizer.as_ref(), args.tempo);
        atomic_write(&out, &bytes)?;
        let secs = notes.iter().map(|n| n.end).fold(0.0, f64::max) * seconds_per_quarter;
        eprintln!(
            "wrote {}: {} tokens, {} notes, {:.1} s ({:?} mode, {:.2} ms per token)",
            out.display(),
            ids.len(),
            notes.len(),
            secs,
            gen.mode(),
            ms_per_token
        );
        if let Err(e) = super::render::companions(&out, voice.as_ref()) {
            eprintln!("no picture or audio for {}: {e}", out.display());
        }
    }
    Ok(())
}
