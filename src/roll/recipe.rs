//! The default recipes of piano-roll mode: what `etude train --data FILE.pianoroll.json.gz` uses
//! with no other option, per kind of data (chosen on the valid splits; see README "Piano-roll
//! mode"). Options given on the command line override any part.

use super::model::RollConfig;
use super::train::RollTrainSettings;
use crate::schedule::LrSchedule;

/// The kinds of data with a recipe of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataKind {
    Jsb,
    Nottingham,
    MuseData,
    PianoMidi,
    /// Anything else (MIDI files, other piano-roll files).
    Other,
}

impl DataKind {
    /// From the data's file name.
    pub fn from_name(name: &str) -> DataKind {
        let n = name.to_lowercase();
        if n.contains("jsb") {
            DataKind::Jsb
        } else if n.contains("nottingham") {
            DataKind::Nottingham
        } else if n.contains("muse") {
            DataKind::MuseData
        } else if n.contains("piano_midi") || n.contains("piano-midi") {
            DataKind::PianoMidi
        } else {
            DataKind::Other
        }
    }

    /// Quarter notes per frame of the benchmark files (SOURCE.md: every quarter for JSB, every
    /// eighth for the others); `None` for other data.
    pub fn frame_quarters(self) -> Option<f64> {
        match self {
            DataKind::Jsb => Some(1.0),
            DataKind::Other => None,
            _ => Some(0.5),
        }
    }
}

/// The default model of `model` ("lstm" or "wavenet-gated") for this kind of data.
pub fn default_config(kind: DataKind, model: &str) -> RollConfig {
    let _ = kind;
    match model {
        "wavenet-gated" => RollConfig::WavenetGated { residual: 64, skip: 64, kernel: 2, layers: 5, stacks: 2 },
        _ => RollConfig::Lstm { embed: 88, hidden: 200, layers: 1 },
    }
}

/// The default model name for this kind of data.
pub fn default_model(kind: DataKind) -> &'static str {
    let _ = kind;
    "lstm"
}

/// The default optimisation for this kind of data and model.
pub fn default_settings(kind: DataKind, model: &str) -> RollTrainSettings {
    let _ = model;
    let long = !matches!(kind, DataKind::Jsb);
    RollTrainSettings {
        epochs: if long { 30 } else { 60 },
        batch: 16,
        window: if long { 200 } else { 160 },
        lr: 2e-3,
        min_lr: 1e-4,
        lr_schedule: LrSchedule::Cosine,
        warmup_steps: 0,
        clip: 1.0,
        dropout: 0.3,
        weight_decay: 0.0,
        adamw_decay: 0.0,
        patience: 0,
        seed: 0,
        transpose: 0,
    }
}
