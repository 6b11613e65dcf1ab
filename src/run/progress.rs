//! What a training run tells its user while it runs: a progress bar on a terminal (steps of the
//! epoch, the latest loss, elapsed and remaining time), plain lines on stderr otherwise.

/// A message sink: progress bar or plain lines.
pub struct Reporter {
    bar: Option<indicatif::ProgressBar>,
}

impl Reporter {
    /// `bar`: draw a progress bar (a terminal); otherwise every message is a line on stderr.
    pub fn new(bar: bool) -> Self {
        Reporter { bar: if bar { Some(indicatif::ProgressBar::new(0)) } else { None } }
    }

    pub fn start_epoch(&self, epoch: usize, epochs: usize, steps: u64) {
        if let Some(bar) = &self.bar {
            bar.reset();
            bar.set_length(steps);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} steps  {msg}  {elapsed_precise} < {eta_precise}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{epochs}"));
        }
    }

    /// One step done; `msg` replaces the bar's message (the latest loss).
    pub fn step(&self, msg: Option<String>) {
        if let Some(bar) = &self.bar {
            if let Some(m) = msg {
                bar.set_message(m);
            }
            bar.inc(1);
        }
    }

    /// A line for the user (above the bar when there is one).
    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// A [`Stage`] drawn on this reporter's bar (the next epoch takes the bar back), or in lines.
    pub fn stage(&self, label: &str, unit: &'static str, total: u64) -> Stage {
        match &self.bar {
            Some(bar) => {
                bar.reset();
                bar.set_length(total);
                bar.set_style(stage_style(unit));
                bar.set_prefix(label.to_string());
                Stage::with_bar(Some(bar.clone()), false, label, unit, total)
            }
            None => Stage::new(label, unit, total, false),
        }
    }
}

fn stage_style(unit: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(&format!(
        "{{prefix}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit}  {{per_sec}}  {{elapsed_precise}} < {{eta_precise}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// A long stage of a run (tokenising, validation, baselines, the copy fit, ...) counted in
/// units: a progress bar with the rate and an estimate on a terminal; otherwise a line every
/// [`Stage::EVERY`] with the same, and a closing line with the time and rate either way.
pub struct Stage {
    bar: Option<indicatif::ProgressBar>,
    /// The bar is the stage's own (cleared at the end), not a [`Reporter`]'s.
    owned: bool,
    label: String,
    unit: &'static str,
    total: u64,
    done: u64,
    started: std::time::Instant,
    last_line: std::time::Instant,
}

impl Stage {
    /// Seconds between the plain lines of a stage without a bar.
    pub const EVERY: f64 = 15.0;

    /// A stage of `total` `unit`s; a bar when `bar` (a terminal).
    pub fn new(label: &str, unit: &'static str, total: u64, bar: bool) -> Stage {
        let bar = bar.then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(stage_style(unit));
            b.set_prefix(label.to_string());
            b
        });
        Stage::with_bar(bar, true, label, unit, total)
    }

    fn with_bar(bar: Option<indicatif::ProgressBar>, owned: bool, label: &str, unit: &'static str, total: u64) -> Stage {
        let now = std::time::Instant::now();
        Stage { bar, owned, label: label.to_string(), unit, total, done: 0, started: now, last_line: now }
    }

    /// A stage on a terminal when stderr is one.
    pub fn on_stderr(label: &str, unit: &'static str, total: u64) -> Stage {
        use std::io::IsTerminal;
        Stage::new(label, unit, total, std::io::stderr().is_terminal())
    }

    /// `n` more units done.
    pub fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(b) => b.inc(n),
            None => {
                if self.last_line.elapsed().as_secs_f64() >= Self::EVERY && self.done < self.total {
                    self.last_line = std::time::Instant::now();
                    let secs = self.started.elapsed().as_secs_f64();
                    let rate = self.done as f64 / secs.max(1e-9);
                    let left = (self.total - self.done) as f64 / rate.max(1e-9);
                    eprintln!("  {}: {} / {} {} ({rate:.0}/s, about {left:.0} s left)", self.label, self.done, self.total, self.unit);
                }
            }
        }
    }

    /// Seconds since the stage began.
    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Clears the bar and returns `"N units in S s (R/s)"` for the caller's closing line.
    pub fn finish(self) -> String {
        if let Some(b) = self.bar.as_ref().filter(|_| self.owned) {
            b.finish_and_clear();
        }
        let secs = self.seconds();
        format!("{} {} in {secs:.1} s ({:.0}/s)", self.done, self.unit, self.done as f64 / secs.max(1e-9))
    }
}
