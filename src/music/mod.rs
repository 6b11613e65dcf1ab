//! Music: MIDI bytes <-> notes ([`midi`]), notes <-> tokens ([`tokens`]), notes -> audio
//! ([`render`]), notes -> piano-roll pictures ([`picture`]), and the musical statistics of a set
//! of pieces ([`stats`]). Nothing here knows of models or runs.

pub mod midi;
pub mod picture;
pub mod render;
pub mod sf2;
pub mod stats;
pub mod tokens;
