//! A run sized for large corpora (issue 28): a seeded sample of the validation targets scored the
//! same every epoch and at the end, duplicates kept once, n-gram baselines on a sample of training
//! pieces, the epoch order computed on the fly, and `etude eval` scoring every target by default.

mod cli_common;
mod common;

use cli_common::{etude_ok, tiny_train};
use etude::run::checkpoint::Checkpoint;
use etude::data::dataset::{Dataset, Permutation, LAZY_ORDER_WINDOWS};
use etude::data::prepare::{prepare_tokens, unique_pieces, DataConfig};
use etude::eval::targets::sample_targets;
use etude::data::token_set::TokenSet;
use etude::music::tokens::tokenizer_by_name;
use std::path::Path;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn a_target_sample_is_seeded_distinct_and_spread_over_the_pieces() {
    assert_eq!(sample_targets(100, 0, 1), None, "0 = every target");
    assert_eq!(sample_targets(100, 100, 1), None);
    assert_eq!(sample_targets(100, 500, 1), None);
    let s = sample_targets(1_000_003, 997, 5).unwrap();
    assert_eq!(s.len(), 997);
    assert!(s.windows(2).all(|w| w[0] < w[1]), "sorted and distinct");
    assert!(*s.last().unwrap() < 1_000_003);
    assert_eq!(sample_targets(1_000_003, 997, 5).unwrap(), s, "the same every time");
    assert_ne!(sample_targets(1_000_003, 997, 6).unwrap(), s, "seeded");
    // Spread: one target per stratum of about 1,003; pieces of 2,100 targets each (476 of them
    // and a rest) hold a whole stratum each, so every piece gets 2 to 4.
    let per_piece = |i: usize| i / 2100;
    let mut hit = vec![0usize; 477];
    for &i in &s {
        hit[per_piece(i)] += 1;
    }
    assert!(hit[..476].iter().all(|&h| (1..=4).contains(&h)), "a piece with too few or many targets: {hit:?}");
}

#[test]
fn the_on_the_fly_order_is_a_seeded_permutation() {
    for n in (1..300u64).chain([1 << 12, 100_003, (1 << 22) + 1]) {
        let p = Permutation::new(n, 9);
        let mut seen = vec![false; n as usize];
        for i in 0..n {
            let j = p.get(i) as usize;
            assert!(!seen[j], "n {n}: {j} twice");
            seen[j] = true;
        }
    }
    let (a, b) = (Permutation::new(100_003, 1), Permutation::new(100_003, 2));
    let moved = (0..1000).filter(|&i| a.get(i) != b.get(i)).count();
    assert!(moved > 990, "another seed, another order ({moved} of 1000 differ)");
    let fixed = (0..100_003).filter(|&i| a.get(i) == i).count();
    assert!(fixed < 20, "{fixed} fixed points: not shuffled");
}

#[test]
fn a_dataset_beyond_the_lazy_threshold_still_visits_every_window_once_per_epoch() {
    let n = LAZY_ORDER_WINDOWS + 77;
    let window = 4;
    let seq: Vec<u32> = (0..(n + window) as u32).map(|i| i % 13).collect();
    let ds = Dataset::new(vec![seq], Vec::new(), window, 1).unwrap();
    assert_eq!(ds.len(), n);
    let mut order = ds.epoch_order(3, 1);
    assert_eq!(order.len(), n);
    assert_eq!(order, ds.epoch_order(3, 1), "a function of (seed, epoch)");
    assert_ne!(order[..100], ds.epoch_order(3, 2)[..100]);
    // The batches follow the order.
    let first = ds.batches(8, etude::data::dataset::Targets::Last, 3, 1, false).next().unwrap();
    assert_eq!(first, ds.batch_of(&order[..8], etude::data::dataset::Targets::Last));
    order.sort_unstable();
    assert!(order.iter().enumerate().all(|(k, &i)| k == i), "not a permutation");
}

/// The built-in corpus has no two pieces with the same tokens, in either tokenizer: dropping
/// duplicates leaves the default run's data as it was.
#[test]
fn the_builtin_corpus_has_no_duplicate_piece() {
    let pieces = etude::data::corpus::load_corpus::<&Path>(&[], &Default::default()).pieces;
    assert_eq!(pieces.len(), 102);
    for name in ["timed", "notechord"] {
        let tokenizer = tokenizer_by_name(name, &Default::default()).unwrap();
        let set = TokenSet::from_pieces(&pieces, tokenizer.as_ref());
        assert_eq!(unique_pieces(&set), (0..102).collect::<Vec<_>>(), "{name}");
    }
}

