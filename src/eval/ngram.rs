//! Counting baselines: a unigram model and interpolated Kneser-Ney n-grams (n = 2..=5) over token
//! ids, to answer "did the network learn more than counting?" on the same targets as the model.
//!
//! * **Unigram**: add-one smoothed token frequencies, `P(w) = (c(w) + 1) / (N + V)`, so a token the
//!   training pieces never hold (such as `<unk>` with `min_count` 1) still has a finite loss.
//! * **Interpolated Kneser-Ney** of order n (Chen & Goodman 1998, one discount per order):
//!   `P_k(w | h) = max(c_k(h w) - D_k, 0) / c_k(h) + D_k N1+(h .) / c_k(h) P_{k-1}(w | h')`, where `h`
//!   is the last k-1 tokens, `h'` its last k-2, `c_k(h) = sum_w c_k(h w)` and `N1+(h .)` the number
//!   of distinct `w` with `c_k(h w) > 0`. At the top order `c_n` is the raw count; below it, the
//!   continuation count `c_k(h w) = N1+(. h w)` (distinct tokens seen before `h w`). A context never
//!   seen (`c_k(h) = 0`) falls through to `P_{k-1}`; `P_0` is uniform over the V tokens. The
//!   discount of each table is `D = n1 / (n1 + 2 n2)` (n1, n2: entries counted once and twice),
//!   0.5 when either is zero.
//!
//! Every training piece is padded on the left with `max_order - 1` beginning-of-piece markers (an id
//! V that is never predicted), so that every k-gram ending on a real token has a left neighbour. A
//! target's context is the `n - 1` tokens before it in its piece, padded the same way when the piece
//! has fewer (only when the window is shorter than n - 1).
//!
//! Tables are sorted arrays of k-grams packed into `u64` keys (`bits` per id), looked up by binary
//! search: a few bytes per distinct k-gram, so a corpus of millions of tokens fits easily.

/// Largest order fitted.
pub const MAX_ORDER: usize = 5;

/// One table of k-grams: sorted keys with their counts (raw or continuation), the totals and
/// distinct followers of each context, and the discount.
#[derive(Clone, Debug, Default)]
struct Table {
    keys: Vec<u64>,
    counts: Vec<u32>,
    ctx_keys: Vec<u64>,
    ctx_total: Vec<u64>,
    ctx_distinct: Vec<u32>,
    discount: f64,
}

impl Table {
    /// From sorted keys with repeats (each occurrence counts one).
    fn from_sorted(sorted: &[u64], bits: u32) -> Table {
        let mut keys = Vec::new();
        let mut counts: Vec<u32> = Vec::new();
        for &k in sorted {
            if keys.last() == Some(&k) {
                *counts.last_mut().expect("same length") += 1;
            } else {
                keys.push(k);
                counts.push(1);
            }
        }
        let mut ctx_keys = Vec::new();
        let mut ctx_total: Vec<u64> = Vec::new();
        let mut ctx_distinct: Vec<u32> = Vec::new();
        for (&k, &c) in keys.iter().zip(&counts) {
            let ctx = k >> bits;
            if ctx_keys.last() == Some(&ctx) {
                *ctx_total.last_mut().expect("same length") += c as u64;
                *ctx_distinct.last_mut().expect("same length") += 1;
            } else {
                ctx_keys.push(ctx);
                ctx_total.push(c as u64);
                ctx_distinct.push(1);
            }
        }
        let n1 = counts.iter().filter(|&&c| c == 1).count() as f64;
        let n2 = counts.iter().filter(|&&c| c == 2).count() as f64;
        let discount = if n1 > 0.0 && n2 > 0.0 { n1 / (n1 + 2.0 * n2) } else { 0.5 };
        Table { keys, counts, ctx_keys, ctx_total, ctx_distinct, discount }
    }

    fn count(&self, key: u64) -> u32 {
        self.keys.binary_search(&key).map_or(0, |i| self.counts[i])
    }

    fn context(&self, ctx: u64) -> Option<(u64, u32)> {
        self.ctx_keys.binary_search(&ctx).ok().map(|i| (self.ctx_total[i], self.ctx_distinct[i]))
    }

    /// One interpolation level: `max(c(h w) - D, 0) / c(h) + D N1+(h .) / c(h) lower`, or `lower`
    /// for an unseen context.
    fn interpolate(&self, ctx: u64, w: u32, bits: u32, lower: f64) -> f64 {
        match self.context(ctx) {
            None => lower,
            Some((total, distinct)) => {
                let c = self.count((ctx << bits) | w as u64) as f64;
                let total = total as f64;
                (c - self.discount).max(0.0) / total + self.discount * distinct as f64 / total * lower
            }
        }
    }
}

