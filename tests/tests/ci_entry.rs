//! The CI entry point turns the "skip, or fail under CI" gate on: `.ci/run` exports `CI=true`
//! before it runs the test command, so a test that cannot run on the CI machine fails there
//! instead of printing SKIPPED and passing.

use std::path::Path;
use std::process::Command;

/// Runs a copy of `.ci/run` beside a stand-in `scripts/test.sh` that prints what it was given,
/// with `CI` removed from the environment, and reads back the value the test command saw.
#[test]
fn the_ci_entry_point_sets_ci_true_for_the_test_command() {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let entry = std::fs::read_to_string(repository.join(".ci/run")).expect("read .ci/run");
    let sandbox = tempfile::tempdir().expect("temporary directory");
    std::fs::create_dir_all(sandbox.path().join(".ci")).unwrap();
    std::fs::create_dir_all(sandbox.path().join("scripts")).unwrap();
    std::fs::write(sandbox.path().join(".ci/run"), entry).unwrap();
    std::fs::write(
        sandbox.path().join("scripts/test.sh"),
        "printf 'CI=%s\\n' \"${CI-unset}\"\n",
    )
    .unwrap();
    let output = Command::new("bash")
        .arg(sandbox.path().join(".ci/run"))
        .env_remove("CI")
        .output()
        .expect("run the copy of .ci/run");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the copy of .ci/run failed: {output:?}"
    );
    assert_eq!(printed.trim(), "CI=true", "the test command saw: {printed}");
}