#[test]
fn duplicates_are_kept_once_and_never_on_both_sides_of_the_split() {
    let mut pieces = etude::data::corpus::load_corpus::<&Path>(&[], &Default::default()).pieces;
    pieces.truncate(20);
    // Three copies of each piece, under other names.
    let mut copies = Vec::new();
    for k in 0..3 {
        for p in &pieces {
            let mut c = p.clone();
            c.name = format!("copy{k}/{}", p.name);
            copies.push(c);
        }
    }
    let tokenizer = tokenizer_by_name("timed", &Default::default()).unwrap();
    let set = TokenSet::from_pieces(&copies, tokenizer.as_ref());
    assert_eq!(unique_pieces(&set), (0..20).collect::<Vec<_>>());
    let cfg = DataConfig { window: 32, valid_fraction: 0.2, ..Default::default() };
    let p = prepare_tokens(&set, tokenizer.as_ref(), &cfg, None).unwrap();
    assert_eq!(p.duplicates, 40);
    assert_eq!((p.split.train.len(), p.split.valid.len()), (16, 4));
    assert!(p.split.train.iter().chain(&p.split.valid).all(|&i| i < 20), "only first copies are used");
    // The split of the 20 unique pieces is the one of the 20 pieces alone.
    let alone = TokenSet::from_pieces(&pieces, tokenizer.as_ref());
    let q = prepare_tokens(&alone, tokenizer.as_ref(), &cfg, None).unwrap();
    assert_eq!(q.duplicates, 0);
    assert_eq!(p.split, q.split);
    assert_eq!(p.train.total_ids(), q.train.total_ids());
    // --keep-duplicates: all 60, copies on both sides.
    let keep = DataConfig { keep_duplicates: true, ..cfg };
    let k = prepare_tokens(&set, tokenizer.as_ref(), &keep, None).unwrap();
    assert_eq!(k.duplicates, 0);
    assert_eq!(k.split.train.len() + k.split.valid.len(), 60);
    let base = |i: &usize| i % 20;
    assert!(k.split.valid.iter().map(base).any(|v| k.split.train.iter().map(base).any(|t| t == v)), "expected a copy on both sides");
}

#[test]
fn a_piece_sample_for_the_baselines_is_bounded_seeded_and_in_order() {
    use etude::eval::data::sample_pieces;
    let candidates: Vec<usize> = (0..500).map(|i| 2 * i).collect();
    let len = |i: usize| 100 + i % 7;
    let (all, note) = sample_pieces(&candidates, len, 1_000_000, 0);
    assert_eq!((all, note), (candidates.clone(), None), "all of them when under the cap");
    let (some, note) = sample_pieces(&candidates, len, 5_000, 0);
    assert!(some.iter().map(|&i| len(i)).sum::<usize>() <= 5_000);
    assert!(some.len() >= 40, "{}", some.len());
    assert!(some.windows(2).all(|w| w[0] < w[1]) && some.iter().all(|i| candidates.contains(i)));
    assert!(note.unwrap().starts_with(&format!("a seeded sample of {} of 500 training pieces", some.len())));
    assert_eq!(sample_pieces(&candidates, len, 5_000, 0).0, some);
    assert_ne!(sample_pieces(&candidates, len, 5_000, 1).0, some);
}

/// The meta of a run's checkpoint.
fn meta(path: &Path) -> serde_json::Value {
    Checkpoint::load(path).unwrap().meta
}

