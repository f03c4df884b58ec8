//! The agent's shape, checked: its folders depend on each other in one
//! direction only (dataplane <- rib <- fib, slow_path <- operator <- daemon),
//! and no source file outgrows one concept (600 lines).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

const FOLDERS: [&str; 6] = ["dataplane", "rib", "fib", "slow_path", "operator", "daemon"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The folders a source file names through `crate::`, in paths or in a
/// `use crate::{...}` group (comments left out).
fn named_folders(text: &str) -> BTreeSet<&'static str> {
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            // A group: its top-level entries.
            Some(group) => {
                let (mut depth, mut start, mut names) = (0, 0, Vec::new());
                for (j, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            names.push(&group[start..j]);
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            names.push(&group[start..j]);
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
                names
            }
            None => vec![rest],
        };
        for n in names {
            let head = n.trim().split("::").next().unwrap_or("");
            if let Some(f) = FOLDERS.iter().find(|f| **f == head) {
                found.insert(*f);
            }
        }
    }
    found
}

#[test]
fn agent_folders_form_no_cycle_and_files_stay_small() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut deps: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut too_big = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        if text.lines().count() > 600 {
            too_big.push(format!("{} ({} lines)", f.display(), text.lines().count()));
        }
        let rel = f.strip_prefix(&src).unwrap();
        let Some(folder) = FOLDERS.iter().find(|d| rel.starts_with(d)) else { continue };
        deps.entry(folder).or_default().extend(named_folders(&text).into_iter().filter(|d| d != folder));
    }
    assert!(too_big.is_empty(), "source files over 600 lines: {too_big:?}");
    assert!(deps.values().map(|d| d.len()).sum::<usize>() > 3, "the scan found the folders' imports: {deps:?}");
    // Peel off folders that depend on nothing left; a cycle is what remains.
    let mut left = deps.clone();
    while let Some(leaf) = FOLDERS.iter().find(|f| left.contains_key(**f) && left[**f].iter().all(|d| !left.contains_key(d))) {
        left.remove(leaf);
    }
    assert!(left.is_empty(), "module cycle among {:?} (all dependencies: {deps:?})", left.keys().collect::<Vec<_>>());
}

#[test]
fn the_scan_sees_paths_and_groups() {
    let text = "use crate::{\n    rib::{Rib, cow::Source},\n    dataplane::map_writer::MapWriter,\n};\n// crate::daemon in a comment\nlet x = crate::fib::source::Feed::new();";
    assert_eq!(named_folders(text), BTreeSet::from(["dataplane", "fib", "rib"]));
}
