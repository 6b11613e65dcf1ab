//! MIDI -> audio: 16-bit stereo WAV through a SoundFont synthesizer (rustysynth): by default
//! etude's bundled piano ([`PIANO_SF2`], embedded in the binary), or a SoundFont file, or a small
//! additive voice (`builtin`).
//!
//! * A SoundFont is played what the file holds ([`read_performance`]): every pitched part, each
//!   note from its key press to its key release at its velocity, and the sustain pedal (CC64)
//!   changes, which the synthesizer applies as a piano does; a released note fades with the
//!   font's own release. The built-in voice has no pedal: it gets the notes lengthened by it.
//!   Times in seconds through the score's tempo map ([`Score::seconds`]).
//! * The release tail is kept: after the last note ends, a SoundFont is rendered until its output
//!   stays below [`SILENCE`] for 50 ms (at most [`MAX_TAIL_SECONDS`]); the built-in voice fades
//!   every note out over exactly [`BUILTIN_RELEASE_SECONDS`], so its audio is the piece plus that.
//! * The mix is peak-normalised to [`PEAK`] (-1 dBFS): never clipped, never quieter than it could
//!   be. A silent mix stays all zeros.
//!
//! The voice ([`find_voice`]): `--soundfont`, else the `ETUDE_SOUNDFONT` environment variable, else
//! the bundled piano. Either may name a SoundFont file (which must load), `bundled` or `builtin`.

use crate::music::midi::{read_midi, ReadOptions, Score};
use rustysynth::{SoundFont, Synthesizer, SynthesizerSettings};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Default output sample rate.
pub const DEFAULT_SAMPLE_RATE: u32 = 44_100;
/// Peak level of the normalised mix (-1 dBFS).
pub const PEAK: f32 = 0.891;
/// Output level below which a SoundFont's tail counts as silence.
pub const SILENCE: f32 = 1e-4;
/// Longest release tail rendered after the last note (reverb included).
pub const MAX_TAIL_SECONDS: f64 = 6.0;
/// The built-in voice's release: every note fades to zero this long after its end.
pub const BUILTIN_RELEASE_SECONDS: f64 = 0.3;

/// The `--soundfont` / `ETUDE_SOUNDFONT` value that chooses the built-in voice.
pub const BUILTIN: &str = "builtin";
/// The `--soundfont` / `ETUDE_SOUNDFONT` value that chooses the bundled piano (the default).
pub const BUNDLED: &str = "bundled";

/// etude's piano: preset 0 of bank 0 of FluidR3_GM (its Yamaha Grand Piano, 41 samples at
/// 32 kHz) alone, MIT licence, built from Debian's `fluid-soundfont-gm` by `scripts/piano-font.sh`
/// (`assets/piano/README.md`) and embedded in the binary, so that every machine plays a piano.
pub static PIANO_SF2: &[u8] = include_bytes!("../../assets/piano/etude-piano.sf2");

/// How the bundled piano is named in the `voice:` line.
pub const PIANO_NAME: &str = "bundled piano (Yamaha Grand Piano of FluidR3_GM, MIT licence)";

/// The bundled piano, parsed once per process.
pub fn bundled_piano() -> Arc<SoundFont> {
    static FONT: OnceLock<Arc<SoundFont>> = OnceLock::new();
    FONT.get_or_init(|| {
        // Tested to load (tests/piano_font.rs): a failure here is a broken build, not bad input.
        Arc::new(SoundFont::new(&mut &PIANO_SF2[..]).expect("the bundled piano SoundFont loads"))
    })
    .clone()
}

/// What makes the sound.
#[derive(Clone)]
pub enum Voice {
    /// A SoundFont: the bundled piano or a file; `name` says which.
    SoundFont { name: String, font: Arc<SoundFont> },
    /// The additive voice of six decaying partials (`--soundfont builtin`).
    BuiltIn,
}

/// The voice chosen by [`find_voice`] and a line saying which it is and why.
pub struct Chosen {
    pub voice: Voice,
    pub description: String,
}

impl Voice {
    /// The bundled piano.
    pub fn piano() -> Voice {
        Voice::SoundFont { name: PIANO_NAME.into(), font: bundled_piano() }
    }

    /// A short name: the SoundFont's, or "built-in piano voice".
    pub fn name(&self) -> String {
        match self {
            Voice::SoundFont { name, .. } => name.clone(),
            Voice::BuiltIn => "built-in piano voice".into(),
        }
    }
}

