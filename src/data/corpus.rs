//! Where the music comes from: the built-in corpus (embedded in the binary) or files and folders.
//!
//! [`builtin`] gives the 102 public-domain pieces of `corpus/` (see `corpus/SOURCE.md`,
//! `corpus/provenance.tsv` and `corpus/mutopia/manifest.csv`), so every command that reads music
//! works from any directory with no argument. [`collect`] walks files and folders; [`load_corpus`] reads them all, collecting
//! per-file errors instead of stopping; [`inspect`] summarises a corpus for `etude inspect`.

use crate::music::midi::{read_midi, read_midi_file, readable, ReadOptions, Score, SmfFormat, TrackInfo};
use crate::music::tokens::{Tokenizer, Vocab};
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

// The embedded files, sorted by name: `src/data/builtin_corpus.rs`.
use crate::data::builtin_corpus::BUILTIN;

/// Prefix of the names of built-in pieces.
pub const BUILTIN_PREFIX: &str = "builtin:";

/// The built-in corpus: (`builtin:<path under corpus/>`, bytes), sorted by name.
pub fn builtin() -> Vec<(String, &'static [u8])> {
    BUILTIN.iter().map(|&(name, bytes)| (format!("{BUILTIN_PREFIX}{name}"), bytes)).collect()
}

/// True for `.mid` / `.midi` in any case.
pub fn is_midi_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("mid") || e.eq_ignore_ascii_case("midi"))
}

/// The MIDI files named by `paths`: a file is taken as given (whatever its extension); a folder is
/// walked recursively for `.mid`/`.midi` files (any case), each folder's entries in sorted order.
/// Paths that cannot be read go to the second list with the reason; a file reached twice is listed
/// once.
pub fn collect<P: AsRef<Path>>(paths: &[P]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let (files, errors) = collect_stat(paths);
    (files.into_iter().map(|(path, _)| path).collect(), errors)
}

/// [`collect`] with each file's metadata (`std::fs::metadata`, read once by the walk): one
/// `stat` per file, the entry types from the folder listing, and the canonical path of an entry
/// (by which a file reached twice is found) made from its folder's unless it is a symbolic link.
pub fn collect_stat<P: AsRef<Path>>(paths: &[P]) -> Walked {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for p in paths {
        let p = p.as_ref();
        let canonical = || p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => walk(p, canonical(), &mut files, &mut errors, &mut seen),
            Ok(m) => match readable(&m) {
                Ok(()) => {
                    if seen.insert(canonical()) {
                        files.push((p.to_path_buf(), m));
                    }
                }
                Err(cause) => errors.push((p.to_path_buf(), cause)),
            },
            Err(e) => errors.push((p.to_path_buf(), e.to_string())),
        }
    }
    (files, errors)
}

/// What [`collect_stat`] found: the files with their metadata, and the paths it could not read.
pub type Walked = (Vec<(PathBuf, std::fs::Metadata)>, Vec<(PathBuf, String)>);

/// Walk `dir`, whose canonical path is `canonical`.
fn walk(dir: &Path, canonical: PathBuf, files: &mut Vec<(PathBuf, std::fs::Metadata)>, errors: &mut Vec<(PathBuf, String)>, seen: &mut HashSet<PathBuf>) {
    // A folder reached twice (a symbolic link loop) is walked once.
    if !seen.insert(canonical.clone()) {
        return;
    }
    let mut entries: Vec<(PathBuf, Option<std::fs::FileType>)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| (e.path(), e.file_type().ok()))).collect(),
        Err(e) => {
            errors.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, kind) in entries {
        // A symbolic link (or an entry of unknown type) is followed, as `Path::is_dir` does, and
        // its canonical path resolved; any other entry's is its folder's and its name.
        let link = kind.is_none_or(|k| k.is_symlink());
        let canonical_entry = || match (link, path.file_name()) {
            (false, Some(name)) => canonical.join(name),
            _ => path.canonicalize().unwrap_or_else(|_| path.clone()),
        };
        let is_dir = if link { path.is_dir() } else { kind.is_some_and(|k| k.is_dir()) };
        if is_dir {
            walk(&path, canonical_entry(), files, errors, seen);
        } else if is_midi_path(&path) && seen.insert(canonical_entry()) {
            match std::fs::metadata(&path).map_err(|e| e.to_string()).and_then(|m| readable(&m).map(|()| m)) {
                Ok(m) => files.push((path, m)),
                Err(cause) => errors.push((path, cause)),
            }
        }
    }
}

/// One piece that was read.
#[derive(Clone, Debug)]
pub struct LoadedPiece {
    /// The file's path as given, or `builtin:<name>`.
    pub name: String,
    pub piece: Score,
}

/// A file that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub name: String,
    pub cause: String,
}

