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

use crate::corpus::{builtin, collect, path_name, LoadedPiece, Skipped};
use crate::midi::{read_midi, Piece, ReadOptions, SmfFormat, TrackInfo};
use crate::tokens::{Tokenizer, TokenizerOptions, Vocab};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The first 8 bytes of a cache file.
pub const MAGIC: &[u8; 8] = b"ETUDTOK2";

/// A file modified this close to (or after) the build is hashed again before the cache is used.
const RACY_NS: u64 = 2_000_000_000;

/// Files tokenised per parallel batch (bounds the token strings held at once).
const CHUNK: usize = 256;

/// The folder of the token cache when `--cache` is not given: `etude/tokens` under the user's
/// cache folder (`$XDG_CACHE_HOME` or `~/.cache` on Linux), else `.etude-cache` here.
pub fn default_dir() -> PathBuf {
    dirs::cache_dir().map(|d| d.join("etude").join("tokens")).unwrap_or_else(|| PathBuf::from(".etude-cache"))
}

/// A 64-bit hash of `bytes` (8 bytes at a time; for detecting damage and changed files, not
/// adversaries).
pub fn hash64(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = 0x2545_F491_4F6C_DD1D ^ (bytes.len() as u64).wrapping_mul(K);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(last)).wrapping_mul(K).rotate_left(29);
    }
    h ^= h >> 32;
    h = h.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    h ^ (h >> 32)
}

/// Paths in JSON (cache keys and headers, checkpoint metadata): a UTF-8 path as its string, exactly
/// as serde writes a path; any other as `{"bytes": [..]}` (on Unix its bytes), where serde fails
/// ("path contains invalid UTF-8"). Every file name round-trips. `#[serde(with = "path_json")]`
/// on a `PathBuf`, `path_json::vec` on a `Vec<PathBuf>`.
pub mod path_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::path::{Path, PathBuf};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Bytes { bytes: Vec<u8> },
    }

    /// The bytes of a path (Unix: exactly; elsewhere its text, lossily).
    pub fn bytes_of(p: &Path) -> Vec<u8> {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            p.as_os_str().as_bytes().to_vec()
        }
        #[cfg(not(unix))]
        {
            p.to_string_lossy().as_bytes().to_vec()
        }
    }

    fn repr(p: &Path) -> Repr {
        match p.to_str() {
            Some(s) => Repr::Text(s.to_string()),
            None => Repr::Bytes { bytes: bytes_of(p) },
        }
    }

    fn path(r: Repr) -> PathBuf {
        match r {
            Repr::Text(s) => PathBuf::from(s),
            #[cfg(unix)]
            Repr::Bytes { bytes } => {
                use std::os::unix::ffi::OsStringExt;
                PathBuf::from(std::ffi::OsString::from_vec(bytes))
            }
            #[cfg(not(unix))]
            Repr::Bytes { bytes } => PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        repr(p).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Repr::deserialize(d).map(path)
    }

    pub mod vec {
        use super::*;

        pub fn serialize<S: Serializer>(ps: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
            ps.iter().map(|p| repr(p)).collect::<Vec<_>>().serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
            Vec::<Repr>::deserialize(d).map(|v| v.into_iter().map(path).collect())
        }
    }
}

/// What a cache file is made from: the data paths and every setting that changes the tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheKey {
    /// The data paths (as given to `--data`; training makes them absolute).
    #[serde(with = "path_json::vec")]
    pub paths: Vec<PathBuf>,
    pub read: ReadOptions,
    pub tokenizer: String,
    pub tokenizer_options: TokenizerOptions,
}

impl CacheKey {
    /// The cache file of this key in `dir`.
    pub fn file_in(&self, dir: &Path) -> PathBuf {
        let text = serde_json::to_string(self).expect("a cache key serialises");
        dir.join(format!("{:016x}.tokens", hash64(text.as_bytes())))
    }
}

/// A file a cache was built from, as it was then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FileStamp {
    #[serde(with = "path_json")]
    path: PathBuf,
    size: u64,
    mtime_ns: u64,
    hash: u64,
    /// The inode's change time and number (Unix; 0 elsewhere, and in caches written before them,
    /// which therefore rebuild once): a write that keeps the size and sets the modification time
    /// back (`touch -d`) still moves the change time, which no user can set, and a file replaced
    /// by another (`mv`) has another inode.
    #[serde(default)]
    ctime_ns: u64,
    #[serde(default)]
    ino: u64,
}

