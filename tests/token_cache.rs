//! The token cache: what it stores equals tokenising in memory, training from it equals training
//! without it bit for bit (CPU), and it is rebuilt whenever a file changed, was added or removed,
//! the settings changed, or the cache file is truncated, damaged or foreign.

use etude::data::corpus::builtin;
use etude::data::prepare::DataConfig;
use etude::engine::cpu::CpuBackend;
use etude::music::midi::ReadOptions;
use etude::model::any::Sizes;
use etude::data::token_cache::{load_or_build, tokenize_files, Outcome};
use etude::data::cache_file::{load, CacheKey, Miss};
use etude::data::token_set::TokenSet;
use etude::music::tokens::{tokenizer_by_name, Tokenizer, TokenizerOptions};
use etude::run::{load_checkpoint, DataSpec, OptimConfig};
use etude::train::{train, TrainOptions};
use std::path::{Path, PathBuf};

/// The built-in pieces as files in `dir` (two in a subfolder) plus one file that is not MIDI.
fn write_corpus(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    // Ten pieces: the nine at the top of the built-in corpus and one of its mutopia/ folder.
    let all = builtin();
    let top = all.iter().filter(|(n, _)| !n.contains('/'));
    let nested = all.iter().find(|(n, _)| n.contains('/'));
    for (i, (name, bytes)) in top.chain(nested).enumerate() {
        let name = name.rsplit(['/', ':']).next().unwrap();
        let path = if i < 2 { dir.join("sub").join(name) } else { dir.join(name) };
        std::fs::write(path, bytes).unwrap();
    }
    std::fs::write(dir.join("broken.mid"), b"not a midi file").unwrap();
}

fn key(dir: &Path, tokenizer: &str) -> CacheKey {
    CacheKey {
        paths: vec![dir.to_path_buf()],
        read: ReadOptions::default(),
        tokenizer: tokenizer.into(),
        tokenizer_options: TokenizerOptions::default(),
    }
}

fn tok(name: &str) -> Box<dyn Tokenizer> {
    tokenizer_by_name(name, &TokenizerOptions::default()).unwrap()
}

fn same_content(a: &TokenSet, b: &TokenSet) {
    assert_eq!(a.names(), b.names());
    assert_eq!(a.skipped(), b.skipped());
    assert_eq!(a.vocab(), b.vocab());
    assert_eq!(a.total_ids(), b.total_ids());
    for i in 0..a.len() {
        assert_eq!(a.piece_tokens(i), b.piece_tokens(i), "piece {i}");
        assert_eq!(a.piece_ids(i), b.piece_ids(i), "piece {i}");
    }
    assert_eq!(a.infos().unwrap(), b.infos().unwrap());
}

fn build(cache: &Path, k: &CacheKey, t: &dyn Tokenizer) -> (TokenSet, Outcome) {
    load_or_build(cache, k, t, false, false).unwrap()
}

#[test]
fn the_cache_holds_what_tokenising_in_memory_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_corpus(&data);
    let cache = tmp.path().join("cache");
    for name in ["notechord", "timed"] {
        let t = tok(name);
        let k = key(&data, name);
        let memory = tokenize_files(&k.paths, &k.read, t.as_ref(), false);
        assert_eq!(memory.len(), 10);
        assert_eq!(memory.skipped().len(), 1, "the broken file is skipped");
        assert!(memory.skipped()[0].name.ends_with("broken.mid"));
        let (cold, outcome) = build(&cache, &k, t.as_ref());
        assert_eq!(outcome, Outcome::Built(Miss::Absent));
        let (warm, outcome) = build(&cache, &k, t.as_ref());
        assert_eq!(outcome, Outcome::Hit);
        assert_eq!(warm.source(), Some(k.file_in(&cache).as_path()));
        assert_eq!(warm.id_bytes(), 2, "a small vocabulary is stored as u16");
        same_content(&memory, &cold);
        same_content(&memory, &warm);
        // The pieces' tokens are the tokenizer's, in collect order (subfolder first).
        let pieces = etude::data::corpus::load_corpus(&k.paths, &k.read).pieces;
        for (i, p) in pieces.iter().enumerate() {
            assert_eq!(warm.names()[i], p.name);
            assert_eq!(warm.piece_tokens(i), t.encode(&p.piece.notes));
        }
        // --force rebuilds a valid cache.
        assert_eq!(load_or_build(&cache, &k, t.as_ref(), true, false).unwrap().1, Outcome::Forced);
    }
}

fn stale(cache: &Path, k: &CacheKey, t: &dyn Tokenizer, want: &str) {
    let file = k.file_in(cache);
    match load(&file, k) {
        Err(Miss::Stale(why)) => assert!(why.contains(want), "{why} (wanted {want})"),
        Err(other) => panic!("expected stale ({want}), got {other}"),
        Ok(_) => panic!("a stale cache was used ({want})"),
    }
    // Rebuilt, then used, and equal to tokenising now.
    assert!(matches!(build(cache, k, t).1, Outcome::Built(Miss::Stale(_))));
    let (again, outcome) = build(cache, k, t);
    assert_eq!(outcome, Outcome::Hit);
    same_content(&again, &tokenize_files(&k.paths, &k.read, t, false));
}

