//! Seeded property tests ("fuzzers") of the two readers of untrusted files: the MIDI reader and
//! the checkpoint loader. Each mutates valid inputs with a fixed seed (so a failure reproduces),
//! runs a bounded number of cases (stopping early past a time budget, so it fits in the normal
//! `cargo test`), and prints how many cases it ran and how they ended.
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
            data: etude::data::dataset::DataConfig { window, ..Default::default() },
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