/// Load a SoundFont file; the error names the file and the cause.
pub fn load_soundfont(path: &Path) -> Result<Arc<SoundFont>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("SoundFont {}: {e}", path.display()))?;
    let font = SoundFont::new(&mut bytes.as_slice())
        .map_err(|e| format!("SoundFont {}: not a usable SoundFont 2 file ({e:?})", path.display()))?;
    if font.get_presets().is_empty() {
        return Err(format!("SoundFont {}: it holds no preset", path.display()));
    }
    Ok(Arc::new(font))
}

/// Choose the voice: `option` (--soundfont), else `env` (ETUDE_SOUNDFONT, empty = unset), else the
/// bundled piano. Either may name a SoundFont file, which must load, or `bundled` or `builtin`.
pub fn find_voice_in(option: Option<&Path>, env: Option<&str>) -> Result<Chosen, String> {
    let given = match (option, env.filter(|e| !e.is_empty())) {
        (Some(p), _) => Some((p.to_path_buf(), "--soundfont")),
        (None, Some(e)) => Some((PathBuf::from(e), "ETUDE_SOUNDFONT")),
        (None, None) => None,
    };
    let Some((path, from)) = given else {
        return Ok(Chosen { voice: Voice::piano(), description: format!("{PIANO_NAME}, embedded") });
    };
    match path.to_str() {
        Some(BUILTIN) => Ok(Chosen { voice: Voice::BuiltIn, description: format!("built-in piano voice ({from} {BUILTIN})") }),
        Some(BUNDLED) => Ok(Chosen { voice: Voice::piano(), description: format!("{PIANO_NAME} ({from} {BUNDLED})") }),
        _ => {
            let font = load_soundfont(&path).map_err(|e| format!("{from}: {e}"))?;
            let name = format!("SoundFont {}", path.display());
            Ok(Chosen { description: format!("{name} ({from})"), voice: Voice::SoundFont { name, font } })
        }
    }
}

/// [`find_voice_in`] with `ETUDE_SOUNDFONT`.
pub fn find_voice(option: Option<&Path>) -> Result<Chosen, String> {
    let env = std::env::var("ETUDE_SOUNDFONT").ok();
    find_voice_in(option, env.as_deref())
}

/// One note to play, times in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct PlayNote {
    pub start: f64,
    pub end: f64,
    pub pitch: u8,
    pub velocity: u8,
    pub channel: u8,
    pub program: u8,
}

/// Stereo float audio.
#[derive(Clone, Debug, Default)]
pub struct Audio {
    pub sample_rate: u32,
    pub left: Vec<f32>,
    pub right: Vec<f32>,
}

impl Audio {
    pub fn seconds(&self) -> f64 {
        self.left.len() as f64 / self.sample_rate as f64
    }

    pub fn peak(&self) -> f32 {
        self.left.iter().chain(&self.right).fold(0.0f32, |m, x| m.max(x.abs()))
    }

    /// Scale so that the loudest sample is [`PEAK`] (a silent mix is left alone).
    pub fn normalise(&mut self) {
        let peak = self.peak();
        if peak > 0.0 && peak.is_finite() {
            let g = PEAK / peak;
            self.left.iter_mut().chain(self.right.iter_mut()).for_each(|x| *x *= g);
        }
    }

    /// A 16-bit stereo PCM WAV file of the audio as it is (call [`Audio::normalise`] first).
    pub fn wav_bytes(&self) -> Result<Vec<u8>, String> {
        let spec = hound::WavSpec { channels: 2, sample_rate: self.sample_rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let mut cursor = std::io::Cursor::new(Vec::with_capacity(44 + self.left.len() * 4));
        {
            let mut w = hound::WavWriter::new(&mut cursor, spec).map_err(|e| e.to_string())?;
            let q = |x: f32| (x.clamp(-1.0, 1.0) * 32767.0).round() as i16;
            for (l, r) in self.left.iter().zip(&self.right) {
                w.write_sample(q(*l)).map_err(|e| e.to_string())?;
                w.write_sample(q(*r)).map_err(|e| e.to_string())?;
            }
            w.finalize().map_err(|e| e.to_string())?;
        }
        Ok(cursor.into_inner())
    }
}

/// The score's notes in seconds, each through its timeline's tempo map ([`Score::seconds`]).
pub fn play_notes(score: &Score) -> Vec<PlayNote> {
    score
        .notes
        .iter()
        .map(|n| {
            let (start, end) = score.seconds(n);
            PlayNote { start, end, pitch: n.pitch, velocity: n.velocity, channel: n.channel, program: n.program }
        })
        .collect()
}

/// A sustain-pedal change to play, its time in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct PlayPedal {
    pub time: f64,
    pub channel: u8,
    pub down: bool,
}

