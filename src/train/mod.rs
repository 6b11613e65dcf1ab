//! `etude train`: the loop, and what it writes as it goes (checkpoints, metrics, curves).
//!
//! A run lives in one folder: `metrics.csv` (one row per epoch), `loss.png`, `last.safetensors`
//! (every epoch), `best.safetensors` (lowest validation loss), `epoch-N.safetensors` (every
//! `checkpoint_every` epochs) and, at the end, a generated `sample.mid`. Every checkpoint carries
//! all that is needed to resume exactly: parameters, Adam moments and step, the model config,
//! tokenizer, vocabulary, data settings and the epoch reached. The order of the windows in an
//! epoch depends only on (seed, epoch), so a resumed run sees the same batches, and on the CPU
//! backend gives bit-for-bit the losses of a run that never stopped.
//!
//! What a checkpoint holds is [`crate::run`]'s, the rows of `metrics.csv` [`crate::run::metrics`]'s,
//! the progress bar [`crate::run::progress`]'s and one step [`crate::model::step`]'s: this module drives them.
//!
//! The loop itself is [`run_loop`]'s, shared by every kind of model: token models plug in through
//! [`token_kind`] (set up by [`token`]), piano-roll models through [`roll_kind`].

pub mod roll;
pub mod roll_kind;
pub mod roll_recipe;
pub mod run_loop;
pub mod token;
pub mod token_checks;
pub mod token_kind;

pub use run_loop::{catch_interrupts, interrupted};
pub use token::{read_resumed, train, train_from, TrainOptions, TrainReport};
