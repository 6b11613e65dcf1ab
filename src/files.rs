//! Files a command writes: every output goes through a temporary file beside its target that is
//! synced and renamed over it ([`atomic_write`]), so a crash or a full disk never leaves a
//! half-written file where a good one was; a folder is checked for writing before long work
//! whose result goes there ([`check_writable`]); temporaries left by killed processes are
//! removed ([`remove_stale_temps`]). What stands at an output's path is never replaced by
//! something else, and an output never overwrites an input ([`check_output`]); one process at a
//! time writes a run folder ([`RunLock`]).

use std::path::{Path, PathBuf};

/// Write `bytes` to `path` through a temporary file in the same folder (named with the process id,
/// so two processes never share one), synced, then renamed over `path`: a crash or a full disk
/// never leaves a half-written file where a good one was. See [`atomic_write_with`] for what stands
/// at `path` already.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    atomic_write_with(path, |f| {
        use std::io::Write;
        f.write_all(bytes).map_err(|e| e.to_string())
    })
}

/// [`atomic_write`] with the bytes written by `fill` (streamed: the file need not fit in memory).
/// What stands at `path` is never replaced by something else: a regular file is replaced by the new
/// one (through a symbolic link, the file it names, the link kept); a device, FIFO or socket
/// (`/dev/null`, `/dev/stdout`, a pipe) is written in place; a folder is refused. `fill` gets a file
/// that may not seek when it is written in place.
pub fn atomic_write_with(path: &Path, fill: impl FnOnce(&mut std::fs::File) -> Result<(), String>) -> Result<(), String> {
    let cannot = |e: &dyn std::fmt::Display| format!("{}: cannot write ({e})", path.display());
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Err(format!("{}: is a folder, not a file; choose a file name", path.display())),
        Ok(m) if !m.is_file() => {
            // Not ours to replace: write into it (a device takes the bytes or says why it cannot).
            let mut f = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| cannot(&e))?;
            fill(&mut f).map_err(|e| cannot(&e))?;
            return f.sync_all().or_else(|e| if e.kind() == std::io::ErrorKind::InvalidInput { Ok(()) } else { Err(e) }).map_err(|e| cannot(&e));
        }
        _ => {}
    }
    // A symbolic link to a file: replace the file it names, and keep the link.
    let is_link = std::fs::symlink_metadata(path).map(|m| m.file_type().is_symlink()).unwrap_or(false);
    let target = if is_link { std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()) } else { path.to_path_buf() };
    let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let file_name = target.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let write = || -> Result<(), String> {
        let mut f = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        fill(&mut f)?;
        f.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &target).map_err(|e| e.to_string())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        cannot(&e)
    })
}

/// Whether `a` and `b` name the same existing file (through links, `..` and hard links).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(x), Ok(y)) => {
            use std::os::unix::fs::MetadataExt;
            x.dev() == y.dev() && x.ino() == y.ino()
        }
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => matches!((std::fs::canonicalize(a), std::fs::canonicalize(b)), (Ok(x), Ok(y)) if x == y),
        _ => false,
    }
}

/// The checks before a command writes the output `out` (`option` names it in the errors): its folder
/// exists; it is none of the command's `inputs` (files or folders it reads, each with what it is,
/// e.g. "the checkpoint --model reads"); it is not a folder;
/// and without `force` no file stands there. A device or FIFO (`/dev/null`) needs no `--force`:
/// writing into it loses nothing.
pub fn check_output(out: &Path, option: &str, force: bool, inputs: &[(&Path, &str)]) -> Result<(), String> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(format!("{option} {}: the folder {} does not exist", out.display(), parent.display()));
        }
    }
    if let Some((_, what)) = inputs.iter().find(|(i, _)| same_file(out, i)) {
        return Err(format!("{option} {} is {what}, which it would overwrite; choose another output", out.display()));
    }
    match std::fs::metadata(out) {
        Ok(m) if m.is_dir() => Err(format!("{option} {}: is a folder, not a file; choose a file name", out.display())),
        Ok(m) if m.is_file() && !force => {
            Err(format!("{} exists; choose another output or pass --force to overwrite it", out.display()))
        }
        _ => Ok(()),
    }
}