/// The score's pedal changes in seconds, in time order (changes at one time in the file's order).
pub fn play_pedals(score: &Score) -> Vec<PlayPedal> {
    let mut p: Vec<PlayPedal> = score.pedals.iter().map(|p| PlayPedal { time: score.pedal_seconds(p), channel: p.channel, down: p.down }).collect();
    p.sort_by(|a, b| a.time.total_cmp(&b.time));
    p
}

/// Read a MIDI file (every pitched part) into what `voice` plays, times in seconds: for a SoundFont,
/// the notes as the keys were released and the sustain pedal's changes, which the synthesizer
/// applies as a piano does (a released note rings on while the pedal is down); for the built-in
/// voice, which has no pedal, the notes lengthened by it and no pedal changes. A file without
/// notes is an error naming it.
pub fn read_performance(path: &Path, voice: &Voice) -> Result<(Vec<PlayNote>, Vec<PlayPedal>), String> {
    let bytes = crate::music::midi::read_midi_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let synth = matches!(voice, Voice::SoundFont { .. });
    let score = read_midi(&bytes, &ReadOptions { all_parts: true, sustain: !synth }).map_err(|e| format!("{}: {e}", path.display()))?;
    let pedals = if synth { play_pedals(&score) } else { Vec::new() };
    Ok((play_notes(&score), pedals))
}

/// Where rendered blocks go: `sink(left, right)`, in order.
type Sink<'a> = dyn FnMut(&[f32], &[f32]) -> Result<(), String> + 'a;

/// Frames handed on at once when rendering in blocks: what `render_file` holds in memory.
const BLOCK: usize = 8192;
/// The most notes the built-in voice sounds at once; a note beyond it cuts the one that started
/// first (as a synthesizer's polyphony does), so time grows with the audio's length, not with
/// notes x length (65,535 stacked notes took 45 s for 0.8 s of audio).
pub const BUILTIN_POLYPHONY: usize = 128;
/// The most audio a 16-bit stereo WAV holds: its data size is a 32-bit count of bytes.
const MAX_WAV_FRAMES: u64 = (u32::MAX as u64 - 36) / 4;

fn check_rate(sample_rate: u32) -> Result<(), String> {
    if !(8_000..=192_000).contains(&sample_rate) {
        return Err(format!("--sample-rate must be between 8000 and 192000, not {sample_rate}"));
    }
    Ok(())
}

/// Render `notes` and `pedals` with `voice` at `sample_rate`, release tail included, normalised
/// (the built-in voice has no pedal: give it notes lengthened by the pedal, see [`read_performance`]).
pub fn render(notes: &[PlayNote], pedals: &[PlayPedal], voice: &Voice, sample_rate: u32) -> Result<Audio, String> {
    check_rate(sample_rate)?;
    let mut audio = Audio { sample_rate, ..Audio::default() };
    render_blocks(notes, pedals, voice, sample_rate, &mut |l, r| {
        audio.left.extend_from_slice(l);
        audio.right.extend_from_slice(r);
        Ok(())
    })?;
    audio.normalise();
    Ok(audio)
}

/// Render `notes` in blocks of at most [`BLOCK`] frames, each handed to `sink(left, right)` in
/// order, the release tail included, not normalised; returns the frames rendered. The same notes
/// give the same samples every time.
fn render_blocks(notes: &[PlayNote], pedals: &[PlayPedal], voice: &Voice, sample_rate: u32, sink: &mut Sink) -> Result<usize, String> {
    match voice {
        Voice::SoundFont { font, name } => render_soundfont(notes, pedals, font, sample_rate, sink).map_err(|e| format!("{name}: {e}")),
        Voice::BuiltIn => render_builtin(notes, sample_rate, sink),
    }
}

/// When the last note ends or the last pedal change comes, in seconds (the built-in voice has no
/// pedal changes).
fn last_end(notes: &[PlayNote], pedals: &[PlayPedal]) -> f64 {
    notes.iter().map(|n| n.end).chain(pedals.iter().map(|p| p.time)).fold(0.0, f64::max)
}

