//! notechord tokens of hand-made MIDI files equal what the tutorial's rules give.

#[path = "midi_helpers.rs"]
mod helpers;

use etude::music::midi::{read_midi, ReadOptions};
use etude::music::tokens::{tokenizer_by_name, TokenizerOptions};
use helpers::{build1, notes_file, E};

fn tokens(bytes: &[u8]) -> Vec<String> {
    let piece = read_midi(bytes, &ReadOptions::default()).unwrap();
    tokenizer_by_name("notechord", &TokenizerOptions::default()).unwrap().encode(&piece.notes)
}

const Q: u32 = 480;

#[test]
fn single_notes_and_chords_in_normal_order() {
    let notes = [
        (0, 60, Q),                                                 // C4 alone
        (Q, 61, Q),                                                 // C#4
        (2 * Q, 52, Q), (2 * Q, 55, Q), (2 * Q, 60, Q),             // E3 G3 C4: C major, 1st inversion
        (3 * Q, 55, Q), (3 * Q, 60, Q), (3 * Q, 64, 2 * Q),         // G3 C4 E4: 2nd inversion, mixed lengths
        (4 * Q + Q, 40, Q), (5 * Q, 43, Q), (5 * Q, 47, Q),         // E minor triad
        (6 * Q, 43, Q), (6 * Q, 47, Q), (6 * Q, 50, Q), (6 * Q, 53, Q), // G7: G B D F
        (7 * Q, 60, Q), (7 * Q, 61, Q),                             // C C#
        (8 * Q, 59, Q), (8 * Q, 60, Q),                             // B3 C4
        (9 * Q, 60, Q), (9 * Q, 72, Q),                             // C4 C5: one pitch class
        (10 * Q, 78, Q),                                            // F#5
        (11 * Q, 60, Q), (11 * Q, 64, Q), (11 * Q, 68, Q),          // augmented: symmetric
        (12 * Q, 21, Q),                                            // A0
        (12 * Q + 1, 108, Q),                                       // C8, one tick later: its own event
    ];
    let got = tokens(&notes_file(&notes));
    let want = [
        "C4", "C#4", "0.4.7", "0.4.7", "4.7.11", "11.2.5.7", "0.1", "11.0", "0", "F#5", "0.4.8", "A0", "C8",
    ];
    assert_eq!(got, want);
}

#[test]
fn onsets_group_across_tracks_and_repeated_pitches_count_once() {
    // Right hand E4 G4 in track 1, left hand C3 in track 2, same tick: one chord. Then the same
    // pitch in both hands at one onset: one note.
    let rh = vec![(0, E::On(0, 64, 90)), (0, E::On(0, 67, 90)), (480, E::Off(0, 64)), (0, E::Off(0, 67)), (0, E::On(0, 62, 90)), (480, E::Off(0, 62))];
    let lh = vec![(0, E::On(1, 48, 90)), (480, E::Off(1, 48)), (0, E::On(1, 62, 70)), (240, E::Off(1, 62))];
    let got = tokens(&build1(&[vec![], rh, lh]));
    assert_eq!(got, vec!["0.4.7", "D4"]);
}

#[test]
fn decoding_places_one_event_per_step_in_octave_four() {
    let t = tokenizer_by_name("notechord", &TokenizerOptions { step: 0.5, note_length: 1.0, ..Default::default() }).unwrap();
    let toks: Vec<String> = ["E5", "11.2.5.7", "3", "<unk>", "C#4"].iter().map(|s| s.to_string()).collect();
    let notes = t.decode(&toks);
    let got: Vec<(u8, f64, f64)> = notes.iter().map(|n| (n.pitch, n.start, n.end)).collect();
    assert_eq!(
        got,
        vec![
            (76, 0.0, 1.0),
            (62, 0.5, 1.5), (65, 0.5, 1.5), (67, 0.5, 1.5), (71, 0.5, 1.5),
            (63, 1.0, 2.0), (75, 1.0, 2.0), // one-class chord: octaves 4 and 5
            (61, 2.0, 3.0),                 // <unk> is a silent step
        ]
    );
    let mut valid = toks.clone();
    valid.remove(3);
    assert_eq!(t.encode(&t.decode(&valid)), valid);
}
