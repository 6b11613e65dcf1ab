//! Standard MIDI files <-> notes.
//!
//! [`read_midi`] turns the bytes of a MIDI file (format 0, 1 or 2) into a [`Score`]: the notes of its
//! piano parts (or of every pitched part) with their times in ticks and quarter notes, the tempo map
//! of every timeline (a note's seconds, [`Score::seconds`]), the first time signature, and a
//! description of every track. The file is read once: the tokenizers, the piano-roll conversion,
//! render and the picture all take the score. [`write_midi`] turns notes back into a format-1 file. Nothing here knows
//! about tokens.
//!
//! Every malformed input gives a [`MidiError`] naming the cause; nothing here panics on bad bytes.

mod file;
mod read;
mod tempo;
mod write;

pub use file::{read_midi_file, readable, MAX_MIDI_BYTES};

pub use read::read_midi;
pub use tempo::{Division, TempoMap, TempoPoint, DEFAULT_TEMPO_US};
pub use write::{check_tempo, write_midi, MAX_BPM, MIN_BPM};

use serde::{Deserialize, Serialize};
use std::fmt;

/// Ticks per quarter note used when notes are made from quarter-note times (tokenizer output) and
/// by [`write_midi`] by default.
pub const NOMINAL_TICKS_PER_QUARTER: u16 = 480;

/// Longest piece accepted, in quarter notes (about 4 days at 120 bpm): anything longer is a corrupt
/// or hostile file, and would make later stages allocate absurd amounts.
pub const MAX_QUARTERS: f64 = 1.0e6;

/// Largest tick value accepted anywhere in a file (2^31): a track whose deltas sum beyond it is
/// rejected before any arithmetic can overflow.
pub const MAX_TICK: u64 = 1 << 31;

/// One sounding note.
///
/// Times are given twice: in the file's own ticks (`start_tick`, `end_tick`; for notes made from
/// quarter-note times, ticks at [`NOMINAL_TICKS_PER_QUARTER`]) and in quarter notes (`start`, `end`),
/// which is what the tokenizers use. `end > start` always holds for notes read from a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// MIDI key number, 0..=127 (60 = C4, middle C).
    pub pitch: u8,
    /// Note-on velocity, 1..=127.
    pub velocity: u8,
    pub start_tick: u64,
    pub end_tick: u64,
    /// Onset in quarter notes from the start of the file.
    pub start: f64,
    /// Release in quarter notes from the start of the file.
    pub end: f64,
    /// GM program (0-based) active on the note's channel at its onset; 0 when none was set.
    pub program: u8,
    /// MIDI channel, 0-based (channel 10 of the spec, index 9, is drums and never read).
    pub channel: u8,
    /// Index of the track (MTrk chunk) the note-on came from.
    pub track: usize,
}

impl Note {
    /// A note from quarter-note times (program 0, channel 0, track 0); ticks at
    /// [`NOMINAL_TICKS_PER_QUARTER`], rounded.
    pub fn new(pitch: u8, start: f64, end: f64, velocity: u8) -> Note {
        let tpq = NOMINAL_TICKS_PER_QUARTER as f64;
        Note {
            pitch,
            velocity,
            start_tick: (start.max(0.0) * tpq).round() as u64,
            end_tick: (end.max(0.0) * tpq).round() as u64,
            start,
            end,
            program: 0,
            channel: 0,
            track: 0,
        }
    }

    /// Length in quarter notes.
    pub fn duration(&self) -> f64 {
        self.end - self.start
    }
}

/// A sustain-pedal change: CC64 on `channel` at `tick` of `track`, down when its value is 64 or more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pedal {
    pub tick: u64,
    pub channel: u8,
    pub down: bool,
    pub track: usize,
}

/// What [`read_midi`] keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadOptions {
    /// Keep every pitched part (every program, every channel except drums), not only the piano parts.
    pub all_parts: bool,
    /// Sustain pedal: while CC64 >= 64 on a channel, a released note keeps sounding until the pedal
    /// goes up (or the same key is struck again).
    pub sustain: bool,
}

/// The file layout from the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SmfFormat {
    /// Format 0: one track.
    SingleTrack,
    /// Format 1: simultaneous tracks sharing one tempo map.
    Parallel,
    /// Format 2: independent sequences; read as separate tracks, each with its own tempo map,
    /// all starting at time 0.
    Sequential,
}

/// What one track holds (all of it, not only the parts that were kept).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackInfo {
    pub index: usize,
    /// Track name meta event (lossy UTF-8), if any.
    pub name: Option<String>,
    /// Instrument name meta event (lossy UTF-8), if any.
    pub instrument: Option<String>,
    /// Programs set by program changes in this track, in order of first appearance.
    pub programs: Vec<u8>,
    /// Channels the track's notes use, sorted.
    pub channels: Vec<u8>,
    /// Pitched notes (drum channel excluded) found in the track.
    pub notes: usize,
    /// Notes on the drum channel (index 9), left out.
    pub drum_notes: usize,
    /// Notes of this track that were kept (piano notes, or all pitched notes with `all_parts`).
    pub kept_notes: usize,
    /// Whether the track's name or instrument name contains "piano" (case-insensitive).
    pub named_piano: bool,
}

