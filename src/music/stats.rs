//! Statistics of pieces of music, alone or against a reference set (`etude stats`).
//!
//! Per piece ([`features`]), from its notes (times in quarter notes):
//!
//! | feature | definition |
//! |---|---|
//! | `notes` | number of notes |
//! | `length_quarters` | from the first onset to the last release |
//! | `pitch_range` | highest minus lowest MIDI pitch |
//! | `distinct_pitches` | number of different pitches |
//! | `pitch_entropy` | Shannon entropy (bits) of the pitch histogram (notes counted once each) |
//! | `pitch_class_entropy` | the same over the 12 pitch classes (at most log2 12 = 3.58) |
//! | `polyphony` | mean number of notes sounding, over the time when at least one sounds |
//! | `max_polyphony` | most notes sounding at once |
//! | `scale_consistency` | the largest share of notes inside one of the 24 major / natural-minor scales |
//! | `notes_per_quarter` | notes / `length_quarters` |
//! | `ioi_entropy`, `ioi_distinct` | inter-onset intervals (between consecutive distinct onsets, rounded to 1/48 quarter): entropy (bits) of their histogram, number of distinct values |
//! | `duration_entropy`, `duration_distinct` | the same for note durations |
//! | `repetition_8` | share of the 8-note pitch n-grams (notes in (onset, pitch) order) whose n-gram occurs more than once in the piece |
//! | `longest_repeat` | longest run of consecutive pitches (in that order) that occurs at least twice (occurrences may overlap), in notes |
//!
//! Per set: mean, standard deviation, minimum and maximum of each feature. With a reference set
//! ([`compare`]), for each feature: the reference's range, how many pieces fall below, inside and
//! above it, and Yang & Lerch's (2018, "On the evaluation of generative models in music")
//! intra-set / inter-set comparison: the distances `|x_i - x_j|` between pairs of reference pieces
//! (intra-set) and `|x - y|` between each piece and each reference piece (inter-set) are smoothed
//! by Gaussian kernel density estimates (Silverman's bandwidth), and the **overlapping area** of the
//! two densities (1 = indistinguishable, 0 = disjoint) and the **KL divergence** intra || inter are
//! reported.
//!
//! **Flags.** A piece gets a flag when it looks collapsed, whatever the reference: `few pitches`
//! (at most 6 distinct pitches), `low pitch entropy` (below 2 bits), `repetitive` (`repetition_8`
//! above 0.9), `monotonous rhythm` (one inter-onset interval only, with at least 8 onsets). With a
//! reference set, every feature outside the reference's range is also named (`pitch_entropy
//! below the reference`). An argmax generation that loops over a handful of notes carries several.

use crate::music::midi::Note;
use serde::Serialize;
use std::collections::HashMap;

/// The features, in report order.
pub const FEATURES: [&str; 16] = [
    "notes",
    "length_quarters",
    "pitch_range",
    "distinct_pitches",
    "pitch_entropy",
    "pitch_class_entropy",
    "polyphony",
    "scale_consistency",
    "notes_per_quarter",
    "ioi_entropy",
    "ioi_distinct",
    "duration_entropy",
    "duration_distinct",
    "repetition_8",
    "longest_repeat",
    "max_polyphony",
];

/// Grid of the interval and duration histograms: 1/48 quarter note (holds 64ths and triplets).
const GRID: f64 = 48.0;

/// The statistics of one piece.
#[derive(Clone, Debug, Serialize)]
pub struct PieceStats {
    pub name: String,
    /// Feature values in the order of [`FEATURES`].
    pub features: Vec<f64>,
    /// Inter-onset-interval and duration histograms: (value in quarter notes, count), by value.
    pub ioi_histogram: Vec<(f64, usize)>,
    pub duration_histogram: Vec<(f64, usize)>,
    pub flags: Vec<String>,
}

impl PieceStats {
    pub fn get(&self, feature: &str) -> f64 {
        FEATURES.iter().position(|&f| f == feature).map_or(f64::NAN, |i| self.features[i])
    }
}

/// Shannon entropy in bits of a histogram.
pub fn entropy<I: IntoIterator<Item = usize>>(counts: I) -> f64 {
    let counts: Vec<usize> = counts.into_iter().filter(|&c| c > 0).collect();
    let n: usize = counts.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let h: f64 = counts
        .iter()
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.log2()
        })
        .sum();
    h.max(0.0)
}

fn histogram(values: impl Iterator<Item = i64>) -> Vec<(i64, usize)> {
    let mut h: HashMap<i64, usize> = HashMap::new();
    for v in values {
        *h.entry(v).or_insert(0) += 1;
    }
    let mut h: Vec<(i64, usize)> = h.into_iter().collect();
    h.sort_unstable();
    h
}