/// A stamp's size for a file that could not be read: matches no file, so a read error is never
/// reused (the file may be readable next time: permissions fixed, a disk back).
const UNREAD: u64 = u64::MAX;

/// The change time (ns) and inode number in `m` (0 and 0 where there are none).
fn change_id(m: &std::fs::Metadata) -> (u64, u64) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        ((m.ctime() as u64).wrapping_mul(1_000_000_000).wrapping_add(m.ctime_nsec() as u64), m.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        (0, 0)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    key: CacheKey,
    etude_version: String,
    built_ns: u64,
    files: Vec<FileStamp>,
    /// Paths the walk could not read (a folder that could not be listed).
    #[serde(with = "path_json::vec")]
    walk_errors: Vec<PathBuf>,
    names: Vec<String>,
    /// (name, cause) of every skipped file.
    skipped: Vec<(String, String)>,
    vocab: Vocab,
    id_bytes: u8,
    pieces: u64,
    ids: u64,
    /// Length of the piece information (JSON) after the ids.
    info_bytes: u64,
}

/// What `etude inspect` shows of a piece besides its tokens (kept in the cache beside the ids).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PieceInfo {
    pub format: SmfFormat,
    pub ticks_per_quarter: Option<u16>,
    pub tracks: Vec<TrackInfo>,
    /// Notes kept.
    pub notes: usize,
    #[serde(with = "f64_bits")]
    pub duration_seconds: f64,
    #[serde(with = "f64_bits")]
    pub duration_quarters: f64,
}

/// An f64 stored as its bit pattern, so that it reads back exactly (serde_json's float parsing
/// may be off by an ulp).
mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(x.to_bits())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        u64::deserialize(d).map(f64::from_bits)
    }
}

impl PieceInfo {
    pub fn of(piece: &Piece) -> PieceInfo {
        PieceInfo {
            format: piece.format,
            ticks_per_quarter: piece.ticks_per_quarter,
            tracks: piece.tracks.clone(),
            notes: piece.notes.len(),
            duration_seconds: piece.duration_seconds,
            duration_quarters: piece.duration_quarters,
        }
    }
}

enum Infos {
    Owned(Vec<PieceInfo>),
    /// The JSON of the cache file's information section: `map[at..at + len]` of the ids' map.
    Mapped { at: usize, len: usize },
}

enum Ids {
    Owned(Vec<u32>),
    Mapped { map: memmap2::Mmap, start: usize, wide: bool },
}

/// A tokenised corpus: pieces as ids of the corpus vocabulary (see the module documentation).
pub struct TokenSet {
    names: Vec<String>,
    skipped: Vec<Skipped>,
    vocab: Vocab,
    offsets: Vec<u64>,
    ids: Ids,
    infos: Infos,
    /// The cache file it was mapped from.
    source: Option<PathBuf>,
    /// Files read and tokenised to make this set, and files whose ids came from an older cache file.
    tokenised: usize,
    reused: usize,
}

impl TokenSet {
    /// Pieces tokenised in memory.
    pub fn from_pieces(pieces: &[LoadedPiece], tokenizer: &dyn Tokenizer) -> TokenSet {
        let lists: Vec<Vec<String>> = pieces.par_iter().map(|p| tokenizer.encode(&p.piece.notes)).collect();
        let mut b = Builder::default();
        for (p, tokens) in pieces.iter().zip(lists) {
            b.push(p.name.clone(), &tokens, PieceInfo::of(&p.piece));
        }
        b.finish(Vec::new())
    }

    /// Files read and tokenised to make this set (0 when mapped from a valid cache file).
    pub fn tokenised_files(&self) -> usize {
        self.tokenised
    }

    /// Files whose ids (or error) were taken from an out-of-date cache file instead of being
    /// tokenised again.
    pub fn reused_files(&self) -> usize {
        self.reused
    }

    /// Per piece, what `inspect` shows besides the tokens (parsed from the cache file when mapped).
    pub fn infos(&self) -> Result<Vec<PieceInfo>, String> {
        match (&self.infos, &self.ids) {
            (Infos::Owned(v), _) => Ok(v.clone()),
            (Infos::Mapped { at, len }, Ids::Mapped { map, .. }) => serde_json::from_slice(&map[*at..*at + *len])
                .map_err(|e| format!("token cache {}: unreadable piece information: {e}", self.source.as_deref().unwrap_or(Path::new("?")).display())),
            (Infos::Mapped { .. }, Ids::Owned(_)) => Err("piece information without its cache file".into()),
        }
    }

