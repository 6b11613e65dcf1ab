//! Piano-roll data (issue 14): the `*.pianoroll.json.gz` files of the four polyphonic benchmarks,
//! and MIDI quantised to a grid.
//!
//! A *frame* is the set of keys sounding during one grid step, kept as sorted key indices
//! `0..88` (key 0 = A0 = MIDI 21, key 87 = C8 = MIDI 108); a *sequence* is a list of frames.
//!
//! File format (`../shared/corpus/poly-music/SOURCE.md`): `{"train": [seq, ...], "valid": [...],
//! "test": [...]}`, any subset of the three keys, seq = list of steps, step = list of MIDI pitches
//! 21..=108 (an empty list is a silent step). The file may be gzipped (by its `.gz` name or its
//! magic bytes). Every fault is one line naming the file and the place: a pitch outside 21..108, a
//! malformed or truncated JSON or gzip stream, a split that is absent.

use crate::music::midi::Note;
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// Keys of the piano roll.
pub const KEYS: usize = 88;
/// MIDI pitch of key 0 (A0).
pub const LOWEST: u8 = 21;
/// MIDI pitch of key 87 (C8).
pub const HIGHEST: u8 = 108;
/// The three split names a file may hold.
pub const SPLITS: [&str; 3] = ["train", "valid", "test"];

/// One frame: sorted, distinct key indices `0..88`.
pub type Frame = Vec<u8>;
/// One piece: its frames in time order.
pub type Sequence = Vec<Frame>;

/// The splits of one piano-roll file (each `None` when the file does not hold it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RollData {
    /// Where it was read from (error messages).
    pub origin: String,
    pub train: Option<Vec<Sequence>>,
    pub valid: Option<Vec<Sequence>>,
    pub test: Option<Vec<Sequence>>,
}

impl RollData {
    /// The split `name` (train, valid or test), or a one-line error naming the file and the splits
    /// it holds.
    pub fn split(&self, name: &str) -> Result<&[Sequence], String> {
        let s = match name {
            "train" => &self.train,
            "valid" => &self.valid,
            "test" => &self.test,
            _ => return Err(format!("unknown split {name:?} (expected train, valid or test)")),
        };
        s.as_deref().ok_or_else(|| {
            let held: Vec<&str> = SPLITS.iter().copied().filter(|s| self.has(s)).collect();
            format!(
                "{}: no \"{name}\" split (the file holds {})",
                self.origin,
                if held.is_empty() { "none".to_string() } else { held.join(", ") }
            )
        })
    }

    /// Whether the file holds split `name`.
    pub fn has(&self, name: &str) -> bool {
        match name {
            "train" => self.train.is_some(),
            "valid" => self.valid.is_some(),
            "test" => self.test.is_some(),
            _ => false,
        }
    }
}

/// Whether `path` names a piano-roll file (`*.pianoroll.json` or `*.pianoroll.json.gz`).
pub fn is_roll_path(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    name.ends_with(".pianoroll.json.gz") || name.ends_with(".pianoroll.json")
}

/// Read a piano-roll file (gzipped or not).
pub fn read_roll_file(path: &Path) -> Result<RollData, String> {
    let origin = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| format!("{origin}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{origin}: not a regular file (a FIFO, device or socket): not read"));
    }
    if meta.len() > MAX_ROLL_JSON_BYTES {
        return Err(format!("{origin}: {} bytes, more than the {} MiB a piano-roll file is read up to", meta.len(), MAX_ROLL_JSON_BYTES >> 20));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{origin}: {e}"))?;
    parse_roll_bytes(&bytes, &origin)
}

/// The most JSON a piano-roll file may inflate to: 16 times the largest poly-music set (4 MB).
pub const MAX_ROLL_JSON_BYTES: u64 = 64 << 20;

/// Parse the bytes of a piano-roll file; `origin` names it in errors.
pub fn parse_roll_bytes(bytes: &[u8], origin: &str) -> Result<RollData, String> {
    let gzip = bytes.starts_with(&[0x1f, 0x8b]);
    let text = if gzip {
        // Every member (gzip -c a >> f makes several), each checked, and no byte after the last;
        // inflated no further than MAX_ROLL_JSON_BYTES (a gzip bomb is refused, not inflated).
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .take(MAX_ROLL_JSON_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("{origin}: truncated or corrupt gzip data ({e})"))?;
        if out.len() as u64 > MAX_ROLL_JSON_BYTES {
            return Err(format!("{origin}: inflates to more than {} MiB of JSON; not read", MAX_ROLL_JSON_BYTES >> 20));
        }
        out
    } else {
        bytes.to_vec()
    };
    let v: Value = serde_json::from_slice(&text).map_err(|e| {
        let what = match (gzip, e.classify()) {
            (_, serde_json::error::Category::Eof) => "truncated JSON",
            (false, _) if !text.trim_ascii_start().starts_with(b"{") => "neither gzip data nor JSON",
            (true, _) if e.to_string().contains("trailing characters") => "more than one JSON document (several gzip members?)",
            _ => "malformed JSON",
        };
        format!("{origin}: {what} ({e})")
    })?;
    let Value::Object(map) = v else {
        return Err(format!("{origin}: expected a JSON object with train/valid/test keys"));
    };
    let mut data = RollData { origin: origin.to_string(), ..RollData::default() };
    for name in SPLITS {
        if let Some(v) = map.get(name) {
            let seqs = parse_split(v, origin, name)?;
            match name {
                "train" => data.train = Some(seqs),
                "valid" => data.valid = Some(seqs),
                _ => data.test = Some(seqs),
            }
        }
    }
    if SPLITS.iter().all(|s| !data.has(s)) {
        let keys: Vec<&str> = map.keys().map(String::as_str).take(5).collect();
        return Err(format!("{origin}: no train, valid or test split (keys: {})", keys.join(", ")));
    }
    Ok(data)
}

