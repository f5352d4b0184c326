//! Real LXC containers for end-to-end tests: a private bridge and apt proxy on the host, a cached
//! Debian base container, and throwaway clones destroyed when their guard drops (also on panic).
//!
//! What it creates on the host, and removes again:
//! - the bridge `hpbr0` with `10.213.37.1/24` and no route or NAT beyond it: containers reach only
//!   the host's bridge address (and each other);
//! - an `apt-cacher-ng` process bound to `10.213.37.1` with its own configuration under
//!   `/run/hostplane-testbed` and its cache under `/var/cache/hostplane-testbed` (kept);
//! - clones named `hpt-PID-NAME` (PID of the test process) at `10.213.37.10`-`.99`.
//!
//! The base container `hostplane-base-bookworm` is kept (stopped) between runs. The bridge and
//! the proxy go away when the last process using the testbed releases it. Containers of killed
//! runs are removed at the next start. Set `HOSTPLANE_SKIP_LXC=1` to skip these tests explicitly;
//! otherwise a missing prerequisite (root, LXC, ...) fails the test with what to install.

mod base;
pub mod host;

use std::fs;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub use base::{apt_proxy_config, mirror, network_config};

use crate::command::{Output, run, run_checked, run_with_input};

/// The bridge the test containers live on.
pub const BRIDGE: &str = "hpbr0";
/// The host's address on [`BRIDGE`]; the only host address containers can reach.
pub const HOST_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 213, 37, 1);
/// Prefix length of the bridge subnet.
pub const PREFIX_LENGTH: u8 = 24;
/// The cached, provisioned, stopped base container.
pub const BASE_CONTAINER: &str = "hostplane-base-bookworm";
/// The cached unprivileged copy of [`BASE_CONTAINER`] (made on first use): its root file system
/// owned by the ids root's are mapped to, as Proxmox makes unprivileged containers.
pub const UNPRIVILEGED_BASE: &str = "hostplane-base-bookworm-unprivileged";
/// The first host id root inside an unprivileged container maps to (`/etc/subuid`, `/etc/subgid`).
pub const ID_OFFSET: u32 = 100_000;
/// How many ids an unprivileged container maps.
pub const ID_COUNT: u32 = 65_536;
/// Last bytes of the addresses given to clones made by this harness.
pub const CLONE_ADDRESSES: RangeInclusive<u8> = 10..=99;
/// Last bytes of the addresses pvesim's LXC backend should use, apart from the harness's.
pub const SIMULATOR_ADDRESSES: RangeInclusive<u8> = 100..=199;
/// Every container this harness creates is named `hpt-PID-...`.
pub const CLONE_PREFIX: &str = "hpt-";
/// Setting it to `1` skips the LXC tests (they print that they skip).
pub const SKIP_VARIABLE: &str = "HOSTPLANE_SKIP_LXC";
/// Where the testbed keeps its lock, user registry and proxy state (cleared at host reboot).
pub const STATE_DIR: &str = "/run/hostplane-testbed";
/// Where the testbed keeps what is worth keeping between runs (the apt proxy's cache).
pub const CACHE_DIR: &str = "/var/cache/hostplane-testbed";

const LXC_PATH: &str = "/var/lib/lxc";
const GUEST_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const SHORT: Duration = Duration::from_secs(30);
/// How long a command inside a container may run unless told otherwise.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a container may take to boot until systemd reports running or degraded.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// What [`Testbed::shutdown`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Teardown {
    /// This was the last process using the testbed, so the bridge and proxy were removed.
    pub removed_bridge_and_proxy: bool,
}

struct Inner {
    user: Mutex<Option<host::UserFile>>,
    proxy_port: u16,
}

impl Inner {
    fn release(&self) -> anyhow::Result<Teardown> {
        let Some(user) = self
            .user
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        else {
            return Ok(Teardown {
                removed_bridge_and_proxy: false,
            });
        };
        let _lock = host::HostLock::acquire(Duration::from_secs(20 * 60))?;
        if !user.remove() {
            return Ok(Teardown {
                removed_bridge_and_proxy: false,
            });
        }
        let started = Instant::now();
        let proxy = host::stop_proxy();
        let bridge = host::remove_bridge();
        proxy?;
        bridge?;
        eprintln!(
            "[lxc] last user gone: removed the bridge and the apt proxy in {:.1?}",
            started.elapsed()
        );
        Ok(Teardown {
            removed_bridge_and_proxy: true,
        })
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(error) = self.release() {
            eprintln!("[lxc] teardown of the testbed failed: {error:#}");
        }
    }
}