fn render_soundfont(notes: &[PlayNote], pedals: &[PlayPedal], font: &Arc<SoundFont>, sample_rate: u32, sink: &mut Sink) -> Result<usize, String> {
    let settings = SynthesizerSettings::new(sample_rate as i32);
    let mut synth = Synthesizer::new(font, &settings).map_err(|e| format!("{e:?}"))?;
    let sr = sample_rate as f64;
    let at = |s: f64| (s.max(0.0) * sr).round() as usize;
    // (sample, kind, index): at one sample, note-offs (kind 0) first, then pedal changes (1) in
    // their order, then note-ons (2). A chord change under "pedal up, pedal down" so releases the
    // old chord's keys before the pedal catches the new one.
    let mut events: Vec<(usize, u8, usize)> = Vec::with_capacity(notes.len() * 2 + pedals.len());
    for (i, n) in notes.iter().enumerate() {
        events.push((at(n.start), 2, i));
        events.push((at(n.end).max(at(n.start) + 1), 0, i));
    }
    for (i, p) in pedals.iter().enumerate() {
        events.push((at(p.time), 1, i));
    }
    events.sort();
    let end = at(last_end(notes, pedals));
    let (mut l, mut r) = (vec![0.0f32; BLOCK], vec![0.0f32; BLOCK]);
    // Render up to frame `to` in blocks (the synthesizer streams: how its output is cut does not
    // change it).
    let mut pos = 0usize;
    let mut advance = |synth: &mut Synthesizer, pos: &mut usize, to: usize| -> Result<(), String> {
        while *pos < to {
            let n = (to - *pos).min(BLOCK);
            synth.render(&mut l[..n], &mut r[..n]);
            sink(&l[..n], &r[..n])?;
            *pos += n;
        }
        Ok(())
    };
    let mut program = [255u8; 16];
    let mut pedal_down = [false; 16];
    for &(t, kind, i) in &events {
        advance(&mut synth, &mut pos, t)?;
        if kind == 1 {
            let p = &pedals[i];
            let ch = (p.channel & 15) as usize;
            synth.process_midi_message(ch as i32, 0xB0, 64, if p.down { 127 } else { 0 });
            pedal_down[ch] = p.down;
            continue;
        }
        let n = &notes[i];
        let ch = (n.channel & 15) as i32;
        if kind == 2 {
            if program[ch as usize] != n.program {
                synth.process_midi_message(ch, 0xC0, n.program as i32, 0);
                program[ch as usize] = n.program;
            }
            synth.note_on(ch, n.pitch as i32, n.velocity.max(1) as i32);
        } else {
            synth.note_off(ch, n.pitch as i32);
        }
    }
    advance(&mut synth, &mut pos, end)?;
    // A pedal still down at the end goes up there, so that the tail dies away.
    for (ch, _) in pedal_down.iter().enumerate().filter(|(_, d)| **d) {
        synth.process_midi_message(ch as i32, 0xB0, 64, 0);
    }
    // The tail: until 50 ms in a row stay below SILENCE, at most MAX_TAIL_SECONDS.
    let block = (sr * 0.05) as usize;
    let max_tail = (MAX_TAIL_SECONDS * sr) as usize;
    let (mut l, mut r) = (vec![0.0f32; block], vec![0.0f32; block]);
    let mut tail = 0;
    while tail < max_tail {
        synth.render(&mut l, &mut r);
        let loud = l.iter().chain(&r).any(|x| x.abs() >= SILENCE);
        if !loud {
            break;
        }
        sink(&l, &r)?;
        tail += block;
    }
    Ok(pos.max(end) + tail)
}

/// One note of the built-in voice while it sounds: its partials' phasors and envelopes.
struct Sounding {
    /// Its index in the notes (the order its samples are added in).
    index: usize,
    start: usize,
    held: usize,
    len: usize,
    gl: f64,
    gr: f64,
    /// Per partial: (cos, sin, envelope, cos step, sin step, decay per sample).
    partials: Vec<[f64; 6]>,
}

