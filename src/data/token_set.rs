//! A tokenised corpus ([`TokenSet`]): the pieces' names, the files that were skipped and why, the
//! corpus vocabulary and the pieces as ids of that vocabulary, laid end to end, with an index of
//! where each piece starts; held in memory or mapped from a token cache file
//! ([`crate::data::token_cache`]), with the piece information `inspect` shows ([`PieceInfo`]).

use crate::data::corpus::Skipped;
use crate::music::midi::{Score, SmfFormat, TrackInfo};
use crate::music::tokens::Vocab;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
    pub fn of(piece: &Score) -> PieceInfo {
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

pub(crate) enum Infos {
    Owned(Vec<PieceInfo>),
    /// The JSON of the cache file's information section: `map[at..at + len]` of the ids' map.
    Mapped { at: usize, len: usize },
}

pub(crate) enum Ids {
    Owned(Vec<u32>),
    Mapped { map: std::sync::Arc<memmap2::Mmap>, start: usize, wide: bool },
}

/// A tokenised corpus: pieces as ids of the corpus vocabulary (see the module documentation).
pub struct TokenSet {
    pub(crate) names: Vec<String>,
    pub(crate) skipped: Vec<Skipped>,
    pub(crate) vocab: Vocab,
    pub(crate) offsets: Vec<u64>,
    pub(crate) ids: Ids,
    pub(crate) infos: Infos,
    /// The cache file it was mapped from.
    pub(crate) source: Option<PathBuf>,
    /// Files read and tokenised to make this set, and files whose ids came from an older cache file.
    pub(crate) tokenised: usize,
    pub(crate) reused: usize,
}

impl TokenSet {
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

    /// A shared view of the ids of a set mapped from a cache file (`None` when made in memory),
    /// read in place by a [`crate::data::dataset::Dataset`] instead of copied; piece `i` starts at id
    /// [`TokenSet::piece_start`]`(i)` of it.
    pub fn id_view(&self) -> Option<IdView> {
        match &self.ids {
            Ids::Owned(_) => None,
            Ids::Mapped { map, start, wide } => Some(IdView { map: map.clone(), start: *start, wide: *wide }),
        }
    }

    /// Where piece `i`'s ids start among all ids.
    pub fn piece_start(&self, i: usize) -> usize {
        self.offsets[i] as usize
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

/// The ids of a mapped cache file, shared (see [`TokenSet::id_view`]): corpus ids stored as u16
/// or u32, little-endian.
#[derive(Clone)]
pub struct IdView {
    map: std::sync::Arc<memmap2::Mmap>,
    start: usize,
    wide: bool,
}

impl std::fmt::Debug for IdView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdView({} bytes, {} bytes per id)", self.map.len() - self.start, if self.wide { 4 } else { 2 })
    }
}

impl IdView {
    /// Append ids `a..b` (positions among all ids), each mapped through `table`, to `out`.
    pub fn extend_mapped(&self, a: usize, b: usize, table: &[u32], out: &mut Vec<u32>) {
        let (map, start) = (&self.map[..], self.start);
        if self.wide {
            out.extend(map[start + 4 * a..start + 4 * b].chunks_exact(4).map(|c| table[u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize]));
        } else {
            out.extend(map[start + 2 * a..start + 2 * b].chunks_exact(2).map(|c| table[u16::from_le_bytes([c[0], c[1]]) as usize]));
        }
    }
}
