//! The default recipes of piano-roll mode: what `etude train --data FILE.pianoroll.json.gz` uses
//! with no other option, per kind of data (chosen on the valid splits; see README "Piano-roll
//! mode"). Options given on the command line override any part.

use crate::model::roll::RollConfig;
use crate::model::roll_nade::RollHead;
use crate::train::roll::RollTrainSettings;
use crate::run::schedule::LrSchedule;

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

/// The default model of `model` ("lstm" or "wavenet-gated") for this kind of data. JSB (300K
/// parameters in the TCN study's comparison): the conv model of 10 gated blocks of 64 channels
/// (dilations 1..16 twice, kernel 2: 63 frames of context), 260K parameters; the LSTM 1 x 200 on an
/// 88-wide projection, 258K.
pub fn default_config(kind: DataKind, model: &str) -> RollConfig {
    let _ = kind;
    match model {
        "wavenet-gated" => RollConfig::WavenetGated { residual: 64, skip: 64, kernel: 2, layers: 5, stacks: 2 },
        _ => RollConfig::Lstm { embed: 88, hidden: 200, layers: 1 },
    }
}

/// The default model name for this kind of data: the conv model, which measured best on JSB's
/// valid split and trains several times faster than the LSTM on the CPU.
pub fn default_model(kind: DataKind) -> &'static str {
    let _ = kind;
    "wavenet-gated"
}

/// The default output head for this kind of data and model (issue 27; `--head`, `--nade-hidden`):
/// on the four benchmarks the conv model takes the NADE head of 150 units, which measured far
/// below the sigmoid head on every valid split with the same sequence model and optimisation
/// (JSB 5.340 against 8.188, Nottingham, MuseData and Piano-midi.de in docs/piano-roll.md). The
/// LSTM takes a NADE head of 100 units on JSB (6.498 against 8.402; 295K parameters, within the
/// 300K of the TCN comparison) and keeps the sigmoid head elsewhere (no NADE run of it there), as
/// does other data.
pub fn default_head(kind: DataKind, model: &str) -> RollHead {
    match (kind, model) {
        (DataKind::Jsb, "lstm") => RollHead::Nade { hidden: 100 },
        (DataKind::Other, _) | (_, "lstm") => RollHead::Sigmoid,
        _ => RollHead::Nade { hidden: NADE_HIDDEN },
    }
}

/// [`default_settings`] for a model with `head`: Piano-midi.de's conv model with the NADE head
/// overfits at the recipe's dropout 0.3 (valid 7.596 at epoch 18 of 30, train 5.6) and takes
/// `PIANO_MIDI_NADE_DROPOUT` (see docs/piano-roll.md).
pub fn default_settings_with(kind: DataKind, model: &str, head: RollHead) -> RollTrainSettings {
    let mut s = default_settings(kind, model);
    if kind == DataKind::PianoMidi && model == "wavenet-gated" && !head.is_sigmoid() {
        s.dropout = PIANO_MIDI_NADE_DROPOUT;
    }
    s
}

/// The dropout of Piano-midi.de's NADE recipe.
pub const PIANO_MIDI_NADE_DROPOUT: f32 = 0.5;

/// Hidden units of the NADE head when `--head nade` is given without `--nade-hidden`.
pub const NADE_HIDDEN: usize = 150;

/// The default optimisation for this kind of data and model (see the README's table for what
/// was tried on JSB's valid split).
pub fn default_settings(kind: DataKind, model: &str) -> RollTrainSettings {
    let long = !matches!(kind, DataKind::Jsb);
    let conv = model == "wavenet-gated";
    RollTrainSettings {
        // JSB: 229 sequences; small batches (more steps) and heavy dropout measured best.
        epochs: match (long, conv) {
            (false, true) => 60,
            (false, false) => 30,
            // Nottingham: 2.997 after 30 epochs against 3.061 after 20 (valid).
            (true, true) => 30,
            (true, false) => 20,
        },
        batch: if conv { 2 } else { 8 },
        window: if long { 200 } else { 160 },
        lr: 2e-3,
        min_lr: 1e-4,
        lr_schedule: LrSchedule::Cosine,
        warmup_steps: 0,
        clip: 1.0,
        // JSB overfits (train 6.2 against valid 8.4 at 0.5); Nottingham, 13 times larger, measured
        // 3.061 at 0.3 against 3.200 at 0.7 (20 epochs, valid).
        dropout: if conv && !long { 0.7 } else { 0.3 },
        weight_decay: 0.0,
        adamw_decay: 0.0,
        patience: 0,
        seed: 0,
        transpose: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_file_names_and_jsb_defaults_fit_300k_parameters() {
        assert_eq!(DataKind::from_name("../shared/corpus/poly-music/jsb_chorales.pianoroll.json.gz"), DataKind::Jsb);
        assert_eq!(DataKind::from_name("Nottingham.pianoroll.json.gz"), DataKind::Nottingham);
        assert_eq!(DataKind::from_name("musedata.pianoroll.json.gz"), DataKind::MuseData);
        assert_eq!(DataKind::from_name("piano_midi_de.pianoroll.json.gz"), DataKind::PianoMidi);
        assert_eq!(DataKind::from_name("mine.pianoroll.json"), DataKind::Other);
        assert_eq!(DataKind::Jsb.frame_quarters(), Some(1.0));
        assert_eq!(DataKind::Nottingham.frame_quarters(), Some(0.5));
        for model in ["lstm", "wavenet-gated"] {
            let n = default_config(DataKind::Jsb, model).n_params();
            assert!(n <= 300_000, "{model}: {n} parameters");
            let head = default_head(DataKind::Jsb, model).extra_params(&default_config(DataKind::Jsb, model));
            assert!(n + head <= 300_000, "{model} with its head: {} parameters", n + head);
            // the JSB window holds its longest sequence (144 frames) whole
            assert!(default_settings(DataKind::Jsb, model).window >= 144);
        }
    }

    #[test]
    fn the_conv_model_takes_the_nade_head_on_the_benchmarks_and_the_sigmoid_recipes_stay() {
        for kind in [DataKind::Jsb, DataKind::Nottingham, DataKind::MuseData, DataKind::PianoMidi] {
            assert_eq!(default_head(kind, "wavenet-gated"), RollHead::Nade { hidden: NADE_HIDDEN });
            let lstm = if kind == DataKind::Jsb { RollHead::Nade { hidden: 100 } } else { RollHead::Sigmoid };
            assert_eq!(default_head(kind, "lstm"), lstm);
            for model in ["lstm", "wavenet-gated"] {
                assert_eq!(default_settings_with(kind, model, RollHead::Sigmoid), default_settings(kind, model));
            }
        }
        assert_eq!(default_head(DataKind::Other, "wavenet-gated"), RollHead::Sigmoid);
        let nade = default_head(DataKind::PianoMidi, "wavenet-gated");
        assert_eq!(default_settings_with(DataKind::PianoMidi, "wavenet-gated", nade).dropout, PIANO_MIDI_NADE_DROPOUT);
        assert_eq!(default_settings_with(DataKind::Nottingham, "wavenet-gated", nade), default_settings(DataKind::Nottingham, "wavenet-gated"));
    }
}
