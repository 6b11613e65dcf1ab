//! Evaluation: the pieces a checkpoint is scored on ([`data`]), their (context, target) pairs and a
//! model's scores on them ([`targets`]), the held-out metric with its baselines ([`heldout`]), the
//! validation pass of training ([`validation`]), and the Kneser-Ney n-gram baselines ([`ngram`]).

pub mod data;
pub mod heldout;
pub mod ngram;
pub mod targets;
pub mod validation;
