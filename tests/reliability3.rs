//! Issue 32's findings (a hostile user's third round), each reproduced against the binary (CPU
//! backend, tiny models and corpora): outputs that never replace what stands at their path nor an
//! input, settings checked before training by the code that loads them, and the rest one test per
//! finding, named after it.
mod cli_common;

use cli_common::*;
use std::path::Path;
use std::time::Duration;

/// A two-second MIDI file at `path`.
fn short_midi(path: &Path) {
    use etude::music::midi::{write_midi, Note, WriteOptions};
    let notes = [Note::new(60, 0.0, 1.0, 100), Note::new(64, 1.0, 2.0, 90), Note::new(67, 2.0, 4.0, 80)];
    std::fs::write(path, write_midi(&notes, &WriteOptions::default())).unwrap();
}

#[cfg(unix)]
fn is_fifo(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(p).map(|m| m.file_type().is_fifo()).unwrap_or(false)
}

/// Finding 1: an output never replaces what stands at its path: a FIFO is written into (a reader
/// gets the WAV), a symbolic link keeps being a link (the file it names gets the output), an input
/// is refused even with --force, and eval --dump-windows needs --force and never overwrites the
/// checkpoint it evaluates.
#[test]
#[cfg(unix)]
fn finding_01_outputs_never_replace_what_stands_at_their_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    short_midi(&dir.join("g.mid"));

    // A FIFO: written in place (on today's main it became a regular file).
    let fifo = dir.join("pipe.wav");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(&reader));
    });
    let o = etude(&["render", "g.mid", "-o", "pipe.wav", "--force", "--soundfont", "builtin"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(is_fifo(&fifo), "the FIFO was replaced by a regular file");
    let got = rx.recv_timeout(Duration::from_secs(10)).expect("the FIFO's reader got nothing").unwrap();
    assert!(got.starts_with(b"RIFF"), "the reader got {} bytes, not a WAV", got.len());
    // A FIFO needs no --force (nothing is lost writing into it): plot too.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = fifo.clone();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(&reader));
    });
    etude_ok(&["plot", "g.mid", "-o", "pipe.wav"], dir);
    assert!(is_fifo(&fifo));
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap().starts_with(b"\x89PNG"));

    // A symbolic link: the file it names gets the picture, the link stays.
    std::fs::write(dir.join("real.png"), b"old").unwrap();
    std::os::unix::fs::symlink("real.png", dir.join("link.png")).unwrap();
    etude_ok(&["plot", "g.mid", "-o", "link.png", "--force"], dir);
    assert!(std::fs::symlink_metadata(dir.join("link.png")).unwrap().file_type().is_symlink(), "the link was replaced");
    assert!(std::fs::read(dir.join("real.png")).unwrap().starts_with(b"\x89PNG"));

    // A folder is refused in one line.
    std::fs::create_dir(dir.join("folder.wav")).unwrap();
    one_line_error(&["render", "g.mid", "-o", "folder.wav", "--force"], dir, &["folder.wav", "folder"]);

    // The input itself, even with --force, and through another name.
    let midi = std::fs::read(dir.join("g.mid")).unwrap();
    one_line_error(&["render", "g.mid", "-o", "g.mid", "--force"], dir, &["g.mid", "input"]);
    one_line_error(&["plot", "g.mid", "-o", "./g.mid", "--force"], dir, &["g.mid", "input"]);
    std::fs::hard_link(dir.join("g.mid"), dir.join("same.mid")).unwrap();
    one_line_error(&["plot", "g.mid", "-o", "same.mid", "--force"], dir, &["same.mid", "input"]);
    assert_eq!(std::fs::read(dir.join("g.mid")).unwrap(), midi, "the input MIDI was overwritten");

    // eval --dump-windows: an existing file needs --force; the checkpoint is never overwritten.
    etude_ok(&tiny_train("lstm", "cpu", "run", "1", &["--sample-length", "0"]), dir);
    let ck = std::fs::read(dir.join("run/last.safetensors")).unwrap();
    let eval = |out: &str, force: bool| {
        let mut a = vec!["eval", "--model", "run/last.safetensors", "--backend", "cpu", "--no-baseline", "--max-windows", "3"];
        a.extend(["--dump-windows", out]);
        if force {
            a.push("--force");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let args = eval("run/last.safetensors", true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    one_line_error(&args, dir, &["--dump-windows", "checkpoint"]);
    assert_eq!(std::fs::read(dir.join("run/last.safetensors")).unwrap(), ck, "the checkpoint was overwritten");
    std::fs::write(dir.join("mine.json"), b"my notes").unwrap();
    let args = eval("mine.json", false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    one_line_error(&args, dir, &["mine.json", "--force"]);
    assert_eq!(std::fs::read(dir.join("mine.json")).unwrap(), b"my notes");
    let args = eval("mine.json", true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    etude_ok(&args, dir);
    assert!(std::fs::read(dir.join("mine.json")).unwrap().starts_with(b"{"));
}

/// Finding 2: a setting that loading a checkpoint refuses is refused before training, by the same
/// check, naming the option: no run is trained whose checkpoints would be "damaged or foreign".
#[test]
fn finding_02_settings_loading_checks_are_checked_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let args = tiny_train("lstm", "cpu", "nested/t", "1", &["--transpose", "200"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let line = one_line_error(&args, dir, &["--transpose", "200", "[0, 127]"]);
    assert!(!line.contains("damaged"), "{line}");
    // Nothing trained, and no folder left behind (neither the run's nor its parent).
    assert!(!dir.join("nested").exists(), "a run was trained, or its folders left behind");
    // The largest transposition that loads still trains, and its checkpoint loads.
    let args = tiny_train("lstm", "cpu", "t", "1", &["--transpose", "127", "--sample-length", "0"]);
    etude_ok(&args, dir);
    etude_ok(&["eval", "--model", "t/last.safetensors", "--backend", "cpu", "--no-baseline", "--max-windows", "3"], dir);
}

/// A piano-roll file `name` in `dir` with the given train and valid splits.
fn roll_file(dir: &Path, name: &str, train: &[etude::data::roll::Sequence], valid: &[etude::data::roll::Sequence]) {
    std::fs::write(dir.join(name), etude::data::roll::to_json_gz(&[("train", train), ("valid", valid)])).unwrap();
}

/// `n` sequences of `len` frames holding a few keys.
fn roll_seqs(n: usize, len: usize) -> Vec<etude::data::roll::Sequence> {
    (0..n).map(|i| (0..len).map(|t| vec![(30 + (i * 7 + t * 3) % 30) as u8]).collect()).collect()
}

/// Finding 5: a piano-roll run whose validation split holds a 2-frame sequence trains (it
/// panicked writing 88 targets into a buffer of 1), and one whose validation sequences are all a
/// single frame (nothing to score) is refused in one line instead of training with "valid NaN"
/// and no best.safetensors.
#[test]
fn finding_05_short_validation_sequences_in_piano_roll_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let roll = |out: &str, data: &str| -> Vec<String> {
        ["train", "--data", data, "--model", "lstm", "--embed", "8", "--hidden", "8", "--epochs", "1", "--batch", "4"]
            .iter()
            .chain(&["--backend", "cpu", "--out", out])
            .map(|s| s.to_string())
            .collect()
    };
    roll_file(dir, "two.pianoroll.json.gz", &roll_seqs(6, 12), &roll_seqs(1, 2));
    let a = roll("two", "two.pianoroll.json.gz");
    etude_ok(&a, dir);
    assert!(dir.join("two/best.safetensors").exists());
    roll_file(dir, "one.pianoroll.json.gz", &roll_seqs(6, 12), &roll_seqs(3, 1));
    let a = roll("one", "one.pianoroll.json.gz");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    one_line_error(&a, dir, &["one.pianoroll.json.gz", "validation", "two frames"]);
}

/// A training run of `epochs` epochs of 100 steps (about a second each in the test build) into
/// `out`: long enough for a test to act while it trains.
fn slow_train(out: &str, epochs: &str) -> Vec<String> {
    // 400 steps: an epoch of about a second on a fast 2-core machine, so that a signal sent just
    // after the first step lands inside epoch 1 (100 steps took 0.2 s on an AMD EPYC).
    let sizes = ["--steps-per-epoch", "400", "--window", "64", "--batch", "16", "--hidden", "32", "--embed", "16", "--dense", "32"];
    let mut extra: Vec<&str> = sizes.to_vec();
    extra.extend(["--sample-length", "0"]);
    tiny_train("lstm", "cpu", out, epochs, &extra)
}

/// A running `etude ARGS` in `dir` whose stderr lines arrive on a channel.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[String], dir: &Path) -> Running {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_etude"))
            .args(args)
            .current_dir(dir)
            .env("XDG_CACHE_HOME", dir.join(".cache"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Running { child, lines, seen: Vec::new() }
    }

    /// Wait (at most 60 s) for a stderr line holding `text`.
    fn wait_for(&mut self, text: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let hit = l.contains(text);
                self.seen.push(l);
                if hit {
                    return;
                }
            }
        }
        panic!("no line with {text:?} in:\n{}", self.seen.join("\n"));
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's PID.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// Wait for the end: (exit code, every stderr line).
    fn finish(mut self) -> (Option<i32>, String) {
        let status = self.child.wait().unwrap();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.seen.push(l);
        }
        (status.code(), self.seen.join("\n"))
    }
}

/// The tensors of a checkpoint, by name.
fn tensors(path: &Path) -> Vec<(String, Vec<u32>)> {
    let c = etude::run::checkpoint::Checkpoint::load(path).unwrap_or_else(|e| panic!("{e}"));
    c.tensors.iter().map(|t| (t.name.clone(), t.data.iter().map(|v| v.to_bits()).collect())).collect()
}

/// Finding 6: one run folder, one writer. A second train into a folder another one is writing is
/// refused in one line naming the folder (both used to succeed, metrics interleaved); the lock
/// dies with its process (kill -9), so the run then resumes.
#[test]
#[cfg(unix)]
fn finding_06_one_writer_per_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut a = Running::start(&slow_train("run", "3"), dir);
    a.wait_for("first step starts");
    let b = slow_train("run", "1");
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    one_line_error(&b, dir, &["run", "another etude train"]);
    a.wait_for("epoch 1/3");
    a.signal(libc::SIGKILL);
    let _ = a.finish();
    // The dead run's lock is no lock: its run resumes (or, killed before its first checkpoint,
    // a fresh run starts there).
    let resume = if dir.join("run/last.safetensors").exists() {
        vec!["train", "--out", "run", "--resume", "--epochs", "3", "--backend", "cpu", "--steps-per-epoch", "5"]
    } else {
        vec!["train", "--out", "run", "--epochs", "1", "--backend", "cpu", "--steps-per-epoch", "5"]
    };
    etude_ok(&resume, dir);
}

/// Finding 9: Ctrl-C finishes the step, writes a checkpoint --resume continues exactly (the same
/// parameters and optimizer state as a run never interrupted), says so in one line and exits
/// non-zero; a second Ctrl-C ends the process at once (status 130).
#[test]
#[cfg(unix)]
fn finding_09_ctrl_c_saves_a_checkpoint_that_resume_continues_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    etude_ok(&slow_train("whole", "2"), dir);

    let mut cut = Running::start(&slow_train("cut", "2"), dir);
    cut.wait_for("first step starts");
    std::thread::sleep(Duration::from_millis(50));
    cut.signal(libc::SIGINT);
    let (code, err) = cut.finish();
    assert_eq!(code, Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("interrupted at epoch 1 step") && errors[0].contains("--resume"), "{err}");
    assert!(metrics_rows(&dir.join("whole")).len() == 2);
    etude_ok(&["train", "--out", "cut", "--resume", "--epochs", "2", "--backend", "cpu"], dir);
    assert!(tensors(&dir.join("cut/last.safetensors")) == tensors(&dir.join("whole/last.safetensors")), "the resumed run differs");
    assert_eq!(metrics_rows(&dir.join("cut")).len(), 2);

    // Twice: at once, with status 130. The checkpoint's temporary file is made a FIFO first, so
    // that writing it blocks (no reader) and the second Ctrl-C surely comes before it is written.
    let mut twice = Running::start(&slow_train("twice", "2"), dir);
    twice.wait_for("first step starts");
    let tmp_name = dir.join(format!("twice/.last.safetensors.{}.tmp", twice.child.id()));
    assert!(std::process::Command::new("mkfifo").arg(&tmp_name).status().unwrap().success());
    twice.signal(libc::SIGINT);
    twice.wait_for("Ctrl-C");
    twice.signal(libc::SIGINT);
    let (code, err) = twice.finish();
    assert_eq!(code, Some(130), "{err}");
}

