//! The Debian packages in real containers. Both are built with the documented command
//! (`packaging/build.sh`, here from the test suite's own programs, with fast compression) and
//! installed into fresh clones of the base container, where their files, permissions,
//! conffiles, system user, systemd units, the journal and the coordinator's REST API are checked.
//!
//! - Agent: installed with a token in the environment while no coordinator answers, the install
//!   succeeds and the service keeps retrying (the journal shows it) until a coordinator on the
//!   host comes up, then enrolls and connects. It survives a coordinator restart, a crash
//!   (systemd restarts it) and a container reboot; its sandbox still lets apt install packages
//!   with set-uid files and services, and nginx reload. Upgrade (a changed conffile and the
//!   identity kept), reinstall, remove (identity kept: installing again reconnects without a new
//!   enrollment), purge, install without a token and `hostplane-agent enroll` by hand, purge:
//!   nothing is left behind.
//! - Coordinator: runs under systemd as its own system user with only the capability to bind low
//!   ports, answers `/healthz` and its API from the host, keeps its key out of the journal, is
//!   restarted after a crash, keeps a changed conffile and its state across an upgrade,
//!   reinstall, remove (state and user kept), purge (user, state, configuration, every trace gone).
//!
//! Both parts run at the same time, each in its own container.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hostplane_tests::coordinator::{Api, CoordinatorOptions, HostCoordinator};
use hostplane_tests::lxc::{Container, Testbed};
use hostplane_tests::packages::{self, Debs};
use serde_json::json;
use testkit::clock::StepClock;
use testkit::wait::blocking as wait_until;

/// The highest `systemd-analyze security` exposure each unit may have (lower is tighter).
const AGENT_MAX_EXPOSURE: f64 = 6.0;
const COORDINATOR_MAX_EXPOSURE: f64 = 2.0;

fn sh(container: &Container, script: &str) -> anyhow::Result<String> {
    container.exec_checked(&["sh", "-c", script])
}

/// `MODE OWNER GROUP` of a path inside.
fn stat(container: &Container, path: &str) -> anyhow::Result<String> {
    Ok(container
        .exec_checked(&["stat", "-c", "%a %U %G", path])?
        .trim()
        .to_string())
}

fn exists(container: &Container, path: &str) -> anyhow::Result<bool> {
    Ok(container.exec(&["test", "-e", path])?.success())
}

/// One property of a unit (`systemctl show -p NAME --value`).
fn show(container: &Container, unit: &str, property: &str) -> anyhow::Result<String> {
    Ok(container
        .exec_checked(&["systemctl", "show", "-p", property, "--value", unit])?
        .trim()
        .to_string())
}

/// The unit's messages in the journal of the current boot.
fn journal(container: &Container, unit: &str) -> anyhow::Result<String> {
    container.exec_checked(&["journalctl", "-b", "-u", unit, "-o", "cat", "--no-pager"])
}

/// `dpkg-query`'s status of a package, or `None` when dpkg knows nothing of it.
fn package_status(container: &Container, package: &str) -> anyhow::Result<Option<String>> {
    let output = container.exec(&["dpkg-query", "-W", "-f", "${Status} ${Version}", package])?;
    Ok(output
        .success()
        .then(|| output.stdout_text().trim().to_string()))
}

/// Pushes a `.deb` inside and installs it with apt; `environment` reaches apt and the
/// maintainer scripts. Returns apt's output.
fn install(
    container: &Container,
    deb: &Path,
    environment: &[String],
    options: &[&str],
) -> anyhow::Result<String> {
    let name = deb
        .file_name()
        .context("a .deb needs a file name")?
        .to_string_lossy()
        .into_owned();
    let target = format!("/root/packages/{name}");
    container.push_file(deb, &target)?;
    let mut argv: Vec<&str> = vec!["env"];
    argv.extend(environment.iter().map(String::as_str));
    argv.extend(["apt-get", "install", "-y", "-q", "--no-install-recommends"]);
    argv.extend(options);
    argv.push(&target);
    container.exec_checked(&argv)
}

fn apt(container: &Container, action: &str, package: &str) -> anyhow::Result<String> {
    container.exec_checked(&["apt-get", action, "-y", "-q", package])
}

/// Every path on the container's file system whose name mentions hostplane, apart from the
/// pushed packages and the logs.
fn hostplane_paths(container: &Container) -> anyhow::Result<Vec<String>> {
    let listing = sh(
        container,
        "find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run \
         -o -path /root/packages -o -path /var/log \\) -prune -o -name '*hostplane*' -print \
         | LC_ALL=C sort",
    )?;
    Ok(listing.lines().map(str::to_string).collect())
}

