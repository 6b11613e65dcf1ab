//! Files a command writes: every output goes through a temporary file beside its target that is
//! synced and renamed over it ([`atomic_write`]), so a crash or a full disk never leaves a
//! half-written file where a good one was; a folder is checked for writing before long work
//! whose result goes there ([`check_writable`]); temporaries left by killed processes are
//! removed ([`remove_stale_temps`]).

use std::path::Path;

/// Write `bytes` to `path` through a temporary file in the same folder (named with the process id,
/// so two processes never share one), synced, then renamed over `path`: a crash or a full disk
/// never leaves a half-written file where a good one was.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: cannot write ({e})", path.display())
    })
}

/// Fails with one line when `dir` (created if missing) cannot take a new file: checked before a
/// long computation whose result is to be written there.
pub fn check_writable(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let probe = dir.join(format!(".write-probe.{}.tmp", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| format!("{}: cannot write in this folder ({e})", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Remove the temporary files [`atomic_write`] leaves in `dir` when a process is killed while
/// writing (`.NAME.PID.tmp`), for every PID that is no longer running. Best effort: whatever
/// cannot be read or removed is left.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = temp_pid(&name) else { continue };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        // Without /proc (not Linux) no process can be told dead: keep the file.
        if !alive && Path::new("/proc/self").exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The PID in an [`atomic_write`] temporary name `.NAME.PID.tmp`.
fn temp_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (base, pid) = rest.rsplit_once('.')?;
    if base.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}
