//! The n-gram baselines against numbers computed by hand on a tiny corpus.
//!
//! Training: one piece `0 1 0 1 2` over V = 3 tokens (marker B = 3 pads the left).
//! Raw bigrams: B0 1, 01 2, 10 1, 12 1 -> D2 = n1 / (n1 + 2 n2) = 3 / 5 = 0.6.
//! Continuation unigrams (distinct bigrams ending in w): c(0) = 2 (B0, 10), c(1) = 1, c(2) = 1;
//! total 4, 3 distinct, D1 = 2 / (2 + 2) = 0.5: P1(w) = max(c - 0.5, 0) / 4 + 0.5 * 3/4 * 1/3,
//! so P1 = (0.5, 0.25, 0.25).
//! Bigram after 1 (seen twice, 2 distinct followers): P2(w|1) = max(c - 0.6, 0) / 2 + 0.6 * 2/2 * P1(w):
//! P2(0|1) = 0.2 + 0.3 = 0.5, P2(1|1) = 0.15, P2(2|1) = 0.2 + 0.15 = 0.35.
//! After 0 (twice, 1 distinct): P2(1|0) = 1.4 / 2 + 0.6 * 1/2 * 0.25 = 0.775. After 2 (never a
//! context): P2(w|2) = P1(w).
//! Trigram (raw trigrams B B 0, B 0 1, 0 1 0, 1 0 1, 0 1 2: all once, D3 = 0.5), with the bigram level
//! now on continuation counts (suffixes of the distinct trigrams: B0 1, 01 2, 10 1, 12 1, D = 0.6):
//! P3(2 | 0 1) = (1 - 0.5) / 2 + 0.5 * 2/2 * Pc2(2|1), Pc2(2|1) = 0.4 / 2 + 0.6 * 0.25 = 0.35 -> 0.425.
//! Unigram (add-one): counts 2, 2, 1 of 5 tokens -> (3/8, 3/8, 2/8).

use etude::eval::ngram::{baselines, score, Ngrams};

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} != {b}");
}

#[test]
fn kneser_ney_matches_the_hand_computation() {
    let train = vec![vec![0, 1, 0, 1, 2]];
    let bi = Ngrams::fit(&train, 3, 2).unwrap();
    close(bi.discount(2), 0.6);
    // Order 1 on its own reads raw counts (2, 2, 1 of 5; n1 = 1, n2 = 2, D = 0.2):
    // P(0) = 1.8 / 5 + 0.2 * 3/5 * 1/3 = 0.4, P(2) = 0.8 / 5 + 0.04 = 0.2.
    close(bi.kneser_ney(1, &[], 0), 0.4);
    close(bi.kneser_ney(1, &[], 2), 0.2);
    close(bi.kneser_ney(2, &[1], 0), 0.5);
    close(bi.kneser_ney(2, &[1], 1), 0.15);
    close(bi.kneser_ney(2, &[1], 2), 0.35);
    close(bi.kneser_ney(2, &[0], 1), 0.775);
    close(bi.kneser_ney(2, &[2], 2), 0.25);
    // Only the last token of a longer history matters.
    close(bi.kneser_ney(2, &[2, 2, 0], 1), 0.775);
    close(bi.unigram(0), 3.0 / 8.0);
    close(bi.unigram(2), 2.0 / 8.0);

    let tri = Ngrams::fit(&train, 3, 3).unwrap();
    close(tri.discount(3), 0.5);
    close(tri.kneser_ney(3, &[0, 1], 2), 0.425);
}

#[test]
fn baselines_score_exactly_the_targets_given() {
    let train = vec![vec![0, 1, 0, 1, 2]];
    // Targets at positions >= T = 2 of `1 0 1 2 2`: 1 after 0, 2 after 1, 2 after 2.
    let eval = vec![vec![1, 0, 1, 2, 2]];
    let targets = [(0, 2), (0, 3), (0, 4)];
    let counts = Ngrams::fit(&train, 3, 2).unwrap();
    let sums = score(&counts, &eval, &targets);
    close(sums[0], -((3.0f64 / 8.0).ln() + (2.0f64 / 8.0).ln() * 2.0));
    close(sums[2], -(0.775f64.ln() + 0.35f64.ln() + 0.25f64.ln()));
    let r = baselines(&train, 3, &eval, &targets).unwrap();
    assert_eq!(r.targets, 3);
    assert_eq!(r.kneser_ney.len(), 4, "orders 2..=5");
    close(r.kneser_ney[0].1, -(0.775f64.ln() + 0.35f64.ln() + 0.25f64.ln()) / 3.0);
    close(r.unigram, sums[0] / 3.0);
    let lowest = r.kneser_ney.iter().map(|k| k.1).fold(r.unigram, f64::min);
    close(r.best, lowest);
}

#[test]
fn a_repetitive_corpus_is_learned_by_the_higher_orders() {
    // A loop of period 4 over 6 tokens: a 5-gram predicts it almost surely, a unigram cannot.
    let piece: Vec<u32> = (0..400).map(|i| [0, 3, 1, 5][i % 4]).collect();
    let targets: Vec<(usize, usize)> = (8..400).map(|i| (0, i)).collect();
    let r = baselines(std::slice::from_ref(&piece), 6, std::slice::from_ref(&piece), &targets).unwrap();
    assert!(r.unigram > 1.3, "unigram {}", r.unigram);
    assert!(r.best < 0.05, "best {}", r.best);
    assert!(r.kneser_ney[1].1 < r.kneser_ney[0].1 || r.kneser_ney[0].1 < 0.05);
}
