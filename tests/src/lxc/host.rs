//! Host-side pieces of the LXC testbed: the cross-process lock, the registry of processes using
//! the testbed, the private bridge, the apt proxy, address allocation and leftover cleanup.

use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{BRIDGE, CACHE_DIR, CLONE_PREFIX, HOST_ADDRESS, LXC_PATH, PREFIX_LENGTH, STATE_DIR};
use crate::command::{on_path, run, run_checked};

const SHORT: Duration = Duration::from_secs(30);

/// An exclusive lock shared by every process that changes the testbed (setup, teardown, clones,
/// address allocation). Released on drop.
pub(crate) struct HostLock {
    _lock: Flock<File>,
}

impl HostLock {
    /// Waits up to `timeout` for the lock file `path`.
    pub(crate) fn acquire_at(path: &Path, timeout: Duration) -> anyhow::Result<HostLock> {
        if let Some(folder) = path.parent() {
            fs::create_dir_all(folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
        }
        let started = Instant::now();
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(HostLock { _lock: lock }),
                Err((returned, Errno::EWOULDBLOCK)) => file = returned,
                Err((_, errno)) => bail!("cannot lock {}: {errno}", path.display()),
            }
            if started.elapsed() >= timeout {
                bail!(
                    "another process held {} for more than {timeout:?}",
                    path.display()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The testbed's lock.
    pub(crate) fn acquire(timeout: Duration) -> anyhow::Result<HostLock> {
        Self::acquire_at(&lock_path(), timeout)
    }
}

/// The lock file every testbed user takes (also used by pvesim's LXC backend for addresses).
pub fn lock_path() -> PathBuf {
    Path::new(STATE_DIR).join("lock")
}

/// When process `pid` started, in clock ticks after boot, or `None` when it does not exist.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn users_dir() -> PathBuf {
    Path::new(STATE_DIR).join("users")
}

/// One registration of a process as a testbed user: a file named `PID-STARTTIME-SEQUENCE`.
#[derive(Debug)]
pub(crate) struct UserFile {
    path: PathBuf,
}

impl UserFile {
    /// Registers this process (call with the lock held).
    pub(crate) fn register() -> anyhow::Result<UserFile> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let pid = std::process::id();
        let start = process_start_time(pid).context("cannot read this process's start time")?;
        let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        fs::create_dir_all(users_dir())?;
        let path = users_dir().join(format!("{pid}-{start}-{sequence}"));
        fs::write(&path, b"")?;
        Ok(UserFile { path })
    }

    /// Removes the registration (call with the lock held); `true` when no live user remains.
    pub(crate) fn remove(&self) -> bool {
        let _ = fs::remove_file(&self.path);
        prune_users() == 0
    }
}

/// A registration without a process: the testbed stays up until it is removed (`lxc-testbed`).
const HOLD: &str = "hold";

/// Keeps the testbed up after this process ends (call with the lock held).
pub(crate) fn hold() -> anyhow::Result<()> {
    fs::create_dir_all(users_dir())?;
    fs::write(users_dir().join(HOLD), b"")?;
    Ok(())
}

/// Removes the hold (call with the lock held); `true` when no live user remains.
pub(crate) fn remove_hold() -> bool {
    let _ = fs::remove_file(users_dir().join(HOLD));
    prune_users() == 0
}

/// Removes registrations of processes that are gone and returns how many live ones remain.
pub(crate) fn prune_users() -> usize {
    let Ok(entries) = fs::read_dir(users_dir()) else {
        return 0;
    };
    let mut live = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == HOLD {
            live += 1;
            continue;
        }
        let mut parts = name.split('-');
        let pid = parts.next().and_then(|part| part.parse::<u32>().ok());
        let start = parts.next().and_then(|part| part.parse::<u64>().ok());
        match (pid, start) {
            (Some(pid), Some(start)) if process_start_time(pid) == Some(start) => live += 1,
            _ => {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    live
}

/// Names of all LXC containers on the host.
pub fn container_names() -> anyhow::Result<Vec<String>> {
    Ok(run_checked("lxc-ls", &["-1"], SHORT)?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// Whether a container of that name exists.
pub fn container_exists(name: &str) -> bool {
    Path::new(LXC_PATH).join(name).join("config").is_file()
}

/// Stops (hard) and destroys a container, whatever state it is in.
pub(crate) fn destroy_container(name: &str) -> anyhow::Result<()> {
    if !container_exists(name) {
        return Ok(());
    }
    // A frozen container cannot be stopped; thawing a running one is a harmless error.
    let _ = run("lxc-unfreeze", &["-n", name], SHORT);
    let _ = run("lxc-stop", &["-n", name, "-k"], SHORT);
    run_checked("lxc-destroy", &["-n", name, "-f"], Duration::from_secs(120))?;
    let _ = fs::remove_file(
        Path::new(STATE_DIR)
            .join("logs")
            .join(format!("{name}.log")),
    );
    Ok(())
}

/// Destroys containers named `hpt-PID-...` whose process is gone (runs that were killed).
pub(crate) fn remove_leftover_containers() -> anyhow::Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in container_names()? {
        let Some(rest) = name.strip_prefix(CLONE_PREFIX) else {
            continue;
        };
        let Some(pid) = rest
            .split('-')
            .next()
            .and_then(|part| part.parse::<u32>().ok())
        else {
            continue;
        };
        if process_start_time(pid).is_none() {
            destroy_container(&name)?;
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Every IPv4 address (last byte) in our subnet written in any container's configuration.
pub(crate) fn used_host_parts() -> Vec<u8> {
    let Ok(entries) = fs::read_dir(LXC_PATH) else {
        return Vec::new();
    };
    let prefix = format!("{}.", subnet_prefix());
    let mut used = Vec::new();
    for entry in entries.flatten() {
        let Ok(config) = fs::read_to_string(entry.path().join("config")) else {
            continue;
        };
        for line in config.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if key.trim().starts_with("lxc.net.") && key.trim().ends_with(".ipv4.address") {
                let address = value.trim().split('/').next().unwrap_or("");
                if let Some(last) = address.strip_prefix(&prefix)
                    && let Ok(last) = last.parse::<u8>()
                {
                    used.push(last);
                }
            }
        }
    }
    used
}

/// The first three bytes of the subnet, e.g. `10.213.37`.
pub(crate) fn subnet_prefix() -> String {
    let [a, b, c, _] = HOST_ADDRESS.octets();
    format!("{a}.{b}.{c}")
}

/// A free address in `range` (call with the lock held, and write it into a config before
/// releasing the lock).
pub(crate) fn allocate_address(range: RangeInclusive<u8>) -> anyhow::Result<Ipv4Addr> {
    let used = used_host_parts();
    let [a, b, c, _] = HOST_ADDRESS.octets();
    range
        .clone()
        .find(|candidate| !used.contains(candidate))
        .map(|last| Ipv4Addr::new(a, b, c, last))
        .with_context(|| format!("every address {}.{range:?} is taken", subnet_prefix()))
}

/// Creates the bridge with the host address when it is missing, and brings it up.
pub(crate) fn ensure_bridge() -> anyhow::Result<bool> {
    let exists = run("ip", &["link", "show", "dev", BRIDGE], SHORT)?.success();
    if !exists {
        run_checked("ip", &["link", "add", BRIDGE, "type", "bridge"], SHORT)?;
    }
    let addresses = run_checked("ip", &["-4", "-o", "addr", "show", "dev", BRIDGE], SHORT)?;
    let cidr = format!("{HOST_ADDRESS}/{PREFIX_LENGTH}");
    if !addresses.contains(&format!("inet {cidr} ")) {
        run_checked("ip", &["addr", "add", &cidr, "dev", BRIDGE], SHORT)?;
    }
    run_checked("ip", &["link", "set", BRIDGE, "up"], SHORT)?;
    Ok(!exists)
}

/// Whether the bridge exists.
pub fn bridge_exists() -> bool {
    Path::new("/sys/class/net").join(BRIDGE).exists()
}

/// Deletes the bridge when it exists.
pub(crate) fn remove_bridge() -> anyhow::Result<()> {
    if bridge_exists() {
        run_checked("ip", &["link", "del", BRIDGE], SHORT)?;
    }
    Ok(())
}

fn proxy_dir() -> PathBuf {
    Path::new(STATE_DIR).join("apt-proxy")
}

fn proxy_pid_file() -> PathBuf {
    proxy_dir().join("pid")
}

/// The pid of our apt proxy when it runs.
pub fn proxy_pid() -> Option<u32> {
    let pid = fs::read_to_string(proxy_pid_file())
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()?;
    let command = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (command.trim() == "apt-cacher-ng").then_some(pid)
}

/// The proxy port, kept across runs so the base container's setting stays right.
fn proxy_port() -> anyhow::Result<u16> {
    let port_file = Path::new(CACHE_DIR).join("apt-proxy-port");
    if let Some(port) = fs::read_to_string(&port_file)
        .ok()
        .and_then(|text| text.trim().parse::<u16>().ok())
        && TcpListener::bind((HOST_ADDRESS, port)).is_ok()
    {
        return Ok(port);
    }
    // The usual apt-cacher-ng port when it is free on our address, otherwise any free one.
    let port = match TcpListener::bind((HOST_ADDRESS, 3142)) {
        Ok(_) => 3142,
        Err(_) => TcpListener::bind((HOST_ADDRESS, 0))?.local_addr()?.port(),
    };
    fs::create_dir_all(CACHE_DIR)?;
    fs::write(&port_file, port.to_string())?;
    Ok(port)
}

/// Starts the apt proxy on the bridge address unless ours already answers; returns its port.
pub(crate) fn ensure_proxy() -> anyhow::Result<u16> {
    let port_file = proxy_dir().join("port");
    if proxy_pid().is_some()
        && let Some(port) = fs::read_to_string(&port_file)
            .ok()
            .and_then(|text| text.trim().parse::<u16>().ok())
        && answers(SocketAddr::from((HOST_ADDRESS, port)))
    {
        return Ok(port);
    }
    stop_proxy()?;
    let port = proxy_port()?;
    let config_dir = proxy_dir().join("config");
    let log_dir = proxy_dir().join("log");
    let cache_dir = Path::new(CACHE_DIR).join("apt-cacher-ng");
    for folder in [&config_dir, &log_dir, &cache_dir] {
        fs::create_dir_all(folder)?;
    }
    // Only our own settings: a plain caching proxy for whatever URL apt asks for.
    let config = format!(
        "CacheDir: {}\nLogDir: {}\nSupportDir: /usr/lib/apt-cacher-ng\nPort: {port}\n\
         BindAddress: {HOST_ADDRESS}\nForeGround: 0\nPidFile: {}\nSocketPath: {}\n\
         ExThreshold: 4\n",
        cache_dir.display(),
        log_dir.display(),
        proxy_pid_file().display(),
        proxy_dir().join("socket").display(),
    );
    fs::write(config_dir.join("acng.conf"), config)?;
    let _ = fs::remove_file(proxy_pid_file());
    let config_arg = config_dir.display().to_string();
    // It daemonizes itself: run it with no pipes left open behind it.
    let status = std::process::Command::new("apt-cacher-ng")
        .args(["-c", &config_arg])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("cannot start apt-cacher-ng")?;
    if !status.success() {
        bail!(
            "apt-cacher-ng -c {config_arg} failed ({status}); see {}",
            log_dir.display()
        );
    }
    let address = SocketAddr::from((HOST_ADDRESS, port));
    let started = Instant::now();
    while !(proxy_pid().is_some() && answers(address)) {
        if started.elapsed() > Duration::from_secs(10) {
            bail!(
                "apt-cacher-ng did not answer on {address} within 10 s; see {}",
                log_dir.display()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
    fs::write(&port_file, port.to_string())?;
    Ok(port)
}

/// Stops our apt proxy when it runs (SIGTERM, then SIGKILL after 5 s).
pub(crate) fn stop_proxy() -> anyhow::Result<()> {
    let Some(pid) = proxy_pid() else {
        return Ok(());
    };
    let target = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
    let started = Instant::now();
    while proxy_pid().is_some() {
        if started.elapsed() > Duration::from_secs(5) {
            let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("apt-cacher-ng (pid {pid}) did not stop");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = fs::remove_file(proxy_pid_file());
    Ok(())
}

fn answers(address: SocketAddr) -> bool {
    TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok()
}

/// Programs the testbed needs, each with the package that provides it.
const REQUIRED_PROGRAMS: &[(&str, &str)] = &[
    ("lxc-create", "lxc"),
    ("lxc-copy", "lxc"),
    ("lxc-start", "lxc"),
    ("lxc-stop", "lxc"),
    ("lxc-attach", "lxc"),
    ("lxc-info", "lxc"),
    ("lxc-ls", "lxc"),
    ("lxc-destroy", "lxc"),
    ("lxc-freeze", "lxc"),
    ("lxc-unfreeze", "lxc"),
    ("debootstrap", "debootstrap"),
    ("rsync", "rsync"),
    ("ip", "iproute2"),
    ("apt-cacher-ng", "apt-cacher-ng"),
];

/// What is missing to run the testbed: root, programs, the Debian template.
pub(crate) fn missing_prerequisites() -> Vec<String> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root (run the tests as root)".to_string());
    }
    let mut packages: Vec<&str> = Vec::new();
    for (program, package) in REQUIRED_PROGRAMS {
        if !on_path(program) {
            missing.push(format!("program {program}"));
            packages.push(package);
        }
    }
    if !Path::new("/usr/share/lxc/templates/lxc-debian").is_file() {
        missing.push("the LXC Debian template".to_string());
        packages.push("lxc-templates");
    }
    packages.dedup();
    if !packages.is_empty() {
        missing.push(format!(
            "(install: apt-get install -y {})",
            packages.join(" ")
        ));
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_start_time_and_a_missing_one_has_none() {
        assert!(process_start_time(std::process::id()).is_some());
        assert!(process_start_time(u32::MAX - 1).is_none());
    }

    #[test]
    fn subnet_prefix_is_the_host_address_without_its_last_byte() {
        assert_eq!(subnet_prefix(), "10.213.37");
    }
}
