//! The run report: `RUN/report.html`, one self-contained page (no network, no script): the run's
//! settings, the metrics table, the loss curves, every piece in the run folder (`*.mid`) with its
//! piano roll and an `<audio>` player, the sample statistics (`stats.json`), the n-gram baseline
//! (`baseline.json`) and held-out figures (`heldout.json`) when the run has them.
//!
//! Images and audio are inlined as `data:` URIs, so the page can be mailed or moved alone. The
//! page is written through a temp file + rename; training rewrites it after every epoch and
//! `etude report RUN` rebuilds it (drawing and rendering what is missing first).

use crate::run::checkpoint::Checkpoint;
use base64::Engine as _;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The report's file name inside a run folder.
pub const REPORT: &str = "report.html";

/// Escape text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The `etude` metadata of a run's checkpoint, read and checked by [`Checkpoint::load`] (the
/// checksum included); `None` when it is missing or damaged (the report then has no settings).
pub fn checkpoint_meta(path: &Path) -> Option<Value> {
    Checkpoint::load(path).ok().map(|ck| ck.meta)
}

/// Flatten JSON into (dotted key, value) rows; long arrays of scalars are shortened.
pub fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    let key = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                flatten(&key(k), x, out);
            }
        }
        Value::Array(a) if a.iter().any(|x| x.is_object()) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&key(&i.to_string()), x, out);
            }
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().take(12).map(scalar).collect();
            let more = if a.len() > 12 { format!(", ... ({} in all)", a.len()) } else { String::new() };
            out.push((prefix.to_string(), format!("[{}{more}]", items.join(", "))));
        }
        _ => out.push((prefix.to_string(), scalar(v))),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{}", (f * 1e6).round() / 1e6),
            _ => n.to_string(),
        },
        _ => v.to_string(),
    }
}

fn table(rows: &[(String, String)]) -> String {
    let mut s = String::from("<table class=\"kv\">\n");
    for (k, v) in rows {
        let _ = writeln!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    s.push_str("</table>\n");
    s
}

/// The pieces (`*.mid`, `*.midi`) of a run folder, sorted by name.
pub fn pieces(run: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(run)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("mid") || e.eq_ignore_ascii_case("midi")))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Most fields shown from one JSON file.
const MAX_ROWS: usize = 300;

