//! etude: learns to compose piano music from MIDI files, on a hand-written engine.
//!
//! Data flows one way: `midi` (SMF bytes <-> notes) -> `tokens` (notes <-> tokens, vocabulary)
//! -> `dataset` (windows, split, batches) -> `model` (structs of `layers`, written once against `engine::Backend`)
//! -> training and generation. The `engine` knows nothing of music.
//!
//! A run: `run` is what a checkpoint holds and how one is read; `train` is the loop, writing
//! through `step` (one step), `metrics` (`metrics.csv`) and `progress` (the progress bar);
//! `generate` and the evaluation (`heldout`, `eval_data`) read checkpoints through `run` alone.

pub mod bench;
mod builtin_corpus;
pub mod checkpoint;
pub mod copy;
pub mod corpus;
pub mod dataset;
pub mod eval_data;
pub mod engine;
pub mod generate;
pub mod heldout;
pub mod layers;
pub mod metrics;
pub mod midi;
pub mod model;
pub mod pianoroll;
pub mod ngram;
pub mod plot;
pub mod progress;
pub mod render;
pub mod report;
pub mod rng;
pub mod roll;
pub mod run;
pub mod sample;
pub mod schedule;
pub mod stats;
pub mod step;
pub mod token_cache;
pub mod tokens;
pub mod train;
pub mod verify;