/// Finding 9, second part: a failure between an epoch's checkpoint and its metrics row (kill -9
/// there lost the row in 2 of 8 runs) no longer loses the row: the row is written first, and a
/// row of an epoch no checkpoint holds is dropped and written again by --resume. Here the append
/// of epoch 2 fails (metrics.csv is made a folder while epoch 2 trains).
#[test]
fn finding_09_a_failure_between_checkpoint_and_metrics_row_loses_no_row() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut run = Running::start(&slow_train("run", "3"), dir);
    let csv = dir.join("run/metrics.csv");
    run.wait_for("epoch 1/3");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&csv).map(|t| t.lines().count()).unwrap_or(0) < 2 {
        assert!(std::time::Instant::now() < deadline, "no metrics row for epoch 1");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::rename(&csv, dir.join("kept.csv")).unwrap();
    std::fs::create_dir(&csv).unwrap();
    let (code, err) = run.finish();
    assert_ne!(code, Some(0), "the append should have failed:\n{err}");
    std::fs::remove_dir(&csv).unwrap();
    std::fs::rename(dir.join("kept.csv"), &csv).unwrap();
    etude_ok(&["train", "--out", "run", "--resume", "--epochs", "3", "--backend", "cpu"], dir);
    let epochs: Vec<String> = metrics_rows(&dir.join("run")).iter().map(|r| r[0].clone()).collect();
    assert_eq!(epochs, ["1", "2", "3"]);
}

