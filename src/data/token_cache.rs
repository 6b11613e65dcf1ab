//! The token cache: a corpus tokenised once, stored as a compact id array and memory-mapped by
//! later runs instead of reading MIDI again.
//!
//! A [`TokenSet`] is a tokenised corpus: the pieces' names, the files that were skipped and why,
//! the corpus vocabulary (every token of the corpus, `<unk>` first, then by decreasing count, ties
//! in string order: [`Vocab::from_counts`] with min count 1) and the pieces as ids of that
//! vocabulary, laid end to end, with an index of where each piece starts. It is made in memory
//! ([`TokenSet::from_pieces`], [`tokenize_files`]) or mapped from a cache file ([`load`]).
//!
//! One cache file per (data paths, reading options, tokenizer and its options), named by a hash
//! of them, in the cache folder (`--cache DIR`, default [`default_dir`]). Layout, little-endian:
//!
//! ```text
//! "ETUDTOK2"                     8 bytes, the format
//! H                              u64, length of the header
//! header                         H bytes of JSON: the key (paths and settings), the build time,
//!                                every file with its size, modification and change times, inode
//!                                and content hash,
//!                                the piece names, the skipped files, the vocabulary, the id
//!                                width (2 or 4 bytes), the numbers of pieces and ids and the
//!                                length I of the piece information
//! zero padding to 8 bytes
//! offsets                        (pieces + 1) x u64: piece i is ids[offsets[i]..offsets[i+1]]
//! ids                            ids x u16 (when the vocabulary has at most 65,536 entries) or u32
//! zero padding to 8 bytes
//! information                    I bytes of JSON: per piece what `inspect` shows ([`PieceInfo`]:
//!                                format, tracks, notes, length), read only by `inspect` and `eval`
//! zero padding to 8 bytes
//! checksum                       u64, a hash of every byte before it
//! ```
//!
//! A cache file is used only when its format, size, checksum, key and id range are right and
//! every file it was built from is still there with the same size, modification time, change time
//! and inode (a write moves the change time even when the modification time is set back; the
//! same content, hashed again, for a file changed within 2 s of the build: a change inside the
//! clock's resolution), and no file was added. A file that could not be read is read again every
//! time (its error is never kept). Anything else is reported in one line and the
//! cache is rebuilt; it is never trusted. A cache file is written to a temporary file and renamed,
//! so a reader sees the old file or the new one, never half of one.
//!
//! **Incremental rebuilds.** A cache file that is out of date but sound (format, checksum, the same
//! reading and tokenizer settings and etude version) gives its entries to the rebuild: a file that
//! is unchanged by the test above keeps its stored ids (or its stored error) and only the changed
//! and added files are read and tokenised; the vocabulary is counted again from all the ids. The
//! result is the one a cold build gives, id for id ([`TokenSet::tokenised_files`] says how many
//! files were read). A damaged or foreign cache file gives nothing.

use crate::data::corpus::{builtin, collect, path_name, LoadedPiece, Skipped};
use crate::music::midi::{read_midi, ReadOptions};
use crate::music::tokens::{Tokenizer, Vocab};
use rayon::prelude::*;
use std::collections::HashMap;
use crate::data::token_set::{Ids, Infos, PieceInfo, TokenSet};
use crate::data::cache_file::{CacheKey, Donor, FileStamp, Miss, UNREAD, change_id, hash64, load, mapped_set, mtime_ns, now_ns, open, unchanged, write_file};
#[cfg(test)]
use crate::data::cache_file::encode_file;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Files tokenised per parallel batch (bounds the token strings held at once).
const CHUNK: usize = 256;

/// The folder of the token cache when `--cache` is not given: `etude/tokens` under the user's
/// cache folder (`$XDG_CACHE_HOME` or `~/.cache` on Linux), else `.etude-cache` here.
pub fn default_dir() -> PathBuf {
    dirs::cache_dir().map(|d| d.join("etude").join("tokens")).unwrap_or_else(|| PathBuf::from(".etude-cache"))
}

