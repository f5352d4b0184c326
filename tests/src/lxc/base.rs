//! The cached base container every clone starts from: created once with the Debian template,
//! provisioned once (static network on our bridge, apt through the host proxy, CA certificates),
//! then kept stopped. A marker file in its root file system says provisioning finished. Its
//! unprivileged copy is made from it on first use: the same files owned by the mapped ids.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{
    BASE_CONTAINER, BRIDGE, HOST_ADDRESS, ID_COUNT, ID_OFFSET, LXC_PATH, PREFIX_LENGTH, STATE_DIR,
    UNPRIVILEGED_BASE, host, wait_until_up,
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

fn unprivileged_rootfs() -> PathBuf {
    Path::new(LXC_PATH).join(UNPRIVILEGED_BASE).join("rootfs")
}

/// The marker of an unprivileged base made from the current base.
fn unprivileged_marker() -> String {
    format!("{BASE_VERSION} unprivileged {ID_OFFSET} {ID_COUNT}")
}

/// Makes the unprivileged copy of the base unless a current one exists (call with the host
/// lock held, after [`ensure`]): a full copy whose every file is owned by its id plus
/// [`ID_OFFSET`], with `lxc.idmap` lines, as Proxmox converts a container to unprivileged.
pub(crate) fn ensure_unprivileged(proxy_port: u16) -> anyhow::Result<()> {
    ensure_subordinate_ids()?;
    let ready = fs::read_to_string(unprivileged_rootfs().join(MARKER))
        .is_ok_and(|text| text.trim() == unprivileged_marker());
    if ready {
        return write_owned_files(&unprivileged_rootfs(), &guest_files(proxy_port));
    }
    let started = Instant::now();
    if host::container_exists(UNPRIVILEGED_BASE) {
        host::destroy_container(UNPRIVILEGED_BASE)?;
    }
    run_checked(
        "lxc-copy",
        &["-n", BASE_CONTAINER, "-N", UNPRIVILEGED_BASE],
        Duration::from_secs(10 * 60),
    )?;
    let root = unprivileged_rootfs();
    shift_ownership(&root).with_context(|| format!("shifting the owners in {}", root.display()))?;
    let folder = Path::new(LXC_PATH).join(UNPRIVILEGED_BASE);
    let config_path = folder.join("config");
    let mut config = fs::read_to_string(&config_path)?;
    config.push_str(&idmap_lines());
    fs::write(&config_path, config)?;
    // The mapped root must reach its root file system through the container's folder.
    let mode = fs::metadata(&folder)?.permissions().mode();
    fs::set_permissions(&folder, fs::Permissions::from_mode(mode | 0o001))?;
    write_owned_files(&root, &guest_files(proxy_port))?;
    write_owned_files(&root, &[(MARKER, unprivileged_marker())])?;
    eprintln!(
        "[lxc] unprivileged base {UNPRIVILEGED_BASE} made in {:.1?}",
        started.elapsed()
    );
    Ok(())
}

/// The `lxc.idmap` lines of an unprivileged container.
pub fn idmap_lines() -> String {
    format!("lxc.idmap = u 0 {ID_OFFSET} {ID_COUNT}\nlxc.idmap = g 0 {ID_OFFSET} {ID_COUNT}\n")
}

/// Adds `root:ID_OFFSET:ID_COUNT` to `/etc/subuid` and `/etc/subgid` when missing.
fn ensure_subordinate_ids() -> anyhow::Result<()> {
    let line = format!("root:{ID_OFFSET}:{ID_COUNT}");
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = match fs::read_to_string(file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(error).with_context(|| format!("reading {file}")),
        };
        if !text.lines().any(|existing| existing.trim() == line) {
            let mut text = text;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&line);
            text.push('\n');
            fs::write(file, text).with_context(|| format!("writing {file}"))?;
        }
    }
    Ok(())
}

/// Gives every file under `root` (not following links) its owner and group plus
/// [`ID_OFFSET`], keeping the modes (a change of owner clears set-uid and set-gid bits).
fn shift_ownership(root: &Path) -> std::io::Result<()> {
    let mut pending = vec![root.to_path_buf()];
    let mut count: u64 = 0;
    while let Some(path) = pending.pop() {
        count += 1;
        if count > 5_000_000 {
            return Err(std::io::Error::other(
                "more files than a base container has",
            ));
        }
        let metadata = fs::symlink_metadata(&path)?;
        let (uid, gid) = (metadata.uid(), metadata.gid());
        if uid >= ID_OFFSET {
            // Shifted already (a copy that was interrupted is rebuilt, so this is a hard link).
            continue;
        }
        std::os::unix::fs::lchown(&path, Some(uid + ID_OFFSET), Some(gid + ID_OFFSET))?;
        if !metadata.file_type().is_symlink() {
            fs::set_permissions(&path, metadata.permissions())?;
        }
        if metadata.is_dir() {
            for entry in fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// [`write_files`] into an unprivileged root file system: what is written belongs to the
/// mapped root.
fn write_owned_files(root: &Path, files: &[(&str, String)]) -> anyhow::Result<()> {
    write_files(root, files)?;
    for (path, _) in files {
        let target = root.join(path);
        std::os::unix::fs::lchown(&target, Some(ID_OFFSET), Some(ID_OFFSET))
            .with_context(|| format!("owning {}", target.display()))?;
    }
    Ok(())
}