/// A parsed MIDI file: the kept notes, sorted by (start, pitch, end), their timing, and what the file
/// contained.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Score {
    pub format: SmfFormat,
    /// Ticks per quarter note, or `None` for SMPTE timecode division.
    pub ticks_per_quarter: Option<u16>,
    /// The tempo map of each timeline: one for formats 0 and 1, one per track for format 2.
    pub tempo: Vec<TempoMap>,
    /// The first time signature (numerator, denominator as a power of two) found in track order,
    /// if any (one with numerator 0 or a denominator beyond 2^7 is passed over).
    pub time_signature: Option<(u8, u8)>,
    pub tracks: Vec<TrackInfo>,
    pub notes: Vec<Note>,
    /// Every sustain-pedal (CC64) change of a pitched channel, in time order within each timeline,
    /// whatever [`ReadOptions::sustain`] says: what a synthesizer is told when the score is
    /// played (not serialised: a score's JSON stays its notes and what the file held).
    #[serde(skip)]
    pub pedals: Vec<Pedal>,
    /// Length of the file (last event of any track) in quarter notes.
    pub duration_quarters: f64,
    /// Length of the file in seconds, through the tempo map.
    pub duration_seconds: f64,
}

impl Score {
    /// The tempo map of the timeline `track` belongs to.
    pub fn tempo_of(&self, track: usize) -> &TempoMap {
        let i = if self.format == SmfFormat::Sequential { track.min(self.tempo.len() - 1) } else { 0 };
        &self.tempo[i]
    }

    /// A pedal change's time in seconds, through its timeline's tempo map.
    pub fn pedal_seconds(&self, pedal: &Pedal) -> f64 {
        self.tempo_of(pedal.track).seconds(pedal.tick)
    }

    /// A note's (start, end) in seconds, through its timeline's tempo map.
    pub fn seconds(&self, note: &Note) -> (f64, f64) {
        let map = self.tempo_of(note.track);
        (map.seconds(note.start_tick), map.seconds(note.end_tick))
    }
}

/// Why a file could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MidiError {
    /// Zero bytes.
    Empty,
    /// The bytes do not start like a MIDI file (or its header chunk is broken).
    NotMidi(String),
    /// A chunk or event could not be read.
    Malformed(String),
    /// Division, delta times or tick values out of range.
    BadTiming(String),
    /// Longer than [`MAX_QUARTERS`].
    TooLong { quarters: u64 },
    /// Notes were found, but none in a piano part.
    NoPianoPart { pitched_notes: usize },
    /// No pitched notes at all.
    NoNotes,
    /// The notes of the kept parts all have zero length (they are dropped).
    ZeroLength { notes: usize },
}

impl fmt::Display for MidiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MidiError::Empty => write!(f, "empty file"),
            MidiError::NotMidi(why) => write!(f, "not a MIDI file ({why})"),
            MidiError::Malformed(why) => write!(f, "malformed MIDI data: {why}"),
            MidiError::BadTiming(why) => write!(f, "bad timing: {why}"),
            MidiError::TooLong { quarters } => {
                write!(f, "absurd length: {quarters} quarter notes (limit {})", MAX_QUARTERS as u64)
            }
            MidiError::NoPianoPart { pitched_notes } => write!(
                f,
                "no piano part ({pitched_notes} pitched notes in other instruments; --all-parts keeps them)"
            ),
            MidiError::NoNotes => write!(f, "no notes"),
            MidiError::ZeroLength { notes } => write!(f, "no notes of any length ({notes} notes of zero length, which are dropped)"),
        }
    }
}

impl std::error::Error for MidiError {}

/// How [`write_midi`] lays out the file.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteOptions {
    pub ticks_per_quarter: u16,
    /// Tempo written in the tempo track, quarter notes per minute.
    pub bpm: f64,
    pub track_name: String,
    /// GM program of the piano track (0 = acoustic grand).
    pub program: u8,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            ticks_per_quarter: NOMINAL_TICKS_PER_QUARTER,
            bpm: 120.0,
            track_name: "etude piano".to_string(),
            program: 0,
        }
    }
}

/// Name of a MIDI pitch with sharps and octave, MIDI 60 = "C4", 61 = "C#4", 21 = "A0", 0 = "C-1".
pub fn pitch_name(pitch: u8) -> String {
    const NAMES: [&str; 12] = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];
    let octave = pitch as i32 / 12 - 1;
    format!("{}{}", NAMES[pitch as usize % 12], octave)
}

/// Inverse of [`pitch_name`]: `None` for anything it would not produce (flats, out of range).
pub fn parse_pitch_name(name: &str) -> Option<u8> {
    let mut chars = name.chars();
    let letter = chars.next()?;
    let base: i32 = match letter {
        'C' => 0,
        'D' => 2,
        'E' => 4,
        'F' => 5,
        'G' => 7,
        'A' => 9,
        'B' => 11,
        _ => return None,
    };
    let rest = chars.as_str();
    let (sharp, octave_str) = match rest.strip_prefix('#') {
        Some(r) => (1, r),
        None => (0, rest),
    };
    if sharp == 1 && matches!(letter, 'E' | 'B') {
        return None;
    }
    // The octave is a plain (possibly negative) integer; reject "+3", "03" and the like so that
    // parse_pitch_name(s) = Some(p) implies pitch_name(p) == s.
    if octave_str.is_empty() || octave_str.starts_with('+') {
        return None;
    }
    let octave: i32 = octave_str.parse().ok()?;
    let pitch = (octave + 1) * 12 + base + sharp;
    if (0..=127).contains(&pitch) && pitch_name(pitch as u8) == name {
        Some(pitch as u8)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pitch_names_round_trip() {
        assert_eq!(pitch_name(60), "C4");
        assert_eq!(pitch_name(61), "C#4");
        assert_eq!(pitch_name(21), "A0");
        assert_eq!(pitch_name(0), "C-1");
        assert_eq!(pitch_name(127), "G9");
        for p in 0..=127u8 {
            assert_eq!(parse_pitch_name(&pitch_name(p)), Some(p));
        }
        for bad in ["", "H4", "E#4", "C", "C#", "Cb4", "C+4", "C04", "G#9", "x"] {
            assert_eq!(parse_pitch_name(bad), None, "{bad}");
        }
    }
}
