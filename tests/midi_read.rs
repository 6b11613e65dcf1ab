//! MIDI reading rules on hand-made files, and writing + reading back.

#[path = "midi_helpers.rs"]
mod helpers;

use etude::music::midi::{read_midi, write_midi, MidiError, Note, ReadOptions, SmfFormat, WriteOptions};
use helpers::{build, build1, E};
use midly::num::u15;
use midly::{Format, Fps, Timing};

fn read(bytes: &[u8]) -> Vec<(u8, u64, u64)> {
    read_midi(bytes, &ReadOptions::default()).unwrap().notes.iter().map(|n| (n.pitch, n.start_tick, n.end_tick)).collect()
}

#[test]
fn pairs_note_on_and_off_with_the_rules() {
    let track = vec![
        (0, E::On(0, 60, 100)),
        (240, E::On(0, 60, 0)), // velocity 0 = off
        (0, E::On(0, 62, 90)),
        (240, E::On(0, 62, 80)), // repeated note-on ends the sounding 62 at 480
        (240, E::Off(0, 62)),    // ends the second 62 at 720
        (0, E::Off(0, 64)),      // off without on: ignored
        (0, E::On(1, 67, 70)),   // left open: ends at the end of the track (960)
        (240, E::On(0, 65, 70)),
        (0, E::Off(0, 65)),      // zero length: dropped
    ];
    let bytes = build1(&[track]);
    assert_eq!(read(&bytes), vec![(60, 0, 240), (62, 240, 480), (62, 480, 720), (67, 720, 960)]);
    let piece = read_midi(&bytes, &ReadOptions::default()).unwrap();
    assert_eq!(piece.format, SmfFormat::Parallel);
    assert_eq!(piece.notes[1].velocity, 90);
    assert_eq!(piece.notes[2].velocity, 80);
    assert_eq!(piece.notes[3].channel, 1);
    assert_eq!(piece.notes[0].start, 0.0);
    assert_eq!(piece.notes[0].end, 0.5, "240 ticks at 480 per quarter");
}

#[test]
fn drums_are_left_out_and_piano_parts_chosen_by_program_or_name() {
    let tracks = vec![
        vec![(0, E::Name("Piano right")), (0, E::Prog(1, 40)), (0, E::On(1, 72, 90)), (480, E::Off(1, 72))],
        vec![(0, E::Name("strings")), (0, E::Prog(2, 48)), (0, E::On(2, 55, 90)), (480, E::Off(2, 55))],
        vec![(0, E::Name("grand")), (0, E::Prog(3, 1)), (0, E::On(3, 48, 90)), (480, E::Off(3, 48))],
        vec![(0, E::Name("drums")), (0, E::On(9, 36, 90)), (480, E::Off(9, 36))],
        vec![(0, E::Instrument("Acoustic PIANO")), (0, E::Prog(4, 33)), (0, E::On(4, 40, 90)), (480, E::Off(4, 40))],
        vec![(0, E::On(5, 80, 90)), (480, E::Off(5, 80))], // no program change: program 0
    ];
    let bytes = build1(&tracks);
    let piece = read_midi(&bytes, &ReadOptions::default()).unwrap();
    let pitches: Vec<u8> = piece.notes.iter().map(|n| n.pitch).collect();
    assert_eq!(pitches, vec![40, 48, 72, 80], "named piano (72), program 1 (48), instrument piano (40), program 0 (80)");
    assert_eq!(piece.tracks[3].drum_notes, 1);
    assert_eq!(piece.tracks[3].notes, 0);
    assert_eq!(piece.tracks[1].kept_notes, 0);
    assert_eq!(piece.tracks[0].name.as_deref(), Some("Piano right"));
    assert!(piece.tracks[4].named_piano);
    assert_eq!(piece.tracks[2].programs, vec![1]);

    let all = read_midi(&bytes, &ReadOptions { all_parts: true, sustain: false }).unwrap();
    let pitches: Vec<u8> = all.notes.iter().map(|n| n.pitch).collect();
    assert_eq!(pitches, vec![40, 48, 55, 72, 80], "every pitched part, still no drums");

    let strings_only = build1(&[tracks[1].clone(), tracks[3].clone()]);
    assert_eq!(
        read_midi(&strings_only, &ReadOptions::default()).unwrap_err(),
        MidiError::NoPianoPart { pitched_notes: 1 }
    );
    let drums_only = build1(&[tracks[3].clone()]);
    assert_eq!(read_midi(&drums_only, &ReadOptions::default()).unwrap_err(), MidiError::NoNotes);
}

