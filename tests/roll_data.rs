//! Piano-roll data (issue 14, `src/data/roll.rs`): the `*.pianoroll.json.gz` reader (all 88 keys,
//! empty frames, any subset of the splits, one-line errors for absent splits, pitches out of range,
//! malformed and truncated files) and MIDI -> piano roll -> MIDI on the grid.

mod common;

use etude::music::midi::{read_midi, write_midi, Note, ReadOptions, WriteOptions};
use etude::data::roll::{
    count_frames, notes_to_roll, parse_roll_bytes, read_roll_file, roll_to_notes, to_json, to_json_gz, Sequence, KEYS,
};

fn all_keys_piece() -> Sequence {
    // every key alone, then silence, then all 88 at once
    let mut s: Sequence = (0..KEYS as u8).map(|k| vec![k]).collect();
    s.push(vec![]);
    s.push((0..KEYS as u8).collect());
    s
}

#[test]
fn reads_every_key_empty_frames_and_any_subset_of_splits() {
    let train = vec![all_keys_piece(), vec![vec![], vec![], vec![39, 43, 46]]];
    let valid = vec![vec![vec![0u8, 87]]];
    let gz = to_json_gz(&[("train", &train), ("valid", &valid)]);
    let d = parse_roll_bytes(&gz, "x.pianoroll.json.gz").unwrap();
    assert_eq!(d.split("train").unwrap(), &train[..]);
    assert_eq!(d.split("valid").unwrap(), &valid[..]);
    assert!(!d.has("test"));
    let e = d.split("test").unwrap_err();
    assert_eq!(e, "x.pianoroll.json.gz: no \"test\" split (the file holds train, valid)");
    // pitches are MIDI numbers in the file: 21 is key 0, 108 key 87
    let text = r#"{"test": [[[21, 108], [], [60, 60, 64]]]}"#;
    let d = parse_roll_bytes(text.as_bytes(), "t.pianoroll.json").unwrap();
    assert_eq!(d.split("test").unwrap(), &[vec![vec![0u8, 87], vec![], vec![39, 43]]][..]);
    assert!(d.split("train").unwrap_err().contains("no \"train\" split (the file holds test)"));
    assert_eq!(count_frames(d.split("test").unwrap()), (3, 2));
    // doubles holding integers (the .mat originals) are accepted
    let d = parse_roll_bytes(br#"{"valid": [[[60.0]]]}"#, "f").unwrap();
    assert_eq!(d.split("valid").unwrap(), &[vec![vec![39u8]]][..]);
}

#[test]
fn bad_files_give_one_line_errors_naming_the_file_and_cause() {
    let cases: [(&[u8], &str); 7] = [
        (br#"{"train": [[[20]]]}"#, "train sequence 0 step 0: pitch 20 outside 21..108"),
        (br#"{"train": [[[60], [109]]]}"#, "train sequence 0 step 1: pitch 109 outside 21..108"),
        (br#"{"valid": [[[60.5]]]}"#, "pitch 60.5 outside 21..108"),
        (br#"{"train": [[[60], [62]"#, "truncated JSON"),
        (br#"{"train": [[[60], [62]]]]]}"#, "malformed JSON"),
        (br#"{"notes": []}"#, "no train, valid or test split"),
        (br#"{"train": [[60]]}"#, "train sequence 0 step 0: not a list of pitches"),
    ];
    for (bytes, want) in cases {
        let e = parse_roll_bytes(bytes, "bad.pianoroll.json").unwrap_err();
        assert!(e.starts_with("bad.pianoroll.json: ") && e.contains(want), "{e:?} should say {want:?}");
        assert!(!e.contains('\n'), "one line: {e:?}");
    }
    // a gzip stream cut short
    let gz = to_json_gz(&[("train", &[all_keys_piece()][..])]);
    let e = parse_roll_bytes(&gz[..gz.len() / 2], "cut.pianoroll.json.gz").unwrap_err();
    assert!(e.starts_with("cut.pianoroll.json.gz: truncated or corrupt gzip"), "{e}");
    // a file that is not there
    let e = read_roll_file(std::path::Path::new("/nonexistent/x.pianoroll.json.gz")).unwrap_err();
    assert!(e.starts_with("/nonexistent/x.pianoroll.json.gz: "), "{e}");
}

#[test]
fn json_round_trips() {
    let train = vec![all_keys_piece()];
    let d = parse_roll_bytes(to_json(&[("train", &train)]).as_bytes(), "j").unwrap();
    assert_eq!(d.split("train").unwrap(), &train[..]);
}

#[test]
fn midi_to_roll_to_midi_on_the_grid() {
    // At 4 steps per quarter: C4 for a quarter, E4 + G4 held a half note from beat 1, a gap, A0
    // and C8 for one step each, and a repeated note that must stay two notes.
    let notes = vec![
        Note::new(60, 0.0, 1.0, 80),
        Note::new(64, 1.0, 3.0, 80),
        Note::new(67, 1.0, 3.0, 80),
        Note::new(21, 3.5, 3.75, 80),
        Note::new(108, 3.5, 3.75, 80),
        Note::new(72, 4.0, 4.5, 80),
        Note::new(72, 4.5, 5.0, 80),
        Note::new(12, 0.0, 1.0, 80), // below A0: dropped
    ];
    let bytes = write_midi(&notes, &WriteOptions::default());
    let piece = read_midi(&bytes, &ReadOptions::default()).unwrap();
    let roll = notes_to_roll(&piece.notes, 4);
    assert_eq!(roll.len(), 20);
    assert_eq!(roll[0], vec![39]);
    assert_eq!(roll[3], vec![39]);
    assert_eq!(roll[4], vec![43, 46]);
    assert_eq!(roll[11], vec![43, 46]);
    assert!(roll[12].is_empty() && roll[13].is_empty());
    assert_eq!(roll[14], vec![0, 87]);
    assert!(roll[15].is_empty());
    assert_eq!(roll[16], vec![51]);
    // Back to notes: keys held over consecutive frames are one note; the repeated C5 merges into
    // one note of a half (frames cannot tell a repeat from a hold), everything else comes back.
    let back = roll_to_notes(&roll, 0.25, 80);
    let got: Vec<(u8, f64, f64)> = back.iter().map(|n| (n.pitch, n.start, n.end)).collect();
    assert_eq!(
        got,
        vec![(60, 0.0, 1.0), (64, 1.0, 3.0), (67, 1.0, 3.0), (21, 3.5, 3.75), (108, 3.5, 3.75), (72, 4.0, 5.0)]
    );
    // and through a MIDI file again, the same roll
    let again = read_midi(&write_midi(&back, &WriteOptions::default()), &ReadOptions::default()).unwrap();
    assert_eq!(notes_to_roll(&again.notes, 4), roll);
}

#[test]
fn the_shared_jsb_file_has_the_documented_frame_counts() {
    let path = common::shared_dir().join("corpus/poly-music/jsb_chorales.pianoroll.json.gz");
    if !path.exists() {
        eprintln!("skipped: {} is not there", path.display());
        return;
    }
    let d = read_roll_file(&path).unwrap();
    let train = d.split("train").unwrap();
    let valid = d.split("valid").unwrap();
    assert_eq!((train.len(), count_frames(train).0), (229, 13_807));
    assert_eq!((valid.len(), count_frames(valid).0), (76, 4_602));
    assert!(d.split("test").is_err());
}
