//! Builds small MIDI files for the tests with midly's writer (used by the other `midi_*`,
//! `tokens*` tests through `#[path]`; as a test target of its own it holds no tests).
#![allow(dead_code)]

use midly::num::{u15, u24, u28, u4, u7};
use midly::{Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind};

/// One event of a hand-made track.
#[derive(Clone, Copy, Debug)]
pub enum E {
    On(u8, u8, u8),
    Off(u8, u8),
    Prog(u8, u8),
    Cc(u8, u8, u8),
    Tempo(u32),
    Name(&'static str),
    Instrument(&'static str),
    /// Time signature: numerator, denominator as a power of two.
    Meter(u8, u8),
}

/// A MIDI file from tracks of (delta, event); `EndOfTrack` is appended to each.
pub fn build(format: Format, timing: Timing, tracks: &[Vec<(u32, E)>]) -> Vec<u8> {
    let mut smf = Smf::new(Header::new(format, timing));
    for t in tracks {
        let mut events: Vec<TrackEvent> = t
            .iter()
            .map(|&(delta, e)| {
                let midi = |ch: u8, message| TrackEventKind::Midi { channel: u4::new(ch), message };
                let kind = match e {
                    E::On(ch, key, vel) => midi(ch, MidiMessage::NoteOn { key: u7::new(key), vel: u7::new(vel) }),
                    E::Off(ch, key) => midi(ch, MidiMessage::NoteOff { key: u7::new(key), vel: u7::new(0) }),
                    E::Prog(ch, p) => midi(ch, MidiMessage::ProgramChange { program: u7::new(p) }),
                    E::Cc(ch, c, v) => midi(ch, MidiMessage::Controller { controller: u7::new(c), value: u7::new(v) }),
                    E::Tempo(us) => TrackEventKind::Meta(MetaMessage::Tempo(u24::new(us))),
                    E::Name(s) => TrackEventKind::Meta(MetaMessage::TrackName(s.as_bytes())),
                    E::Instrument(s) => TrackEventKind::Meta(MetaMessage::InstrumentName(s.as_bytes())),
                    E::Meter(num, den) => TrackEventKind::Meta(MetaMessage::TimeSignature(num, den, 24, 8)),
                };
                TrackEvent { delta: u28::new(delta), kind }
            })
            .collect();
        events.push(TrackEvent { delta: u28::new(0), kind: TrackEventKind::Meta(MetaMessage::EndOfTrack) });
        smf.tracks.push(events);
    }
    let mut out = Vec::new();
    smf.write_std(&mut out).unwrap();
    out
}

/// Format 1, 480 ticks per quarter.
pub fn build1(tracks: &[Vec<(u32, E)>]) -> Vec<u8> {
    build(Format::Parallel, Timing::Metrical(u15::new(480)), tracks)
}

/// Notes given as (onset tick, pitch, length in ticks), on channel 0 of one track (format 1 with an
/// empty conductor track first).
pub fn notes_file(notes: &[(u32, u8, u32)]) -> Vec<u8> {
    let mut evs: Vec<(u32, bool, u8)> = Vec::new();
    for &(on, p, len) in notes {
        evs.push((on, true, p));
        evs.push((on + len, false, p));
    }
    // offs before ons at one tick
    evs.sort_by_key(|&(t, on, p)| (t, on, p));
    let mut track = Vec::new();
    let mut now = 0;
    for (t, on, p) in evs {
        let e = if on { E::On(0, p, 90) } else { E::Off(0, p) };
        track.push((t - now, e));
        now = t;
    }
    build1(&[vec![(0, E::Tempo(500_000))], track])
}

/// The built-in corpus files, read from `corpus/` (the same bytes the binary embeds).
pub fn corpus_files() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mid"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}
