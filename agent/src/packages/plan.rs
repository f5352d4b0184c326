//! Planning package work: which apt-get or dpkg-query command, with which arguments and
//! environment, and reading their answers. Pure: nothing here runs anything.

use std::time::Duration;

use protocol::PackageInfo;

use super::names::PackageSpec;
use crate::process::CommandSpec;

/// Settings of the package operations; the defaults suit a stock Debian container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSettings {
    /// The apt-get program.
    pub apt_get: String,
    /// The dpkg-query program.
    pub dpkg_query: String,
    /// How long apt waits for another apt or dpkg to release its lock before giving up.
    pub lock_timeout: Duration,
    /// How long one apt-get run may take in all (including the lock wait).
    pub timeout: Duration,
}

impl Default for AptSettings {
    fn default() -> Self {
        AptSettings {
            apt_get: "apt-get".to_string(),
            dpkg_query: "dpkg-query".to_string(),
            lock_timeout: Duration::from_secs(300),
            timeout: Duration::from_secs(3600),
        }
    }
}

/// What apt-get is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AptAction {
    /// Install the named packages (and what they depend on).
    Install,
    /// Upgrade the named packages if installed, or every package when none is named.
    Upgrade,
    /// Remove the named packages (their configuration files stay).
    Remove,
}

/// The line format asked of dpkg-query: status, name, version, architecture.
pub const QUERY_FORMAT: &str = "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n";

/// The environment every apt-get run gets: no questions, no pager, stable English messages.
pub fn apt_environment() -> Vec<(String, String)> {
    [
        ("DEBIAN_FRONTEND", "noninteractive"),
        ("APT_LISTCHANGES_FRONTEND", "none"),
        ("LC_ALL", "C"),
        ("LANG", "C"),
    ]
    .iter()
    .map(|(key, value)| (key.to_string(), value.to_string()))
    .collect()
}

/// The apt-get command for `action` on `packages` (already checked). `None` when the action
/// needs at least one package and none is given.
pub fn apt_command(
    action: AptAction,
    packages: &[PackageSpec],
    settings: &AptSettings,
) -> Option<CommandSpec> {
    let (verb, extra): (&str, &[&str]) = match action {
        AptAction::Install if !packages.is_empty() => ("install", &[]),
        AptAction::Upgrade if packages.is_empty() => ("upgrade", &[]),
        AptAction::Upgrade => ("install", &["--only-upgrade"]),
        AptAction::Remove if !packages.is_empty() => ("remove", &[]),
        AptAction::Install | AptAction::Remove => return None,
    };
    let mut command = CommandSpec::new(&settings.apt_get)
        .args([
            "-y",
            "-q",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
            "-o",
        ])
        .arg(format!(
            "DPkg::Lock::Timeout={}",
            settings.lock_timeout.as_secs()
        ))
        .args(["-o", "Dpkg::Use-Pty=0", verb])
        .args(extra.iter().copied())
        .timeout(settings.timeout);
    if !packages.is_empty() {
        // The names are checked and cannot start with '-'; the end of options is marked anyway.
        command = command
            .arg("--")
            .args(packages.iter().map(PackageSpec::apt_argument));
    }
    for (key, value) in apt_environment() {
        command = command.env(key, value);
    }
    Some(command)
}

/// The dpkg-query command that lists installed packages: the named ones, or all.
pub fn list_command(packages: &[PackageSpec], settings: &AptSettings) -> CommandSpec {
    CommandSpec::new(&settings.dpkg_query)
        .args(["-W", "-f", QUERY_FORMAT])
        .args(if packages.is_empty() {
            Vec::new()
        } else {
            std::iter::once("--".to_string())
                .chain(packages.iter().map(PackageSpec::query_argument))
                .collect()
        })
        .env("LC_ALL", "C")
        .timeout(Duration::from_secs(60))
        .stdout_limit(64 * 1024 * 1024)
}

/// The installed packages in dpkg-query's answer. Lines of packages that are known but not
/// installed (removed with configuration files left, or only half there) are left out.
pub fn parse_list(stdout: &str) -> Vec<PackageInfo> {
    let mut packages: Vec<PackageInfo> = stdout
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let status = fields.next()?;
            let name = fields.next()?;
            let version = fields.next()?;
            let architecture = fields.next()?;
            // The second letter of the abbreviated status is the package's state; 'i' is
            // installed.
            (status.as_bytes().get(1) == Some(&b'i') && !name.is_empty()).then(|| PackageInfo {
                name: name.to_string(),
                version: version.to_string(),
                architecture: architecture.to_string(),
            })
        })
        .collect();
    packages.sort_by(|left, right| {
        (&left.name, &left.architecture).cmp(&(&right.name, &right.architecture))
    });
    packages
}

/// Whether every line dpkg-query wrote to standard error only says a named package is unknown
/// (it then exits with status 1, which is not a failure of the listing).
pub fn only_unknown_packages(stderr: &str) -> bool {
    stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .all(|line| line.contains("no packages found matching"))
}

/// What a failed apt-get run means, judged from the end of its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AptFailure {
    /// A named package is not known to apt (not in the package lists).
    UnknownPackage,
    /// Another program held the package database past the lock timeout.
    Locked,
    /// Anything else.
    Other,
}

