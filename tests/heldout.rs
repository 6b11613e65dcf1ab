//! The held-out metric: one target set for every model, scored at the right logits row.

use etude::engine::cpu::CpuBackend;
use etude::engine::Backend;
use etude::eval::targets::{score_model, TargetSet};
use etude::model::any::{AnyModel, ModelConfig, Sizes, MODEL_NAMES};
use etude::model::Model;
use etude::rng::Rng;
use etude::model::step::Stepper;

const V: usize = 11;
const T: usize = 6;

/// Three pieces: 20 tokens (14 targets), 6 tokens (no target: not longer than T), 9 (3 targets).
fn set() -> TargetSet {
    let mut rng = Rng::new(5);
    let mut seqs: Vec<Vec<u32>> =
        [20, 6, 9].iter().map(|&n| (0..n).map(|_| 1 + (rng.next_u64() % (V as u64 - 1)) as u32).collect()).collect();
    // Two <unk> targets (id 0), and one <unk> in a context.
    seqs[0][T] = 0;
    seqs[2][8] = 0;
    seqs[0][1] = 0;
    TargetSet::new(seqs, vec!["a".into(), "b".into(), "c".into()], vec![10, 3, 6], T, 0).unwrap()
}

fn sizes(name: &str) -> Sizes {
    match name {
        "lstm" | "lstm-seq" => Sizes { embed: Some(5), hidden: Some(7), layers: Some(2), dense: Some(6), ..Default::default() },
        "wavenet" => Sizes { embed: Some(5), channels: Some(6), layers: Some(3), dense: Some(7), ..Default::default() },
        "transformer" => Sizes { width: Some(6), heads: Some(2), ff: Some(7), layers: Some(2), ..Default::default() },
        _ => Sizes { embed: Some(5), residual: Some(6), skip: Some(7), layers: Some(3), ..Default::default() },
    }
}

#[test]
fn the_targets_are_every_token_after_the_first_window() {
    let s = set();
    assert_eq!(s.len(), 14 + 3);
    let pairs = s.pairs();
    let expected: Vec<(usize, usize)> = (T..20).map(|i| (0, i)).chain((T..9).map(|i| (2, i))).collect();
    assert_eq!(pairs, expected);
    for (j, &(p, i)) in pairs.iter().enumerate() {
        assert_eq!(s.windows().input(j), &s.sequences()[p][i - T..i]);
        assert_eq!(s.windows().target_last(j), s.sequences()[p][i]);
    }
    assert_eq!((s.pieces()[1].targets, s.pieces()[2].targets), (0, 3));
}

#[test]
fn every_model_is_scored_on_the_same_pairs_at_its_last_position() {
    let b = CpuBackend::new();
    let s = set();
    let batch = 4; // 17 targets: 4 full batches and one of 1
    for name in MODEL_NAMES {
        let cfg = ModelConfig::from_name(name, V, T, &sizes(name)).unwrap();
        let mut model = AnyModel::new(&b, &cfg, batch, T, &mut Rng::new(3)).unwrap();
        let mut stepper = Stepper::new(&b, &model, batch);
        let (nll, hits, all) = score_model(&b, &mut model, &mut stepper, &s, batch, None);
        assert_eq!(nll.len(), s.len(), "{name}");
        assert_eq!(all.is_some(), matches!(name, "lstm-seq" | "wavenet-gated" | "transformer"), "{name}");
        // Each target again, alone, from the logits row that reads the whole window.
        let mut ids = b.alloc_ids(batch * T);
        for j in 0..s.len() {
            b.write_ids(&mut ids, s.windows().input(j));
            model.forward(&b, &ids, 1);
            let rows = model.target_rows(1);
            let logits = b.read(&model.logits().buf, rows * V);
            let last = &logits[(rows - 1) * V..];
            let max = last.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = max + last.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
            let target = s.windows().target_last(j) as usize;
            let want = lse - last[target] as f64;
            assert!((nll[j] - want).abs() < 1e-4, "{name} target {j}: {} vs {want}", nll[j]);
            let argmax = last.iter().enumerate().fold(0, |best, (k, &x)| if x > last[best] { k } else { best });
            assert_eq!(hits[j] == 1.0, argmax == target, "{name} target {j}");
        }
    }
}

