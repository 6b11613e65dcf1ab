//! A run's `metrics.csv`: one row per finished epoch, written and read with the `csv` crate.
//!
//! Both training loops (token models, piano-roll models) keep their rows in a [`MetricsLog`]: in
//! memory, where the loss curve and the report of a run in progress are drawn from, and written
//! whole to the file (atomically) at every row. The piano-roll columns are [`ROLL_COLUMNS`].
//!
//! The columns and their formatting are those of every run so far, so the files of earlier runs
//! read back unchanged: `epoch,step,train_loss,train_accuracy,val_loss,val_perplexity,val_accuracy,
//! seconds,target_tokens_per_s`, losses and accuracies with 6 decimals, the perplexity with 4,
//! seconds with 3, the throughput with 1. A row is appended before the epoch's checkpoint is saved
//! (a crash between the two leaves a row no checkpoint holds, never a row missing); `--resume`
//! first drops the rows of epochs its checkpoint does not have ([`trim`]).

use serde::Serialize;
use std::path::{Path, PathBuf};

/// One row of `metrics.csv`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub step: u64,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_perplexity: f64,
    pub val_accuracy: f64,
    pub seconds: f64,
    pub tokens_per_s: f64,
}

/// The header row.
pub const COLUMNS: [&str; 9] = [
    "epoch",
    "step",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_perplexity",
    "val_accuracy",
    "seconds",
    "target_tokens_per_s",
];

impl EpochMetrics {
    /// The row's fields as written.
    pub fn fields(&self) -> [String; 9] {
        [
            self.epoch.to_string(),
            self.step.to_string(),
            format!("{:.6}", self.train_loss),
            format!("{:.6}", self.train_accuracy),
            format!("{:.6}", self.val_loss),
            format!("{:.4}", self.val_perplexity),
            format!("{:.6}", self.val_accuracy),
            format!("{:.3}", self.seconds),
            format!("{:.1}", self.tokens_per_s),
        ]
    }
}

/// The header row of a piano-roll run: the NLL per frame (summed over the 88 keys) of the training
/// epoch and of the validation split, the validation frame accuracy, the epoch's last learning rate
/// and the seconds since the start (one decimal); the numbers as Rust prints them.
pub const ROLL_COLUMNS: [&str; 6] = ["epoch", "train_nll_per_frame", "valid_nll_per_frame", "valid_accuracy", "lr", "seconds"];

/// Where the training and validation losses stand in a token run's rows ([`COLUMNS`]).
pub const LOSS_COLUMNS: (usize, usize) = (2, 4);

/// A run's metrics: the header and the rows so far, each as its fields are written, in memory and
/// in the file at `path`.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsLog {
    path: PathBuf,
    /// The header first.
    rows: Vec<Vec<String>>,
}

impl MetricsLog {
    /// A new log under `columns`; the file at `path`, if any, is replaced at the first row.
    pub fn new(path: &Path, columns: &[&str]) -> MetricsLog {
        MetricsLog { path: path.to_path_buf(), rows: vec![columns.iter().map(|c| c.to_string()).collect()] }
    }

    /// The log of a run that has finished `epochs` epochs (0 for a fresh one): the file's rows of
    /// those epochs ([`trim`] drops the others from the file), or a new log under `columns` when
    /// there is no file.
    pub fn continued(path: &Path, columns: &[&str], epochs: usize) -> Result<MetricsLog, String> {
        trim(path, epochs)?;
        match read_table(path) {
            Some(rows) if !rows.is_empty() => Ok(MetricsLog { path: path.to_path_buf(), rows }),
            _ => Ok(MetricsLog::new(path, columns)),
        }
    }

    /// Add a row and write the file again (temp file + rename): before the epoch's checkpoint, so
    /// a crash in between leaves a row no checkpoint holds, never a row missing.
    pub fn push(&mut self, fields: Vec<String>) -> Result<(), String> {
        self.rows.push(fields);
        let mut w = csv::WriterBuilder::new().has_headers(false).flexible(true).from_writer(Vec::new());
        for row in &self.rows {
            w.write_record(row).map_err(|e| io_error(&self.path, e))?;
        }
        let bytes = w.into_inner().map_err(|e| io_error(&self.path, e))?;
        crate::files::atomic_write(&self.path, &bytes)
    }

