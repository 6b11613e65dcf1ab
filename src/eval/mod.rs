//! Evaluation: the pieces a checkpoint is scored on ([`data`]), the held-out metric with its
//! baselines ([`heldout`]), and the Kneser-Ney n-gram baselines ([`ngram`]).

pub mod data;
pub mod heldout;
pub mod ngram;
