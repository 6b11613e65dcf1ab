//! Milliseconds per generated token at batch 1 ([`generate`]), incremental and sliding window;
//! and tokens per second of N pieces one by one against the same N pieces in one batch
//! ([`generate_batch`]).

use crate::generate::{arena_windows, Generator, Mode};
use crate::model::any::{AnyModel, ModelConfig, Sizes};
use crate::rng::Rng;
use crate::generate::sample::{sample, SampleOptions};
use serde::Serialize;
use std::time::Instant;

use super::{peak_rss_mib, round, summary, BenchBackend, CpuWatch};

/// What [`generate`] measures.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub model: String,
    pub window: usize,
    pub vocab: usize,
    /// Tokens generated per pass.
    pub tokens: usize,
    /// Timed passes (one untimed warm-up pass comes first).
    pub reps: usize,
    pub seed: u64,
    /// Only this mode (`None`: every mode the model has).
    pub mode: Option<Mode>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { model: "lstm".into(), window: 128, vocab: 300, tokens: 50, reps: 3, seed: 0, mode: None }
    }
}

/// One generation measurement (`mode`: "incremental" or "sliding_window").
#[derive(Clone, Debug, Serialize)]
pub struct GenerateReport {
    pub framework: &'static str,
    pub kind: &'static str,
    pub model: String,
    pub backend: &'static str,
    pub device: String,
    pub mode: &'static str,
    pub batch: usize,
    pub window: usize,
    pub tokens: usize,
    pub reps: usize,
    pub ms_per_token_mean: f64,
    pub ms_per_token_median: f64,
    pub tokens_per_s: f64,
    /// Feeding the 128-token prime (incremental mode only; sliding window has nothing to prime).
    pub prime_ms_median: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub other_cpu_frac: Option<f64>,
}

