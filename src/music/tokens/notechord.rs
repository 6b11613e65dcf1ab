//! `notechord`: the Keras "generate music with WaveNet and LSTM" tutorial's tokens.
//!
//! Encoding: notes that start together (the same onset) form one event, in onset order. An event
//! with one distinct pitch is that pitch's name with sharps and octave (`C#4`; MIDI 60 = `C4`). An
//! event with two or more distinct pitches is a chord: its pitch classes in normal order (as
//! music21's `Chord.normalOrder`) joined by dots (`0.4.7`, `11.2.5.7`, `11.0`). Two pitches of one
//! pitch class (C4 + C5) give a one-class chord, `0`. Durations, rests and velocities are dropped.
//!
//! Decoding: one event every `step` quarter notes (0.5 by default), each note `note_length` long,
//! velocity 80; a pitch name gives that pitch; a chord gives its pitch classes in octave 4
//! (MIDI 60 + pc) — a one-class chord gives the class in octaves 4 and 5, so that it encodes back
//! to itself. Hence tokens -> notes -> tokens is the identity; notes -> tokens -> notes is not.

use super::{Tokenizer, TokenizerOptions};
use crate::music::midi::{parse_pitch_name, pitch_name, Note};

/// Velocity of decoded notes.
pub const DECODE_VELOCITY: u8 = 80;

/// The `notechord` tokenizer.
#[derive(Clone, Debug)]
pub struct NoteChord {
    step: f64,
    note_length: f64,
}

impl NoteChord {
    /// Uses `opts.step` and `opts.note_length` (both > 0, finite).
    pub fn new(opts: &TokenizerOptions) -> Result<NoteChord, String> {
        for (name, v) in [("step", opts.step), ("note_length", opts.note_length)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("notechord: {name} must be a positive number, got {v}"));
            }
        }
        Ok(NoteChord { step: opts.step, note_length: opts.note_length })
    }
}

/// Normal order of a pitch-class set (music21 `Chord.normalOrder`, Rahn's rules).
///
/// Of the rotations of the sorted distinct pitch classes, take the one with the smallest span from
/// first to last (mod 12); ties go to the smallest interval from the first to the second-to-last,
/// then to the third-to-last, and so on; a complete tie (a symmetric set) goes to the rotation that
/// starts on the smallest pitch class. Input values are taken mod 12; empty input gives empty output.
pub fn normal_order(pcs: &[u8]) -> Vec<u8> {
    let mut set: Vec<u8> = pcs.iter().map(|p| p % 12).collect();
    set.sort_unstable();
    set.dedup();
    let n = set.len();
    if n <= 1 {
        return set;
    }
    // Key of a rotation: intervals first->last, first->second-to-last, ..., first->second, first pc.
    let key = |rot: &[u8]| -> Vec<u8> {
        let first = rot[0];
        let mut k: Vec<u8> = (1..n).rev().map(|j| (rot[j] + 12 - first) % 12).collect();
        k.push(first);
        k
    };
    (0..n)
        .map(|r| {
            let mut rot = set[r..].to_vec();
            rot.extend_from_slice(&set[..r]);
            rot
        })
        .min_by_key(|rot| key(rot))
        .expect("n >= 2 rotations")
}

/// The token of one onset's distinct pitches (sorted, deduplicated, non-empty).
fn event_token(pitches: &[u8]) -> String {
    if pitches.len() == 1 {
        pitch_name(pitches[0])
    } else {
        chord_text(pitches)
    }
}

/// The chord token of pitches or pitch classes (any order, taken mod 12): their normal order
/// joined by dots.
fn chord_text(pcs: &[u8]) -> String {
    normal_order(pcs).iter().map(|pc| pc.to_string()).collect::<Vec<_>>().join(".")
}

/// The distinct pitches of each onset of `notes` (any order), in onset order, each sorted.
fn onsets(notes: &[Note], mut out: impl FnMut(&[u8])) {
    let mut sorted: Vec<&Note> = notes.iter().collect();
    sorted.sort_by(|a, b| a.start.total_cmp(&b.start).then(a.pitch.cmp(&b.pitch)));
    let mut pitches = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let onset = sorted[i].start;
        pitches.clear();
        while i < sorted.len() && sorted[i].start == onset {
            pitches.push(sorted[i].pitch);
            i += 1;
        }
        pitches.dedup(); // sorted by pitch within an onset
        out(&pitches);
    }
}

/// Pitch classes of a chord token ("0.4.7"), or `None` when it is not one. Only plain decimal
/// numbers 0..=11 are accepted.
fn parse_chord(token: &str) -> Option<Vec<u8>> {
    token
        .split('.')
        .map(|part| {
            let ok = !part.is_empty() && part.len() <= 2 && part.bytes().all(|b| b.is_ascii_digit());
            let pc: u8 = if ok { part.parse().ok()? } else { return None };
            (pc < 12 && pc.to_string() == part).then_some(pc)
        })
        .collect()
}

