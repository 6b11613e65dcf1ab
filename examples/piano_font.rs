//! Build etude's bundled piano from FluidR3_GM.sf2: `cargo run --release --example piano_font --
//! FluidR3_GM.sf2 assets/piano/etude-piano.sf2` (scripts/piano-font.sh fetches the source and runs
//! this). The output depends on the source's bytes only.
//!
//! The format code is the library's own `src/music/sf2.rs`, compiled in here by path rather than
//! through the library, which embeds the font this writes (so the font can be rebuilt where it is
//! missing).

#[path = "../src/music/sf2.rs"]
mod sf2;

use sf2::piano_from_fluid;
use std::path::PathBuf;

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [src, out] = args.as_slice() else {
        eprintln!("usage: piano_font FluidR3_GM.sf2 OUT.sf2 (the source: sha256 {})", sf2::FLUID_SHA256);
        std::process::exit(2);
    };
    let run = || -> Result<(), String> {
        let bytes = std::fs::read(src).map_err(|e| format!("{}: {e}", src.display()))?;
        let (font, kept) = piano_from_fluid(&bytes).map_err(|e| format!("{}: {e}", src.display()))?;
        // A temporary file beside the output, then a rename: a failed run leaves the old font.
        let tmp = out.with_extension("sf2.tmp");
        std::fs::write(&tmp, &font).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, out).map_err(|e| format!("{}: {e}", out.display()))?;
        println!(
            "{}: preset \"{}\", {} instrument(s), {} samples, {} sample points, {} bytes",
            out.display(),
            kept.preset_name,
            kept.instruments,
            kept.samples,
            kept.points,
            font.len()
        );
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("piano_font: {e}");
        std::process::exit(1);
    }
}