impl TokenSet {
    /// Pieces tokenised in memory.
    pub fn from_pieces(pieces: &[LoadedPiece], tokenizer: &dyn Tokenizer) -> TokenSet {
        let lists: Vec<Encoded> = pieces.par_iter().map(|p| Encoded::of(tokenizer, &p.piece.notes)).collect();
        let mut b = Builder::new(tokenizer);
        for (p, tokens) in pieces.iter().zip(lists) {
            b.push_encoded(p.name.clone(), &tokens, PieceInfo::of(&p.piece));
        }
        b.finish(Vec::new())
    }
}

/// A piece's tokens as the tokenizer's codes ([`Tokenizer::encode_codes`]: no string per token),
/// or as strings for a tokenizer without codes.
enum Encoded {
    Codes(Vec<u32>),
    Strings(Vec<String>),
}

impl Encoded {
    fn of(tokenizer: &dyn Tokenizer, notes: &[crate::music::midi::Note]) -> Encoded {
        match tokenizer.encode_codes(notes) {
            Some(codes) => Encoded::Codes(codes),
            None => Encoded::Strings(tokenizer.encode(notes)),
        }
    }
}

/// Interns token strings into provisional ids, then renumbers them by the corpus vocabulary. The
/// tokenizer's codes ([`Tokenizer::code_count`]) are the provisional ids `0..codes` (their
/// strings interned when the builder is made); other strings follow in order of first appearance.
#[derive(Default)]
struct Builder {
    names: Vec<String>,
    index: HashMap<String, u32>,
    tokens: Vec<String>,
    counts: Vec<u64>,
    ids: Vec<u32>,
    offsets: Vec<u64>,
    infos: Vec<PieceInfo>,
    /// Provisional id of each id of the donor cache's vocabulary (u32::MAX: not seen yet).
    donor_ids: Vec<u32>,
}

impl Builder {
    /// A builder whose provisional ids `0..tokenizer.code_count()` are the tokenizer's codes.
    fn new(tokenizer: &dyn Tokenizer) -> Builder {
        let mut b = Builder::default();
        for c in 0..tokenizer.code_count() as u32 {
            let t = tokenizer.code_token(c).expect("every code below code_count has a token");
            let id = b.intern(&t);
            assert_eq!(id, c, "codes have distinct tokens");
        }
        b
    }

    /// A piece given as codes (each below the tokenizer's code count) or strings.
    fn push_encoded(&mut self, name: String, tokens: &Encoded, info: PieceInfo) {
        match tokens {
            Encoded::Strings(t) => self.push(name, t, info),
            Encoded::Codes(codes) => {
                self.start();
                for &c in codes {
                    self.counts[c as usize] += 1;
                }
                self.ids.extend_from_slice(codes);
                self.end(name, info);
            }
        }
    }

    fn intern(&mut self, t: &str) -> u32 {
        match self.index.get(t) {
            Some(&id) => id,
            None => {
                let id = self.tokens.len() as u32;
                self.index.insert(t.to_string(), id);
                self.tokens.push(t.to_string());
                self.counts.push(0);
                id
            }
        }
    }

    fn start(&mut self) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
    }

    fn end(&mut self, name: String, info: PieceInfo) {
        self.offsets.push(self.ids.len() as u64);
        self.names.push(name);
        self.infos.push(info);
    }

    fn push(&mut self, name: String, tokens: &[String], info: PieceInfo) {
        self.start();
        for t in tokens {
            let id = self.intern(t);
            self.counts[id as usize] += 1;
            self.ids.push(id);
        }
        self.end(name, info);
    }

    /// Piece `i` of the donor cache `d`, taken as stored: the same tokens as [`Builder::push`] of
    /// its tokens, without making a string per token.
    fn push_donor(&mut self, d: &Donor, i: usize) {
        self.start();
        if self.donor_ids.len() != d.header.vocab.len() {
            self.donor_ids = vec![u32::MAX; d.header.vocab.len()];
        }
        let (a, b) = (d.offsets[i] as usize, d.offsets[i + 1] as usize);
        for k in a..b {
            let c = d.id(k) as usize;
            let mut id = self.donor_ids[c];
            if id == u32::MAX {
                id = self.intern(d.header.vocab.token(c as u32));
                self.donor_ids[c] = id;
            }
            self.counts[id as usize] += 1;
            self.ids.push(id);
        }
        self.end(d.header.names[i].clone(), d.infos[i].clone());
    }

    fn finish(mut self, skipped: Vec<Skipped>) -> TokenSet {
        self.start();
        // Codes that never occur are not in the vocabulary (and no id refers to them).
        let pairs: Vec<(&str, u64)> =
            self.tokens.iter().map(String::as_str).zip(self.counts.iter().copied()).filter(|&(_, n)| n > 0).collect();
        let vocab = Vocab::from_counts(&pairs, 1);
        let renumber: Vec<u32> = self.tokens.iter().map(|t| vocab.id(t).unwrap_or(u32::MAX)).collect();
        for id in &mut self.ids {
            *id = renumber[*id as usize];
        }
        TokenSet {
            names: self.names,
            skipped,
            vocab,
            offsets: self.offsets,
            ids: Ids::Owned(self.ids),
            infos: Infos::Owned(self.infos),
            source: None,
            tokenised: 0,
            reused: 0,
        }
    }
}

