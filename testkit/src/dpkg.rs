//! The machine's own apt and dpkg, for the tests that install packages or hold dpkg's lock
//! (they run one at a time: the `dpkg` group of `.config/nextest.toml`).

use std::fs::{File, OpenOptions};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, fcntl};

/// The lock apt and dpkg take first.
pub const FRONTEND_LOCK: &str = "/var/lib/dpkg/lock-frontend";

/// Whether this test can install `package`: it runs as root and apt has a candidate for it
/// (`apt-get update` was run once). If not, [`crate::gate::skip`] says why.
pub fn root_and_apt(package: &str) -> bool {
    let blocker = if !nix::unistd::Uid::effective().is_root() {
        Some("this test needs root".to_string())
    } else {
        match Command::new("apt-cache").args(["policy", package]).output() {
            Err(error) => Some(format!("apt-cache cannot run: {error}")),
            Ok(output) => {
                let text = String::from_utf8_lossy(&output.stdout);
                (!text.contains("Candidate: ") || text.contains("Candidate: (none)")).then(|| {
                    format!("apt has no candidate for {package}; run `apt-get update` first")
                })
            }
        }
    };
    crate::gate::runs(blocker)
}

/// Whether dpkg has `package` installed.
pub fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Removes `package` if a previous run left it installed.
pub fn remove(package: &str) {
    if installed(package) {
        let status = Command::new("apt-get")
            .args(["remove", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// How many times dpkg has installed `package`, from its log.
pub fn installs_logged(package: &str) -> usize {
    std::fs::read_to_string("/var/log/dpkg.log")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(" install ") && line.contains(&format!(" {package}:")))
        .count()
}

/// dpkg's front-end lock, held the way apt and dpkg take it (an fcntl record lock) until
/// dropped. (A `flock(1)` lock would not do: on Linux it does not conflict with fcntl locks.)
#[derive(Debug)]
pub struct HeldLock {
    _file: File,
}

/// Takes dpkg's front-end lock, waiting (at most two minutes) while an apt of someone else holds
/// it.
pub fn hold_lock() -> HeldLock {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(FRONTEND_LOCK)
        .unwrap();
    let lock = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while fcntl(&file, FcntlArg::F_SETLK(&lock)).is_err() {
        assert!(Instant::now() < deadline, "dpkg's lock stayed busy");
        std::thread::sleep(Duration::from_millis(200));
    }
    HeldLock { _file: file }
}