/// The largest share of `notes` whose pitch class lies in one major or natural-minor scale.
pub fn scale_consistency(notes: &[Note]) -> f64 {
    if notes.is_empty() {
        return 0.0;
    }
    const MAJOR: [usize; 7] = [0, 2, 4, 5, 7, 9, 11];
    const MINOR: [usize; 7] = [0, 2, 3, 5, 7, 8, 10];
    let mut pc = [0usize; 12];
    for n in notes {
        pc[n.pitch as usize % 12] += 1;
    }
    let mut best = 0;
    for root in 0..12 {
        for scale in [MAJOR, MINOR] {
            best = best.max(scale.iter().map(|&d| pc[(root + d) % 12]).sum::<usize>());
        }
    }
    best as f64 / notes.len() as f64
}

/// Time-weighted mean and the maximum of the number of notes sounding, over the time when at
/// least one sounds.
pub fn polyphony(notes: &[Note]) -> (f64, usize) {
    let mut events: Vec<(f64, i32)> = Vec::with_capacity(2 * notes.len());
    for n in notes.iter().filter(|n| n.end > n.start) {
        events.push((n.start, 1));
        events.push((n.end, -1));
    }
    // Releases before onsets at equal times.
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut active, mut max, mut area, mut busy, mut last) = (0i32, 0i32, 0.0, 0.0, 0.0);
    for (t, d) in events {
        if active > 0 {
            area += active as f64 * (t - last);
            busy += t - last;
        }
        active += d;
        max = max.max(active);
        last = t;
    }
    (if busy > 0.0 { area / busy } else { 0.0 }, max.max(0) as usize)
}

/// Share of the `n`-grams of `seq` whose value occurs more than once.
pub fn repetition(seq: &[u8], n: usize) -> f64 {
    if seq.len() < n || n == 0 {
        return 0.0;
    }
    let mut counts: HashMap<&[u8], usize> = HashMap::new();
    for w in seq.windows(n) {
        *counts.entry(w).or_insert(0) += 1;
    }
    let total = seq.len() - n + 1;
    let repeated: usize = counts.values().filter(|&&c| c > 1).sum();
    repeated as f64 / total as f64
}

