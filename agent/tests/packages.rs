//! Package operations against the real apt and dpkg of this machine: install, list and remove
//! the small `hello` package, refuse bad names before apt runs, and wait for a held dpkg lock.
//!
//! These tests change the machine's installed packages, so they need root and apt's package
//! lists (`apt-get update` once). Without them a test says why, and fails when `CI=true`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::packages::{AptSettings, PackageError, Packages};
use agent::process::{Exclusive, Stream, SystemRunner};
use protocol::ErrorCode;
use testkit::dpkg;

/// The tests in this file change the same package; they take turns.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PACKAGE: &str = "hello";
fn packages(settings: AptSettings) -> Packages {
    Packages::with_runner(Arc::new(SystemRunner), Exclusive::new(), settings)
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|name| name.to_string()).collect()
}

async fn installed(packages: &Packages) -> bool {
    let listed = packages.list(&names(&[PACKAGE])).await.unwrap();
    listed.iter().any(|package| package.name == PACKAGE)
}

/// Removes the package if a previous run left it installed.
async fn ensure_removed(packages: &Packages) {
    if installed(packages).await {
        packages
            .remove(&names(&[PACKAGE]), &mut |_: Stream, _: &str| {})
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn install_list_and_remove_hello() {
    let _turn = TURN.lock().await;
    if !dpkg::root_and_apt(PACKAGE) {
        return;
    }
    let packages = packages(AptSettings::default());
    ensure_removed(&packages).await;
    assert!(!installed(&packages).await);

    let mut lines = Vec::new();
    let mut sink = |stream: Stream, line: &str| lines.push((stream, line.to_string()));
    let reported = packages
        .install(&names(&[PACKAGE]), &mut sink)
        .await
        .unwrap();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].name, PACKAGE);
    assert!(!reported[0].version.is_empty());
    assert!(!reported[0].architecture.is_empty());
    assert!(
        lines
            .iter()
            .any(|(_, line)| line.starts_with("Setting up hello")),
        "apt's output was not streamed: {lines:?}"
    );

    // The full listing has it too, next to dpkg itself.
    let all = packages.list(&[]).await.unwrap();
    assert!(all.iter().any(|package| package.name == PACKAGE));
    assert!(all.iter().any(|package| package.name == "dpkg"));
    assert!(all.len() > 50, "only {} packages listed", all.len());

    // Upgrading a package that is already at its newest version succeeds and reports it.
    let upgraded = packages
        .upgrade(&names(&[PACKAGE]), &mut |_: Stream, _: &str| {})
        .await
        .unwrap();
    assert_eq!(upgraded, reported);

    packages
        .remove(&names(&[PACKAGE]), &mut |_: Stream, _: &str| {})
        .await
        .unwrap();
    assert!(!installed(&packages).await);
    let all = packages.list(&[]).await.unwrap();
    assert!(!all.iter().any(|package| package.name == PACKAGE));
}

#[tokio::test]
async fn bad_names_are_refused_before_anything_runs() {
    // apt-get and dpkg-query point at programs that do not exist: had anything been started,
    // the error would be "not installed" instead of "invalid input".
    let directory = tempfile::tempdir().unwrap();
    let missing = directory.path().join("missing").display().to_string();
    let packages = packages(AptSettings {
        apt_get: missing.clone(),
        dpkg_query: missing,
        ..AptSettings::default()
    });
    let mut sink = |_: Stream, _: &str| {};
    let cases = [
        names(&["-y"]),
        names(&["--purge", "hello"]),
        names(&["hello", "-oAPT::Get::AllowUnauthenticated=true"]),
        names(&["hello world"]),
        names(&["hello;reboot"]),
        names(&["Hello"]),
        names(&["h"]),
        names(&["hello*"]),
        names(&["hello=abc"]),
        names(&["../../etc/passwd"]),
    ];
    for bad in cases {
        for error in [
            packages.install(&bad, &mut sink).await.unwrap_err(),
            packages.upgrade(&bad, &mut sink).await.unwrap_err(),
            packages.remove(&bad, &mut sink).await.unwrap_err(),
            packages.list(&bad).await.unwrap_err(),
        ] {
            assert!(
                matches!(error, PackageError::InvalidNames(_)),
                "{bad:?}: {error}"
            );
            assert_eq!(error.to_error_data().code, ErrorCode::InvalidInput);
        }
    }
    // A good name does reach the (missing) program, which shows the check above is real.
    let error = packages
        .install(&names(&[PACKAGE]), &mut sink)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_error_data().code,
        ErrorCode::Unavailable,
        "{error}"
    );
}

#[tokio::test]
async fn an_unknown_package_is_not_found() {
    let _turn = TURN.lock().await;
    if !dpkg::root_and_apt(PACKAGE) {
        return;
    }
    let packages = packages(AptSettings::default());
    let error = packages
        .install(
            &names(&["hostplane-no-such-package"]),
            &mut |_: Stream, _: &str| {},
        )
        .await
        .unwrap_err();
    assert_eq!(error.to_error_data().code, ErrorCode::NotFound, "{error}");
}

#[tokio::test]
async fn a_held_dpkg_lock_is_waited_for() {
    let _turn = TURN.lock().await;
    if !dpkg::root_and_apt(PACKAGE) {
        return;
    }
    let packages = packages(AptSettings {
        lock_timeout: Duration::from_secs(120),
        ..AptSettings::default()
    });
    ensure_removed(&packages).await;

    let held = dpkg::hold_lock();
    let hold_for = Duration::from_secs(3);
    let release = std::thread::spawn(move || {
        std::thread::sleep(hold_for);
        drop(held);
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    let mut sink = |_: Stream, line: &str| lines.push(line.to_string());
    let reported = packages.install(&names(&[PACKAGE]), &mut sink).await;
    let waited = started.elapsed();
    release.join().unwrap();
    let reported = reported.unwrap();
    assert_eq!(reported[0].name, PACKAGE);
    assert!(
        waited >= hold_for,
        "apt finished after {waited:?}, before the lock was released"
    );
    assert!(
        lines.iter().any(|line| line.contains("lock")),
        "apt did not say it waited: {lines:?}"
    );

    packages
        .remove(&names(&[PACKAGE]), &mut |_: Stream, _: &str| {})
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lock_held_past_the_timeout_is_reported_as_unavailable() {
    let _turn = TURN.lock().await;
    if !dpkg::root_and_apt(PACKAGE) {
        return;
    }
    let packages = packages(AptSettings {
        lock_timeout: Duration::from_secs(1),
        ..AptSettings::default()
    });
    let held = dpkg::hold_lock();
    let result = packages
        .remove(&names(&[PACKAGE]), &mut |_: Stream, _: &str| {})
        .await;
    drop(held);
    let error = result.unwrap_err();
    assert!(matches!(error, PackageError::Locked { .. }), "{error}");
    assert_eq!(error.to_error_data().code, ErrorCode::Unavailable);
}

#[tokio::test]
async fn package_operations_of_one_agent_take_turns() {
    // Clones share the lock: while one operation holds it, another cannot start.
    let exclusive = Exclusive::new();
    let other = exclusive.clone();
    let first = exclusive.apt().await;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), other.apt())
            .await
            .is_err()
    );
    drop(first);
    let _second = tokio::time::timeout(Duration::from_secs(5), other.apt())
        .await
        .unwrap();
}
