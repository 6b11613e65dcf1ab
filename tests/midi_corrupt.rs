//! Corrupted input never panics: every case goes through read + both tokenizers and must give an
//! error or a clean parse.

#[path = "midi_helpers.rs"]
mod helpers;

use etude::music::midi::{read_midi, MidiError, ReadOptions};
use etude::rng::Rng;
use etude::music::tokens::{tokenizer_by_name, TokenizerOptions};
use helpers::{build, build1, E};
use midly::num::u15;
use midly::{Format, Timing};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Read with every option set, tokenise both ways, decode back; Ok(notes) or Err(error).
fn full_path(bytes: &[u8]) -> Result<usize, MidiError> {
    let mut kept = 0;
    for opts in [ReadOptions::default(), ReadOptions { all_parts: true, sustain: true }] {
        let piece = read_midi(bytes, &opts)?;
        assert!(piece.notes.iter().all(|n| n.end > n.start && n.pitch <= 127));
        assert!(piece.duration_quarters.is_finite() && piece.duration_seconds.is_finite());
        for name in ["notechord", "timed"] {
            let t = tokenizer_by_name(name, &TokenizerOptions::default()).unwrap();
            let tokens = t.encode(&piece.notes);
            let _ = t.decode(&tokens);
        }
        kept = piece.notes.len();
    }
    Ok(kept)
}

/// Runs `full_path` on each case, catching panics so the failure names the case.
fn no_panics(cases: impl IntoIterator<Item = (String, Vec<u8>)>) -> (usize, usize) {
    let (mut ok, mut err) = (0, 0);
    for (what, bytes) in cases {
        match catch_unwind(AssertUnwindSafe(|| full_path(&bytes))) {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                assert!(!e.to_string().is_empty());
                err += 1
            }
            Err(_) => panic!("panic on {what}"),
        }
    }
    (ok, err)
}

fn sample() -> Vec<u8> {
    helpers::corpus_files().into_iter().find(|(n, _)| n == "satie-gymnopedie-no1.mid").unwrap().1
}

#[test]
fn truncated_at_many_offsets() {
    let bytes = sample();
    let offsets = (0..bytes.len().min(300)).chain((300..bytes.len()).step_by(13));
    let cases = offsets.map(|k| (format!("truncated at {k}"), bytes[..k].to_vec()));
    let (ok, err) = no_panics(cases);
    assert!(err > 0, "the shortest prefixes cannot parse");
    assert!(ok > 0, "long prefixes keep the notes before the cut");
}

#[test]
fn bit_flips_and_byte_overwrites() {
    let bytes = sample();
    let mut rng = Rng::new(11);
    let mut cases = Vec::new();
    for i in 0..1500 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.below(4) {
            let k = rng.below(b.len());
            if i % 2 == 0 {
                b[k] ^= 1 << rng.below(8);
            } else {
                b[k] = rng.below(256) as u8;
            }
        }
        cases.push((format!("mutation {i}"), b));
    }
    // Flips concentrated in the header and first track header.
    for k in 0..30 {
        for bit in 0..8 {
            let mut b = bytes.clone();
            b[k] ^= 1 << bit;
            cases.push((format!("header byte {k} bit {bit}"), b));
        }
    }
    no_panics(cases);
}

#[test]
fn empty_and_garbage() {
    assert_eq!(read_midi(&[], &ReadOptions::default()).unwrap_err(), MidiError::Empty);
    assert!(matches!(read_midi(b"RIFF", &ReadOptions::default()), Err(MidiError::NotMidi(_))));
    assert!(matches!(read_midi(b"hello, not a midi file", &ReadOptions::default()), Err(MidiError::NotMidi(_))));
    let mut rng = Rng::new(5);
    let mut cases = Vec::new();
    for i in 0..400 {
        let n = rng.below(2000);
        let mut b: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
        if i % 2 == 0 {
            // A valid-looking header followed by garbage tracks.
            let mut h = b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xE0MTrk".to_vec();
            h.extend_from_slice(&(n as u32).to_be_bytes());
            h.append(&mut b);
            b = h;
        }
        cases.push((format!("garbage {i}"), b));
    }
    let (_, err) = no_panics(cases);
    assert!(err > 200, "garbage mostly fails ({err} errors of 400)");
    // Header only; header with 0 ticks per quarter; SMPTE with 0 subframes.
    let header_only = b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xE0".to_vec();
    assert!(read_midi(&header_only, &ReadOptions::default()).is_err());
    let zero_tpq = build(Format::Parallel, Timing::Metrical(u15::new(0)), &[vec![(0, E::On(0, 60, 90)), (10, E::Off(0, 60))]]);
    assert!(matches!(read_midi(&zero_tpq, &ReadOptions::default()), Err(MidiError::BadTiming(_))));
    let mut zero_sub = zero_tpq.clone();
    zero_sub[12] = 0xE7; // -25 fps
    zero_sub[13] = 0;
    assert!(matches!(read_midi(&zero_sub, &ReadOptions::default()), Err(MidiError::BadTiming(_))));
}

#[test]
fn huge_delta_times_and_tick_values() {
    const MAX_DELTA: u32 = (1 << 28) - 1;
    // Nine maximal deltas pass 2^31 ticks.
    let mut track = vec![(0, E::On(0, 60, 90))];
    track.extend((0..9).map(|_| (MAX_DELTA, E::Cc(0, 7, 100))));
    track.push((0, E::Off(0, 60)));
    let err = read_midi(&build1(&[track]), &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, MidiError::BadTiming(_)), "{err}");
    assert!(err.to_string().contains("2^31"), "{err}");

    // Below 2^31 ticks but absurd in quarter notes: 1 tick per quarter.
    let track = vec![(0, E::On(0, 60, 90)), (MAX_DELTA, E::Off(0, 60))];
    let bytes = build(Format::Parallel, Timing::Metrical(u15::new(1)), &[track]);
    let err = read_midi(&bytes, &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, MidiError::TooLong { .. }), "{err}");

    // Hand-written variable-length quantities: the largest 4-byte delta (0x0FFFFFFF) and a
    // malformed 5-byte one; neither may panic.
    for delta in [vec![0xFF, 0xFF, 0xFF, 0x7F], vec![0xFF, 0xFF, 0xFF, 0xFF, 0x7F]] {
        let mut trk = vec![0x00, 0x90, 60, 100];
        trk.extend_from_slice(&delta);
        trk.extend_from_slice(&[0x80, 60, 0, 0x00, 0xFF, 0x2F, 0x00]);
        let mut bytes = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x01MTrk".to_vec();
        bytes.extend_from_slice(&(trk.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&trk);
        no_panics([(format!("delta {delta:x?}"), bytes)]);
    }
    // A track chunk that claims 4 GB.
    let mut bytes = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xE0MTrk\xFF\xFF\xFF\xFF".to_vec();
    bytes.extend_from_slice(&[0x00, 0x90, 60, 100, 0x60, 0x80, 60, 0]);
    no_panics([("4 GB chunk".to_string(), bytes)]);
}
