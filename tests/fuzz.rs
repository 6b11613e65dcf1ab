//! Seeded property tests ("fuzzers") of the readers of untrusted files: the MIDI reader, the
//! checkpoint loader, the token cache's reader and the piano-roll reader. Each mutates valid
//! inputs with a fixed seed (so a failure reproduces), runs a bounded number of cases (stopping
//! early past a time budget, so it fits in the normal `cargo test`), and prints how many cases it
//! ran and how they ended.
//!
//! Properties: no input panics or hangs; what the MIDI reader accepts is a well-formed piece
//! (notes sorted, pitches 0..=127, 0 <= start < end, finite); what the checkpoint loader accepts
//! builds its model and runs a forward pass. `ETUDE_FUZZ_CASES` and `ETUDE_FUZZ_SECONDS` raise
//! the case counts and the time budget for a longer run.

use etude::run::checkpoint::Checkpoint;
use etude::engine::cpu::CpuBackend;
use etude::engine::Backend;
use etude::music::midi::{read_midi, ReadOptions};
use etude::model::any::{AnyModel, ModelConfig, Sizes};
use etude::model::Model;
use etude::rng::Rng;
use etude::run::{load_checkpoint, DataSpec, Loaded, Meta, OptimConfig, Progress, RunSettings};
use etude::music::tokens::{TokenizerOptions, Vocab};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

