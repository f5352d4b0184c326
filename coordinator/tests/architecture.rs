//! The coordinator's layers, checked on its source: only the HTTP layer (and the server and
//! library root that start it) names `crate::api`, the store names none of the modules built
//! on it, and no top-level modules import each other in a circle.

use testkit::architecture::{crate_sources, find_circle, named_modules};

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

fn coordinator_sources() -> Vec<(String, String)> {
    crate_sources(env!("CARGO_MANIFEST_DIR"))
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

#[test]
fn no_module_imports_in_a_circle() {
    let circle = find_circle(&coordinator_sources());
    assert!(
        circle.is_none(),
        "the coordinator's modules import in a circle: {}",
        circle.unwrap_or_default().join(" -> ")
    );
}
