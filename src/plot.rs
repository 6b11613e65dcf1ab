//! A loss-curve picture (PNG) drawn by hand: axes, ticks with numbers, one polyline per series and
//! a legend, with a built-in 3x5 pixel font so no font file or system library is needed.

use std::path::Path;

const W: usize = 720;
const H: usize = 440;
const LEFT: usize = 70;
const RIGHT: usize = 20;
const TOP: usize = 30;
const BOTTOM: usize = 50;
const SCALE: usize = 2; // font pixels per glyph pixel

/// 3x5 glyphs, one row per u16 nibble group: bit 2 = left column.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'a' => [0, 7, 5, 7, 5],
        'c' => [0, 7, 4, 4, 7],
        'd' => [1, 7, 5, 5, 7],
        'e' => [7, 4, 7, 4, 7],
        'h' => [4, 4, 7, 5, 5],
        'i' => [2, 0, 2, 2, 2],
        'l' => [4, 4, 4, 4, 7],
        'n' => [0, 6, 5, 5, 5],
        'o' => [0, 7, 5, 5, 7],
        'p' => [7, 5, 7, 4, 4],
        'r' => [0, 7, 4, 4, 4],
        's' => [7, 4, 7, 1, 7],
        't' => [2, 7, 2, 2, 3],
        'v' => [0, 5, 5, 5, 2],
        'x' => [0, 5, 2, 5, 5],
        _ => [0, 0, 0, 0, 0],
    }
}

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn set(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&rgb);
        }
    }

    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), rgb: [u8; 3]) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            // Two pixels thick so the curve reads at a glance.
            self.set(x.round() as i64, y.round() as i64, rgb);
            self.set(x.round() as i64, y.round() as i64 + 1, rgb);
        }
    }

    fn text(&mut self, x: usize, y: usize, s: &str, rgb: [u8; 3]) {
        for (k, c) in s.chars().enumerate() {
            let g = glyph(c.to_ascii_lowercase());
            for (row, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        for dy in 0..SCALE {
                            for dx in 0..SCALE {
                                let px = x + (k * 4 + col) * SCALE + dx;
                                let py = y + row * SCALE + dy;
                                self.set(px as i64, py as i64, rgb);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn text_width(s: &str) -> usize {
    s.chars().count() * 4 * SCALE
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One curve: its legend, its colour, its points (x, y).
pub type Series<'a> = (&'a str, [u8; 3], Vec<(f64, f64)>);

/// Draw the series into a PNG at `path`. Non-finite points are left out.
pub fn loss_curve(path: &Path, series: &[Series]) -> Result<(), String> {
    let pts: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.2.iter().copied()).filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
    let (mut x0, mut x1) = pts.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (mut y0, mut y1) = pts.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    if pts.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    let pad = (y1 - y0) * 0.05;
    let (y0, y1) = ((y0 - pad).max(0.0), y1 + pad);
    let mut c = Canvas { px: vec![255; W * H * 3] };
    let (pw, ph) = ((W - LEFT - RIGHT) as f64, (H - TOP - BOTTOM) as f64);
    let sx = |x: f64| LEFT as f64 + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f64| TOP as f64 + (1.0 - (y - y0) / (y1 - y0)) * ph;
    let grey = [200, 200, 200];
    let black = [0, 0, 0];
    for i in 0..=5 {
        let fy = y0 + (y1 - y0) * i as f64 / 5.0;
        c.line((LEFT as f64, sy(fy)), ((W - RIGHT) as f64, sy(fy)), grey);
        let label = fmt_tick(fy);
        c.text(LEFT - 6 - text_width(&label), sy(fy) as usize - 5, &label, black);
        let fx = x0 + (x1 - x0) * i as f64 / 5.0;
        c.line((sx(fx), TOP as f64), (sx(fx), (H - BOTTOM) as f64), grey);
        let label = fmt_tick(fx);
        c.text((sx(fx) as usize).saturating_sub(text_width(&label) / 2), H - BOTTOM + 8, &label, black);
    }
    c.line((LEFT as f64, TOP as f64), (LEFT as f64, (H - BOTTOM) as f64), black);
    c.line((LEFT as f64, (H - BOTTOM) as f64), ((W - RIGHT) as f64, (H - BOTTOM) as f64), black);
    c.text(W / 2 - text_width("epoch") / 2, H - 22, "epoch", black);
    c.text(8, 8, "loss", black);
    for (k, (name, rgb, points)) in series.iter().enumerate() {
        let ok: Vec<_> = points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        for w in ok.windows(2) {
            c.line((sx(w[0].0), sy(w[0].1)), (sx(w[1].0), sy(w[1].1)), *rgb);
        }
        for p in &ok {
            for d in -2..=2 {
                c.set(sx(p.0) as i64 + d, sy(p.1) as i64, *rgb);
                c.set(sx(p.0) as i64, sy(p.1) as i64 + d, *rgb);
            }
        }
        let lx = W - RIGHT - 160;
        let ly = TOP + 10 + k * 18;
        c.line((lx as f64, ly as f64 + 4.0), (lx as f64 + 24.0, ly as f64 + 4.0), *rgb);
        c.text(lx + 32, ly, name, black);
    }
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), W as u32, H as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| format!("{}: {e}", path.display()))?;
    w.write_image_data(&c.px).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_a_png_with_the_curves_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        let train: Vec<(f64, f64)> = (1..=10).map(|e| (e as f64, 5.0 / e as f64)).collect();
        let val: Vec<(f64, f64)> = (1..=10).map(|e| (e as f64, 5.5 / e as f64 + 0.2)).collect();
        super::loss_curve(&path, &[("train", [30, 90, 200], train), ("validation", [220, 80, 30], val)]).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (super::W as u32, super::H as u32));
        // Both series' colours were drawn.
        let has = |rgb: [u8; 3]| buf.chunks_exact(3).any(|p| p == rgb);
        assert!(has([30, 90, 200]) && has([220, 80, 30]));
    }
}