/// Cases to run: `default`, or `ETUDE_FUZZ_CASES`.
fn cases(default: usize) -> usize {
    std::env::var("ETUDE_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The time budget of one fuzzer: 6 s in the normal test run, or `ETUDE_FUZZ_SECONDS`.
fn budget() -> Duration {
    Duration::from_secs(std::env::var("ETUDE_FUZZ_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(6))
}

fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// One random mutation of `bytes`: flipped bits, overwritten, inserted or deleted bytes, a
/// truncation, a duplicated span, or "interesting" values (0, 0xff, 0x7f, 0x80) written.
fn mutate(bytes: &mut Vec<u8>, rng: &mut Rng) {
    let rounds = 1 + below(rng, 4);
    for _ in 0..rounds {
        let n = bytes.len();
        match below(rng, 7) {
            0 if n > 0 => {
                let at = below(rng, n);
                bytes[at] ^= 1 << below(rng, 8);
            }
            1 if n > 0 => {
                let at = below(rng, n);
                bytes[at] = rng.next_u64() as u8;
            }
            2 => {
                let at = below(rng, n + 1);
                bytes.insert(at, rng.next_u64() as u8);
            }
            3 if n > 0 => {
                let at = below(rng, n);
                let len = 1 + below(rng, 16.min(n - at));
                bytes.drain(at..at + len);
            }
            4 if n > 0 => bytes.truncate(below(rng, n)),
            5 if n > 2 => {
                let at = below(rng, n - 1);
                let len = 1 + below(rng, 64.min(n - at));
                let span: Vec<u8> = bytes[at..at + len].to_vec();
                let to = below(rng, n);
                bytes.splice(to..to, span);
            }
            _ if n > 0 => {
                let at = below(rng, n);
                bytes[at] = [0x00, 0xff, 0x7f, 0x80][below(rng, 4)];
            }
            _ => bytes.push(rng.next_u64() as u8),
        }
    }
}

#[test]
fn fuzz_midi_reader() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mid"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    seeds.sort();
    // Small files too, where a mutation is more likely to hit the header or an event.
    let small = etude::music::midi::write_midi(
        &[etude::music::midi::Note::new(60, 0.0, 1.0, 80), etude::music::midi::Note::new(64, 0.5, 2.0, 90)],
        &etude::music::midi::WriteOptions::default(),
    );
    seeds.push(small);
    let total = cases(3000);
    let mut rng = Rng::new(0xF022_0001);
    let (mut accepted, mut refused, mut ran) = (0, 0, 0);
    let started = Instant::now();
    for case in 0..total {
        if started.elapsed() > budget() {
            break;
        }
        let mut bytes = seeds[case % seeds.len()].clone();
        // Big files: mostly mutate their first 2 kB (header, first events), where damage matters.
        if bytes.len() > 4096 && below(&mut rng, 2) == 0 {
            bytes.truncate(2048 + below(&mut rng, 2048));
        }
        mutate(&mut bytes, &mut rng);
        for opts in [ReadOptions::default(), ReadOptions { all_parts: true, sustain: true }] {
            let result = catch_unwind(AssertUnwindSafe(|| read_midi(&bytes, &opts)));
            let result = result.unwrap_or_else(|_| panic!("case {case}: read_midi panicked on {} bytes", bytes.len()));
            match result {
                Ok(piece) => {
                    accepted += 1;
                    assert!(!piece.notes.is_empty(), "case {case}: an accepted piece has notes");
                    for w in piece.notes.windows(2) {
                        assert!(w[0].start <= w[1].start, "case {case}: notes out of order");
                    }
                    for n in &piece.notes {
                        assert!(n.pitch <= 127 && n.start.is_finite() && n.end.is_finite(), "case {case}: {n:?}");
                        assert!(0.0 <= n.start && n.start < n.end, "case {case}: {n:?}");
                    }
                }
                Err(e) => {
                    refused += 1;
                    assert!(!e.to_string().is_empty() && !e.to_string().contains('\n'), "case {case}: {e}");
                }
            }
        }
        ran += 1;
    }
    println!("fuzz_midi_reader: {ran} cases ({accepted} reads accepted, {refused} refused) in {:.1} s", started.elapsed().as_secs_f64());
    assert!(ran >= 200.min(total), "only {ran} cases ran within the budget");
    assert!(accepted > 0 && refused > 0, "the mutations should both keep and break files");
}

/// A tiny lstm checkpoint, with its Adam moments, built in memory.
fn tiny_checkpoint() -> Checkpoint {
    let b = CpuBackend::new();
    let tokens: Vec<Vec<&str>> = vec![vec!["C4", "E4", "G4", "0.4.7", "C4", "D4", "2.7", "E4"]];
    let vocab = Vocab::build(&tokens, 1);
    let window = 4;
    let cfg = ModelConfig::from_name("lstm", vocab.len(), window, &Sizes { embed: Some(3), hidden: Some(4), dense: Some(5), layers: Some(1), ..Default::default() })
        .unwrap();
    let model = AnyModel::new(&b, &cfg, 2, window, &mut Rng::new(1)).unwrap();
    let meta = Meta {
        etude_version: "0.1.0".into(),
        model: cfg,
        data: DataSpec {
            paths: Vec::new(),
            read: ReadOptions::default(),
            tokenizer: "notechord".into(),
            tokenizer_options: TokenizerOptions::default(),
            data: etude::data::prepare::DataConfig { window, ..Default::default() },
        },
        vocab,
        optim: OptimConfig::default(),
        progress: Progress { epoch: 1, step: 3, best_val_loss: 2.5, ..Progress::default() },
        valid_pieces: vec!["a.mid".into()],
        rng: Rng::new(7),
        run: RunSettings::default(),
        copy: None,
    };
    let mut ck = Loaded::from_model(&b, &model, meta).unwrap().checkpoint;
    let moments: Vec<_> = ["optimizer.exp_avg.", "optimizer.exp_avg_sq."]
        .iter()
        .flat_map(|prefix| {
            ck.tensors.iter().map(move |t| etude::run::checkpoint::HostTensor {
                name: format!("{prefix}{}", t.name),
                shape: t.shape.clone(),
                data: vec![0.01; t.data.len()],
            })
        })
        .collect();
    ck.tensors.extend(moments);
    ck
}

/// Replace one random leaf of `v` (a number, string, bool or null) with a hostile value.
fn mutate_json(v: &mut serde_json::Value, rng: &mut Rng) {
    let mut leaves: Vec<String> = Vec::new();
    fn walk(v: &serde_json::Value, path: String, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => m.iter().for_each(|(k, x)| walk(x, format!("{path}/{k}"), out)),
            serde_json::Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| walk(x, format!("{path}/{i}"), out)),
            _ => out.push(path),
        }
    }
    walk(v, String::new(), &mut leaves);
    let path = &leaves[below(rng, leaves.len())];
    let hostile = [
        serde_json::json!(0),
        serde_json::json!(1),
        serde_json::json!(-1),
        serde_json::json!(3.5),
        serde_json::json!(1e308),
        serde_json::json!(1_000_000_000u64),
        serde_json::json!(u64::MAX),
        serde_json::json!(null),
        serde_json::json!(""),
        serde_json::json!("11.1.4&7"),
        serde_json::json!(true),
    ];
    *v.pointer_mut(path).expect("a leaf") = hostile[below(rng, hostile.len())].clone();
}

#[test]
fn fuzz_checkpoint_loader() {
    let good = tiny_checkpoint();
    let good_bytes = good.to_bytes().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ck.safetensors");
    let b = CpuBackend::new();
    let total = cases(1500);
    let mut rng = Rng::new(0xF022_0002);
    let (mut accepted, mut refused, mut ran) = (0, 0, 0);
    let started = Instant::now();
    for case in 0..total {
        if started.elapsed() > budget() {
            break;
        }
        // Half the cases damage the bytes (the checksum and the parser must catch it); half change
        // a metadata value and write a fresh checksum (the settings checks must catch it).
        let bytes = if case % 2 == 0 {
            let mut bytes = good_bytes.clone();
            mutate(&mut bytes, &mut rng);
            bytes
        } else {
            let mut ck = good.clone();
            mutate_json(&mut ck.meta, &mut rng);
            ck.to_bytes().unwrap()
        };
        std::fs::write(&path, &bytes).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            let loaded = load_checkpoint(&path)?;
            let window = loaded.meta.data.data.window;
            let mut model = loaded.model(&b, 2, window, &path)?;
            let mut ids = b.alloc_ids(2 * window);
            b.write_ids(&mut ids, &vec![0; 2 * window]);
            model.forward(&b, &ids, 2);
            Ok(())
        }));
        match outcome.unwrap_or_else(|_| panic!("case {case}: the loader or the model panicked")) {
            Ok(()) => accepted += 1,
            Err(e) => {
                refused += 1;
                assert!(!e.contains('\n'), "case {case}: a one-line error expected: {e}");
                assert!(e.starts_with(&path.display().to_string()), "case {case}: the error names the file: {e}");
            }
        }
        ran += 1;
    }
    println!(
        "fuzz_checkpoint_loader: {ran} cases ({accepted} loaded and ran, {refused} refused) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(ran >= 200.min(total), "only {ran} cases ran within the budget");
    assert!(accepted > 0 && refused > 0, "the mutations should both keep and break checkpoints");
}

