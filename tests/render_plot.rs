//! Listening and looking: WAV rendering with the built-in voice and with a SoundFont (a tiny SF2
//! made here), silence for an empty piece, the SoundFont search order and its errors, the
//! piano-roll picture (ink exactly where the notes are), and the `render` / `plot` commands.

use etude::music::midi::{write_midi, Note, WriteOptions};
use etude::music::picture::{draw, note_colour, Meter, RollLayout, OCTAVE_LINE, TRACK_COLOURS};
use etude::music::render::{find_voice_in, render, render_file, PlayNote, Voice, BUILTIN_RELEASE_SECONDS, MAX_TAIL_SECONDS, PEAK};
use std::path::Path;
use std::process::Command;

/// Four quarter notes at 120 bpm (2 s): C4, E4, G4, then a C major chord.
fn known_notes() -> Vec<Note> {
    vec![
        Note::new(60, 0.0, 1.0, 100),
        Note::new(64, 1.0, 2.0, 90),
        Note::new(67, 2.0, 3.0, 80),
        Note::new(60, 3.0, 4.0, 110),
        Note::new(64, 3.0, 4.0, 110),
        Note::new(67, 3.0, 4.0, 110),
    ]
}

fn write_known_midi(path: &Path) {
    std::fs::write(path, write_midi(&known_notes(), &WriteOptions::default())).unwrap();
}

/// (spec, interleaved samples) of a WAV file.
fn read_wav(path: &Path) -> (hound::WavSpec, Vec<i16>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    let s: Vec<i16> = r.samples::<i16>().map(|x| x.unwrap()).collect();
    (spec, s)
}

/// Largest |sample| over frames [from, to) of interleaved stereo.
fn peak(s: &[i16], from: usize, to: usize) -> i32 {
    s[from * 2..(to * 2).min(s.len())].iter().map(|x| (*x as i32).abs()).max().unwrap_or(0)
}

#[test]
fn builtin_voice_wav_has_the_header_rate_and_length_of_the_piece_plus_its_release() {
    let dir = tempfile::tempdir().unwrap();
    let mid = dir.path().join("known.mid");
    write_known_midi(&mid);
    for rate in [44_100u32, 22_050] {
        let wav = dir.path().join(format!("known-{rate}.wav"));
        let secs = render_file(&mid, &wav, &Voice::BuiltIn, rate).unwrap();
        let (spec, s) = read_wav(&wav);
        assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, rate, 16));
        assert_eq!(spec.sample_format, hound::SampleFormat::Int);
        // 4 quarters at 120 bpm = 2 s, plus the voice's release.
        let frames = ((2.0 + BUILTIN_RELEASE_SECONDS) * rate as f64).ceil() as usize;
        assert_eq!(s.len(), frames * 2, "frames at {rate} Hz");
        assert!((secs - frames as f64 / rate as f64).abs() < 1e-9);
        // Peak-normalised to -1 dBFS: loud, never clipped.
        let p = peak(&s, 0, frames);
        assert!((p as f64 - PEAK as f64 * 32767.0).abs() <= 1.0, "peak {p}");
        // Sound in every quarter, and in the release tail after the last note ends.
        for q in 0..4 {
            let r = rate as usize / 2;
            assert!(peak(&s, q * r + r / 4, q * r + r / 2) > 1000, "quarter {q} is silent");
        }
        let end = 2 * rate as usize;
        assert!(peak(&s, end + rate as usize / 100, end + rate as usize / 10) > 100, "no release tail");
        // Both channels carry the music (panned, not one side only).
        let (l, r): (Vec<i16>, Vec<i16>) = s.chunks(2).map(|c| (c[0], c[1])).unzip();
        assert!(l.iter().any(|x| x.abs() > 1000) && r.iter().any(|x| x.abs() > 1000));
    }
}

#[test]
fn an_empty_piece_is_silence() {
    let a = render(&[], &[], &Voice::BuiltIn, 44_100).unwrap();
    assert_eq!(a.left.len(), (BUILTIN_RELEASE_SECONDS * 44_100.0).ceil() as usize);
    assert!(a.left.iter().chain(&a.right).all(|x| *x == 0.0));
    let dir = tempfile::tempdir().unwrap();
    let sf = dir.path().join("tiny.sf2");
    std::fs::write(&sf, tiny_sf2()).unwrap();
    let voice = find_voice_in(Some(&sf), None).unwrap().voice;
    let a = render(&[], &[], &voice, 44_100).unwrap();
    assert!(a.left.iter().chain(&a.right).all(|x| *x == 0.0));
    let wav = a.wav_bytes().unwrap();
    let r = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
    assert_eq!(r.spec().channels, 2);
}

