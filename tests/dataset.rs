//! Split by piece, windows and targets, transposition on training pieces only, batches.

use etude::data::corpus::{load_corpus, LoadedPiece};
use etude::data::dataset::{split_by_piece, Dataset, Origin};
use etude::data::prepare::{prepare, DataConfig};
use etude::music::midi::ReadOptions;
use etude::data::dataset::Targets;
use etude::music::tokens::{tokenizer_by_name, transpose, TokenizerOptions};
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
fn prepare_transposes_training_windows_at_batch_time_only() {
    let pieces = builtin();
    let t = tokenizer_by_name("timed", &TokenizerOptions::default()).unwrap();
    let cfg = DataConfig { window: 64, stride: 4, valid_fraction: 0.2, seed: 3, transpose: 2, min_count: 1, ..Default::default() };
    let p = prepare(&pieces, t.as_ref(), &cfg, None).unwrap();
    assert_eq!(p.split.valid.len(), 20);
    assert_eq!(p.train.sequences().len(), 82, "82 training pieces, stored once (transposed at batch time)");
    assert!(p.train.origins().iter().chain(p.valid.origins()).all(|o| o.shift == 0));
    assert_eq!(p.train.transposer().map(|t| t.max()), Some(2));
    assert!(p.valid.transposer().is_none(), "validation is never transposed");
    let valid_pieces: HashSet<usize> = p.valid.origins().iter().map(|o| o.piece).collect();
    assert!(p.train.origins().iter().all(|o| !valid_pieces.contains(&o.piece)), "no piece on both sides");

    // The vocabulary is the one of the pre-transposed training pieces (every shift's tokens).
    let pre: Vec<Vec<String>> = p
        .split
        .train
        .iter()
        .flat_map(|&i| (-2..=2).map(move |s| (i, s)))
        .map(|(i, s)| t.encode(&transpose(&pieces[i].piece.notes, s)))
        .collect();
    assert_eq!(p.vocab, etude::music::tokens::Vocab::build(&pre, 1));
    // The epoch's shifts cover -2..=2 and depend on the epoch.
    let shifts: HashSet<i32> = (0..p.train.len()).map(|i| p.train.shift_of(3, 1, i)).collect();
    assert_eq!(shifts, (-2..=2).collect());
    assert!((0..p.train.len()).any(|i| p.train.shift_of(3, 1, i) != p.train.shift_of(3, 2, i)));
    // Validation holds the original tokens; ids of tokens unseen in training are <unk> (0).
    let v = p.valid.origins()[0];
    let want = p.vocab.encode(&t.encode(&pieces[v.piece].piece.notes));
    assert_eq!(p.valid.sequences()[0], want);
    assert_eq!(p.valid.origins()[0], Origin { piece: p.split.valid[0], shift: 0 });

    // Same config, same result; the vocabulary round-trips through JSON and can be reused.
    let again = prepare(&pieces, t.as_ref(), &cfg, None).unwrap();
    assert_eq!(again.vocab, p.vocab);
    assert_eq!(again.train.sequences(), p.train.sequences());
    assert_eq!(again.train.transposer(), p.train.transposer());
    let reused = prepare(&pieces, t.as_ref(), &cfg, Some(etude::music::tokens::Vocab::from_json(&p.vocab.to_json()).unwrap())).unwrap();
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

/// On-the-fly transposition equals transposing the pieces first: for every training window and
/// every shift, the window moved through the id tables is the same window of the transposed
/// piece's tokens (both tokenizers; no note of the built-in pieces leaves 0..=127 at these shifts).
#[test]
fn transposing_windows_equals_transposing_pieces_first() {
    let pieces = builtin();
    for name in ["notechord", "timed"] {
        let t = tokenizer_by_name(name, &TokenizerOptions::default()).unwrap();
        let cfg = DataConfig { window: 32, stride: 7, valid_fraction: 0.2, seed: 5, transpose: 6, min_count: 1, ..Default::default() };
        let p = prepare(&pieces, t.as_ref(), &cfg, None).unwrap();
        let mut checked = 0;
        for s in -6..=6 {
            let moved: Vec<Vec<u32>> = p
                .train
                .origins()
                .iter()
                .map(|o| p.vocab.encode(&t.encode(&transpose(&pieces[o.piece].piece.notes, s))))
                .collect();
            for (seq, m) in moved.iter().enumerate() {
                assert_eq!(m.len(), p.train.sequence(seq).len(), "{name}: shift {s} changed a piece's length");
            }
            for i in 0..p.train.len() {
                let (seq, start) = p.train.locate(i);
                assert_eq!(p.train.input_shifted(i, s), &moved[seq][start..start + 32], "{name}: window {i}, shift {s}");
                let b = p.train.batch_shifted(&[i], Targets::Every, |_| s);
                assert_eq!(b.y, &moved[seq][start + 1..start + 33]);
                assert!(b.x.iter().all(|&id| id != 0), "{name}: a transposed token fell out of the vocabulary");
                checked += 1;
            }
        }
        assert!(checked > 1000, "{name}: {checked}");
        // The batches of an epoch are those windows at their drawn shifts (and resume the same).
        let epoch: Vec<_> = p.train.batches(16, Targets::Last, 5, 3, false).collect();
        let order = p.train.epoch_order(5, 3);
        for (b, picks) in epoch.iter().zip(order.chunks(16)) {
            let want = p.train.batch_shifted(picks, Targets::Last, |i| p.train.shift_of(5, 3, i));
            assert_eq!(b, &want);
        }
        let resumed: Vec<_> = p.train.batches(16, Targets::Last, 5, 3, false).skip_batches(2).collect();
        assert_eq!(resumed, epoch[2..].to_vec());
    }
}

/// Out-of-range transpositions become <unk>: a piece whose pitches sit at the top of the range.
#[test]
fn tokens_moved_out_of_range_become_unknown() {
    let t = tokenizer_by_name("timed", &TokenizerOptions::default()).unwrap();
    let notes: Vec<etude::music::midi::Note> =
        (0..40).map(|i| etude::music::midi::Note::new(if i % 2 == 0 { 127 } else { 60 }, i as f64, i as f64 + 0.5, 80)).collect();
    let piece = LoadedPiece {
        name: "high.mid".into(),
        piece: etude::music::midi::Score { notes, ..builtin().remove(0).piece },
    };
    let cfg = DataConfig { window: 8, stride: 1, valid_fraction: 0.0, seed: 0, transpose: 1, min_count: 1, ..Default::default() };
    let p = prepare(&[piece], t.as_ref(), &cfg, None).unwrap();
    let up = p.train.input_shifted(0, 1);
    let plain = p.train.input(0);
    let p127 = p.vocab.id("P_127").unwrap();
    for (a, b) in plain.iter().zip(&up) {
        if *a == p127 {
            assert_eq!(*b, 0, "P_127 + 1 is <unk>");
        } else {
            assert_ne!(*b, 0);
        }
    }
    assert!(p.vocab.id("P_126").is_some() && p.vocab.id("P_61").is_some() && p.vocab.id("P_59").is_some());
}