fn damaged(cache: &Path, k: &CacheKey, t: &dyn Tokenizer, want: &str) {
    match load(&k.file_in(cache), k) {
        Err(Miss::Damaged(why)) => assert!(why.contains(want), "{why} (wanted {want})"),
        Err(other) => panic!("expected damaged ({want}), got {other}"),
        Ok(_) => panic!("a damaged cache was trusted ({want})"),
    }
    let (set, outcome) = build(cache, k, t);
    assert!(matches!(outcome, Outcome::Built(Miss::Damaged(_))));
    assert_eq!((set.reused_files(), set.tokenised_files()), (0, 11), "a damaged cache gives nothing to the rebuild");
    assert_eq!(build(cache, k, t).1, Outcome::Hit);
}

#[test]
fn the_cache_is_rebuilt_when_files_settings_or_the_cache_file_change() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_corpus(&data);
    let cache = tmp.path().join("cache");
    let t = tok("notechord");
    let k = key(&data, "notechord");
    build(&cache, &k, t.as_ref());
    assert_eq!(build(&cache, &k, t.as_ref()).1, Outcome::Hit);
    let pieces: Vec<(String, &[u8])> = builtin();

    // A file changed (another piece's bytes: size differs).
    let target = data.join("solace.mid");
    std::fs::write(&target, pieces[0].1).unwrap();
    stale(&cache, &k, t.as_ref(), "1 files changed");
    // The same size and modification time, other content: caught by the content hash (the file
    // was modified within 2 s of the build).
    let before = std::fs::metadata(&target).unwrap();
    let mut bytes = std::fs::read(&target).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x01;
    std::fs::write(&target, &bytes).unwrap();
    std::fs::File::options().write(true).open(&target).unwrap().set_modified(before.modified().unwrap()).unwrap();
    assert_eq!(std::fs::metadata(&target).unwrap().len(), before.len());
    stale(&cache, &k, t.as_ref(), "1 files changed");
    // A file added (in a new subfolder), then removed.
    std::fs::create_dir_all(data.join("more")).unwrap();
    std::fs::write(data.join("more").join("extra.MID"), pieces[3].1).unwrap();
    stale(&cache, &k, t.as_ref(), "1 added");
    std::fs::remove_file(data.join("more").join("extra.MID")).unwrap();
    stale(&cache, &k, t.as_ref(), "1 removed");
    // A file that is not MIDI stays skipped from the cache, with its cause.
    let (set, _) = build(&cache, &k, t.as_ref());
    assert_eq!(set.skipped().len(), 1);
    assert!(set.skipped()[0].cause.contains("MIDI") || !set.skipped()[0].cause.is_empty());

    // Settings changed: another cache file; a cache file of other settings is not used.
    let timed = key(&data, "timed");
    assert_ne!(timed.file_in(&cache), k.file_in(&cache));
    let sustain = CacheKey { read: ReadOptions { sustain: true, ..ReadOptions::default() }, ..k.clone() };
    let opts = CacheKey { tokenizer_options: TokenizerOptions { step: 0.25, ..TokenizerOptions::default() }, ..k.clone() };
    for other in [&timed, &sustain, &opts] {
        assert_ne!(other.file_in(&cache), k.file_in(&cache));
        assert_eq!(load(&other.file_in(&cache), other).err(), Some(Miss::Absent));
        std::fs::copy(k.file_in(&cache), other.file_in(&cache)).unwrap();
        let tk = tok(&other.tokenizer);
        stale(&cache, other, tk.as_ref(), "other data or settings");
    }

    // A truncated cache file, one with a flipped bit in its ids, an empty one, a foreign one.
    let file = k.file_in(&cache);
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, &good[..good.len() - 100]).unwrap();
    damaged(&cache, &k, t.as_ref(), "truncated");
    std::fs::write(&file, &good[..40]).unwrap();
    damaged(&cache, &k, t.as_ref(), "truncated");
    let mut flipped = good.clone();
    let at = flipped.len() - 200;
    flipped[at] ^= 0x10;
    std::fs::write(&file, &flipped).unwrap();
    damaged(&cache, &k, t.as_ref(), "checksum");
    std::fs::write(&file, b"").unwrap();
    damaged(&cache, &k, t.as_ref(), "not an etude token cache");
    std::fs::write(&file, vec![7u8; 5000]).unwrap();
    damaged(&cache, &k, t.as_ref(), "not an etude token cache");
}

fn options(data: &Path, out: &Path, cache: Option<PathBuf>) -> TrainOptions {
    TrainOptions {
        data: DataSpec {
            paths: vec![data.to_path_buf()],
            read: ReadOptions::default(),
            tokenizer: "notechord".into(),
            tokenizer_options: TokenizerOptions::default(),
            data: DataConfig { window: 16, stride: 3, valid_fraction: 0.2, seed: 4, transpose: 3, min_count: 1, ..Default::default() },
        },
        model: "lstm-seq".into(),
        sizes: Sizes { embed: Some(8), hidden: Some(12), layers: Some(1), dense: Some(8), ..Default::default() },
        optim: OptimConfig { batch: 8, lr: 3e-3, seed: 4, steps_per_epoch: Some(4), ..OptimConfig::default() },
        epochs: 2,
        checkpoint_every: 0,
        sample_length: 0,
        out: out.to_path_buf(),
        resume: false,
        progress_bar: false,
        cache,
    }
}