/// Four pieces of the corpus in `dir/folder` (raw bytes), named `p\xf0.mid` .. `p\xf3.mid`: not
/// UTF-8, and all alike once displayed (U+FFFD).
#[cfg(unix)]
fn non_utf8_pieces(dir: &Path, folder: &[u8]) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let d = dir.join(std::ffi::OsStr::from_bytes(folder));
    std::fs::create_dir_all(&d).unwrap();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (i, name) in ["bethena.mid", "maple-leaf-rag.mid", "satie-gymnopedie-no1.mid", "elite-syncopations.mid"].iter().enumerate() {
        let file = [b"p".as_slice(), &[0xf0 + i as u8], b".mid"].concat();
        std::fs::copy(corpus.join(name), d.join(std::ffi::OsStr::from_bytes(&file))).unwrap();
    }
    d
}

/// Finding 3: file names that are not UTF-8 no longer panic prepare, inspect and train (serde
/// refused them in the cache key and header); every piece keeps a name of its own (`\xNN`), so
/// with --no-cache a training piece is no longer also scored as a validation piece; a data folder
/// whose own name is not UTF-8 goes into checkpoints and back.
#[test]
#[cfg(unix)]
fn finding_03_file_names_that_are_not_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = non_utf8_pieces(dir, b"d");
    let (_, err) = etude_ok(&["prepare", "--data", "d"], dir);
    assert!(err.contains("4 files") || err.contains("4 pieces"), "{err}");
    let (out, _) = etude_ok(&["inspect", "d"], dir);
    assert!(out.contains("files used     4"), "{out}");
    for (run, cache) in [("nc", true), ("c", false)] {
        let mut a = tiny_train("lstm", "cpu", run, "1", &["--data", "d", "--val-fraction", "0.3", "--sample-length", "0"]);
        if cache {
            a.push("--no-cache".into());
        }
        let (_, err) = etude_ok(&a, dir);
        assert!(!err.contains("panicked"), "{err}");
        let ck = etude::run::checkpoint::Checkpoint::load(&dir.join(run).join("last.safetensors")).unwrap();
        let valid = ck.meta["valid_pieces"].as_array().unwrap().len();
        assert_eq!(valid, 1, "{}", ck.meta["valid_pieces"]);
        // eval scores the validation pieces only: one piece, not every piece sharing its name.
        let (json, _) = etude_ok(&["eval", "--model", &format!("{run}/last.safetensors"), "--backend", "cpu", "--no-baseline", "--json"], dir);
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(v["pieces"], 1, "{json}");
    }
    assert!(d.is_dir());
    // A data folder whose name is not UTF-8: into the checkpoint and back.
    non_utf8_pieces(dir, b"f\xff");
    use std::os::unix::ffi::OsStrExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_etude"));
    let a = tiny_train("lstm", "cpu", "f", "1", &["--val-fraction", "0.3", "--sample-length", "0"]);
    cmd.args(&a).arg("--data").arg(std::ffi::OsStr::from_bytes(b"f\xff")).current_dir(dir).env("XDG_CACHE_HOME", dir.join(".cache"));
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    etude_ok(&["eval", "--model", "f/last.safetensors", "--backend", "cpu", "--no-baseline", "--max-windows", "3"], dir);
}