#[test]
fn program_changes_apply_from_where_they_happen_across_tracks() {
    // Conductor track sets channel 0 to strings after one quarter; the notes are in track 1.
    let tracks = vec![
        vec![(480, E::Prog(0, 48))],
        vec![(0, E::On(0, 60, 90)), (240, E::Off(0, 60)), (480, E::On(0, 62, 90)), (240, E::Off(0, 62))],
    ];
    let piece = read_midi(&build1(&tracks), &ReadOptions::default()).unwrap();
    assert_eq!(piece.notes.len(), 1);
    assert_eq!((piece.notes[0].pitch, piece.notes[0].program, piece.notes[0].track), (60, 0, 1));
    let all = read_midi(&build1(&tracks), &ReadOptions { all_parts: true, sustain: false }).unwrap();
    assert_eq!(all.notes[1].program, 48);
}

#[test]
fn sustain_pedal_holds_notes_until_release_or_restrike() {
    let track = vec![
        (0, E::Cc(0, 64, 127)),
        (0, E::On(0, 60, 90)),
        (100, E::Off(0, 60)),   // held by the pedal
        (0, E::On(0, 64, 90)),
        (100, E::Off(0, 64)),   // held
        (100, E::On(0, 60, 90)), // restrike ends the held 60 at 300
        (50, E::Off(0, 60)),     // held again
        (50, E::Cc(0, 64, 0)),   // release at 400 ends 64 and the second 60
        (0, E::On(0, 67, 90)),
        (80, E::Off(0, 67)),     // pedal up: ends now
    ];
    let bytes = build1(&[track]);
    assert_eq!(read(&bytes), vec![(60, 0, 100), (64, 100, 200), (60, 300, 350), (67, 400, 480)]);
    let held = read_midi(&bytes, &ReadOptions { all_parts: false, sustain: true }).unwrap();
    let got: Vec<(u8, u64, u64)> = held.notes.iter().map(|n| (n.pitch, n.start_tick, n.end_tick)).collect();
    assert_eq!(got, vec![(60, 0, 300), (64, 100, 400), (60, 300, 400), (67, 400, 480)]);
}

#[test]
fn tempo_map_gives_seconds_and_smpte_division_is_handled() {
    // 480 tpq; 120 bpm for 2 quarters, then 60 bpm.
    let tracks = vec![
        vec![(0, E::Tempo(500_000)), (960, E::Tempo(1_000_000))],
        vec![(0, E::On(0, 60, 90)), (1920, E::Off(0, 60))],
    ];
    let piece = read_midi(&build1(&tracks), &ReadOptions::default()).unwrap();
    assert_eq!(piece.notes[0].end, 4.0);
    // 2 quarters at 0.5 s + 2 quarters at 1 s. Exact binary fractions: compare with a tiny
    // tolerance only for the float sum.
    assert!((piece.duration_seconds - 3.0).abs() < 1e-12, "{}", piece.duration_seconds);
    assert_eq!(piece.duration_quarters, 4.0);

    // SMPTE: 25 fps x 40 subframes = 1000 ticks per second; default tempo 120 bpm = 2 quarters/s,
    // then 60 bpm from 1 s.
    let smpte = build(
        Format::SingleTrack,
        Timing::Timecode(Fps::Fps25, 40),
        &[vec![(0, E::On(0, 60, 90)), (1000, E::Tempo(1_000_000)), (0, E::Off(0, 60)), (0, E::On(0, 62, 90)), (2000, E::Off(0, 62))]],
    );
    let piece = read_midi(&smpte, &ReadOptions::default()).unwrap();
    assert_eq!(piece.ticks_per_quarter, None);
    let got: Vec<(u8, f64, f64)> = piece.notes.iter().map(|n| (n.pitch, n.start, n.end)).collect();
    assert_eq!(got, vec![(60, 0.0, 2.0), (62, 2.0, 4.0)]);
    assert_eq!(piece.duration_seconds, 3.0);
}

#[test]
fn format_2_tracks_are_separate_sequences() {
    let tracks = vec![
        vec![(0, E::Tempo(1_000_000)), (0, E::On(0, 60, 90)), (480, E::Off(0, 60))],
        vec![(0, E::On(0, 62, 90)), (480, E::Off(0, 62))],
    ];
    let bytes = build(Format::Sequential, Timing::Metrical(u15::new(480)), &tracks);
    let piece = read_midi(&bytes, &ReadOptions::default()).unwrap();
    assert_eq!(piece.format, SmfFormat::Sequential);
    assert_eq!(piece.notes.len(), 2);
    assert!(piece.notes.iter().all(|n| n.start == 0.0 && n.end == 1.0));
    // Track 0 runs at 60 bpm, track 1 at the default 120: the longer one sets the length.
    assert_eq!(piece.duration_seconds, 1.0);
}

#[test]
fn format_0_single_track_with_running_status_reads() {
    // Hand-written bytes: format 0, 96 tpq, note-on C4, then running status note-on E4 and two
    // velocity-0 offs, all with running status.
    let mut trk = vec![0x00, 0x90, 60, 100, 0x00, 64, 100, 0x60, 60, 0, 0x00, 64, 0, 0x00, 0xFF, 0x2F, 0x00];
    let mut bytes = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk".to_vec();
    bytes.extend_from_slice(&(trk.len() as u32).to_be_bytes());
    bytes.append(&mut trk);
    let piece = read_midi(&bytes, &ReadOptions::default()).unwrap();
    assert_eq!(piece.format, SmfFormat::SingleTrack);
    let got: Vec<(u8, f64, f64)> = piece.notes.iter().map(|n| (n.pitch, n.start, n.end)).collect();
    assert_eq!(got, vec![(60, 0.0, 1.0), (64, 0.0, 1.0)]);
}

