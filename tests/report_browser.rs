//! The run report in a real browser: a tiny training run (which writes report.html after every
//! epoch and again with its sample), `baseline.json` and `stats.json` added, `etude report RUN`
//! rebuilding the page; then headless Chromium, driven through the DevTools protocol over a pipe,
//! opens it and checks: no console error, uncaught exception or failed load; every image decodes
//! with a non-zero size; the audio element reports a finite positive duration (the WAV's). A
//! screenshot of the whole page is kept at `TARGET/report-screenshot.png` (TARGET = the cargo
//! target folder).
//!
//! Chromium is found as `ETUDE_CHROMIUM`, else `chromium`, `chromium-browser`, `google-chrome` on
//! the PATH; `scripts/test.sh` installs Debian's `chromium` where it is missing. Without one the
//! test fails saying so (it never skips). Every browser session is bounded by 120 s.

mod cli_common;

use cli_common::*;
use base64::Engine as _;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Evaluated in the page once it has loaded: decodes every image, waits (at most 20 s) for every
/// audio element's metadata, and returns what it found.
const CHECK: &str = r#"(async () => {
  while (document.readyState !== 'complete') await new Promise(r => setTimeout(r, 50));
  const images = [];
  for (const img of Array.from(document.images)) {
    let decoded = true;
    try { await img.decode(); } catch (e) { decoded = false; }
    images.push({decoded, w: img.naturalWidth, h: img.naturalHeight, alt: img.alt});
  }
  const audios = await Promise.all(Array.from(document.querySelectorAll('audio')).map(a => new Promise(res => {
    const done = () => res({duration: a.duration, ready: a.readyState, error: a.error ? a.error.code : null});
    if (a.readyState >= 1 || a.error) return done();
    a.addEventListener('loadedmetadata', done, {once: true});
    a.addEventListener('error', done, {once: true});
    setTimeout(done, 20000);
  })));
  return {images, audios, height: document.documentElement.scrollHeight};
})()"#;

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("ETUDE_CHROMIUM").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
        if let Some(dir) = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).find(|d| d.join(name).is_file()) {
            return dir.join(name);
        }
    }
    panic!(
        "no Chromium found for the browser test: install Debian's `chromium` package (scripts/test.sh does it \
         where it is missing) or set ETUDE_CHROMIUM to a Chromium or Chrome binary"
    );
}

