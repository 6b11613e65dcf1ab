//! `etude report RUN`: rebuild a run's `report.html`, drawing the loss curves and the missing piano
//! rolls and rendering the missing WAVs first.

use clap::Args;
use etude::music::picture::plot_file;
use etude::music::render::{find_voice, render_file, DEFAULT_SAMPLE_RATE};
use etude::run::report::{pieces, write_report};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  etude report runs/lstm-20260101-120000          # rebuild runs/lstm-.../report.html
  etude report runs/X --force --soundfont FluidR3_GM.sf2   # re-render every piece's WAV with that SoundFont

The page is self-contained: images and audio are inlined as data: URIs, nothing is fetched from the network.
Training rewrites it after every epoch; this command also draws what is missing: loss.png from metrics.csv,
and for every .mid in the folder its piano roll (.png) and audio (.wav).")]
pub struct ReportArgs {
    /// The run folder (what `etude train` wrote).
    #[arg(value_name = "RUN")]
    pub run: PathBuf,
    /// SoundFont for the WAVs that are rendered (a file, `bundled` or `builtin`; default: ETUDE_SOUNDFONT, else the bundled piano).
    #[arg(long, value_name = "FILE.sf2")]
    pub soundfont: Option<PathBuf>,
    /// Redraw and re-render the pieces' PNG and WAV files even when they exist.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: ReportArgs) -> Result<(), String> {
    let run = &args.run;
    if !run.is_dir() {
        return Err(format!("{}: not a folder (give the run folder that etude train wrote)", run.display()));
    }
    let has_run = ["metrics.csv", "last.safetensors"].iter().any(|f| run.join(f).exists());
    if !has_run {
        return Err(format!("{}: not a run folder (it has no metrics.csv and no last.safetensors)", run.display()));
    }
    if run.join("metrics.csv").exists() {
        etude::run::plots::run_loss_curve(run)?;
    }
    let ps = pieces(run);
    let need_wav = ps.iter().any(|p| args.force || !p.with_extension("wav").exists());
    let voice = if need_wav {
        let chosen = find_voice(args.soundfont.as_deref())?;
        eprintln!("voice: {}", chosen.description);
        Some(chosen.voice)
    } else {
        None
    };
    for p in &ps {
        let png = p.with_extension("png");
        if args.force || !png.exists() {
            match plot_file(p, &png) {
                Ok(()) => eprintln!("wrote {}", png.display()),
                Err(e) => eprintln!("skipped {}: {e}", p.display()),
            }
        }
        let wav = p.with_extension("wav");
        if let (true, Some(v)) = (args.force || !wav.exists(), &voice) {
            match render_file(p, &wav, v, DEFAULT_SAMPLE_RATE) {
                Ok(secs) => eprintln!("wrote {} ({secs:.1} s of audio)", wav.display()),
                Err(e) => eprintln!("skipped {}: {e}", p.display()),
            }
        }
    }
    let path = write_report(run)?;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("wrote {} ({:.1} KB)", path.display(), size as f64 / 1024.0);
    Ok(())
}
