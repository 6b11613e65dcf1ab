//! Piano-roll pictures: time across (quarter notes, with beat and bar lines from the file's time
//! signature, bar numbers below), pitch up (one row per key, black-key rows shaded, a line under
//! every C with its name on the left), each note a bar in its track's colour, shaded by velocity
//! (pale = soft, full colour = loud).
//!
//! The geometry is [`RollLayout`]'s: a note covers the pixels `[x(start), x(end))` across and its
//! key's row, less the row's last pixel line. Everything but the notes is grey (red = green =
//! blue), so a picture's coloured pixels are exactly its notes (`tests/render_plot.rs` checks it).
//! Lines and notes are filled directly into the RGB buffer; text is drawn with plotters.

use crate::music::midi::{read_midi, Note, ReadOptions, Score};
use plotters::style::FontStyle;
use plotters::prelude::*;
use std::path::Path;

/// The family name the bundled font is registered under.
pub const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Register the bundled font with plotters (once; every later call is free).
pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bytes are a fixed, known-good TTF: failure here is a build error in disguise.
        if plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_err() {
            panic!("the bundled font assets/fonts/DejaVuSans.ttf does not parse");
        }
    });
}

/// Encode an RGB buffer as PNG and write it through a temp file + rename.
pub fn write_png(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<(), String> {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, width, height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| format!("{}: {e}", path.display()))?;
        w.write_image_data(rgb).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    crate::files::atomic_write(path, &bytes)
}

/// One colour per track, in order of first appearance (wrapping around).
pub const TRACK_COLOURS: [[u8; 3]; 8] = [
    [31, 119, 180],
    [230, 100, 0],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 170, 190],
];
pub const BACKGROUND: [u8; 3] = [255, 255, 255];
pub const BLACK_KEY_ROW: [u8; 3] = [243, 243, 243];
pub const BEAT_LINE: [u8; 3] = [225, 225, 225];
pub const BAR_LINE: [u8; 3] = [150, 150, 150];
pub const OCTAVE_LINE: [u8; 3] = [185, 185, 185];

/// Meter: quarter notes per beat and per bar.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Meter {
    pub beat: f64,
    pub bar: f64,
}

impl Default for Meter {
    fn default() -> Self {
        Meter { beat: 1.0, bar: 4.0 }
    }
}

/// The meter of the score's first time signature (4/4 when it has none).
pub fn meter_of(score: &Score) -> Meter {
    match score.time_signature {
        Some((num, den)) => {
            let beat = 4.0 / f64::from(1u32 << den);
            Meter { beat, bar: beat * num as f64 }
        }
        None => Meter::default(),
    }
}

/// Where everything goes.
#[derive(Clone, Debug, PartialEq)]
pub struct RollLayout {
    pub width: u32,
    pub height: u32,
    /// The plot area: x in [left, left + plot_width), y in [top, top + rows * row_height).
    pub left: u32,
    pub top: u32,
    pub plot_width: u32,
    /// Lowest and highest key shown: whole octaves, C to B.
    pub low: u8,
    pub high: u8,
    pub row_height: u32,
    pub px_per_quarter: f64,
    pub quarters: f64,
}

impl RollLayout {
    /// A layout for `notes` over `quarters` quarter notes (at least up to the last note's end).
    pub fn new(notes: &[Note], quarters: f64) -> RollLayout {
        let quarters = notes.iter().map(|n| n.end).fold(quarters.max(1.0), f64::max);
        let (lo, hi) = match (notes.iter().map(|n| n.pitch).min(), notes.iter().map(|n| n.pitch).max()) {
            (Some(lo), Some(hi)) => (lo, hi),
            _ => (60, 71),
        };
        let low = lo - lo % 12;
        let high = (hi - hi % 12).saturating_add(11).min(127);
        let rows = (high - low) as u32 + 1;
        let row_height = (480 / rows).clamp(4, 12);
        // 32 px per quarter for short pieces, squeezed to at most 4000 px across.
        let px_per_quarter = (32.0f64).min(4000.0 / quarters);
        let plot_width = (quarters * px_per_quarter).ceil() as u32 + 1;
        let (left, top, right, bottom) = (48, 10, 12, 30);
        RollLayout {
            width: left + plot_width + right,
            height: top + rows * row_height + bottom,
            left,
            top,
            plot_width,
            low,
            high,
            row_height,
            px_per_quarter,
            quarters,
        }
    }

    /// Pixel column of time `q` (quarter notes).
    pub fn x(&self, q: f64) -> u32 {
        self.left + (q.max(0.0) * self.px_per_quarter).round() as u32
    }

    /// First pixel line of key `pitch`'s row.
    pub fn row_top(&self, pitch: u8) -> u32 {
        self.top + (self.high - pitch) as u32 * self.row_height
    }

    /// Bottom of the plot area (exclusive).
    pub fn plot_bottom(&self) -> u32 {
        self.top + (self.high - self.low + 1) as u32 * self.row_height
    }

    /// The pixels a note covers: x in [x0, x1), y in [y0, y1).
    pub fn note_rect(&self, n: &Note) -> (u32, u32, u32, u32) {
        let x0 = self.x(n.start);
        let x1 = self.x(n.end).max(x0 + 1);
        let y0 = self.row_top(n.pitch);
        (x0, y0, x1, y0 + self.row_height - 1)
    }
}

/// A note's colour: its track's colour mixed with white, from 30% (velocity 1) to 100% (127).
pub fn note_colour(track_colour: [u8; 3], velocity: u8) -> [u8; 3] {
    let a = 0.3 + 0.7 * (velocity.clamp(1, 127) as f64 - 1.0) / 126.0;
    track_colour.map(|c| (255.0 - (255.0 - c as f64) * a).round() as u8)
}

