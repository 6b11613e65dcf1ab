//! The house rules of `src/` (issue 25), checked on the source itself so that they hold as the
//! code grows:
//!
//! * at most 10 `.rs` files directly in `src/`, and no source file over 700 lines;
//! * the rooms stand in the order of the data flow, and a room imports only rooms below it:
//!   rng, files, engine, layers, music, data, model, run, eval, generate, train, bench, cli;
//! * no two files import each other round (no cycle of `use crate::...` / `super::...` imports
//!   between files, tests excluded).
//!
//! Imports are read from `crate::`, `etude::` and `super::` paths outside comments and test
//! modules, and resolved to the file of the longest module prefix they name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOMS: [&str; 13] = ["rng", "files", "engine", "layers", "music", "data", "model", "run", "eval", "generate", "train", "bench", "cli"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file: `src/run/meta.rs` -> `["run", "meta"]`; `mod.rs`, `lib.rs` and
/// `main.rs` name their folder (the binary's `main.rs` and `cli/` are the `cli` room).
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut segs: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if segs.last().is_some_and(|s| s == "mod") {
        segs.pop();
    }
    if segs == ["lib"] {
        segs.clear();
    }
    if segs == ["main"] {
        segs = vec!["cli".into()];
    }
    segs
}

/// The code of a file without comments and without its `#[cfg(test)] mod tests` block.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// Every module path named after `crate::`, `etude::` or `super::` in `code`, with `{a, b::c}`
/// groups expanded (one level, which is all the code uses).
fn imported_paths(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for root in ["crate::", "etude::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(root).map(|i| i + from) {
            from = i + root.len();
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
                continue;
            }
            let rest = &code[from..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            let mut head: Vec<String> = rest[..end].split("::").filter(|s| !s.is_empty()).map(String::from).collect();
            let mut groups = vec![Vec::new()];
            if rest[end..].starts_with('{') {
                let close = rest[end..].find('}').map(|j| end + j).unwrap_or(rest.len());
                groups = rest[end + 1..close]
                    .split(',')
                    .map(|g| g.trim().split("::").filter(|s| !s.is_empty() && *s != "self" && *s != "*").map(String::from).collect())
                    .collect();
            }
            let base: Vec<String> = match root {
                // `super` of module a::b (file a/b.rs or a/b/mod.rs) is a.
                "super::" => module[..module.len().saturating_sub(1)].to_vec(),
                "crate::" if module.first().is_some_and(|r| r == "cli") => vec!["cli".into()],
                _ => Vec::new(),
            };
            for g in groups {
                let mut p = base.clone();
                p.append(&mut head.clone());
                p.extend(g);
                out.push(p);
            }
            head.clear();
        }
    }
    out
}

struct Tree {
    files: Vec<PathBuf>,
    by_module: BTreeMap<Vec<String>, usize>,
    edges: Vec<BTreeSet<usize>>,
}

fn tree() -> Tree {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let by_module: BTreeMap<Vec<String>, usize> =
        files.iter().enumerate().filter(|(_, f)| !f.ends_with("main.rs")).map(|(i, f)| (module_of(f), i)).collect();
    let resolve = |path: &[String]| (0..=path.len()).rev().find_map(|k| by_module.get(&path[..k]).copied());
    let edges = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let text = std::fs::read_to_string(f).unwrap();
            imported_paths(&code(&text), &module_of(f))
                .iter()
                .filter_map(|p| resolve(p))
                .filter(|&j| j != i && by_module.get(&Vec::new()).is_none_or(|&lib| lib != j))
                .collect()
        })
        .collect();
    Tree { files, by_module, edges }
}

fn name(t: &Tree, i: usize) -> String {
    t.files[i].strip_prefix(src()).unwrap().display().to_string()
}

#[test]
fn src_has_at_most_ten_files_at_the_top_and_none_over_700_lines() {
    let t = tree();
    let top: Vec<String> = (0..t.files.len()).filter(|&i| t.files[i].parent() == Some(src().as_path())).map(|i| name(&t, i)).collect();
    assert!(top.len() <= 10, "{} .rs files directly in src/: {top:?}", top.len());
    for (i, f) in t.files.iter().enumerate() {
        let lines = std::fs::read_to_string(f).unwrap().lines().count();
        assert!(lines <= 700, "src/{} has {lines} lines (at most 700)", name(&t, i));
    }
}

#[test]
fn rooms_import_only_the_rooms_below_them() {
    let t = tree();
    let rank = |i: usize| {
        let m = module_of(&t.files[i]);
        m.first().and_then(|r| ROOMS.iter().position(|x| x == r))
    };
    let mut upward = Vec::new();
    for (i, deps) in t.edges.iter().enumerate() {
        for &j in deps {
            if let (Some(a), Some(b)) = (rank(i), rank(j)) {
                if b > a {
                    upward.push(format!("src/{} imports src/{}", name(&t, i), name(&t, j)));
                }
            }
        }
    }
    assert!(upward.is_empty(), "imports of a room above (order: {ROOMS:?}):\n{}", upward.join("\n"));
    // Every folder of src/ is a room of the list.
    for m in t.by_module.keys() {
        if let Some(r) = m.first() {
            assert!(ROOMS.contains(&r.as_str()), "src/{r} is not one of the rooms {ROOMS:?}");
        }
    }
}

#[test]
fn no_files_import_each_other_round() {
    let t = tree();
    // Tarjan's strongly connected components: any with two files or more is a cycle.
    struct S<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on: Vec<bool>,
        next: usize,
        cycles: Vec<Vec<usize>>,
    }
    fn visit(s: &mut S, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on[v] = true;
        for &w in s.edges[v].iter() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                s.cycles.push(comp);
            }
        }
    }
    let n = t.files.len();
    let mut s = S { edges: &t.edges, index: vec![None; n], low: vec![0; n], stack: Vec::new(), on: vec![false; n], next: 0, cycles: Vec::new() };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    let cycles: Vec<String> = s.cycles.iter().map(|c| c.iter().map(|&i| format!("src/{}", name(&t, i))).collect::<Vec<_>>().join(" <-> ")).collect();
    assert!(cycles.is_empty(), "files that import each other round:\n{}", cycles.join("\n"));
}

/// The checks see what they should: a made-up upward import and a made-up cycle are found.
#[test]
fn the_import_reader_finds_paths_groups_and_super() {
    let m = |s: &str| s.split('/').map(String::from).collect::<Vec<_>>();
    let got = imported_paths("use crate::data::{corpus::X, dataset};\nuse super::meta::Meta;", &m("run/load"));
    assert_eq!(got, vec![m("data/corpus/X"), m("data/dataset"), m("run/meta/Meta")]);
    let got = imported_paths("use super::recorder::Recorder;", &m("engine/gpu"));
    assert_eq!(got, vec![m("engine/recorder/Recorder")]);
    let got = imported_paths("use crate::{Cli, Command};", &m("cli/read_once"));
    assert_eq!(got, vec![m("cli/Cli"), m("cli/Command")]);
    // Comments and test modules are not imports.
    assert!(imported_paths(&code("// crate::train\nfn f() {}\n#[cfg(test)]\nmod tests { use crate::train; }"), &m("model")).is_empty());
}
