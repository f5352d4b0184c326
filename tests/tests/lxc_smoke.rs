//! The LXC testbed on its own: a clone boots with systemd, reaches the host's bridge address and
//! nothing beyond, installs packages through the host's apt proxy and a pushed `.deb`, survives
//! a reboot, and everything it made is gone afterwards (also when a test panics).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use hostplane_tests::lxc::{Testbed, host};
use testkit::clock::StepClock;

/// Accepts one connection on `listener` within `timeout`, answers the line it reads with
/// `pong LINE`, and returns the line and the peer address.
fn answer_one(listener: TcpListener, timeout: Duration) -> anyhow::Result<(String, SocketAddr)> {
    listener.set_nonblocking(true)?;
    let started = Instant::now();
    let (stream, peer) = loop {
        match listener.accept() {
            Ok(accepted) => break accepted,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                ensure!(
                    started.elapsed() < timeout,
                    "no connection within {timeout:?}"
                );
                thread::sleep(Duration::from_millis(20));
            }
            Err(error) => return Err(error.into()),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let line = line.trim().to_string();
    (&stream).write_all(format!("pong {line}\n").as_bytes())?;
    Ok((line, peer))
}

/// Builds a tiny `.deb` whose maintainer script records `token` inside the container.
fn build_deb(folder: &Path, token: &str) -> anyhow::Result<std::path::PathBuf> {
    let root = folder.join("hostplane-smoke");
    std::fs::create_dir_all(root.join("DEBIAN"))?;
    std::fs::create_dir_all(root.join("usr/share/hostplane-smoke"))?;
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: hostplane-smoke\nVersion: 1.0\nArchitecture: all\n\
         Maintainer: Hostplane developers <dev@example.invalid>\n\
         Description: smoke test package\n",
    )?;
    std::fs::write(root.join("usr/share/hostplane-smoke/token"), token)?;
    let postinst = root.join("DEBIAN/postinst");
    std::fs::write(
        &postinst,
        "#!/bin/sh\nset -e\nmkdir -p /var/lib/hostplane-smoke\n\
         cp /usr/share/hostplane-smoke/token /var/lib/hostplane-smoke/installed\n",
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&postinst, std::fs::Permissions::from_mode(0o755))?;
    let deb = folder.join("hostplane-smoke_1.0_all.deb");
    let output = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&root)
        .arg(&deb)
        .output()
        .context("cannot run dpkg-deb (package dpkg)")?;
    ensure!(
        output.status.success(),
        "dpkg-deb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(deb)
}

#[test]
fn a_clone_boots_reaches_the_host_installs_packages_reboots_and_is_removed() -> anyhow::Result<()> {
    let mut clock = StepClock::new("lxc_smoke");
    let Some(testbed) = Testbed::ensure()? else {
        return Ok(());
    };
    clock.step("testbed ready (bridge, apt proxy, base container)");

    let container = testbed.clone_container("smoke")?;
    let name = container.name().to_string();
    clock.step("clone and boot until systemd is up");
    ensure!(container.state()? == "RUNNING");

    let os_release = container.exec_checked(&["cat", "/etc/os-release"])?;
    ensure!(
        os_release.contains("VERSION_CODENAME=bookworm"),
        "{os_release}"
    );

    // The container reaches the host's bridge address, and has no route anywhere else.
    let listener = TcpListener::bind((testbed.host_address(), 0))?;
    let port = listener.local_addr()?.port();
    let server = thread::spawn(move || answer_one(listener, Duration::from_secs(30)));
    let script = format!(
        "exec 3<>/dev/tcp/{}/{port}; echo \"ping $(hostname)\" >&3; read -r answer <&3; \
         echo \"$answer\"",
        testbed.host_address()
    );
    let answer = container.exec_checked(&["bash", "-c", &script])?;
    let (line, peer) = server.join().expect("the server thread panicked")?;
    ensure!(line == format!("ping {name}"), "server read '{line}'");
    ensure!(answer.trim() == format!("pong ping {name}"), "{answer}");
    ensure!(
        peer.ip() == std::net::IpAddr::V4(container.ip()),
        "{peer} is not {}",
        container.ip()
    );
    let routes = container.exec_checked(&["ip", "-4", "route"])?;
    ensure!(
        !routes.contains("default"),
        "the container must have no default route: {routes}"
    );
    clock.step("exec and a TCP round trip to the host's bridge address");

    // Packages from the archive, through the host's proxy.
    container.exec_checked(&["apt-get", "update", "-q"])?;
    container.exec_checked(&["apt-get", "install", "-y", "-q", "hello"])?;
    let greeting = container.exec_checked(&["hello"])?;
    ensure!(greeting.trim() == "Hello, world!", "{greeting}");
    clock.step("apt-get update and install hello through the proxy");

    // A .deb built here and pushed inside, installed with dpkg.
    let folder = tempfile::tempdir()?;
    let token = format!(
        "token-{}-{}",
        std::process::id(),
        clock.elapsed().as_nanos()
    );
    let deb = build_deb(folder.path(), &token)?;
    container.push_file(&deb, "/root/hostplane-smoke.deb")?;
    container.exec_checked(&["dpkg", "-i", "/root/hostplane-smoke.deb"])?;
    let installed = container.exec_checked(&["cat", "/var/lib/hostplane-smoke/installed"])?;
    ensure!(installed == token, "postinst wrote '{installed}'");
    let status =
        container.exec_checked(&["dpkg-query", "-W", "-f", "${Status}", "hostplane-smoke"])?;
    ensure!(status == "install ok installed", "{status}");
    clock.step("push and dpkg -i a .deb");

    let before = container.init_pid();
    container.reboot()?;
    ensure!(container.init_pid() != before, "init did not change");
    let state = container.exec_checked(&["systemctl", "is-system-running"])?;
    ensure!(
        matches!(state.trim(), "running" | "degraded"),
        "after reboot: {state}"
    );
    ensure!(container.exec_checked(&["hello"])?.trim() == "Hello, world!");
    clock.step("reboot until systemd is up again");

    container.stop()?;
    ensure!(container.state()? == "STOPPED");
    clock.step("clean stop");
    container.destroy()?;
    ensure!(
        !host::container_names()?.contains(&name),
        "{name} still exists"
    );
    clock.step("destroy");

    // A test that panics still destroys its container.
    let panicking_testbed = testbed.clone();
    let panicked_name = Testbed::container_name("panics");
    let outcome = thread::spawn(move || {
        let _container = panicking_testbed
            .clone_container("panics")
            .expect("clone for the panic check");
        panic!("a test failing while it holds a container");
    })
    .join();
    ensure!(outcome.is_err(), "the thread should have panicked");
    ensure!(
        !host::container_names()?.contains(&panicked_name),
        "{panicked_name} survived a panic"
    );
    clock.step("a panicking holder still destroys its clone");

    let teardown = testbed.shutdown()?;
    if teardown.removed_bridge_and_proxy {
        ensure!(!host::bridge_exists(), "the bridge survived the teardown");
        ensure!(
            host::proxy_pid().is_none(),
            "the proxy survived the teardown"
        );
    } else {
        eprintln!("[lxc_smoke] another process still uses the testbed: bridge and proxy kept");
    }
    clock.step("teardown");
    clock.print_report();
    Ok(())
}
