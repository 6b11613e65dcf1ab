//! A run's loss curves (`loss.png`), drawn with `plotters` into an RGB buffer and encoded as PNG
//! with the bundled font of [`crate::music::picture`].

use plotters::prelude::*;
use crate::music::picture::{register_font, write_png, FONT};
use std::path::Path;

/// One loss curve: a name, a colour and (epoch, loss) points.
pub struct Series {
    pub name: String,
    pub rgb: [u8; 3],
    pub points: Vec<(u32, f64)>,
}

const W: u32 = 800;
const H: u32 = 480;

/// Draw loss curves against integer epochs, with an optional horizontal reference line (label,
/// value), e.g. the best n-gram baseline, and write them as PNG.
pub fn loss_curve(path: &Path, series: &[Series], reference: Option<(&str, f64)>) -> Result<(), String> {
    register_font();
    let mut rgb = vec![255u8; (W * H * 3) as usize];
    draw_loss_curve(&mut rgb, series, reference).map_err(|e| format!("{}: drawing the loss curve: {e}", path.display()))?;
    write_png(path, &rgb, W, H)
}

fn draw_loss_curve(rgb: &mut [u8], series: &[Series], reference: Option<(&str, f64)>) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(rgb, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    // A loss beyond 1e9 nats is off the chart like a non-finite one: near f64::MAX the padded
    // axis overflowed to infinity and plotters looked for its ticks for ever.
    let finite = |v: &f64| v.is_finite() && v.abs() < 1e9;
    let values: Vec<f64> =
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).chain(reference.map(|r| r.1)).filter(finite).collect();
    let last_epoch = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).max().unwrap_or(1).max(1);
    let (lo, hi) = match (values.iter().cloned().reduce(f64::min), values.iter().cloned().reduce(f64::max)) {
        (Some(lo), Some(hi)) if hi - lo > 1e-9 * hi.abs().max(1.0) => (lo, hi),
        (Some(v), _) => (v - 0.5, v + 0.5),
        _ => (0.0, 1.0),
    };
    let pad = (hi - lo) * 0.08;
    // Enough decimals to tell 8 ticks apart, no more.
    let step = (hi - lo + 2.0 * pad) / 8.0;
    let decimals = (-step.log10()).ceil().clamp(1.0, 5.0) as usize;
    // Integer epochs: an integer axis, one tick per epoch up to 12 ticks.
    let (x0, x1) = if last_epoch == 1 { (0i32, 2i32) } else { (1i32, last_epoch as i32) };
    let mut chart = ChartBuilder::on(&root)
        .caption("loss per epoch", (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("loss (nats per token)")
        .x_labels(((x1 - x0) as usize + 1).min(12))
        .x_label_formatter(&|x| format!("{x}"))
        .y_labels(8)
        .y_label_formatter(&|y| format!("{y:.decimals$}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for s in series {
        let colour = RGBColor(s.rgb[0], s.rgb[1], s.rgb[2]);
        let pts: Vec<(i32, f64)> = s.points.iter().filter(|p| finite(&p.1)).map(|p| (p.0 as i32, p.1)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
    }
    if let Some((label, v)) = reference.filter(|r| finite(&r.1)) {
        let grey = RGBColor(90, 90, 90);
        chart
            .draw_series(DashedLineSeries::new(vec![(x0, v), (x1, v)], 8, 5, grey.stroke_width(2)))?
            .label(format!("{label} ({v:.3})"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// The best n-gram's loss from a run's `baseline.json` (the JSON of `etude eval --json` that
/// `train` writes): its `ngram_best`, labelled with the order from `baseline.best_order`. `None`
/// when the file is absent, unreadable or holds no baseline.
pub fn read_baseline(run: &Path) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(run.join("baseline.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let value = v.get("ngram_best")?.as_f64()?;
    let label = match v.pointer("/baseline/best_order").and_then(serde_json::Value::as_u64) {
        Some(1) => "best n-gram (unigram)".to_string(),
        Some(n) => format!("best n-gram ({n}-gram)"),
        None => "best n-gram".to_string(),
    };
    Some((label, value))
}

/// Draw `RUN/loss.png` from `RUN/metrics.csv` (training and validation loss) and, when present,
/// the baseline of `RUN/baseline.json` (what `etude report` draws for a run folder).
pub fn run_loss_curve(run: &Path) -> Result<(), String> {
    run_loss_curve_of(run, &crate::run::metrics::read_losses(&run.join("metrics.csv")))
}

/// Draw `RUN/loss.png` from `rows`, (epoch, training loss, validation loss), and, when present, the
/// baseline of `RUN/baseline.json` (a run in progress draws it from its metrics in memory).
pub fn run_loss_curve_of(run: &Path, rows: &[(f64, f64, f64)]) -> Result<(), String> {
    let epochs = |f: fn(&(f64, f64, f64)) -> f64| -> Vec<(u32, f64)> { rows.iter().map(|r| (r.0 as u32, f(r))).collect() };
    let series = [
        Series { name: "training".into(), rgb: [31, 119, 180], points: epochs(|r| r.1) },
        Series { name: "validation".into(), rgb: [230, 110, 0], points: epochs(|r| r.2) },
    ];
    let baseline = read_baseline(run);
    loss_curve(&run.join("loss.png"), &series, baseline.as_ref().map(|(l, v)| (l.as_str(), *v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_is_the_best_ngram_of_eval_json_and_absence_is_tolerated() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_baseline(dir.path()).is_none());
        // The model's own loss (and its name) must not be taken for the baseline.
        let json = r#"{"model": "lstm", "loss": 4.26, "baseline": {"unigram": 4.9, "best_order": 5, "best": 4.59},
                       "ngram_best": 4.59, "ratio": 0.93}"#;
        std::fs::write(dir.path().join("baseline.json"), json).unwrap();
        assert_eq!(read_baseline(dir.path()), Some(("best n-gram (5-gram)".into(), 4.59)));
        std::fs::write(dir.path().join("baseline.json"), r#"{"model": "lstm", "loss": 4.26, "ngram_best": null}"#).unwrap();
        assert!(read_baseline(dir.path()).is_none(), "a run without a baseline draws none");
        std::fs::write(dir.path().join("baseline.json"), "not json").unwrap();
        assert!(read_baseline(dir.path()).is_none());
    }

    #[test]
    fn loss_curve_writes_a_png_with_ink() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("loss.png");
        let s = vec![Series { name: "training".into(), rgb: [31, 119, 180], points: vec![(1, 5.0), (2, 4.0), (3, 3.5)] }];
        loss_curve(&p, &s, Some(("baseline", 4.2))).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (W, H));
        // The training colour is on the picture (the curve and its legend).
        let blue = buf.chunks(3).filter(|p| p == &[31, 119, 180]).count();
        assert!(blue > 100, "{blue} pixels of the curve's colour");
    }
}
