//! The pieces `etude eval` (and the end of `etude train`) scores and fits its baselines on, and the
//! report of `etude inspect`: from the token cache ([`crate::data::token_cache`]) when a cache folder is
//! given, else read and tokenised in memory. Both give the same ids, names and note counts, so the
//! figures are the same (`tests/eval_cache.rs`).

use crate::data::corpus::{collect, load_corpus, no_usable_file, FileReport, InspectReport, Skipped, Totals};
use crate::data::dataset::Transposer;
use crate::data::prepare::unique_pieces;
use crate::music::midi::{read_midi, Note};
use crate::run::{DataSpec, Loaded};
use crate::data::token_cache::load_or_build;
use crate::data::cache_file::CacheKey;
use crate::data::token_set::TokenSet;
use crate::music::tokens::{Tokenizer, Vocab};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Pieces as ids of a checkpoint's vocabulary (unknown tokens are `<unk>`, 0), with their names and
/// numbers of notes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedPieces {
    pub names: Vec<String>,
    pub ids: Vec<Vec<u32>>,
    pub notes: Vec<usize>,
}

impl EncodedPieces {
    fn push(&mut self, name: String, ids: Vec<u32>, notes: usize) {
        self.names.push(name);
        self.ids.push(ids);
        self.notes.push(notes);
    }
}

/// The pieces `keep` of a tokenised corpus, as ids of `vocab`.
fn encode_set(set: &TokenSet, vocab: &Vocab, keep: impl Fn(&str) -> bool) -> Result<EncodedPieces, String> {
    let table: Vec<u32> = set.vocab().tokens().iter().map(|t| vocab.id(t).unwrap_or(0)).collect();
    let infos = set.infos()?;
    let mut out = EncodedPieces::default();
    for (i, name) in set.names().iter().enumerate() {
        if keep(name) {
            let mut ids = Vec::with_capacity(set.piece_len(i));
            set.extend_mapped(i, &table, &mut ids);
            out.push(name.clone(), ids, infos[i].notes);
        }
    }
    Ok(out)
}

/// The pieces of the run's corpus whose names pass `keep`, encoded with the checkpoint's
/// vocabulary: from the token cache in `cache` (keyed by the run's paths and settings), or read
/// and tokenised when `None`.
pub fn run_pieces(loaded: &Loaded, cache: Option<&Path>, keep: impl Fn(&str) -> bool) -> Result<EncodedPieces, String> {
    let spec = &loaded.meta.data;
    let vocab = &loaded.meta.vocab;
    match cache {
        Some(dir) if !spec.paths.is_empty() => encode_set(&spec.tokens(Some(dir), false)?, vocab, keep),
        _ => {
            let tokenizer = spec.tokenizer()?;
            let (all, _) = spec.load()?;
            let mut out = EncodedPieces::default();
            for p in all.into_iter().filter(|p| keep(&p.name)) {
                out.push(p.name, vocab.encode(&tokenizer.encode(&p.piece.notes)), p.piece.notes.len());
            }
            Ok(out)
        }
    }
}

/// The training pieces of the checkpoint's run (the pieces of its corpus not among `valid`, each
/// distinct sequence once unless the run kept duplicates), encoded with its vocabulary: all of
/// them when they hold at most `cap` tokens, else a seeded sample of whole pieces (the run's seed)
/// holding about `cap`, in corpus order, with a line saying which (`Some`: "a seeded sample of K
/// of N training pieces (X of Y tokens)"). From the token cache in `cache`, or read when `None`.
pub fn training_pieces(
    loaded: &Loaded,
    cache: Option<&Path>,
    valid: &HashSet<&str>,
    cap: usize,
) -> Result<(EncodedPieces, Option<String>), String> {
    let spec = &loaded.meta.data;
    let vocab = &loaded.meta.vocab;
    let candidates = |set: &TokenSet| -> Vec<usize> {
        let all: Vec<usize> = if spec.data.keep_duplicates { (0..set.len()).collect() } else { unique_pieces(set) };
        all.into_iter().filter(|&i| !valid.contains(set.names()[i].as_str())).collect()
    };
    match cache {
        Some(dir) if !spec.paths.is_empty() => {
            let set = spec.tokens(Some(dir), false)?;
            let (chosen, note) = sample_pieces(&candidates(&set), |i| set.piece_len(i), cap, spec.data.seed);
            let table: Vec<u32> = set.vocab().tokens().iter().map(|t| vocab.id(t).unwrap_or(0)).collect();
            let infos = set.infos()?;
            let mut out = EncodedPieces::default();
            for i in chosen {
                let mut ids = Vec::with_capacity(set.piece_len(i));
                set.extend_mapped(i, &table, &mut ids);
                out.push(set.names()[i].clone(), ids, infos[i].notes);
            }
            Ok((out, note))
        }
        _ => {
            let tokenizer = spec.tokenizer()?;
            let (all, _) = spec.load()?;
            let set = TokenSet::from_pieces(&all, tokenizer.as_ref());
            let (chosen, note) = sample_pieces(&candidates(&set), |i| set.piece_len(i), cap, spec.data.seed);
            let mut out = EncodedPieces::default();
            for i in chosen {
                let p = &all[i];
                out.push(p.name.clone(), vocab.encode(&tokenizer.encode(&p.piece.notes)), p.piece.notes.len());
            }
            Ok((out, note))
        }
    }
}