#[test]
fn nats_per_note_and_unknown_share_by_hand() {
    let s = set();
    // Losses 1.0 on piece a's 14 targets, 2.0 on piece c's 3.
    let nll: Vec<f64> = (0..17).map(|j| if j < 14 { 1.0 } else { 2.0 }).collect();
    let r = s.summarise(&nll, None, None);
    assert!((r.loss - (14.0 + 6.0) / 17.0).abs() < 1e-12);
    // Notes covered: a 10 notes x 14/20 tokens = 7, c 6 x 3/9 = 2 -> 20 nats over 9 notes.
    assert!((r.nats_per_note - 20.0 / 9.0).abs() < 1e-12, "{}", r.nats_per_note);
    assert!((r.unknown_target_share - 2.0 / 17.0).abs() < 1e-12, "{}", r.unknown_target_share);
    assert_eq!((r.pieces, r.short_pieces, r.targets), (2, 1, 17));
    // A subset of the targets: picks 0 and 16.
    let r = s.summarise(&[1.0, 2.0], None, Some(&[0, 16]));
    assert!((r.nats_per_note - 3.0 / (10.0 / 20.0 + 6.0 / 9.0)).abs() < 1e-12);
}

#[test]
fn losses_by_kind_of_target_by_hand() {
    use etude::eval::heldout::{by_kind, token_kind};
    use etude::music::tokens::Vocab;
    assert_eq!(token_kind("P_60"), "P");
    assert_eq!(token_kind("TS_12"), "TS");
    assert_eq!(token_kind("<unk>"), "<unk>");
    assert_eq!(token_kind("60.64.67"), "other");
    // Ids by count: 1 = D_12 (5), 2 = P_60 (4), 3 = P_62 (3), 4 = TS_6 (2).
    let vocab = Vocab::from_counts(&[("D_12", 5u64), ("P_60", 4), ("P_62", 3), ("TS_6", 2)], 1);
    assert_eq!(vocab.token(3), "P_62");
    let targets = [2u32, 1, 3, 4, 1, 2];
    let nll = [1.0, 0.5, 3.0, 2.0, 0.25, 2.0];
    let hits = [1.0f32, 1.0, 0.0, 0.0, 1.0, 0.0];
    let ngram = [2.0, 1.0, 4.0, 3.0, 0.5, 3.0];
    let r = by_kind(&vocab, &targets, &nll, &hits, Some(&ngram));
    let kinds: Vec<&str> = r.iter().map(|k| k.kind.as_str()).collect();
    // In vocabulary order; no <unk> target, so no <unk> row.
    assert_eq!(kinds, ["D", "P", "TS"]);
    let p = &r[1];
    assert_eq!(p.targets, 3);
    assert!((p.share - 0.5).abs() < 1e-12);
    assert!((p.loss - 2.0).abs() < 1e-12, "{}", p.loss);
    assert!((p.accuracy - 1.0 / 3.0).abs() < 1e-12);
    assert!((p.ngram.unwrap() - 3.0).abs() < 1e-12);
    assert!((r[0].loss - 0.375).abs() < 1e-12 && (r[0].ngram.unwrap() - 0.75).abs() < 1e-12);
    // The kinds' losses, weighted by their shares, give back the whole set's.
    let mean: f64 = r.iter().map(|k| k.share * k.loss).sum();
    assert!((mean - nll.iter().sum::<f64>() / 6.0).abs() < 1e-12);
    // Without a baseline there is no n-gram column.
    assert!(by_kind(&vocab, &targets, &nll, &hits, None).iter().all(|k| k.ngram.is_none()));
}
