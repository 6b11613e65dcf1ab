//! SMF bytes -> [`Score`]: the notes, the tracks and the tempo maps, read once.
//!
//! Steps: midly parses the chunks lazily and leniently (a malformed event ends its track, as most
//! players do; running status is handled by midly); every track's events get absolute ticks (summed
//! in `u64`, rejected past [`MAX_TICK`]); the tracks that share a clock (all of them for formats 0
//! and 1, each one alone for format 2) are merged in time order and played through a small state
//! machine per channel (program, sustain pedal) that pairs note-ons with note-offs; finally ticks
//! become quarter notes and seconds through the tempo map.
//!
//! Pairing rules: a note-on with velocity 0 is a note-off; a note-on of a key that is already
//! sounding in the same track and channel ends the sounding note there; a note-off without a
//! sounding note is ignored; notes still open at the end of their track end at the track's last
//! event; notes of zero length are dropped. Channel index 9 (drums) is never read.

use super::tempo::{Division, TempoMap};
use super::{MidiError, Note, Pedal, ReadOptions, Score, SmfFormat, TrackInfo, MAX_QUARTERS, MAX_TICK};
use midly::{Format, MetaMessage, MidiMessage, Timing, TrackEventKind};
use std::collections::HashMap;

const DRUM_CHANNEL: u8 = 9;

/// The hasher of the open-note table, keyed by small integers (track, channel, key): one multiply
/// per word (SipHash, the default, cost more than all the rest of the pairing). The table's
/// iteration order, the only thing a hasher could change, is never relied on: the notes are
/// sorted at the end.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u8(&mut self, x: u8) {
        self.write_u64(x as u64);
    }
    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64);
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x517C_C1B7_2722_0A95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// One event of interest, with everything else dropped.
#[derive(Clone, Debug)]
enum Ev {
    NoteOn { ch: u8, key: u8, vel: u8 },
    NoteOff { ch: u8, key: u8 },
    Program { ch: u8, program: u8 },
    Pedal { ch: u8, down: bool },
    Tempo(u32),
}

/// A track after the first pass: events with absolute ticks.
struct RawTrack {
    events: Vec<(u64, Ev)>,
    end_tick: u64,
    info: TrackInfo,
    /// Notes of a kept part dropped for having zero length.
    zero_length: usize,
    /// The track's first time signature with a numerator above 0 and a denominator up to 2^7.
    time_signature: Option<(u8, u8)>,
}