fn parse_split(v: &Value, origin: &str, split: &str) -> Result<Vec<Sequence>, String> {
    let seqs = v.as_array().ok_or_else(|| format!("{origin}: \"{split}\" is not a list of sequences"))?;
    let mut out = Vec::with_capacity(seqs.len());
    for (si, seq) in seqs.iter().enumerate() {
        let steps = seq.as_array().ok_or_else(|| format!("{origin}: {split} sequence {si} is not a list of steps"))?;
        let mut frames = Vec::with_capacity(steps.len());
        for (ti, step) in steps.iter().enumerate() {
            let at = || format!("{origin}: {split} sequence {si} step {ti}");
            let pitches = step.as_array().ok_or_else(|| format!("{}: not a list of pitches", at()))?;
            let mut frame = Vec::with_capacity(pitches.len());
            for p in pitches {
                // Integers, or floats holding an integer (the .mat originals are doubles).
                let pitch = p.as_f64().filter(|f| f.fract() == 0.0);
                match pitch {
                    Some(f) if (LOWEST as f64..=HIGHEST as f64).contains(&f) => frame.push(f as u8 - LOWEST),
                    _ => return Err(format!("{}: pitch {p} outside 21..108 (A0..C8)", at())),
                }
            }
            frame.sort_unstable();
            frame.dedup();
            frames.push(frame);
        }
        out.push(frames);
    }
    Ok(out)
}

/// The JSON text of a piano-roll file holding `splits` (name, sequences): pitches as MIDI numbers.
pub fn to_json(splits: &[(&str, &[Sequence])]) -> String {
    let map: serde_json::Map<String, Value> = splits
        .iter()
        .map(|(name, seqs)| {
            let v: Vec<Vec<Vec<u8>>> =
                seqs.iter().map(|s| s.iter().map(|f| f.iter().map(|&k| k + LOWEST).collect()).collect()).collect();
            (name.to_string(), serde_json::to_value(v).expect("serialisable"))
        })
        .collect();
    Value::Object(map).to_string()
}

/// `to_json` gzipped.
pub fn to_json_gz(splits: &[(&str, &[Sequence])]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(to_json(splits).as_bytes()).expect("in memory");
    enc.finish().expect("in memory")
}

/// MIDI notes -> piano roll on a grid of `steps_per_quarter` frames per quarter note: frame `t`
/// covers `[t, t+1) / steps_per_quarter` quarters, and a key is on in frame `t` while its note
/// sounds there (onset and release rounded to the nearest grid line; a note shorter than half a
/// step still takes the frame of its onset). Notes outside A0..C8 are dropped. The roll ends
/// with the last release.
pub fn notes_to_roll(notes: &[Note], steps_per_quarter: u32) -> Sequence {
    let spq = steps_per_quarter.max(1) as f64;
    let mut spans = Vec::with_capacity(notes.len());
    let mut len = 0usize;
    for n in notes {
        if n.pitch < LOWEST || n.pitch > HIGHEST {
            continue;
        }
        let a = (n.start * spq).round().max(0.0) as usize;
        let b = ((n.end * spq).round() as usize).max(a + 1);
        len = len.max(b);
        spans.push((n.pitch - LOWEST, a, b));
    }
    let mut roll = vec![Vec::new(); len];
    for (k, a, b) in spans {
        for f in &mut roll[a..b] {
            f.push(k);
        }
    }
    for f in &mut roll {
        f.sort_unstable();
        f.dedup();
    }
    roll
}

/// Piano roll -> notes: a key held over consecutive frames is one note, from its first frame to
/// the end of its last; frame `t` starts at `t * frame_quarters` quarter notes.
pub fn roll_to_notes(roll: &[Frame], frame_quarters: f64, velocity: u8) -> Vec<Note> {
    let mut start: [Option<usize>; KEYS] = [None; KEYS];
    let mut notes = Vec::new();
    let close = |k: usize, a: usize, b: usize, notes: &mut Vec<Note>| {
        notes.push(Note::new(k as u8 + LOWEST, a as f64 * frame_quarters, b as f64 * frame_quarters, velocity));
    };
    for (t, frame) in roll.iter().enumerate() {
        let mut on = [false; KEYS];
        for &k in frame {
            on[k as usize] = true;
        }
        for k in 0..KEYS {
            match (start[k], on[k]) {
                (None, true) => start[k] = Some(t),
                (Some(a), false) => {
                    close(k, a, t, &mut notes);
                    start[k] = None;
                }
                _ => {}
            }
        }
    }
    for (k, s) in start.iter().enumerate() {
        if let Some(a) = *s {
            close(k, a, roll.len(), &mut notes);
        }
    }
    notes.sort_by(|a, b| a.start.total_cmp(&b.start).then(a.pitch.cmp(&b.pitch)));
    notes
}

/// Frames in all of `seqs` and predicted frames (each sequence's first is not predicted).
pub fn count_frames(seqs: &[Sequence]) -> (usize, usize) {
    let frames: usize = seqs.iter().map(Vec::len).sum();
    let predicted: usize = seqs.iter().map(|s| s.len().saturating_sub(1)).sum();
    (frames, predicted)
}