/// The built-in voice: per note, six partials of a slightly stretched harmonic series, each
/// decaying exponentially (faster for higher partials and higher notes), a 5 ms attack, and a
/// raised-cosine release over [`BUILTIN_RELEASE_SECONDS`] after the note ends; panned by pitch.
/// At most [`BUILTIN_POLYPHONY`] notes sound at once. Rendered in blocks: the notes sounding
/// are kept, not their samples.
fn render_builtin(notes: &[PlayNote], sample_rate: u32, sink: &mut Sink) -> Result<usize, String> {
    let sr = sample_rate as f64;
    let total = ((last_end(notes, &[]) + BUILTIN_RELEASE_SECONDS) * sr).ceil() as usize;
    let release = (BUILTIN_RELEASE_SECONDS * sr) as usize;
    let attack = (0.005 * sr).max(1.0);
    let start_of = |n: &PlayNote| (n.start.max(0.0) * sr).round() as usize;
    // The notes by start (ties in their order).
    let mut order: Vec<usize> = (0..notes.len()).collect();
    order.sort_by_key(|&i| (start_of(&notes[i]), i));
    let mut next = 0;
    // Sounding notes, by index: their samples are added in the notes' order.
    let mut sounding: Vec<Sounding> = Vec::new();
    let (mut l, mut r) = (vec![0.0f32; BLOCK], vec![0.0f32; BLOCK]);
    let mut x = vec![0.0f64; BLOCK];
    let mut pos = 0;
    while pos < total {
        let n_frames = (total - pos).min(BLOCK);
        let block_end = pos + n_frames;
        while next < order.len() && start_of(&notes[order[next]]) < block_end {
            let i = order[next];
            next += 1;
            let n = &notes[i];
            let start = start_of(n);
            let held = ((n.end - n.start).max(0.0) * sr).round() as usize;
            let len = (held + release).min(total.saturating_sub(start));
            if len == 0 {
                continue;
            }
            let f0 = 440.0 * 2f64.powf((n.pitch as f64 - 69.0) / 12.0);
            let amp = 0.15 * (n.velocity.max(1) as f64 / 127.0).powf(1.5);
            // Lower notes ring longer.
            let tau = 2.5 * 2f64.powf(-(n.pitch as f64 - 48.0) / 24.0);
            let pan = ((n.pitch as f64 - 21.0) / 87.0).clamp(0.0, 1.0) * 0.6 + 0.2;
            let (gl, gr) = ((1.0 - pan).sqrt(), pan.sqrt());
            let mut partials = Vec::with_capacity(6);
            for k in 1..=6u32 {
                let kf = k as f64;
                let f = f0 * kf * (1.0 + 0.0004 * kf * kf);
                if f >= sr * 0.45 {
                    break;
                }
                let a = amp / kf.powf(1.2);
                let decay = (-kf.sqrt() / (tau * sr)).exp();
                let (dc, ds) = ((2.0 * std::f64::consts::PI * f / sr).cos(), (2.0 * std::f64::consts::PI * f / sr).sin());
                partials.push([1.0, 0.0, a, dc, ds, decay]);
            }
            if sounding.len() == BUILTIN_POLYPHONY {
                // The note that started first (the lowest index among the earliest starts) is cut.
                let oldest = (0..sounding.len()).min_by_key(|&k| (sounding[k].start, sounding[k].index)).unwrap_or(0);
                sounding.remove(oldest);
            }
            let at = sounding.partition_point(|s| s.index < i);
            sounding.insert(at, Sounding { index: i, start, held, len, gl, gr, partials });
        }
        l[..n_frames].fill(0.0);
        r[..n_frames].fill(0.0);
        for s in &mut sounding {
            // The part of this note inside the block: its samples j in [from, to).
            let first = s.start.max(pos);
            let stop = (s.start + s.len).min(block_end);
            if first >= stop {
                continue;
            }
            let (from, to) = (first - s.start, stop - s.start);
            let xs = &mut x[..to - from];
            xs.fill(0.0);
            for p in &mut s.partials {
                // A rotating phasor with an exponential envelope: (c, s) *= decay * e^{i w}.
                let [mut c, mut sn, mut env, dc, ds, decay] = *p;
                for v in xs.iter_mut() {
                    *v += env * sn;
                    let c2 = c * dc - sn * ds;
                    sn = sn * dc + c * ds;
                    c = c2;
                    env *= decay;
                }
                *p = [c, sn, env, dc, ds, decay];
            }
            for (k, v) in xs.iter().enumerate() {
                let j = from + k;
                let mut g = (j as f64 / attack).min(1.0);
                if j >= s.held {
                    let rr = (j - s.held) as f64 / release.max(1) as f64;
                    g *= 0.5 * (1.0 + (std::f64::consts::PI * rr.min(1.0)).cos());
                }
                let v = v * g;
                l[first - pos + k] += (v * s.gl) as f32;
                r[first - pos + k] += (v * s.gr) as f32;
            }
        }
        sounding.retain(|s| s.start + s.len > block_end);
        sink(&l[..n_frames], &r[..n_frames])?;
        pos = block_end;
    }
    Ok(total)
}