#[test]
fn train_scores_one_sample_every_epoch_and_eval_scores_every_target_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Ten pieces, twice: the second copy is dropped.
    for folder in ["a", "b"] {
        std::fs::create_dir_all(dir.join(folder)).unwrap();
        for (name, bytes) in etude::data::corpus::builtin().into_iter().take(10) {
            std::fs::write(dir.join(folder).join(name.rsplit(['/', ':']).next().unwrap()), bytes).unwrap();
        }
    }
    let mut args = tiny_train("lstm-seq", "cpu", "run", "2", &["--val-targets", "40", "--val-fraction", "0.2"]);
    args.extend(["--data", "a", "b"].map(String::from));
    let (_, err) = etude_ok(&args, dir);
    assert!(err.contains("kept 10 of 20 pieces: 10 duplicates"), "{err}");
    assert!(err.contains("validation scores a seeded sample of 40 of the "), "{err}");
    let m = meta(&dir.join("run/best.safetensors"));
    assert_eq!(m["data"]["data"]["valid_targets"], 40, "the sample is stored in the run");
    assert!(m["data"]["data"].get("keep_duplicates").is_none());
    assert!(m["copy"]["fitted_on"].as_str().unwrap().starts_with("a seeded sample of 40 of the "), "{}", m["copy"]);
    let best = m["progress"]["best_val_loss"].as_f64().unwrap();
    let baseline = json(&std::fs::read_to_string(dir.join("run/baseline.json")).unwrap());
    assert_eq!(baseline["targets"], 40);
    assert_eq!(baseline["sample"]["targets"], 40);
    let all = baseline["sample"]["of"].as_u64().unwrap();
    assert!(all > 40, "{baseline}");
    // The end of the run scored the very targets of the best epoch.
    assert!((baseline["loss"].as_f64().unwrap() - best).abs() < 1e-12, "{} against {best}", baseline["loss"]);
    // eval with the same option: the same targets, the same loss; without it, every target.
    let eval = |extra: &[&str]| {
        let a: Vec<&str> = ["eval", "--model", "run/best.safetensors", "--json", "--no-baseline"].iter().chain(extra).copied().collect();
        json(&etude_ok(&a, dir).0)
    };
    let sampled = eval(&["--val-targets", "40"]);
    assert_eq!(sampled["targets"], 40);
    assert!((sampled["loss"].as_f64().unwrap() - best).abs() < 1e-12);
    let every = eval(&[]);
    assert_eq!(every["targets"].as_u64().unwrap(), all);
    assert!(every.get("sample").is_none());
    // Every epoch scored the same 40 targets: epoch 2's validation loss is that of last.safetensors.
    let rows = cli_common::metrics_rows(&dir.join("run"));
    let last = json(&etude_ok(&["eval", "--model", "run/last.safetensors", "--json", "--no-baseline", "--no-copy", "--val-targets", "40"], dir).0);
    let v2: f64 = rows[1][cli_common::col("val_loss")].parse().unwrap();
    assert!((last["loss"].as_f64().unwrap() - v2).abs() < 1e-5, "{} against {v2}", last["loss"]);

    // --keep-duplicates: every piece, and it is stored.
    let mut args = tiny_train("lstm-seq", "cpu", "keep", "1", &["--keep-duplicates", "--val-targets", "0"]);
    args.extend(["--data", "a", "b"].map(String::from));
    let (_, err) = etude_ok(&args, dir);
    assert!(!err.contains("duplicates ("), "{err}");
    let m = meta(&dir.join("keep/best.safetensors"));
    assert_eq!(m["data"]["data"]["keep_duplicates"], true);
    assert!(m["data"]["data"].get("valid_targets").is_none(), "every target: nothing stored");
    assert_eq!(m["valid_pieces"].as_array().unwrap().len(), 2);
}

/// The training side read in place from the mapped cache file gives the very batches of the
/// side copied into memory (the run's losses then match bit for bit).
#[test]
fn mapped_training_windows_equal_the_copied_ones() {
    use etude::data::prepare::prepare_tokens_mapped;
    use etude::data::token_cache::load_or_build;
use etude::data::cache_file::CacheKey;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (name, bytes) in etude::data::corpus::builtin().into_iter().take(12) {
        std::fs::write(data.join(name.rsplit(['/', ':']).next().unwrap()), bytes).unwrap();
    }
    let tokenizer = tokenizer_by_name("timed", &Default::default()).unwrap();
    let key = CacheKey { paths: vec![data], read: Default::default(), tokenizer: "timed".into(), tokenizer_options: Default::default() };
    load_or_build(&tmp.path().join("c"), &key, tokenizer.as_ref(), false, false).unwrap();
    let (set, _) = load_or_build(&tmp.path().join("c"), &key, tokenizer.as_ref(), false, false).unwrap();
    assert!(set.id_view().is_some(), "mapped from the cache file");
    let cfg = DataConfig { window: 64, stride: 3, valid_fraction: 0.25, seed: 2, transpose: 4, ..Default::default() };
    let copied = prepare_tokens(&set, tokenizer.as_ref(), &cfg, None).unwrap();
    let mapped = prepare_tokens_mapped(&set, tokenizer.as_ref(), &cfg, None).unwrap();
    drop(set);
    assert_eq!(mapped.train.len(), copied.train.len());
    assert_eq!(mapped.train.total_ids(), copied.train.total_ids());
    assert_eq!(mapped.vocab, copied.vocab);
    assert_eq!(mapped.short_piece_report(), copied.short_piece_report());
    for targets in [etude::data::dataset::Targets::Every, etude::data::dataset::Targets::Last] {
        for epoch in 1..=2 {
            let a: Vec<_> = copied.train.batches(16, targets, 2, epoch, false).collect();
            let b: Vec<_> = mapped.train.batches(16, targets, 2, epoch, false).collect();
            assert_eq!(a, b, "epoch {epoch}");
        }
    }
    for i in (0..copied.train.len()).step_by(97) {
        assert_eq!(mapped.train.input_vec(i), copied.train.input(i));
    }
    assert_eq!(mapped.valid.sequences(), copied.valid.sequences());
}