/// The names of all users and groups (passwd, group, shadow, gshadow).
fn accounts(container: &Container) -> anyhow::Result<String> {
    sh(
        container,
        "for f in /etc/passwd /etc/group /etc/shadow /etc/gshadow; do echo \"== $f\"; \
         cut -d: -f1 \"$f\" | LC_ALL=C sort; done",
    )
}

fn ensure_nothing_left(container: &Container, before: &[String], what: &str) -> anyhow::Result<()> {
    let after = hostplane_paths(container)?;
    let left: Vec<&String> = after.iter().filter(|path| !before.contains(path)).collect();
    ensure!(left.is_empty(), "{what} left behind: {left:#?}");
    Ok(())
}

/// The overall `systemd-analyze security` exposure of a unit.
fn exposure(container: &Container, unit: &str) -> anyhow::Result<f64> {
    let output = container.exec(&["systemd-analyze", "security", "--no-pager", unit])?;
    let text = output.stdout_text();
    let line = text
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .with_context(|| format!("no overall exposure for {unit}: {text}"))?;
    // "→ Overall exposure level for NAME.service: 5.8 MEDIUM :-|"
    let value = line
        .split_once(".service: ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|number| number.parse::<f64>().ok())
        .with_context(|| format!("cannot read '{line}'"))?;
    Ok(value)
}

/// Checks a unit file the way systemd reads it: unknown or misspelt settings are errors.
fn verify_unit(container: &Container, unit: &str) -> anyhow::Result<()> {
    let path = format!("/usr/lib/systemd/system/{unit}");
    // The base container has no `man` to look the Documentation= pages up with.
    let output = container.exec(&["systemd-analyze", "verify", "--man=no", &path])?;
    let complaints = format!("{}{}", output.stdout_text(), output.stderr_text());
    ensure!(
        output.success() && !complaints.contains(unit),
        "systemd-analyze verify {unit}: {complaints}"
    );
    Ok(())
}

fn main_pid(container: &Container, unit: &str) -> anyhow::Result<u32> {
    Ok(show(container, unit, "MainPID")?.parse()?)
}

/// Kills the unit's main process with SIGKILL and waits until systemd has started a new one.
fn crash_and_wait_for_restart(container: &Container, unit: &str) -> anyhow::Result<()> {
    let before = main_pid(container, unit)?;
    ensure!(before != 0, "{unit} does not run");
    container.exec_checked(&["kill", "-KILL", &before.to_string()])?;
    wait_until(
        &format!("{unit} restarted by systemd"),
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let pid = main_pid(container, unit)?;
            Ok(pid != 0 && pid != before && show(container, unit, "ActiveState")? == "active")
        },
    )?;
    let restarts: u32 = show(container, unit, "NRestarts")?.parse()?;
    ensure!(restarts >= 1, "{unit}: NRestarts={restarts}");
    Ok(())
}

fn free_udp_port(address: Ipv4Addr) -> anyhow::Result<SocketAddr> {
    Ok(UdpSocket::bind((address, 0))?.local_addr()?)
}

/// The host side of the agent part: a coordinator in development mode (built-in Proxmox
/// simulator) whose agent channel listens on the bridge address.
struct Host {
    api: Api,
    options: CoordinatorOptions,
}

impl Host {
    fn start(&self) -> anyhow::Result<HostCoordinator> {
        HostCoordinator::start(&self.options)
    }

    /// Creates an instance through the API and returns its id.
    fn create_instance(
        &self,
        coordinator: &HostCoordinator,
        hostname: &str,
    ) -> anyhow::Result<u64> {
        let body = json!({"template": "debian-12", "hostname": hostname, "cpu": 1,
                          "memory": 256, "swap": 0, "disk": 2});
        let answer = self.api.ok(
            "POST",
            &coordinator.http,
            "/api/v1/instance?wait=60",
            &coordinator.admin_key,
            Some(body),
        )?;
        ensure!(answer["task"]["state"] == "succeeded", "create: {answer}");
        answer["task"]["instance"]
            .as_u64()
            .with_context(|| format!("no instance in {answer}"))
    }

    /// An enrollment offer: the token and the command to run inside.
    fn enrollment(
        &self,
        coordinator: &HostCoordinator,
        instance: u64,
    ) -> anyhow::Result<(String, String)> {
        let offer = self.api.ok(
            "POST",
            &coordinator.http,
            &format!("/api/v1/instance/{instance}/enrollment"),
            &coordinator.admin_key,
            None,
        )?;
        let token = offer["token"].as_str().context("no token")?.to_string();
        let command = offer["command"].as_str().context("no command")?.to_string();
        Ok((token, command))
    }

