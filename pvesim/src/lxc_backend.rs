//! A [`Backend`] that backs the simulated containers with real LXC containers on this host: a
//! create clones a prepared base container (an overlay snapshot; a full copy of the unprivileged
//! base for `unprivileged=1`) onto a bridge with a static address, and start, stop, shutdown,
//! reboot, suspend, resume and destroy run the matching `lxc-*` commands. The cluster model keeps
//! the Proxmox configuration; a watcher copies the real state (`lxc-info`) back into the model, so
//! a container that stops or is frozen behind the API's back shows so in `status/current`.
//!
//! QEMU virtual machines stay simulated in this mode (their task logs say so), uploads and
//! network changes only change the model, and `GET /nodes/{node}/network` lists the host's real
//! bridges (the folders with a `bridge` entry under `/sys/class/net`).
//!
//! The host must provide the base container and the bridge (the end-to-end test harness creates
//! both). Needs root.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::SimState;
use crate::backend::{Backend, BackendFuture};
use crate::model::{Action, GuestKind};
use crate::network::Interface;

/// The bridges under a `/sys/class/net`-like folder, with their ports (guest-side interfaces
/// such as `veth*` and `tap*` left out, as Proxmox's configuration does).
pub fn host_bridges(folder: &Path) -> BTreeMap<String, Interface> {
    let mut bridges = BTreeMap::new();
    let Ok(entries) = fs::read_dir(folder) else {
        return bridges;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.join("bridge").is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut ports: Vec<String> = fs::read_dir(path.join("brif"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|port| port.file_name().to_string_lossy().into_owned())
            .filter(|port| {
                !["veth", "tap", "fwpr", "fwln"]
                    .iter()
                    .any(|prefix| port.starts_with(prefix))
            })
            .collect();
        ports.sort();
        bridges.insert(name, Interface::bridge(&ports.join(" "), None));
    }
    bridges
}

/// Where and how the LXC backend makes containers.
#[derive(Debug, Clone)]
pub struct LxcConfig {
    /// The stopped container every new one is cloned from.
    pub base: String,
    /// The stopped unprivileged container (its root file system owned by the mapped ids, its
    /// configuration with `lxc.idmap` lines) that containers created with `unprivileged=1` are
    /// cloned from; without one such a create fails.
    pub unprivileged_base: Option<String>,
    /// The bridge the containers' `eth0` joins.
    pub bridge: String,
    /// The host's address on the bridge; containers get addresses in its subnet.
    pub host_address: Ipv4Addr,
    /// The bridge subnet's prefix length (addresses are picked by their last byte, so at least 24).
    pub prefix_length: u8,
    /// Last bytes of the addresses this backend may hand out.
    pub addresses: RangeInclusive<u8>,
    /// Container `VMID` becomes the LXC container `{name_prefix}{VMID}`.
    pub name_prefix: String,
    /// A lock file shared with other processes that allocate addresses on the same bridge.
    pub lock_file: PathBuf,
    /// The LXC folder holding container configurations.
    pub lxc_path: PathBuf,
    /// An apt proxy URL written into each container's apt configuration, when set.
    pub apt_proxy: Option<String>,
    /// How long a clean shutdown may take before the container is killed.
    pub shutdown_timeout: Duration,
    /// How often the watcher reads the real state.
    pub watch_interval: Duration,
}

impl Default for LxcConfig {
    fn default() -> Self {
        LxcConfig {
            base: "hostplane-base-bookworm".into(),
            unprivileged_base: None,
            bridge: "hpbr0".into(),
            host_address: Ipv4Addr::new(10, 213, 37, 1),
            prefix_length: 24,
            addresses: 100..=199,
            name_prefix: "pvesim-".into(),
            lock_file: PathBuf::from("/run/hostplane-testbed/lock"),
            lxc_path: PathBuf::from("/var/lib/lxc"),
            apt_proxy: None,
            shutdown_timeout: Duration::from_secs(60),
            watch_interval: Duration::from_secs(2),
        }
    }
}

/// Why the LXC backend cannot be used on this host.
#[derive(Debug, thiserror::Error)]
pub enum LxcSetupError {
    /// Not running as root.
    #[error("the LXC backend needs root")]
    NotRoot,
    /// An LXC program is not installed.
    #[error("program {0} is missing (apt-get install lxc)")]
    MissingProgram(&'static str),
    /// The base container does not exist.
    #[error("the base container {0} does not exist (the LXC test harness creates it)")]
    MissingBase(String),
    /// The bridge does not exist.
    #[error("the bridge {0} does not exist (the LXC test harness creates it)")]
    MissingBridge(String),
    /// The settings do not fit together.
    #[error("invalid LXC settings: {0}")]
    Invalid(String),
}

/// Real LXC containers behind the simulated API.
#[derive(Debug)]
pub struct LxcBackend {
    config: LxcConfig,
}

const PROGRAMS: &[&str] = &[
    "lxc-copy",
    "lxc-start",
    "lxc-stop",
    "lxc-info",
    "lxc-destroy",
    "lxc-freeze",
    "lxc-unfreeze",
];

impl LxcBackend {
    /// Checks the host (root, programs, base container, bridge) and makes the backend.
    pub fn new(config: LxcConfig) -> Result<LxcBackend, LxcSetupError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(LxcSetupError::NotRoot);
        }
        for program in PROGRAMS {
            if !on_path(program) {
                return Err(LxcSetupError::MissingProgram(program));
            }
        }
        if config.prefix_length < 24 || config.prefix_length > 30 {
            return Err(LxcSetupError::Invalid(format!(
                "prefix length {} is not between 24 and 30",
                config.prefix_length
            )));
        }
        let backend = LxcBackend { config };
        if !backend.container_exists(&backend.config.base) {
            return Err(LxcSetupError::MissingBase(backend.config.base.clone()));
        }
        if !Path::new("/sys/class/net")
            .join(&backend.config.bridge)
            .exists()
        {
            return Err(LxcSetupError::MissingBridge(backend.config.bridge.clone()));
        }
        Ok(backend)
    }

    /// The settings.
    pub fn config(&self) -> &LxcConfig {
        &self.config
    }

    /// The LXC container name of `vmid`.
    pub fn container_name(&self, vmid: u32) -> String {
        format!("{}{vmid}", self.config.name_prefix)
    }

    /// The static address written in the container's LXC configuration, when it exists.
    pub fn container_address(&self, vmid: u32) -> Option<Ipv4Addr> {
        let config = fs::read_to_string(self.config_path(&self.container_name(vmid))).ok()?;
        config_value(&config, "lxc.net.0.ipv4.address")?
            .split('/')
            .next()?
            .parse()
            .ok()
    }

    /// Starts copying the real state of every container into the model every
    /// [`LxcConfig::watch_interval`], until the returned task is aborted.
    pub fn watch(self: &Arc<Self>, state: SimState) -> tokio::task::JoinHandle<()> {
        let backend = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(backend.config.watch_interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                backend.reconcile(&state).await;
            }
        })
    }

    /// Copies the real state of every idle container (no task running, no lock) into the model.
    pub async fn reconcile(&self, state: &SimState) {
        // Which guests are idle, and how many tasks each had, so a task that starts and ends while
        // lxc-info runs is noticed and its result kept.
        let idle: Vec<(u32, usize)> = state.with(|cluster| {
            cluster
                .guests
                .values()
                .filter(|guest| guest.kind == GuestKind::Lxc)
                .filter(|guest| !guest.config.contains_key("lock"))
                .filter_map(|guest| {
                    let id = guest.vmid.to_string();
                    let tasks = cluster.tasks.iter().filter(|task| task.id == id);
                    let count = tasks.clone().count();
                    let busy = tasks.clone().any(|task| task.endtime.is_none());
                    (!busy).then_some((guest.vmid, count))
                })
                .collect()
        });
        for (vmid, count) in idle {
            let Ok(real) = self.real_state(vmid).await else {
                continue;
            };
            state.with(|cluster| {
                let id = vmid.to_string();
                let tasks = cluster.tasks.iter().filter(|task| task.id == id).count();
                let Some(guest) = cluster.guests.get_mut(&vmid) else {
                    return;
                };
                if tasks != count || guest.config.contains_key("lock") {
                    return;
                }
                let (running, suspended) = match real {
                    RealState::Running => (true, false),
                    RealState::Frozen => (true, true),
                    RealState::Stopped => (false, false),
                };
                if running && !guest.running {
                    guest.started_at = Some(unix_now());
                }
                if !running {
                    guest.started_at = None;
                }
                guest.running = running;
                guest.suspended = suspended;
            });
        }
    }

    async fn real_state(&self, vmid: u32) -> Result<RealState, String> {
        let name = self.container_name(vmid);
        if !self.container_exists(&name) {
            return Err(format!("no container {name}"));
        }
        let output = run("lxc-info", &["-n", &name, "-s", "-H"], SHORT).await?;
        match output.trim() {
            "RUNNING" => Ok(RealState::Running),
            "FROZEN" | "FREEZING" => Ok(RealState::Frozen),
            "STOPPED" => Ok(RealState::Stopped),
            other => Err(format!("{name} is {other}")),
        }
    }

    fn config_path(&self, name: &str) -> PathBuf {
        self.config.lxc_path.join(name).join("config")
    }

    fn container_exists(&self, name: &str) -> bool {
        self.config_path(name).is_file()
    }

    fn existing(&self, vmid: u32) -> Result<String, String> {
        let name = self.container_name(vmid);
        if self.container_exists(&name) {
            Ok(name)
        } else {
            Err(format!("no LXC container {name} backs CT {vmid}"))
        }
    }

    async fn create(
        &self,
        vmid: u32,
        config: &BTreeMap<String, String>,
        start: bool,
    ) -> Result<Vec<String>, String> {
        let name = self.container_name(vmid);
        let mut log = Vec::new();
        let lock = HostLock::acquire(&self.config.lock_file, Duration::from_secs(30 * 60)).await?;
        if self.container_exists(&name) {
            return Err(format!("an LXC container {name} already exists"));
        }
        let unprivileged = config
            .get("unprivileged")
            .is_some_and(|value| value == "1" || value == "true");
        let base = if unprivileged {
            self.config.unprivileged_base.clone().ok_or_else(|| {
                "unprivileged containers need an unprivileged base container, and none is configured"
                    .to_string()
            })?
        } else {
            self.config.base.clone()
        };
        let address = self.pick_address(config)?;
        // A privileged clone is an overlay snapshot of the base. An unprivileged one is a full
        // copy, as on a Proxmox storage: in an overlay mounted for a user namespace, dpkg's
        // rename of the directories it makes with mode 000 fails with EXDEV.
        let copy: &[&str] = if unprivileged {
            &["-n", &base, "-N", &name]
        } else {
            &["-n", &base, "-N", &name, "-s", "-B", "overlayfs"]
        };
        run("lxc-copy", copy, Duration::from_secs(300)).await?;
        let written = self.write_config(&name, address, config);
        drop(lock);
        if let Err(error) = written {
            let _ = self.remove(&name).await;
            return Err(error);
        }
        log.push(format!(
            "LXC container {name} cloned from {base} at {address}/{} on {}",
            self.config.prefix_length, self.config.bridge
        ));
        if start {
            if let Err(error) = run("lxc-start", &["-n", &name], START).await {
                let _ = self.remove(&name).await;
                return Err(error);
            }
            log.push(format!("LXC container {name} started"));
        }
        Ok(log)
    }

    /// The address asked for in `net0` when it is a free one of ours, otherwise a free one from
    /// the range (call with the lock held).
    fn pick_address(&self, config: &BTreeMap<String, String>) -> Result<Ipv4Addr, String> {
        let used = self.used_last_bytes();
        let [a, b, c, _] = self.config.host_address.octets();
        let asked = config
            .get("net0")
            .and_then(|net| property(net, "ip"))
            .and_then(|ip| ip.split('/').next()?.parse::<Ipv4Addr>().ok())
            .filter(|ip| {
                let [x, y, z, last] = ip.octets();
                [x, y, z] == [a, b, c]
                    && last != 0
                    && last != 255
                    && *ip != self.config.host_address
                    && !used.contains(&last)
            });
        if let Some(ip) = asked {
            return Ok(ip);
        }
        self.config
            .addresses
            .clone()
            .find(|last| !used.contains(last))
            .map(|last| Ipv4Addr::new(a, b, c, last))
            .ok_or_else(|| format!("no free address in {a}.{b}.{c}.{:?}", self.config.addresses))
    }

    fn used_last_bytes(&self) -> Vec<u8> {
        let [a, b, c, _] = self.config.host_address.octets();
        let prefix = format!("{a}.{b}.{c}.");
        let Ok(entries) = fs::read_dir(&self.config.lxc_path) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|entry| fs::read_to_string(entry.path().join("config")).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|line| {
                        let (key, value) = line.split_once('=')?;
                        let key = key.trim();
                        if !(key.starts_with("lxc.net.") && key.ends_with(".ipv4.address")) {
                            return None;
                        }
                        value
                            .trim()
                            .split('/')
                            .next()?
                            .strip_prefix(&prefix)?
                            .parse::<u8>()
                            .ok()
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Writes network, hostname and resource limits into the clone's LXC configuration, and the
    /// hostname and apt proxy into its root file system.
    fn write_config(
        &self,
        name: &str,
        address: Ipv4Addr,
        config: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let path = self.config_path(name);
        let text = fs::read_to_string(&path).map_err(|error| error.to_string())?;
        let hostname = config
            .get("hostname")
            .cloned()
            .unwrap_or_else(|| name.to_string());
        let replaced = [
            "lxc.net.0.ipv4.address",
            "lxc.net.0.ipv4.gateway",
            "lxc.net.0.link",
            "lxc.uts.name",
        ];
        let mut lines: Vec<String> = text
            .lines()
            .filter(|line| {
                let key = line.split('=').next().unwrap_or("").trim();
                !replaced.contains(&key) && !key.starts_with("lxc.cgroup")
            })
            .map(str::to_string)
            .collect();
        lines.push(format!("lxc.net.0.link = {}", self.config.bridge));
        lines.push(format!(
            "lxc.net.0.ipv4.address = {address}/{}",
            self.config.prefix_length
        ));
        lines.push(format!("lxc.uts.name = {hostname}"));
        lines.extend(limit_lines(config, cgroup_version(), host_cpus()));
        fs::write(&path, lines.join("\n") + "\n").map_err(|error| error.to_string())?;
        let root = writable_root(&lines.join("\n"))
            .ok_or_else(|| format!("{name} has no lxc.rootfs.path"))?;
        let lower = lower_root(&lines.join("\n"));
        let mapped_root = mapped_root(&lines.join("\n"));
        if mapped_root.is_some() {
            // The mapped root must reach its root file system through the container's folder.
            let folder = self.config.lxc_path.join(name);
            let mode = fs::metadata(&folder)
                .map_err(|error| error.to_string())?
                .permissions()
                .mode();
            fs::set_permissions(&folder, fs::Permissions::from_mode(mode | 0o001))
                .map_err(|error| error.to_string())?;
        }
        let mut files = vec![("etc/hostname", format!("{hostname}\n"))];
        if let Some(proxy) = &self.config.apt_proxy {
            files.push((
                "etc/apt/apt.conf.d/01hostplane-proxy",
                apt_proxy_config(proxy),
            ));
        }
        for (file, content) in files {
            let target = root.join(file);
            if let Some(folder) = target.parent() {
                fs::create_dir_all(folder).map_err(|error| error.to_string())?;
            }
            fs::write(&target, content)
                .map_err(|error| format!("cannot write {}: {error}", target.display()))?;
            if let Some((uid, gid)) = mapped_root {
                own_like_lower(&root, lower.as_deref(), Path::new(file), (uid, gid))
                    .map_err(|error| format!("cannot own {}: {error}", target.display()))?;
            }
        }
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), String> {
        if !self.container_exists(name) {
            return Ok(());
        }
        let _ = run("lxc-unfreeze", &["-n", name], SHORT).await;
        let _ = run("lxc-stop", &["-n", name, "-k"], SHORT).await;
        run("lxc-destroy", &["-n", name, "-f"], Duration::from_secs(120)).await?;
        Ok(())
    }

    async fn shutdown(&self, name: &str) -> Result<(), String> {
        let seconds = self.config.shutdown_timeout.as_secs().max(1).to_string();
        run(
            "lxc-stop",
            &["-n", name, "-t", &seconds],
            self.config.shutdown_timeout + SHORT,
        )
        .await?;
        Ok(())
    }

    async fn act(&self, action: &Action) -> Result<Vec<String>, String> {
        match action {
            Action::Create {
                vmid,
                config,
                start,
                ..
            } => self.create(*vmid, config, *start).await,
            Action::Start { vmid } => {
                let name = self.existing(*vmid)?;
                run("lxc-start", &["-n", &name], START).await?;
                Ok(vec![format!("LXC container {name} started")])
            }
            Action::Stop { vmid } => {
                let name = self.existing(*vmid)?;
                let _ = run("lxc-unfreeze", &["-n", &name], SHORT).await;
                run("lxc-stop", &["-n", &name, "-k"], SHORT).await?;
                Ok(vec![format!("LXC container {name} stopped")])
            }
            Action::Shutdown { vmid } => {
                let name = self.existing(*vmid)?;
                let _ = run("lxc-unfreeze", &["-n", &name], SHORT).await;
                self.shutdown(&name).await?;
                Ok(vec![format!("LXC container {name} shut down")])
            }
            Action::Reboot { vmid } => {
                // As Proxmox does it: a clean shutdown, then a start.
                let name = self.existing(*vmid)?;
                let _ = run("lxc-unfreeze", &["-n", &name], SHORT).await;
                self.shutdown(&name).await?;
                run("lxc-start", &["-n", &name], START).await?;
                Ok(vec![format!("LXC container {name} rebooted")])
            }
            Action::Suspend { vmid } => {
                let name = self.existing(*vmid)?;
                run("lxc-freeze", &["-n", &name], SHORT).await?;
                Ok(vec![format!("LXC container {name} frozen")])
            }
            Action::Resume { vmid } => {
                let name = self.existing(*vmid)?;
                run("lxc-unfreeze", &["-n", &name], SHORT).await?;
                Ok(vec![format!("LXC container {name} thawed")])
            }
            Action::Destroy { vmid, .. } => {
                // A container the model knows but that has no LXC counterpart is simply gone.
                let name = self.container_name(*vmid);
                self.remove(&name).await?;
                Ok(vec![format!("LXC container {name} destroyed")])
            }
            Action::Resize { disk, .. } => Ok(vec![format!(
                "{disk}: the size is recorded; the LXC container's overlay is not limited"
            )]),
            Action::Download { .. }
            | Action::Console { .. }
            | Action::Upload { .. }
            | Action::VolumeDelete { .. } => Ok(Vec::new()),
            Action::VmCreate { .. } | Action::VmPower { .. } | Action::VmDestroy { .. } => {
                Ok(vec![crate::vm::SIMULATED.to_string()])
            }
            Action::NetworkApply => Ok(vec![
                "the host's network configuration is left as it is".to_string(),
            ]),
        }
    }
}

impl Backend for LxcBackend {
    fn perform<'a>(&'a self, _node: &'a str, action: &'a Action) -> BackendFuture<'a> {
        Box::pin(self.act(action))
    }

    fn host_bridges(&self) -> Option<BTreeMap<String, Interface>> {
        Some(host_bridges(Path::new("/sys/class/net")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RealState {
    Running,
    Frozen,
    Stopped,
}

const SHORT: Duration = Duration::from_secs(30);
const START: Duration = Duration::from_secs(60);

/// Runs a program with a time limit; `Ok` carries its standard output, `Err` a task error text.
async fn run(program: &str, arguments: &[&str], timeout: Duration) -> Result<String, String> {
    let child = tokio::process::Command::new(program)
        .args(arguments)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(timeout, child).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => return Err(format!("cannot run {program}: {error}")),
        Err(_) => return Err(format!("{program} did not finish within {timeout:?}")),
    };
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let reason = stderr
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("no error output");
    Err(format!(
        "{program} {} failed ({}): {reason}",
        arguments.join(" "),
        output.status
    ))
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|folder| folder.join(program).is_file())
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(0))
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

/// The apt settings written into a container (`/etc/apt/apt.conf.d/01hostplane-proxy`): every
/// download through `proxy` (a URL), and a failed download retried rather than failing the
/// install on one connection that a loaded host answered too late.
pub fn apt_proxy_config(proxy: &str) -> String {
    format!("Acquire::http::Proxy \"{proxy}\";\nAcquire::Retries \"3\";\n")
}

/// One item of a Proxmox property string such as `name=eth0,bridge=vmbr0,ip=10.0.0.2/24`.
fn property<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split(',')
        .filter_map(|item| item.split_once('='))
        .find(|(name, _)| *name == key)
        .map(|(_, value)| value)
}