/// Parse a MIDI file and keep its piano parts (or every pitched part with
/// [`ReadOptions::all_parts`]).
///
/// A part is piano when its program at the note's onset is a GM piano (programs 0-7, and no program
/// change at all counts as program 0) or its track's name or instrument name contains "piano"
/// (any case). Errors name the cause; no input makes this panic.
pub fn read_midi(bytes: &[u8], opts: &ReadOptions) -> Result<Score, MidiError> {
    if bytes.is_empty() {
        return Err(MidiError::Empty);
    }
    // midly negates the SMPTE frame rate as an i8: -128 (0x80) overflows, a panic in builds with
    // overflow checks (found by tests/fuzz.rs). No frame rate is 128: refuse it before parsing.
    let header_at = if bytes.starts_with(b"RIFF") { bytes.windows(4).position(|w| w == b"MThd") } else { Some(0) };
    if let Some(at) = header_at {
        if bytes.get(at..at + 4) == Some(b"MThd") && bytes.get(at + 12) == Some(&0x80) {
            return Err(MidiError::BadTiming("SMPTE division of -128 frames per second".into()));
        }
    }
    let (header, tracks) = midly::parse(bytes).map_err(|e| MidiError::NotMidi(e.to_string()))?;
    let division = match header.timing {
        Timing::Metrical(tpq) => {
            let tpq = tpq.as_int();
            if tpq == 0 {
                return Err(MidiError::BadTiming("0 ticks per quarter note".into()));
            }
            Division::Metrical(tpq as f64)
        }
        Timing::Timecode(fps, subframes) => {
            if subframes == 0 {
                return Err(MidiError::BadTiming("SMPTE division with 0 ticks per frame".into()));
            }
            Division::Timecode(fps.as_f32() as f64 * subframes as f64)
        }
    };
    let format = match header.format {
        Format::SingleTrack => SmfFormat::SingleTrack,
        Format::Parallel => SmfFormat::Parallel,
        Format::Sequential => SmfFormat::Sequential,
    };

    let mut raw_tracks = Vec::new();
    for (index, track) in tracks.enumerate() {
        let track = track.map_err(|e| MidiError::Malformed(format!("track {index}: {e}")))?;
        raw_tracks.push(first_pass(index, track)?);
    }
    if raw_tracks.is_empty() {
        return Err(MidiError::Malformed("no track chunks".into()));
    }

    // Tracks that share a clock.
    let timelines: Vec<Vec<usize>> = match format {
        SmfFormat::Sequential => (0..raw_tracks.len()).map(|i| vec![i]).collect(),
        _ => vec![(0..raw_tracks.len()).collect()],
    };

    let mut notes = Vec::new();
    let mut pedals = Vec::new();
    let mut tempo = Vec::with_capacity(timelines.len());
    let mut duration_quarters: f64 = 0.0;
    let mut duration_seconds: f64 = 0.0;
    for members in &timelines {
        let tempos = members
            .iter()
            .flat_map(|&t| raw_tracks[t].events.iter())
            .filter_map(|(tick, ev)| match ev {
                Ev::Tempo(us) => Some((*tick, *us)),
                _ => None,
            })
            .collect();
        let map = TempoMap::new(division, tempos);
        let end_tick = members.iter().map(|&t| raw_tracks[t].end_tick).max().unwrap_or(0);
        let (q, s) = map.at(end_tick);
        if !(q.is_finite() && s.is_finite()) || q > MAX_QUARTERS {
            return Err(MidiError::TooLong { quarters: if q.is_finite() { q as u64 } else { u64::MAX } });
        }
        duration_quarters = duration_quarters.max(q);
        duration_seconds = duration_seconds.max(s);
        play(&mut raw_tracks, members, end_tick, opts, &map, &mut notes, &mut pedals);
        tempo.push(map);
    }

    let pitched: usize = raw_tracks.iter().map(|t| t.info.notes).sum();
    let zero_length: usize = raw_tracks.iter().map(|t| t.zero_length).sum();
    if notes.is_empty() {
        return Err(if pitched == 0 {
            MidiError::NoNotes
        } else if zero_length > 0 {
            MidiError::ZeroLength { notes: zero_length }
        } else {
            MidiError::NoPianoPart { pitched_notes: pitched }
        });
    }
    notes.sort_by(|a: &Note, b: &Note| {
        a.start
            .total_cmp(&b.start)
            .then(a.pitch.cmp(&b.pitch))
            .then(a.end.total_cmp(&b.end))
            .then(a.track.cmp(&b.track))
            .then(a.channel.cmp(&b.channel))
            .then(a.velocity.cmp(&b.velocity))
            .then(a.program.cmp(&b.program))
    });
    let ticks_per_quarter = match header.timing {
        Timing::Metrical(tpq) => Some(tpq.as_int()),
        Timing::Timecode(..) => None,
    };
    let time_signature = raw_tracks.iter().find_map(|t| t.time_signature);
    Ok(Score {
        format,
        ticks_per_quarter,
        tempo,
        time_signature,
        tracks: raw_tracks.into_iter().map(|t| t.info).collect(),
        notes,
        pedals,
        duration_quarters,
        duration_seconds,
    })
}

/// Absolute ticks, names, programs; the events the second pass needs.
fn first_pass(index: usize, track: midly::EventIter<'_>) -> Result<RawTrack, MidiError> {
    let mut info = TrackInfo { index, ..TrackInfo::default() };
    let mut events = Vec::new();
    let mut tick: u64 = 0;
    let mut channels = [false; 16];
    let mut time_signature = None;
    for event in track {
        let event = event.map_err(|e| MidiError::Malformed(format!("track {index}: {e}")))?;
        tick += event.delta.as_int() as u64; // a u28 added to a value <= 2^31: no overflow
        if tick > MAX_TICK {
            return Err(MidiError::BadTiming(format!("track {index}: tick {tick} is beyond 2^31")));
        }
        match event.kind {
            TrackEventKind::Midi { channel, message } => {
                let ch = channel.as_int();
                let ev = match message {
                    MidiMessage::NoteOn { key, vel } if vel.as_int() > 0 => {
                        channels[ch as usize] = true;
                        if ch == DRUM_CHANNEL {
                            info.drum_notes += 1;
                            None
                        } else {
                            info.notes += 1;
                            Some(Ev::NoteOn { ch, key: key.as_int(), vel: vel.as_int() })
                        }
                    }
                    MidiMessage::NoteOn { key, .. } | MidiMessage::NoteOff { key, .. } => {
                        Some(Ev::NoteOff { ch, key: key.as_int() })
                    }
                    MidiMessage::ProgramChange { program } => {
                        let program = program.as_int();
                        if ch != DRUM_CHANNEL && !info.programs.contains(&program) {
                            info.programs.push(program);
                        }
                        Some(Ev::Program { ch, program })
                    }
                    MidiMessage::Controller { controller, value } if controller.as_int() == 64 => {
                        Some(Ev::Pedal { ch, down: value.as_int() >= 64 })
                    }
                    _ => None,
                };
                if let Some(ev) = ev {
                    if ch != DRUM_CHANNEL {
                        events.push((tick, ev));
                    }
                }
            }
            TrackEventKind::Meta(MetaMessage::Tempo(us)) => events.push((tick, Ev::Tempo(us.as_int()))),
            TrackEventKind::Meta(MetaMessage::TimeSignature(num, den, _, _)) if time_signature.is_none() && num > 0 && den < 8 => {
                time_signature = Some((num, den));
            }
            TrackEventKind::Meta(MetaMessage::TrackName(name)) if info.name.is_none() => {
                info.name = Some(String::from_utf8_lossy(name).trim().to_string());
            }
            TrackEventKind::Meta(MetaMessage::InstrumentName(name)) if info.instrument.is_none() => {
                info.instrument = Some(String::from_utf8_lossy(name).trim().to_string());
            }
            _ => {}
        }
    }
    info.channels = (0..16u8).filter(|&c| channels[c as usize]).collect();
    let has_piano = |s: &Option<String>| s.as_deref().is_some_and(|s| s.to_lowercase().contains("piano"));
    info.named_piano = has_piano(&info.name) || has_piano(&info.instrument);
    Ok(RawTrack { events, end_tick: tick, info, zero_length: 0, time_signature })
}