    /// The header and the rows, as written (what the run's report shows).
    pub fn table(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// `(epoch, training loss, validation loss)` of every row whose three fields read as numbers,
    /// the losses from the columns `(train, valid)` (for the loss curve).
    pub fn losses(&self, (train, valid): (usize, usize)) -> Vec<(f64, f64, f64)> {
        losses(self.rows.iter().skip(1).map(|r| r.as_slice()), (train, valid))
    }
}

fn losses<'a>(rows: impl Iterator<Item = &'a [String]>, (train, valid): (usize, usize)) -> Vec<(f64, f64, f64)> {
    let num = |r: &[String], i: usize| r.get(i)?.parse::<f64>().ok();
    rows.filter_map(|r| Some((num(r, 0)?, num(r, train)?, num(r, valid)?))).collect()
}

fn reader(path: &Path) -> Option<csv::Reader<std::fs::File>> {
    // Flexible: a row cut short by a crash (or a hand-made file) is read as far as it goes.
    csv::ReaderBuilder::new().has_headers(false).flexible(true).from_path(path).ok()
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// Append `row` to the file at `path`, with the header first when the file is new.
pub fn append(path: &Path, row: &EpochMetrics) -> Result<(), String> {
    let new = !path.exists();
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| io_error(path, e))?;
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(file);
    if new {
        w.write_record(COLUMNS).map_err(|e| io_error(path, e))?;
    }
    w.write_record(row.fields()).map_err(|e| io_error(path, e))?;
    w.flush().map_err(|e| io_error(path, e))
}

/// Keep only the rows of epochs the checkpoint being continued has (none for a fresh run): rows of
/// an epoch whose checkpoint was never written would otherwise be repeated by the resumed run. The
/// header stays; a row whose epoch cannot be read goes. The file is rewritten (atomically) only
/// when a row goes; a missing file is left missing.
pub fn trim(path: &Path, max_epoch: usize) -> Result<(), String> {
    let Some(mut r) = reader(path) else { return Ok(()) };
    let mut kept = Vec::new();
    let mut dropped = false;
    for (i, record) in r.records().enumerate() {
        let keep = match &record {
            Ok(rec) => i == 0 || rec.get(0).and_then(|e| e.parse::<usize>().ok()).is_some_and(|e| e <= max_epoch),
            Err(_) => false,
        };
        match record {
            Ok(rec) if keep => kept.push(rec),
            _ => dropped = true,
        }
    }
    if !dropped {
        return Ok(());
    }
    let mut w = csv::WriterBuilder::new().has_headers(false).flexible(true).from_writer(Vec::new());
    for rec in &kept {
        w.write_record(rec).map_err(|e| io_error(path, e))?;
    }
    let bytes = w.into_inner().map_err(|e| io_error(path, e))?;
    crate::files::atomic_write(path, &bytes)
}

/// `(epoch, training loss, validation loss)` of every readable row of a token run's file (for the
/// loss curve of `etude report`); nothing when the file is missing.
pub fn read_losses(path: &Path) -> Vec<(f64, f64, f64)> {
    let Some(mut r) = reader(path) else { return Vec::new() };
    let rows: Vec<Vec<String>> = r.records().skip(1).filter_map(|rec| Some(rec.ok()?.iter().map(str::to_string).collect())).collect();
    losses(rows.iter().map(|r| r.as_slice()), LOSS_COLUMNS)
}