/// `stats.json` compares the sample with every validation piece up to the limit, else with a
/// seeded choice of that many, in the run's order.
#[test]
fn the_stats_reference_is_every_validation_piece_up_to_the_limit() {
    use etude::eval::data::stats_reference;
    let meta = |n: usize, seed: u64| {
        let mut m = common::test_meta("0", etude::model::any::ModelConfig::from_name("lstm", 3, 8, &Default::default()).unwrap(), etude::music::tokens::Vocab::from_counts(&[("a", 1), ("b", 1)], 1), 8);
        m.valid_pieces = (0..n).map(|i| format!("p{i:04}")).collect();
        m.data.data.seed = seed;
        let json = serde_json::to_value(&m).unwrap();
        etude::run::Loaded { meta: m, checkpoint: Checkpoint { meta: json, tensors: Vec::new() } }
    };
    let ten = meta(10, 0);
    assert_eq!(stats_reference(&ten, 100), (ten.meta.valid_pieces.clone(), 10));
    let many = meta(1000, 0);
    let (names, of) = stats_reference(&many, 100);
    assert_eq!((names.len(), of), (100, 1000));
    assert!(names.windows(2).all(|w| w[0] < w[1]), "in the run's order, no repeats");
    assert!(names.iter().all(|n| many.meta.valid_pieces.contains(n)));
    assert_eq!(stats_reference(&many, 100).0, names, "seeded");
    assert_ne!(stats_reference(&meta(1000, 1), 100).0, names);
}

/// The new options are token-mode options: piano-roll mode refuses them in one line.
#[test]
fn piano_roll_mode_refuses_the_sample_and_duplicate_options() {
    let tmp = tempfile::tempdir().unwrap();
    for (flag, value) in [("--val-targets", Some("5")), ("--keep-duplicates", None)] {
        let mut args = vec!["train", "--tokenizer", "pianoroll", flag];
        args.extend(value);
        cli_common::etude_fails(&args, tmp.path(), &[&format!("{flag} does not apply in piano-roll mode")]);
    }
}

/// A tokenizer's codes are its tokens: `encode_codes` mapped through `code_token` is `encode`, on
/// every built-in piece, for both tokenizers and several options, and distinct codes have distinct
/// tokens (the cache builder interns them as provisional ids).
#[test]
fn a_tokenizers_codes_are_its_tokens() {
    use etude::music::tokens::TokenizerOptions;
    let corpus = etude::data::corpus::load_corpus::<&Path>(&[], &Default::default());
    let cases = [
        ("notechord", TokenizerOptions::default()),
        ("timed", TokenizerOptions::default()),
        ("timed", TokenizerOptions { velocity_bins: 8, ..Default::default() }),
        ("timed", TokenizerOptions { steps_per_quarter: 24, max_shift: 7, max_duration: 300, velocity_bins: 64, ..Default::default() }),
    ];
    for (name, opts) in cases {
        let t = tokenizer_by_name(name, &opts).unwrap();
        let n = t.code_count();
        assert!(n > 0, "{name} has codes");
        let tokens: std::collections::HashSet<String> = (0..n as u32).map(|c| t.code_token(c).unwrap()).collect();
        assert_eq!(tokens.len(), n, "{name}: distinct codes, distinct tokens");
        assert_eq!(t.code_token(n as u32), None);
        for p in &corpus.pieces {
            let codes = t.encode_codes(&p.piece.notes).unwrap();
            let via: Vec<String> = codes.iter().map(|&c| t.code_token(c).unwrap()).collect();
            assert_eq!(via, t.encode(&p.piece.notes), "{name} {opts:?}: {}", p.name);
        }
    }
    // Options too large for codes: none, and a corpus is tokenised as strings.
    let wide = tokenizer_by_name("timed", &TokenizerOptions { max_duration: 1 << 20, ..Default::default() }).unwrap();
    assert_eq!(wide.code_count(), 0);
    assert!(wide.encode_codes(&corpus.pieces[0].piece.notes).is_none());
}

