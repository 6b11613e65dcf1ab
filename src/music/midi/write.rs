//! Notes -> a format-1 standard MIDI file, written with midly.
//!
//! Layout: track 0 holds the tempo (and a 4/4 time signature); track 1 is the piano: its name, one
//! program change on channel 0, the notes, end of track. Times come from the notes' quarter-note
//! fields (`start`, `end`), not their ticks.
//!
//! The file is made so that reading it back gives the same notes: a note shorter than one tick gets
//! one tick; of two notes of one pitch starting on the same tick only the longer is kept; a note
//! that would still sound when the same pitch starts again is cut there (MIDI cannot hold two
//! copies of one key on one channel); at any tick note-offs come before note-ons.

use super::{Note, WriteOptions};
use midly::num::{u15, u24, u28, u4, u7};
use midly::{Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind};

/// The slowest tempo a MIDI file holds (a quarter of 2^24 - 1 microseconds), in quarters per minute.
pub const MIN_BPM: f64 = 60e6 / 0xFF_FFFF as f64;
/// The fastest (a quarter of one microsecond).
pub const MAX_BPM: f64 = 60e6;

/// `--tempo` is one a MIDI file holds (a slower or faster one was clamped in the file while the
/// piece's length was reported at the tempo asked for).
pub fn check_tempo(bpm: f64) -> Result<(), String> {
    if !(MIN_BPM..=MAX_BPM).contains(&bpm) {
        return Err(format!("--tempo {bpm}: a MIDI file holds tempos from {MIN_BPM:.2} to {MAX_BPM} quarters per minute"));
    }
    Ok(())
}

/// Largest delta a MIDI event can carry (2^28 - 1).
const MAX_DELTA: u64 = (1 << 28) - 1;

/// Write `notes` as a format-1 MIDI file (see the module doc for the layout). Notes with a pitch
/// above 127, a non-finite or negative time, or `end <= start` are skipped; velocities are clamped
/// to 1..=127.
pub fn write_midi(notes: &[Note], opts: &WriteOptions) -> Vec<u8> {
    let tpq = opts.ticks_per_quarter.clamp(1, 0x7FFF);
    let tpqf = tpq as f64;

    // (pitch, start tick, end tick, velocity), cleaned as the module doc says.
    let mut ns: Vec<(u8, u64, u64, u8)> = notes
        .iter()
        .filter(|n| n.pitch <= 127 && n.start.is_finite() && n.end.is_finite() && n.start >= 0.0 && n.end > n.start)
        .map(|n| {
            let start = (n.start * tpqf).round() as u64;
            let end = ((n.end * tpqf).round() as u64).max(start + 1);
            (n.pitch, start, end, n.velocity.clamp(1, 127))
        })
        .collect();
    // Per pitch, by start; the longest first among equal starts so that it is the one kept.
    ns.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)).then(a.3.cmp(&b.3)));
    let mut cleaned: Vec<(u8, u64, u64, u8)> = Vec::with_capacity(ns.len());
    for n in ns {
        if let Some(prev) = cleaned.last_mut() {
            if prev.0 == n.0 {
                if prev.1 == n.1 {
                    continue; // same key, same onset: keep the longer (already in `prev`)
                }
                if prev.2 > n.1 {
                    prev.2 = n.1; // still sounding when struck again: cut
                }
            }
        }
        cleaned.push(n);
    }

    // (tick, 0 = off / 1 = on, pitch, velocity)
    let mut events: Vec<(u64, u8, u8, u8)> = Vec::with_capacity(cleaned.len() * 2);
    for &(pitch, start, end, vel) in &cleaned {
        events.push((start, 1, pitch, vel));
        events.push((end, 0, pitch, 0));
    }
    events.sort_unstable();

    let ch = u4::new(0);
    let mut piano: Vec<TrackEvent> = vec![
        meta(0, MetaMessage::TrackName(opts.track_name.as_bytes())),
        TrackEvent {
            delta: u28::new(0),
            kind: TrackEventKind::Midi {
                channel: ch,
                message: MidiMessage::ProgramChange { program: u7::new(opts.program.min(127)) },
            },
        },
    ];
    let mut now = 0u64;
    for (tick, kind, pitch, vel) in events {
        let mut delta = tick - now;
        now = tick;
        // A gap longer than one delta can hold is bridged with empty text events.
        while delta > MAX_DELTA {
            piano.push(meta(MAX_DELTA, MetaMessage::Text(b"")));
            delta -= MAX_DELTA;
        }
        let key = u7::new(pitch);
        let message = if kind == 1 {
            MidiMessage::NoteOn { key, vel: u7::new(vel) }
        } else {
            MidiMessage::NoteOff { key, vel: u7::new(64) }
        };
        piano.push(TrackEvent { delta: u28::new(delta as u32), kind: TrackEventKind::Midi { channel: ch, message } });
    }
    piano.push(meta(0, MetaMessage::EndOfTrack));

    let bpm = if opts.bpm.is_finite() && opts.bpm > 0.0 { opts.bpm } else { 120.0 };
    let us_per_quarter = (60e6 / bpm).round().clamp(1.0, 0xFF_FFFF as f64) as u32;
    let tempo: Vec<TrackEvent> = vec![
        meta(0, MetaMessage::TrackName(b"tempo")),
        meta(0, MetaMessage::Tempo(u24::new(us_per_quarter))),
        meta(0, MetaMessage::TimeSignature(4, 2, 24, 8)),
        meta(0, MetaMessage::EndOfTrack),
    ];

    let mut smf = Smf::new(Header::new(Format::Parallel, Timing::Metrical(u15::new(tpq))));
    smf.tracks = vec![tempo, piano];
    let mut bytes = Vec::new();
    // Writing into memory only fails past the format's limits (4 GB tracks), which no piece reaches.
    smf.write_std(&mut bytes).expect("writing a MIDI file into memory");
    bytes
}

fn meta(delta: u64, message: MetaMessage<'_>) -> TrackEvent<'_> {
    TrackEvent { delta: u28::new(delta as u32), kind: TrackEventKind::Meta(message) }
}
