//! Notes <-> token strings <-> ids.
//!
//! Two tokenizers, chosen by name with [`tokenizer_by_name`]:
//! - `notechord` ([`notechord::NoteChord`]): the Keras WaveNet/LSTM tutorial's encoding: one token
//!   per onset, a pitch name ("C#4") for a single note, the pitch classes of a chord in normal order
//!   ("0.4.7"); lossy (no durations, no rhythm).
//! - `timed` ([`timed::Timed`]): time shifts, pitches, durations (and optionally velocities) on a
//!   grid; an exact inverse for quantised notes.
//!
//! A [`Vocab`] maps token strings to ids (and back), built from training data, serialisable as JSON.

pub mod notechord;
pub mod timed;

use crate::music::midi::Note;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Notes <-> tokens.
///
/// `decode(encode(notes))` gives the notes as the tokenizer sees them (for `timed`: quantised; for
/// `notechord`: on a fixed grid); `encode(decode(tokens)) == tokens` for every token sequence that
/// `encode` can produce. `decode` accepts any sequence (a model's output) and skips what it cannot
/// use.
pub trait Tokenizer: Send + Sync {
    /// The name it is chosen by (`notechord`, `timed`).
    fn name(&self) -> &'static str;
    /// Tokens of a piece; `notes` in any order.
    fn encode(&self, notes: &[Note]) -> Vec<String>;
    /// Notes of a token sequence, sorted by (start, pitch); unknown or misplaced tokens are skipped.
    fn decode(&self, tokens: &[String]) -> Vec<Note>;
    /// The settings that `encode`/`decode` depend on, to store beside a vocabulary.
    fn options(&self) -> TokenizerOptions;
    /// The token that `token` becomes when the music is moved by `semitones`, or `None` when it
    /// has none (a pitch leaving 0..=127, `<unk>`, a foreign token). Tokens without a pitch (time
    /// shifts, durations) map to themselves. For every token `encode` produces, tokenising
    /// `transpose(notes, s)` equals mapping `encode(notes)` through this, as long as no note leaves
    /// 0..=127 (used for transposition at batch time, see `dataset`).
    fn transpose_token(&self, token: &str, semitones: i32) -> Option<String> {
        (semitones == 0 && token != UNK).then(|| token.to_string())
    }
    /// Whether `token` is one `encode` can produce with these settings (a checkpoint's vocabulary
    /// is checked with it; [`UNK`] is not a tokenizer's token).
    fn is_token(&self, token: &str) -> bool;
    /// The number of token codes: a tokenizer whose tokens come from a small fixed set numbers
    /// them `0..code_count()` ([`Tokenizer::code_token`]) and can give a piece's tokens as those
    /// numbers ([`Tokenizer::encode_codes`]), so that a large corpus is tokenised without making
    /// a string per token. 0 (the default): no codes.
    fn code_count(&self) -> usize {
        0
    }
    /// [`Tokenizer::encode`] as codes: `encode(notes)` is `encode_codes(notes)` with each code
    /// replaced by [`Tokenizer::code_token`]. `None` without codes.
    fn encode_codes(&self, notes: &[Note]) -> Option<Vec<u32>> {
        let _ = notes;
        None
    }
    /// The token of `code` (`< code_count()`); distinct codes have distinct tokens.
    fn code_token(&self, code: u32) -> Option<String> {
        let _ = code;
        None
    }
}

/// The largest [`Tokenizer::code_count`] a tokenizer gives (beyond it, with very large options,
/// it gives none and a corpus is tokenised as strings).
pub const MAX_CODES: usize = 1 << 16;

/// Settings of both tokenizers (each reads its own fields). Serialisable so that a checkpoint can
/// rebuild the exact tokenizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenizerOptions {
    /// notechord: quarter notes between decoded events (the tutorial's 0.5).
    pub step: f64,
    /// notechord: length of every decoded note, quarter notes.
    pub note_length: f64,
    /// timed: grid steps per quarter note (12 holds sixteenths and eighth-note triplets; 24 also
    /// holds 32nds and sixteenth triplets).
    pub steps_per_quarter: u32,
    /// timed: largest single time shift, in steps; longer gaps repeat `TS_max`.
    pub max_shift: u32,
    /// timed: longest duration, in steps; longer notes are cut to it.
    pub max_duration: u32,
    /// timed: number of velocity bins; 0 = no velocity tokens (every note decodes at velocity 80).
    pub velocity_bins: u32,
}

impl Default for TokenizerOptions {
    fn default() -> Self {
        TokenizerOptions {
            step: 0.5,
            note_length: 0.5,
            steps_per_quarter: 12,
            max_shift: 48,
            max_duration: 96,
            velocity_bins: 0,
        }
    }
}