/// What `fuzz_midi_reader` found in a longer run (`ETUDE_FUZZ_SECONDS=90`): a header whose SMPTE
/// frame rate byte is 0x80 (-128) made midly negate an i8 and panic (builds with overflow checks,
/// as `cargo run` and the tests are).
#[test]
fn an_smpte_rate_of_minus_128_is_an_error() {
    let mut bytes = etude::music::midi::write_midi(&[etude::music::midi::Note::new(60, 0.0, 1.0, 80)], &etude::music::midi::WriteOptions::default());
    assert_eq!(&bytes[..4], b"MThd");
    bytes[12] = 0x80;
    bytes[13] = 4;
    let err = catch_unwind(|| read_midi(&bytes, &ReadOptions::default())).expect("no panic").unwrap_err();
    assert!(err.to_string().contains("-128 frames per second"), "{err}");
}

/// The token cache's reader (issue 32): a cache file of three pieces, mutated and put back where
/// the cache looks. Properties: `token_cache::load` never panics; what it accepts is a corpus whose
/// every id is in its vocabulary, one name per piece; what it refuses it says in one line; and
/// `load_or_build` (which also takes entries from a sound but stale file, the incremental rebuild)
/// always gives the corpus the files hold.
#[test]
fn fuzz_token_cache_reader() {
    use etude::data::token_cache::load_or_build;
use etude::data::cache_file::{load, CacheKey};
    use etude::music::tokens::tokenizer_by_name;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (name, bytes) in etude::data::corpus::builtin().into_iter().take(3) {
        let file = name.rsplit('/').next().unwrap().to_string();
        std::fs::write(data.join(file), bytes).unwrap();
    }
    let cache = tmp.path().join("cache");
    let tokenizer = tokenizer_by_name("timed", &TokenizerOptions::default()).unwrap();
    let key = CacheKey {
        paths: vec![std::fs::canonicalize(&data).unwrap()],
        read: ReadOptions::default(),
        tokenizer: "timed".into(),
        tokenizer_options: TokenizerOptions::default(),
    };
    let (truth, _) = load_or_build(&cache, &key, tokenizer.as_ref(), false, false).unwrap();
    let corpus = |set: &etude::data::token_set::TokenSet| -> Vec<(String, Vec<String>)> {
        (0..set.len()).map(|i| (set.names()[i].clone(), set.piece_tokens(i))).collect()
    };
    let expected = corpus(&truth);
    let file = key.file_in(&cache);
    let original = std::fs::read(&file).unwrap();
    let total = cases(2000);
    let mut rng = Rng::new(0xF022_0003);
    let (mut accepted, mut refused, mut rebuilt, mut ran) = (0, 0, 0, 0);
    let started = Instant::now();
    for case in 0..total {
        if started.elapsed() > budget() {
            break;
        }
        let mut bytes = original.clone();
        mutate(&mut bytes, &mut rng);
        std::fs::write(&file, &bytes).unwrap();
        let result = catch_unwind(AssertUnwindSafe(|| load(&file, &key)))
            .unwrap_or_else(|_| panic!("case {case}: token_cache::load panicked on {} bytes", bytes.len()));
        match result {
            Ok(set) => {
                accepted += 1;
                assert_eq!(set.names().len(), set.len(), "case {case}");
                for i in 0..set.len() {
                    assert!(set.piece_ids(i).iter().all(|&id| (id as usize) < set.vocab().len()), "case {case}: an id outside the vocabulary");
                }
            }
            Err(miss) => {
                refused += 1;
                let m = miss.to_string();
                assert!(!m.is_empty() && !m.contains('\n'), "case {case}: {m}");
            }
        }
        // Every tenth case: the whole path, rebuilding (and reusing what it may) as needed.
        if case % 10 == 0 {
            let got = catch_unwind(AssertUnwindSafe(|| load_or_build(&cache, &key, tokenizer.as_ref(), false, false)))
                .unwrap_or_else(|_| panic!("case {case}: load_or_build panicked"))
                .unwrap_or_else(|e| panic!("case {case}: {e}"));
            assert!(corpus(&got.0) == expected, "case {case}: the corpus read differs from the files'");
            rebuilt += 1;
        }
        ran += 1;
    }
    println!(
        "fuzz_token_cache_reader: {ran} cases ({accepted} loads accepted, {refused} refused, {rebuilt} load_or_build checked) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(ran >= 200.min(total), "only {ran} cases ran within the budget");
    assert!(refused > 0, "the mutations should break cache files");
}

/// The piano-roll reader (issue 32): small piano-roll files, plain JSON and gzip, mutated before
/// and after compression. Properties: `parse_roll_bytes` never panics; what it accepts holds at
/// least one split, every key of every frame in 0..88, each frame sorted without repeats; what it
/// refuses it says in one line naming the file.
#[test]
fn fuzz_piano_roll_reader() {
    use etude::data::roll::{parse_roll_bytes, to_json, to_json_gz, Sequence, KEYS};
    let mut rng = Rng::new(0xF022_0004);
    let seq = |rng: &mut Rng, n: usize| -> Sequence {
        (0..n).map(|_| (0..below(rng, 4)).map(|_| below(rng, KEYS) as u8).collect::<std::collections::BTreeSet<u8>>().into_iter().collect()).collect()
    };
    let seeds: Vec<(Vec<Sequence>, Vec<Sequence>)> =
        (0..4).map(|k| ((0..2 + k).map(|_| seq(&mut rng, 3 + k)).collect(), (0..1 + k).map(|_| seq(&mut rng, 2 + k)).collect())).collect();
    let total = cases(20_000);
    let (mut accepted, mut refused, mut ran) = (0, 0, 0);
    let started = Instant::now();
    for case in 0..total {
        if started.elapsed() > budget() {
            break;
        }
        let (train, valid) = &seeds[case % seeds.len()];
        let splits = [("train", train.as_slice()), ("valid", valid.as_slice())];
        let bytes = match case % 3 {
            // The gzip stream damaged.
            0 => {
                let mut b = to_json_gz(&splits);
                mutate(&mut b, &mut rng);
                b
            }
            // The JSON damaged, then compressed: gzip is sound, the content is not.
            1 => {
                let mut t = to_json(&splits).into_bytes();
                mutate(&mut t, &mut rng);
                use std::io::Write;
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&t).unwrap();
                e.finish().unwrap()
            }
            // Plain JSON damaged.
            _ => {
                let mut t = to_json(&splits).into_bytes();
                mutate(&mut t, &mut rng);
                t
            }
        };
        let result = catch_unwind(AssertUnwindSafe(|| parse_roll_bytes(&bytes, "f.pianoroll.json.gz")))
            .unwrap_or_else(|_| panic!("case {case}: parse_roll_bytes panicked on {} bytes", bytes.len()));
        match result {
            Ok(d) => {
                accepted += 1;
                let present: Vec<&str> = ["train", "valid", "test"].into_iter().filter(|s| d.has(s)).collect();
                assert!(!present.is_empty(), "case {case}: accepted without a split");
                for s in present {
                    for sq in d.split(s).unwrap() {
                        for f in sq {
                            assert!(f.iter().all(|&k| (k as usize) < KEYS), "case {case}: a key outside the 88: {f:?}");
                            assert!(f.windows(2).all(|w| w[0] < w[1]), "case {case}: frame not sorted or repeated: {f:?}");
                        }
                    }
                }
            }
            Err(e) => {
                refused += 1;
                assert!(e.starts_with("f.pianoroll.json.gz: ") && !e.contains('\n'), "case {case}: {e}");
            }
        }
        ran += 1;
    }
    println!("fuzz_piano_roll_reader: {ran} cases ({accepted} accepted, {refused} refused) in {:.1} s", started.elapsed().as_secs_f64());
    assert!(ran >= 200.min(total), "only {ran} cases ran within the budget");
    assert!(accepted > 0 && refused > 0, "the mutations should both keep and break files");
}
