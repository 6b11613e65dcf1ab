//! `timed`: a time-shift / pitch / duration token set (TSD-like) on a grid of
//! `steps_per_quarter` steps per quarter note (default 12: sixteenths are 3 steps, eighth-note
//! triplets 4).
//!
//! Tokens:
//! - `TS_n` (1 <= n <= `max_shift`): move the time forward by n steps. A gap longer than `max_shift`
//!   is written as `TS_max` repeated, then the remainder.
//! - `P_p` (0 <= p <= 127): the pitch of the next note, which starts at the current time.
//! - `V_b` (0 <= b < `velocity_bins`, only when `velocity_bins > 0`): its velocity bin,
//!   b = floor(velocity x bins / 128); decoded as floor((128 b + 64) / bins).
//! - `D_n` (1 <= n <= `max_duration`): its duration in steps; this token completes the note.
//!
//! A note is `P_p [V_b] D_n`; notes of one onset follow each other by increasing pitch, with no
//! `TS` between them. Example (12 steps per quarter): a C major triad of one quarter, then an E5
//! eighth note a quarter later: `P_60 D_12 P_64 D_12 P_67 D_12 TS_12 P_76 D_6`.
//!
//! Quantisation (what `encode` keeps): onset and release rounded to the grid, duration at least 1
//! and at most `max_duration` steps; of two notes of one pitch and one onset the longer is kept; a
//! note still sounding when its pitch starts again is cut there. For notes already so quantised,
//! notes -> tokens -> notes is the identity, and so is tokens -> notes -> tokens for every sequence
//! `encode` produces. `decode` skips tokens it cannot use (`<unk>`, a `D` with no `P` before it).

use super::{Tokenizer, TokenizerOptions};
use crate::music::midi::Note;

/// Velocity of decoded notes when there are no velocity tokens.
pub const DEFAULT_VELOCITY: u8 = 80;

/// The `timed` tokenizer.
#[derive(Clone, Debug)]
pub struct Timed {
    steps_per_quarter: u32,
    max_shift: u32,
    max_duration: u32,
    velocity_bins: u32,
}

/// A note on the grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct GridNote {
    start: u64,
    pitch: u8,
    duration: u32,
    velocity_bin: u32,
}

impl Timed {
    /// Uses `steps_per_quarter` (1..=960), `max_shift` (>= 1), `max_duration` (>= 1) and
    /// `velocity_bins` (0..=64) of `opts`.
    pub fn new(opts: &TokenizerOptions) -> Result<Timed, String> {
        if !(1..=960).contains(&opts.steps_per_quarter) {
            return Err(format!("timed: steps_per_quarter must be in 1..=960, got {}", opts.steps_per_quarter));
        }
        if opts.max_shift == 0 || opts.max_duration == 0 {
            return Err("timed: max_shift and max_duration must be at least 1".into());
        }
        if opts.velocity_bins > 64 {
            return Err(format!("timed: velocity_bins must be in 0..=64, got {}", opts.velocity_bins));
        }
        Ok(Timed {
            steps_per_quarter: opts.steps_per_quarter,
            max_shift: opts.max_shift,
            max_duration: opts.max_duration,
            velocity_bins: opts.velocity_bins,
        })
    }

    fn velocity_bin(&self, velocity: u8) -> u32 {
        if self.velocity_bins == 0 {
            0
        } else {
            (velocity as u32 * self.velocity_bins / 128).min(self.velocity_bins - 1)
        }
    }

    fn bin_velocity(&self, bin: u32) -> u8 {
        match (128 * bin + 64).checked_div(self.velocity_bins) {
            Some(v) => v.clamp(1, 127) as u8,
            None => DEFAULT_VELOCITY,
        }
    }