    fn agent_status(
        &self,
        coordinator: &HostCoordinator,
        instance: u64,
    ) -> anyhow::Result<serde_json::Value> {
        self.api.ok(
            "GET",
            &coordinator.http,
            &format!("/api/v1/instance/{instance}/agent"),
            &coordinator.admin_key,
            None,
        )
    }

    /// Waits until the API shows the agent connected and a ping goes through it.
    fn wait_connected(
        &self,
        coordinator: &HostCoordinator,
        instance: u64,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        wait_until(
            &format!("the agent of instance {instance} connected and answering pings"),
            timeout,
            Duration::from_millis(250),
            || {
                let status = self.agent_status(coordinator, instance)?;
                if status["connected"] != true {
                    return Ok(false);
                }
                let ping = self.api.call(
                    "POST",
                    &coordinator.http,
                    &format!("/api/v1/instance/{instance}/agent/ping"),
                    &coordinator.admin_key,
                    None,
                )?;
                Ok(ping.status == 200 && ping.body["rtt_ms"].is_number())
            },
        )
        .with_context(|| coordinator.log_tail())
    }
}

fn agent_files(container: &Container) -> anyhow::Result<()> {
    for (path, expected) in [
        ("/usr/bin/hostplane-agent", "755 root root"),
        (
            "/usr/lib/systemd/system/hostplane-agent.service",
            "644 root root",
        ),
        ("/etc/default/hostplane-agent", "644 root root"),
        ("/usr/share/doc/hostplane-agent/copyright", "644 root root"),
        ("/var/lib/hostplane-agent", "700 root root"),
    ] {
        let found = stat(container, path)?;
        ensure!(found == expected, "{path}: {found}, expected {expected}");
    }
    let conffiles =
        container.exec_checked(&["dpkg-query", "-W", "-f", "${Conffiles}", "hostplane-agent"])?;
    ensure!(
        conffiles.contains("/etc/default/hostplane-agent "),
        "conffiles: {conffiles}"
    );
    Ok(())
}