/// The host folder that appears at `/` inside before start: an overlay clone's upper folder,
/// otherwise the root file system folder.
fn writable_root(config: &str) -> Option<PathBuf> {
    let rootfs = config_value(config, "lxc.rootfs.path")?;
    let folder = match rootfs.split_once(':') {
        Some(("overlay" | "overlayfs", layers)) => layers.rsplit(':').next()?,
        Some(("dir", folder)) => folder,
        _ => rootfs,
    };
    Some(PathBuf::from(folder))
}

/// The lower (read-only) folder of an overlay root file system.
fn lower_root(config: &str) -> Option<PathBuf> {
    let rootfs = config_value(config, "lxc.rootfs.path")?;
    match rootfs.split_once(':') {
        Some(("overlay" | "overlayfs", layers)) => layers.split(':').next().map(PathBuf::from),
        _ => None,
    }
}

/// The host uid and gid that root inside maps to, for a container with `lxc.idmap` lines.
fn mapped_root(config: &str) -> Option<(u32, u32)> {
    let mut uid = None;
    let mut gid = None;
    for line in config.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() != "lxc.idmap" {
            continue;
        }
        let fields: Vec<&str> = value.split_whitespace().collect();
        if let [kind, "0", host, _count] = fields.as_slice() {
            let host = host.parse().ok();
            match *kind {
                "u" => uid = host,
                "g" => gid = host,
                _ => {}
            }
        }
    }
    Some((uid?, gid?))
}

