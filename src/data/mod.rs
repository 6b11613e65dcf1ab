//! Data: which files a corpus holds ([`corpus`], [`builtin_corpus`]), a tokenised corpus
//! ([`token_set`]) kept on disk by the token cache ([`token_cache`]: building and updating it;
//! [`cache_file`]: its file format, key and checks), the run's two datasets made from them
//! ([`prepare`]), training windows, the split and batches ([`dataset`]), and piano-roll frames
//! ([`roll`]: the `*.pianoroll.json.gz` reader and MIDI <-> piano roll on a grid).

mod builtin_corpus;
pub mod cache_file;
pub mod corpus;
pub mod dataset;
pub mod prepare;
pub mod roll;
pub mod token_cache;
pub mod token_set;