/// Counts of a corpus for the unigram and the Kneser-Ney models of orders 2..=`max_order`.
#[derive(Clone, Debug)]
pub struct Ngrams {
    vocab: usize,
    max_order: usize,
    bits: u32,
    /// `raw[k]`: raw counts of k-grams (index 0 unused).
    raw: Vec<Table>,
    /// `cont[k]`: continuation counts of k-grams, k < max_order (index 0 unused).
    cont: Vec<Table>,
    /// Real tokens counted.
    tokens: u64,
}

impl Ngrams {
    /// Count `sequences` (ids < `vocab`) for orders up to `max_order` (at most [`MAX_ORDER`], and
    /// lowered when `max_order` ids of the vocabulary do not fit in 64 bits).
    pub fn fit(sequences: &[Vec<u32>], vocab: usize, max_order: usize) -> Result<Ngrams, String> {
        if vocab == 0 {
            return Err("n-gram baseline: empty vocabulary".into());
        }
        if let Some(&bad) = sequences.iter().flatten().find(|&&id| id as usize >= vocab) {
            return Err(format!("n-gram baseline: token id {bad} outside the vocabulary of {vocab}"));
        }
        // Ids 0..V-1 and the marker V.
        let bits = (usize::BITS - vocab.leading_zeros()).max(1);
        let max_order = max_order.clamp(1, MAX_ORDER).min((64 / bits) as usize);
        let bos = vocab as u64;
        let mut raw = vec![Table::default()];
        let mut keys: Vec<u64> = Vec::new();
        for k in 1..=max_order {
            keys.clear();
            for seq in sequences {
                // The k-gram ending at each real token, padded with markers on the left.
                let mut key = 0u64;
                for _ in 0..k - 1 {
                    key = push(key, bos, bits, k);
                }
                for &id in seq {
                    key = push(key, id as u64, bits, k);
                    keys.push(key);
                }
            }
            keys.sort_unstable();
            raw.push(Table::from_sorted(&keys, bits));
        }
        // Continuation counts of k-grams: one per distinct (k+1)-gram it ends.
        let mut cont = vec![Table::default()];
        for k in 1..max_order {
            let mask = if k as u32 * bits >= 64 { u64::MAX } else { (1u64 << (k as u32 * bits)) - 1 };
            let mut suffixes: Vec<u64> = raw[k + 1].keys.iter().map(|&key| key & mask).collect();
            suffixes.sort_unstable();
            cont.push(Table::from_sorted(&suffixes, bits));
        }
        let tokens = sequences.iter().map(|s| s.len() as u64).sum();
        Ok(Ngrams { vocab, max_order, bits, raw, cont, tokens })
    }

    /// Highest order fitted.
    pub fn max_order(&self) -> usize {
        self.max_order
    }

    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Discount of the top-order table of an order-`n` model (`n >= 1`), for reports and tests.
    pub fn discount(&self, n: usize) -> f64 {
        self.raw[n].discount
    }

    /// Add-one unigram probability of `w`.
    pub fn unigram(&self, w: u32) -> f64 {
        (self.raw[1].count(w as u64) as f64 + 1.0) / (self.tokens as f64 + self.vocab as f64)
    }

    /// Kneser-Ney probability of `w` after `history` (the tokens before it in its piece, oldest
    /// first; only the last `n - 1` are read) for the model of order `n` in 1..=max_order.
    pub fn kneser_ney(&self, n: usize, history: &[u32], w: u32) -> f64 {
        assert!((1..=self.max_order).contains(&n), "order {n} outside 1..={}", self.max_order);
        let mut p = 1.0 / self.vocab as f64;
        for k in 1..=n {
            let table = if k == n { &self.raw[k] } else { &self.cont[k] };
            p = table.interpolate(self.context_key(history, k - 1), w, self.bits, p);
        }
        p
    }

    /// The probabilities of `w` after `history` under every model at once: `[unigram, KN 1, ...,
    /// KN max_order]` (index n = order n; index 0 = add-one unigram). Shares the lower levels.
    pub fn all_orders(&self, history: &[u32], w: u32) -> Vec<f64> {
        let mut out = vec![self.unigram(w)];
        // q: the continuation chain up to order k-1.
        let mut q = 1.0 / self.vocab as f64;
        for n in 1..=self.max_order {
            let ctx = self.context_key(history, n - 1);
            out.push(self.raw[n].interpolate(ctx, w, self.bits, q));
            if n < self.max_order {
                q = self.cont[n].interpolate(ctx, w, self.bits, q);
            }
        }
        out
    }

    /// Key of the last `len` tokens of `history`, padded with markers on the left.
    fn context_key(&self, history: &[u32], len: usize) -> u64 {
        let mut key = 0u64;
        let pad = len.saturating_sub(history.len());
        for _ in 0..pad {
            key = (key << self.bits) | self.vocab as u64;
        }
        for &id in &history[history.len() - (len - pad)..] {
            key = (key << self.bits) | id as u64;
        }
        key
    }
}

