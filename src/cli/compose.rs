//! Composing pieces with a loaded checkpoint and writing them (MIDI, its piano roll, its audio):
//! what `etude generate` does, and what the end of `etude train` does for its `sample.mid`.

use super::render::companions;
use etude::files::atomic_write;
use etude::data::prepare::prepare_tokens_mapped;
use etude::engine::Backend;
use etude::generate::{encode_prime, generate_batch, to_midi, Generator, Length, Mode};
use etude::music::midi::read_midi;
use etude::rng::Rng;
use etude::run::Loaded;
use etude::generate::sample::SampleOptions;
use etude::music::tokens::UNK;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How pieces are composed and where they go (`etude generate`'s options, checked by it).
#[derive(Clone, Debug)]
pub struct PieceOptions {
    /// The files to write, one piece each.
    pub outputs: Vec<PathBuf>,
    pub length: Length,
    pub mode: Mode,
    pub sampling: SampleSettings,
    /// A MIDI file whose last window starts each piece; `None`: a random training window.
    pub prime: Option<PathBuf>,
    /// Seed of the prime choice and the sampling.
    pub seed: u64,
    /// Quarter notes per minute of the written MIDI.
    pub tempo: f64,
    /// Write the prime's notes before the generated ones.
    pub include_prime: bool,
    /// Also render each piece to a WAV beside it.
    pub wav: bool,
    /// The SoundFont of the WAV (`None`: ETUDE_SOUNDFONT, else the bundled piano).
    pub soundfont: Option<PathBuf>,
    /// The token cache the prime's corpus is read through (`None`: read in memory).
    pub cache: Option<PathBuf>,
    /// Mix the checkpoint's copy mixture (when it has one) into every draw: `None` is the model's
    /// default ([`etude::generate::copies_by_default`]).
    pub copy: Option<bool>,
}

/// The sampling options (the `<unk>` ban is added from the checkpoint's vocabulary).
#[derive(Clone, Copy, Debug)]
pub struct SampleSettings {
    pub greedy: bool,
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
}

impl PieceOptions {
    /// The sample `etude train` writes at the end of a run: `length` tokens with the run's seed,
    /// nucleus sampling (argmax with `greedy`), the prime a training window, with its audio.
    pub fn sample(length: usize, seed: u64, out: PathBuf, greedy: bool, cache: Option<PathBuf>) -> PieceOptions {
        PieceOptions {
            outputs: vec![out],
            length: Length::Tokens(length),
            mode: Mode::Auto,
            sampling: SampleSettings { greedy, temperature: 1.0, top_k: 0, top_p: 0.95 },
            prime: None,
            seed,
            tempo: 120.0,
            include_prime: false,
            wav: true,
            soundfont: None,
            cache,
            copy: None,
        }
    }
}

/// Where the primes come from: the last window of `--prime`'s tokens, or the training windows
/// of the checkpoint's corpus (tokenised once for all the pieces).
enum Primes {
    File(Vec<u32>),
    Corpus(Box<etude::data::prepare::Prepared>),
}

impl Primes {
    fn new(loaded: &Loaded, opts: &PieceOptions) -> Result<Primes, String> {
        let spec = &loaded.meta.data;
        let tokenizer = spec.tokenizer()?;
        let window = spec.data.window;
        match &opts.prime {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
                let piece = read_midi(&bytes, &spec.read).map_err(|e| format!("{}: {e}", path.display()))?;
                let tokens = tokenizer.encode(&piece.notes);
                // The model was trained on windows of T tokens: the last T are all the context it
                // uses, so only they must be in its vocabulary.
                let tail = &tokens[tokens.len().saturating_sub(window)..];
                Ok(Primes::File(encode_prime(tail, &loaded.meta.vocab, &path.display().to_string())?))
            }
            None => {
                let tokens = spec.tokens(opts.cache.as_deref(), false)?;
                let prepared = prepare_tokens_mapped(&tokens, tokenizer.as_ref(), &spec.data, Some(loaded.meta.vocab.clone()))?;
                Ok(Primes::Corpus(Box::new(prepared)))
            }
        }
    }

    /// A piece's prime: the file's, or a training window drawn from the piece's stream.
    fn draw(&self, rng: &mut Rng) -> Vec<u32> {
        match self {
            Primes::File(ids) => ids.clone(),
            Primes::Corpus(prepared) => prepared.train.input_vec(rng.below(prepared.train.len())),
        }
    }
}