/// A note that has started and not yet been written out.
#[derive(Clone, Copy)]
struct Open {
    track: usize,
    ch: u8,
    key: u8,
    vel: u8,
    program: u8,
    start_tick: u64,
}

/// Second pass over one timeline: merge the tracks in time order and pair note events.
fn play(
    tracks: &mut [RawTrack],
    members: &[usize],
    timeline_end: u64,
    opts: &ReadOptions,
    map: &TempoMap,
    out: &mut Vec<Note>,
    pedals: &mut Vec<Pedal>,
) {
    // (tick, track, position in track): a total order that keeps each track's own order. Each
    // track's events are in tick order already, so a stable sort by tick of the tracks laid end
    // to end in track order gives it, merging the runs (a sort of the triples compared them all).
    let mut by_track = members.to_vec();
    by_track.sort_unstable();
    let mut order: Vec<(u64, usize, usize)> = by_track
        .iter()
        .flat_map(|&t| tracks[t].events.iter().enumerate().map(move |(i, (tick, _))| (*tick, t, i)))
        .collect();
    order.sort_by_key(|&(tick, _, _)| tick);

    let mut program = [0u8; 16];
    let mut pedal = [false; 16];
    let mut open: HashMap<(usize, u8, u8), Open, std::hash::BuildHasherDefault<KeyHasher>> = HashMap::default();
    let mut sustained: Vec<Vec<Open>> = vec![Vec::new(); 16];
    let mut finished: Vec<(Open, u64)> = Vec::new();

    for (tick, t, i) in order {
        match tracks[t].events[i].1 {
            Ev::NoteOn { ch, key, vel } => {
                // Striking a key again ends its pedal-held copy, and its still-held copy in this track.
                let held = &mut sustained[ch as usize];
                let mut k = 0;
                while k < held.len() {
                    if held[k].key == key {
                        finished.push((held.swap_remove(k), tick));
                    } else {
                        k += 1;
                    }
                }
                let note = Open { track: t, ch, key, vel, program: program[ch as usize], start_tick: tick };
                if let Some(prev) = open.insert((t, ch, key), note) {
                    finished.push((prev, tick));
                }
            }
            Ev::NoteOff { ch, key } => {
                if let Some(note) = open.remove(&(t, ch, key)) {
                    if opts.sustain && pedal[ch as usize] {
                        sustained[ch as usize].push(note);
                    } else {
                        finished.push((note, tick));
                    }
                }
            }
            Ev::Program { ch, program: p } => program[ch as usize] = p,
            Ev::Pedal { ch, down } => {
                pedals.push(Pedal { tick, channel: ch, down, track: t });
                if !opts.sustain {
                    continue;
                }
                pedal[ch as usize] = down;
                if !down {
                    finished.extend(sustained[ch as usize].drain(..).map(|n| (n, tick)));
                }
            }
            Ev::Tempo(_) => {}
        }
    }
    finished.extend(open.into_values().map(|n| (n, tracks[n.track].end_tick)));
    finished.extend(sustained.into_iter().flatten().map(|n| (n, timeline_end)));

    for (n, end_tick) in finished {
        let track = &mut tracks[n.track];
        let info = &mut track.info;
        if !(opts.all_parts || n.program <= 7 || info.named_piano) {
            continue;
        }
        if end_tick <= n.start_tick {
            track.zero_length += 1;
            continue;
        }
        info.kept_notes += 1;
        let (start, _) = map.at(n.start_tick);
        let (end, _) = map.at(end_tick);
        out.push(Note {
            pitch: n.key,
            velocity: n.vel,
            start_tick: n.start_tick,
            end_tick,
            start,
            end,
            program: n.program,
            channel: n.ch,
            track: n.track,
        });
    }
}
