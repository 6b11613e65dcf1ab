//! The run report: `RUN/report.html`, one self-contained page (no network, no script), read from
//! the top: the headline (model, parameters, data, epochs, minutes; the validation and held-out
//! figures beside the best n-gram, from the metrics, `baseline.json` and `heldout.json`), the loss
//! curves, every piece in the run folder (`*.mid`) with its piano roll and an `<audio>` player,
//! the sample statistics against the validation pieces (`stats.json`) as one table with a range
//! bar per feature; folded away at the end, the metrics per epoch, the settings (the checkpoint's
//! metadata) and every field of the run's JSON files.
//!
//! Images and audio are inlined as `data:` URIs, so the page can be mailed or moved alone. The
//! page is written through a temp file + rename; training rewrites it after every epoch and
//! `etude report RUN` rebuilds it (drawing and rendering what is missing first).

use crate::run::checkpoint::{parameters_in_header, Checkpoint};
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

/// A JSON file of the run, read once: `None` when it is not there, else its value or why it is
/// not valid JSON.
type RunJson = Option<Result<Value, String>>;

fn read_run_json(run: &Path, file: &str) -> RunJson {
    let text = std::fs::read_to_string(run.join(file)).ok()?;
    Some(serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()))
}

/// The valid value of a run's JSON file, if any.
fn valid(j: &RunJson) -> Option<&Value> {
    j.as_ref().and_then(|r| r.as_ref().ok())
}