/// Length of the longest run of `seq` that occurs at least twice (occurrences may overlap).
pub fn longest_repeat(seq: &[u8]) -> usize {
    // Binary search on the length: a repeat of length L implies one of every shorter length.
    let (mut lo, mut hi) = (0usize, seq.len().saturating_sub(1));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if has_repeat(seq, mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// Whether some run of length `len` occurs twice: rolling hashes, candidates checked exactly.
fn has_repeat(seq: &[u8], len: usize) -> bool {
    if len == 0 {
        return true;
    }
    if seq.len() <= len {
        return false;
    }
    const BASE: u64 = 0x100_0000_01B3;
    let pow = (0..len).fold(1u64, |p, _| p.wrapping_mul(BASE));
    let mut seen: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut h = 0u64;
    for (i, &x) in seq.iter().enumerate() {
        h = h.wrapping_mul(BASE).wrapping_add(x as u64 + 1);
        if i >= len {
            h = h.wrapping_sub((seq[i - len] as u64 + 1).wrapping_mul(pow));
        }
        if i + 1 >= len {
            let start = i + 1 - len;
            let run = &seq[start..start + len];
            let slot = seen.entry(h).or_default();
            if slot.iter().any(|&s| &seq[s..s + len] == run) {
                return true;
            }
            slot.push(start);
        }
    }
    false
}

/// The statistics of one piece's notes.
pub fn features(name: &str, notes: &[Note]) -> PieceStats {
    let mut sorted: Vec<&Note> = notes.iter().collect();
    sorted.sort_by(|a, b| a.start.total_cmp(&b.start).then(a.pitch.cmp(&b.pitch)));
    let n = sorted.len();
    let first = sorted.first().map_or(0.0, |x| x.start);
    let last = sorted.iter().map(|x| x.end).fold(first, f64::max);
    let length = last - first;
    let lo = sorted.iter().map(|x| x.pitch).min().unwrap_or(0);
    let hi = sorted.iter().map(|x| x.pitch).max().unwrap_or(0);
    let pitch_hist = histogram(sorted.iter().map(|x| x.pitch as i64));
    let pc_hist = histogram(sorted.iter().map(|x| (x.pitch % 12) as i64));
    let (poly, max_poly) = polyphony(notes);
    // Distinct onsets on the grid, then the gaps between consecutive ones.
    let mut onsets: Vec<i64> = sorted.iter().map(|x| (x.start * GRID).round() as i64).collect();
    onsets.dedup();
    let ioi = histogram(onsets.windows(2).map(|w| w[1] - w[0]));
    let dur = histogram(sorted.iter().map(|x| ((x.end - x.start) * GRID).round() as i64));
    let pitches: Vec<u8> = sorted.iter().map(|x| x.pitch).collect();
    let features = vec![
        n as f64,
        length,
        (hi - lo) as f64,
        pitch_hist.len() as f64,
        entropy(pitch_hist.iter().map(|h| h.1)),
        entropy(pc_hist.iter().map(|h| h.1)),
        poly,
        scale_consistency(notes),
        if length > 0.0 { n as f64 / length } else { 0.0 },
        entropy(ioi.iter().map(|h| h.1)),
        ioi.len() as f64,
        entropy(dur.iter().map(|h| h.1)),
        dur.len() as f64,
        repetition(&pitches, 8),
        longest_repeat(&pitches) as f64,
        max_poly as f64,
    ];
    let mut flags = Vec::new();
    if pitch_hist.len() <= 6 {
        flags.push("few pitches".to_string());
    }
    if features[4] < 2.0 {
        flags.push("low pitch entropy".to_string());
    }
    if features[13] > 0.9 {
        flags.push("repetitive".to_string());
    }
    if ioi.len() == 1 && onsets.len() >= 8 {
        flags.push("monotonous rhythm".to_string());
    }
    let to_q = |h: Vec<(i64, usize)>| h.into_iter().map(|(v, c)| (v as f64 / GRID, c)).collect();
    PieceStats { name: name.to_string(), features, ioi_histogram: to_q(ioi), duration_histogram: to_q(dur), flags }
}

/// Mean, standard deviation (population), minimum and maximum of one feature over a set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

pub fn summary(values: &[f64]) -> Summary {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    Summary {
        mean,
        std: var.sqrt(),
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    }
}

/// One feature of a set against a reference set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Against {
    pub feature: String,
    /// The reference set's values.
    pub reference: Summary,
    /// Pieces below, inside and above the reference's [min, max].
    pub below: usize,
    pub inside: usize,
    pub above: usize,
    /// Mean distance within the reference set and between the sets.
    pub intra_mean: f64,
    pub inter_mean: f64,
    /// Overlapping area of the intra-set and inter-set distance densities (1 = alike).
    pub overlap: f64,
    /// KL divergence of the intra-set density from the inter-set one (nats; 0 = alike).
    pub kl_divergence: f64,
}

/// Gaussian kernel density estimate of `xs` at `at` (Silverman's rule bandwidth).
fn kde(xs: &[f64], at: &[f64]) -> Vec<f64> {
    let s = summary(xs);
    let n = xs.len().max(1) as f64;
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    let iqr = if sorted.is_empty() { 0.0 } else { q(0.75) - q(0.25) };
    let spread = if iqr > 0.0 { s.std.min(iqr / 1.34) } else { s.std };
    // A set of equal values still gets a narrow kernel.
    let h = (0.9 * spread * n.powf(-0.2)).max(1e-3 * (1.0 + s.mean.abs()));
    let norm = 1.0 / (n * h * (2.0 * std::f64::consts::PI).sqrt());
    at.iter().map(|&x| xs.iter().map(|&v| (-0.5 * ((x - v) / h).powi(2)).exp()).sum::<f64>() * norm).collect()
}

/// Overlapping area and KL divergence (p || q) of the KDEs of two samples, on a shared grid.
pub fn overlap_and_kl(p: &[f64], q: &[f64]) -> (f64, f64) {
    if p.is_empty() || q.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let all = p.iter().chain(q);
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let pad = (hi - lo).max(1e-3 * (1.0 + lo.abs())) * 0.5;
    const STEPS: usize = 1000;
    let dx = (hi - lo + 2.0 * pad) / STEPS as f64;
    let grid: Vec<f64> = (0..=STEPS).map(|i| lo - pad + i as f64 * dx).collect();
    let (fp, fq) = (kde(p, &grid), kde(q, &grid));
    let mut oa = 0.0;
    let mut kl = 0.0;
    for (&a, &b) in fp.iter().zip(&fq) {
        oa += a.min(b) * dx;
        if a > 1e-12 {
            kl += a * (a / b.max(1e-12)).ln() * dx;
        }
    }
    (oa.min(1.0), kl.max(0.0))
}

/// The statistics of a set, optionally against a reference set.
#[derive(Clone, Debug, Serialize)]
pub struct StatsReport {
    pub pieces: Vec<PieceStats>,
    /// Per feature (in [`FEATURES`] order): the set's summary.
    pub set: Vec<(String, Summary)>,
    /// Number of reference pieces, and the comparison per feature (empty without a reference).
    pub reference_pieces: usize,
    pub against: Vec<Against>,
}

/// Statistics of `pieces` (name, notes), against `reference` when it is not empty. A piece with a
/// feature outside the reference's range gets a flag naming it.
pub fn compare(pieces: &[(String, Vec<Note>)], reference: &[(String, Vec<Note>)]) -> StatsReport {
    let mut stats: Vec<PieceStats> = pieces.iter().map(|(n, notes)| features(n, notes)).collect();
    let refs: Vec<PieceStats> = reference.iter().map(|(n, notes)| features(n, notes)).collect();
    let column = |set: &[PieceStats], i: usize| set.iter().map(|s| s.features[i]).collect::<Vec<f64>>();
    let set = FEATURES.iter().enumerate().map(|(i, f)| (f.to_string(), summary(&column(&stats, i)))).collect();
    let mut against = Vec::new();
    if !refs.is_empty() {
        for (i, f) in FEATURES.iter().enumerate() {
            let (xs, ys) = (column(&stats, i), column(&refs, i));
            let r = summary(&ys);
            let mut intra = Vec::new();
            for a in 0..ys.len() {
                for b in a + 1..ys.len() {
                    intra.push((ys[a] - ys[b]).abs());
                }
            }
            let inter: Vec<f64> = xs.iter().flat_map(|x| ys.iter().map(move |y| (x - y).abs())).collect();
            let (overlap, kl_divergence) = overlap_and_kl(&intra, &inter);
            let below = xs.iter().filter(|&&x| x < r.min).count();
            let above = xs.iter().filter(|&&x| x > r.max).count();
            for (s, &x) in stats.iter_mut().zip(&xs) {
                if x < r.min {
                    s.flags.push(format!("{f} below the reference"));
                } else if x > r.max {
                    s.flags.push(format!("{f} above the reference"));
                }
            }
            let mean = |v: &[f64]| if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
            against.push(Against {
                feature: f.to_string(),
                reference: r,
                below,
                inside: xs.len() - below - above,
                above,
                intra_mean: mean(&intra),
                inter_mean: mean(&inter),
                overlap,
                kl_divergence,
            });
        }
    }
    StatsReport { pieces: stats, set, reference_pieces: refs.len(), against }
}

/// The report as text: one line per piece, the set's summary, the comparison.
pub fn describe(r: &StatsReport) -> String {
    let mut s = String::new();
    let short = ["notes", "length_q", "range", "pitches", "H_pitch", "H_pc", "poly", "scale", "n/q", "H_ioi", "ioi#", "H_dur", "dur#", "rep8", "longrep", "maxpoly"];
    s.push_str(&format!("{:<32}", "piece"));
    for h in short {
        s.push_str(&format!(" {h:>8}"));
    }
    s.push('\n');
    let row = |name: &str, vals: &[f64]| {
        let mut line = format!("{:<32}", tail(name, 32));
        for v in vals {
            line.push_str(&format!(" {:>8}", fmt(*v)));
        }
        line
    };
    for p in &r.pieces {
        s.push_str(&row(&p.name, &p.features));
        if !p.flags.is_empty() {
            s.push_str(&format!("  [{}]", p.flags.join("; ")));
        }
        s.push('\n');
    }
    let means: Vec<f64> = r.set.iter().map(|(_, m)| m.mean).collect();
    s.push_str(&row(&format!("mean of {} pieces", r.pieces.len()), &means));
    s.push('\n');
    if !r.against.is_empty() {
        let refs: Vec<f64> = r.against.iter().map(|a| a.reference.mean).collect();
        s.push_str(&row(&format!("reference mean ({})", r.reference_pieces), &refs));
        s.push('\n');
        s.push_str(&format!(
            "\n{:<20} {:>10} {:>10} {:>10} {:>6} {:>6} {:>6} {:>8} {:>8}\n",
            "feature", "ref min", "ref max", "mean", "below", "inside", "above", "overlap", "KLD"
        ));
        for (a, (_, m)) in r.against.iter().zip(&r.set) {
            s.push_str(&format!(
                "{:<20} {:>10} {:>10} {:>10} {:>6} {:>6} {:>6} {:>8.3} {:>8.3}\n",
                a.feature,
                fmt(a.reference.min),
                fmt(a.reference.max),
                fmt(m.mean),
                a.below,
                a.inside,
                a.above,
                a.overlap,
                a.kl_divergence
            ));
        }
    }
    s
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e7 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn tail(s: &str, n: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= n {
        s.to_string()
    } else {
        format!("...{}", chars[chars.len() - (n - 3)..].iter().collect::<String>())
    }
}
