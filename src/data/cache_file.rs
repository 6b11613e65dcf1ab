//! The token cache's file: its key ([`CacheKey`]), its layout (see [`crate::data::token_cache`]),
//! writing one ([`write_file`]), and mapping one back after every check ([`load`]), or taking the
//! still-valid entries of an out-of-date one ([`Donor`]).

use crate::data::corpus::{collect_stat, path_name, Skipped, Walked};
use crate::music::midi::ReadOptions;
use crate::music::tokens::{TokenizerOptions, Vocab};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use crate::data::token_set::{Ids, Infos, PieceInfo, TokenSet};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The first 8 bytes of a cache file.
pub const MAGIC: &[u8; 8] = b"ETUDTOK2";

/// A file modified this close to (or after) the build is hashed again before the cache is used.
pub(crate) const RACY_NS: u64 = 2_000_000_000;

/// A 64-bit hash of `bytes` (8 bytes at a time; for detecting damage and changed files, not
/// adversaries).
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h = Hash64::new(bytes.len() as u64);
    h.update(bytes);
    h.finish()
}

const HASH_K: u64 = 0x9E37_79B9_7F4A_7C15;

/// [`hash64`] of bytes given in parts (a cache file as it is written), whose total length is
/// known at the start: the same value as [`hash64`] of the parts laid end to end.
pub struct Hash64 {
    h: u64,
    tail: [u8; 8],
    held: usize,
}

impl Hash64 {
    pub fn new(len: u64) -> Hash64 {
        Hash64 { h: 0x2545_F491_4F6C_DD1D ^ len.wrapping_mul(HASH_K), tail: [0; 8], held: 0 }
    }

    fn word(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(HASH_K).rotate_left(29);
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        if self.held > 0 {
            let take = (8 - self.held).min(bytes.len());
            self.tail[self.held..self.held + take].copy_from_slice(&bytes[..take]);
            self.held += take;
            bytes = &bytes[take..];
            if self.held < 8 {
                return;
            }
            self.word(u64::from_le_bytes(self.tail));
            self.held = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.held = rest.len();
    }

    pub fn finish(mut self) -> u64 {
        if self.held > 0 {
            self.tail[self.held..].fill(0);
            let w = u64::from_le_bytes(self.tail);
            self.word(w);
        }
        let mut h = self.h;
        h ^= h >> 32;
        h = h.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        h ^ (h >> 32)
    }
}

/// What a cache file is made from: the data paths and every setting that changes the tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheKey {
    /// The data paths (as given to `--data`; training makes them absolute).
    #[serde(with = "crate::files::path_json::vec")]
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
pub(crate) struct FileStamp {
    #[serde(with = "crate::files::path_json")]
    pub(crate) path: PathBuf,
    pub(crate) size: u64,
    pub(crate) mtime_ns: u64,
    pub(crate) hash: u64,
    /// The inode's change time and number (Unix; 0 elsewhere, and in caches written before them,
    /// which therefore rebuild once): a write that keeps the size and sets the modification time
    /// back (`touch -d`) still moves the change time, which no user can set, and a file replaced
    /// by another (`mv`) has another inode.
    #[serde(default)]
    pub(crate) ctime_ns: u64,
    #[serde(default)]
    pub(crate) ino: u64,
}

/// A stamp's size for a file that could not be read: matches no file, so a read error is never
/// reused (the file may be readable next time: permissions fixed, a disk back).
pub(crate) const UNREAD: u64 = u64::MAX;

/// The change time (ns) and inode number in `m` (0 and 0 where there are none).
pub(crate) fn change_id(m: &std::fs::Metadata) -> (u64, u64) {
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
pub(crate) struct Header {
    pub(crate) key: CacheKey,
    pub(crate) etude_version: String,
    pub(crate) built_ns: u64,
    pub(crate) files: Vec<FileStamp>,
    /// Paths the walk could not read (a folder that could not be listed).
    #[serde(with = "crate::files::path_json::vec")]
    pub(crate) walk_errors: Vec<PathBuf>,
    pub(crate) names: Vec<String>,
    /// (name, cause) of every skipped file.
    pub(crate) skipped: Vec<(String, String)>,
    pub(crate) vocab: Vocab,
    pub(crate) id_bytes: u8,
    pub(crate) pieces: u64,
    pub(crate) ids: u64,
    /// Length of the piece information (JSON) after the ids.
    pub(crate) info_bytes: u64,
}

pub(crate) fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

pub(crate) fn mtime_ns(m: &std::fs::Metadata) -> u64 {
    m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The bytes of a cache file holding `set` ([`write_file`] into memory).
#[cfg(test)]
pub(crate) fn encode_file(set: &TokenSet, key: &CacheKey, built_ns: u64, files: Vec<FileStamp>, walk_errors: Vec<PathBuf>) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    write_file(set, key, built_ns, files, walk_errors, &mut buf)?;
    Ok(buf)
}

/// A writer that hashes what it writes and pads to 8 bytes.
struct Summed<'a, W: std::io::Write> {
    out: &'a mut W,
    sum: Hash64,
    written: u64,
}

impl<W: std::io::Write> Summed<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.sum.update(bytes);
        self.written += bytes.len() as u64;
        self.out.write_all(bytes).map_err(|e| e.to_string())
    }

    fn pad8(&mut self) -> Result<(), String> {
        let n = self.written.next_multiple_of(8) - self.written;
        self.put(&[0u8; 8][..n as usize])
    }
}

