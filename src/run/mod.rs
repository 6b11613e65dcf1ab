//! A run and its checkpoints: the settings and schema a checkpoint holds ([`meta`]), the file
//! format ([`checkpoint`]: safetensors, checksum, atomic writes), the checks made before anything
//! is trusted or allocated ([`verify`]), reading one back ([`load`]), the learning-rate and
//! regularisation settings ([`schedule`]), and what a run writes as it goes: [`metrics`],
//! [`progress`], [`plots`], [`report`].
//!
//! Generation and evaluation need only this module, never the training loop ([`crate::train`]).

pub mod checkpoint;
pub mod load;
pub mod meta;
pub mod metrics;
pub mod plots;
pub mod progress;
pub mod report;
pub mod schedule;
pub mod verify;

pub use load::{load_checkpoint, restore_adam, snapshot, valid_indices, Loaded};
pub use meta::{DataSpec, Meta, OptimConfig, PartialEpoch, Progress, RunSettings};