fn json_section(run: &Path, file: &str, title: &str, absent: &str) -> String {
    let path = run.join(file);
    let mut s = format!("<h2>{}</h2>\n", esc(title));
    match std::fs::read_to_string(&path) {
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(v) => {
                let mut rows = Vec::new();
                flatten("", &v, &mut rows);
                if rows.len() > MAX_ROWS {
                    let more = rows.len() - MAX_ROWS;
                    rows.truncate(MAX_ROWS);
                    rows.push(("...".into(), format!("{more} more fields in {file}")));
                }
                let _ = writeln!(s, "<p class=\"note\">from {}</p>", esc(file));
                s.push_str(&table(&rows));
            }
            Err(e) => {
                let _ = writeln!(s, "<p class=\"note\">{} is not valid JSON: {}</p>", esc(file), esc(&e.to_string()));
            }
        },
        Err(_) => {
            let _ = writeln!(s, "<p class=\"note\">{}</p>", esc(absent));
        }
    }
    s
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.25em;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:1.05em;margin-bottom:6px}table{border-collapse:collapse;font-size:0.9em}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f5f5f5}
table.kv th{text-align:left;font-weight:normal;color:#555}table.kv td{text-align:left}
img{max-width:100%;height:auto;border:1px solid #eee;display:block}.roll{overflow-x:auto}.roll img{max-width:none}
audio{width:100%;max-width:600px;margin:6px 0}.note{color:#666;font-size:0.9em}";

/// Build the report page of the run folder `run` from what is in it (nothing is drawn or rendered
/// here) and return the HTML.
pub fn build(run: &Path) -> String {
    build_with(run, None, None)
}

/// [`build`] with the settings and the metrics given: `meta`, the `etude` metadata of the run's
/// last checkpoint, and `metrics`, the header and rows of its metrics, which a caller that has just
/// written or read them holds in memory (`None`: read from the checkpoint's header and from
/// `metrics.csv`).
pub fn build_with(run: &Path, meta: Option<&Value>, metrics: Option<&[Vec<String>]>) -> String {
    let name = run.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| run.display().to_string());
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>etude run {0}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>etude run {0}</h1>\n",
        esc(&name)
    );
    // Settings.
    let meta = match meta {
        Some(m) => Some(m.clone()),
        None => ["last.safetensors", "best.safetensors"].iter().find_map(|f| checkpoint_meta(&run.join(f))),
    };
    h.push_str("<h2>Settings</h2>\n");
    match &meta {
        Some(m) => {
            let mut rows = Vec::new();
            for key in ["model", "data", "optim", "progress"] {
                if let Some(v) = m.get(key) {
                    let mut r = Vec::new();
                    flatten(key, v, &mut r);
                    // The data spec repeats the tokenizer's vocabulary-free settings; keep it whole.
                    rows.extend(r);
                }
            }
            if let Some(v) = m.get("valid_pieces").and_then(|v| v.as_array()) {
                let names: Vec<String> = v.iter().map(scalar).collect();
                rows.push(("validation pieces".into(), format!("{}: {}", names.len(), names.join(", "))));
            }
            if let Some(n) = m.get("vocab").and_then(|v| v.get("tokens")).and_then(|t| t.as_array()).map(|t| t.len()) {
                rows.push(("vocabulary size".into(), n.to_string()));
            }
            if let Some(v) = m.get("etude_version").and_then(|v| v.as_str()) {
                rows.push(("etude version".into(), v.to_string()));
            }
            h.push_str(&table(&rows));
        }
        None => h.push_str("<p class=\"note\">no checkpoint yet (last.safetensors): settings unknown</p>\n"),
    }
    // Metrics.
    h.push_str("<h2>Metrics</h2>\n");
    let table = match metrics {
        Some(rows) => Some(rows.to_vec()),
        None => crate::run::metrics::read_table(&run.join("metrics.csv")),
    };
    match table {
        Some(rows) if rows.len() > 1 => {
            h.push_str("<table class=\"metrics\">\n");
            for (i, row) in rows.iter().enumerate() {
                let tag = if i == 0 { "th" } else { "td" };
                h.push_str("<tr>");
                for cell in row {
                    let _ = write!(h, "<{tag}>{}</{tag}>", esc(&cell.replace('_', " ")));
                }
                h.push_str("</tr>\n");
            }
            h.push_str("</table>\n");
        }
        _ => h.push_str("<p class=\"note\">no epoch finished yet (metrics.csv)</p>\n"),
    }
    // Loss curves.
    h.push_str("<h2>Loss curves</h2>\n");
    match std::fs::read(run.join("loss.png")) {
        Ok(png) => {
            let _ = writeln!(h, "<img class=\"loss\" alt=\"training and validation loss per epoch\" src=\"{}\">", data_uri("image/png", &png));
        }
        Err(_) => h.push_str("<p class=\"note\">no loss curve yet (loss.png)</p>\n"),
    }
    // Pieces.
    h.push_str("<h2>Samples</h2>\n");
    let ps = pieces(run);
    if ps.is_empty() {
        h.push_str("<p class=\"note\">no piece yet: the sample is composed when training ends</p>\n");
    }
    for p in &ps {
        let file = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let _ = writeln!(h, "<h3>{}</h3>", esc(&file));
        match std::fs::read(p.with_extension("png")) {
            Ok(png) => {
                let _ = writeln!(h, "<div class=\"roll\"><img alt=\"piano roll of {}\" src=\"{}\"></div>", esc(&file), data_uri("image/png", &png));
            }
            Err(_) => h.push_str("<p class=\"note\">no piano roll (run etude report to draw it)</p>\n"),
        }
        match std::fs::read(p.with_extension("wav")) {
            Ok(wav) => {
                let _ = writeln!(h, "<audio controls preload=\"auto\" src=\"{}\"></audio>", data_uri("audio/wav", &wav));
            }
            Err(_) => h.push_str("<p class=\"note\">no audio (run etude report to render it)</p>\n"),
        }
    }
    h.push_str(&json_section(
        run,
        "stats.json",
        "Sample statistics against the validation pieces",
        "no statistics for this run (stats.json)",
    ));
    h.push_str(&json_section(run, "baseline.json", "n-gram baseline", "no n-gram baseline for this run (baseline.json)"));
    h.push_str(&json_section(run, "heldout.json", "Held-out figures", "no held-out figures for this run (heldout.json)"));
    let _ = write!(h, "<p class=\"note\">written by etude {} from the files of {}</p>\n</body>\n</html>\n", env!("CARGO_PKG_VERSION"), esc(&run.display().to_string()));
    h
}

/// Write `RUN/report.html` (temp file + rename) and return its path.
pub fn write_report(run: &Path) -> Result<PathBuf, String> {
    write_report_with(run, None, None)
}

/// [`write_report`] with the settings and metrics given ([`build_with`]).
pub fn write_report_with(run: &Path, meta: Option<&Value>, metrics: Option<&[Vec<String>]>) -> Result<PathBuf, String> {
    let path = run.join(REPORT);
    crate::files::atomic_write(&path, build_with(run, meta, metrics).as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_flattens() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        let v: Value = serde_json::json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
        let mut rows = Vec::new();
        flatten("", &v, &mut rows);
        assert_eq!(rows, vec![("a.b".into(), "1".into()), ("a.c".into(), "[1, 2]".into()), ("d".into(), "x".into())]);
    }

    #[test]
    fn an_empty_folder_gives_a_page_that_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let html = build(dir.path());
        assert!(html.contains("no epoch finished yet") && html.contains("no checkpoint yet") && html.contains("no piece yet"));
        assert!(!html.contains("http"), "the page must not reach the network");
    }

    /// A run in progress hands its metrics in memory: the page is the one drawn from the file.
    #[test]
    fn the_metrics_in_memory_give_the_page_the_file_gives() {
        use crate::run::metrics::{MetricsLog, ROLL_COLUMNS};
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::new(&dir.path().join("metrics.csv"), &ROLL_COLUMNS);
        for e in 1..=2 {
            log.push(vec![e.to_string(), "9.5".into(), "8.25".into(), "0.5".into(), "0.001".into(), "1.0".into()]).unwrap();
        }
        let html = build_with(dir.path(), None, Some(log.table()));
        assert_eq!(html, build(dir.path()));
        assert!(html.contains("<td>8.25</td>") && html.contains("<th>valid nll per frame</th>"));
    }
}
