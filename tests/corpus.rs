//! The built-in corpus, folder walking, and every file of the shared Mutopia corpora.

use etude::data::corpus::{builtin, collect, load_corpus};
use etude::music::midi::{read_midi, write_midi, Note, ReadOptions, WriteOptions};
use etude::music::tokens::{tokenizer_by_name, TokenizerOptions};
use std::path::PathBuf;

#[test]
fn builtin_corpus_is_embedded_and_all_piano() {
    let files = builtin();
    // The 10 original pieces less The Easy Winners (a held-out piece), and the 93 pieces of
    // mutopia-piano that are not among them.
    assert_eq!(files.len(), 102);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(names.contains(&"builtin:maple-leaf-rag.mid"));
    for (name, bytes) in &files {
        let on_disk = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus").join(&name["builtin:".len()..])).unwrap();
        assert_eq!(*bytes, &on_disk[..], "{name}");
        let piece = read_midi(bytes, &ReadOptions::default()).unwrap();
        assert!(piece.notes.len() > 100, "{name}: {} notes", piece.notes.len());
    }
    // Every MIDI file under corpus/ is embedded, and nothing else.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let (on_disk, errors) = collect(&[&root]);
    assert!(errors.is_empty());
    let mut on_disk: Vec<String> =
        on_disk.iter().map(|p| format!("builtin:{}", p.strip_prefix(&root).unwrap().display())).collect();
    on_disk.sort();
    assert_eq!(on_disk, names);
    // No held-out piece: none of the built-in pieces has the notes of a mutopia-piano-heldout file.
    if let Some(dir) = shared("mutopia-piano-heldout") {
        let key = |p: &etude::music::midi::Score| p.notes.iter().map(|n| (n.pitch, (n.start * 12.0).round() as i64)).collect::<Vec<_>>();
        let held: Vec<_> = load_corpus(&[dir], &ReadOptions::default()).pieces.iter().map(|p| key(&p.piece)).collect();
        for (name, bytes) in &files {
            let k = key(&read_midi(bytes, &ReadOptions::default()).unwrap());
            assert!(!held.contains(&k), "{name} is a held-out piece");
        }
    }
}

#[test]
fn folders_are_walked_sorted_recursively_and_errors_collected() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_midi(&[Note::new(60, 0.0, 1.0, 90)], &WriteOptions::default());
    std::fs::create_dir_all(dir.path().join("b/deeper")).unwrap();
    std::fs::write(dir.path().join("z.MID"), &good).unwrap();
    std::fs::write(dir.path().join("a.midi"), &good).unwrap();
    std::fs::write(dir.path().join("b/deeper/c.mid"), b"not midi").unwrap();
    std::fs::write(dir.path().join("b/notes.txt"), b"ignored").unwrap();
    let missing = dir.path().join("missing.mid");
    let (files, errors) = collect(&[dir.path().to_path_buf(), missing.clone()]);
    let rel: Vec<String> = files.iter().map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string()).collect();
    assert_eq!(rel, vec!["a.midi", "b/deeper/c.mid", "z.MID"]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, missing);

    let corpus = load_corpus(&[dir.path().to_path_buf(), missing], &ReadOptions::default());
    assert_eq!(corpus.pieces.len(), 2);
    assert_eq!(corpus.skipped.len(), 2);
    assert!(corpus.skipped.iter().any(|s| s.name.ends_with("c.mid") && s.cause.contains("not a MIDI file")));
}

/// `../shared/corpus/<name>` beside the crate (where CI puts it), or under `$ETUDE_SHARED_DIR`.
fn shared(name: &str) -> Option<PathBuf> {
    let beside = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus")).join(name);
    let from_env = std::env::var_os("ETUDE_SHARED_DIR").map(|d| PathBuf::from(d).join("corpus").join(name));
    [Some(beside), from_env].into_iter().flatten().find(|p| p.is_dir())
}

#[test]
fn every_shared_mutopia_file_parses() {
    for name in ["mutopia-piano", "mutopia-piano-heldout"] {
        let Some(dir) = shared(name) else {
            eprintln!("note: ../shared/corpus/{name} is absent here; skipping (CI has it)");
            continue;
        };
        let (files, errors) = collect(&[&dir]);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(files.len() >= 60, "{name}: only {} files", files.len());
        let t = tokenizer_by_name("timed", &TokenizerOptions::default()).unwrap();
        let (mut piano, mut notes) = (0, 0);
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            // Every file parses with every pitched part ...
            let all = read_midi(&bytes, &ReadOptions { all_parts: true, sustain: false })
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert!(!all.notes.is_empty());
            // ... and has a piano part or not.
            if let Ok(p) = read_midi(&bytes, &ReadOptions::default()) {
                piano += 1;
                notes += p.notes.len();
                assert!(!t.encode(&p.notes).is_empty());
            }
        }
        eprintln!("{name}: {} files parse, {piano} with a piano part ({notes} piano notes)", files.len());
        assert!(piano * 2 >= files.len(), "{name}: most files are piano ({piano} of {})", files.len());
    }
}