impl Tokenizer for NoteChord {
    fn name(&self) -> &'static str {
        "notechord"
    }

    fn encode(&self, notes: &[Note]) -> Vec<String> {
        let mut tokens = Vec::new();
        onsets(notes, |pitches| tokens.push(event_token(pitches)));
        tokens
    }

    /// A single pitch p is code p; a chord is 256 + its pitch-class mask - 1.
    fn code_count(&self) -> usize {
        256 + 4095
    }

    fn encode_codes(&self, notes: &[Note]) -> Option<Vec<u32>> {
        let mut codes = Vec::new();
        onsets(notes, |pitches| {
            codes.push(if pitches.len() == 1 {
                pitches[0] as u32
            } else {
                256 + pitches.iter().fold(0u32, |m, &p| m | 1 << (p % 12)) - 1
            })
        });
        Some(codes)
    }

    fn code_token(&self, code: u32) -> Option<String> {
        match code {
            0..256 => Some(pitch_name(code as u8)),
            256..4351 => {
                let mask = code - 256 + 1;
                let pcs: Vec<u8> = (0..12u8).filter(|&pc| mask & 1 << pc != 0).collect();
                Some(chord_text(&pcs))
            }
            _ => None,
        }
    }

    fn decode(&self, tokens: &[String]) -> Vec<Note> {
        let mut notes = Vec::new();
        for (i, token) in tokens.iter().enumerate() {
            let start = i as f64 * self.step;
            let end = start + self.note_length;
            let pitches: Vec<u8> = if let Some(p) = parse_pitch_name(token) {
                vec![p]
            } else if let Some(pcs) = parse_chord(token) {
                let mut set = pcs.clone();
                set.sort_unstable();
                set.dedup();
                if set.len() == 1 {
                    vec![60 + set[0], 72 + set[0]]
                } else {
                    pcs.iter().map(|pc| 60 + pc).collect()
                }
            } else {
                continue; // <unk> or foreign token: a silent step
            };
            for p in pitches {
                notes.push(Note::new(p, start, end, DECODE_VELOCITY));
            }
        }
        notes.sort_by(|a, b| a.start.total_cmp(&b.start).then(a.pitch.cmp(&b.pitch)));
        notes.dedup_by(|a, b| a.start == b.start && a.pitch == b.pitch);
        notes
    }

    /// A pitch name moves (`None` when it leaves 0..=127); a chord's pitch classes move mod 12 and
    /// are put in normal order again.
    fn transpose_token(&self, token: &str, semitones: i32) -> Option<String> {
        if let Some(p) = parse_pitch_name(token) {
            let q = p as i32 + semitones;
            return (0..=127).contains(&q).then(|| pitch_name(q as u8));
        }
        let pcs = parse_chord(token)?;
        let moved: Vec<u8> = pcs.iter().map(|&pc| (pc as i32 + semitones).rem_euclid(12) as u8).collect();
        Some(chord_text(&moved))
    }

    fn is_token(&self, token: &str) -> bool {
        // A pitch name, or pitch classes in normal order (what `encode` writes for a chord).
        parse_pitch_name(token).is_some_and(|p| pitch_name(p) == token)
            || parse_chord(token).is_some_and(|pcs| normal_order(&pcs) == pcs)
    }

    fn options(&self) -> TokenizerOptions {
        TokenizerOptions { step: self.step, note_length: self.note_length, ..TokenizerOptions::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// music21's documented `Chord.normalOrder` examples (chord/__init__.py docstring), and the
    /// common chords of the tutorial's data.
    #[test]
    fn normal_order_matches_music21_examples() {
        let cases: &[(&[u8], &[u8])] = &[
            (&[0, 3, 7], &[0, 3, 7]),           // c e- g
            (&[0, 4, 7], &[0, 4, 7]),           // c e g
            (&[2, 6, 9], &[2, 6, 9]),           // d f# a
            (&[10, 2, 5], &[10, 2, 5]),         // B-4 D5 F5
            (&[8, 9, 2, 7], &[7, 8, 9, 2]),     // G#2 A2 D3 G3
            (&[7, 2, 8, 9, 0, 4], &[7, 8, 9, 0, 2, 4]), // G3 D4 A-4 A4 C5 E5
            (&[5, 9, 1], &[1, 5, 9]),           // E#3 A3 C#4 (augmented: symmetric, smallest start)
            (&[11, 7, 2, 3, 2], &[11, 2, 3, 7]), // B5 G4 D5 E-5 D6
            (&[4, 7, 0], &[0, 4, 7]),           // first inversion C major
            (&[7, 0, 4], &[0, 4, 7]),           // second inversion
            (&[4, 7, 11], &[4, 7, 11]),         // E minor
            (&[7, 11, 2, 5], &[11, 2, 5, 7]),   // G7: span 8 from B beats 10 from G
            (&[0, 1], &[0, 1]),
            (&[11, 0], &[11, 0]),
            (&[0, 6], &[0, 6]),                 // tritone: symmetric, smallest start
            (&[0, 3, 6, 9], &[0, 3, 6, 9]),     // diminished seventh
            (&[], &[]),
        ];
        for (input, want) in cases {
            assert_eq!(normal_order(input), *want, "normal order of {input:?}");
        }
    }

    #[test]
    fn chord_tokens_parse_strictly() {
        assert_eq!(parse_chord("0.4.7"), Some(vec![0, 4, 7]));
        assert_eq!(parse_chord("11.0"), Some(vec![11, 0]));
        assert_eq!(parse_chord("3"), Some(vec![3]));
        for bad in ["", "12", "0..4", "04.7", "+1", "a.b", "C4", "<unk>"] {
            assert_eq!(parse_chord(bad), None, "{bad}");
        }
    }
}