/// `etude ARGS` in `dir`, in at most 4 GiB of address space, killed after `secs` seconds:
/// `None` when it had to be killed (it hung).
#[cfg(unix)]
fn etude_within(args: &[&str], dir: &Path, secs: u64) -> Option<std::process::Output> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_etude"));
    cmd.args(args)
        .current_dir(dir)
        .env("XDG_CACHE_HOME", dir.join(".cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 4 << 30, rlim_max: 4 << 30 };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Finding 8: no hang. A FIFO named `*.mid` in a data folder is skipped, not opened (the open
/// blocked prepare, inspect and train for ever); `--data /dev/zero` is refused, not read until
/// memory runs out; `report` draws a metrics.csv holding a loss near f64::MAX (its axis
/// overflowed and plotters looked for ticks for ever).
#[test]
#[cfg(unix)]
fn finding_08_no_hangs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    builtin_pieces(dir, "d", &["bethena.mid", "maple-leaf-rag.mid"]);
    assert!(std::process::Command::new("mkfifo").arg(dir.join("d/pipe.mid")).status().unwrap().success());
    for args in [&["prepare", "--data", "d"][..], &["inspect", "d"][..]] {
        let o = etude_within(args, dir, 30).unwrap_or_else(|| panic!("etude {} hung on a FIFO", args.join(" ")));
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        assert!(err.contains("d/pipe.mid: not a regular file"), "{err}");
    }
    let o = etude_within(&["inspect", "/dev/zero"], dir, 30).expect("inspect /dev/zero hung");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("/dev/zero: not a regular file"), "{err}");

    etude_ok(&tiny_train("lstm", "cpu", "run", "2", &["--sample-length", "0"]), dir);
    let csv = dir.join("run/metrics.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut f: Vec<String> = lines[1].split(',').map(str::to_string).collect();
    f[2] = "1.7e308".into();
    lines[1] = f.join(",");
    std::fs::write(&csv, lines.join("\n") + "\n").unwrap();
    let o = etude_within(&["report", "run"], dir, 60).expect("report hung on a loss near f64::MAX");
    assert!(o.status.success(), "{}", stderr(&o));
}

/// `etude ARGS` in `dir` as the user nobody when run as root (root reads any file, so a
/// permission error needs another user), else as ourselves.
#[cfg(unix)]
fn etude_unprivileged(args: &[&str], dir: &Path) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_etude"));
    cmd.args(args).current_dir(dir).env("XDG_CACHE_HOME", dir.join(".cache"));
    // SAFETY: setgid and setuid only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::geteuid() == 0 && (libc::setgid(65534) != 0 || libc::setuid(65534) != 0) {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().unwrap()
}