    /// The notes as `encode` sees them (see the module doc), sorted by (start, pitch).
    fn quantise(&self, notes: &[Note]) -> Vec<GridNote> {
        let spq = self.steps_per_quarter as f64;
        let grid = |q: f64| -> u64 {
            if q.is_finite() && q > 0.0 {
                (q * spq).round() as u64
            } else {
                0
            }
        };
        // Per pitch by onset, the longest first among equal onsets, then by velocity bin: sorted
        // as one number per note (pitch: 7 bits, start: 64, the duration's complement: 32, the
        // bin: 6), which orders them as comparing field by field does and holds every field, so
        // the result is exact.
        let mut keys: Vec<u128> = notes
            .iter()
            .filter(|n| n.pitch <= 127)
            .map(|n| {
                let start = grid(n.start);
                let end = grid(n.end);
                let duration = end.saturating_sub(start).clamp(1, self.max_duration as u64) as u32;
                let bin = self.velocity_bin(n.velocity);
                (n.pitch as u128) << 102 | (start as u128) << 38 | ((!duration) as u128) << 6 | bin as u128
            })
            .collect();
        keys.sort_unstable();
        let mut out: Vec<GridNote> = Vec::with_capacity(keys.len());
        for k in keys {
            let n = GridNote {
                pitch: (k >> 102) as u8,
                start: (k >> 38) as u64,
                duration: !((k >> 6) as u32),
                velocity_bin: (k & 63) as u32,
            };
            if let Some(prev) = out.last_mut() {
                if prev.pitch == n.pitch {
                    if prev.start == n.start {
                        continue;
                    }
                    if prev.start + prev.duration as u64 > n.start {
                        prev.duration = (n.start - prev.start) as u32;
                    }
                }
            }
            out.push(n);
        }
        // By (start, pitch), distinct here (one note per pitch and onset), again as one number
        // (start: 64 bits, pitch: 7, duration: 32, bin: 6).
        let mut keys: Vec<u128> = out
            .iter()
            .map(|g| (g.start as u128) << 64 | (g.pitch as u128) << 38 | (g.duration as u128) << 6 | g.velocity_bin as u128)
            .collect();
        keys.sort_unstable();
        for (g, k) in out.iter_mut().zip(keys) {
            *g = GridNote { start: (k >> 64) as u64, pitch: ((k >> 38) & 127) as u8, duration: (k >> 6) as u32, velocity_bin: (k & 63) as u32 };
        }
        out
    }

    fn to_note(&self, g: &GridNote) -> Note {
        let spq = self.steps_per_quarter as f64;
        let start = g.start as f64 / spq;
        let end = (g.start + g.duration as u64) as f64 / spq;
        Note::new(g.pitch, start, end, self.bin_velocity(g.velocity_bin))
    }

    /// `notes` quantised as `encode` sees them, as notes (velocity from its bin).
    pub fn quantised(&self, notes: &[Note]) -> Vec<Note> {
        self.quantise(notes).iter().map(|g| self.to_note(g)).collect()
    }

    /// The tokens of `notes`, in order, to `out` (what `encode` writes as strings and
    /// `encode_codes` as codes).
    fn emit(&self, notes: &[Note], mut out: impl FnMut(Tok)) {
        let mut time = 0u64;
        for n in self.quantise(notes) {
            let mut gap = n.start - time;
            while gap > 0 {
                let s = gap.min(self.max_shift as u64);
                out(Tok::Shift(s as u32));
                gap -= s;
            }
            time = n.start;
            out(Tok::Pitch(n.pitch));
            if self.velocity_bins > 0 {
                out(Tok::Velocity(n.velocity_bin));
            }
            out(Tok::Duration(n.duration));
        }
    }

    /// The code of a token: `TS` first, then `P`, `V` and `D`, each by its number.
    fn code(&self, t: Tok) -> u32 {
        let (s, v) = (self.max_shift, self.velocity_bins);
        match t {
            Tok::Shift(n) => n - 1,
            Tok::Pitch(p) => s + p as u32,
            Tok::Velocity(b) => s + 128 + b,
            Tok::Duration(n) => s + 128 + v + n - 1,
        }
    }

