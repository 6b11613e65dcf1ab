//! The bundled piano (`assets/piano/etude-piano.sf2`, embedded as `PIANO_SF2`): it loads and is the
//! default voice; it is FluidR3_GM's preset 0 alone, rebuilt byte for byte from Debian's
//! `fluid-soundfont-gm` and sounding exactly as that preset does in the whole font; a C major scale
//! rendered from MIDI starts where the MIDI says (onsets within 10 ms); velocities and the sustain
//! pedal of the MIDI reach the synthesizer.
//!
//! The source font is `ETUDE_FLUID_SF2`, else `/usr/share/sounds/sf2/FluidR3_GM.sf2`;
//! `scripts/test.sh` installs Debian's `fluid-soundfont-gm` where it is missing. Without it the
//! tests that need it fail saying so (they never skip).

use etude::music::midi::{write_midi, Note, WriteOptions};
use etude::music::render::{bundled_piano, find_voice_in, render, render_file, PlayNote, PlayPedal, Voice, PIANO_SF2};
use etude::music::sf2::piano_from_fluid;
use midly::num::{u28, u4, u7};
use midly::{Format, Header, MidiMessage, Smf, Timing, Track, TrackEvent, TrackEventKind};
use std::path::{Path, PathBuf};

const RATE: u32 = 44_100;

fn fluid_path() -> PathBuf {
    let p = std::env::var_os("ETUDE_FLUID_SF2").filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or_else(|| "/usr/share/sounds/sf2/FluidR3_GM.sf2".into());
    assert!(
        p.is_file(),
        "{}: FluidR3_GM.sf2 is missing; install Debian's fluid-soundfont-gm (scripts/test.sh does it where it is missing) \
         or set ETUDE_FLUID_SF2 to the file",
        p.display()
    );
    p
}

#[test]
fn the_bundled_piano_is_fluid_preset_0_rebuilt_byte_for_byte() {
    let fluid = std::fs::read(fluid_path()).unwrap();
    let (rebuilt, kept) = piano_from_fluid(&fluid).unwrap();
    assert_eq!(kept.preset_name, "Yamaha Grand Piano");
    assert_eq!(kept.instruments, 1);
    assert!(rebuilt == PIANO_SF2, "the rebuild ({} bytes) differs from the bundled font ({} bytes): run scripts/piano-font.sh", rebuilt.len(), PIANO_SF2.len());
    let on_disk = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/piano/etude-piano.sf2")).unwrap();
    assert!(on_disk == PIANO_SF2, "the embedded font is not the committed file");
    // At most 20 MB, one preset: bank 0, program 0.
    assert!(PIANO_SF2.len() <= 20 << 20);
    let font = bundled_piano();
    let presets = font.get_presets();
    assert_eq!(presets.len(), 1);
    assert_eq!((presets[0].get_bank_number(), presets[0].get_patch_number()), (0, 0));
}

#[test]
fn the_bundled_piano_sounds_exactly_as_preset_0_of_the_whole_font() {
    let whole = etude::music::render::load_soundfont(&fluid_path()).unwrap();
    let notes = scale_notes();
    let play: Vec<PlayNote> = notes.iter().map(|n| PlayNote { start: n.start * 0.5, end: n.end * 0.5, pitch: n.pitch, velocity: n.velocity, channel: 0, program: 0 }).collect();
    let pedals = [PlayPedal { time: 0.2, channel: 0, down: true }, PlayPedal { time: 1.3, channel: 0, down: false }];
    let a = render(&play, &pedals, &Voice::SoundFont { name: "whole".into(), font: whole }, RATE).unwrap();
    let b = render(&play, &pedals, &Voice::piano(), RATE).unwrap();
    assert_eq!(a.left.len(), b.left.len());
    assert!(a.left == b.left && a.right == b.right, "the bundled piano sounds unlike FluidR3_GM's preset 0");
}

/// C4 D4 E4 F4 G4 A4 B4 C5, eighth notes (0.25 s at 120 bpm) every quarter from quarter 1.
fn scale_notes() -> Vec<Note> {
    [60u8, 62, 64, 65, 67, 69, 71, 72].iter().enumerate().map(|(k, &p)| Note::new(p, 1.0 + k as f64, 1.5 + k as f64, 90)).collect()
}

/// Left channel of a 16-bit stereo WAV, as floats.
fn read_left(path: &Path) -> Vec<f32> {
    let mut r = hound::WavReader::open(path).unwrap();
    assert_eq!(r.spec().sample_rate, RATE);
    let s: Vec<i16> = r.samples::<i16>().map(|x| x.unwrap()).collect();
    s.chunks(2).map(|c| c[0] as f32 / 32768.0).collect()
}

/// Onsets in seconds: where the energy of 2 ms blocks jumps to more than 8 times the most of the
/// 20 ms before it (and is not negligible), refined to the first sample of that block louder than a
/// tenth of the block's peak; at most one onset per 100 ms.
fn onsets(x: &[f32]) -> Vec<f64> {
    let hop = (RATE as usize) / 500;
    let energy: Vec<f32> = x.chunks(hop).map(|c| c.iter().map(|v| v * v).sum::<f32>()).collect();
    let loudest = energy.iter().cloned().fold(0.0f32, f32::max);
    let mut out = Vec::new();
    let mut last = -1.0f64;
    for i in 10..energy.len() {
        let before = energy[i - 10..i].iter().cloned().fold(0.0f32, f32::max);
        let t = (i * hop) as f64 / RATE as f64;
        if energy[i] > 8.0 * before.max(1e-9) && energy[i] > 1e-4 * loudest && t - last > 0.1 {
            let block = &x[i * hop..((i + 1) * hop).min(x.len())];
            let peak = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let first = block.iter().position(|v| v.abs() >= 0.1 * peak).unwrap_or(0);
            let t = (i * hop + first) as f64 / RATE as f64;
            out.push(t);
            last = t;
        }
    }
    out
}

