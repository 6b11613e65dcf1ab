//! Split by piece, windows and targets, transposition on training pieces only, batches.

use etude::corpus::{load_corpus, LoadedPiece};
use etude::dataset::{prepare, split_by_piece, DataConfig, Dataset, Origin};
use etude::midi::ReadOptions;
use etude::model::Targets;
use etude::tokens::{tokenizer_by_name, transpose, TokenizerOptions};
use std::collections::HashSet;
use std::path::PathBuf;

fn builtin() -> Vec<LoadedPiece> {
    let c = load_corpus::<PathBuf>(&[], &ReadOptions::default());
    assert!(c.skipped.is_empty());
    c.pieces
}

#[test]
fn split_is_by_piece_disjoint_complete_and_deterministic() {
    for n in [1usize, 2, 3, 10, 97] {
        for seed in 0..20u64 {
            let s = split_by_piece(n, 0.2, seed);
            let train: HashSet<_> = s.train.iter().collect();
            assert!(s.valid.iter().all(|v| !train.contains(v)), "a piece on both sides");
            assert_eq!(s.train.len() + s.valid.len(), n);
            assert_eq!(s, split_by_piece(n, 0.2, seed));
            if n >= 2 {
                assert!(!s.valid.is_empty() && !s.train.is_empty());
            }
        }
    }
    assert_eq!(split_by_piece(10, 0.2, 1).valid.len(), 2);
    assert_ne!(split_by_piece(97, 0.2, 1), split_by_piece(97, 0.2, 2), "the seed matters");
    assert!(split_by_piece(10, 0.0, 1).valid.is_empty());
}

#[test]
fn windows_and_targets() {
    let seqs = vec![(0..10).collect::<Vec<u32>>(), vec![100, 101, 102], (200..205).collect()];
    let ds = Dataset::new(seqs, vec![], 4, 2).unwrap();
    // Piece 0 (10 ids): starts 0, 2, 4 (4 + 4 < 10), not 6 (6 + 4 = 10 leaves no target).
    // Piece 1 (3 ids) < T+1: skipped. Piece 2 (5 ids): start 0.
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.short_pieces(), &[1]);
    assert_eq!(ds.input(1), &[2, 3, 4, 5]);
    assert_eq!(ds.target_last(1), 6);
    assert_eq!(ds.target_every(1), &[3, 4, 5, 6]);
    assert_eq!(ds.input(3), &[200, 201, 202, 203]);
    assert_eq!(ds.target_last(3), 204);

    let b = ds.batch_of(&[3, 0], Targets::Last);
    assert_eq!(b.x, vec![200, 201, 202, 203, 0, 1, 2, 3]);
    assert_eq!(b.y, vec![204, 4]);
    let b = ds.batch_of(&[0], Targets::Every);
    assert_eq!(b.y, vec![1, 2, 3, 4]);
    assert!(Dataset::new(vec![], vec![], 0, 1).is_err());
}

#[test]
fn batches_shuffle_by_seed_and_epoch_and_resume_exactly() {
    let seqs = vec![(0..200).collect::<Vec<u32>>(), (1000..1100).collect()];
    let ds = Dataset::new(seqs, vec![], 8, 1).unwrap();
    let n = ds.len();
    assert_eq!(n, 192 + 92);
    let epoch: Vec<_> = ds.batches(32, Targets::Every, 7, 0, false).collect();
    assert_eq!(epoch.len(), ds.batches_per_epoch(32, false));
    assert_eq!(epoch.iter().map(|b| b.rows).sum::<usize>(), n);
    assert!(epoch.iter().all(|b| b.x.len() == b.rows * 8 && b.y.len() == b.rows * 8));
    // Every window exactly once: the first id of each input identifies it.
    let mut firsts: Vec<u32> = epoch.iter().flat_map(|b| b.x.chunks(8).map(|w| w[0])).collect();
    firsts.sort_unstable();
    firsts.dedup();
    assert_eq!(firsts.len(), n);

    assert_eq!(ds.epoch_order(7, 0), ds.epoch_order(7, 0));
    assert_ne!(ds.epoch_order(7, 0), ds.epoch_order(7, 1));
    assert_ne!(ds.epoch_order(7, 0), ds.epoch_order(8, 0));
    let resumed: Vec<_> = ds.batches(32, Targets::Every, 7, 0, false).skip_batches(3).collect();
    assert_eq!(resumed, epoch[3..].to_vec());
    let full: Vec<_> = ds.batches(32, Targets::Last, 7, 0, true).collect();
    assert_eq!(full.len(), n / 32);
    assert!(full.iter().all(|b| b.rows == 32 && b.y.len() == 32));
}