    /// The token of code `c` (below [`Tokenizer::code_count`]).
    fn of_code(&self, c: u32) -> Tok {
        let (s, v) = (self.max_shift, self.velocity_bins);
        if c < s {
            Tok::Shift(c + 1)
        } else if c < s + 128 {
            Tok::Pitch((c - s) as u8)
        } else if c < s + 128 + v {
            Tok::Velocity(c - s - 128)
        } else {
            Tok::Duration(c - s - 128 - v + 1)
        }
    }
}

/// One `timed` token.
#[derive(Clone, Copy, Debug)]
enum Tok {
    Shift(u32),
    Pitch(u8),
    Velocity(u32),
    Duration(u32),
}

impl Tok {
    fn text(self) -> String {
        match self {
            Tok::Shift(n) => format!("TS_{n}"),
            Tok::Pitch(p) => format!("P_{p}"),
            Tok::Velocity(b) => format!("V_{b}"),
            Tok::Duration(n) => format!("D_{n}"),
        }
    }
}

/// `n` of a token `PREFIXn` when n is a canonical decimal in `lo..=hi`.
fn number(token: &str, prefix: &str, lo: u32, hi: u32) -> Option<u32> {
    let digits = token.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = digits.parse().ok()?;
    (n.to_string() == digits && (lo..=hi).contains(&n)).then_some(n)
}

