//! Choosing the next token from a row of logits: greedy (the tutorial's argmax), or sampling with
//! temperature, top-k and top-p (nucleus), which is what keeps generated music from looping.

use crate::rng::Rng;

#[derive(Clone, Debug, PartialEq)]
pub struct SampleOptions {
    /// Take the argmax (the tutorial's way); ignores the other options.
    pub greedy: bool,
    /// Divides the logits; < 1 sharpens, > 1 flattens. Must be > 0.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Token ids never chosen (e.g. `<unk>`).
    pub banned: Vec<usize>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions { greedy: false, temperature: 1.0, top_k: 0, top_p: 1.0, banned: Vec::new() }
    }
}

/// The index of the first maximum among the allowed entries.
pub fn argmax(logits: &[f32], banned: &[usize]) -> usize {
    let mut best = None;
    for (i, &x) in logits.iter().enumerate() {
        if banned.contains(&i) {
            continue;
        }
        match best {
            Some((_, m)) if x <= m => {}
            _ => best = Some((i, x)),
        }
    }
    best.map(|(i, _)| i).unwrap_or(0)
}

/// Pick one token id from `logits` according to `opts`, drawing from `rng`.
pub fn sample(logits: &[f32], opts: &SampleOptions, rng: &mut Rng) -> usize {
    if opts.greedy {
        return argmax(logits, &opts.banned);
    }
    let t = opts.temperature.max(1e-6) as f64;
    // Candidates sorted by logit, highest first (stable: ties keep the lower id first).
    let mut order: Vec<usize> = (0..logits.len()).filter(|i| !opts.banned.contains(i)).collect();
    if order.is_empty() {
        return 0;
    }
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if opts.top_k > 0 {
        order.truncate(opts.top_k);
    }
    let max = logits[order[0]] as f64;
    let mut probs: Vec<f64> = order.iter().map(|&i| ((logits[i] as f64 - max) / t).exp()).collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if opts.top_p < 1.0 {
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (j, p) in probs.iter().enumerate() {
            acc += p;
            if acc >= opts.top_p as f64 {
                keep = j + 1;
                break;
            }
        }
        probs.truncate(keep);
        order.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut u = rng.uniform() * total;
    for (j, p) in probs.iter().enumerate() {
        if u < *p {
            return order[j];
        }
        u -= p;
    }
    *order.last().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(logits: &[f32], opts: &SampleOptions, n: usize) -> Vec<usize> {
        let mut rng = Rng::new(11);
        let mut c = vec![0; logits.len()];
        for _ in 0..n {
            c[sample(logits, opts, &mut rng)] += 1;
        }
        c
    }

    #[test]
    fn greedy_is_argmax_and_skips_banned() {
        let l = [0.1, 3.0, 2.0, 3.0];
        assert_eq!(sample(&l, &SampleOptions { greedy: true, ..Default::default() }, &mut Rng::new(1)), 1);
        let opts = SampleOptions { greedy: true, banned: vec![1, 3], ..Default::default() };
        assert_eq!(sample(&l, &opts, &mut Rng::new(1)), 2);
    }

    #[test]
    fn temperature_one_follows_the_softmax() {
        let l = [0.0f32, (2.0f32).ln(), (5.0f32).ln()]; // probabilities 1/8, 2/8, 5/8
        let c = counts(&l, &SampleOptions::default(), 40_000);
        for (got, want) in c.iter().zip([0.125, 0.25, 0.625]) {
            assert!((*got as f64 / 40_000.0 - want).abs() < 0.01, "{c:?}");
        }
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let l = [0.0f32, 1.0, 2.0, 3.0];
        let c = counts(&l, &SampleOptions { top_k: 2, ..Default::default() }, 2000);
        assert_eq!(c[0] + c[1], 0, "{c:?}");
        assert!(c[2] > 0 && c[3] > 0);
        // p(3) = 0.64, p(2) = 0.24: top-p 0.5 keeps only token 3.
        let c = counts(&l, &SampleOptions { top_p: 0.5, ..Default::default() }, 500);
        assert_eq!(c[3], 500, "{c:?}");
        // A low temperature concentrates the mass on the argmax.
        let c = counts(&l, &SampleOptions { temperature: 0.05, ..Default::default() }, 500);
        assert_eq!(c[3], 500, "{c:?}");
    }

    #[test]
    fn same_seed_same_choices() {
        let l: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let a: Vec<usize> = {
            let mut r = Rng::new(5);
            (0..20).map(|_| sample(&l, &SampleOptions::default(), &mut r)).collect()
        };
        let b: Vec<usize> = {
            let mut r = Rng::new(5);
            (0..20).map(|_| sample(&l, &SampleOptions::default(), &mut r)).collect()
        };
        assert_eq!(a, b);
    }
}