/// The pieces `candidates` (in order) whose lengths `len` sum to at most `cap`: all of them, or
/// whole pieces drawn in a seeded order until the next would pass `cap` (at least one), put back
/// in the candidates' order, with a line saying so.
pub fn sample_pieces(candidates: &[usize], len: impl Fn(usize) -> usize, cap: usize, seed: u64) -> (Vec<usize>, Option<String>) {
    let total: usize = candidates.iter().map(|&i| len(i)).sum();
    if total <= cap {
        return (candidates.to_vec(), None);
    }
    let mut order = candidates.to_vec();
    crate::rng::Rng::new(seed ^ 0xBA5E_11E5_0000_0001).shuffle(&mut order);
    let (mut chosen, mut tokens) = (Vec::new(), 0usize);
    for i in order {
        if !chosen.is_empty() && tokens + len(i) > cap {
            continue;
        }
        tokens += len(i);
        chosen.push(i);
    }
    chosen.sort_unstable();
    let note = format!("a seeded sample of {} of {} training pieces ({tokens} of {total} tokens)", chosen.len(), candidates.len());
    (chosen, Some(note))
}

/// The MIDI files `paths`, read with the run's settings and encoded with the checkpoint's
/// vocabulary (from the token cache in `cache`, or in memory when `None`). The skipped files are
/// printed on stderr (`skipped PATH: cause`); an error when none is usable.
pub fn path_pieces(loaded: &Loaded, paths: &[PathBuf], cache: Option<&Path>) -> Result<EncodedPieces, String> {
    let spec = &loaded.meta.data;
    let tokenizer = spec.tokenizer()?;
    let what = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    let (out, skipped) = match cache {
        Some(dir) => {
            let key = CacheKey {
                paths: absolute(paths),
                read: spec.read.clone(),
                tokenizer: spec.tokenizer.clone(),
                tokenizer_options: spec.tokenizer_options.clone(),
            };
            let (set, _) = load_or_build(dir, &key, tokenizer.as_ref(), false, false)?;
            let skipped = set.skipped().iter().map(|s| Skipped { name: given_name(paths, &s.name), cause: s.cause.clone() }).collect();
            (encode_set(&set, &loaded.meta.vocab, |_| true)?, skipped)
        }
        None => {
            let corpus = load_corpus(paths, &spec.read);
            let mut out = EncodedPieces::default();
            for p in &corpus.pieces {
                out.push(p.name.clone(), loaded.meta.vocab.encode(&tokenizer.encode(&p.piece.notes)), p.piece.notes.len());
            }
            (out, corpus.skipped)
        }
    };
    if out.ids.is_empty() {
        return Err(no_usable_file(&what, &skipped));
    }
    for s in &skipped {
        eprintln!("skipped {}: {}", s.name, s.cause);
    }
    Ok(out)
}

/// The training sequences of a checkpoint's run as training saw them: each training piece (ids of
/// the checkpoint's vocabulary) moved by every shift of the run's `--transpose` through the
/// id -> id tables of transposition at batch time ([`Transposer`]: a token whose moved version is
/// not in the vocabulary becomes `<unk>`).
pub fn transposed_sequences(loaded: &Loaded, pieces: Vec<Vec<u32>>, tokenizer: &dyn Tokenizer) -> Vec<Vec<u32>> {
    let max = loaded.meta.data.data.transpose.min(127);
    if max == 0 {
        return pieces;
    }
    let t = Transposer::new(&loaded.meta.vocab, tokenizer, max);
    let mut out = Vec::with_capacity(pieces.len() * (2 * max as usize + 1));
    for ids in &pieces {
        for s in -(max as i32)..=max as i32 {
            let table = t.table(s);
            out.push(ids.iter().map(|&v| table[v as usize]).collect());
        }
    }
    out
}

/// The notes of the run's validation pieces, by name, in corpus order, for `stats.json`: only those
/// files are read (not the whole corpus).
pub fn validation_notes(loaded: &Loaded) -> Result<Vec<(String, Vec<Note>)>, String> {
    validation_notes_of(loaded, &loaded.meta.valid_pieces)
}