/// The host side of the LXC tests: bridge, apt proxy and base container, shared by every test
/// (and every test process) using it. Cloning is cheap; the last clone dropped releases it.
#[derive(Clone)]
pub struct Testbed {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Testbed")
            .field("bridge", &BRIDGE)
            .field("host_address", &HOST_ADDRESS)
            .field("proxy_port", &self.inner.proxy_port)
            .finish()
    }
}

static CURRENT: Mutex<Weak<Inner>> = Mutex::new(Weak::new());

impl Testbed {
    /// Prepares the testbed (or joins the one this process already holds). `Ok(None)` means the
    /// tests were skipped on purpose with `HOSTPLANE_SKIP_LXC=1`, which it prints; a missing
    /// prerequisite is an error naming what is missing.
    pub fn ensure() -> anyhow::Result<Option<Testbed>> {
        if let Some(value) = std::env::var_os(SKIP_VARIABLE)
            && value == "1"
        {
            // Straight to the process's stderr: the test harness's capture would hide eprintln!.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: the LXC tests, because {SKIP_VARIABLE}=1"
            );
            return Ok(None);
        }
        let mut current = CURRENT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(inner) = current.upgrade() {
            return Ok(Some(Testbed { inner }));
        }
        let missing = host::missing_prerequisites();
        if !missing.is_empty() {
            bail!(
                "the LXC tests cannot run; missing: {}. Set {SKIP_VARIABLE}=1 to skip them \
                 explicitly.",
                missing.join(", ")
            );
        }
        let started = Instant::now();
        let _lock = host::HostLock::acquire(Duration::from_secs(30 * 60))?;
        host::prune_users();
        let leftovers = host::remove_leftover_containers()?;
        if !leftovers.is_empty() {
            eprintln!(
                "[lxc] removed containers of earlier runs: {}",
                leftovers.join(" ")
            );
        }
        if host::ensure_bridge()? {
            eprintln!("[lxc] created the bridge {BRIDGE} ({HOST_ADDRESS}/{PREFIX_LENGTH})");
        }
        let proxy_port = host::ensure_proxy()?;
        base::ensure(proxy_port)?;
        let user = host::UserFile::register()?;
        let inner = Arc::new(Inner {
            user: Mutex::new(Some(user)),
            proxy_port,
        });
        *current = Arc::downgrade(&inner);
        eprintln!("[lxc] testbed ready in {:.1?}", started.elapsed());
        Ok(Some(Testbed { inner }))
    }

    /// Releases this handle now; when it was the last one of the last process, removes the
    /// bridge and the proxy and says so. Errors are returned rather than printed.
    pub fn shutdown(self) -> anyhow::Result<Teardown> {
        let mut current = CURRENT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => {
                *current = Weak::new();
                // Drop then finds nothing left to release.
                inner.release()
            }
            Err(_) => Ok(Teardown {
                removed_bridge_and_proxy: false,
            }),
        }
    }

    /// Prepares the testbed and keeps the bridge and proxy up after this process ends, until
    /// [`Testbed::release_hold`] (for trying pvesim's LXC mode by hand). `Ok(None)` when skipped.
    pub fn hold() -> anyhow::Result<Option<String>> {
        let Some(testbed) = Testbed::ensure()? else {
            return Ok(None);
        };
        {
            let _lock = host::HostLock::acquire(Duration::from_secs(60))?;
            host::hold()?;
        }
        let proxy = testbed.apt_proxy_url();
        testbed.shutdown()?;
        Ok(Some(proxy))
    }

    /// Undoes [`Testbed::hold`]: destroys the containers whose names start with
    /// `container_prefix` (e.g. pvesim's default `pvesim-`), then removes the bridge and the
    /// proxy unless a test still uses them.
    pub fn release_hold(container_prefix: &str) -> anyhow::Result<Teardown> {
        let _lock = host::HostLock::acquire(Duration::from_secs(20 * 60))?;
        if !container_prefix.is_empty() {
            for name in host::container_names()? {
                if name.starts_with(container_prefix) && name != BASE_CONTAINER {
                    host::destroy_container(&name)?;
                    eprintln!("[lxc] destroyed {name}");
                }
            }
        }
        if !host::remove_hold() {
            return Ok(Teardown {
                removed_bridge_and_proxy: false,
            });
        }
        host::stop_proxy()?;
        host::remove_bridge()?;
        Ok(Teardown {
            removed_bridge_and_proxy: true,
        })
    }

    /// Makes the cached unprivileged base unless a current one exists, and returns its name
    /// (for pvesim's `LxcConfig::unprivileged_base`).
    pub fn unprivileged_base(&self) -> anyhow::Result<&'static str> {
        let _lock = host::HostLock::acquire(Duration::from_secs(30 * 60))?;
        base::ensure_unprivileged(self.inner.proxy_port)?;
        Ok(UNPRIVILEGED_BASE)
    }

    /// The host's address on the bridge (listen here for containers to reach you).
    pub fn host_address(&self) -> Ipv4Addr {
        HOST_ADDRESS
    }

    /// The bridge name.
    pub fn bridge(&self) -> &'static str {
        BRIDGE
    }

    /// The apt proxy URL as containers see it, e.g. `http://10.213.37.1:3142`.
    pub fn apt_proxy_url(&self) -> String {
        format!("http://{HOST_ADDRESS}:{}", self.inner.proxy_port)
    }

    /// The apt proxy's port on [`HOST_ADDRESS`].
    pub fn apt_proxy_port(&self) -> u16 {
        self.inner.proxy_port
    }

    /// The name a clone called `name` gets on the host: `hpt-PID-NAME`.
    pub fn container_name(name: &str) -> String {
        format!("{CLONE_PREFIX}{}-{name}", std::process::id())
    }

    /// Clones the base into a new container `hpt-PID-NAME` with its own address on the bridge,
    /// starts it and waits until systemd is up. The container is destroyed when the returned
    /// guard drops.
    pub fn clone_container(&self, name: &str) -> anyhow::Result<Container> {
        let valid = !name.is_empty()
            && name.len() <= 24
            && name
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
        if !valid {
            bail!("container name '{name}' must be 1-24 characters of a-z, 0-9 and '-'");
        }
        let full_name = Self::container_name(name);
        let started = Instant::now();
        let container = {
            let _lock = host::HostLock::acquire(Duration::from_secs(30 * 60))?;
            if host::container_exists(&full_name) {
                bail!("a container {full_name} already exists");
            }
            let address = host::allocate_address(CLONE_ADDRESSES)?;
            run_checked(
                "lxc-copy",
                &[
                    "-n",
                    BASE_CONTAINER,
                    "-N",
                    &full_name,
                    "-s",
                    "-B",
                    "overlayfs",
                ],
                Duration::from_secs(120),
            )?;
            // From here on the guard destroys the clone if anything fails.
            let container = Container {
                testbed: Some(self.clone()),
                name: full_name.clone(),
                address,
                owned: true,
            };
            container.set_address(address)?;
            base::write_files(
                &container.writable_root()?,
                &base::guest_files(self.inner.proxy_port),
            )?;
            container
        };
        let cloned = started.elapsed();
        container.start()?;
        eprintln!(
            "[lxc] {full_name} at {}: cloned in {cloned:.1?}, up in {:.1?}",
            container.address,
            started.elapsed()
        );
        Ok(container)
    }

    /// A handle on an existing container made by someone else (e.g. pvesim's LXC backend); it
    /// is not destroyed on drop.
    pub fn attach(&self, name: &str) -> anyhow::Result<Container> {
        self.handle(name, false)
    }

    /// Like [`Testbed::attach`], but the container is destroyed when the handle drops (if it
    /// still exists): a guard for containers made through pvesim's API.
    pub fn adopt(&self, name: &str) -> anyhow::Result<Container> {
        self.handle(name, true)
    }

    fn handle(&self, name: &str, owned: bool) -> anyhow::Result<Container> {
        if !host::container_exists(name) {
            bail!("no container {name}");
        }
        let config = fs::read_to_string(Path::new(LXC_PATH).join(name).join("config"))?;
        let address = config_value(&config, "lxc.net.0.ipv4.address")
            .and_then(|value| value.split('/').next()?.parse().ok())
            .with_context(|| format!("container {name} has no static IPv4 address"))?;
        Ok(Container {
            testbed: Some(self.clone()),
            name: name.to_string(),
            address,
            owned,
        })
    }
}