/// Times generation with `opts.model` (randomly initialised: the time does not depend on the
/// weights) in every mode the model has: incremental where it exists, then sliding window.
pub fn generate<B: BenchBackend>(b: &B, opts: &GenerateOptions) -> Result<Vec<GenerateReport>, String> {
    if opts.window == 0 || opts.vocab < 2 || opts.tokens == 0 || opts.reps == 0 {
        return Err("bench generate: window, tokens and reps must be at least 1 and vocab at least 2".into());
    }
    let cfg = ModelConfig::from_name(&opts.model, opts.vocab, opts.window, &Sizes::default())?;
    let mut out = Vec::new();
    for mode in [Mode::Incremental, Mode::SlidingWindow] {
        if mode.resolve(&cfg).is_err() || opts.mode.is_some_and(|m| m != mode) {
            continue;
        }
        let mut rng = Rng::new(opts.seed);
        let model = AnyModel::new(b, &cfg, 1, opts.window, &mut rng)?;
        let mut gen = Generator::from_model(b, model, &cfg, mode, opts.window, 1)?;
        let prime: Vec<u32> = (0..opts.window).map(|_| rng.below(opts.vocab) as u32).collect();
        let sampling = SampleOptions::default();
        let (mut per_token, mut prime_ms) = (Vec::new(), Vec::new());
        let mut watch = None;
        for rep in 0..=opts.reps {
            if rep == 1 {
                watch = CpuWatch::start();
            }
            let t0 = Instant::now();
            gen.prime(&prime)?;
            if rep > 0 {
                prime_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            }
            let mut history = prime.clone();
            for _ in 0..opts.tokens {
                let t0 = Instant::now();
                let logits = gen.next_logits(&history);
                let id = sample(&logits, &sampling, &mut rng) as u32;
                history.push(id);
                gen.push(id)?;
                if rep > 0 {
                    per_token.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
        let mean = per_token.iter().sum::<f64>() / per_token.len() as f64;
        let (median, _, _) = summary(&per_token);
        let incremental = mode == Mode::Incremental;
        out.push(GenerateReport {
            framework: "etude",
            kind: "generate",
            model: opts.model.clone(),
            backend: b.kind(),
            device: b.device(),
            mode: if incremental { "incremental" } else { "sliding_window" },
            batch: 1,
            window: opts.window,
            tokens: opts.tokens,
            reps: opts.reps,
            ms_per_token_mean: round(mean, 3),
            ms_per_token_median: round(median, 3),
            tokens_per_s: round(1e3 / mean, 1),
            prime_ms_median: incremental.then(|| round(summary(&prime_ms).0, 2)),
            peak_rss_mib: peak_rss_mib(),
            other_cpu_frac: watch.and_then(|w| w.fractions()).map(|l| l.1),
        });
    }
    Ok(out)
}

/// A human-readable line for a generation report.
pub fn format_generate(r: &GenerateReport) -> String {
    let mut s = format!(
        "{:<14} {} ({}) {:<14} {:.3} ms/token mean ({:.3} median, {:.0} tokens/s)",
        r.model, r.backend, r.device, r.mode, r.ms_per_token_mean, r.ms_per_token_median, r.tokens_per_s
    );
    if let Some(p) = r.prime_ms_median {
        s += &format!(", prime of {} tokens {p:.2} ms", r.window);
    }
    s
}

/// N pieces one by one against the same N pieces in one batch ([`generate_batch`]).
#[derive(Clone, Debug, Serialize)]
pub struct BatchReport {
    pub framework: &'static str,
    pub kind: &'static str,
    pub model: String,
    pub backend: &'static str,
    pub device: String,
    pub mode: &'static str,
    /// Pieces.
    pub count: usize,
    pub window: usize,
    /// Tokens generated per piece (after its prime of `window` tokens).
    pub tokens: usize,
    /// Generated tokens per second (the steps after the primes) of the pieces one by one.
    pub one_by_one_tokens_per_s: f64,
    /// The same of the pieces in one batch.
    pub batched_tokens_per_s: f64,
    /// `batched_tokens_per_s / one_by_one_tokens_per_s`, measured side by side in this run.
    pub speedup: f64,
    /// Whether every piece of the batch drew the same tokens as alone (same seeded stream each).
    pub same_pieces: bool,
    /// Feeding the primes, seconds: all pieces one by one, and in the batch.
    pub prime_s_one_by_one: f64,
    pub prime_s_batched: f64,
    pub peak_rss_mib: Option<f64>,
    pub other_cpu_frac: Option<f64>,
}

/// Times `count` pieces of `opts.tokens` tokens after random primes of `opts.window` tokens,
/// first one by one (one generator of one piece, primed again for each), then as one batch, in
/// every mode the model has (randomly initialised: the time does not depend on the weights).
/// Piece `i` samples from a stream seeded `opts.seed + i` in both, so the pieces must be equal.
pub fn generate_batch<B: BenchBackend>(b: &B, opts: &GenerateOptions, count: usize) -> Result<Vec<BatchReport>, String> {
    if opts.window == 0 || opts.vocab < 2 || opts.tokens == 0 || count == 0 {
        return Err("bench generate: window, tokens and count must be at least 1 and vocab at least 2".into());
    }
    let cfg = ModelConfig::from_name(&opts.model, opts.vocab, opts.window, &Sizes::default())?;
    let mut out = Vec::new();
    let sampling = SampleOptions::default();
    for mode in [Mode::Incremental, Mode::SlidingWindow] {
        if mode.resolve(&cfg).is_err() || opts.mode.is_some_and(|m| m != mode) {
            continue;
        }
        let mut rng = Rng::new(opts.seed);
        let primes: Vec<Vec<u32>> = (0..count).map(|_| (0..opts.window).map(|_| rng.below(opts.vocab) as u32).collect()).collect();
        let watch = CpuWatch::start();
        // One by one.
        let model = AnyModel::new(b, &cfg, arena_windows(&cfg, mode, 1, opts.window), opts.window, &mut Rng::new(opts.seed))?;
        let mut gen = Generator::from_model(b, model, &cfg, mode, opts.window, 1)?;
        let (mut alone, mut steps_alone, mut prime_alone) = (Vec::new(), 0.0, 0.0);
        for (i, prime) in primes.iter().enumerate() {
            let mut rng = Rng::new(crate::generate::piece_seed(opts.seed, i));
            let t0 = Instant::now();
            gen.prime(prime)?;
            prime_alone += t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            let mut history = prime.clone();
            for _ in 0..opts.tokens {
                let logits = gen.next_logits(&history);
                let id = sample(&logits, &sampling, &mut rng) as u32;
                history.push(id);
                gen.push(id)?;
            }
            steps_alone += t0.elapsed().as_secs_f64();
            alone.push(history);
        }
        drop(gen);
        // One batch.
        let model = AnyModel::new(b, &cfg, arena_windows(&cfg, mode, count, opts.window), opts.window, &mut Rng::new(opts.seed))?;
        let mut gen = Generator::from_model(b, model, &cfg, mode, opts.window, count)?;
        let mut rngs: Vec<Rng> = (0..count).map(|i| Rng::new(crate::generate::piece_seed(opts.seed, i))).collect();
        let t0 = Instant::now();
        gen.prime_all(&primes)?;
        let prime_batched = t0.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let mut histories = primes.clone();
        let v = opts.vocab;
        for _ in 0..opts.tokens {
            let views: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
            let logits = gen.next_logits_all(&views);
            let ids: Vec<u32> = logits.chunks_exact(v).zip(&mut rngs).map(|(row, rng)| sample(row, &sampling, rng) as u32).collect();
            histories.iter_mut().zip(&ids).for_each(|(h, &id)| h.push(id));
            gen.push_all(&ids)?;
        }
        let steps_batched = t0.elapsed().as_secs_f64();
        let tokens = (count * opts.tokens) as f64;
        let (one, batched) = (tokens / steps_alone, tokens / steps_batched);
        out.push(BatchReport {
            framework: "etude",
            kind: "generate_batch",
            model: opts.model.clone(),
            backend: b.kind(),
            device: b.device(),
            mode: if mode == Mode::Incremental { "incremental" } else { "sliding_window" },
            count,
            window: opts.window,
            tokens: opts.tokens,
            one_by_one_tokens_per_s: round(one, 1),
            batched_tokens_per_s: round(batched, 1),
            speedup: round(batched / one, 2),
            same_pieces: histories == alone,
            prime_s_one_by_one: round(prime_alone, 3),
            prime_s_batched: round(prime_batched, 3),
            peak_rss_mib: peak_rss_mib(),
            other_cpu_frac: watch.and_then(|w| w.fractions()).map(|l| l.1),
        });
    }
    Ok(out)
}

/// A human-readable line for a batch report.
pub fn format_generate_batch(r: &BatchReport) -> String {
    format!(
        "{:<14} {} ({}) {:<14} {} pieces of {} tokens: one by one {:.0} tokens/s, batched {:.0} tokens/s ({:.2}x){}; primes {:.2} s / {:.2} s",
        r.model,
        r.backend,
        r.device,
        r.mode,
        r.count,
        r.tokens,
        r.one_by_one_tokens_per_s,
        r.batched_tokens_per_s,
        r.speedup,
        if r.same_pieces { ", the same pieces" } else { ", PIECES DIFFER" },
        r.prime_s_one_by_one,
        r.prime_s_batched
    )
}