/// The name of a run folder's lock file ([`RunLock`]).
pub const LOCK_FILE: &str = ".etude.lock";

/// One writer per run folder: an exclusive `flock(2)` on `DIR/.etude.lock`, held while the value
/// lives. The kernel releases it when its process ends, however it ends (`kill -9` included), so a
/// dead process never holds it; the file holds the holder's PID for the message of the one refused.
pub struct RunLock {
    path: PathBuf,
    /// The folders taking the lock created (the run folder and any missing parent, `runs/`),
    /// innermost first: removed again when nothing else was put there.
    created: Vec<PathBuf>,
    _file: std::fs::File,
}

impl RunLock {
    /// Take the lock of the run folder `dir` (created if missing), or fail in one line when another
    /// process holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock, String> {
        let created: Vec<PathBuf> = dir.ancestors().take_while(|a| !a.as_os_str().is_empty() && !a.exists()).map(Path::to_path_buf).collect();
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        loop {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| format!("{}: cannot write in this folder ({e})", dir.display()))?;
            if !try_lock(&file).map_err(|e| format!("{}: cannot lock ({e})", path.display()))? {
                let holder = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u32>().ok());
                let who = holder.map_or("another process".to_string(), |p| format!("process {p}"));
                return Err(format!(
                    "{}: {who} is writing this run folder (another etude train); wait for it to end or choose another --out",
                    dir.display()
                ));
            }
            // The holder before us may have removed the file between our open and our lock: the
            // lock counts only on the file that is at the path now.
            if same_open_file(&file, &path) {
                use std::io::{Seek, Write};
                let mut f = &file;
                let _ = f.set_len(0);
                let _ = f.seek(std::io::SeekFrom::Start(0));
                let _ = write!(f, "{}", std::process::id());
                return Ok(RunLock { path, created, _file: file });
            }
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still held (a process waiting on the old file sees it gone and retries).
        let _ = std::fs::remove_file(&self.path);
        for dir in &self.created {
            // Only when empty: a failed start leaves no empty folder behind.
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

#[cfg(unix)]
fn try_lock(f: &std::fs::File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor this process owns, alive for the call.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(not(unix))]
fn try_lock(_: &std::fs::File) -> std::io::Result<bool> {
    Ok(true)
}

#[cfg(unix)]
fn same_open_file(f: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_open_file(_: &std::fs::File, _: &Path) -> bool {
    true
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

/// Paths in JSON (cache keys and headers, checkpoint metadata): a UTF-8 path as its string, exactly
/// as serde writes a path; any other as `{"bytes": [..]}` (on Unix its bytes), where serde fails
/// ("path contains invalid UTF-8"). Every file name round-trips. `#[serde(with = "path_json")]`
/// on a `PathBuf`, `path_json::vec` on a `Vec<PathBuf>`.
pub mod path_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::path::{Path, PathBuf};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Text(String),
        Bytes { bytes: Vec<u8> },
    }

    /// The bytes of a path (Unix: exactly; elsewhere its text, lossily).
    pub fn bytes_of(p: &Path) -> Vec<u8> {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            p.as_os_str().as_bytes().to_vec()
        }
        #[cfg(not(unix))]
        {
            p.to_string_lossy().as_bytes().to_vec()
        }
    }

    fn repr(p: &Path) -> Repr {
        match p.to_str() {
            Some(s) => Repr::Text(s.to_string()),
            None => Repr::Bytes { bytes: bytes_of(p) },
        }
    }

    fn path(r: Repr) -> PathBuf {
        match r {
            Repr::Text(s) => PathBuf::from(s),
            #[cfg(unix)]
            Repr::Bytes { bytes } => {
                use std::os::unix::ffi::OsStringExt;
                PathBuf::from(std::ffi::OsString::from_vec(bytes))
            }
            #[cfg(not(unix))]
            Repr::Bytes { bytes } => PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        repr(p).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Repr::deserialize(d).map(path)
    }

    pub mod vec {
        use super::*;

        pub fn serialize<S: Serializer>(ps: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
            ps.iter().map(|p| repr(p)).collect::<Vec<_>>().serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
            Vec::<Repr>::deserialize(d).map(|v| v.into_iter().map(path).collect())
        }
    }
}