/// Gives `relative` (a file written under the writable root) and every folder on its way that
/// the host's root owns the owner they have in the lower layer, or the mapped root when they are
/// new: files made from the host belong to root on the host, whom an unprivileged container sees
/// as nobody.
fn own_like_lower(
    root: &Path,
    lower: Option<&Path>,
    relative: &Path,
    mapped_root: (u32, u32),
) -> std::io::Result<()> {
    let mut path = PathBuf::new();
    for component in relative.components() {
        path.push(component);
        let current = fs::symlink_metadata(root.join(&path))?;
        if current.uid() != 0 && current.gid() != 0 {
            continue;
        }
        let owner = lower
            .and_then(|lower| fs::symlink_metadata(lower.join(&path)).ok())
            .map(|metadata| (metadata.uid(), metadata.gid()))
            .unwrap_or(mapped_root);
        std::os::unix::fs::lchown(root.join(&path), Some(owner.0), Some(owner.1))?;
    }
    Ok(())
}

/// Which cgroup hierarchy the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CgroupVersion {
    V1,
    V2,
}

fn cgroup_version() -> CgroupVersion {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        CgroupVersion::V2
    } else {
        CgroupVersion::V1
    }
}

fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .ok()
        .and_then(|count| u32::try_from(count.get()).ok())
        .unwrap_or(1)
}