/// Finding 7: the token cache follows the files. A file that could not be read (permission
/// denied) is read again once it can be (its error was kept while its size and modification time
/// stayed); a file rewritten with the same size and its modification time set back, long after the
/// build, is noticed (its change time moved).
#[test]
#[cfg(unix)]
fn finding_07_the_token_cache_follows_the_files() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    builtin_pieces(dir, "d", &["bethena.mid", "maple-leaf-rag.mid", "satie-gymnopedie-no1.mid"]);
    std::fs::create_dir(dir.join("cache")).unwrap();
    std::fs::set_permissions(dir.join("cache"), std::fs::Permissions::from_mode(0o777)).unwrap();
    // Modified an hour ago: outside the 2 s in which the cache hashes a file again.
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for f in std::fs::read_dir(dir.join("d")).unwrap() {
        std::fs::File::options().write(true).open(f.unwrap().path()).unwrap().set_modified(hour_ago).unwrap();
    }
    let locked = dir.join("d/satie-gymnopedie-no1.mid");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let prepare = ["prepare", "--data", "d", "--cache", "cache"];
    let o = etude_unprivileged(&prepare, dir);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("satie-gymnopedie-no1.mid: Permission denied"), "{}", stderr(&o));
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = etude_unprivileged(&prepare, dir);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("Permission denied") && err.contains("0 skipped"), "the read error was kept:\n{err}");

    // Same size, modification time set back an hour after the change: still noticed.
    let target = dir.join("d/bethena.mid");
    std::fs::File::options().write(true).open(&target).unwrap().set_modified(hour_ago).unwrap();
    etude_ok(&prepare, dir);
    let (out, _) = etude_ok(&prepare, dir);
    assert!(out.contains("up to date"), "{out}");
    let mut bytes = std::fs::read(&target).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x01;
    std::fs::write(&target, &bytes).unwrap();
    std::fs::File::options().write(true).open(&target).unwrap().set_modified(hour_ago).unwrap();
    let (_, err) = etude_ok(&prepare, dir);
    assert!(err.contains("1 files changed"), "a changed file was taken as up to date:\n{err}");
}