/// A progress bar for tokenising (files per second and skipped files), drawn only on a terminal.
fn progress_bar(files: usize, show: bool) -> Option<indicatif::ProgressBar> {
    if !show {
        return None;
    }
    let bar = indicatif::ProgressBar::new(files as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "tokenising [{bar:30}] {pos}/{len} files  {per_sec}  {msg}  {elapsed_precise} < {eta_precise}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    Some(bar)
}

/// Read and tokenise every MIDI file under `paths` (the built-in corpus when empty) in parallel, in
/// the order of [`crate::data::corpus::load_corpus`], with a progress bar when `progress`.
pub fn tokenize_files(paths: &[PathBuf], read: &ReadOptions, tokenizer: &dyn Tokenizer, progress: bool) -> TokenSet {
    tokenize_stamped(paths, read, tokenizer, progress, None).0
}

/// What became of one file.
enum Done {
    Read(FileStamp, Result<(Encoded, PieceInfo), String>),
    /// Unchanged since the donor cache: its piece `usize` (or its stored error).
    Reused(FileStamp, Result<usize, String>),
}

/// [`tokenize_files`] and the stamps of the files read, and the paths the walk could not read,
/// taking the unchanged files' ids from `donor` when given.
fn tokenize_stamped(
    paths: &[PathBuf],
    read: &ReadOptions,
    tokenizer: &dyn Tokenizer,
    progress: bool,
    donor: Option<&Donor>,
) -> (TokenSet, Vec<FileStamp>, Vec<PathBuf>) {
    let mut b = Builder::new(tokenizer);
    let mut skipped = Vec::new();
    if paths.is_empty() {
        let n = builtin().len();
        for (name, bytes) in builtin() {
            match read_midi(bytes, read) {
                Ok(piece) => b.push_encoded(name, &Encoded::of(tokenizer, &piece.notes), PieceInfo::of(&piece)),
                Err(e) => skipped.push(Skipped { name, cause: e.to_string() }),
            }
        }
        let mut set = b.finish(skipped);
        set.tokenised = n;
        return (set, Vec::new(), Vec::new());
    }
    let (files, errors) = collect(paths);
    let walk_errors: Vec<PathBuf> = errors.iter().map(|(p, _)| p.clone()).collect();
    for (path, cause) in errors {
        skipped.push(Skipped { name: path_name(&path), cause });
    }
    let bar = progress_bar(files.len(), progress);
    let mut stamps = Vec::with_capacity(files.len());
    let (mut tokenised, mut reused) = (0usize, 0usize);
    for chunk in files.chunks(CHUNK) {
        let done: Vec<Done> = chunk
            .par_iter()
            .map(|path| {
                let meta = std::fs::metadata(path);
                if let (Some(d), Ok(m)) = (donor, &meta) {
                    if let Some((stamp, entry)) = d.files.get(path.as_path()) {
                        if unchanged(path, m, stamp, d.header.built_ns) {
                            return Done::Reused(stamp.clone(), entry.clone());
                        }
                    }
                }
                let (size, mtime) = meta.as_ref().map(|m| (m.len(), mtime_ns(m))).unwrap_or((0, 0));
                let (ctime_ns, ino) = meta.as_ref().map(change_id).unwrap_or((0, 0));
                let bytes = crate::music::midi::read_midi_file(path);
                let hash = bytes.as_ref().map(|b| hash64(b)).unwrap_or(0);
                let size = if bytes.is_ok() { size } else { UNREAD };
                let tokens = bytes
                    .and_then(|bytes| read_midi(&bytes, read).map_err(|e| e.to_string()))
                    .map(|piece| (Encoded::of(tokenizer, &piece.notes), PieceInfo::of(&piece)));
                Done::Read(FileStamp { path: path.clone(), size, mtime_ns: mtime, hash, ctime_ns, ino }, tokens)
            })
            .collect();
        for done in done {
            let stamp = match done {
                Done::Read(stamp, tokens) => {
                    tokenised += 1;
                    let name = path_name(&stamp.path);
                    match tokens {
                        Ok((tokens, info)) => b.push_encoded(name, &tokens, info),
                        Err(cause) => skipped.push(Skipped { name, cause }),
                    }
                    stamp
                }
                Done::Reused(stamp, entry) => {
                    reused += 1;
                    match entry {
                        Ok(i) => b.push_donor(donor.expect("reused from a donor"), i),
                        Err(cause) => skipped.push(Skipped { name: path_name(&stamp.path), cause }),
                    }
                    stamp
                }
            };
            stamps.push(stamp);
        }
        if let Some(bar) = &bar {
            bar.inc(chunk.len() as u64);
            if !skipped.is_empty() {
                bar.set_message(format!("{} skipped", skipped.len()));
            }
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut set = b.finish(skipped);
    set.tokenised = tokenised;
    set.reused = reused;
    (set, stamps, walk_errors)
}

/// How a [`TokenSet`] was obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Mapped from a valid cache file.
    Hit,
    /// Tokenised and written to the cache, because of the miss.
    Built(Miss),
    /// Tokenised and written to the cache on request (`--force`).
    Forced,
}

/// The corpus of `key` from the cache in `dir`: mapped when valid, else tokenised (in parallel,
/// with a progress bar when `progress`; only the changed and added files when the old cache file
/// is sound, see the module documentation) and written there, and the reason said in one line on
/// stderr. `force` rebuilds a valid cache too, from scratch. The built-in corpus (no paths) is
/// never cached.
pub fn load_or_build(dir: &Path, key: &CacheKey, tokenizer: &dyn Tokenizer, force: bool, progress: bool) -> Result<(TokenSet, Outcome), String> {
    if key.paths.is_empty() {
        return Ok((tokenize_files(&[], &key.read, tokenizer, false), Outcome::Forced));
    }
    // A file where the cache folder should be: said so once, and the run goes on without the
    // cache (it was "damaged", then "File exists").
    let not_a_folder = dir.exists() && !dir.is_dir();
    let file = key.file_in(dir);
    let miss = if force {
        None
    } else if not_a_folder {
        Some(Miss::Absent)
    } else {
        match load(&file, key) {
            Ok(set) => return Ok((set, Outcome::Hit)),
            Err(miss) => Some(miss),
        }
    };
    match &miss {
        Some(Miss::Absent) | None => {}
        Some(m) => eprintln!("token cache {}: {m}; rebuilding", file.display()),
    }
    let donor = match &miss {
        Some(Miss::Stale(_)) => Donor::open(&file, key),
        _ => None,
    };
    let started = Instant::now();
    let built_ns = now_ns();
    let (set, stamps, walk_errors) = tokenize_stamped(&key.paths, &key.read, tokenizer, progress, donor.as_ref());
    drop(donor);
    let secs = started.elapsed().as_secs_f64();
    let written = if not_a_folder {
        Err(format!("{}: is a file, not a folder", dir.display()))
    } else {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display())).and_then(|_| {
            crate::files::atomic_write_with(&file, |f| {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
                write_file(&set, key, built_ns, stamps, walk_errors, &mut w)?;
                std::io::Write::flush(&mut w).map_err(|e| e.to_string())
            })
        })
    };
    // Written: the copy in memory (4 bytes per token) is let go first and the ids mapped from
    // the file, checked as any cache file, as a later run maps them (never both at once: the
    // check reads every page of the file). A file that cannot be read back (replaced meanwhile
    // by something damaged) is said, and the corpus tokenised again in memory.
    let set = match &written {
        Ok(()) => {
            let counts = (set.tokenised, set.reused);
            drop(set);
            match open(&file) {
                Ok(sound) => {
                    let mut mapped = mapped_set(sound, &file);
                    (mapped.tokenised, mapped.reused) = counts;
                    mapped
                }
                Err(m) => {
                    eprintln!("token cache {}: written but not readable back ({m}); tokenising again in memory", file.display());
                    tokenize_stamped(&key.paths, &key.read, tokenizer, progress, None).0
                }
            }
        }
        Err(_) => set,
    };
    let place = match written {
        Ok(()) => format!("cached in {}", file.display()),
        Err(e) => {
            // The tokens are in memory: the run goes on, only the next one tokenises again.
            eprintln!("token cache {e}; continuing without it (choose another folder with --cache, or --no-cache)");
            "not cached".to_string()
        }
    };
    let rate = if set.reused > 0 {
        format!(", {} unchanged files taken from the old cache", set.reused)
    } else {
        format!(", {:.0} files/s", set.tokenised as f64 / secs.max(1e-9))
    };
    eprintln!(
        "tokenised {} files ({} skipped) in {secs:.1} s{rate}: {} pieces, {} tokens, vocabulary {}; {place}",
        set.tokenised,
        set.skipped.len(),
        set.len(),
        set.total_ids(),
        set.vocab.len(),
    );
    let outcome = match miss {
        Some(m) => Outcome::Built(m),
        None => Outcome::Forced,
    };
    Ok((set, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::music::midi::SmfFormat;
    use crate::music::tokens::TokenizerOptions;

    /// A vocabulary beyond 65,536 entries is stored as u32 and maps back unchanged.
    #[test]
    fn large_vocabularies_are_stored_as_u32() {
        let mut b = Builder::default();
        let tokens: Vec<String> = (0..70_000).map(|i| format!("T{i}")).collect();
        let info = PieceInfo { format: SmfFormat::SingleTrack, ticks_per_quarter: Some(480), tracks: Vec::new(), notes: 3, duration_seconds: 41.142815999999996, duration_quarters: 0.1 + 0.2 };
        b.push("a".into(), &tokens[..40_000], info.clone());
        b.push("b".into(), &tokens[30_000..], info);
        let set = b.finish(vec![Skipped { name: "c".into(), cause: "bad".into() }]);
        assert_eq!(set.vocab().len(), 70_001);
        let key = CacheKey { paths: Vec::new(), read: ReadOptions::default(), tokenizer: "x".into(), tokenizer_options: TokenizerOptions::default() };
        let dir = tempfile::tempdir().unwrap();
        let file = key.file_in(dir.path());
        std::fs::write(&file, encode_file(&set, &key, now_ns(), Vec::new(), Vec::new()).unwrap()).unwrap();
        let mapped = load(&file, &key).unwrap();
        assert_eq!(mapped.id_bytes(), 4);
        assert_eq!(mapped.piece_tokens(0), tokens[..40_000]);
        assert_eq!(mapped.piece_tokens(1), tokens[30_000..]);
        assert_eq!(mapped.skipped(), set.skipped());
        assert_eq!(mapped.count_ids(&[0, 1]), set.count_ids(&[0, 1]));
        assert_eq!(mapped.infos().unwrap(), set.infos().unwrap());
    }

    #[test]
    fn hash64_sees_every_byte_and_the_length() {
        let base = vec![3u8; 21];
        let h = hash64(&base);
        for i in 0..base.len() {
            let mut b = base.clone();
            b[i] ^= 1;
            assert_ne!(hash64(&b), h, "byte {i}");
        }
        assert_ne!(hash64(&base[..20]), h);
        assert_ne!(hash64(&[0u8; 8]), hash64(&[0u8; 7]));
    }

    /// The streamed hash of a file written in parts equals the hash of its bytes, however cut.
    #[test]
    fn hash64_in_parts_equals_hash64() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for cuts in [vec![], vec![1], vec![3, 5, 8, 9], vec![7, 7, 16, 500, 999], vec![0, 1000]] {
            let mut h = crate::data::cache_file::Hash64::new(bytes.len() as u64);
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                h.update(&bytes[at..c]);
                at = c;
            }
            assert_eq!(h.finish(), hash64(&bytes));
        }
    }
}