    /// Number of pieces.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Piece names, by index (file paths as walked, or `builtin:NAME`).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The files that could not be used, and why (also when they come from the cache).
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The corpus vocabulary: every token of the corpus with its count.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// The cache file this set is mapped from (`None`: made in memory).
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Number of ids of piece `i`.
    pub fn piece_len(&self, i: usize) -> usize {
        (self.offsets[i + 1] - self.offsets[i]) as usize
    }

    /// Number of ids of all pieces.
    pub fn total_ids(&self) -> usize {
        *self.offsets.last().unwrap_or(&0) as usize
    }

    /// Bytes per id in the store (2 or 4).
    pub fn id_bytes(&self) -> usize {
        match &self.ids {
            Ids::Owned(_) => 4,
            Ids::Mapped { wide, .. } => {
                if *wide {
                    4
                } else {
                    2
                }
            }
        }
    }

    /// Append piece `i`'s ids, each mapped through `table` (indexed by corpus id), to `out`.
    pub fn extend_mapped(&self, i: usize, table: &[u32], out: &mut Vec<u32>) {
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        match &self.ids {
            Ids::Owned(v) => out.extend(v[a..b].iter().map(|&c| table[c as usize])),
            Ids::Mapped { map, start, wide: false } => out.extend(
                map[start + 2 * a..start + 2 * b]
                    .chunks_exact(2)
                    .map(|c| table[u16::from_le_bytes([c[0], c[1]]) as usize]),
            ),
            Ids::Mapped { map, start, wide: true } => out.extend(
                map[start + 4 * a..start + 4 * b]
                    .chunks_exact(4)
                    .map(|c| table[u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize]),
            ),
        }
    }

    /// The corpus ids of piece `i`.
    pub fn piece_ids(&self, i: usize) -> Vec<u32> {
        let identity: Vec<u32> = (0..self.vocab.len() as u32).collect();
        let mut out = Vec::with_capacity(self.piece_len(i));
        self.extend_mapped(i, &identity, &mut out);
        out
    }

    /// The tokens of piece `i`.
    pub fn piece_tokens(&self, i: usize) -> Vec<String> {
        self.vocab.decode(&self.piece_ids(i))
    }

    /// How often each corpus id occurs in the pieces `pieces`.
    pub fn count_ids(&self, pieces: &[usize]) -> Vec<u64> {
        let mut counts = vec![0u64; self.vocab.len()];
        let identity: Vec<u32> = (0..self.vocab.len() as u32).collect();
        let mut buf = Vec::new();
        for &p in pieces {
            buf.clear();
            self.extend_mapped(p, &identity, &mut buf);
            for &c in &buf {
                counts[c as usize] += 1;
            }
        }
        counts
    }
}

/// Interns token strings into provisional ids in order of first appearance, then renumbers them
/// by the corpus vocabulary.
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
        let pairs: Vec<(&str, u64)> = self.tokens.iter().map(String::as_str).zip(self.counts.iter().copied()).collect();
        let vocab = Vocab::from_counts(&pairs, 1);
        let renumber: Vec<u32> = self.tokens.iter().map(|t| vocab.id(t).expect("every token is counted")).collect();
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

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn mtime_ns(m: &std::fs::Metadata) -> u64 {
    m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos() as u64).unwrap_or(0)
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
/// the order of [`crate::corpus::load_corpus`], with a progress bar when `progress`.
pub fn tokenize_files(paths: &[PathBuf], read: &ReadOptions, tokenizer: &dyn Tokenizer, progress: bool) -> TokenSet {
    tokenize_stamped(paths, read, tokenizer, progress, None).0
}

/// Whether the file at `path` (whose metadata is `meta`) is still the one `stamp` describes, for a
/// cache built at `built_ns`: the same size and modification time, and for a file modified within
/// [`RACY_NS`] of the build, the same content.
fn unchanged(path: &Path, meta: &std::fs::Metadata, stamp: &FileStamp, built_ns: u64) -> bool {
    meta.len() == stamp.size
        && mtime_ns(meta) == stamp.mtime_ns
        && change_id(meta) == (stamp.ctime_ns, stamp.ino)
        && (stamp.mtime_ns.max(stamp.ctime_ns).saturating_add(RACY_NS) < built_ns
            || crate::corpus::read_midi_file(path).map(|b| hash64(&b) == stamp.hash).unwrap_or(false))
}