impl Tokenizer for Timed {
    fn name(&self) -> &'static str {
        "timed"
    }

    fn encode(&self, notes: &[Note]) -> Vec<String> {
        let mut tokens = Vec::new();
        self.emit(notes, |t| tokens.push(t.text()));
        tokens
    }

    fn code_count(&self) -> usize {
        let n = self.max_shift as u64 + 128 + self.velocity_bins as u64 + self.max_duration as u64;
        if n <= super::MAX_CODES as u64 {
            n as usize
        } else {
            0
        }
    }

    fn encode_codes(&self, notes: &[Note]) -> Option<Vec<u32>> {
        if self.code_count() == 0 {
            return None;
        }
        let mut codes = Vec::new();
        self.emit(notes, |t| codes.push(self.code(t)));
        Some(codes)
    }

    fn code_token(&self, code: u32) -> Option<String> {
        ((code as usize) < self.code_count()).then(|| self.of_code(code).text())
    }

    /// `P_p` moves (`None` when p leaves 0..=127); `TS`, `V` and `D` tokens stay.
    fn transpose_token(&self, token: &str, semitones: i32) -> Option<String> {
        if let Some(p) = number(token, "P_", 0, 127) {
            let q = p as i32 + semitones;
            return (0..=127).contains(&q).then(|| format!("P_{q}"));
        }
        let known = number(token, "TS_", 1, self.max_shift).is_some()
            || number(token, "D_", 1, self.max_duration).is_some()
            || (self.velocity_bins > 0 && number(token, "V_", 0, self.velocity_bins - 1).is_some());
        known.then(|| token.to_string())
    }

    fn decode(&self, tokens: &[String]) -> Vec<Note> {
        let mut time = 0u64;
        let mut pitch: Option<u8> = None;
        let mut bin: Option<u32> = None;
        let mut grid = Vec::new();
        for t in tokens {
            if let Some(s) = number(t, "TS_", 1, self.max_shift) {
                time += s as u64;
                pitch = None;
            } else if let Some(p) = number(t, "P_", 0, 127) {
                pitch = Some(p as u8);
                bin = None;
            } else if let (Some(b), true) = (number(t, "V_", 0, self.velocity_bins.saturating_sub(1)), self.velocity_bins > 0) {
                bin = Some(b);
            } else if let Some(d) = number(t, "D_", 1, self.max_duration) {
                if let Some(p) = pitch.take() {
                    let velocity_bin = bin.take().unwrap_or_else(|| self.velocity_bin(DEFAULT_VELOCITY));
                    grid.push(GridNote { start: time, pitch: p, duration: d, velocity_bin });
                }
            }
        }
        grid.sort_by(|a, b| a.start.cmp(&b.start).then(a.pitch.cmp(&b.pitch)));
        grid.iter().map(|g| self.to_note(g)).collect()
    }

    fn is_token(&self, token: &str) -> bool {
        number(token, "TS_", 1, self.max_shift).is_some()
            || number(token, "P_", 0, 127).is_some()
            || (self.velocity_bins > 0 && number(token, "V_", 0, self.velocity_bins - 1).is_some())
            || number(token, "D_", 1, self.max_duration).is_some()
    }

    fn options(&self) -> TokenizerOptions {
        TokenizerOptions {
            steps_per_quarter: self.steps_per_quarter,
            max_shift: self.max_shift,
            max_duration: self.max_duration,
            velocity_bins: self.velocity_bins,
            ..TokenizerOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(opts: TokenizerOptions) -> Timed {
        Timed::new(&opts).unwrap()
    }

    #[test]
    fn encodes_the_documented_example() {
        let t = tok(TokenizerOptions::default());
        let notes = vec![
            Note::new(64, 0.0, 1.0, 90),
            Note::new(60, 0.0, 1.0, 90),
            Note::new(67, 0.0, 1.0, 90),
            Note::new(76, 2.0, 2.5, 90),
        ];
        let tokens = t.encode(&notes);
        assert_eq!(tokens.join(" "), "P_60 D_12 P_64 D_12 P_67 D_12 TS_24 P_76 D_6");
        let back = t.decode(&tokens);
        assert_eq!(back.len(), 4);
        assert_eq!((back[3].pitch, back[3].start, back[3].end), (76, 2.0, 2.5));
    }

    #[test]
    fn long_gaps_repeat_the_largest_shift_and_long_notes_are_capped() {
        let t = tok(TokenizerOptions { max_shift: 48, max_duration: 96, ..Default::default() });
        let notes = vec![Note::new(60, 0.0, 20.0, 80), Note::new(62, 10.25, 10.5, 80)];
        let tokens = t.encode(&notes);
        // 10.25 quarters = 123 steps = 48 + 48 + 27; 20 quarters = 240 steps, capped at 96.
        assert_eq!(tokens.join(" "), "P_60 D_96 TS_48 TS_48 TS_27 P_62 D_3");
    }

    #[test]
    fn velocity_bins_round_trip_and_overlaps_are_cut() {
        let t = tok(TokenizerOptions { velocity_bins: 8, ..Default::default() });
        for v in 1..=127u8 {
            let b = t.velocity_bin(v);
            assert!(b < 8);
            assert_eq!(t.velocity_bin(t.bin_velocity(b)), b, "velocity {v}");
        }
        // Same pitch struck again while sounding, and a duplicate at one onset.
        let notes = vec![
            Note::new(60, 0.0, 2.0, 100),
            Note::new(60, 1.0, 1.5, 30),
            Note::new(60, 1.0, 1.25, 30),
        ];
        let tokens = t.encode(&notes);
        assert_eq!(tokens.join(" "), "P_60 V_6 D_12 TS_12 P_60 V_1 D_6");
        let q = t.decode(&tokens);
        assert_eq!(t.encode(&q), tokens);
        assert_eq!(t.quantised(&q), q);
    }

    #[test]
    fn decode_skips_what_it_cannot_use() {
        let t = tok(TokenizerOptions::default());
        let tokens: Vec<String> = ["D_4", "<unk>", "P_60", "TS_3", "D_4", "P_61", "D_0", "D_04", "P_128", "D_2", "P_62", "D_2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let notes = t.decode(&tokens);
        // D_4 without a pitch, <unk>, the P_60 cut off by TS_3, D_0, D_04 and P_128 are skipped;
        // P_61 is still pending when D_2 comes.
        let got: Vec<(u8, f64, f64)> = notes.iter().map(|n| (n.pitch, n.start, n.end)).collect();
        assert_eq!(got, vec![(61, 0.25, 5.0 / 12.0), (62, 0.25, 5.0 / 12.0)]);
    }
}
