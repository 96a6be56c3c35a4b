//! The import graph between the files of a crate's `src/`, and its cycles: a test that the
//! layers of a crate stay layers (a file low in the stack never imports one above it).
//!
//! An edge is a `crate::a::b` or `super::b` path in a file's code (comments, and tests after
//! `#[cfg(test)]`, do not count), resolved to the longest module it names. A module's own
//! submodules are its children, not an import, so a parent declaring them is no edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every group of files that import one another in a circle (strongly connected, two or
/// more), each sorted; empty when the imports form layers.
pub fn import_cycles(src: &Path) -> Vec<Vec<String>> {
    let graph = import_graph(src);
    Tarjan::new(&graph).cycles()
}

/// Module name → the modules its code imports.
pub fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = BTreeMap::new();
    collect(src, src, &mut files);
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(module, text)| {
            let mut deps = BTreeSet::new();
            for line in code_lines(text) {
                for path in paths_after(line, "crate::") {
                    deps.extend(longest_module(&path, &modules));
                }
                let parent = module.rsplit_once("::").map(|(p, _)| p.to_owned());
                for path in paths_after(line, "super::") {
                    let full = match &parent {
                        Some(parent) => format!("{parent}::{path}"),
                        None => path,
                    };
                    deps.extend(longest_module(&full, &modules));
                }
            }
            deps.remove(module);
            (module.clone(), deps)
        })
        .collect()
}

fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
            continue;
        }
        let Some(rel) = path.strip_prefix(root).ok().and_then(|r| r.to_str()) else { continue };
        let Some(rel) = rel.strip_suffix(".rs") else { continue };
        let module = rel.strip_suffix("/mod").unwrap_or(rel).replace('/', "::");
        let leaf = module.rsplit("::").next().unwrap_or_default();
        if matches!(module.as_str(), "lib" | "main") || leaf == "tests" || leaf.ends_with("_tests") {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(&path) {
            files.insert(module, text);
        }
    }
}

/// The lines of code before the file's tests, without comment lines.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().take_while(|l| l.trim() != "#[cfg(test)]").filter(|l| !l.trim_start().starts_with("//"))
}

/// The module paths following each `prefix` in `line` (`crate::a::b::Type` → `a::b::Type`).
fn paths_after(line: &str, prefix: &str) -> Vec<String> {
    line.match_indices(prefix)
        .map(|(at, _)| {
            line[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect::<String>()
                .trim_end_matches(':')
                .to_owned()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

fn longest_module(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|m| modules.contains(m))
}

/// The production files below `root` (relative paths, `/`-separated) whose code names `word`
/// (case-insensitive, at the start of a word), with how many code lines do. Comments, the
/// `#[cfg(test)]` part of a file, and files for which `skip(relative path)` holds are left out.
pub fn files_naming(root: &Path, word: &str, skip: &dyn Fn(&str) -> bool) -> BTreeMap<String, usize> {
    let mut files = BTreeMap::new();
    let word = word.to_ascii_lowercase();
    walk(root, root, &mut |rel, text| {
        if skip(rel) {
            return;
        }
        let lines = code_lines(text).filter(|line| names(&line.to_ascii_lowercase(), &word)).count();
        if lines > 0 {
            files.insert(rel.to_owned(), lines);
        }
    });
    files
}

fn names(line: &str, word: &str) -> bool {
    line.match_indices(word).any(|(at, _)| !line[..at].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric()))
}

fn walk(root: &Path, dir: &Path, visit: &mut dyn FnMut(&str, &str)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target" || n.to_string_lossy().starts_with('.')) {
                continue;
            }
            walk(root, &path, visit);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let Some(rel) = path.strip_prefix(root).ok().and_then(|r| r.to_str()) else { continue };
            if let Ok(text) = std::fs::read_to_string(&path) {
                visit(&rel.replace('\\', "/"), &text);
            }
        }
    }
}

/// Tarjan's strongly connected components.
struct Tarjan<'a> {
    graph: &'a BTreeMap<String, BTreeSet<String>>,
    index: BTreeMap<&'a str, usize>,
    low: BTreeMap<&'a str, usize>,
    stack: Vec<&'a str>,
    on_stack: BTreeSet<&'a str>,
    cycles: Vec<Vec<String>>,
}

impl<'a> Tarjan<'a> {
    fn new(graph: &'a BTreeMap<String, BTreeSet<String>>) -> Self {
        Tarjan {
            graph,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            cycles: Vec::new(),
        }
    }

    fn cycles(mut self) -> Vec<Vec<String>> {
        for module in self.graph.keys() {
            if !self.index.contains_key(module.as_str()) {
                self.visit(module);
            }
        }
        self.cycles
    }

    fn visit(&mut self, v: &'a str) {
        let n = self.index.len();
        self.index.insert(v, n);
        self.low.insert(v, n);
        self.stack.push(v);
        self.on_stack.insert(v);
        let graph = self.graph;
        for w in graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !self.index.contains_key(w) {
                self.visit(w);
                let low = self.low[v].min(self.low[w]);
                self.low.insert(v, low);
            } else if self.on_stack.contains(w) {
                let low = self.low[v].min(self.index[w]);
                self.low.insert(v, low);
            }
        }
        if self.low[v] == self.index[v] {
            let mut group = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack.remove(w);
                group.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                self.cycles.push(group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_circle_of_imports_is_found_and_layers_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        write(src, "lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod low;\n");
        write(src, "a.rs", "use crate::b::Thing;\nuse crate::low;\n");
        write(src, "b.rs", "pub struct Thing(crate::c::Other);\n");
        write(src, "c.rs", "// crate::low is documented, not imported\nfn f() -> crate::a::X { loop {} }\n");
        write(src, "low.rs", "pub fn f() {}\n#[cfg(test)]\nmod tests { use crate::a::X; }\n");
        assert_eq!(import_cycles(src), vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]);
        write(src, "c.rs", "fn f() -> crate::low::Y { loop {} }\n");
        assert!(import_cycles(src).is_empty(), "{:?}", import_graph(src));
    }

    #[test]
    fn files_naming_a_word_count_code_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        write(src, "a.rs", "// NetSuite in a comment\nuse crate::netsuite::x;\nlet y = \"NetSuite\";\n");
        write(src, "b.rs", "fn f() {}\n#[cfg(test)]\nmod tests { const N: &str = \"netsuite\"; }\n");
        write(src, "c.rs", "let n = subnetsuite;\n");
        write(src, "skip/d.rs", "use crate::netsuite;\n");
        let found = files_naming(src, "NetSuite", &|rel| rel.starts_with("skip/"));
        assert_eq!(found, BTreeMap::from([("a.rs".to_owned(), 2)]));
    }

    #[test]
    fn super_paths_resolve_against_the_parent_module() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        write(src, "config/mod.rs", "mod build;\nuse crate::config::build::x;\n");
        write(src, "config/build.rs", "use super::raw::Raw;\n");
        write(src, "config/raw.rs", "use crate::config::build::y;\n");
        let graph = import_graph(src);
        assert_eq!(graph["config::build"], BTreeSet::from(["config::raw".to_owned()]));
        assert_eq!(import_cycles(src), vec![vec!["config::build".to_owned(), "config::raw".to_owned()]]);
    }
}
