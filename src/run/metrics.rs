//! A run's `metrics.csv`: one row per finished epoch, written and read with the `csv` crate.
//!
//! The columns and their formatting are those of every run so far, so the files of earlier runs
//! read back unchanged: `epoch,step,train_loss,train_accuracy,val_loss,val_perplexity,val_accuracy,
//! seconds,target_tokens_per_s`, losses and accuracies with 6 decimals, the perplexity with 4,
//! seconds with 3, the throughput with 1. A row is appended before the epoch's checkpoint is saved
//! (a crash between the two leaves a row no checkpoint holds, never a row missing); `--resume`
//! first drops the rows of epochs its checkpoint does not have ([`trim`]).

use serde::Serialize;
use std::path::Path;

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
    fn fields(&self) -> [String; 9] {
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

/// `(epoch, training loss, validation loss)` of every readable row (for the loss curve); nothing
/// when the file is missing.
pub fn read_losses(path: &Path) -> Vec<(f64, f64, f64)> {
    let Some(mut r) = reader(path) else { return Vec::new() };
    r.records()
        .skip(1)
        .filter_map(|rec| {
            let rec = rec.ok()?;
            Some((rec.get(0)?.parse().ok()?, rec.get(2)?.parse().ok()?, rec.get(4)?.parse().ok()?))
        })
        .collect()
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