/// What became of one file.
enum Done {
    Read(FileStamp, Result<(Vec<String>, PieceInfo), String>),
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
    let mut b = Builder::default();
    let mut skipped = Vec::new();
    if paths.is_empty() {
        let n = builtin().len();
        for (name, bytes) in builtin() {
            match read_midi(bytes, read) {
                Ok(piece) => b.push(name, &tokenizer.encode(&piece.notes), PieceInfo::of(&piece)),
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
                let bytes = crate::corpus::read_midi_file(path);
                let hash = bytes.as_ref().map(|b| hash64(b)).unwrap_or(0);
                let size = if bytes.is_ok() { size } else { UNREAD };
                let tokens = bytes
                    .and_then(|bytes| read_midi(&bytes, read).map_err(|e| e.to_string()))
                    .map(|piece| (tokenizer.encode(&piece.notes), PieceInfo::of(&piece)));
                Done::Read(FileStamp { path: path.clone(), size, mtime_ns: mtime, hash, ctime_ns, ino }, tokens)
            })
            .collect();
        for done in done {
            let stamp = match done {
                Done::Read(stamp, tokens) => {
                    tokenised += 1;
                    let name = path_name(&stamp.path);
                    match tokens {
                        Ok((tokens, info)) => b.push(name, &tokens, info),
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

fn pad8(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(8) {
        buf.push(0);
    }
}

/// The bytes of a cache file holding `set`.
fn encode_file(set: &TokenSet, key: &CacheKey, built_ns: u64, files: Vec<FileStamp>, walk_errors: Vec<PathBuf>) -> Result<Vec<u8>, String> {
    let wide = set.vocab.len() > 1 << 16;
    let info = serde_json::to_vec(&set.infos()?).expect("piece information serialises");
    let header = Header {
        key: key.clone(),
        etude_version: env!("CARGO_PKG_VERSION").to_string(),
        built_ns,
        files,
        walk_errors,
        names: set.names.clone(),
        skipped: set.skipped.iter().map(|s| (s.name.clone(), s.cause.clone())).collect(),
        vocab: set.vocab.clone(),
        id_bytes: if wide { 4 } else { 2 },
        pieces: set.len() as u64,
        ids: set.total_ids() as u64,
        info_bytes: info.len() as u64,
    };
    let json = serde_json::to_vec(&header).expect("a cache header serialises");
    let mut buf =
        Vec::with_capacity(json.len() + info.len() + 40 + 8 * set.offsets.len() + set.total_ids() * if wide { 4 } else { 2 });
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&(json.len() as u64).to_le_bytes());
    buf.extend_from_slice(&json);
    pad8(&mut buf);
    for o in &set.offsets {
        buf.extend_from_slice(&o.to_le_bytes());
    }
    let identity: Vec<u32> = (0..set.vocab.len() as u32).collect();
    let mut ids = Vec::new();
    for i in 0..set.len() {
        ids.clear();
        set.extend_mapped(i, &identity, &mut ids);
        for &id in &ids {
            if wide {
                buf.extend_from_slice(&id.to_le_bytes());
            } else {
                buf.extend_from_slice(&(id as u16).to_le_bytes());
            }
        }
    }
    pad8(&mut buf);
    buf.extend_from_slice(&info);
    pad8(&mut buf);
    let sum = hash64(&buf);
    buf.extend_from_slice(&sum.to_le_bytes());
    Ok(buf)
}

/// Why a cache file was not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Miss {
    /// There is no cache file yet.
    Absent,
    /// The file is not a valid cache file (truncated, damaged, foreign): never trusted.
    Damaged(String),
    /// A valid cache of files that have changed since (or of other settings).
    Stale(String),
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Miss::Absent => write!(f, "no cache yet"),
            Miss::Damaged(why) => write!(f, "damaged ({why})"),
            Miss::Stale(why) => write!(f, "out of date ({why})"),
        }
    }
}

/// A cache file whose format, size, checksum, piece index and ids are sound (nothing said yet
/// about its key or files).
struct Sound {
    header: Header,
    map: memmap2::Mmap,
    offsets: Vec<u64>,
    ids_at: usize,
    info_at: usize,
}

/// Map `file` and check everything in it that does not depend on what it was made from.
fn open(file: &Path) -> Result<Sound, Miss> {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Miss::Absent),
        Err(e) => return Err(Miss::Damaged(e.to_string())),
    };
    // SAFETY: cache files are only ever replaced by renaming a new file over them, never written in
    // place, so the mapped bytes do not change while mapped (unless another program edits the file
    // in place, which the checksum below catches for everything read before that).
    let map = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Miss::Damaged(e.to_string()))?;
    let (header, offsets_at) = parse_header(&map)?;
    let pieces = header.pieces as usize;
    let width = header.id_bytes as usize;
    if !(width == 2 || width == 4) || header.names.len() != pieces {
        return Err(Miss::Damaged("inconsistent header".into()));
    }
    let size = || Miss::Damaged("size".into());
    let ids_at = offsets_at + 8 * (pieces + 1);
    let ids_end = (ids_at as u64).checked_add(header.ids.checked_mul(width as u64).ok_or_else(size)?).ok_or_else(size)?;
    let info_at = ids_end.div_ceil(8) * 8;
    let info_end = info_at.checked_add(header.info_bytes).ok_or_else(size)?;
    let expected = info_end.div_ceil(8) * 8 + 8;
    if map.len() as u64 != expected {
        return Err(Miss::Damaged(format!("{} bytes, expected {expected} (truncated?)", map.len())));
    }
    let body = &map[..map.len() - 8];
    let stored = u64::from_le_bytes(map[map.len() - 8..].try_into().expect("8 bytes"));
    if hash64(body) != stored {
        return Err(Miss::Damaged("checksum mismatch".into()));
    }
    let offsets: Vec<u64> = map[offsets_at..ids_at].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8"))).collect();
    if offsets[0] != 0 || offsets.windows(2).any(|w| w[0] > w[1]) || offsets[pieces] != header.ids {
        return Err(Miss::Damaged("bad piece index".into()));
    }
    let n_vocab = header.vocab.len() as u64;
    let ids_bytes = &map[ids_at..ids_end as usize];
    let in_range = if width == 2 {
        ids_bytes.chunks_exact(2).all(|c| (u16::from_le_bytes([c[0], c[1]]) as u64) < n_vocab)
    } else {
        ids_bytes.chunks_exact(4).all(|c| (u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64) < n_vocab)
    };
    if !in_range {
        return Err(Miss::Damaged("an id beyond the vocabulary".into()));
    }
    Ok(Sound { header, map, offsets, ids_at, info_at: info_at as usize })
}