/// Shift `id` into a key of `k` ids of `bits` each, dropping the oldest.
fn push(key: u64, id: u64, bits: u32, k: usize) -> u64 {
    let width = k as u32 * bits;
    let mask = if width >= 64 { u64::MAX } else { (1u64 << width) - 1 };
    ((key << bits) | id) & mask
}

/// The baselines' losses on a set of targets.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BaselineReport {
    /// Mean NLL (nats per target token) of the add-one unigram.
    pub unigram: f64,
    /// `(n, mean NLL)` of the Kneser-Ney models, n = 2..=max order.
    pub kneser_ney: Vec<(usize, f64)>,
    /// The lowest loss of the unigram (order 1) and the Kneser-Ney models, and its order.
    pub best_order: usize,
    pub best: f64,
    /// Targets scored.
    pub targets: usize,
    /// Training sequences and tokens the counts came from.
    pub train_sequences: usize,
    pub train_tokens: u64,
    /// The sample of training pieces fitted on, when the run's training pieces held more tokens
    /// than [`crate::eval::heldout::BASELINE_TOKENS`] (`None`: all of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fitted_on: Option<String>,
    /// The best model's NLL of every target, in the order of the targets scored.
    #[serde(skip)]
    pub best_per_target: Vec<f64>,
}

/// Score `targets` = (sequence, position) pairs of `sequences` with every model fitted in `counts`:
/// the summed NLL per model, `[unigram, KN 1, .., KN max]`.
pub fn score(counts: &Ngrams, sequences: &[Vec<u32>], targets: &[(usize, usize)]) -> Vec<f64> {
    column_sums(&per_target(counts, sequences, targets), counts.max_order + 1)
}

/// The sum of each of the `width` columns of `rows`, rows added in order.
fn column_sums(rows: &[Vec<f64>], width: usize) -> Vec<f64> {
    let mut sums = vec![0.0f64; width];
    for row in rows {
        for (sum, l) in sums.iter_mut().zip(row) {
            *sum += l;
        }
    }
    sums
}

/// The NLL of every target under every model fitted in `counts`, `[unigram, KN 1, .., KN max]`
/// per target.
pub fn per_target(counts: &Ngrams, sequences: &[Vec<u32>], targets: &[(usize, usize)]) -> Vec<Vec<f64>> {
    targets
        .iter()
        .map(|&(s, i)| {
            let seq = &sequences[s];
            counts.all_orders(&seq[..i], seq[i]).into_iter().map(|p| -p.ln()).collect()
        })
        .collect()
}

/// Fit on `train` and score `targets` of `eval`: the report of the unigram and KN 2..=5.
pub fn baselines(train: &[Vec<u32>], vocab: usize, eval: &[Vec<u32>], targets: &[(usize, usize)]) -> Result<BaselineReport, String> {
    let counts = Ngrams::fit(train, vocab, MAX_ORDER)?;
    let rows = per_target(&counts, eval, targets);
    let sums = column_sums(&rows, counts.max_order + 1);
    let n = targets.len().max(1) as f64;
    let kneser_ney: Vec<(usize, f64)> = (2..=counts.max_order).map(|k| (k, sums[k] / n)).collect();
    let (best_order, best) = kneser_ney
        .iter()
        .copied()
        .fold((1, sums[0] / n), |acc, (k, l)| if l < acc.1 { (k, l) } else { acc });
    // Order 1 is the add-one unigram (index 0); order k >= 2 is Kneser-Ney at index k.
    let column = if best_order == 1 { 0 } else { best_order };
    Ok(BaselineReport {
        unigram: sums[0] / n,
        kneser_ney,
        best_order,
        best,
        targets: targets.len(),
        train_sequences: train.len(),
        train_tokens: counts.tokens,
        fitted_on: None,
        best_per_target: rows.iter().map(|r| r[column]).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_is_a_distribution_over_the_vocabulary() {
        let train = vec![vec![0, 1, 2, 1, 2, 3, 1, 2, 1, 0], vec![3, 3, 1, 2, 2]];
        let counts = Ngrams::fit(&train, 5, 5).unwrap();
        for history in [&[][..], &[1][..], &[3, 1, 2][..], &[4, 4, 4, 4][..], &[0, 1, 2, 1, 2, 3][..]] {
            for n in 1..=5 {
                let total: f64 = (0..5).map(|w| counts.kneser_ney(n, history, w)).sum();
                assert!((total - 1.0).abs() < 1e-12, "order {n} after {history:?}: {total}");
                for w in 0..5 {
                    assert_eq!(counts.all_orders(history, w)[n], counts.kneser_ney(n, history, w));
                }
            }
            let uni: f64 = (0..5).map(|w| counts.unigram(w)).sum();
            assert!((uni - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn a_large_vocabulary_lowers_the_top_order() {
        let counts = Ngrams::fit(&[vec![0, 1, 2]], 1 << 20, 5).unwrap();
        assert_eq!(counts.max_order(), 3); // 21 bits per id
    }
}