/// `bytes` gzipped as one member.
fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Finding 10: messages that misled now say what is so, in one line.
#[test]
fn finding_10_messages_say_what_is_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    etude_ok(&tiny_train("lstm", "cpu", "run", "1", &["--sample-length", "0"]), dir);
    let ck = "run/last.safetensors";

    // eval of a token checkpoint on piano-roll data names the data, not the checkpoint, as --data.
    roll_file(dir, "r.pianoroll.json.gz", &roll_seqs(4, 8), &roll_seqs(2, 8));
    let line = one_line_error(&["eval", "--model", ck, "--data", "r.pianoroll.json.gz", "--backend", "cpu"], dir, &["--data r.pianoroll.json.gz"]);
    assert!(!line.contains(&format!("--data {ck}")), "{line}");

    // --cache at a regular file: said so, not "damaged" then "File exists". prepare (whose work is
    // the cache) fails; train goes on without the cache, as with any cache it cannot write.
    std::fs::write(dir.join("cfile"), b"mine").unwrap();
    builtin_pieces(dir, "d", &["bethena.mid", "maple-leaf-rag.mid"]);
    let line = one_line_error(&["prepare", "--data", "d", "--cache", "cfile"], dir, &["cfile", "not a folder"]);
    assert!(!line.contains("damaged"), "{line}");
    let a = tiny_train("lstm", "cpu", "c", "1", &["--data", "d", "--cache", "cfile", "--sample-length", "0"]);
    let (_, err) = etude_ok(&a, dir);
    assert!(err.contains("cfile: is a file, not a folder; continuing without it"), "{err}");
    assert!(!err.contains("damaged") && !err.contains("File exists"), "{err}");
    assert_eq!(std::fs::read(dir.join("cfile")).unwrap(), b"mine");

    // A tempo no MIDI file holds is refused (the file clamped it while the length was reported at it).
    one_line_error(&["generate", "--model", ck, "--tempo", "1e-9", "--backend", "cpu", "--out", "t.mid"], dir, &["--tempo", "3.58"]);

    // Negative values reach the option's own check (not clap's "unexpected argument '-1'").
    one_line_error(&["generate", "--model", ck, "--temperature", "-1", "--backend", "cpu", "--out", "t.mid"], dir, &["--temperature must be positive"]);
    let err = etude_fails(&["generate", "--model", ck, "--length", "-5", "--backend", "cpu"], dir, &["--length"]);
    assert!(!err.contains("unexpected argument"), "{err}");

    // --include-prime says what it writes.
    let (help, _) = etude_ok(&["generate", "--help"], dir);
    assert!(help.contains("not the whole --prime file"), "{help}");

    // The note count printed is the count of the file written: writing keeps one of two notes of
    // a pitch starting on one tick, so the decoded notes could be one more than the file's.
    {
        use etude::music::midi::{write_midi, Note, WriteOptions};
        let notes = [Note::new(60, 0.0, 1.0, 90), Note::new(60, 0.0, 2.0, 90), Note::new(64, 0.0, 1.0, 90)];
        assert_eq!(etude::generate::written_notes(&write_midi(&notes, &WriteOptions::default())).len(), 2);
    }
    for seed in 0..6 {
        let out = format!("g{seed}.mid");
        let o = etude(&["generate", "--model", ck, "--length", "300", "--temperature", "3", "--seed", &seed.to_string(), "--backend", "cpu", "--out", &out], dir);
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        let said: usize = err.split(" notes,").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap_or_else(|_| panic!("{err}"));
        let bytes = std::fs::read(dir.join(&out)).unwrap();
        let held = etude::music::midi::read_midi(&bytes, &etude::music::midi::ReadOptions::default()).unwrap().notes.len();
        assert_eq!(said, held, "seed {seed}: said {said} notes, the file holds {held}:\n{err}");
    }

    // A setting out of range in a checkpoint: short numbers, not 330 digits.
    let mut c = etude::run::checkpoint::Checkpoint::load(&dir.join(ck)).unwrap();
    c.meta["optim"]["lr"] = serde_json::json!(-1.0);
    c.save(&dir.join("bad.safetensors")).unwrap();
    let line = one_line_error(&["eval", "--model", "bad.safetensors", "--backend", "cpu"], dir, &["optim.lr = -1"]);
    assert!(line.len() < 250 && !line.contains("0000000000000000000000"), "{line}");

    // Piano-roll files: every gzip member read; trailing garbage, a second JSON document and a
    // file that is neither gzip nor JSON said as such.
    let json = etude::data::roll::to_json(&[("train", &roll_seqs(4, 8)), ("valid", &roll_seqs(2, 8))]);
    let half = json.len() / 2;
    let two = [gz(&json.as_bytes()[..half]), gz(&json.as_bytes()[half..])].concat();
    std::fs::write(dir.join("two.pianoroll.json.gz"), &two).unwrap();
    let (text, _) = etude_ok(&["eval", "--model", "roll/best.safetensors", "--data", "two.pianoroll.json.gz", "--backend", "cpu"], &{
        let a = ["train", "--data", "two.pianoroll.json.gz", "--model", "lstm", "--embed", "8", "--hidden", "8", "--epochs", "1"];
        etude_ok(&[&a[..], &["--backend", "cpu", "--out", "roll"]].concat(), dir);
        dir.to_path_buf()
    });
    assert!(text.contains("nats/frame"), "{text}");
    let garbage = [gz(json.as_bytes()), b"garbage after the member".to_vec()].concat();
    std::fs::write(dir.join("g.pianoroll.json.gz"), &garbage).unwrap();
    one_line_error(&["eval", "--model", "roll/best.safetensors", "--data", "g.pianoroll.json.gz", "--backend", "cpu"], dir, &["gzip"]);
    let bad = etude::data::roll::to_json(&[("train", &roll_seqs(1, 2))]).replace("[[", "[[200,");
    let second = [gz(json.as_bytes()), gz(bad.as_bytes())].concat();
    std::fs::write(dir.join("s.pianoroll.json.gz"), &second).unwrap();
    one_line_error(&["eval", "--model", "roll/best.safetensors", "--data", "s.pianoroll.json.gz", "--backend", "cpu"], dir, &["more than one JSON document"]);
    std::fs::write(dir.join("n.pianoroll.json.gz"), b"PK\x03\x04 a zip file").unwrap();
    one_line_error(&["eval", "--model", "roll/best.safetensors", "--data", "n.pianoroll.json.gz", "--backend", "cpu"], dir, &["neither gzip data nor JSON"]);
}