/// The walk finds each file once: a file reached through a symbolic link and directly, or a folder
/// linked into itself, counts once (by its canonical path, as before the walk took the entry types
/// from the folder listing); hard links are separate files; each file's metadata is its own.
#[cfg(unix)]
#[test]
fn the_walk_lists_each_file_once_through_links() {
    use etude::data::corpus::{collect, collect_stat};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = root.join("a");
    std::fs::create_dir_all(&a).unwrap();
    let bytes = etude::data::corpus::builtin();
    std::fs::write(a.join("x.mid"), bytes[0].1).unwrap();
    std::fs::write(a.join("y.mid"), bytes[1].1).unwrap();
    std::fs::hard_link(a.join("x.mid"), a.join("z.mid")).unwrap();
    std::os::unix::fs::symlink(a.join("x.mid"), a.join("w.mid")).unwrap();
    std::os::unix::fs::symlink(&a, root.join("b")).unwrap();
    std::os::unix::fs::symlink(root, a.join("loop")).unwrap();
    std::os::unix::fs::symlink(root.join("gone.mid"), a.join("v.mid")).unwrap();
    let (files, errors) = collect(&[root]);
    // w.mid (a link to x.mid) comes first in a/ and stands for x.mid; b/ and loop/ are a/ and the
    // root again; the dangling link is an error.
    assert_eq!(files, vec![a.join("w.mid"), a.join("y.mid"), a.join("z.mid")]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, a.join("v.mid"));
    let (stat, _) = collect_stat(&[root]);
    for (path, meta) in &stat {
        assert_eq!(meta.len(), std::fs::metadata(path).unwrap().len(), "{}", path.display());
    }
    // A file named twice, directly and through the linked folder: once.
    let (twice, _) = collect(&[a.join("y.mid"), root.join("b").join("y.mid")]);
    assert_eq!(twice, vec![a.join("y.mid")]);
}

/// A touched file (the same bytes, a new modification time) is read again, and only it: the warm
/// check compares one stat per file with the cache's stamps.
#[test]
fn a_touched_file_is_read_again() {
    use etude::data::cache_file::{load, CacheKey, Miss};
    use etude::data::token_cache::{load_or_build, Outcome};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (i, (_, bytes)) in etude::data::corpus::builtin().iter().take(6).enumerate() {
        std::fs::write(data.join(format!("{i}.mid")), bytes).unwrap();
    }
    let cache = tmp.path().join("cache");
    let key = CacheKey {
        paths: vec![data.clone()],
        read: Default::default(),
        tokenizer: "timed".into(),
        tokenizer_options: Default::default(),
    };
    let t = tokenizer_by_name("timed", &Default::default()).unwrap();
    load_or_build(&cache, &key, t.as_ref(), false, false).unwrap();
    assert_eq!(load_or_build(&cache, &key, t.as_ref(), false, false).unwrap().1, Outcome::Hit);
    let target = data.join("3.mid");
    let later = std::fs::metadata(&target).unwrap().modified().unwrap() + std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&target).unwrap().set_modified(later).unwrap();
    assert_eq!(load(&key.file_in(&cache), &key).err(), Some(Miss::Stale("1 files changed, 0 added, 0 removed".into())));
    let (set, outcome) = load_or_build(&cache, &key, t.as_ref(), false, false).unwrap();
    assert!(matches!(outcome, Outcome::Built(Miss::Stale(_))), "{outcome:?}");
    assert_eq!((set.tokenised_files(), set.reused_files()), (1, 5));
    assert_eq!(load_or_build(&cache, &key, t.as_ref(), false, false).unwrap().1, Outcome::Hit);
}