/// The 44-byte header of a 16-bit stereo PCM WAV file of `frames` frames (what hound writes).
fn wav_header(sample_rate: u32, frames: u64) -> [u8; 44] {
    let data = (frames * 4) as u32;
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data).to_le_bytes());
    h[8..16].copy_from_slice(b"WAVEfmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&2u16.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&(sample_rate * 4).to_le_bytes());
    h[32..34].copy_from_slice(&4u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

/// Render the MIDI file `midi` into the WAV file `out` (see [`crate::files::atomic_write_with`]),
/// streamed: rendered once for the peak and once more into the file, a block at a time, so the
/// memory it takes does not grow with the piece's length (a 10-hour piece took 19 GB). A piece
/// longer than a WAV file holds is refused before any work. Returns the audio's length in seconds.
pub fn render_file(midi: &Path, out: &Path, voice: &Voice, sample_rate: u32) -> Result<f64, String> {
    check_rate(sample_rate)?;
    let (notes, pedals) = read_performance(midi, voice)?;
    let end = last_end(&notes, &pedals);
    let longest = (end + MAX_TAIL_SECONDS.max(BUILTIN_RELEASE_SECONDS)) * sample_rate as f64;
    if longest.ceil() > MAX_WAV_FRAMES as f64 {
        return Err(format!(
            "{}: {:.1} hours of audio, more than a WAV file holds at {sample_rate} Hz ({:.1} hours); a lower --sample-rate holds more",
            midi.display(),
            end / 3600.0,
            MAX_WAV_FRAMES as f64 / sample_rate as f64 / 3600.0
        ));
    }
    let mut peak = 0.0f32;
    let frames = render_blocks(&notes, &pedals, voice, sample_rate, &mut |l, r| {
        peak = l.iter().chain(r).fold(peak, |m, x| m.max(x.abs()));
        Ok(())
    })?;
    if frames as u64 > MAX_WAV_FRAMES {
        return Err(format!("{}: more audio than a WAV file holds", midi.display()));
    }
    // As Audio::normalise: a silent mix is left alone.
    let gain = if peak > 0.0 && peak.is_finite() { Some(PEAK / peak) } else { None };
    crate::files::atomic_write_with(out, |f| {
        use std::io::Write;
        let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
        w.write_all(&wav_header(sample_rate, frames as u64)).map_err(|e| e.to_string())?;
        let q = |x: f32| (x.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        let mut bytes = Vec::with_capacity(BLOCK * 4);
        let mut written = 0usize;
        render_blocks(&notes, &pedals, voice, sample_rate, &mut |l, r| {
            bytes.clear();
            for (a, b) in l.iter().zip(r) {
                let (a, b) = match gain {
                    Some(g) => (a * g, b * g),
                    None => (*a, *b),
                };
                bytes.extend_from_slice(&q(a).to_le_bytes());
                bytes.extend_from_slice(&q(b).to_le_bytes());
            }
            written += l.len();
            w.write_all(&bytes).map_err(|e| e.to_string())
        })?;
        if written != frames {
            return Err(format!("rendered {written} frames, then {frames}: the synthesizer is not deterministic"));
        }
        w.flush().map_err(|e| e.to_string())
    })?;
    Ok(frames as f64 / sample_rate as f64)
}

/// `path` with its extension replaced by `ext` (`piece.mid` -> `piece.wav`).
pub fn beside(path: &Path, ext: &str) -> PathBuf {
    path.with_extension(ext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_hits_the_peak_and_leaves_silence_alone() {
        let mut a = Audio { sample_rate: 8000, left: vec![0.0, 2.0, -4.0], right: vec![1.0, 0.0, 0.5] };
        a.normalise();
        assert!((a.peak() - PEAK).abs() < 1e-6);
        assert!((a.left[1] - 2.0 * PEAK / 4.0).abs() < 1e-6);
        let mut s = Audio { sample_rate: 8000, left: vec![0.0; 4], right: vec![0.0; 4] };
        s.normalise();
        assert!(s.left.iter().all(|x| *x == 0.0));
    }
}