/// Runs apt, a package with a set-uid program and a service, and an nginx reload under the
/// agent unit's own sandbox (the installed unit with another command).
fn sandbox_check(container: &Container) -> anyhow::Result<()> {
    let script = "set -e\n\
                  apt-get update -q\n\
                  apt-get install -y -q --no-install-recommends nginx-light sudo\n\
                  test -u /usr/bin/sudo\n\
                  nginx -t\n\
                  systemctl reload nginx\n\
                  systemctl is-active nginx\n\
                  echo sandbox-check-passed\n";
    container.push_bytes(script.as_bytes().to_vec(), "/root/sandbox-check.sh", 0o755)?;
    sh(
        container,
        "sed -e 's|^ExecStart=.*|ExecStart=/bin/sh /root/sandbox-check.sh|' \
             -e 's|^Type=.*|Type=oneshot|' -e 's|^Restart=.*|Restart=no|' \
             -e '/^StateDirectory/d' -e '/^EnvironmentFile/d' -e '/^\\[Install\\]/,$d' \
             -e '/^\\[Service\\]/a Environment=DEBIAN_FRONTEND=noninteractive\\nTimeoutStartSec=600' \
             /usr/lib/systemd/system/hostplane-agent.service > /etc/systemd/system/sandbox-check.service \
         && systemctl daemon-reload",
    )?;
    let started = container.exec(&["systemctl", "start", "sandbox-check.service"])?;
    let log = journal(container, "sandbox-check.service")?;
    ensure!(
        started.success() && log.contains("sandbox-check-passed"),
        "apt and nginx under the agent's sandbox failed: {}\n{}",
        started.stderr_text(),
        log.lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    sh(
        container,
        "rm -f /etc/systemd/system/sandbox-check.service /root/sandbox-check.sh \
         && systemctl daemon-reload",
    )?;
    Ok(())
}

fn agent_part(
    testbed: &Testbed,
    debs: &Debs,
    upgrade: &Debs,
    host: &Host,
    clock: &mut StepClock,
) -> anyhow::Result<()> {
    let unit = "hostplane-agent.service";
    let container = testbed.clone_container("pkg-agent")?;
    let before = hostplane_paths(&container)?;
    clock.step("clone a container");

    let coordinator = host.start()?;
    let instance = host.create_instance(&coordinator, "pkg-agent-1")?;
    let (token, _command) = host.enrollment(&coordinator, instance)?;
    coordinator.stop()?;
    clock.step("coordinator on the host: an instance and a token through the API, then stopped");

    // Installed while nothing answers at the token's address: the install succeeds...
    let output = install(
        &container,
        &debs.agent,
        &[format!("HOSTPLANE_ENROLL_TOKEN={token}")],
        &[],
    )?;
    ensure!(
        output.contains("enrolls with the given token once the coordinator answers"),
        "{output}"
    );
    clock.step("install with a token while no coordinator answers");
    // The leftover check below sees what the package installed.
    let installed = hostplane_paths(&container)?;
    ensure!(
        installed
            .iter()
            .any(|path| path == "/usr/bin/hostplane-agent"),
        "{installed:#?}"
    );
    agent_files(&container)?;
    ensure!(stat(&container, "/var/lib/hostplane-agent/enroll.token")? == "600 root root");
    ensure!(show(&container, unit, "UnitFileState")? == "enabled");
    verify_unit(&container, unit)?;
    let score = exposure(&container, unit)?;
    eprintln!("[agent] systemd-analyze security {unit}: {score}");
    ensure!(
        score <= AGENT_MAX_EXPOSURE,
        "{unit} exposure {score} > {AGENT_MAX_EXPOSURE}"
    );
    for (property, expected) in [
        ("KillMode", "process"),
        ("Restart", "always"),
        ("NoNewPrivileges", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectClock", "yes"),
        ("PrivateTmp", "yes"),
    ] {
        let value = show(&container, unit, property)?;
        ensure!(value == expected, "{unit} {property}={value}");
    }

    // ... and the service keeps trying, as the journal shows, without crash-looping.
    let waited = wait_until(
        "two failed enrollment attempts in the journal",
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            Ok(journal(&container, unit)?
                .matches("enrollment with the token given at install time failed")
                .count()
                >= 2)
        },
    )?;
    eprintln!("[agent] two retries logged {waited:.1?} after the install");
    ensure!(show(&container, unit, "ActiveState")? == "active");
    ensure!(show(&container, unit, "NRestarts")? == "0");
    ensure!(exists(&container, "/var/lib/hostplane-agent/enroll.token")?);
    clock.step("the service retries enrollment (journal)");

    // The coordinator comes up: the service enrolls with the stored token and connects.
    let coordinator = host.start()?;
    let connected = host.wait_connected(&coordinator, instance, Duration::from_secs(90))?;
    eprintln!("[agent] enrolled and connected {connected:.1?} after the coordinator started");
    ensure!(!exists(
        &container,
        "/var/lib/hostplane-agent/enroll.token"
    )?);
    ensure!(stat(&container, "/var/lib/hostplane-agent/identity.pem")? == "600 root root");
    let log = journal(&container, unit)?;
    ensure!(
        log.contains("enrolled with the token given at install time"),
        "{log}"
    );
    clock.step("coordinator up: enrolled with the stored token, connected, ping");

    coordinator.stop()?;
    let coordinator = host.start()?;
    let back = host.wait_connected(&coordinator, instance, Duration::from_secs(90))?;
    eprintln!("[agent] reconnected {back:.1?} after the coordinator restarted");
    clock.step("coordinator restart: the agent reconnects");

    crash_and_wait_for_restart(&container, unit)?;
    host.wait_connected(&coordinator, instance, Duration::from_secs(60))?;
    clock.step("agent killed: systemd restarts it and it reconnects");

    sandbox_check(&container)?;
    clock.step("apt (set-uid files, a service) and nginx reload under the agent's sandbox");

    let init_before = container.init_pid();
    container.reboot()?;
    ensure!(
        container.init_pid() != init_before,
        "the container did not reboot"
    );
    let back = host.wait_connected(&coordinator, instance, Duration::from_secs(90))?;
    eprintln!("[agent] connected {back:.1?} after the container was up again");
    let log = journal(&container, unit)?;
    ensure!(log.contains("connected to the coordinator"), "{log}");
    clock.step("container reboot: systemd starts the agent and it reconnects");

    // Upgrade: the administrator's change to the conffile and the identity stay.
    sh(
        &container,
        "echo 'HOSTPLANE_LOG=info # changed here' >> /etc/default/hostplane-agent",
    )?;
    let identity =
        container.exec_checked(&["sha256sum", "/var/lib/hostplane-agent/identity.pem"])?;
    let pid = main_pid(&container, unit)?;
    install(&container, &upgrade.agent, &[], &[])?;
    let status = package_status(&container, "hostplane-agent")?;
    ensure!(
        status.as_deref() == Some(&format!("install ok installed {}", upgrade.version)),
        "{status:?}"
    );
    ensure!(
        container
            .exec_checked(&["cat", "/etc/default/hostplane-agent"])?
            .contains("# changed here"),
        "the changed conffile was replaced"
    );
    ensure!(
        main_pid(&container, unit)? != pid,
        "the upgrade did not restart the agent"
    );
    ensure!(
        container.exec_checked(&["sha256sum", "/var/lib/hostplane-agent/identity.pem"])?
            == identity
    );
    host.wait_connected(&coordinator, instance, Duration::from_secs(60))?;
    clock.step("upgrade: conffile and identity kept, restarted, connected");

    install(&container, &upgrade.agent, &[], &["--reinstall"])?;
    agent_files(&container)?;
    host.wait_connected(&coordinator, instance, Duration::from_secs(60))?;
    clock.step("reinstall");

    apt(&container, "remove", "hostplane-agent")?;
    let status = package_status(&container, "hostplane-agent")?;
    ensure!(
        status
            .as_deref()
            .is_some_and(|text| text.starts_with("deinstall ok config-files")),
        "{status:?}"
    );
    ensure!(!exists(&container, "/usr/bin/hostplane-agent")?);
    ensure!(!exists(
        &container,
        "/usr/lib/systemd/system/hostplane-agent.service"
    )?);
    ensure!(exists(&container, "/var/lib/hostplane-agent/identity.pem")?);
    ensure!(exists(&container, "/etc/default/hostplane-agent")?);
    wait_until(
        "the API shows the removed agent disconnected",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || Ok(host.agent_status(&coordinator, instance)?["connected"] == false),
    )?;
    clock.step("remove: service gone, identity and conffile kept, disconnected");

    // Installed again it is the same agent: no new enrollment.
    install(&container, &upgrade.agent, &[], &[])?;
    host.wait_connected(&coordinator, instance, Duration::from_secs(60))?;
    let facts = container.exec_checked(&["cat", "/var/lib/hostplane-agent/agent.json"])?;
    let facts: serde_json::Value = serde_json::from_str(&facts)?;
    ensure!(facts["generation"] == 1, "{facts}");
    clock.step("install after remove: same identity, connected");

    apt(&container, "purge", "hostplane-agent")?;
    ensure!(package_status(&container, "hostplane-agent")?.is_none());
    ensure_nothing_left(&container, &before, "purging the agent")?;
    clock.step("purge: nothing left");

    // Installed without a token it waits; `hostplane-agent enroll` by hand, then it connects.
    let output = install(&container, &debs.agent, &[], &[])?;
    ensure!(output.contains("not enrolled yet"), "{output}");
    wait_until(
        "the service says it waits for enrollment",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || Ok(journal(&container, unit)?.contains("not enrolled yet")),
    )?;
    let second = host.create_instance(&coordinator, "pkg-agent-2")?;
    let (_token, command) = host.enrollment(&coordinator, second)?;
    let argv: Vec<&str> = command.split_whitespace().collect();
    ensure!(argv.first() == Some(&"hostplane-agent"), "{command}");
    let enrolled = container.exec_checked(&argv)?;
    ensure!(
        enrolled.contains(&format!("enrolled instance={second} ")),
        "{enrolled}"
    );
    host.wait_connected(&coordinator, second, Duration::from_secs(60))?;
    clock.step("install without a token, enroll by hand: connected");

    apt(&container, "purge", "hostplane-agent")?;
    ensure!(package_status(&container, "hostplane-agent")?.is_none());
    ensure_nothing_left(&container, &before, "purging the agent")?;
    coordinator.stop()?;
    container.destroy()?;
    clock.step("purge again: nothing left; container destroyed");
    Ok(())
}

fn coordinator_files(container: &Container) -> anyhow::Result<()> {
    for (path, expected) in [
        ("/usr/bin/hostplane-coordinator", "755 root root"),
        (
            "/usr/lib/systemd/system/hostplane-coordinator.service",
            "644 root root",
        ),
        ("/etc/hostplane/coordinator.toml", "640 root hostplane"),
        ("/var/lib/hostplane", "700 hostplane hostplane"),
    ] {
        let found = stat(container, path)?;
        ensure!(found == expected, "{path}: {found}, expected {expected}");
    }
    let conffiles = container.exec_checked(&[
        "dpkg-query",
        "-W",
        "-f",
        "${Conffiles}",
        "hostplane-coordinator",
    ])?;
    ensure!(
        conffiles.contains("/etc/hostplane/coordinator.toml "),
        "conffiles: {conffiles}"
    );
    Ok(())
}

fn coordinator_part(
    testbed: &Testbed,
    debs: &Debs,
    upgrade: &Debs,
    clock: &mut StepClock,
) -> anyhow::Result<()> {
    let unit = "hostplane-coordinator.service";
    let api = Api::new()?;
    let container = testbed.clone_container("pkg-coord")?;
    let before = hostplane_paths(&container)?;
    let accounts_before = accounts(&container)?;
    let base = format!("http://{}:8080", container.ip());
    clock.step("clone a container");

    let output = install(&container, &debs.coordinator, &[], &[])?;
    ensure!(output.contains("/var/lib/hostplane/admin.key"), "{output}");
    clock.step("install");
    let installed = hostplane_paths(&container)?;
    ensure!(
        installed.iter().any(|path| path == "/var/lib/hostplane"),
        "{installed:#?}"
    );

    // The system user: no login, its home is the state directory.
    let user = container.exec_checked(&["getent", "passwd", "hostplane"])?;
    let fields: Vec<&str> = user.trim().split(':').collect();
    ensure!(fields.len() == 7, "{user}");
    let uid: u32 = fields[2].parse()?;
    ensure!(uid < 1000, "not a system user: {user}");
    ensure!(
        fields[5] == "/var/lib/hostplane" && fields[6] == "/usr/sbin/nologin",
        "{user}"
    );
    container.exec_checked(&["getent", "group", "hostplane"])?;
    coordinator_files(&container)?;
    ensure!(show(&container, unit, "UnitFileState")? == "enabled");

    // It runs as that user and answers from the host.
    let healthy = wait_until(
        "the packaged coordinator answers /healthz",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || Ok(api.get_status(&format!("{base}/healthz")).ok() == Some(200)),
    )?;
    eprintln!("[coordinator] /healthz answered {healthy:.1?} after the install");
    ensure!(api.get_status(&format!("{base}/readyz"))? == 200);
    let pid = main_pid(&container, unit)?;
    let owner = container.exec_checked(&["ps", "-o", "user=", "-p", &pid.to_string()])?;
    ensure!(owner.trim() == "hostplane", "runs as {owner}");
    // Its only capability: binding ports below 1024.
    let status = container.exec_checked(&["cat", &format!("/proc/{pid}/status")])?;
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .map(str::trim)
        .context("no CapEff")?;
    ensure!(effective == "0000000000000400", "capabilities {effective}");
    ensure!(stat(&container, "/var/lib/hostplane/admin.key")? == "600 hostplane hostplane");
    let key = container
        .exec_checked(&["cat", "/var/lib/hostplane/admin.key"])?
        .trim()
        .to_string();
    api.ok("GET", &base, "/api/v1/instance", &key, None)?;
    let log = journal(&container, unit)?;
    ensure!(log.contains("listening http="), "{log}");
    ensure!(!log.contains(&key), "the admin key is in the journal");
    verify_unit(&container, unit)?;
    let score = exposure(&container, unit)?;
    eprintln!("[coordinator] systemd-analyze security {unit}: {score}");
    ensure!(
        score <= COORDINATOR_MAX_EXPOSURE,
        "{unit} exposure {score} > {COORDINATOR_MAX_EXPOSURE}"
    );
    clock.step("user, files, systemd, /healthz and the API from the host");

    // The administrative subcommands, as the README gives them (with the service stopped).
    container.exec_checked(&["systemctl", "stop", unit])?;
    let users = container.exec_checked(&[
        "runuser",
        "-u",
        "hostplane",
        "--",
        "hostplane-coordinator",
        "--config",
        "/etc/hostplane/coordinator.toml",
        "user",
        "list",
    ])?;
    ensure!(users.contains("admin"), "{users}");
    container.exec_checked(&["systemctl", "start", unit])?;
    coordinator_files(&container)?;

    crash_and_wait_for_restart(&container, unit)?;
    wait_until(
        "/healthz after the restart",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || Ok(api.get_status(&format!("{base}/healthz")).ok() == Some(200)),
    )?;
    clock.step("killed: systemd restarts it");

    // Upgrade: a changed conffile, the state and the permissions stay.
    sh(
        &container,
        "sed -i 's/^ticket_ttl_seconds = 7200$/ticket_ttl_seconds = 3600/' \
         /etc/hostplane/coordinator.toml",
    )?;
    let pid = main_pid(&container, unit)?;
    install(&container, &upgrade.coordinator, &[], &[])?;
    let status = package_status(&container, "hostplane-coordinator")?;
    ensure!(
        status.as_deref() == Some(&format!("install ok installed {}", upgrade.version)),
        "{status:?}"
    );
    ensure!(
        container
            .exec_checked(&["cat", "/etc/hostplane/coordinator.toml"])?
            .contains("ticket_ttl_seconds = 3600"),
        "the changed conffile was replaced"
    );
    coordinator_files(&container)?;
    ensure!(
        main_pid(&container, unit)? != pid,
        "the upgrade did not restart it"
    );
    wait_until(
        "/healthz after the upgrade",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || Ok(api.get_status(&format!("{base}/healthz")).ok() == Some(200)),
    )?;
    api.ok("GET", &base, "/api/v1/instance", &key, None)
        .context("the state (the admin key) did not survive the upgrade")?;
    clock.step("upgrade: conffile, permissions and state kept, restarted");

    install(&container, &upgrade.coordinator, &[], &["--reinstall"])?;
    coordinator_files(&container)?;
    wait_until(
        "/healthz after the reinstall",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || Ok(api.get_status(&format!("{base}/healthz")).ok() == Some(200)),
    )?;
    clock.step("reinstall");

    apt(&container, "remove", "hostplane-coordinator")?;
    ensure!(
        api.get_status(&format!("{base}/healthz")).is_err(),
        "still answering after remove"
    );
    ensure!(!exists(&container, "/usr/bin/hostplane-coordinator")?);
    ensure!(exists(&container, "/var/lib/hostplane/hostplane.redb")?);
    ensure!(exists(&container, "/etc/hostplane/coordinator.toml")?);
    container.exec_checked(&["getent", "passwd", "hostplane"])?;
    clock.step("remove: stopped, state, configuration and user kept");

    apt(&container, "purge", "hostplane-coordinator")?;
    ensure!(package_status(&container, "hostplane-coordinator")?.is_none());
    ensure!(
        !container
            .exec(&["getent", "passwd", "hostplane"])?
            .success()
    );
    ensure!(!container.exec(&["getent", "group", "hostplane"])?.success());
    // (It exits 1 when there is no override at all.)
    let overrides = container
        .exec(&["dpkg-statoverride", "--list"])?
        .stdout_text();
    ensure!(!overrides.contains("hostplane"), "{overrides}");
    ensure!(
        accounts(&container)? == accounts_before,
        "users or groups left behind"
    );
    ensure_nothing_left(&container, &before, "purging the coordinator")?;
    container.destroy()?;
    clock.step("purge: user, state, configuration gone; container destroyed");
    Ok(())
}

/// What the built packages hold, checked on the host before anything is installed.
fn check_deb(
    deb: &Path,
    package: &str,
    conffile: &str,
    contents: &[(&str, &str)],
) -> anyhow::Result<()> {
    let path = deb.display().to_string();
    let field = |name: &str| -> anyhow::Result<String> {
        Ok(hostplane_tests::command::run_checked(
            "dpkg-deb",
            &["--field", &path, name],
            Duration::from_secs(30),
        )?
        .trim()
        .to_string())
    };
    ensure!(field("Package")? == package);
    let depends = field("Depends")?;
    ensure!(depends.contains("libc6 (>="), "Depends: {depends}");
    let listing = hostplane_tests::command::run_checked(
        "dpkg-deb",
        &["--contents", &path],
        Duration::from_secs(30),
    )?;
    for (file, mode) in contents {
        let line = listing
            .lines()
            .find(|line| line.ends_with(&format!("./{file}")))
            .with_context(|| format!("{package} has no {file}:\n{listing}"))?;
        ensure!(
            line.starts_with(&format!("{mode} root/root ")),
            "{package}: {line}"
        );
    }
    let control = tempfile::tempdir()?;
    let folder = control.path().display().to_string();
    hostplane_tests::command::run_checked(
        "dpkg-deb",
        &["--control", &path, &folder],
        Duration::from_secs(30),
    )?;
    let conffiles = std::fs::read_to_string(control.path().join("conffiles"))?;
    ensure!(
        conffiles.trim() == conffile,
        "{package} conffiles: {conffiles}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let script = control.path().join(script);
        let script = script.display().to_string();
        hostplane_tests::command::run_checked("sh", &["-n", &script], Duration::from_secs(30))?;
    }
    Ok(())
}

/// Runs lintian on the packages: any error or warning fails.
fn lintian(debs: &[&Path]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    ensure!(
        hostplane_tests::command::on_path("lintian"),
        "lintian is missing (apt-get install -y lintian; scripts/test.sh installs it)"
    );
    let mut arguments = vec!["--fail-on".to_string(), "error,warning".to_string()];
    arguments.extend(debs.iter().map(|deb| deb.display().to_string()));
    let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
    let output = hostplane_tests::command::run("lintian", &arguments, Duration::from_secs(600))?;
    ensure!(
        output.success(),
        "lintian found problems ({}):\n{}{}",
        output.status,
        output.stdout_text(),
        output.stderr_text()
    );
    Ok(started.elapsed())
}

#[test]
fn the_packages_install_run_upgrade_and_purge_cleanly_in_containers() -> anyhow::Result<()> {
    let Some(testbed) = Testbed::ensure()? else {
        return Ok(());
    };
    let mut clock = StepClock::new("packages");
    let built = packages::build_programs()?;
    eprintln!("[packages] programs up to date in {built:.1?}");
    let work = tempfile::tempdir()?;
    let debs = packages::build_debs(&work.path().join("debs"), None)?;
    let upgrade = packages::build_debs(
        &work.path().join("debs-upgrade"),
        Some(&format!("{}+upgrade1", debs.version)),
    )?;
    for deb in [&debs.agent, &debs.coordinator] {
        eprintln!(
            "[packages] {}: {:.1} MB",
            deb.display(),
            std::fs::metadata(deb)?.len() as f64 / 1e6
        );
    }
    clock.step("build both packages twice (a version and its upgrade)");
    check_deb(
        &debs.agent,
        "hostplane-agent",
        "/etc/default/hostplane-agent",
        &[
            ("usr/bin/hostplane-agent", "-rwxr-xr-x"),
            (
                "usr/lib/systemd/system/hostplane-agent.service",
                "-rw-r--r--",
            ),
            ("etc/default/hostplane-agent", "-rw-r--r--"),
        ],
    )?;
    check_deb(
        &debs.coordinator,
        "hostplane-coordinator",
        "/etc/hostplane/coordinator.toml",
        &[
            ("usr/bin/hostplane-coordinator", "-rwxr-xr-x"),
            (
                "usr/lib/systemd/system/hostplane-coordinator.service",
                "-rw-r--r--",
            ),
            // Shipped 0644; postinst's stat override makes it root:hostplane 0640.
            ("etc/hostplane/coordinator.toml", "-rw-r--r--"),
        ],
    )?;
    clock.step("package contents, conffiles and maintainer scripts");

    let host = Host {
        api: Api::new()?,
        options: CoordinatorOptions {
            binary: packages::built_program("hostplane-coordinator")?,
            data_dir: work.path().join("coordinator"),
            quic_listen: free_udp_port(testbed.host_address())?,
            serve_arguments: vec!["--dev".into()],
        },
    };
    let (agent, coordinator, lint) = thread::scope(|scope| {
        // Debian's own checks of the packages, while the containers work.
        let lint = scope.spawn(|| lintian(&[&debs.agent, &debs.coordinator]));
        let agent = scope.spawn(|| {
            let mut clock = StepClock::new("agent");
            let result = agent_part(&testbed, &debs, &upgrade, &host, &mut clock);
            (result, clock.report())
        });
        let coordinator = scope.spawn(|| {
            let mut clock = StepClock::new("coordinator");
            let result = coordinator_part(&testbed, &debs, &upgrade, &mut clock);
            (result, clock.report())
        });
        (agent.join(), coordinator.join(), lint.join())
    });
    clock.step("agent and coordinator in their containers");
    let mut failures = Vec::new();
    for (part, outcome) in [("agent", agent), ("coordinator", coordinator)] {
        match outcome {
            Ok((result, report)) => {
                eprint!("{report}");
                if let Err(error) = result {
                    failures.push(format!("{part}: {error:#}"));
                }
            }
            Err(_) => failures.push(format!("{part}: panicked")),
        }
    }
    match lint {
        Ok(Ok(duration)) => eprintln!("[packages] lintian: no error or warning ({duration:.1?})"),
        Ok(Err(error)) => failures.push(format!("lintian: {error:#}")),
        Err(_) => failures.push("lintian: panicked".into()),
    }
    eprint!("{}", clock.report());
    if !failures.is_empty() {
        bail!("{}", failures.join("\n\n"));
    }
    testbed.shutdown()?;
    Ok(())
}
