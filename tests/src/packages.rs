//! The project's Debian packages, built for tests with the documented command
//! (`packaging/build.sh`) from the programs of the running test's cargo profile.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::command::run_checked;

/// The two packages of one build.
#[derive(Debug, Clone)]
pub struct Debs {
    pub coordinator: PathBuf,
    pub agent: PathBuf,
    pub version: String,
}

/// The workspace this test crate belongs to.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

/// The running test's target folder and cargo profile folder name (`debug`, `release`, ...).
fn target_and_profile() -> anyhow::Result<(PathBuf, String)> {
    // A test runs from TARGET/PROFILE/deps/NAME-HASH.
    let test = std::env::current_exe().context("cannot find the running test")?;
    let profile_dir = test
        .parent()
        .and_then(|deps| deps.parent())
        .context("the test is not inside a cargo target folder")?;
    let target = profile_dir
        .parent()
        .context("the target folder has no parent")?
        .to_path_buf();
    let profile = profile_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((target, profile))
}

/// Makes sure the workspace's programs are built the way the test suite builds them. After the
/// suite's own build (`cargo test --workspace` or nextest) this only checks that they are up to
/// date; a different feature selection would rebuild every dependency.
pub fn build_programs() -> anyhow::Result<Duration> {
    let started = Instant::now();
    let (target, profile) = target_and_profile()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["test", "--workspace", "--no-run", "--locked", "--quiet"])
        .arg("--target-dir")
        .arg(&target);
    if profile != "debug" {
        command.args(["--profile", &profile]);
    }
    let output = command.output().context("cannot run cargo")?;
    if !output.status.success() {
        bail!(
            "cargo test --workspace --no-run failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(started.elapsed())
}

/// Packages the already built programs with `packaging/build.sh --no-build --fast` into `out`,
/// as `version` when given (otherwise the workspace version).
pub fn build_debs(out: &Path, version: Option<&str>) -> anyhow::Result<Debs> {
    let (target, profile) = target_and_profile()?;
    let cargo_profile = if profile == "debug" { "dev" } else { &profile };
    let script = workspace_root().join("packaging/build.sh");
    let script = script.display().to_string();
    let out_arg = out.display().to_string();
    let mut arguments = vec![
        script.as_str(),
        "--profile",
        cargo_profile,
        "--no-build",
        "--fast",
        "--out",
        &out_arg,
    ];
    if let Some(version) = version {
        arguments.extend(["--version", version]);
    }
    // build.sh finds the programs through CARGO_TARGET_DIR.
    let target_env = format!("CARGO_TARGET_DIR={}", target.display());
    let mut full = vec![target_env.as_str(), "bash"];
    full.extend(arguments);
    let listing = run_checked("env", &full, Duration::from_secs(600))?;
    let find = |package: &str| -> anyhow::Result<PathBuf> {
        listing
            .lines()
            .map(str::trim)
            .find(|line| {
                Path::new(line)
                    .file_name()
                    .is_some_and(|name| name.to_string_lossy().starts_with(&format!("{package}_")))
            })
            .map(PathBuf::from)
            .with_context(|| format!("build.sh did not report a {package} package: {listing}"))
    };
    let coordinator = find("hostplane-coordinator")?;
    let agent = find("hostplane-agent")?;
    let version = run_checked(
        "dpkg-deb",
        &["--field", &agent.display().to_string(), "Version"],
        Duration::from_secs(30),
    )?
    .trim()
    .to_string();
    Ok(Debs {
        coordinator,
        agent,
        version,
    })
}

/// The path of program `name` as the running test's profile built it (see [`build_programs`]).
pub fn built_program(name: &str) -> anyhow::Result<PathBuf> {
    let (target, profile) = target_and_profile()?;
    let path = target.join(profile).join(name);
    if !path.is_file() {
        bail!("{} is not built", path.display());
    }
    Ok(path)
}
