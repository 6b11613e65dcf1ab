//! MIDI -> tokens -> MIDI -> tokens is the identity for both tokenizers on every built-in piece.

#[path = "midi_helpers.rs"]
mod helpers;

use etude::music::midi::{read_midi, write_midi, ReadOptions, WriteOptions};
use etude::music::tokens::timed::Timed;
use etude::music::tokens::{tokenizer_by_name, Tokenizer, TokenizerOptions};

fn round_trip(name: &str, opts: &TokenizerOptions) {
    let t = tokenizer_by_name(name, opts).unwrap();
    let files = etude::data::corpus::builtin();
    assert_eq!(files.len(), 102);
    for (file, bytes) in files {
        let piece = read_midi(bytes, &ReadOptions::default()).unwrap();
        let tokens = t.encode(&piece.notes);
        assert!(tokens.len() > 50, "{file}: only {} tokens", tokens.len());
        let notes = t.decode(&tokens);
        assert!(!notes.is_empty());
        let midi = write_midi(&notes, &WriteOptions::default());
        let again = read_midi(&midi, &ReadOptions::default()).unwrap();
        let tokens2 = t.encode(&again.notes);
        assert_eq!(tokens2.len(), tokens.len(), "{file} ({name})");
        if let Some(i) = tokens.iter().zip(&tokens2).position(|(a, b)| a != b) {
            panic!("{file} ({name}): first difference at token {i}: {} vs {}", tokens[i], tokens2[i]);
        }
        // tokens -> notes -> tokens, without the file in between.
        assert_eq!(t.encode(&notes), tokens, "{file} ({name})");
    }
}

#[test]
fn notechord_round_trips_every_builtin_piece() {
    round_trip("notechord", &TokenizerOptions::default());
    round_trip("notechord", &TokenizerOptions { step: 0.25, note_length: 1.0, ..Default::default() });
}

#[test]
fn timed_round_trips_every_builtin_piece() {
    round_trip("timed", &TokenizerOptions::default());
    round_trip("timed", &TokenizerOptions { steps_per_quarter: 24, velocity_bins: 8, max_shift: 24, ..Default::default() });
}

#[test]
fn timed_quantised_notes_come_back_exactly() {
    for opts in [TokenizerOptions::default(), TokenizerOptions { velocity_bins: 4, ..Default::default() }] {
        let t = Timed::new(&opts).unwrap();
        for (file, bytes) in helpers::corpus_files() {
            let piece = read_midi(&bytes, &ReadOptions { all_parts: false, sustain: true }).unwrap();
            let q = t.quantised(&piece.notes);
            assert!(q.len() * 10 >= piece.notes.len() * 9, "{file}: quantising dropped more than 10% of the notes");
            let back = t.decode(&t.encode(&q));
            assert_eq!(back, q, "{file}");
        }
    }
}
