//! Finding the workspace's own programs for tests that run them as separate processes: builds
//! them with the same cargo and profile as the running test, then returns their path.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

/// Builds binary `name` of workspace package `package` (a no-op when it is up to date) and
/// returns its path in the target folder of the running test.
pub fn binary(package: &str, name: &str) -> anyhow::Result<PathBuf> {
    // A test runs from TARGET/PROFILE/deps/NAME-HASH.
    let test = std::env::current_exe().context("cannot find the running test")?;
    let profile_dir = test
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test is not inside a cargo target folder")?
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .context("the target folder has no parent")?;
    let profile = profile_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--quiet", "-p", package, "--bin", name])
        .arg("--target-dir")
        .arg(target_dir);
    if profile != "debug" {
        command.args(["--profile", &profile]);
    }
    let status = command
        .status()
        .with_context(|| format!("cannot run cargo build for {name}"))?;
    if !status.success() {
        bail!("cargo build -p {package} --bin {name} failed ({status})");
    }
    let path = profile_dir.join(name);
    if !path.is_file() {
        bail!("{} was not built", path.display());
    }
    Ok(path)
}