/// The value of the last `key = value` line of an LXC configuration.
fn config_value<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    config
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(name, _)| name.trim() == key)
        .map(|(_, value)| value.trim())
        .next_back()
}

/// Waits until systemd in `name` says `running` or `degraded`, within `timeout`.
pub(crate) fn wait_until_up(name: &str, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    for _attempt in 0..10_000 {
        let output = run(
            "lxc-attach",
            &[
                "-n",
                name,
                "--clear-env",
                "--set-var",
                GUEST_PATH,
                "--",
                "systemctl",
                "is-system-running",
            ],
            Duration::from_secs(10),
        );
        if let Ok(output) = output {
            last = output.stdout_text().trim().to_string();
            if last == "running" || last == "degraded" {
                return Ok(());
            }
        }
        if started.elapsed() >= timeout {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    bail!("systemd in {name} was not up after {timeout:?} (last state '{last}')")
}

/// A container on the testbed. When it was made by [`Testbed::clone_container`] it is stopped
/// and destroyed when this guard drops, also while a test panics.
pub struct Container {
    // Keeps the bridge and proxy alive while the container exists; dropped after the container.
    testbed: Option<Testbed>,
    name: String,
    address: Ipv4Addr,
    owned: bool,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Container")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("owned", &self.owned)
            .finish()
    }
}

impl Container {
    /// The LXC name on the host.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The container's address on the bridge.
    pub fn ip(&self) -> Ipv4Addr {
        self.address
    }

    /// The LXC state: `RUNNING`, `STOPPED`, `FROZEN`, ...
    pub fn state(&self) -> anyhow::Result<String> {
        Ok(
            run_checked("lxc-info", &["-n", &self.name, "-s", "-H"], SHORT)?
                .trim()
                .to_string(),
        )
    }

    /// The host pid of the container's init, when it runs.
    pub fn init_pid(&self) -> Option<u32> {
        run_checked("lxc-info", &["-n", &self.name, "-p", "-H"], SHORT)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Runs `argv` inside as root with a clean environment, within [`EXEC_TIMEOUT`].
    pub fn exec(&self, argv: &[&str]) -> anyhow::Result<Output> {
        self.exec_with(argv, None, EXEC_TIMEOUT)
    }

    /// Runs `argv` inside and returns its standard output, or an error with both outputs when it
    /// fails.
    pub fn exec_checked(&self, argv: &[&str]) -> anyhow::Result<String> {
        self.exec(argv)?
            .checked(&format!("{} in {}", argv.join(" "), self.name))
    }

    /// Runs `argv` inside with `input` on its standard input, killed after `timeout`.
    pub fn exec_with(
        &self,
        argv: &[&str],
        input: Option<Vec<u8>>,
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        let mut arguments = vec![
            "-n",
            &self.name,
            "--clear-env",
            "--set-var",
            GUEST_PATH,
            "--set-var",
            "HOME=/root",
            "--set-var",
            "LANG=C.UTF-8",
            "--set-var",
            "DEBIAN_FRONTEND=noninteractive",
            "--",
        ];
        arguments.extend_from_slice(argv);
        run_with_input("lxc-attach", &arguments, input, timeout)
    }

    /// Writes `bytes` to `path` inside (parent folders created) with `mode`, e.g. `0o644`.
    pub fn push_bytes(&self, bytes: Vec<u8>, path: &str, mode: u32) -> anyhow::Result<()> {
        let mode = format!("{mode:o}");
        self.exec_with(
            &[
                "sh",
                "-c",
                "mkdir -p \"$(dirname \"$1\")\" && cat > \"$1.part\" && chmod \"$2\" \"$1.part\" \
                 && mv \"$1.part\" \"$1\"",
                "sh",
                path,
                &mode,
            ],
            Some(bytes),
            Duration::from_secs(120),
        )?
        .checked(&format!("writing {path} in {}", self.name))?;
        Ok(())
    }

    /// Copies the host file `host_path` to `container_path` inside (mode 0644).
    pub fn push_file(&self, host_path: &Path, container_path: &str) -> anyhow::Result<()> {
        let bytes =
            fs::read(host_path).with_context(|| format!("cannot read {}", host_path.display()))?;
        self.push_bytes(bytes, container_path, 0o644)
    }

    /// Copies a `.deb` from the host inside and installs it with apt (which fetches its
    /// dependencies through the proxy); returns apt's output.
    pub fn install_deb(&self, host_path: &Path) -> anyhow::Result<String> {
        let file_name = host_path
            .file_name()
            .context("a .deb path needs a file name")?
            .to_string_lossy()
            .into_owned();
        let target = format!("/root/packages/{file_name}");
        self.push_file(host_path, &target)?;
        self.exec_checked(&[
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            &target,
        ])
    }

    /// Waits until systemd inside reports running or degraded, within [`BOOT_TIMEOUT`].
    pub fn wait_until_up(&self) -> anyhow::Result<()> {
        wait_until_up(&self.name, BOOT_TIMEOUT)
    }

    /// Starts the container and waits until systemd is up.
    pub fn start(&self) -> anyhow::Result<()> {
        let log = Path::new(STATE_DIR)
            .join("logs")
            .join(format!("{}.log", self.name));
        if let Some(folder) = log.parent() {
            fs::create_dir_all(folder)?;
        }
        let log = log.display().to_string();
        run_checked(
            "lxc-start",
            &["-n", &self.name, "-o", &log, "-l", "INFO"],
            Duration::from_secs(60),
        )
        .with_context(|| format!("starting {} (log: {log})", self.name))?;
        wait_until_up(&self.name, BOOT_TIMEOUT)
    }

    /// Reboots the container the way `reboot` inside would, and waits until systemd is up again
    /// under a new init process.
    pub fn reboot(&self) -> anyhow::Result<()> {
        let before = self.init_pid().context("the container does not run")?;
        let started = Instant::now();
        run_checked("lxc-stop", &["-n", &self.name, "-r", "-t", "60"], SHORT)?;
        for _attempt in 0..2_000 {
            if self.init_pid().is_some_and(|pid| pid != before) {
                let remaining = BOOT_TIMEOUT.saturating_sub(started.elapsed());
                return wait_until_up(&self.name, remaining.max(Duration::from_secs(1)));
            }
            if started.elapsed() > BOOT_TIMEOUT {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!("{} did not come back within {BOOT_TIMEOUT:?}", self.name)
    }

    /// Shuts the container down cleanly (killed after 30 s).
    pub fn stop(&self) -> anyhow::Result<()> {
        run_checked(
            "lxc-stop",
            &["-n", &self.name, "-t", "30"],
            Duration::from_secs(60),
        )?;
        Ok(())
    }

    /// Stops and destroys the container now, reporting errors (otherwise the guard does it).
    pub fn destroy(mut self) -> anyhow::Result<()> {
        self.owned = false;
        host::destroy_container(&self.name)
    }

    /// The host folder where files written before start appear at `/` inside: the overlay's
    /// upper folder for a snapshot clone, otherwise the root file system folder.
    fn writable_root(&self) -> anyhow::Result<PathBuf> {
        let config = fs::read_to_string(Path::new(LXC_PATH).join(&self.name).join("config"))?;
        let rootfs = config_value(&config, "lxc.rootfs.path")
            .with_context(|| format!("{} has no lxc.rootfs.path", self.name))?;
        let folder = match rootfs.split_once(':') {
            Some(("overlay" | "overlayfs", layers)) => layers.rsplit(':').next().unwrap_or(""),
            Some(("dir", folder)) => folder,
            _ => rootfs,
        };
        Ok(PathBuf::from(folder))
    }

    /// Replaces the configured IPv4 address (the base's) with `address`.
    fn set_address(&self, address: Ipv4Addr) -> anyhow::Result<()> {
        let path = Path::new(LXC_PATH).join(&self.name).join("config");
        let config = fs::read_to_string(&path)?;
        let mut lines: Vec<String> = config
            .lines()
            .filter(|line| {
                let key = line.split('=').next().unwrap_or("").trim();
                key != "lxc.net.0.ipv4.address" && key != "lxc.net.0.ipv4.gateway"
            })
            .map(str::to_string)
            .collect();
        lines.push(format!(
            "lxc.net.0.ipv4.address = {address}/{PREFIX_LENGTH}"
        ));
        fs::write(&path, lines.join("\n") + "\n")?;
        Ok(())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.owned
            && let Err(error) = host::destroy_container(&self.name)
        {
            eprintln!("[lxc] could not destroy {}: {error:#}", self.name);
        }
        // The testbed handle goes after the container, so the bridge outlives it.
        self.testbed.take();
    }
}