/// At most `limit` of the run's validation pieces, for the statistics of a sample (their
/// comparison costs the square of their number): all of them when there are no more, else a
/// seeded choice (the run's seed), in corpus order. Returns the names chosen and how many there were.
pub fn stats_reference(loaded: &Loaded, limit: usize) -> (Vec<String>, usize) {
    let all = &loaded.meta.valid_pieces;
    if all.len() <= limit {
        return (all.clone(), all.len());
    }
    let mut order: Vec<usize> = (0..all.len()).collect();
    crate::rng::Rng::new(loaded.meta.data.data.seed ^ 0x57A7_5000_0000_0001).shuffle(&mut order);
    let mut chosen = order[..limit].to_vec();
    chosen.sort_unstable();
    (chosen.into_iter().map(|i| all[i].clone()).collect(), all.len())
}

/// [`validation_notes`] of the validation pieces named `names` only.
pub fn validation_notes_of(loaded: &Loaded, names: &[String]) -> Result<Vec<(String, Vec<Note>)>, String> {
    let spec: &DataSpec = &loaded.meta.data;
    let valid: HashSet<&str> = names.iter().map(String::as_str).collect();
    if spec.paths.is_empty() {
        let (all, _) = spec.load()?;
        return Ok(all.into_iter().filter(|p| valid.contains(p.name.as_str())).map(|p| (p.name, p.piece.notes)).collect());
    }
    // Piece names are the walked paths: walk again (for the corpus order) and read only those.
    let (files, _) = collect(&spec.paths);
    let mut out = Vec::new();
    for path in files {
        let name = crate::data::corpus::path_name(&path);
        if !valid.contains(name.as_str()) {
            continue;
        }
        let piece = crate::music::midi::read_midi_file(&path).and_then(|b| read_midi(&b, &spec.read).map_err(|e| e.to_string()));
        match piece {
            Ok(p) => out.push((name, p.notes)),
            Err(cause) => eprintln!("skipped {name}: {cause}"),
        }
    }
    Ok(out)
}

/// The paths `given` made absolute, as the token cache keys them (so that prepare, train, eval
/// and inspect share a cache file).
pub fn absolute(given: &[PathBuf]) -> Vec<PathBuf> {
    given.iter().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())).collect()
}

/// The name a file found under the absolute paths of `given` has when walked from `given` itself
/// (what reading the MIDI without the cache calls it): `/abs/data/a.mid` -> `data/a.mid`.
pub fn given_name(given: &[PathBuf], name: &str) -> String {
    let path = Path::new(name);
    for (g, abs) in given.iter().zip(absolute(given)) {
        if let Ok(rest) = path.strip_prefix(&abs) {
            return if rest.as_os_str().is_empty() { g.display().to_string() } else { g.join(rest).display().to_string() };
        }
    }
    name.to_string()
}

/// `etude inspect`'s report of a tokenised corpus (the same as [`crate::data::corpus::inspect`] of the
/// corpus it was made from, by the tokenizer called `tokenizer`), files named as walked from the
/// paths `given` (see [`given_name`]).
pub fn inspect_tokens(set: &TokenSet, tokenizer: &str, given: &[PathBuf]) -> Result<InspectReport, String> {
    let infos = set.infos()?;
    let files: Vec<FileReport> = set
        .names()
        .iter()
        .zip(infos)
        .enumerate()
        .map(|(i, (name, info))| FileReport {
            name: given_name(given, name),
            format: info.format,
            ticks_per_quarter: info.ticks_per_quarter,
            tracks: info.tracks,
            notes: info.notes,
            duration_seconds: info.duration_seconds,
            duration_quarters: info.duration_quarters,
            tokens: set.piece_len(i),
        })
        .collect();
    let vocab = set.vocab();
    let top_tokens = vocab.tokens().iter().zip(vocab.counts()).skip(1).take(10).map(|(t, &c)| (t.clone(), c)).collect();
    let totals = Totals {
        tokenizer: tokenizer.to_string(),
        files_used: files.len(),
        files_skipped: set.skipped().len(),
        notes: files.iter().map(|f| f.notes).sum(),
        tokens: files.iter().map(|f| f.tokens).sum(),
        duration_seconds: files.iter().fold(0.0, |acc, f| acc + f.duration_seconds),
        vocab_size: vocab.len(),
        top_tokens,
    };
    let skipped = set.skipped().iter().map(|s| Skipped { name: given_name(given, &s.name), cause: s.cause.clone() }).collect();
    Ok(InspectReport { files, skipped, totals })
}