/// Write the cache file holding `set` to `out`, streamed: the ids go out a block at a time (at
/// 100,000 files the whole file in memory was 550 MB beside the ids it was made from).
pub(crate) fn write_file(
    set: &TokenSet,
    key: &CacheKey,
    built_ns: u64,
    files: Vec<FileStamp>,
    walk_errors: Vec<PathBuf>,
    out: &mut impl std::io::Write,
) -> Result<(), String> {
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
    drop(header);
    let width = if wide { 4 } else { 2 };
    let len = (16 + json.len() as u64).next_multiple_of(8)
        + 8 * set.offsets.len() as u64
        + (width * set.total_ids() as u64).next_multiple_of(8)
        + (info.len() as u64).next_multiple_of(8);
    let mut w = Summed { out, sum: Hash64::new(len), written: 0 };
    w.put(MAGIC)?;
    w.put(&(json.len() as u64).to_le_bytes())?;
    w.put(&json)?;
    w.pad8()?;
    let mut block = Vec::with_capacity(1 << 16);
    for chunk in set.offsets.chunks(4096) {
        block.clear();
        for o in chunk {
            block.extend_from_slice(&o.to_le_bytes());
        }
        w.put(&block)?;
    }
    let identity: Vec<u32> = (0..set.vocab.len() as u32).collect();
    let mut ids = Vec::new();
    for i in 0..set.len() {
        ids.clear();
        set.extend_mapped(i, &identity, &mut ids);
        for part in ids.chunks(8192) {
            block.clear();
            for &id in part {
                if wide {
                    block.extend_from_slice(&id.to_le_bytes());
                } else {
                    block.extend_from_slice(&(id as u16).to_le_bytes());
                }
            }
            w.put(&block)?;
        }
    }
    w.pad8()?;
    w.put(&info)?;
    w.pad8()?;
    debug_assert_eq!(w.written, len, "the length hashed first is the length written");
    let sum = std::mem::replace(&mut w.sum, Hash64::new(0)).finish();
    w.out.write_all(&sum.to_le_bytes()).map_err(|e| e.to_string())
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
pub(crate) struct Sound {
    pub(crate) header: Header,
    pub(crate) map: memmap2::Mmap,
    pub(crate) offsets: Vec<u64>,
    pub(crate) ids_at: usize,
    pub(crate) info_at: usize,
}

/// Map `file` and check everything in it that does not depend on what it was made from.
pub(crate) fn open(file: &Path) -> Result<Sound, Miss> {
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
    let n_vocab = header.vocab.len() as u64;
    let ids_bytes = &map[ids_at..ids_end as usize];
    // The checksum (one pass in order) and the id range on two cores at once.
    let (sum, in_range) = rayon::join(
        || hash64(body),
        || {
            if width == 2 {
                ids_bytes.chunks_exact(2).all(|c| (u16::from_le_bytes([c[0], c[1]]) as u64) < n_vocab)
            } else {
                ids_bytes.chunks_exact(4).all(|c| (u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64) < n_vocab)
            }
        },
    );
    if sum != stored {
        return Err(Miss::Damaged("checksum mismatch".into()));
    }
    let offsets: Vec<u64> = map[offsets_at..ids_at].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().expect("8"))).collect();
    if offsets[0] != 0 || offsets.windows(2).any(|w| w[0] > w[1]) || offsets[pieces] != header.ids {
        return Err(Miss::Damaged("bad piece index".into()));
    }
    if !in_range {
        return Err(Miss::Damaged("an id beyond the vocabulary".into()));
    }
    Ok(Sound { header, map, offsets, ids_at, info_at: info_at as usize })
}