/// Every row as its fields, the header first (for the run report's table); `None` when the file
/// cannot be read.
pub fn read_table(path: &Path) -> Option<Vec<Vec<String>>> {
    let mut r = reader(path)?;
    let rows: Result<Vec<Vec<String>>, csv::Error> =
        r.records().map(|rec| rec.map(|rec| rec.iter().map(str::to_string).collect())).collect();
    rows.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize) -> EpochMetrics {
        EpochMetrics {
            epoch,
            step: 3 * epoch as u64,
            train_loss: 5.0 / epoch as f64,
            train_accuracy: 0.125,
            val_loss: 4.0 / epoch as f64,
            val_perplexity: (4.0 / epoch as f64).exp(),
            val_accuracy: 1.0 / 3.0,
            seconds: 1.23456,
            tokens_per_s: 1234.56,
        }
    }

    #[test]
    fn rows_are_written_as_every_run_wrote_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        append(&path, &row(1)).unwrap();
        append(&path, &row(2)).unwrap();
        // The text of the hand-written writer this replaces, byte for byte.
        let expected = format!(
            "{}\n1,3,5.000000,0.125000,4.000000,54.5982,0.333333,1.235,1234.6\n2,6,2.500000,0.125000,2.000000,7.3891,0.333333,1.235,1234.6\n",
            COLUMNS.join(",")
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
        assert_eq!(read_losses(&path), vec![(1.0, 5.0, 4.0), (2.0, 2.5, 2.0)]);
        let table = read_table(&path).unwrap();
        assert_eq!(table.len(), 3);
        assert_eq!(table[0], COLUMNS.map(String::from).to_vec());
        assert_eq!(table[2][5], "7.3891");
    }

    /// The log in memory writes what `append` wrote row by row, holds what the file holds, and
    /// continues a run from the rows its checkpoint has; a new log replaces a file already there.
    #[test]
    fn the_log_in_memory_writes_and_holds_what_the_file_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (by_rows, by_log) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
        let mut log = MetricsLog::continued(&by_log, &COLUMNS, 0).unwrap();
        for e in 1..=3 {
            append(&by_rows, &row(e)).unwrap();
            log.push(row(e).fields().to_vec()).unwrap();
            assert_eq!(std::fs::read(&by_log).unwrap(), std::fs::read(&by_rows).unwrap(), "after epoch {e}");
        }
        assert_eq!(Some(log.table().to_vec()), read_table(&by_log));
        assert_eq!(log.losses(LOSS_COLUMNS), read_losses(&by_log));
        // A resumed run at epoch 2: the file loses epoch 3, the log starts from epochs 1 and 2.
        let mut again = MetricsLog::continued(&by_log, &COLUMNS, 2).unwrap();
        assert_eq!(again.table(), &log.table()[..3]);
        again.push(row(3).fields().to_vec()).unwrap();
        assert_eq!(std::fs::read(&by_log).unwrap(), std::fs::read(&by_rows).unwrap());
        // Piano-roll rows: the numbers as Rust prints them; a new log starts the file again.
        let roll = dir.path().join("roll.csv");
        std::fs::write(&roll, "stale\n").unwrap();
        let mut log = MetricsLog::new(&roll, &ROLL_COLUMNS);
        log.push(vec!["1".into(), 10.5.to_string(), 0.1f64.to_string(), "0.25".into(), 1e-4f64.to_string(), format!("{:.1}", 2.44)]).unwrap();
        assert_eq!(std::fs::read_to_string(&roll).unwrap(), format!("{}\n1,10.5,0.1,0.25,0.0001,2.4\n", ROLL_COLUMNS.join(",")));
        assert_eq!(log.losses((1, 2)), vec![(1.0, 10.5, 0.1)]);
    }

    #[test]
    fn trim_keeps_the_header_and_the_rows_a_checkpoint_has() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        let header = COLUMNS.join(",");
        std::fs::write(&path, format!("{header}\n1,3,5.0\n2,6,4.0\n3,9,3.0\n")).unwrap();
        trim(&path, 2).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{header}\n1,3,5.0\n2,6,4.0\n"));
        trim(&path, 0).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{header}\n"));
        trim(&dir.path().join("absent.csv"), 0).unwrap();
        assert!(!dir.path().join("absent.csv").exists());
    }

    #[test]
    fn a_row_cut_short_or_unreadable_is_skipped_by_the_readers_and_dropped_by_trim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        let header = COLUMNS.join(",");
        std::fs::write(&path, format!("{header}\n1,3,5.0,0.1,4.0\n2,6,4.5\n\nbroken\n")).unwrap();
        assert_eq!(read_losses(&path), vec![(1.0, 5.0, 4.0)]);
        // Unchanged when every row is of an epoch the checkpoint has... except the unreadable one.
        trim(&path, 5).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{header}\n1,3,5.0,0.1,4.0\n2,6,4.5\n"));
    }
}