#[test]
fn a_soundfont_renders_the_piece_with_its_release_tail() {
    let dir = tempfile::tempdir().unwrap();
    let sf = dir.path().join("tiny.sf2");
    std::fs::write(&sf, tiny_sf2()).unwrap();
    let mid = dir.path().join("known.mid");
    write_known_midi(&mid);
    let chosen = find_voice_in(Some(&sf), None).unwrap();
    assert!(chosen.description.contains("tiny.sf2") && chosen.description.contains("--soundfont"), "{}", chosen.description);
    let wav = dir.path().join("sf.wav");
    render_file(&mid, &wav, &chosen.voice, 44_100).unwrap();
    let (spec, s) = read_wav(&wav);
    assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, 44_100, 16));
    let frames = s.len() / 2;
    // The piece (2 s) and a tail: the tiny font's 0.5 s release (and the synthesizer's reverb).
    assert!(frames > 2 * 44_100 + 44_100 / 4, "{frames} frames: the release tail was cut");
    assert!(frames <= ((2.0 + MAX_TAIL_SECONDS) * 44_100.0) as usize + 44_100 / 10, "{frames} frames");
    let p = peak(&s, 0, frames);
    assert!((p as f64 - PEAK as f64 * 32767.0).abs() <= 1.0, "peak {p}");
    assert!(peak(&s, 44_100 / 8, 44_100 / 4) > 1000, "the first note is silent");
    assert!(peak(&s, 2 * 44_100 + 441, 2 * 44_100 + 4410) > 100, "no release tail");
    // Not the built-in voice: the tiny font is a pure tone, whose zero crossings near the first
    // note (C4, 261.6 Hz) come 2 x 261.6 times a second.
    let left: Vec<i16> = s.chunks(2).map(|c| c[0]).skip(44_100 / 8).take(44_100 / 4).collect();
    let crossings = left.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count() as f64 * 4.0;
    assert!((crossings - 2.0 * 261.6).abs() < 25.0, "{crossings} crossings per second");
}

#[test]
fn soundfont_search_order_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sf = dir.path().join("tiny.sf2");
    std::fs::write(&sf, tiny_sf2()).unwrap();
    let broken = dir.path().join("broken.sf2");
    std::fs::write(&broken, b"RIFF\x04\x00\x00\x00sfbkjunk").unwrap();
    let sf_s = sf.to_str().unwrap();
    // The environment variable, when no option.
    let c = find_voice_in(None, Some(sf_s)).unwrap();
    assert!(c.description.contains("ETUDE_SOUNDFONT"), "{}", c.description);
    // The option wins over the variable.
    let c = find_voice_in(Some(&sf), Some("/nonexistent.sf2")).unwrap();
    assert!(c.description.contains("--soundfont"));
    // Neither (or an empty variable): the bundled piano, and it says so.
    for env in [None, Some("")] {
        let c = find_voice_in(None, env).unwrap();
        assert!(matches!(c.voice, Voice::SoundFont { .. }) && c.description.contains("bundled piano"), "{}", c.description);
        assert!(c.voice.name().contains("Yamaha Grand Piano"), "{}", c.voice.name());
    }
    // `bundled` chooses it from the option or the variable; `builtin` the built-in voice.
    let c = find_voice_in(Some(Path::new("bundled")), Some(sf_s)).unwrap();
    assert!(c.description.contains("bundled piano") && c.description.contains("--soundfont bundled"), "{}", c.description);
    let c = find_voice_in(Some(Path::new("builtin")), Some(sf_s)).unwrap();
    assert!(matches!(c.voice, Voice::BuiltIn) && c.description.contains("--soundfont builtin"), "{}", c.description);
    let c = find_voice_in(None, Some("builtin")).unwrap();
    assert!(matches!(c.voice, Voice::BuiltIn), "{}", c.description);
    // Missing or broken files named by the user are one-line errors naming them.
    for (opt, env, what) in [
        (Some(dir.path().join("missing.sf2")), None, "missing.sf2"),
        (Some(broken.clone()), None, "broken.sf2"),
        (None, Some(broken.to_str().unwrap()), "ETUDE_SOUNDFONT"),
    ] {
        let e = find_voice_in(opt.as_deref(), env).err().expect("an error");
        assert!(e.contains(what) && !e.contains('\n'), "{e}");
    }
}

#[test]
fn render_rejects_a_bad_sample_rate() {
    let notes = [PlayNote { start: 0.0, end: 0.5, pitch: 60, velocity: 90, channel: 0, program: 0 }];
    let e = render(&notes, &[], &Voice::BuiltIn, 100).unwrap_err();
    assert!(e.contains("--sample-rate"), "{e}");
}

