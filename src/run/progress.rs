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
}
