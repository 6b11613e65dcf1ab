//! `etude render` (MIDI -> WAV) and `etude plot` (MIDI -> piano-roll PNG), and the WAV and PNG that
//! `generate` and `train` write beside every piece they compose.

use clap::Args;
use etude::music::picture::plot_file;
use etude::music::render::{find_voice, render_file, Voice, DEFAULT_SAMPLE_RATE};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  etude render sample.mid                        # sample.wav beside it
  etude render a.mid b.mid                       # a.wav, b.wav
  etude render piece.mid -o out/piece.wav --soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2

Voice: --soundfont, else ETUDE_SOUNDFONT, else the bundled piano (FluidR3_GM's Yamaha Grand Piano, MIT
licence, embedded in etude). Either may name a SoundFont file, `bundled` or `builtin` (a small additive
voice); the line `voice: ...` says which was used. Velocities and the sustain pedal reach the synthesizer.
Output: 16-bit stereo WAV, peak-normalised to -1 dBFS, the release tail kept.")]
pub struct RenderArgs {
    /// MIDI files to render.
    #[arg(value_name = "IN.mid", required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output WAV (one input only; default: each input with .wav).
    #[arg(short = 'o', long = "out", value_name = "OUT.wav")]
    pub out: Option<PathBuf>,
    /// SoundFont 2 file, `bundled` or `builtin` (default: ETUDE_SOUNDFONT, else the bundled piano).
    #[arg(long, value_name = "FILE.sf2")]
    pub soundfont: Option<PathBuf>,
    /// Output sample rate in Hz.
    #[arg(long, default_value_t = DEFAULT_SAMPLE_RATE)]
    pub sample_rate: u32,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  etude plot sample.mid                 # sample.png beside it
  etude plot piece.mid -o roll.png

Time runs across (bar lines from the file's time signature, 4/4 without one; bar numbers below), pitch
up (a line under every C, labelled C2, C3, ...); velocity is the shade (pale = soft); one colour per track.")]
pub struct PlotArgs {
    /// MIDI files to draw.
    #[arg(value_name = "FILE.mid", required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output PNG (one input only; default: each input with .png).
    #[arg(short = 'o', long = "out", value_name = "OUT.png")]
    pub out: Option<PathBuf>,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
}

/// Pair every input with its output; refuse missing folders, and existing outputs without --force.
fn outputs(inputs: &[PathBuf], out: Option<&Path>, ext: &str, force: bool) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    if out.is_some() && inputs.len() > 1 {
        return Err(format!("-o/--out takes one input, not {}; without it each input gets its .{ext} beside it", inputs.len()));
    }
    let pairs: Vec<(PathBuf, PathBuf)> =
        inputs.iter().map(|i| (i.clone(), out.map(Path::to_path_buf).unwrap_or_else(|| i.with_extension(ext)))).collect();
    // Never an input itself (`-o IN.mid --force` would replace the music with its picture).
    let ins: Vec<(&Path, &str)> = inputs.iter().map(|i| (i.as_path(), "an input MIDI file")).collect();
    for (_, o) in &pairs {
        etude::files::check_output(o, "output", force, &ins)?;
    }
    Ok(pairs)
}

/// Run `f` on every (input, output) pair; a failing input is reported and skipped; the command fails
/// when any did.
fn each(pairs: &[(PathBuf, PathBuf)], mut f: impl FnMut(&Path, &Path) -> Result<(), String>) -> Result<(), String> {
    let mut failed = 0;
    for (i, o) in pairs {
        if let Err(e) = f(i, o) {
            if pairs.len() == 1 {
                return Err(e);
            }
            eprintln!("skipped {}: {e}", i.display());
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(format!("{failed} of {} files could not be done", pairs.len()));
    }
    Ok(())
}

pub fn run_render(args: RenderArgs) -> Result<(), String> {
    let pairs = outputs(&args.inputs, args.out.as_deref(), "wav", args.force)?;
    let chosen = find_voice(args.soundfont.as_deref())?;
    eprintln!("voice: {}", chosen.description);
    each(&pairs, |i, o| {
        let started = Instant::now();
        let secs = render_file(i, o, &chosen.voice, args.sample_rate)?;
        let wall = started.elapsed().as_secs_f64();
        println!("wrote {}: {secs:.1} s of audio in {wall:.2} s ({:.1}x real time)", o.display(), secs / wall.max(1e-9));
        Ok(())
    })
}

pub fn run_plot(args: PlotArgs) -> Result<(), String> {
    let pairs = outputs(&args.inputs, args.out.as_deref(), "png", args.force)?;
    each(&pairs, |i, o| {
        plot_file(i, o)?;
        println!("wrote {}", o.display());
        Ok(())
    })
}

/// What `generate` and `train` write beside a composed piece `midi`: its piano roll (`.png`) always,
/// its audio (`.wav`) when `voice` is given. The caller has checked --force.
pub fn companions(midi: &Path, voice: Option<&Voice>) -> Result<(), String> {
    let png = midi.with_extension("png");
    plot_file(midi, &png)?;
    let mut done = vec![png.display().to_string()];
    if let Some(v) = voice {
        let wav = midi.with_extension("wav");
        let started = Instant::now();
        let secs = render_file(midi, &wav, v, DEFAULT_SAMPLE_RATE)?;
        done.push(format!("{} ({secs:.1} s of audio in {:.2} s)", wav.display(), started.elapsed().as_secs_f64()));
    }
    eprintln!("wrote {}", done.join(", "));
    Ok(())
}