#[test]
fn a_c_major_scale_starts_where_the_midi_says() {
    let dir = tempfile::tempdir().unwrap();
    let mid = dir.path().join("scale.mid");
    std::fs::write(&mid, write_midi(&scale_notes(), &WriteOptions::default())).unwrap();
    let chosen = find_voice_in(None, None).unwrap();
    assert!(chosen.description.contains("bundled piano"), "{}", chosen.description);
    let wav = dir.path().join("scale.wav");
    render_file(&mid, &wav, &chosen.voice, RATE).unwrap();
    let x = read_left(&wav);
    let found = onsets(&x);
    let expected: Vec<f64> = (0..8).map(|k| 0.5 * (1.0 + k as f64)).collect();
    assert_eq!(found.len(), expected.len(), "onsets found at {found:?}, expected {expected:?}");
    for (f, e) in found.iter().zip(&expected) {
        assert!((f - e).abs() <= 0.010, "an onset at {f:.4} s, expected {e:.4} s (all: {found:?})");
    }
    // Silence before the first note; sound after the last one's release (the font's release).
    assert!(x[..(0.45 * RATE as f64) as usize].iter().all(|v| v.abs() < 1e-3));
    let end = (4.25 * RATE as f64) as usize;
    assert!(x[end..end + RATE as usize / 20].iter().any(|v| v.abs() > 1e-3), "no release after the last note");
}

/// A MIDI file at 480 ticks per quarter, 120 bpm (no tempo event), with `events` (tick, message)
/// on channel 0 of one track.
fn midi_with(events: &[(u32, MidiMessage)]) -> Vec<u8> {
    let mut evs: Vec<(u32, MidiMessage)> = events.to_vec();
    evs.sort_by_key(|e| e.0);
    let mut track: Track = Vec::new();
    let mut now = 0;
    for (t, m) in evs {
        track.push(TrackEvent { delta: u28::new(t - now), kind: TrackEventKind::Midi { channel: u4::new(0), message: m } });
        now = t;
    }
    track.push(TrackEvent { delta: u28::new(0), kind: TrackEventKind::Meta(midly::MetaMessage::EndOfTrack) });
    let smf = Smf { header: Header { format: Format::SingleTrack, timing: Timing::Metrical(480.into()) }, tracks: vec![track] };
    let mut out = Vec::new();
    smf.write_std(&mut out).unwrap();
    out
}

fn on(key: u8, vel: u8) -> MidiMessage {
    MidiMessage::NoteOn { key: u7::new(key), vel: u7::new(vel) }
}

fn off(key: u8) -> MidiMessage {
    MidiMessage::NoteOff { key: u7::new(key), vel: u7::new(0) }
}

fn pedal(down: bool) -> MidiMessage {
    MidiMessage::Controller { controller: u7::new(64), value: u7::new(if down { 127 } else { 0 }) }
}

fn rendered(dir: &Path, name: &str, bytes: &[u8]) -> Vec<f32> {
    let mid = dir.join(format!("{name}.mid"));
    std::fs::write(&mid, bytes).unwrap();
    let wav = dir.join(format!("{name}.wav"));
    render_file(&mid, &wav, &Voice::piano(), RATE).unwrap();
    read_left(&wav)
}

fn peak_in(x: &[f32], from: f64, to: f64) -> f32 {
    let (a, b) = ((from * RATE as f64) as usize, ((to * RATE as f64) as usize).min(x.len()));
    x[a..b].iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

#[test]
fn velocities_and_the_sustain_pedal_reach_the_synthesizer() {
    let dir = tempfile::tempdir().unwrap();
    // Soft then loud, the same key: the loud one is louder (one piece, one normalisation).
    let x = rendered(dir.path(), "dynamics", &midi_with(&[(0, on(60, 30)), (480, off(60)), (960, on(60, 120)), (1440, off(60))]));
    let (soft, loud) = (peak_in(&x, 0.0, 0.5), peak_in(&x, 1.0, 1.5));
    assert!(loud > 2.0 * soft, "velocity 120 peaks at {loud}, velocity 30 at {soft}");
    // A key released at 0.25 s: with the pedal down from 0.1 s to 2 s it rings on until 2 s;
    // without, it has died away by 1 s. Both files' notes are the same; only the pedal differs.
    let notes = [(0, on(48, 100)), (240, off(48)), (2400, on(84, 100)), (2640, off(84))];
    let dry = rendered(dir.path(), "dry", &midi_with(&notes));
    let mut with = notes.to_vec();
    with.extend([(96, pedal(true)), (1920, pedal(false))]);
    let wet = rendered(dir.path(), "wet", &midi_with(&with));
    // Both mixes are normalised to the same peak (the loud attack of each): compare the ringing.
    let (dry_ring, wet_ring) = (peak_in(&dry, 1.0, 1.8), peak_in(&wet, 1.0, 1.8));
    assert!(wet_ring > 10.0 * dry_ring.max(1e-6), "held by the pedal: {wet_ring}, released: {dry_ring}");
    // After the pedal goes up (2 s) the held note fades with the font's release, before the next
    // note (2.5 s).
    let (held, after) = (peak_in(&wet, 1.6, 1.95), peak_in(&wet, 2.3, 2.45));
    assert!(after < 0.5 * held, "after the pedal: {after}, held: {held}");
}