/// Names accepted by [`tokenizer_by_name`].
pub const TOKENIZER_NAMES: [&str; 2] = ["notechord", "timed"];

/// The tokenizer called `name` with `opts`, or an error listing the valid names / the bad option.
pub fn tokenizer_by_name(name: &str, opts: &TokenizerOptions) -> Result<Box<dyn Tokenizer>, String> {
    match name {
        "notechord" => Ok(Box::new(notechord::NoteChord::new(opts)?)),
        "timed" => Ok(Box::new(timed::Timed::new(opts)?)),
        _ => Err(format!("unknown tokenizer '{name}' (expected one of: {})", TOKENIZER_NAMES.join(", "))),
    }
}

/// The notes moved by `semitones`, dropping the ones that leave 0..=127.
pub fn transpose(notes: &[Note], semitones: i32) -> Vec<Note> {
    notes
        .iter()
        .filter_map(|n| {
            let p = n.pitch as i32 + semitones;
            (0..=127).contains(&p).then(|| Note { pitch: p as u8, ..n.clone() })
        })
        .collect()
}

/// The unknown-token entry, always id 0.
pub const UNK: &str = "<unk>";

/// Token string <-> id.
///
/// Id 0 is [`UNK`]; the other tokens follow by decreasing count in the data the vocabulary was
/// built from, ties by string order, so the same data always gives the same ids. Serialises as
/// `{"tokens": [...], "counts": [...], "min_count": n}` (`tokens[0] == "<unk>"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "VocabRepr", into = "VocabRepr")]
pub struct Vocab {
    tokens: Vec<String>,
    counts: Vec<u64>,
    min_count: u64,
    index: HashMap<String, u32>,
}

#[derive(Serialize, Deserialize)]
struct VocabRepr {
    tokens: Vec<String>,
    counts: Vec<u64>,
    min_count: u64,
}

impl From<Vocab> for VocabRepr {
    fn from(v: Vocab) -> Self {
        VocabRepr { tokens: v.tokens, counts: v.counts, min_count: v.min_count }
    }
}

impl TryFrom<VocabRepr> for Vocab {
    type Error = String;
    fn try_from(r: VocabRepr) -> Result<Self, String> {
        if r.tokens.first().map(String::as_str) != Some(UNK) {
            return Err(format!("vocabulary must start with {UNK}"));
        }
        if r.counts.len() != r.tokens.len() {
            return Err("vocabulary: tokens and counts differ in length".into());
        }
        if r.tokens.len() > u32::MAX as usize {
            return Err("vocabulary too large".into());
        }
        let index: HashMap<String, u32> = r.tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        if index.len() != r.tokens.len() {
            return Err("vocabulary has a repeated token".into());
        }
        Ok(Vocab { tokens: r.tokens, counts: r.counts, min_count: r.min_count, index })
    }
}

impl Vocab {
    /// Build from token sequences, keeping tokens seen at least `min_count` times (the tutorial
    /// kept notes seen 50 times or more; 0 and 1 keep everything). The `<unk>` entry counts the
    /// occurrences of the tokens that were left out.
    pub fn build<S: AsRef<str>>(pieces: &[Vec<S>], min_count: u64) -> Vocab {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for piece in pieces {
            for t in piece {
                *counts.entry(t.as_ref()).or_default() += 1;
            }
        }
        let counts: Vec<(&str, u64)> = counts.into_iter().collect();
        Vocab::from_counts(&counts, min_count)
    }

    /// The vocabulary [`Vocab::build`] gives for data with these token counts (the same ids and
    /// counts, without the token sequences): `counts` in any order, a token listed twice adds up.
    pub fn from_counts<S: AsRef<str>>(counts: &[(S, u64)], min_count: u64) -> Vocab {
        let mut merged: HashMap<&str, u64> = HashMap::new();
        for (t, c) in counts {
            if *c > 0 {
                *merged.entry(t.as_ref()).or_default() += c;
            }
        }
        let mut kept: Vec<(&str, u64)> = merged.into_iter().filter(|&(t, _)| t != UNK).collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let dropped: u64 = kept.iter().filter(|&&(_, c)| c < min_count).map(|&(_, c)| c).sum();
        kept.retain(|&(_, c)| c >= min_count);
        let mut tokens = vec![UNK.to_string()];
        let mut cs = vec![dropped];
        for (t, c) in kept {
            tokens.push(t.to_string());
            cs.push(c);
        }
        Vocab::try_from(VocabRepr { tokens, counts: cs, min_count }).expect("built vocabulary is valid")
    }