#[test]
fn piano_roll_has_ink_exactly_where_the_notes_are() {
    // Two tracks, soft and loud notes, a chord, a long and a very short note.
    let mut notes = vec![
        Note::new(48, 0.0, 2.0, 127),
        Note::new(60, 1.0, 1.5, 40),
        Note::new(64, 1.0, 1.5, 80),
        Note::new(67, 1.0, 1.5, 120),
        Note::new(72, 2.25, 2.3, 100),
        Note::new(55, 4.0, 7.0, 10),
    ];
    notes[4].track = 1;
    notes[5].track = 1;
    let meter = Meter { beat: 1.0, bar: 3.0 };
    let (l, rgb) = draw(&notes, 8.0, meter);
    assert_eq!(rgb.len(), (l.width * l.height * 3) as usize);
    let px = |x: u32, y: u32| {
        let i = ((y * l.width + x) * 3) as usize;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    };
    let inside = |x: u32, y: u32| {
        notes.iter().any(|n| {
            let (x0, y0, x1, y1) = l.note_rect(n);
            (x0..x1).contains(&x) && (y0..y1).contains(&y)
        })
    };
    // Every coloured (non-grey) pixel of the picture is inside a note, and every pixel inside a
    // note is coloured: ink exactly where the notes are.
    let mut inked = 0;
    for y in 0..l.height {
        for x in 0..l.width {
            let [r, g, b] = px(x, y);
            let coloured = r != g || g != b;
            assert_eq!(coloured, inside(x, y), "pixel ({x}, {y}) = {:?}", [r, g, b]);
            inked += coloured as usize;
        }
    }
    assert!(inked > 0);
    // Each note in its track's colour, shaded by its velocity; the second track another colour.
    for (n, track) in notes.iter().zip([0, 0, 0, 0, 1, 1]) {
        let (x0, y0, x1, y1) = l.note_rect(n);
        assert_eq!(px((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2), note_colour(TRACK_COLOURS[track], n.velocity), "{n:?}");
    }
    // Time and pitch map the way the layout says: the chord's notes start together, higher is up.
    let (c, e, g) = (l.note_rect(&notes[1]), l.note_rect(&notes[2]), l.note_rect(&notes[3]));
    assert!(c.0 == e.0 && e.0 == g.0 && c.1 > e.1 && e.1 > g.1);
    assert_eq!(c.1 - e.1, 4 * l.row_height);
    assert!(l.note_rect(&notes[0]).2 - l.note_rect(&notes[0]).0 >= 4 * (c.2 - c.0) - 1);
    // The layout spans whole octaves, C3 (48) to B5 (83), and draws a line under each C.
    assert_eq!((l.low, l.high), (48, 83));
    for p in [48u8, 60, 72] {
        let y = l.row_top(p) + l.row_height - 1;
        assert_eq!(px(l.x(7.5), y), OCTAVE_LINE, "no octave line under {p}");
    }
    // Bar lines (every 3 quarters) are darker than beat lines.
    let y = l.row_top(70) + 1;
    let bar = px(l.x(3.0), y);
    let beat = px(l.x(4.0), y);
    assert!(bar[0] < beat[0], "bar {bar:?} vs beat {beat:?}");
    // Labels (C3, C4, ...) are drawn left of the plot: some dark pixels there.
    let dark_left = (0..l.height).flat_map(|y| (0..l.left).map(move |x| (x, y))).filter(|&(x, y)| px(x, y)[0] < 150).count();
    assert!(dark_left > 20, "no C labels ({dark_left} dark pixels)");
    let _ = RollLayout::new(&notes, 8.0);
}

fn etude(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_etude")).args(args).current_dir(dir).env("ETUDE_SOUNDFONT", "").output().unwrap()
}

fn fails(args: &[&str], dir: &Path, expect: &[&str]) {
    let o = etude(args, dir);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "etude {args:?} should fail");
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("no error line: {err}"));
    for e in expect {
        assert!(line.contains(e), "{line}: should mention {e}");
    }
}