/// Draw a piano roll of `notes` (spanning `quarters`, with `meter`) and return (layout, RGB pixels).
pub fn draw(notes: &[Note], quarters: f64, meter: Meter) -> (RollLayout, Vec<u8>) {
    let l = RollLayout::new(notes, quarters);
    let (w, h) = (l.width, l.height);
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    let mut fill = |x0: u32, y0: u32, x1: u32, y1: u32, c: [u8; 3]| {
        for y in y0..y1.min(h) {
            for x in x0..x1.min(w) {
                let i = ((y * w + x) * 3) as usize;
                rgb[i..i + 3].copy_from_slice(&c);
            }
        }
    };
    let (x_end, y_end) = (l.left + l.plot_width, l.plot_bottom());
    fill(l.left, l.top, x_end, y_end, BACKGROUND);
    for p in l.low..=l.high {
        if matches!(p % 12, 1 | 3 | 6 | 8 | 10) {
            fill(l.left, l.row_top(p), x_end, l.row_top(p) + l.row_height, BLACK_KEY_ROW);
        }
    }
    // Beat lines, then bar lines over them.
    let beat = if meter.beat * l.px_per_quarter >= 4.0 { meter.beat } else { meter.bar };
    let mut k = 0.0;
    while k * beat <= l.quarters + 1e-9 {
        let x = l.x(k * beat);
        fill(x, l.top, x + 1, y_end, BEAT_LINE);
        k += 1.0;
    }
    let bars = (l.quarters / meter.bar).ceil() as usize;
    for b in 0..=bars {
        let x = l.x(b as f64 * meter.bar);
        fill(x, l.top, x + 1, y_end, BAR_LINE);
    }
    // A line under every C (the last pixel line of its row, which notes never cover).
    for p in (l.low..=l.high).filter(|p| p % 12 == 0) {
        let y = l.row_top(p) + l.row_height - 1;
        fill(l.left, y, x_end, y + 1, OCTAVE_LINE);
    }
    // Notes, loud over soft.
    let mut tracks: Vec<usize> = Vec::new();
    for n in notes {
        if !tracks.contains(&n.track) {
            tracks.push(n.track);
        }
    }
    let mut order: Vec<&Note> = notes.iter().collect();
    order.sort_by_key(|n| n.velocity);
    for n in order {
        let t = tracks.iter().position(|&t| t == n.track).unwrap_or(0);
        let c = note_colour(TRACK_COLOURS[t % TRACK_COLOURS.len()], n.velocity);
        let (x0, y0, x1, y1) = l.note_rect(n);
        fill(x0, y0, x1, y1, c);
    }
    label(&l, &mut rgb, meter);
    (l, rgb)
}

/// C labels on the left, bar numbers below (every bar, or every 2nd, 4th, ... when crowded).
fn label(l: &RollLayout, rgb: &mut [u8], meter: Meter) {
    register_font();
    let root = BitMapBackend::with_buffer(rgb, (l.width, l.height)).into_drawing_area();
    let grey = RGBColor(70, 70, 70);
    let font = (FONT, 11).into_font().color(&grey);
    for p in (l.low..=l.high).filter(|p| p % 12 == 0) {
        let name = format!("C{}", p as i32 / 12 - 1);
        let y = l.row_top(p) as i32 + l.row_height as i32 - 7;
        let _ = root.draw(&Text::new(name, (6, y), font.clone()));
    }
    let bar_px = meter.bar * l.px_per_quarter;
    let mut every = 1usize;
    while (every as f64) * bar_px < 28.0 {
        every *= 2;
    }
    let bars = (l.quarters / meter.bar).ceil() as usize;
    for b in (0..bars).step_by(every) {
        let x = l.x(b as f64 * meter.bar) as i32 + 2;
        let _ = root.draw(&Text::new(format!("{}", b + 1), (x, l.plot_bottom() as i32 + 6), font.clone()));
    }
    let _ = root.present();
}

/// Draw the piano roll of a score, in its meter, and write it as PNG.
pub fn write_roll(path: &Path, score: &Score) -> Result<(), String> {
    let (l, rgb) = draw(&score.notes, score.duration_quarters, meter_of(score));
    write_png(path, &rgb, l.width, l.height)
}

/// Read a MIDI file (every pitched part) and write its piano roll to `out`.
pub fn plot_file(midi: &Path, out: &Path) -> Result<(), String> {
    let bytes = std::fs::read(midi).map_err(|e| format!("{}: {e}", midi.display()))?;
    let score = read_midi(&bytes, &ReadOptions { all_parts: true, sustain: false }).map_err(|e| format!("{}: {e}", midi.display()))?;
    write_roll(out, &score)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn velocity_shades_from_pale_to_full() {
        assert_eq!(note_colour([31, 119, 180], 127), [31, 119, 180]);
        let soft = note_colour([31, 119, 180], 1);
        assert!(soft[0] > 180 && soft[0] != soft[1] && soft[1] != soft[2], "{soft:?}");
    }

    #[test]
    fn layout_covers_whole_octaves_and_the_last_note() {
        let notes = vec![Note::new(50, 0.0, 1.0, 80), Note::new(73, 2.0, 9.5, 80)];
        let l = RollLayout::new(&notes, 4.0);
        assert_eq!((l.low, l.high), (48, 83));
        assert!(l.quarters >= 9.5);
        assert!(l.note_rect(&notes[1]).2 <= l.left + l.plot_width);
    }
}
