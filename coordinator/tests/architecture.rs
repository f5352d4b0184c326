//! The coordinator's layers, checked on its source: only the HTTP layer (and the server and
//! library root that start it) names `crate::api`, the store names none of the modules built
//! on it, and no top-level modules import each other in a circle.

use std::path::{Path, PathBuf};

/// Files outside `api/` that may still name `crate::api`: none.
const NOT_YET_MOVED: &[&str] = &[];

/// The modules the store is below: it never names them.
const ABOVE_THE_STORE: &[&str] = &[
    "auth",
    "api",
    "agentwork",
    "tasks",
    "channel",
    "proxmox",
    "acme",
];

/// Every `.rs` file under `directory`, with its path relative to `root` (`/`-separated).
fn sources(root: &Path, directory: &Path, found: &mut Vec<(String, String)>) {
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
            let text = std::fs::read_to_string(&path).expect("a readable source file");
            found.push((relative, text));
        }
    }
}

fn coordinator_sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    sources(&root, &root, &mut found);
    assert!(
        found.iter().any(|(path, _)| path == "lib.rs"),
        "the coordinator's sources were not found"
    );
    found
}

/// The top-level modules a source text names through `crate::`, as `crate::name` or inside a
/// grouped `crate::{...}` import.
fn named_modules(text: &str) -> Vec<String> {
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
fn only_the_http_layer_names_the_api() {
    let mut offenders = Vec::new();
    for (path, text) in coordinator_sources() {
        let allowed = path.starts_with("api/")
            || path == "server.rs"
            || path == "lib.rs"
            || NOT_YET_MOVED.iter().any(|prefix| path.starts_with(prefix));
        if !allowed && named_modules(&text).iter().any(|name| name == "api") {
            offenders.push(path);
        }
    }
    assert!(
        offenders.is_empty(),
        "these files name crate::api, but only api/, server.rs and lib.rs may: {offenders:?}"
    );
}

#[test]
fn the_store_names_nothing_above_it() {
    let mut offenders = Vec::new();
    for (path, text) in coordinator_sources() {
        if !path.starts_with("store/") {
            continue;
        }
        for name in named_modules(&text) {
            if ABOVE_THE_STORE.contains(&name.as_str()) {
                offenders.push(format!("{path} names crate::{name}"));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:?}");
}

/// The top-level module a source file belongs to (`api/users.rs` is in `api`).
fn module_of(path: &str) -> String {
    let first = path.split('/').next().unwrap_or(path);
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn no_module_imports_in_a_circle() {
    let sources = coordinator_sources();
    let modules: std::collections::BTreeSet<String> =
        sources.iter().map(|(path, _)| module_of(path)).collect();
    let mut edges: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        std::collections::BTreeMap::new();
    for (path, text) in &sources {
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
        edges: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
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
    let mut done = std::collections::BTreeSet::new();
    for module in &modules {
        let circle = visit(module, &edges, &mut Vec::new(), &mut done);
        assert!(
            circle.is_none(),
            "the coordinator's modules import in a circle: {}",
            circle.unwrap_or_default().join(" -> ")
        );
    }
}