#[test]
fn written_files_read_back_to_the_same_notes() {
    let notes = vec![
        Note::new(60, 0.0, 1.0, 100),
        Note::new(64, 0.0, 0.5, 90),
        Note::new(60, 1.0, 1.5, 80), // same pitch right after: off before on
        Note::new(72, 0.25, 3.0, 127),
        Note::new(48, 1000.0, 1001.0, 1),
    ];
    let opts = WriteOptions { bpm: 90.0, track_name: "test piano".into(), ..WriteOptions::default() };
    let bytes = write_midi(&notes, &opts);
    let smf = midly::Smf::parse(&bytes).expect("midly reads what we wrote");
    assert_eq!(smf.tracks.len(), 2);
    assert_eq!(smf.header.format, Format::Parallel);
    let piece = read_midi(&bytes, &ReadOptions::default()).unwrap();
    assert_eq!(piece.tracks[1].name.as_deref(), Some("test piano"));
    assert_eq!(piece.tracks[1].programs, vec![0]);
    let mut want: Vec<(u8, f64, f64, u8)> = notes.iter().map(|n| (n.pitch, n.start, n.end, n.velocity)).collect();
    want.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let got: Vec<(u8, f64, f64, u8)> = piece.notes.iter().map(|n| (n.pitch, n.start, n.end, n.velocity)).collect();
    assert_eq!(got, want);
    // 1001 quarters at 90 bpm; the file stores the tempo in whole microseconds per quarter, so
    // each quarter may be off by up to 0.5 us.
    assert!((piece.duration_seconds - 1001.0 * 60.0 / 90.0).abs() <= 1001.0 * 0.5e-6);

    // Overlapping copies of one key are cut so that the file reads back unambiguously.
    let overlapping = vec![Note::new(60, 0.0, 2.0, 90), Note::new(60, 1.0, 3.0, 90), Note::new(60, 1.0, 1.5, 90)];
    let back = read_midi(&write_midi(&overlapping, &WriteOptions::default()), &ReadOptions::default()).unwrap();
    let got: Vec<(f64, f64)> = back.notes.iter().map(|n| (n.start, n.end)).collect();
    assert_eq!(got, vec![(0.0, 1.0), (1.0, 3.0)]);
}

#[test]
fn the_score_carries_its_tempo_maps_and_meter_which_render_and_the_picture_take() {
    use etude::music::picture::{meter_of, Meter};
    use etude::music::render::play_notes;
    // Format 1, 480 tpq: 120 bpm, 60 bpm from quarter 2; a 0/4 (passed over), then 3/4 in track 1.
    let tracks = vec![
        vec![(0, E::Tempo(500_000)), (960, E::Tempo(1_000_000))],
        vec![(0, E::Meter(0, 2)), (0, E::Meter(3, 2)), (0, E::On(0, 60, 90)), (1920, E::Off(0, 60)), (0, E::Meter(6, 3))],
    ];
    let score = read_midi(&build1(&tracks), &ReadOptions::default()).unwrap();
    assert_eq!(score.tempo.len(), 1);
    assert_eq!(score.time_signature, Some((3, 2)));
    assert_eq!(meter_of(&score), Meter { beat: 1.0, bar: 3.0 });
    let (start, end) = score.seconds(&score.notes[0]);
    assert_eq!(start, 0.0);
    assert!((end - 3.0).abs() < 1e-12, "{end}");
    // Render plays the score's seconds, and the file's length is the same map's.
    let play = play_notes(&score);
    assert_eq!((play[0].start, play[0].end), (start, end));
    assert_eq!(score.duration_seconds, end);

    // Format 2: each track keeps its own tempo map (track 0 at 60 bpm, track 1 at the default 120),
    // and a file without a time signature is in 4/4.
    let tracks = vec![
        vec![(0, E::Tempo(1_000_000)), (0, E::On(0, 60, 90)), (480, E::Off(0, 60))],
        vec![(0, E::On(0, 62, 90)), (480, E::Off(0, 62))],
    ];
    let score = read_midi(&build(Format::Sequential, Timing::Metrical(u15::new(480)), &tracks), &ReadOptions::default()).unwrap();
    assert_eq!(score.tempo.len(), 2);
    assert_eq!(meter_of(&score), Meter::default());
    let seconds: Vec<(u8, f64, f64)> = play_notes(&score).iter().map(|n| (n.pitch, n.start, n.end)).collect();
    assert_eq!(seconds, vec![(60, 0.0, 1.0), (62, 0.0, 0.5)]);
}