/// Finding 11: a run folder inside a data folder is refused (its sample.mid became a training
/// piece of the next run); a checkpoint whose checksum key was removed is refused (it loaded with
/// flipped tensor bytes); a piano-roll gzip bomb is refused before it is inflated whole.
#[test]
fn finding_11_run_folder_in_data_and_gzip_bomb() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    builtin_pieces(dir, "d", &["bethena.mid", "maple-leaf-rag.mid"]);
    let a = tiny_train("lstm", "cpu", "d/run", "1", &["--data", "d"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    one_line_error(&a, dir, &["--out d/run", "inside the --data folder d"]);
    assert!(!dir.join("d/run").exists());

    // A checkpoint whose checksum key was removed and a tensor byte flipped (the value stays
    // finite): refused, where it loaded.
    etude_ok(&tiny_train("lstm", "cpu", "run", "1", &["--sample-length", "0"]), dir);
    let bytes = std::fs::read(dir.join("run/last.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert!(header["__metadata__"].as_object_mut().unwrap().remove("checksum").is_some());
    let mut text = serde_json::to_vec(&header).unwrap();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut data = bytes[8 + n..].to_vec();
    data[4] ^= 0x01; // the lowest mantissa bit of the first tensor's second value
    let forged = [(text.len() as u64).to_le_bytes().to_vec(), text, data].concat();
    std::fs::write(dir.join("forged.safetensors"), forged).unwrap();
    one_line_error(&["eval", "--model", "forged.safetensors", "--backend", "cpu", "--no-baseline"], dir, &["forged.safetensors", "no checksum"]);

    // 100 MiB of JSON whitespace in 100 KiB of gzip.
    let bomb = gz(&[b"{\"train\": [] ".as_slice(), &vec![b' '; 100 << 20], b"}"].concat());
    assert!(bomb.len() < 1 << 20);
    std::fs::write(dir.join("bomb.pianoroll.json.gz"), &bomb).unwrap();
    one_line_error(&["train", "--data", "bomb.pianoroll.json.gz", "--backend", "cpu", "--out", "b"], dir, &["bomb.pianoroll.json.gz", "MiB"]);
}

/// A MIDI file at `path` of `notes` (pitch, start, end in quarters) at 120 bpm.
fn midi_of(path: &Path, notes: &[(u8, f64, f64)]) {
    use etude::music::midi::{write_midi, Note, WriteOptions};
    let notes: Vec<Note> = notes.iter().map(|&(p, s, e)| Note::new(p, s, e, 90)).collect();
    std::fs::write(path, write_midi(&notes, &WriteOptions::default())).unwrap();
}

/// Finding 4: render streams. An hour of audio renders in 200 MB of address space (it held the
/// whole mix and the WAV bytes: 345 MB at 8 kHz, 19 GB for 10 hours at 44.1 kHz); a piece longer
/// than a WAV file holds is refused in one line before any work, and `report` goes on past it;
/// 20,000 stacked notes render in seconds (time grew with notes x length).
#[test]
#[cfg(unix)]
fn finding_04_render_is_bounded_in_memory_and_time() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // One note every 20 quarters (10 s) for an hour.
    let hour: Vec<(u8, f64, f64)> = (0..360).map(|i| (60, i as f64 * 20.0, i as f64 * 20.0 + 1.0)).collect();
    midi_of(&dir.join("hour.mid"), &hour);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_etude"));
    cmd.args(["render", "hour.mid", "--soundfont", "builtin", "--sample-rate", "8000"]).current_dir(dir);
    // SAFETY: setrlimit only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 200 << 20, rlim_max: 200 << 20 };
            libc::setrlimit(libc::RLIMIT_AS, &lim);
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "status {:?}: {}", o.status, stderr(&o));
    let r = hound::WavReader::open(dir.join("hour.wav")).unwrap();
    assert_eq!(r.spec().sample_rate, 8000);
    assert!(r.duration() as f64 / 8000.0 > 3590.0, "{} frames", r.duration());

    // 10^6 quarters: 139 hours, more than a WAV holds.
    midi_of(&dir.join("long.mid"), &[(60, 0.0, 1.0), (62, 999_998.0, 999_999.0)]);
    let started = std::time::Instant::now();
    one_line_error(&["render", "long.mid", "--soundfont", "builtin"], dir, &["long.mid", "hours of audio", "WAV"]);
    assert!(started.elapsed() < Duration::from_secs(10));

    // 20,000 notes at once, half a second each.
    let stacked: Vec<(u8, f64, f64)> = (0..20_000).map(|i| (21 + (i % 88) as u8, 0.0, 1.0)).collect();
    midi_of(&dir.join("stacked.mid"), &stacked);
    let started = std::time::Instant::now();
    etude_ok(&["render", "stacked.mid", "--soundfont", "builtin"], dir);
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());

    // report renders every piece of a run folder: the too-long one is skipped, the report written.
    etude_ok(&tiny_train("lstm", "cpu", "run", "1", &["--sample-length", "0"]), dir);
    std::fs::copy(dir.join("long.mid"), dir.join("run/long.mid")).unwrap();
    let (_, err) = etude_ok(&["report", "run", "--soundfont", "builtin"], dir);
    assert!(err.contains("long.mid") && err.contains("hours of audio"), "{err}");
    assert!(dir.join("run/report.html").exists());
}