/// Map and check the cache file `file` for `key` (see the module documentation for the checks).
pub fn load(file: &Path, key: &CacheKey) -> Result<TokenSet, Miss> {
    if !file.exists() {
        return Err(Miss::Absent);
    }
    // The file's own checks and the walk of the data paths do not depend on each other: both at
    // once, on two cores.
    let (sound, walked) = rayon::join(|| open(file), || collect_stat(&key.paths));
    let sound = sound?;
    if sound.header.key != *key {
        return Err(Miss::Stale("made for other data or settings".into()));
    }
    check_files(&sound.header, walked)?;
    Ok(mapped_set(sound, file))
}

/// The token set of a sound cache file `file`, mapped.
pub(crate) fn mapped_set(sound: Sound, file: &Path) -> TokenSet {
    let Sound { header, map, offsets, ids_at, info_at } = sound;
    TokenSet {
        names: header.names,
        skipped: header.skipped.into_iter().map(|(name, cause)| Skipped { name, cause }).collect(),
        vocab: header.vocab,
        offsets,
        ids: Ids::Mapped { map: std::sync::Arc::new(map), start: ids_at, wide: header.id_bytes == 4 },
        infos: Infos::Mapped { at: info_at, len: header.info_bytes as usize },
        source: Some(file.to_path_buf()),
        tokenised: 0,
        reused: 0,
    }
}

/// An out-of-date but sound cache file of the same settings, whose unchanged files a rebuild
/// takes instead of tokenising them again.
pub(crate) struct Donor {
    pub(crate) header: Header,
    pub(crate) map: memmap2::Mmap,
    pub(crate) offsets: Vec<u64>,
    pub(crate) ids_at: usize,
    pub(crate) infos: Vec<PieceInfo>,
    /// Every file it was built from: its stamp and its piece (or error).
    pub(crate) files: HashMap<PathBuf, (FileStamp, Result<usize, String>)>,
}

impl Donor {
    /// The donor's cache file `file` when it is sound and was made with `key`'s reading and
    /// tokenizer settings by this version of etude.
    pub(crate) fn open(file: &Path, key: &CacheKey) -> Option<Donor> {
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
    pub(crate) fn id(&self, k: usize) -> u32 {
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
pub(crate) fn parse_header(map: &[u8]) -> Result<(Header, usize), Miss> {
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

/// Stale when a file changed, was added or removed since `header` was built, by the walk of its
/// data paths `walked` ([`collect_stat`]: one stat per file, whose metadata is compared).
pub(crate) fn check_files(header: &Header, walked: Walked) -> Result<(), Miss> {
    let (files, errors) = walked;
    let errors: Vec<PathBuf> = errors.into_iter().map(|(p, _)| p).collect();
    if errors != header.walk_errors {
        return Err(Miss::Stale("the paths that cannot be read changed".into()));
    }
    let before: HashMap<&Path, &FileStamp> = header.files.iter().map(|s| (s.path.as_path(), s)).collect();
    let (mut changed, mut added) = (0usize, 0usize);
    for (path, meta) in &files {
        let Some(stamp) = before.get(path.as_path()) else {
            added += 1;
            continue;
        };
        if !unchanged(path, meta, stamp, header.built_ns) {
            changed += 1;
        }
    }
    let now: std::collections::HashSet<&Path> = files.iter().map(|(p, _)| p.as_path()).collect();
    let removed = header.files.iter().filter(|s| !now.contains(s.path.as_path())).count();
    if changed + added + removed > 0 {
        return Err(Miss::Stale(format!("{changed} files changed, {added} added, {removed} removed")));
    }
    Ok(())
}

/// Whether the file at `path` (whose metadata is `meta`) is still the one `stamp` describes, for a
/// cache built at `built_ns`: the same size and modification time, and for a file modified within
/// [`RACY_NS`] of the build, the same content.
pub(crate) fn unchanged(path: &Path, meta: &std::fs::Metadata, stamp: &FileStamp, built_ns: u64) -> bool {
    meta.len() == stamp.size
        && mtime_ns(meta) == stamp.mtime_ns
        && change_id(meta) == (stamp.ctime_ns, stamp.ino)
        && (stamp.mtime_ns.max(stamp.ctime_ns).saturating_add(RACY_NS) < built_ns
            || crate::music::midi::read_midi_file(path).map(|b| hash64(&b) == stamp.hash).unwrap_or(false))
}
