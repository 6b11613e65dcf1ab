//! Reading a MIDI file from disk: only a regular file (a FIFO would block for ever, a device never
//! end) of at most [`MAX_MIDI_BYTES`], read no further than that bound.

use std::path::Path;

/// The largest MIDI file read, in bytes: a bigger one is skipped, never read whole into memory
/// (`--data /dev/zero`, a sparse file). The longest piano MIDI files are a few MB.
pub const MAX_MIDI_BYTES: u64 = 256 << 20;

/// Whether a file with metadata `m` may be read as MIDI: a regular file (a FIFO would block the
/// walk for ever, a device never end) of at most [`MAX_MIDI_BYTES`].
pub fn readable(m: &std::fs::Metadata) -> Result<(), String> {
    if !m.is_file() {
        return Err("not a regular file (a FIFO, device or socket): not read".into());
    }
    if m.len() > MAX_MIDI_BYTES {
        return Err(format!("{} bytes, more than the {} MiB a MIDI file is read up to", m.len(), MAX_MIDI_BYTES >> 20));
    }
    Ok(())
}

/// The bytes of the MIDI file at `path`, checked as a corpus walk checks it (a regular file of at
/// most [`MAX_MIDI_BYTES`]) and read no further than that bound even if it grows meanwhile.
pub fn read_midi_file(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    readable(&std::fs::metadata(path).map_err(|e| e.to_string())?)?;
    let mut bytes = Vec::new();
    std::fs::File::open(path).and_then(|f| f.take(MAX_MIDI_BYTES + 1).read_to_end(&mut bytes)).map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_MIDI_BYTES {
        return Err(format!("more than the {} MiB a MIDI file is read up to", MAX_MIDI_BYTES >> 20));
    }
    Ok(bytes)
}