/// Map and check the cache file `file` for `key` (see the module documentation for the checks).
pub fn load(file: &Path, key: &CacheKey) -> Result<TokenSet, Miss> {
    let sound = open(file)?;
    if sound.header.key != *key {
        return Err(Miss::Stale("made for other data or settings".into()));
    }
    check_files(&sound.header)?;
    let Sound { header, map, offsets, ids_at, info_at } = sound;
    Ok(TokenSet {
        names: header.names,
        skipped: header.skipped.into_iter().map(|(name, cause)| Skipped { name, cause }).collect(),
        vocab: header.vocab,
        offsets,
        ids: Ids::Mapped { map, start: ids_at, wide: header.id_bytes == 4 },
        infos: Infos::Mapped { at: info_at, len: header.info_bytes as usize },
        source: Some(file.to_path_buf()),
        tokenised: 0,
        reused: 0,
    })
}

/// An out-of-date but sound cache file of the same settings, whose unchanged files a rebuild
/// takes instead of tokenising them again.
struct Donor {
    header: Header,
    map: memmap2::Mmap,
    offsets: Vec<u64>,
    ids_at: usize,
    infos: Vec<PieceInfo>,
    /// Every file it was built from: its stamp and its piece (or error).
    files: HashMap<PathBuf, (FileStamp, Result<usize, String>)>,
}

impl Donor {
    /// The donor's cache file `file` when it is sound and was made with `key`'s reading and
    /// tokenizer settings by this version of etude.
    fn open(file: &Path, key: &CacheKey) -> Option<Donor> {
        let Sound { header, map, offsets, ids_at, info_at } = open(file).ok()?;
        let k = &header.key;
        if k.read != key.read
            || k.tokenizer != key.tokenizer
            || k.tokenizer_options != key.tokenizer_options
            || header.etude_version != env!("CARGO_PKG_VERSION")
        {
            return None;
        }
        let infos: Vec<PieceInfo> = serde_json::from_slice(&map[info_at..info_at + header.info_bytes as usize]).ok()?;
        if infos.len() != header.names.len() {
            return None;
        }
        let piece: HashMap<&str, usize> = header.names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
        let error: HashMap<&str, &str> = header.skipped.iter().map(|(n, c)| (n.as_str(), c.as_str())).collect();
        let mut files = HashMap::with_capacity(header.files.len());
        for stamp in &header.files {
            let name = path_name(&stamp.path);
            let entry = match (piece.get(name.as_str()), error.get(name.as_str())) {
                (Some(&i), _) => Ok(i),
                (None, Some(&cause)) => Err(cause.to_string()),
                (None, None) => return None,
            };
            files.insert(stamp.path.clone(), (stamp.clone(), entry));
        }
        Some(Donor { header, map, offsets, ids_at, infos, files })
    }