/// A run from the cache (cold, then warm) equals a run that tokenises in memory: the same windows,
/// losses and weights, bit for bit on the CPU backend, with transposition at batch time.
#[test]
fn training_from_the_cache_equals_training_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_corpus(&data);
    let b = CpuBackend::new();
    let cache = tmp.path().join("cache");
    let runs = [("memory", None), ("cold", Some(cache.clone())), ("warm", Some(cache.clone()))];
    let mut results = Vec::new();
    for (name, c) in runs {
        let out = tmp.path().join(name);
        let report = train(&b, &options(&data, &out, c)).unwrap();
        assert_eq!(report.skipped.len(), 1, "{name}: the broken file is reported");
        let ck = load_checkpoint(&out.join("last.safetensors")).unwrap();
        results.push((report.metrics, report.train_windows, report.valid_windows, ck.checkpoint.tensors, ck.meta.vocab));
    }
    assert!(cache.read_dir().unwrap().count() == 1, "one cache file");
    for r in &results[1..] {
        let (m, tw, vw, tensors, vocab) = r;
        assert_eq!((tw, vw), (&results[0].1, &results[0].2));
        assert_eq!(vocab, &results[0].4);
        for (a, b) in m.iter().zip(&results[0].0) {
            assert_eq!(a.train_loss.to_bits(), b.train_loss.to_bits());
            assert_eq!(a.val_loss.to_bits(), b.val_loss.to_bits());
        }
        assert_eq!(tensors.len(), results[0].3.len());
        for (a, b) in tensors.iter().zip(&results[0].3) {
            assert_eq!(a.name, b.name);
            assert!(a.data.iter().zip(&b.data).all(|(x, y)| x.to_bits() == y.to_bits()), "{} differs", a.name);
        }
    }
}

/// A cache folder that cannot be written does not stop a run: the tokens stay in memory.
#[test]
fn an_unwritable_cache_folder_is_reported_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_corpus(&data);
    let not_a_folder = tmp.path().join("file");
    std::fs::write(&not_a_folder, b"x").unwrap();
    let t = tok("timed");
    let k = key(&data, "timed");
    let (set, outcome) = load_or_build(&not_a_folder, &k, t.as_ref(), false, false).unwrap();
    assert!(matches!(outcome, Outcome::Built(_)));
    same_content(&set, &tokenize_files(&k.paths, &k.read, t.as_ref(), false));
}

/// After one file changed, was added or removed, the rebuild reads only that file (the others keep
/// their stored ids, the broken file its stored error) and gives what a cold build gives, id for id.
#[test]
fn a_rebuild_tokenises_only_the_files_that_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_corpus(&data);
    let cache = tmp.path().join("cache");
    for name in ["notechord", "timed"] {
        let t = tok(name);
        let k = key(&data, name);
        let (cold, _) = build(&cache, &k, t.as_ref());
        assert_eq!((cold.tokenised_files(), cold.reused_files()), (11, 0));
        let (warm, _) = build(&cache, &k, t.as_ref());
        assert_eq!((warm.tokenised_files(), warm.reused_files()), (0, 0), "a valid cache is only mapped");
        // (tokenised, reused) after each change, and the cold build of the files as they are now.
        let check = |what: &str, want: (usize, usize)| {
            let (set, outcome) = build(&cache, &k, t.as_ref());
            assert!(matches!(outcome, Outcome::Built(Miss::Stale(_))), "{what}: {outcome:?}");
            assert_eq!((set.tokenised_files(), set.reused_files()), want, "{what}");
            let fresh = tmp.path().join(format!("fresh-{name}-{what}"));
            let (cold, outcome) = build(&fresh, &k, t.as_ref());
            assert_eq!(outcome, Outcome::Built(Miss::Absent));
            same_content(&set, &cold);
            let (mapped, outcome) = build(&cache, &k, t.as_ref());
            assert_eq!(outcome, Outcome::Hit, "{what}");
            same_content(&mapped, &cold);
        };
        let pieces = builtin();
        let target = data.join("solace.mid");
        let original = std::fs::read(&target).unwrap();
        std::fs::write(&target, pieces[0].1).unwrap();
        check("changed", (1, 10));
        std::fs::write(data.join("sub").join("added.mid"), pieces[5].1).unwrap();
        check("added", (1, 11));
        std::fs::remove_file(data.join("sub").join("added.mid")).unwrap();
        check("removed", (0, 11));
        // Made bad: the file is now skipped, with its cause, and the vocabulary loses its tokens.
        std::fs::write(&target, b"MThd broken").unwrap();
        check("broken", (1, 10));
        std::fs::write(&target, &original).unwrap();
        check("restored", (1, 10));
    }
}
