//! `etude::music::stats` on hand-made MIDI files with answers worked out by hand, and the argmax collapse
//! standing out against real music.

use etude::music::midi::{read_midi, write_midi, Note, ReadOptions, WriteOptions};
use etude::music::stats::{compare, features, longest_repeat, repetition, scale_consistency, PieceStats};

/// Notes (pitch, start, end) through a MIDI file and back, as a user's file would be read.
fn via_midi(notes: &[(u8, f64, f64)]) -> Vec<Note> {
    let notes: Vec<Note> = notes.iter().map(|&(p, s, e)| Note::new(p, s, e, 80)).collect();
    let bytes = write_midi(&notes, &WriteOptions::default());
    read_midi(&bytes, &ReadOptions::default()).unwrap().notes
}

fn close(s: &PieceStats, f: &str, want: f64) {
    let got = s.get(f);
    assert!((got - want).abs() < 1e-9, "{f}: {got}, expected {want}");
}

#[test]
fn a_c_major_scale() {
    // C4 D4 E4 F4 G4 A4 B4 C5, one quarter each.
    let scale = [60, 62, 64, 65, 67, 69, 71, 72];
    let notes = via_midi(&scale.iter().enumerate().map(|(i, &p)| (p, i as f64, i as f64 + 1.0)).collect::<Vec<_>>());
    let s = features("scale", &notes);
    close(&s, "notes", 8.0);
    close(&s, "length_quarters", 8.0);
    close(&s, "pitch_range", 12.0);
    close(&s, "distinct_pitches", 8.0);
    close(&s, "pitch_entropy", 3.0); // 8 equally likely pitches
    close(&s, "pitch_class_entropy", 2.75); // C twice of 8: 2/8*2 + 6 * 1/8*3
    close(&s, "polyphony", 1.0);
    close(&s, "max_polyphony", 1.0);
    close(&s, "scale_consistency", 1.0);
    close(&s, "notes_per_quarter", 1.0);
    close(&s, "ioi_entropy", 0.0);
    close(&s, "ioi_distinct", 1.0);
    close(&s, "duration_entropy", 0.0);
    close(&s, "duration_distinct", 1.0);
    close(&s, "repetition_8", 0.0); // one 8-gram, seen once
    close(&s, "longest_repeat", 0.0);
    assert_eq!(s.ioi_histogram, vec![(1.0, 7)]);
    assert!(!s.flags.iter().any(|f| f == "few pitches" || f == "repetitive"), "{:?}", s.flags);
}

#[test]
fn a_chord_under_a_melody_note() {
    // C E G held for 4 quarters; C5 from 2 to 3. Sounding: 3 notes for 2 q, 4 for 1 q, 3 for 1 q.
    let notes = via_midi(&[(60, 0.0, 4.0), (64, 0.0, 4.0), (67, 0.0, 4.0), (72, 2.0, 3.0)]);
    let s = features("chord", &notes);
    close(&s, "polyphony", (3.0 * 2.0 + 4.0 + 3.0) / 4.0);
    close(&s, "max_polyphony", 4.0);
    close(&s, "ioi_distinct", 1.0); // onsets 0 and 2
    close(&s, "duration_distinct", 2.0); // 4, 4, 4, 1
    let h = -(0.75f64 * 0.75f64.log2() + 0.25 * 0.25f64.log2());
    close(&s, "duration_entropy", h);
    close(&s, "notes_per_quarter", 1.0);
}

#[test]
fn scales_repetition_and_repeats_by_hand() {
    // All 12 pitch classes once: the best scale holds 7.
    let chromatic: Vec<Note> = (0..12).map(|i| Note::new(60 + i, i as f64, i as f64 + 1.0, 80)).collect();
    assert!((scale_consistency(&chromatic) - 7.0 / 12.0).abs() < 1e-12);
    // A minor (A B C D E F G) is a scale of its own; with a G# the best is still 7 of 8.
    let a_minor: Vec<Note> =
        [57, 59, 60, 62, 64, 65, 67, 68].iter().enumerate().map(|(i, &p)| Note::new(p, i as f64, i as f64 + 1.0, 80)).collect();
    assert!((scale_consistency(&a_minor) - 7.0 / 8.0).abs() < 1e-12);
    assert_eq!(longest_repeat(&[1, 2, 3, 1, 2, 3, 4]), 3);
    assert_eq!(longest_repeat(&[1, 1, 1, 1]), 3); // overlapping occurrences
    assert_eq!(longest_repeat(&[1, 2, 3]), 0);
    // 10 pitches, 8-grams at 0, 1, 2: the first equals the third, the second is alone -> 2 of 3.
    let seq = [1, 2, 1, 2, 1, 2, 1, 2, 1, 2];
    assert!((repetition(&seq, 8) - 2.0 / 3.0).abs() < 1e-12);
    let seq = [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8];
    // 9 8-grams: 1..8 occurs twice (starts 0 and 8), the 7 others once -> 2/9.
    assert!((repetition(&seq, 8) - 2.0 / 9.0).abs() < 1e-12);
}

/// The tutorial's argmax collapse: two notes alternating every half quarter.
fn collapse() -> Vec<Note> {
    via_midi(&(0..40).map(|i| (if i % 2 == 0 { 60 } else { 64 }, i as f64 * 0.5, i as f64 * 0.5 + 0.5)).collect::<Vec<_>>())
}

#[test]
fn the_argmax_collapse_is_flagged_alone() {
    let s = features("argmax", &collapse());
    close(&s, "distinct_pitches", 2.0);
    close(&s, "pitch_entropy", 1.0);
    close(&s, "repetition_8", 1.0);
    close(&s, "longest_repeat", 38.0);
    for flag in ["few pitches", "low pitch entropy", "repetitive", "monotonous rhythm"] {
        assert!(s.flags.iter().any(|f| f == flag), "{flag} missing from {:?}", s.flags);
    }
}

#[test]
fn the_argmax_collapse_stands_out_against_real_music() {
    let reference: Vec<(String, Vec<Note>)> = etude::data::corpus::load_corpus::<&str>(&[], &ReadOptions::default())
        .pieces
        .into_iter()
        .map(|p| (p.name, p.piece.notes))
        .collect();
    assert!(reference.len() >= 10);
    let r = compare(&[("argmax".to_string(), collapse())], &reference);
    let feature = |name: &str| r.against.iter().find(|a| a.feature == name).unwrap();
    for f in ["distinct_pitches", "pitch_entropy", "pitch_class_entropy"] {
        assert_eq!(feature(f).below, 1, "{f}: {:?}", feature(f));
        assert!(r.pieces[0].flags.iter().any(|x| x == &format!("{f} below the reference")), "{:?}", r.pieces[0].flags);
    }
    assert_eq!(feature("repetition_8").above, 1, "{:?}", feature("repetition_8"));
    // Its distances to the real pieces look nothing like the real pieces' distances to each other.
    assert!(feature("pitch_entropy").overlap < 0.2, "{:?}", feature("pitch_entropy"));
    // The real pieces against themselves overlap well, and none is outside its own range.
    let own = compare(&reference, &reference);
    for a in &own.against {
        assert_eq!((a.below, a.above), (0, 0), "{a:?}");
    }
    let pe = own.against.iter().find(|a| a.feature == "pitch_entropy").unwrap();
    assert!(pe.overlap > 0.7, "{pe:?}");
    assert!(pe.overlap > 3.0 * feature("pitch_entropy").overlap);
}