#[test]
fn prepare_transposes_training_pieces_only() {
    let pieces = builtin();
    let t = tokenizer_by_name("timed", &TokenizerOptions::default()).unwrap();
    let cfg = DataConfig { window: 64, stride: 4, valid_fraction: 0.2, seed: 3, transpose: 2, min_count: 1 };
    let p = prepare(&pieces, t.as_ref(), &cfg, None).unwrap();
    assert_eq!(p.split.valid.len(), 20);
    assert_eq!(p.train.sequences().len(), 82 * 5, "82 training pieces x shifts -2..=2");
    assert!(p.valid.origins().iter().all(|o| o.shift == 0));
    let shifts: HashSet<i32> = p.train.origins().iter().map(|o| o.shift).collect();
    assert_eq!(shifts, (-2..=2).collect());
    let valid_pieces: HashSet<usize> = p.valid.origins().iter().map(|o| o.piece).collect();
    assert!(p.train.origins().iter().all(|o| !valid_pieces.contains(&o.piece)), "no piece on both sides");

    // A transposed training sequence is the tokens of the transposed notes.
    let (i, o) = p.train.origins().iter().enumerate().find(|(_, o)| o.shift == -2).map(|(i, o)| (i, *o)).unwrap();
    let want = p.vocab.encode(&t.encode(&transpose(&pieces[o.piece].piece.notes, -2)));
    assert_eq!(p.train.sequences()[i], want);
    // Validation holds the original tokens; ids of tokens unseen in training are <unk> (0).
    let v = p.valid.origins()[0];
    let want = p.vocab.encode(&t.encode(&pieces[v.piece].piece.notes));
    assert_eq!(p.valid.sequences()[0], want);
    assert_eq!(p.valid.origins()[0], Origin { piece: p.split.valid[0], shift: 0 });

    // Same config, same result; the vocabulary round-trips through JSON and can be reused.
    let again = prepare(&pieces, t.as_ref(), &cfg, None).unwrap();
    assert_eq!(again.vocab, p.vocab);
    assert_eq!(again.train.sequences(), p.train.sequences());
    let reused = prepare(&pieces, t.as_ref(), &cfg, Some(etude::tokens::Vocab::from_json(&p.vocab.to_json()).unwrap())).unwrap();
    assert_eq!(reused.valid.sequences(), p.valid.sequences());

    // Too long a window for every piece: an error, and short pieces are reported.
    let cfg_big = DataConfig { window: 100_000, ..cfg.clone() };
    assert!(prepare(&pieces, t.as_ref(), &cfg_big, None).is_err());
    let nc = tokenizer_by_name("notechord", &TokenizerOptions::default()).unwrap();
    let cfg_mid = DataConfig { window: 200, transpose: 0, valid_fraction: 0.0, ..cfg };
    let p = prepare(&pieces, nc.as_ref(), &cfg_mid, None).unwrap();
    let report = p.short_piece_report();
    assert_eq!(report.len(), 23, "{report:?}");
    assert!(report.iter().any(|r| r.contains("satie-gymnopedie-no1")), "{report:?}");
}