#[test]
fn render_and_plot_commands_write_files_and_refuse_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_known_midi(&dir.join("known.mid"));
    // A MIDI with no notes: just the tempo track.
    std::fs::write(dir.join("empty.mid"), write_midi(&[], &WriteOptions::default())).unwrap();
    std::fs::write(dir.join("broken.sf2"), b"not a soundfont").unwrap();

    let o = etude(&["render", "known.mid"], dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("voice: "), "it should say which voice: {err}");
    let (spec, _) = read_wav(&dir.join("known.wav"));
    assert_eq!((spec.channels, spec.sample_rate), (2, 44_100));
    let o = etude(&["plot", "known.mid", "-o", "roll.png"], dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(dir.join("roll.png")).unwrap().starts_with(b"\x89PNG"));

    let before = std::fs::read(dir.join("known.wav")).unwrap();
    fails(&["render", "known.mid"], dir, &["known.wav", "--force"]);
    fails(&["plot", "known.mid", "-o", "roll.png"], dir, &["roll.png", "--force"]);
    assert_eq!(std::fs::read(dir.join("known.wav")).unwrap(), before, "overwritten without --force");
    fails(&["render", "known.mid", "-o", "nowhere/x.wav"], dir, &["nowhere", "does not exist"]);
    fails(&["plot", "known.mid", "-o", "nowhere/x.png"], dir, &["nowhere", "does not exist"]);
    fails(&["render", "known.mid", "-o", "a.wav", "--soundfont", "missing.sf2"], dir, &["missing.sf2"]);
    fails(&["render", "known.mid", "-o", "b.wav", "--soundfont", "broken.sf2"], dir, &["broken.sf2", "SoundFont"]);
    fails(&["render", "empty.mid"], dir, &["empty.mid", "no"]);
    fails(&["plot", "empty.mid"], dir, &["empty.mid", "no"]);
    for f in ["a.wav", "b.wav", "empty.wav", "empty.png"] {
        assert!(!dir.join(f).exists(), "{f} was written");
    }
    // --force overwrites; --sample-rate is honoured.
    let o = etude(&["render", "known.mid", "--force", "--sample-rate", "22050"], dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read_wav(&dir.join("known.wav")).0.sample_rate, 22_050);
}

/// A minimal SoundFont 2 file: one preset (bank 0, program 0) whose one instrument plays one looped
/// sample, a pure tone of 441 Hz (50 samples a period at 22050 Hz, root key 69), with a 0.5 s
/// release.
fn tiny_sf2() -> Vec<u8> {
    fn chunk(id: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut v = id.to_vec();
        v.extend((data.len() as u32).to_le_bytes());
        v.extend(data);
        if data.len() % 2 == 1 {
            v.push(0);
        }
        v
    }
    fn list(kind: &[u8; 4], chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut data = kind.to_vec();
        chunks.iter().for_each(|c| data.extend(c));
        chunk(b"LIST", &data)
    }
    fn name(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.resize(20, 0);
        v
    }
    let u16b = |x: u16| x.to_le_bytes().to_vec();
    let u32b = |x: u32| x.to_le_bytes().to_vec();
    let n = 10_000u32;
    let mut smpl: Vec<u8> = (0..n)
        .flat_map(|i| (((i as f64 * 2.0 * std::f64::consts::PI / 50.0).sin() * 20_000.0) as i16).to_le_bytes())
        .collect();
    smpl.extend(vec![0u8; 46 * 2]);
    let info = list(b"INFO", &[chunk(b"ifil", &[2, 0, 1, 0]), chunk(b"isng", b"EMU8000\0"), chunk(b"INAM", b"tiny\0\0")]);
    let sdta = list(b"sdta", &[chunk(b"smpl", &smpl)]);
    let phdr = [name("Tone"), u16b(0), u16b(0), u16b(0), u32b(0), u32b(0), u32b(0), name("EOP"), u16b(0), u16b(0), u16b(1), u32b(0), u32b(0), u32b(0)].concat();
    let pbag = [u16b(0), u16b(0), u16b(1), u16b(0)].concat();
    let pgen = [u16b(41), u16b(0), u16b(0), u16b(0)].concat(); // instrument 0; terminal
    let inst = [name("Tone"), u16b(0), name("EOI"), u16b(1)].concat();
    let ibag = [u16b(0), u16b(0), u16b(3), u16b(0)].concat();
    // sampleModes = loop, releaseVolEnv = -1200 timecents (0.5 s), sampleID = 0 (last); terminal.
    let igen = [u16b(54), u16b(1), u16b(38), (-1200i16).to_le_bytes().to_vec(), u16b(53), u16b(0), u16b(0), u16b(0)].concat();
    let shdr = [
        name("tone"), u32b(0), u32b(n), u32b(500), u32b(9500), u32b(22_050), vec![69, 0], u16b(0), u16b(1),
        name("EOS"), u32b(0), u32b(0), u32b(0), u32b(0), u32b(0), vec![0, 0], u16b(0), u16b(0),
    ]
    .concat();
    let pdta = list(
        b"pdta",
        &[
            chunk(b"phdr", &phdr),
            chunk(b"pbag", &pbag),
            chunk(b"pmod", &[0; 10]),
            chunk(b"pgen", &pgen),
            chunk(b"inst", &inst),
            chunk(b"ibag", &ibag),
            chunk(b"imod", &[0; 10]),
            chunk(b"igen", &igen),
            chunk(b"shdr", &shdr),
        ],
    );
    let mut body = b"sfbk".to_vec();
    body.extend(info);
    body.extend(sdta);
    body.extend(pdta);
    chunk(b"RIFF", &body)
}
