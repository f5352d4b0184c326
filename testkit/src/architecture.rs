//! The layering checks the architecture document promises, read from a crate's source files:
//! which top-level modules a file names through `crate::`, and whether the modules of a crate
//! import each other in a circle. The coordinator's and the agent's architecture tests use them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `directory`, with its path relative to `root` (`/`-separated).
pub fn sources(root: &Path, directory: &Path, found: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(directory)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", directory.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(root, &path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            let relative = path
                .strip_prefix(root)
                .expect("under the source root")
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let mut text = std::fs::read_to_string(&path).expect("a readable source file");
            // A file's unit tests may use any module of the crate; the layers are about the code.
            if let Some(tests) = text.find("#[cfg(test)]\nmod tests") {
                text.truncate(tests);
            }
            found.push((relative, text));
        }
    }
}

/// Every `.rs` file of a crate's `src/` (given its manifest directory), as (path relative to
/// `src/`, text).
pub fn crate_sources(manifest_dir: &str) -> Vec<(String, String)> {
    let root = Path::new(manifest_dir).join("src");
    let mut found = Vec::new();
    sources(&root, &root, &mut found);
    assert!(
        found.iter().any(|(path, _)| path == "lib.rs"),
        "no lib.rs under {}",
        root.display()
    );
    found
}

/// The top-level modules a source text names through `crate::`, as `crate::name` or inside a
/// grouped `crate::{...}` import.
pub fn named_modules(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("crate::") {
        rest = &rest[start + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.push(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
    }
    names
}

/// The top-level module a source file belongs to (`api/users.rs` is in `api`).
pub fn module_of(path: &str) -> String {
    let first = path.split('/').next().unwrap_or(path);
    first.trim_end_matches(".rs").to_string()
}

/// A circle among the top-level modules of `sources`, as the modules along it, if there is one.
pub fn find_circle(sources: &[(String, String)]) -> Option<Vec<String>> {
    let modules: BTreeSet<String> = sources.iter().map(|(path, _)| module_of(path)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in sources {
        let from = module_of(path);
        for name in named_modules(text) {
            if name != from && modules.contains(&name) {
                edges.entry(from.clone()).or_default().insert(name);
            }
        }
    }
    // Depth-first search; a module met again while it is on the path closes a circle.
    fn visit(
        module: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|seen| seen == module) {
            let mut circle = path[start..].to_vec();
            circle.push(module.to_string());
            return Some(circle);
        }
        if done.contains(module) {
            return None;
        }
        path.push(module.to_string());
        for next in edges.get(module).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(module.to_string());
        None
    }
    let mut done = BTreeSet::new();
    modules
        .iter()
        .find_map(|module| visit(module, &edges, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_name_reader_sees_paths_and_groups() {
        let cases: &[(&str, &[&str])] = &[
            ("use crate::api::ApiError;", &["api"]),
            ("use crate::{App, api::tasks};", &["App", "api"]),
            ("x: crate::tasks::TaskState", &["tasks"]),
            ("use super::api;", &[]),
        ];
        for (text, expected) in cases {
            assert_eq!(named_modules(text), *expected, "{text}");
        }
    }

    #[test]
    fn a_circle_is_found_and_a_chain_is_not() {
        let source = |path: &str, text: &str| (path.to_string(), text.to_string());
        let chain = [
            source("lib.rs", "use crate::a::X;"),
            source("a.rs", "use crate::b::Y;"),
            source("b/mod.rs", ""),
        ];
        assert_eq!(find_circle(&chain), None);
        let circle = [
            source("lib.rs", ""),
            source("a.rs", "use crate::b::Y;"),
            source("b/mod.rs", "use crate::{a::X};"),
        ];
        assert_eq!(
            find_circle(&circle),
            Some(vec!["a".to_string(), "b".to_string(), "a".to_string()])
        );
    }
}
