//! The gate in front of a test that needs something of the machine (root, a program, apt's
//! lists): without it the test is skipped with a printed reason, except under `CI=true`, where
//! it fails, so that a machine without what the tests need cannot pass quietly.

use std::fmt::Display;

/// Whether this run is CI's (`CI=true`), where nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Says why the test cannot run and returns `false` (the test then returns early); panics
/// instead under `CI=true`.
pub fn skip(reason: impl Display) -> bool {
    if under_ci() {
        panic!("cannot run: {reason}");
    }
    eprintln!("SKIPPED, and this would fail under CI=true: {reason}");
    false
}

/// `true` when nothing stands in the way (`None`), otherwise [`skip`] with the reason.
pub fn runs(blocker: Option<String>) -> bool {
    match blocker {
        None => true,
        Some(reason) => skip(reason),
    }
}