    /// Number of entries, `<unk>` included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when only `<unk>` is there.
    pub fn is_empty(&self) -> bool {
        self.tokens.len() <= 1
    }

    /// Id of `token`, if it is in the vocabulary.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    /// Token of `id` (`<unk>` for an id out of range).
    pub fn token(&self, id: u32) -> &str {
        self.tokens.get(id as usize).map(String::as_str).unwrap_or(UNK)
    }

    /// All tokens by id.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// How often each token was seen in the data the vocabulary was built from, by id.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// The `min_count` the vocabulary was built with.
    pub fn min_count(&self) -> u64 {
        self.min_count
    }

    /// Ids of `tokens`; tokens not in the vocabulary become 0 (`<unk>`).
    pub fn encode<S: AsRef<str>>(&self, tokens: &[S]) -> Vec<u32> {
        tokens.iter().map(|t| self.id(t.as_ref()).unwrap_or(0)).collect()
    }

    /// Tokens of `ids`.
    pub fn decode(&self, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&i| self.token(i).to_string()).collect()
    }

    /// JSON text of the vocabulary.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a vocabulary serialises")
    }

    /// Parse [`Vocab::to_json`]'s output.
    pub fn from_json(text: &str) -> Result<Vocab, String> {
        serde_json::from_str(text).map_err(|e| format!("bad vocabulary JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_orders_by_count_then_string_and_round_trips_json() {
        let pieces = vec![vec!["b", "a", "c", "a"], vec!["c", "d", "a"]];
        let v = Vocab::build(&pieces, 1);
        assert_eq!(v.tokens(), &["<unk>", "a", "c", "b", "d"]);
        assert_eq!(v.counts(), &[0, 3, 2, 1, 1]);
        assert_eq!(v.encode(&["a", "zz", "d"]), vec![1, 0, 4]);
        assert_eq!(v.decode(&[2, 99]), vec!["c", "<unk>"]);
        let back = Vocab::from_json(&v.to_json()).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.id("b"), Some(3));

        let counted = Vocab::from_counts(&[("c", 1), ("a", 3), ("b", 1), ("d", 1), ("c", 1)], 1);
        assert_eq!(counted, v, "from_counts gives build's vocabulary");
        assert_eq!(Vocab::from_counts(&[("c", 2), ("a", 3), ("b", 1), ("d", 1)], 2), Vocab::build(&pieces, 2));

        let v2 = Vocab::build(&pieces, 2);
        assert_eq!(v2.tokens(), &["<unk>", "a", "c"]);
        assert_eq!(v2.counts()[0], 2, "<unk> counts the two dropped occurrences");
        assert!(Vocab::from_json(r#"{"tokens":["a"],"counts":[1],"min_count":1}"#).is_err());
    }

    #[test]
    fn every_encoded_token_is_a_token_and_damaged_ones_are_not() {
        use crate::music::midi::Note;
        let notes: Vec<Note> = (0..40)
            .map(|i| Note::new(30 + (i * 7 % 60) as u8, (i / 3) as f64 * 0.5, (i / 3) as f64 * 0.5 + 0.25 + (i % 5) as f64, 20 + i as u8 * 2))
            .collect();
        let velocity = TokenizerOptions { velocity_bins: 8, ..TokenizerOptions::default() };
        for (name, opts) in [("notechord", TokenizerOptions::default()), ("timed", TokenizerOptions::default()), ("timed", velocity)] {
            let t = tokenizer_by_name(name, &opts).unwrap();
            let tokens = t.encode(&notes);
            assert!(tokens.len() > 10);
            for tok in &tokens {
                assert!(t.is_token(tok), "{name}: {tok} is what encode writes");
            }
        }
        let nc = tokenizer_by_name("notechord", &TokenizerOptions::default()).unwrap();
        for bad in ["11.1.4&7", "7.4.0", "0.0", "C#", "Db4", "<unk>", "", "0.12", "P_60"] {
            assert!(!nc.is_token(bad), "notechord: {bad:?}");
        }
        let timed = tokenizer_by_name("timed", &TokenizerOptions::default()).unwrap();
        for bad in ["TS_0", "TS_49", "P_128", "V_0", "D_0", "D_97", "P_060", "C4", "<unk>"] {
            assert!(!timed.is_token(bad), "timed: {bad:?}");
        }
    }

    #[test]
    fn unknown_tokenizer_names_the_choices() {
        let err = tokenizer_by_name("wavelet", &TokenizerOptions::default()).err().unwrap();
        assert!(err.contains("notechord") && err.contains("timed"), "{err}");
    }
}