/// Classifies a failed apt-get run by its standard error.
pub fn classify_failure(stderr: &str) -> AptFailure {
    if stderr.contains("Unable to locate package")
        || stderr.contains("has no installation candidate")
        || (stderr.contains("Version '") && stderr.contains("was not found"))
    {
        AptFailure::UnknownPackage
    } else if stderr.contains("Could not get lock") || stderr.contains("Unable to acquire the dpkg")
    {
        AptFailure::Locked
    } else {
        AptFailure::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(names: &[&str]) -> Vec<PackageSpec> {
        names
            .iter()
            .map(|name| PackageSpec::parse(name).unwrap())
            .collect()
    }

    fn settings() -> AptSettings {
        AptSettings {
            lock_timeout: Duration::from_secs(120),
            ..AptSettings::default()
        }
    }

    const COMMON: [&str; 9] = [
        "-y",
        "-q",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        "-o",
        "DPkg::Lock::Timeout=120",
        "-o",
    ];

    #[test]
    fn apt_command_table() {
        type Case<'a> = (AptAction, &'a [&'a str], Option<&'a [&'a str]>);
        let cases: [Case; 7] = [
            (
                AptAction::Install,
                &["hello", "libc6:i386=2.36-9"],
                Some(&[
                    "Dpkg::Use-Pty=0",
                    "install",
                    "--",
                    "hello",
                    "libc6:i386=2.36-9",
                ]),
            ),
            (AptAction::Install, &[], None),
            (
                AptAction::Upgrade,
                &["hello"],
                Some(&[
                    "Dpkg::Use-Pty=0",
                    "install",
                    "--only-upgrade",
                    "--",
                    "hello",
                ]),
            ),
            (
                AptAction::Upgrade,
                &[],
                Some(&["Dpkg::Use-Pty=0", "upgrade"]),
            ),
            (
                AptAction::Remove,
                &["hello"],
                Some(&["Dpkg::Use-Pty=0", "remove", "--", "hello"]),
            ),
            (AptAction::Remove, &[], None),
            (
                AptAction::Remove,
                &["g++", "php8.2"],
                Some(&["Dpkg::Use-Pty=0", "remove", "--", "g++", "php8.2"]),
            ),
        ];
        for (action, names, expected_tail) in cases {
            let command = apt_command(action, &specs(names), &settings());
            match expected_tail {
                None => assert_eq!(command, None, "{action:?} {names:?}"),
                Some(tail) => {
                    let command = command.unwrap();
                    assert_eq!(command.program, "apt-get");
                    let mut expected: Vec<&str> = COMMON.to_vec();
                    expected.extend_from_slice(tail);
                    assert_eq!(command.args, expected, "{action:?} {names:?}");
                    assert!(
                        command
                            .env
                            .contains(&("DEBIAN_FRONTEND".into(), "noninteractive".into()))
                    );
                    assert_eq!(command.stdin, None);
                }
            }
        }
    }

    #[test]
    fn list_command_table() {
        let all = list_command(&[], &settings());
        assert_eq!(all.program, "dpkg-query");
        assert_eq!(all.args, vec!["-W", "-f", QUERY_FORMAT]);
        let some = list_command(&specs(&["hello", "libc6:amd64"]), &settings());
        assert_eq!(
            some.args,
            vec!["-W", "-f", QUERY_FORMAT, "--", "hello", "libc6:amd64"]
        );
    }

    #[test]
    fn listing_keeps_only_installed_packages_sorted() {
        let stdout = "ii \tzlib1g\t1:1.2.13.dfsg-1\tamd64\n\
                      rc \told-thing\t1.0\tamd64\n\
                      un \tnever\t\t\n\
                      ii \tadduser\t3.134\tall\n\
                      iF \thalf\t2.0\tamd64\n\
                      ii \tlibc6\t2.36-9\ti386\n\
                      ii \tlibc6\t2.36-9\tamd64\n\
                      garbage line\n";
        let names: Vec<(String, String, String)> = parse_list(stdout)
            .into_iter()
            .map(|package| (package.name, package.version, package.architecture))
            .collect();
        assert_eq!(
            names,
            vec![
                ("adduser".into(), "3.134".into(), "all".into()),
                ("libc6".into(), "2.36-9".into(), "amd64".into()),
                ("libc6".into(), "2.36-9".into(), "i386".into()),
                ("zlib1g".into(), "1:1.2.13.dfsg-1".into(), "amd64".into()),
            ]
        );
    }

    #[test]
    fn failure_classification() {
        assert!(only_unknown_packages(
            "dpkg-query: no packages found matching hello\n"
        ));
        assert!(!only_unknown_packages(
            "dpkg-query: error: cannot access archive\n"
        ));
        let cases = [
            (
                "E: Unable to locate package no-such-package",
                AptFailure::UnknownPackage,
            ),
            (
                "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 12 (apt-get)",
                AptFailure::Locked,
            ),
            (
                "E: Version '9.9' for 'hello' was not found",
                AptFailure::UnknownPackage,
            ),
            (
                "E: Sub-process /usr/bin/dpkg returned an error code (1)",
                AptFailure::Other,
            ),
        ];
        for (stderr, expected) in cases {
            assert_eq!(classify_failure(stderr), expected, "{stderr}");
        }
    }
}
