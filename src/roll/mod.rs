//! Piano-roll mode (issue 14): polyphonic frames of 88 keys, 88 independent sigmoid outputs per
//! frame, trained and scored with the frame-level NLL of the four polyphonic benchmarks
//! (Boulanger-Lewandowski et al. 2012; `../shared/corpus/poly-music/SOURCE.md`).
//!
//! * [`data`]: the `*.pianoroll.json.gz` reader and MIDI <-> piano roll on a grid.
//!
//! The PNG piano-roll *plot* of `etude plot` is another thing: `crate::pianoroll`.

pub mod data;
pub mod model;
pub mod recipe;
pub mod train;
