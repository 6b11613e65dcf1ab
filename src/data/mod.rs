//! Data: which files a corpus holds ([`corpus`], [`builtin_corpus`]), their tokens on disk
//! ([`token_cache`]), the run's two datasets made from them ([`prepare`]), training windows, the
//! split and batches ([`dataset`]), and piano-roll
//! frames ([`roll`]: the `*.pianoroll.json.gz` reader and MIDI <-> piano roll on a grid).

mod builtin_corpus;
pub mod corpus;
pub mod dataset;
pub mod prepare;
pub mod roll;
pub mod token_cache;