/// Compose one piece per `opts.outputs` with `loaded` (read from `origin`) on `b` and write each.
/// The pieces are composed [`etude::generate::BATCH`] at a time; piece `i` draws its prime and
/// its tokens from its own stream, seeded by [`etude::generate::piece_seed`].
pub fn write_pieces<B: Backend>(b: &B, loaded: &Loaded, origin: &Path, opts: &PieceOptions) -> Result<(), String> {
    let vocab = &loaded.meta.vocab;
    let tokenizer = loaded.meta.data.tokenizer()?;
    let unk = vocab.id(UNK).map(|i| i as usize);
    let s = opts.sampling;
    let sampling = SampleOptions {
        greedy: s.greedy,
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        banned: unk.into_iter().collect(),
    };
    let seconds_per_quarter = 60.0 / opts.tempo;
    let seconds_of = |ids: &[u32]| {
        let (notes, _) = to_midi(ids, vocab, tokenizer.as_ref(), opts.tempo);
        notes.iter().map(|n| n.end).fold(0.0, f64::max) * seconds_per_quarter
    };
    let voice = if opts.wav {
        let chosen = etude::music::render::find_voice(opts.soundfont.as_deref())?;
        eprintln!("voice: {}", chosen.description);
        Some(chosen.voice)
    } else {
        None
    };
    let primes = Primes::new(loaded, opts)?;
    let copy = opts.copy.unwrap_or_else(|| etude::generate::copies_by_default(&loaded.meta.model));
    for (c, outputs) in opts.outputs.chunks(etude::generate::BATCH).enumerate() {
        let first = c * etude::generate::BATCH;
        let mut rngs: Vec<Rng> = (0..outputs.len()).map(|i| Rng::new(etude::generate::piece_seed(opts.seed, first + i))).collect();
        let prime: Vec<Vec<u32>> = rngs.iter_mut().map(|rng| primes.draw(rng)).collect();
        let mut gen = Generator::batched(b, loaded, opts.mode, origin, outputs.len())?;
        if !copy {
            gen.set_copy(None);
        }
        let started = Instant::now();
        let pieces = generate_batch(&mut gen, &prime, opts.length, &sampling, &mut rngs, &seconds_of)?;
        let tokens: usize = pieces.iter().map(Vec::len).sum();
        let ms_per_token = started.elapsed().as_secs_f64() * 1e3 / tokens.max(1) as f64;
        for ((out, ids), prime) in outputs.iter().zip(&pieces).zip(&prime) {
            let all: Vec<u32> = if opts.include_prime { prime.iter().chain(ids).copied().collect() } else { ids.clone() };
            let (_, bytes) = to_midi(&all, vocab, tokenizer.as_ref(), opts.tempo);
            atomic_write(out, &bytes)?;
            let notes = etude::generate::written_notes(&bytes);
            let secs = notes.iter().map(|n| n.end).fold(0.0, f64::max) * seconds_per_quarter;
            eprintln!(
                "wrote {}: {} tokens, {} notes, {:.1} s ({:?} mode, {:.2} ms per token{})",
                out.display(),
                ids.len(),
                notes.len(),
                secs,
                gen.mode(),
                ms_per_token,
                if outputs.len() > 1 { format!(" in a batch of {}", outputs.len()) } else { String::new() }
            );
            if let Err(e) = companions(out, voice.as_ref()) {
                eprintln!("no picture or audio for {}: {e}", out.display());
            }
        }
    }
    Ok(())
}
