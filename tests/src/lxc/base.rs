//! The cached base container every clone starts from: created once with the Debian template,
//! provisioned once (static network on our bridge, apt through the host proxy, CA certificates),
//! then kept stopped. A marker file in its root file system says provisioning finished.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{
    BASE_CONTAINER, BRIDGE, HOST_ADDRESS, LXC_PATH, PREFIX_LENGTH, STATE_DIR, host, wait_until_up,
};
use crate::command::{run, run_checked};

/// Bump when provisioning changes: an older base is then rebuilt.
const BASE_VERSION: &str = "1";
const MARKER: &str = "etc/hostplane-testbed-base";
const BASE_HOST_PART: u8 = 2;

/// The Debian mirror debootstrap uses on the host (`HOSTPLANE_LXC_MIRROR` overrides it).
pub fn mirror() -> String {
    std::env::var("HOSTPLANE_LXC_MIRROR")
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| "http://deb.debian.org/debian".to_string())
}

fn rootfs() -> PathBuf {
    Path::new(LXC_PATH).join(BASE_CONTAINER).join("rootfs")
}

/// Whether a provisioned base of the current version exists.
pub(crate) fn is_ready() -> bool {
    fs::read_to_string(rootfs().join(MARKER)).is_ok_and(|text| text.trim() == BASE_VERSION)
}

/// The LXC network lines for a container on our bridge at `address` (no gateway: the containers
/// reach only the bridge subnet).
pub fn network_config(address: Ipv4Addr) -> String {
    format!(
        "lxc.net.0.type = veth\nlxc.net.0.link = {BRIDGE}\nlxc.net.0.flags = up\n\
         lxc.net.0.name = eth0\nlxc.net.0.ipv4.address = {address}/{PREFIX_LENGTH}\n"
    )
}

/// The apt settings that send every download through the host's proxy (the same file pvesim
/// writes into its containers).
pub fn apt_proxy_config(port: u16) -> String {
    pvesim::lxc_backend::apt_proxy_config(&format!("http://{HOST_ADDRESS}:{port}"))
}

/// Files written into the root file system of the base (and of every clone) before start.
pub(crate) fn guest_files(proxy_port: u16) -> Vec<(&'static str, String)> {
    vec![
        // LXC configures eth0 before init; ifupdown must not try DHCP on it.
        (
            "etc/network/interfaces",
            "auto lo\niface lo inet loopback\n\niface eth0 inet manual\n".to_string(),
        ),
        (
            "etc/resolv.conf",
            "# No name server: this container reaches only the host's bridge address.\n"
                .to_string(),
        ),
        (
            "etc/apt/sources.list",
            "deb http://deb.debian.org/debian bookworm main\n\
             deb http://deb.debian.org/debian-security bookworm-security main\n"
                .to_string(),
        ),
        (
            "etc/apt/apt.conf.d/01hostplane-proxy",
            apt_proxy_config(proxy_port),
        ),
    ]
}

/// Writes `files` under the root file system folder `root`.
pub(crate) fn write_files(root: &Path, files: &[(&str, String)]) -> anyhow::Result<()> {
    for (path, content) in files {
        let target = root.join(path);
        if let Some(folder) = target.parent() {
            fs::create_dir_all(folder)?;
        }
        // resolv.conf may be a symlink in some images: replace it rather than follow it.
        let _ = fs::remove_file(&target);
        fs::write(&target, content)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    Ok(())
}

/// Creates and provisions the base unless a ready one exists (call with the host lock held).
pub(crate) fn ensure(proxy_port: u16) -> anyhow::Result<()> {
    if is_ready() {
        // Refresh the proxy setting in case the port changed since it was provisioned.
        return write_files(&rootfs(), &guest_files(proxy_port));
    }
    let started = Instant::now();
    if host::container_exists(BASE_CONTAINER) {
        eprintln!("[lxc] the base container {BASE_CONTAINER} is incomplete: rebuilding it");
        host::destroy_container(BASE_CONTAINER)?;
    }
    eprintln!(
        "[lxc] creating the base container {BASE_CONTAINER} (debootstrap: minutes the first time)"
    );
    let [a, b, c, _] = HOST_ADDRESS.octets();
    let config_path = Path::new(STATE_DIR).join("base.conf");
    fs::create_dir_all(STATE_DIR)?;
    fs::write(
        &config_path,
        format!(
            "{}lxc.apparmor.profile = unconfined\n",
            network_config(Ipv4Addr::new(a, b, c, BASE_HOST_PART))
        ),
    )?;
    let config_arg = config_path.display().to_string();
    let mirror = format!("--mirror={}", mirror());
    run_checked(
        "lxc-create",
        &[
            "-n",
            BASE_CONTAINER,
            "-f",
            &config_arg,
            "-t",
            "debian",
            "--",
            "-r",
            "bookworm",
            &mirror,
        ],
        Duration::from_secs(30 * 60),
    )?;
    eprintln!("[lxc] base created in {:.1?}", started.elapsed());
    write_files(&rootfs(), &guest_files(proxy_port))?;
    let provisioned = Instant::now();
    run_checked(
        "lxc-start",
        &["-n", BASE_CONTAINER],
        Duration::from_secs(60),
    )?;
    let result = provision();
    let stopped = run(
        "lxc-stop",
        &["-n", BASE_CONTAINER, "-t", "60"],
        Duration::from_secs(90),
    );
    result?;
    stopped?.checked("lxc-stop of the base")?;
    fs::write(rootfs().join(MARKER), BASE_VERSION)?;
    eprintln!(
        "[lxc] base provisioned in {:.1?} (total {:.1?})",
        provisioned.elapsed(),
        started.elapsed()
    );
    Ok(())
}

fn provision() -> anyhow::Result<()> {
    wait_until_up(BASE_CONTAINER, Duration::from_secs(120))?;
    let script = "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -q; \
                  apt-get install -y -q --no-install-recommends ca-certificates; apt-get clean";
    run_checked(
        "lxc-attach",
        &[
            "-n",
            BASE_CONTAINER,
            "--clear-env",
            "--set-var",
            super::GUEST_PATH,
            "--",
            "sh",
            "-c",
            script,
        ],
        Duration::from_secs(15 * 60),
    )
    .context("provisioning the base container")?;
    Ok(())
}