/// The error of a corpus without a usable file: none found, or the first few skipped with their
/// causes (a one-line message). `what` names the corpus ([`describe_paths`]).
pub fn no_usable_file(what: &str, skipped: &[Skipped]) -> String {
    const SHOWN: usize = 3;
    if skipped.is_empty() {
        return format!("no .mid or .midi file found in {what}");
    }
    let causes: Vec<String> = skipped.iter().take(SHOWN).map(|s| format!("{}: {}", s.name, s.cause)).collect();
    let more = if skipped.len() > SHOWN { format!("; and {} more", skipped.len() - SHOWN) } else { String::new() };
    format!("no usable MIDI file in {what}: {} skipped ({}{more})", skipped.len(), causes.join("; "))
}

/// The files and folders given, for a message: `a.mid, songs/`.
pub fn describe_paths(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// The pieces read from a set of paths, in order, and the files that were skipped.
#[derive(Clone, Debug, Default)]
pub struct Corpus {
    pub pieces: Vec<LoadedPiece>,
    pub skipped: Vec<Skipped>,
}

/// Read every MIDI file under `paths` (the built-in corpus when `paths` is empty). A file that
/// cannot be read or parsed, or holds no usable notes, is skipped with its cause; nothing stops
/// the load.
pub fn load_corpus<P: AsRef<Path>>(paths: &[P], opts: &ReadOptions) -> Corpus {
    let mut corpus = Corpus::default();
    let mut add = |name: String, result: Result<Score, String>| match result {
        Ok(piece) => corpus.pieces.push(LoadedPiece { name, piece }),
        Err(cause) => corpus.skipped.push(Skipped { name, cause }),
    };
    if paths.is_empty() {
        for (name, bytes) in builtin() {
            add(name, read_midi(bytes, opts).map_err(|e| e.to_string()));
        }
        return corpus;
    }
    let (files, errors) = collect(paths);
    for (path, cause) in errors {
        add(path_name(&path), Err(cause));
    }
    for path in files {
        let result = read_midi_file(&path)
            .and_then(|bytes| read_midi(&bytes, opts).map_err(|e| e.to_string()));
        add(path_name(&path), result);
    }
    corpus
}

/// The name of a piece read from `path`: its text, a byte that is not UTF-8 written `\xNN`, so that
/// two files never share a name (`Path::display` writes every such byte as U+FFFD).
pub fn path_name(path: &Path) -> String {
    if let Some(s) = path.to_str() {
        return s.to_string();
    }
    let bytes = crate::files::path_json::bytes_of(path);
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// `etude inspect`'s view of one file.
#[derive(Clone, Debug, Serialize)]
pub struct FileReport {
    pub name: String,
    pub format: SmfFormat,
    pub ticks_per_quarter: Option<u16>,
    pub tracks: Vec<TrackInfo>,
    /// Notes kept (piano parts, or every pitched part).
    pub notes: usize,
    pub duration_seconds: f64,
    pub duration_quarters: f64,
    pub tokens: usize,
}

/// Totals over a corpus.
#[derive(Clone, Debug, Serialize)]
pub struct Totals {
    pub tokenizer: String,
    pub files_used: usize,
    pub files_skipped: usize,
    pub notes: usize,
    pub tokens: usize,
    pub duration_seconds: f64,
    /// Vocabulary of the whole corpus (min count 1), `<unk>` included.
    pub vocab_size: usize,
    /// The 10 most frequent tokens with their counts.
    pub top_tokens: Vec<(String, u64)>,
}

/// Everything `etude inspect` prints.
#[derive(Clone, Debug, Serialize)]
pub struct InspectReport {
    pub files: Vec<FileReport>,
    pub skipped: Vec<Skipped>,
    pub totals: Totals,
}

/// Summarise `corpus` as tokenised by `tokenizer`.
pub fn inspect(corpus: &Corpus, tokenizer: &dyn Tokenizer) -> InspectReport {
    let token_lists: Vec<Vec<String>> = corpus.pieces.iter().map(|p| tokenizer.encode(&p.piece.notes)).collect();
    let files: Vec<FileReport> = corpus
        .pieces
        .iter()
        .zip(&token_lists)
        .map(|(p, tokens)| FileReport {
            name: p.name.clone(),
            format: p.piece.format,
            ticks_per_quarter: p.piece.ticks_per_quarter,
            tracks: p.piece.tracks.clone(),
            notes: p.piece.notes.len(),
            duration_seconds: p.piece.duration_seconds,
            duration_quarters: p.piece.duration_quarters,
            tokens: tokens.len(),
        })
        .collect();
    let vocab = Vocab::build(&token_lists, 1);
    let top_tokens = vocab
        .tokens()
        .iter()
        .zip(vocab.counts())
        .skip(1)
        .take(10)
        .map(|(t, &c)| (t.clone(), c))
        .collect();
    let totals = Totals {
        tokenizer: tokenizer.name().to_string(),
        files_used: files.len(),
        files_skipped: corpus.skipped.len(),
        notes: files.iter().map(|f| f.notes).sum(),
        tokens: files.iter().map(|f| f.tokens).sum(),
        duration_seconds: files.iter().fold(0.0, |acc, f| acc + f.duration_seconds),
        vocab_size: vocab.len(),
        top_tokens,
    };
    InspectReport { files, skipped: corpus.skipped.clone(), totals }
}