    /// The `k`-th id of the donor's id array.
    fn id(&self, k: usize) -> u32 {
        let m = &self.map;
        if self.header.id_bytes == 4 {
            let at = self.ids_at + 4 * k;
            u32::from_le_bytes([m[at], m[at + 1], m[at + 2], m[at + 3]])
        } else {
            let at = self.ids_at + 2 * k;
            u16::from_le_bytes([m[at], m[at + 1]]) as u32
        }
    }
}

/// The header of a cache file and where its offsets start.
fn parse_header(map: &[u8]) -> Result<(Header, usize), Miss> {
    if map.len() < 16 || &map[..8] != MAGIC {
        return Err(Miss::Damaged("not an etude token cache".into()));
    }
    let len = u64::from_le_bytes(map[8..16].try_into().expect("8 bytes"));
    if len > map.len() as u64 - 16 {
        return Err(Miss::Damaged("header runs past the end (truncated?)".into()));
    }
    let len = len as usize;
    let header: Header =
        serde_json::from_slice(&map[16..16 + len]).map_err(|e| Miss::Damaged(format!("unreadable header: {e}")))?;
    Ok((header, (16 + len).div_ceil(8) * 8))
}

/// Stale when a file changed, was added or removed since `header` was built.
fn check_files(header: &Header) -> Result<(), Miss> {
    let (files, errors) = collect(&header.key.paths);
    let errors: Vec<PathBuf> = errors.into_iter().map(|(p, _)| p).collect();
    if errors != header.walk_errors {
        return Err(Miss::Stale("the paths that cannot be read changed".into()));
    }
    let before: HashMap<&Path, &FileStamp> = header.files.iter().map(|s| (s.path.as_path(), s)).collect();
    let (mut changed, mut added) = (0usize, 0usize);
    for path in &files {
        let Some(stamp) = before.get(path.as_path()) else {
            added += 1;
            continue;
        };
        let same = std::fs::metadata(path).is_ok_and(|m| unchanged(path, &m, stamp, header.built_ns));
        if !same {
            changed += 1;
        }
    }
    let now: std::collections::HashSet<&Path> = files.iter().map(PathBuf::as_path).collect();
    let removed = header.files.iter().filter(|s| !now.contains(s.path.as_path())).count();
    if changed + added + removed > 0 {
        return Err(Miss::Stale(format!("{changed} files changed, {added} added, {removed} removed")));
    }
    Ok(())
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
    let bytes = encode_file(&set, key, built_ns, stamps, walk_errors)?;
    let written = if not_a_folder {
        Err(format!("{}: is a file, not a folder", dir.display()))
    } else {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))
            .and_then(|_| crate::checkpoint::atomic_write(&file, &bytes))
    };
    drop(bytes);
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

impl crate::run::DataSpec {
    /// The spec's corpus tokenised: from the token cache in `cache` (see [`load_or_build`]), or
    /// read and tokenised in memory when `cache` is `None`. Errors when no file is usable, naming
    /// the files skipped and why.
    pub fn tokens(&self, cache: Option<&Path>, progress: bool) -> Result<TokenSet, String> {
        let tokenizer = self.tokenizer()?;
        let set = match cache {
            Some(dir) => {
                let key = CacheKey {
                    paths: self.paths.clone(),
                    read: self.read.clone(),
                    tokenizer: self.tokenizer.clone(),
                    tokenizer_options: self.tokenizer_options.clone(),
                };
                let (set, outcome) = load_or_build(dir, &key, tokenizer.as_ref(), false, progress)?;
                if outcome == Outcome::Hit {
                    eprintln!(
                        "{} pieces, {} tokens from the token cache {}",
                        set.len(),
                        set.total_ids(),
                        set.source().map(|p| p.display().to_string()).unwrap_or_default()
                    );
                }
                set
            }
            None => tokenize_files(&self.paths, &self.read, tokenizer.as_ref(), progress),
        };
        if set.is_empty() {
            let what = if self.paths.is_empty() {
                "the built-in corpus".to_string()
            } else {
                crate::corpus::describe_paths(&self.paths)
            };
            return Err(crate::corpus::no_usable_file(&what, &set.skipped));
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