/// LXC cgroup lines for the Proxmox `memory` (MiB), `swap` (MiB) and `cores` keys: memory and
/// memory plus swap limits, and the first `cores` host CPUs (at most all of them).
fn limit_lines(
    config: &BTreeMap<String, String>,
    version: CgroupVersion,
    cpus: u32,
) -> Vec<String> {
    let number = |key: &str| config.get(key).and_then(|value| value.parse::<u64>().ok());
    let memory = number("memory").unwrap_or(512);
    let swap = number("swap").unwrap_or(512);
    let mut lines = match version {
        CgroupVersion::V2 => vec![
            format!("lxc.cgroup2.memory.max = {}", memory << 20),
            format!("lxc.cgroup2.memory.swap.max = {}", swap << 20),
        ],
        CgroupVersion::V1 => vec![format!(
            "lxc.cgroup.memory.limit_in_bytes = {}",
            memory << 20
        )],
    };
    if let Some(cores) = number("cores") {
        let cores = u32::try_from(cores)
            .unwrap_or(u32::MAX)
            .clamp(1, cpus.max(1));
        let set = if cores == 1 {
            "0".to_string()
        } else {
            format!("0-{}", cores - 1)
        };
        lines.push(match version {
            CgroupVersion::V2 => format!("lxc.cgroup2.cpuset.cpus = {set}"),
            CgroupVersion::V1 => format!("lxc.cgroup.cpuset.cpus = {set}"),
        });
    }
    lines
}