/// Every field of the run's JSON file `file` (read as `json`) as a table under `title`.
fn json_section(file: &str, json: &RunJson, title: &str, absent: &str) -> String {
    let mut s = format!("<h2>{}</h2>\n", esc(title));
    match json {
        Some(Ok(v)) => {
            let mut rows = Vec::new();
            flatten("", v, &mut rows);
            if rows.len() > MAX_ROWS {
                let more = rows.len() - MAX_ROWS;
                rows.truncate(MAX_ROWS);
                rows.push(("...".into(), format!("{more} more fields in {file}")));
            }
            let _ = writeln!(s, "<p class=\"note\">from {}</p>", esc(file));
            s.push_str(&table(&rows));
        }
        Some(Err(e)) => {
            let _ = writeln!(s, "<p class=\"note\">{} is not valid JSON: {}</p>", esc(file), esc(e));
        }
        None => {
            let _ = writeln!(s, "<p class=\"note\">{}</p>", esc(absent));
        }
    }
    s
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:2px}h2{font-size:1.25em;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:1.05em;margin-bottom:6px}table{border-collapse:collapse;font-size:0.9em}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f5f5f5}
table.kv th{text-align:left;font-weight:normal;color:#555}table.kv td{text-align:left}
table.headline{font-size:1em}table.headline td.big{font-weight:600}
table.stats td.name{text-align:left}table.stats td.in{color:#1e7b34}table.stats td.out{color:#b3261e;font-weight:600}
.sub{color:#555;margin-top:0}img{max-width:100%;height:auto;border:1px solid #eee;display:block}.roll{overflow-x:auto}.roll img{max-width:none}
audio{width:100%;max-width:600px;margin:6px 0}.note{color:#666;font-size:0.9em}
details{margin-top:18px}summary{cursor:pointer;font-size:1.1em;font-weight:600}";

/// What the report reads of the run's checkpoint: its `etude` metadata and its parameter count.
struct CheckpointFacts {
    meta: Value,
    params: Option<u64>,
}

/// The run's checkpoint (`last.safetensors`, else `best.safetensors`): its metadata, read and
/// checked by [`Checkpoint::load`] unless a caller that holds it gives `meta`, and its parameter
/// count from the header ([`parameters_in_header`]).
fn checkpoint_facts(run: &Path, meta: Option<&Value>) -> Option<CheckpointFacts> {
    let files = ["last.safetensors", "best.safetensors"].map(|f| run.join(f));
    let params = files.iter().find_map(|f| parameters_in_header(f));
    let meta = match meta {
        Some(m) => m.clone(),
        None => files.iter().find_map(|f| Checkpoint::load(f).ok())?.meta,
    };
    Some(CheckpointFacts { meta, params })
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut o = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            o.push(',');
        }
        o.push(c);
    }
    o
}

/// The model's name: a token model's kind (with its attention, if any), or a piano-roll model's.
fn model_name(meta: &Value) -> Option<String> {
    if let Some(m) = meta.get("model") {
        let kind = m.get("kind")?.as_str()?.to_string();
        let attention = m.get("attention").and_then(Value::as_u64).filter(|&a| a > 0);
        return Some(match attention {
            Some(h) => format!("{kind} + attention ({h} heads)"),
            None => kind,
        });
    }
    let config = meta.get("config")?;
    let kind = config.get("kind").map(scalar).unwrap_or_else(|| "piano-roll".into());
    let head = meta.get("head").map(scalar).unwrap_or_else(|| "sigmoid".into());
    Some(format!("piano-roll {kind}, {head} head"))
}

/// What the run trained on, in a few words.
fn data_name(meta: &Value) -> Option<String> {
    match meta.get("data")? {
        Value::String(s) => Some(s.clone()),
        d => {
            let paths: Vec<String> = d.get("paths").and_then(Value::as_array).map(|a| a.iter().map(scalar).collect()).unwrap_or_default();
            let corpus = if paths.is_empty() { "the built-in corpus".to_string() } else { paths.join(", ") };
            let tok = d.get("tokenizer").map(|t| format!(", {} tokens", scalar(t))).unwrap_or_default();
            Some(format!("{corpus}{tok}"))
        }
    }
}

/// The column of `header` named `name`.
fn column(header: &[String], name: &str) -> Option<usize> {
    header.iter().position(|h| h == name)
}

fn num(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64).filter(|x| x.is_finite())
}

fn fixed(x: Option<f64>, places: usize) -> String {
    x.map_or_else(|| "-".to_string(), |x| format!("{x:.places$}"))
}

/// The headline: model, size, data, epochs and minutes in a line; then the figures that say how
/// good the run is: validation (best epoch, and the end-of-run scores of `baseline.json`) and
/// held-out (`heldout.json`), each beside the best n-gram.
fn headline(facts: Option<&CheckpointFacts>, metrics: Option<&[Vec<String>]>, baseline: &RunJson, heldout: &RunJson) -> String {
    let mut h = String::new();
    let mut parts = Vec::new();
    if let Some(f) = facts {
        if let Some(m) = model_name(&f.meta) {
            parts.push(format!("<b>{}</b>", esc(&m)));
        }
        if let Some(p) = f.params {
            parts.push(format!("{} parameters", thousands(p)));
        }
        if let Some(d) = data_name(&f.meta) {
            parts.push(esc(&d));
        }
        if let Some(n) = f.meta.get("valid_pieces").and_then(Value::as_array).map(Vec::len) {
            parts.push(format!("{n} validation pieces"));
        }
    }
    let rows = metrics.filter(|r| r.len() > 1);
    let mut best: Option<(String, f64, String)> = None;
    if let Some(rows) = rows {
        let header = &rows[0];
        parts.push(format!("{} epochs", rows.len() - 1));
        if let Some(c) = column(header, "seconds") {
            let secs: f64 = rows[1..].iter().filter_map(|r| r.get(c)?.parse::<f64>().ok()).sum();
            parts.push(format!("{:.1} minutes of training", secs / 60.0));
        }
        // The validation column: val_loss (tokens) or valid_nll_per_frame (piano roll).
        if let Some(c) = header.iter().position(|h| h == "val_loss" || h == "valid_nll_per_frame") {
            let e = column(header, "epoch").unwrap_or(0);
            for r in &rows[1..] {
                if let Some(v) = r.get(c).and_then(|x| x.parse::<f64>().ok()).filter(|v| v.is_finite()) {
                    if best.as_ref().is_none_or(|b| v < b.1) {
                        best = Some((r.get(e).cloned().unwrap_or_default(), v, header[c].clone()));
                    }
                }
            }
        }
    }
    if !parts.is_empty() {
        let _ = writeln!(h, "<p class=\"sub\">{}</p>", parts.join(" &middot; "));
    }
    let unit = match &best {
        Some((_, _, c)) if c == "valid_nll_per_frame" => "nats per frame",
        _ => "nats per token",
    };
    // (label, network, with copy mixture, best n-gram, order, ratio)
    let mut lines: Vec<[String; 5]> = Vec::new();
    if let Some((epoch, v, _)) = &best {
        lines.push([format!("validation, best epoch ({epoch})"), format!("{v:.4}"), "-".into(), "-".into(), "-".into()]);
    }
    for (json, label) in [(baseline, "validation, end of run"), (heldout, "held-out")] {
        let Some(j) = valid(json) else { continue };
        let loss = num(j.get("loss"));
        if loss.is_none() {
            continue;
        }
        let copy = num(j.pointer("/copy/heldout/loss"));
        let ngram = num(j.get("ngram_best"));
        let order = j.pointer("/baseline/best_order").and_then(Value::as_u64);
        let ngram_text = match (ngram, order) {
            (Some(n), Some(o)) => format!("{n:.4} ({o}-gram)"),
            (n, _) => fixed(n, 4),
        };
        let targets = num(j.get("targets")).map(|t| format!(" ({} targets)", thousands(t as u64))).unwrap_or_default();
        lines.push([format!("{label}{targets}"), fixed(loss, 4), fixed(copy, 4), ngram_text, fixed(num(j.get("ratio")), 3)]);
    }
    if lines.is_empty() {
        h.push_str("<p class=\"note\">no validation figures yet: they come with the first epoch</p>\n");
        return h;
    }
    let _ = writeln!(
        h,
        "<table class=\"headline\">\n<tr><th></th><th>network ({unit})</th><th>with the copy mixture</th><th>best n-gram</th><th>network / n-gram</th></tr>"
    );
    for l in &lines {
        let _ = writeln!(
            h,
            "<tr><th>{}</th><td class=\"big\">{}</td><td class=\"big\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&l[0]),
            esc(&l[1]),
            esc(&l[2]),
            esc(&l[3]),
            esc(&l[4])
        );
    }
    h.push_str("</table>\n");
    if heldout.is_none() {
        h.push_str("<p class=\"note\">no held-out figures (etude eval --json on held-out pieces, saved as heldout.json, adds them)</p>\n");
    }
    h
}

/// A small range bar: the reference's [min, max] as a band, its mean as a tick, `value` as a dot,
/// green inside the band and red outside.
fn range_bar(min: f64, max: f64, mean: f64, value: f64) -> String {
    const W: f64 = 160.0;
    let (lo, hi) = (min.min(value), max.max(value));
    let pad = ((hi - lo) * 0.06).max(1e-9);
    let (lo, hi) = (lo - pad, hi + pad);
    let x = |v: f64| ((v - lo) / (hi - lo) * W).clamp(0.0, W);
    let inside = (min..=max).contains(&value);
    format!(
        "<svg width=\"160\" height=\"14\" viewBox=\"0 0 160 14\" role=\"img\" aria-label=\"{value:.3} against {min:.3} to {max:.3}\">\
<line x1=\"0\" y1=\"7\" x2=\"160\" y2=\"7\" stroke=\"#ddd\"/>\
<rect x=\"{:.1}\" y=\"3\" width=\"{:.1}\" height=\"8\" fill=\"#cfe0f5\"/>\
<line x1=\"{:.1}\" y1=\"2\" x2=\"{:.1}\" y2=\"12\" stroke=\"#5b7fb0\"/>\
<circle cx=\"{:.1}\" cy=\"7\" r=\"4\" fill=\"{}\"/></svg>",
        x(min),
        (x(max) - x(min)).max(1.0),
        x(mean),
        x(mean),
        x(value),
        if inside { "#1e7b34" } else { "#b3261e" }
    )
}

fn short(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e9 {
        format!("{x:.0}")
    } else if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// The sample statistics as one table: per feature, the reference range of the validation pieces,
/// and per piece its value, whether it falls inside, and a range bar. `None` when `stats.json`
/// holds no comparison.
fn stats_table(stats: &Value) -> Option<String> {
    let against = stats.get("against")?.as_array().filter(|a| !a.is_empty())?;
    let pieces = stats.get("pieces")?.as_array()?;
    let refs = stats.get("reference_pieces").and_then(Value::as_u64).unwrap_or(0);
    let mut h = String::new();
    let _ = writeln!(h, "<table class=\"stats\">\n<tr><th>feature</th><th>validation pieces ({refs}): min &ndash; max</th>");
    for p in pieces {
        let name = p.get("name").map(scalar).unwrap_or_default();
        let _ = write!(h, "<th>{}</th><th></th><th></th>", esc(&name));
    }
    h.push_str("</tr>\n");
    let mut inside_count = vec![0usize; pieces.len()];
    for (i, a) in against.iter().enumerate() {
        let feature = a.get("feature").map(scalar).unwrap_or_default();
        let (Some(min), Some(max)) = (num(a.pointer("/reference/min")), num(a.pointer("/reference/max"))) else { continue };
        let mean = num(a.pointer("/reference/mean")).unwrap_or((min + max) / 2.0);
        let _ = write!(h, "<tr><td class=\"name\">{}</td><td>{} &ndash; {}</td>", esc(&feature.replace('_', " ")), short(min), short(max));
        for (k, p) in pieces.iter().enumerate() {
            match num(p.get("features").and_then(|f| f.get(i))) {
                Some(v) => {
                    let inside = (min..=max).contains(&v);
                    inside_count[k] += inside as usize;
                    let word = if inside { "inside" } else if v < min { "below" } else { "above" };
                    let _ = write!(
                        h,
                        "<td>{}</td><td class=\"{}\">{word}</td><td>{}</td>",
                        short(v),
                        if inside { "in" } else { "out" },
                        range_bar(min, max, mean, v)
                    );
                }
                None => h.push_str("<td>-</td><td></td><td></td>"),
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    let counts: Vec<String> = pieces
        .iter()
        .zip(&inside_count)
        .map(|(p, c)| format!("{}: {c} of {} features inside", esc(&p.get("name").map(scalar).unwrap_or_default()), against.len()))
        .collect();
    let _ = writeln!(
        h,
        "<p class=\"note\">{}. The band is the validation pieces' range, the tick their mean, the dot the sample.</p>",
        counts.join("; ")
    );
    Some(h)
}

/// The settings rows: the checkpoint's metadata flattened, with the vocabulary as its size, the
/// validation pieces as their count and names, and the random state left out.
fn settings_rows(meta: &Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let Some(m) = meta.as_object() else { return rows };
    for (key, v) in m {
        match key.as_str() {
            "rng" | "vocab" | "valid_pieces" | "etude_version" => {}
            _ => flatten(key, v, &mut rows),
        }
    }
    if let Some(v) = meta.get("valid_pieces").and_then(|v| v.as_array()) {
        let names: Vec<String> = v.iter().map(scalar).collect();
        rows.push(("validation pieces".into(), format!("{}: {}", names.len(), names.join(", "))));
    }
    if let Some(n) = meta.get("vocab").and_then(|v| v.get("tokens")).and_then(|t| t.as_array()).map(|t| t.len()) {
        rows.push(("vocabulary size".into(), n.to_string()));
    }
    if let Some(v) = meta.get("etude_version").and_then(|v| v.as_str()) {
        rows.push(("etude version".into(), v.to_string()));
    }
    rows
}

/// Build the report page of the run folder `run` from what is in it (nothing is drawn or rendered
/// here) and return the HTML.
pub fn build(run: &Path) -> String {
    build_with(run, None, None)
}

/// [`build`] with the settings and the metrics given: `meta`, the `etude` metadata of the run's
/// last checkpoint, and `metrics`, the header and rows of its metrics, which a caller that has just
/// written or read them holds in memory (`None`: read from the checkpoint's header and from
/// `metrics.csv`).
///
/// From the top: the headline (model, size, data, epochs, minutes; validation and held-out figures
/// beside the best n-gram), the loss curves, every piece with its piano roll and player, the sample
/// statistics as one table, and, folded away, the metrics per epoch, the settings and every field
/// of the run's JSON files.
pub fn build_with(run: &Path, meta: Option<&Value>, metrics: Option<&[Vec<String>]>) -> String {
    // The folder's own name, also when it is given as `.` or `runs/x/`.
    let named = run.canonicalize().unwrap_or_else(|_| run.to_path_buf());
    let name = named.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| run.display().to_string());
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>etude run {0}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>etude run {0}</h1>\n",
        esc(&name)
    );
    let facts = checkpoint_facts(run, meta);
    let table = match metrics {
        Some(rows) => Some(rows.to_vec()),
        None => crate::run::metrics::read_table(&run.join("metrics.csv")),
    };
    // The run's JSON files, each read once.
    let (stats, baseline, heldout) = (read_run_json(run, "stats.json"), read_run_json(run, "baseline.json"), read_run_json(run, "heldout.json"));
    h.push_str(&headline(facts.as_ref(), table.as_deref(), &baseline, &heldout));
    if facts.is_none() {
        h.push_str("<p class=\"note\">no checkpoint yet (last.safetensors): settings unknown</p>\n");
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
    // Sample statistics.
    h.push_str("<h2>Sample statistics against the validation pieces</h2>\n");
    match valid(&stats).and_then(stats_table) {
        Some(t) => h.push_str(&t),
        None => h.push_str("<p class=\"note\">no comparison for this run (stats.json)</p>\n"),
    }
    // Folded away: metrics per epoch, settings, every field of the JSON files.
    h.push_str("<details>\n<summary>Metrics per epoch</summary>\n");
    match &table {
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
    h.push_str("</details>\n<details>\n<summary>Settings</summary>\n");
    match &facts {
        Some(f) => h.push_str(&self::table(&settings_rows(&f.meta))),
        None => h.push_str("<p class=\"note\">no checkpoint yet (last.safetensors): settings unknown</p>\n"),
    }
    h.push_str("</details>\n<details>\n<summary>Every figure of the run's files</summary>\n");
    h.push_str(&json_section("stats.json", &stats, "Sample statistics (stats.json)", "no statistics for this run (stats.json)"));
    h.push_str(&json_section("baseline.json", &baseline, "n-gram baseline (baseline.json)", "no n-gram baseline for this run (baseline.json)"));
    h.push_str(&json_section("heldout.json", &heldout, "Held-out figures (heldout.json)", "no held-out figures for this run (heldout.json)"));
    h.push_str("</details>\n");
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

    /// The headline takes the lowest validation figure and its epoch, in the run's own unit.
    #[test]
    fn the_headline_names_the_best_epoch_in_the_run_s_unit() {
        let header: Vec<String> = ["epoch", "train_nll_per_frame", "valid_nll_per_frame", "valid_accuracy", "lr", "seconds"].map(String::from).to_vec();
        let row = |e: &str, v: &str| [e, "9", v, "0.5", "0.001", "90"].map(String::from).to_vec();
        let rows = vec![header, row("1", "8.5"), row("2", "7.25"), row("3", "7.5")];
        let dir = tempfile::tempdir().unwrap();
        let html = build_with(dir.path(), None, Some(&rows));
        assert!(html.contains("validation, best epoch (2)") && html.contains("<td class=\"big\">7.2500</td>"), "{html}");
        assert!(html.contains("nats per frame") && html.contains("3 epochs") && html.contains("4.5 minutes of training"), "{html}");
    }

    /// A value on the reference's edge is inside; beyond it, below or above, with a red dot.
    #[test]
    fn the_statistics_table_says_inside_below_and_above() {
        let stats = serde_json::json!({
            "pieces": [{"name": "a.mid", "features": [2.0, 0.5, 9.0]}],
            "reference_pieces": 4,
            "against": [
                {"feature": "x", "reference": {"mean": 1.5, "min": 1.0, "max": 2.0}},
                {"feature": "y", "reference": {"mean": 1.5, "min": 1.0, "max": 2.0}},
                {"feature": "z", "reference": {"mean": 1.5, "min": 1.0, "max": 2.0}}
            ]
        });
        let t = stats_table(&stats).unwrap();
        for want in ["class=\"in\">inside", "class=\"out\">below", "class=\"out\">above", "a.mid: 1 of 3 features inside", "validation pieces (4)"] {
            assert!(t.contains(want), "{want}: {t}");
        }
        assert_eq!(t.matches("#b3261e").count(), 2, "{t}");
        assert!(stats_table(&serde_json::json!({"pieces": [], "against": []})).is_none());
    }

    /// The parameter count is the model's tensors', without the Adam moments beside them; the
    /// title names the folder even when it is given as `.`.
    #[test]
    fn the_headline_counts_parameters_not_optimizer_moments() {
        use crate::run::checkpoint::{HostTensor, EXP_AVG, EXP_AVG_SQ};
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("my-run");
        std::fs::create_dir(&run).unwrap();
        let t = |name: &str| HostTensor { name: name.into(), shape: vec![2, 3], data: vec![0.5; 6] };
        let meta = serde_json::json!({"model": {"kind": "lstm", "attention": 0}});
        Checkpoint { meta, tensors: vec![t("w"), t(&format!("{EXP_AVG}w")), t(&format!("{EXP_AVG_SQ}w"))] }.save(&run.join("last.safetensors")).unwrap();
        let html = build(&run.join("."));
        assert!(html.contains("<b>lstm</b> &middot; 6 parameters"), "{html}");
        assert!(html.contains("<h1>etude run my-run</h1>"), "{html}");
    }
}
