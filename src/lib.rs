//! etude: learns to compose piano music from MIDI files, on a hand-written engine.
//!
//! The rooms follow the data, and each imports only the rooms listed before it:
//!
//! * [`files`]: how every output is written (temporary file, sync, rename).
//! * [`rng`]: the seeded random streams every draw comes from.
//! * [`engine`]: the `Backend` trait, its CPU and wgpu/WGSL backends, the parameter arena and the
//!   optimizer. It knows nothing of music.
//! * [`layers`]: layers that own their parameters (embedding, linear, conv, LSTM, attention, ...).
//! * [`model`]: the token and piano-roll models built of layers, one training step, the copy
//!   mixture.
//! * [`music`]: MIDI bytes <-> notes, notes <-> tokens, audio, piano-roll pictures, statistics.
//! * [`data`]: corpora, the token cache, training windows and batches, piano-roll data.
//! * [`run`]: what a run and its checkpoints hold, checking and loading them, metrics, progress,
//!   plots and the report.
//! * [`train`], [`eval`], [`generate`]: training, scoring (held-out metric, n-grams), composing.
//! * [`bench`]: the benchmarks behind `etude bench`.

pub mod files;
pub mod rng;
pub mod engine;
pub mod layers;
pub mod model;
pub mod music;
pub mod data;
pub mod run;
pub mod train;
pub mod eval;
pub mod generate;
pub mod bench;