/// An exclusive lock on a file shared with other processes, released on drop.
struct HostLock {
    _lock: Flock<File>,
}

impl HostLock {
    async fn acquire(path: &Path, timeout: Duration) -> Result<HostLock, String> {
        if let Some(folder) = path.parent() {
            fs::create_dir_all(folder)
                .map_err(|error| format!("cannot create {}: {error}", folder.display()))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
        let started = Instant::now();
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(HostLock { _lock: lock }),
                Err((returned, Errno::EWOULDBLOCK)) => file = returned,
                Err((_, errno)) => return Err(format!("cannot lock {}: {errno}", path.display())),
            }
            if started.elapsed() >= timeout {
                return Err(format!("{} stayed locked for {timeout:?}", path.display()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bridges_are_the_folders_with_a_bridge_entry() {
        let folder = tempfile::tempdir().unwrap();
        for path in [
            "hpbr0/bridge",
            "hpbr0/brif/eno1",
            "hpbr0/brif/veth100i0",
            "vmbr9/bridge",
            "eno1",
            "lo",
        ] {
            fs::create_dir_all(folder.path().join(path)).unwrap();
        }
        let bridges = host_bridges(folder.path());
        assert_eq!(bridges.keys().collect::<Vec<_>>(), ["hpbr0", "vmbr9"]);
        assert_eq!(bridges["hpbr0"].settings["bridge_ports"], "eno1");
        assert_eq!(bridges["vmbr9"].settings["bridge_ports"], "");
        let mut network = crate::network::NodeNetwork::fresh(0);
        network.adopt_host_bridges(&bridges);
        let names: Vec<&String> = network.active.keys().collect();
        assert_eq!(
            names,
            ["eno1", "hpbr0", "vmbr9"],
            "the simulated vmbr0 is gone"
        );
    }

    fn keys(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn limits_follow_the_proxmox_keys_for_each_cgroup_version() {
        type Case = (
            &'static [(&'static str, &'static str)],
            CgroupVersion,
            u32,
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            (
                &[("memory", "1024"), ("swap", "0"), ("cores", "2")],
                CgroupVersion::V2,
                4,
                &[
                    "lxc.cgroup2.memory.max = 1073741824",
                    "lxc.cgroup2.memory.swap.max = 0",
                    "lxc.cgroup2.cpuset.cpus = 0-1",
                ],
            ),
            (
                &[("cores", "16")],
                CgroupVersion::V1,
                2,
                &[
                    "lxc.cgroup.memory.limit_in_bytes = 536870912",
                    "lxc.cgroup.cpuset.cpus = 0-1",
                ],
            ),
            (
                &[("memory", "256"), ("cores", "1")],
                CgroupVersion::V1,
                8,
                &[
                    "lxc.cgroup.memory.limit_in_bytes = 268435456",
                    "lxc.cgroup.cpuset.cpus = 0",
                ],
            ),
        ];
        for (config, version, cpus, expected) in cases {
            assert_eq!(
                limit_lines(&keys(config), *version, *cpus),
                expected.to_vec(),
                "{config:?}"
            );
        }
    }

    #[test]
    fn reads_items_of_property_strings_and_lxc_configs() {
        let net = "name=eth0,bridge=vmbr0,ip=10.213.37.150/24,gw=10.213.37.1";
        assert_eq!(property(net, "ip"), Some("10.213.37.150/24"));
        assert_eq!(property(net, "gw"), Some("10.213.37.1"));
        assert_eq!(property(net, "hwaddr"), None);
        let config = "lxc.rootfs.path = overlay:/var/lib/lxc/base/rootfs:/var/lib/lxc/c/overlay/delta\n\
                      lxc.net.0.ipv4.address = 10.0.0.2/24\nlxc.net.0.ipv4.address = 10.0.0.3/24\n";
        assert_eq!(
            config_value(config, "lxc.net.0.ipv4.address"),
            Some("10.0.0.3/24")
        );
        assert_eq!(
            writable_root(config),
            Some(PathBuf::from("/var/lib/lxc/c/overlay/delta"))
        );
        assert_eq!(
            writable_root("lxc.rootfs.path = dir:/srv/c/rootfs"),
            Some(PathBuf::from("/srv/c/rootfs"))
        );
    }

    #[test]
    fn picks_the_asked_address_when_free_and_ours_otherwise_one_from_the_range() {
        let folder = std::env::temp_dir().join(format!("pvesim-lxc-{}", std::process::id()));
        let taken = folder.join("other");
        fs::create_dir_all(&taken).unwrap();
        fs::write(
            taken.join("config"),
            "lxc.net.0.ipv4.address = 10.213.37.100/24\n",
        )
        .unwrap();
        let backend = LxcBackend {
            config: LxcConfig {
                lxc_path: folder.clone(),
                ..LxcConfig::default()
            },
        };
        let cases = [
            (
                "name=eth0,bridge=vmbr0,ip=10.213.37.150/24",
                "10.213.37.150",
            ),
            ("name=eth0,bridge=vmbr0,ip=dhcp", "10.213.37.101"),
            ("name=eth0,bridge=vmbr0,ip=192.168.1.5/24", "10.213.37.101"),
            (
                "name=eth0,bridge=vmbr0,ip=10.213.37.100/24",
                "10.213.37.101",
            ),
            ("name=eth0,bridge=vmbr0,ip=10.213.37.1/24", "10.213.37.101"),
        ];
        for (net, expected) in cases {
            let picked = backend
                .pick_address(&keys(&[("net0", net)]))
                .unwrap()
                .to_string();
            assert_eq!(picked, expected, "{net}");
        }
        fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn an_unprivileged_clone_is_read_from_its_configuration() {
        let unprivileged = "lxc.rootfs.path = overlay:/var/lib/lxc/base-u/rootfs:/var/lib/lxc/c/overlay/delta\n\
                            lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 200000 65536\n";
        assert_eq!(mapped_root(unprivileged), Some((100000, 200000)));
        assert_eq!(
            lower_root(unprivileged),
            Some(PathBuf::from("/var/lib/lxc/base-u/rootfs"))
        );
        assert_eq!(
            writable_root(unprivileged),
            Some(PathBuf::from("/var/lib/lxc/c/overlay/delta"))
        );
        let privileged = "lxc.rootfs.path = dir:/var/lib/lxc/c/rootfs\n";
        assert_eq!(mapped_root(privileged), None);
        assert_eq!(lower_root(privileged), None);
        // A map that does not start at root inside maps no root.
        assert_eq!(
            mapped_root("lxc.idmap = u 1 100000 10\nlxc.idmap = g 1 100000 10\n"),
            None
        );
    }
}
