//! The agent's layering, checked on its source: its top-level modules never import each other
//! in a circle (`testkit::architecture` reads the `crate::` paths of every file).

use testkit::architecture::{crate_sources, find_circle};

#[test]
fn no_module_imports_in_a_circle() {
    let circle = find_circle(&crate_sources(env!("CARGO_MANIFEST_DIR")));
    assert!(
        circle.is_none(),
        "the agent's modules import in a circle: {}",
        circle.unwrap_or_default().join(" -> ")
    );
}