/// A headless Chromium driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`:
/// the browser reads NUL-terminated JSON commands on fd 3 and answers on fd 4; `sh` wires those to
/// our pipes). Everything is bounded by a deadline; the browser is killed on drop.
struct Browser {
    child: Child,
    to: ChildStdin,
    from: Receiver<Value>,
    next_id: u64,
    session: Option<String>,
    deadline: Instant,
    /// Console errors, uncaught exceptions and error log entries (failed loads) seen so far.
    errors: Vec<String>,
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        let chrome = chromium();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#)
            .arg(&chrome)
            .args(["--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run"])
            .args(["--disable-extensions", "--mute-audio", "--hide-scrollbars", "--disable-dev-shm-usage"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chrome.display()));
        let to = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let (tx, from) = channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1 << 16];
            while let Ok(n) = out.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Some(end) = buf.iter().position(|&b| b == 0) {
                    let msg: Vec<u8> = buf.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..msg.len() - 1]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Browser { child, to, from, next_id: 0, session: None, deadline: Instant::now() + Duration::from_secs(120), errors: Vec::new() }
    }

    /// Send a command (to the attached page when there is one) and wait for its answer.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = serde_json::json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            msg["sessionId"] = Value::String(s.clone());
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).and_then(|_| self.to.flush()).unwrap_or_else(|e| panic!("Chromium closed its pipe: {e}"));
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            let v = match self.from.recv_timeout(left) {
                Ok(v) => v,
                Err(RecvTimeoutError::Timeout) => panic!("Chromium did not answer {method} within the test's 120 s"),
                Err(RecvTimeoutError::Disconnected) => panic!("Chromium exited while running {method}"),
            };
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
            self.event(&v);
        }
    }

    fn event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.consoleAPICalled") if p["type"] == "error" || p["type"] == "assert" => {
                let args: Vec<String> = p["args"].as_array().into_iter().flatten().map(|a| a["value"].to_string()).collect();
                self.errors.push(format!("console.error: {}", args.join(" ")));
            }
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                self.errors.push(format!("exception: {} {}", d["text"], d["exception"]["description"]));
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                self.errors.push(format!("log: {}", p["entry"]["text"]));
            }
            _ => {}
        }
    }

    /// Open `page` in a new tab, attached, with console and log events on.
    fn open(profile: &Path, page: &Path) -> Browser {
        let mut b = Browser::start(profile);
        let target = b.call("Target.createTarget", serde_json::json!({"url": "about:blank"}));
        let attached = b.call("Target.attachToTarget", serde_json::json!({"targetId": target["targetId"], "flatten": true}));
        b.session = Some(attached["sessionId"].as_str().expect("a session id").to_string());
        for m in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(m, serde_json::json!({}));
        }
        b.call("Emulation.setDeviceMetricsOverride", serde_json::json!({"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": false}));
        let url = format!("file://{}", page.canonicalize().unwrap().display());
        let nav = b.call("Page.navigate", serde_json::json!({"url": url}));
        assert!(nav.get("errorText").is_none(), "{url}: {nav}");
        b
    }

    /// Run the page check ([`CHECK`]); returns {images, audios, height, errors}.
    fn check(&mut self) -> Value {
        let r = self.call("Runtime.evaluate", serde_json::json!({"expression": CHECK, "awaitPromise": true, "returnByValue": true}));
        assert!(r.get("exceptionDetails").is_none(), "the page check failed: {r}");
        let mut v = r["result"]["value"].clone();
        // Events that arrived while the check ran are in by now.
        while let Ok(e) = self.from.try_recv() {
            self.event(&e);
        }
        v["errors"] = serde_json::json!(self.errors);
        v
    }

    /// A PNG of the whole page, `height` CSS pixels tall (capped at 8000).
    fn screenshot(&mut self, height: u64) -> Vec<u8> {
        let clip = serde_json::json!({"x": 0, "y": 0, "width": 1200, "height": height.clamp(100, 8000), "scale": 1});
        let r = self.call("Page.captureScreenshot", serde_json::json!({"format": "png", "clip": clip, "captureBeyondViewport": true}));
        base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().expect("screenshot data")).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_report_loads_in_chromium_with_its_images_and_audio() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    etude_ok(&tiny_train("lstm", "cpu", "run", "2", &["--sample-length", "40"]), dir);
    let run = dir.join("run");
    for f in ["report.html", "loss.png", "sample.mid", "sample.png", "sample.wav"] {
        assert!(run.join(f).is_file(), "training wrote no {f}");
    }
    // generate --wav: the piece, its piano roll and its audio; nothing overwritten without --force.
    let gen = ["generate", "--model", "run/best.safetensors", "--backend", "cpu", "--length", "20", "--out", "g.mid", "--wav"];
    let (_, err) = etude_ok(&gen, dir);
    assert!(err.contains("voice: "), "{err}");
    for f in ["g.mid", "g.png", "g.wav"] {
        assert!(dir.join(f).is_file(), "generate --wav wrote no {f}: {err}");
    }
    let wav = std::fs::read(dir.join("g.wav")).unwrap();
    etude_fails(&gen, dir, &["exists", "--force"]);
    assert_eq!(std::fs::read(dir.join("g.wav")).unwrap(), wav);
    let mut forced = gen.to_vec();
    forced.push("--force");
    etude_ok(&forced, dir);
    etude_fails(&["report", "nowhere"], dir, &["nowhere", "not a folder"]);
    std::fs::create_dir(dir.join("empty")).unwrap();
    etude_fails(&["report", "empty"], dir, &["empty", "not a run folder"]);

    // What other parts of etude add to a run folder; the report shows them.
    // baseline.json as train writes it (the JSON of `etude eval --json`, shortened).
    std::fs::write(
        run.join("baseline.json"),
        r#"{"model": "lstm", "loss": 5.3, "baseline": {"unigram": 5.6, "best_order": 3, "best": 5.1}, "ngram_best": 5.1, "ratio": 1.04}"#,
    )
    .unwrap();
    // stats.json as train writes it (two of its sixteen features): one inside, one below.
    std::fs::write(
        run.join("stats.json"),
        r#"{"pieces": [{"name": "sample.mid", "features": [7.5, 30.0], "flags": []}],
            "set": [["notes_per_second", {"mean": 7.5, "std": 0.0, "min": 7.5, "max": 7.5}],
                    ["pitch_range", {"mean": 30.0, "std": 0.0, "min": 30.0, "max": 30.0}]],
            "reference_pieces": 3,
            "against": [{"feature": "notes_per_second", "reference": {"mean": 9.25, "std": 1.0, "min": 6.0, "max": 11.0}, "below": 0, "inside": 1, "above": 0},
                        {"feature": "pitch_range", "reference": {"mean": 40.0, "std": 3.0, "min": 36.0, "max": 44.0}, "below": 1, "inside": 0, "above": 0}]}"#,
    )
    .unwrap();
    std::fs::remove_file(run.join("sample.png")).unwrap();
    let (out, err) = etude_ok(&["report", "run"], dir);
    assert!(out.contains("report.html"), "{out}");
    assert!(run.join("sample.png").is_file(), "etude report did not redraw the missing piano roll: {err}");
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    for want in ["ngram_best", "notes_per_second", "9.25", "Metrics", "sample.mid", "data:audio/wav;base64,", "data:image/png;base64,"] {
        assert!(html.contains(want), "report.html lacks {want}");
    }
    // The headline (model, parameters, the validation figures beside the best n-gram) comes first,
    // then the curves, the pieces, one table of the statistics; the settings are folded at the end.
    for want in ["<b>lstm</b>", " parameters", "5.3000", "5.1000 (3-gram)", "1.040", "notes per second</td><td>6 &ndash; 11</td><td>7.500</td><td class=\"in\">inside", "pitch range</td><td>36 &ndash; 44</td><td>30</td><td class=\"out\">below", "1 of 2 features inside"] {
        assert!(html.contains(want), "report.html lacks {want}");
    }
    let at = |what: &str| html.find(what).unwrap_or_else(|| panic!("report.html lacks {what}"));
    assert!(at("class=\"headline\"") < at("<h2>Loss curves") && at("<h2>Loss curves") < at("<h2>Samples"));
    assert!(at("<h2>Samples") < at("<table class=\"stats\"") && at("<table class=\"stats\"") < at("<summary>Settings"));
    assert!(!html.contains("http://") && !html.contains("https://"), "the report must not reach the network");

    let profile = tempfile::tempdir().unwrap();
    let mut browser = Browser::open(profile.path(), &run.join("report.html"));
    let found = browser.check();
    assert_eq!(found["errors"], serde_json::json!([]), "errors on the page: {found}");
    let images = found["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "the loss curve and one piano roll: {found}");
    for img in images {
        assert!(img["decoded"] == true && img["w"].as_u64().unwrap() > 0 && img["h"].as_u64().unwrap() > 0, "{img}");
    }
    let audios = found["audios"].as_array().unwrap();
    assert_eq!(audios.len(), 1, "{found}");
    let wav = hound::WavReader::open(run.join("sample.wav")).unwrap();
    let wav_secs = wav.duration() as f64 / wav.spec().sample_rate as f64;
    let d = audios[0]["duration"].as_f64().unwrap_or(f64::NAN);
    assert!(d.is_finite() && d > 0.0, "audio duration {d}: {found}");
    assert!((d - wav_secs).abs() < 0.05, "the browser's duration {d} s vs the WAV's {wav_secs} s");

    // The screenshot, kept for people to look at.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().to_path_buf();
    let shot = target.join("report-screenshot.png");
    let bytes = browser.screenshot(found["height"].as_u64().unwrap_or(2400));
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{} bytes", bytes.len());
    std::fs::write(&shot, &bytes).unwrap();
    eprintln!("screenshot: {}", shot.display());
}

/// The checking script itself catches what it is meant to: a broken image, a broken audio file and
/// a script error (so a passing report check means something).
#[test]
fn the_page_check_catches_broken_images_audio_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let page = tmp.path().join("report.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><head><title>broken</title></head><body>\
         <img alt=\"bad\" src=\"data:image/png;base64,iVBORw0KGgoAAAAN\">\
         <audio controls src=\"data:audio/wav;base64,UklGRgAAAABXQVZF\"></audio>\
         <script>console.error('boom'); undefinedFunction();</script></body></html>",
    )
    .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let found = Browser::open(profile.path(), &page).check();
    let errors = found["errors"].to_string();
    assert!(errors.contains("boom") && errors.contains("undefinedFunction"), "{found}");
    let img = &found["images"][0];
    assert!(img["decoded"] == false || img["w"] == 0, "{found}");
    let d = found["audios"][0]["duration"].as_f64();
    assert!(!d.is_some_and(|d| d.is_finite() && d > 0.0), "{found}");
}
