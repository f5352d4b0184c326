//! The simulated cluster as plain data: nodes, storages, containers and tasks, with the
//! synchronous checks and the task effects of each operation. No IO; the clock is passed in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::lxc;
use crate::schema::{self, Errors, Kind, parse_boolean, parse_disk_size};
use crate::upid::Upid;

/// An error answer of the API, shaped like Proxmox's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 400 with per-parameter messages.
    #[error("Parameter verification failed.")]
    Parameters(Errors),
    /// 500 with the handler's message.
    #[error("{0}")]
    Failed(String),
    /// 403 with the permission message.
    #[error("{0}")]
    Forbidden(String),
    /// Any other status with its reason phrase and an empty body (401, 501, 595, 596...).
    #[error("{1}")]
    Status(u16, String),
}

impl ApiError {
    /// A 400 for one parameter.
    pub fn parameter(name: &str, message: impl Into<String>) -> ApiError {
        ApiError::Parameters(BTreeMap::from([(name.to_string(), message.into())]))
    }

    /// A 500 with a message.
    pub fn failed(message: impl Into<String>) -> ApiError {
        ApiError::Failed(message.into())
    }
}

/// A node of the simulated cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    /// The node name (`pve1`...).
    pub name: String,
    /// Whether the node answers (a fault may take it offline).
    pub online: bool,
    /// CPU threads.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory: u64,
    /// Root file system size in bytes.
    pub rootfs: u64,
}

/// One volume on a storage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Volume {
    /// `STORAGE:NAME` or `STORAGE:vztmpl/NAME`.
    pub volid: String,
    /// Content type (`vztmpl`, `rootdir`, `images`, `backup`...).
    pub content: String,
    /// Format (`tzst`, `raw`, `subvol`...).
    pub format: String,
    /// Size in bytes.
    pub size: u64,
    /// Creation time.
    pub ctime: i64,
    /// The owning guest, for guest volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
}

/// A storage definition with its volumes per node (local storages) or on the cluster (shared).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Storage {
    /// Storage id (`local`, `local-lvm`).
    pub id: String,
    /// Plugin type (`dir`, `lvmthin`).
    pub kind: String,
    /// Allowed content types.
    pub content: Vec<String>,
    /// Whether all nodes see the same volumes.
    pub shared: bool,
    /// Size in bytes.
    pub total: u64,
    /// Volumes keyed by node name.
    pub volumes: BTreeMap<String, Vec<Volume>>,
}

impl Storage {
    fn used(&self, node: &str) -> u64 {
        self.volumes
            .get(node)
            .map_or(0, |volumes| volumes.iter().map(|volume| volume.size).sum())
    }
}

/// Whether a guest is a container or a QEMU virtual machine (they share one vmid space).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    /// An LXC container.
    #[default]
    Lxc,
    /// A QEMU virtual machine (simulated: no CPU is emulated).
    Qemu,
}

impl GuestKind {
    /// The word Proxmox uses in messages (`CT`, `VM`).
    pub fn label(self) -> &'static str {
        match self {
            GuestKind::Lxc => "CT",
            GuestKind::Qemu => "VM",
        }
    }

    /// The configuration folder (`lxc`, `qemu-server`).
    pub fn folder(self) -> &'static str {
        match self {
            GuestKind::Lxc => "lxc",
            GuestKind::Qemu => "qemu-server",
        }
    }

    /// The resource type (`lxc`, `qemu`).
    pub fn name(self) -> &'static str {
        match self {
            GuestKind::Lxc => "lxc",
            GuestKind::Qemu => "qemu",
        }
    }
}

/// A container or a virtual machine.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Guest {
    /// The guest id.
    pub vmid: u32,
    /// Container or virtual machine.
    #[serde(default)]
    pub kind: GuestKind,
    /// The node holding its configuration.
    pub node: String,
    /// Configuration keys as stored in the config file.
    pub config: BTreeMap<String, String>,
    /// Whether it runs.
    pub running: bool,
    /// Whether it is frozen (`suspend`); a frozen container still reports `running`.
    pub suspended: bool,
    /// When it was last started.
    pub started_at: Option<i64>,
    /// When it was created.
    pub created_at: i64,
}

impl Guest {
    pub(crate) fn lock(&self) -> Option<&str> {
        self.config.get("lock").map(String::as_str)
    }

    pub(crate) fn memory_bytes(&self) -> u64 {
        self.config
            .get("memory")
            .and_then(|value| {
                let current = value.strip_prefix("current=").unwrap_or(value);
                current.split(',').next()?.parse().ok()
            })
            .unwrap_or(512u64)
            << 20
    }

    fn swap_bytes(&self) -> u64 {
        self.config
            .get("swap")
            .and_then(|value| value.parse().ok())
            .unwrap_or(512u64)
            << 20
    }

    pub(crate) fn cores(&self, node_cpus: u32) -> u32 {
        let number = |key: &str| -> Option<u32> { self.config.get(key)?.parse().ok() };
        match self.kind {
            GuestKind::Lxc => number("cores").unwrap_or(node_cpus),
            GuestKind::Qemu => number("vcpus")
                .unwrap_or(number("cores").unwrap_or(1) * number("sockets").unwrap_or(1)),
        }
    }

    pub(crate) fn disk_bytes(&self) -> u64 {
        if self.kind == GuestKind::Qemu {
            return crate::vm::disk_bytes(&self.config);
        }
        self.config
            .get("rootfs")
            .and_then(|rootfs| lxc::parse("rootfs", rootfs))
            .and_then(|rootfs| rootfs.get("size").and_then(|size| parse_disk_size(size)))
            .unwrap_or(0)
    }
}

/// A task (finished or running).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Task {
    /// The UPID text.
    pub upid: String,
    /// Its parsed parts.
    pub node: String,
    /// Worker pid.
    pub pid: u32,
    /// Worker start ticks.
    pub pstart: u64,
    /// Start time.
    pub starttime: i64,
    /// Task type.
    pub kind: String,
    /// Object id.
    pub id: String,
    /// User (or `user!token`).
    pub user: String,
    /// End time once stopped.
    pub endtime: Option<i64>,
    /// Exit status once stopped (`OK` or the error).
    pub exitstatus: Option<String>,
    /// Log lines (without the final `TASK ...` line until it stopped).
    pub log: Vec<String>,
}

/// The work a task performs; its effect is applied when the task completes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Action {
    /// Create a container with this final configuration.
    Create {
        vmid: u32,
        config: BTreeMap<String, String>,
        volumes: Vec<(String, Volume)>,
        template: String,
        start: bool,
    },
    /// Start.
    Start { vmid: u32 },
    /// Hard stop.
    Stop { vmid: u32 },
    /// Clean shutdown.
    Shutdown { vmid: u32 },
    /// Reboot.
    Reboot { vmid: u32 },
    /// Freeze.
    Suspend { vmid: u32 },
    /// Thaw.
    Resume { vmid: u32 },
    /// Destroy, stopping first when forced.
    Destroy { vmid: u32, purge: bool, force: bool },
    /// Grow a disk to a size in bytes.
    Resize { vmid: u32, disk: String, size: u64 },
    /// Download an appliance template.
    Download {
        storage: String,
        template: String,
        size: u64,
    },
    /// A console session.
    Console { vmid: u32 },
    /// Create a virtual machine with this final configuration.
    VmCreate {
        vmid: u32,
        config: BTreeMap<String, String>,
        volumes: Vec<(String, Volume)>,
        start: bool,
    },
    /// A power action on a virtual machine (`start`, `stop`, `reset`, `shutdown`).
    VmPower {
        vmid: u32,
        action: String,
        skiplock: bool,
    },
    /// Destroy a virtual machine.
    VmDestroy { vmid: u32, purge: bool },
    /// Store an uploaded file; `mismatch` is the checksum error to fail with, if any.
    Upload {
        storage: String,
        content: String,
        filename: String,
        size: u64,
        checksum: Option<String>,
        mismatch: Option<String>,
    },
    /// Apply a node's pending network configuration.
    NetworkApply,
    /// Remove a volume from a storage.
    VolumeDelete { storage: String, volid: String },
}

impl Action {
    /// The Proxmox task type.
    pub fn task_type(&self) -> &'static str {
        match self {
            Action::Create { .. } => "vzcreate",
            Action::Start { .. } => "vzstart",
            Action::Stop { .. } => "vzstop",
            Action::Shutdown { .. } => "vzshutdown",
            Action::Reboot { .. } => "vzreboot",
            Action::Suspend { .. } => "vzsuspend",
            Action::Resume { .. } => "vzresume",
            Action::Destroy { .. } => "vzdestroy",
            Action::Resize { .. } => "resize",
            Action::Download { .. } => "download",
            Action::Console { .. } => "vncproxy",
            Action::VmCreate { .. } => "qmcreate",
            Action::VmPower { action, .. } => match action.as_str() {
                "start" => "qmstart",
                "stop" => "qmstop",
                "reset" => "qmreset",
                _ => "qmshutdown",
            },
            Action::VmDestroy { .. } => "qmdestroy",
            Action::Upload { .. } => "imgcopy",
            Action::NetworkApply => "srvreload",
            Action::VolumeDelete { .. } => "imgdel",
        }
    }

    /// The container the task works on.
    pub fn vmid(&self) -> Option<u32> {
        match self {
            Action::Create { vmid, .. }
            | Action::Start { vmid }
            | Action::Stop { vmid }
            | Action::Shutdown { vmid }
            | Action::Reboot { vmid }
            | Action::Suspend { vmid }
            | Action::Resume { vmid }
            | Action::Destroy { vmid, .. }
            | Action::Resize { vmid, .. }
            | Action::Console { vmid }
            | Action::VmCreate { vmid, .. }
            | Action::VmPower { vmid, .. }
            | Action::VmDestroy { vmid, .. } => Some(*vmid),
            Action::Download { .. }
            | Action::Upload { .. }
            | Action::NetworkApply
            | Action::VolumeDelete { .. } => None,
        }
    }

    /// The task's id field.
    pub fn task_id(&self) -> String {
        match self {
            Action::Download { template, .. } => template.clone(),
            Action::Upload { .. } | Action::VolumeDelete { .. } => String::new(),
            Action::NetworkApply => "networking".into(),
            other => other
                .vmid()
                .map(|vmid| vmid.to_string())
                .unwrap_or_default(),
        }
    }
}

/// The template catalogue offered by `GET /nodes/{node}/aplinfo`: (template, os, version, size).
pub const APPLIANCES: &[(&str, &str, &str, u64)] = &[
    (
        "debian-12-standard_12.7-1_amd64.tar.zst",
        "debian-12",
        "12.7-1",
        126_440_329,
    ),
    (
        "debian-11-standard_11.7-1_amd64.tar.zst",
        "debian-11",
        "11.7-1",
        123_437_302,
    ),
    (
        "ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
        "ubuntu-24.04",
        "24.04-2",
        141_589_318,
    ),
    (
        "ubuntu-22.04-standard_22.04-1_amd64.tar.zst",
        "ubuntu-22.04",
        "22.04-1",
        129_824_858,
    ),
    (
        "alpine-3.21-default_20241217_amd64.tar.xz",
        "alpine-3.21",
        "3.21-0",
        3_130_048,
    ),
    (
        "rockylinux-9-default_20240912_amd64.tar.xz",
        "rockylinux-9",
        "9-0",
        70_219_140,
    ),
];

/// The template every fresh node holds on `local`.
pub const DEFAULT_TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

pub(crate) const GIB: u64 = 1 << 30;

/// Bytes per second a running guest receives; its `netin` counter, `netstat` and RRD agree.
pub const NET_IN_RATE: u64 = 1200;
/// Bytes per second a running guest sends.
pub const NET_OUT_RATE: u64 = 300;

/// The whole simulated cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cluster {
    /// Cluster name (used when there is more than one node).
    pub name: String,
    /// Nodes in order.
    pub nodes: Vec<Node>,
    /// Storages.
    pub storages: Vec<Storage>,
    /// Containers by vmid.
    pub guests: BTreeMap<u32, Guest>,
    /// Tasks in start order.
    pub tasks: Vec<Task>,
    /// Next worker pid.
    pub next_pid: u32,
    /// When the nodes booted.
    pub boot_time: i64,
    /// Next console port offset.
    pub next_console_port: u16,
    /// Network interfaces by node name.
    #[serde(default)]
    pub networks: BTreeMap<String, crate::network::NodeNetwork>,
    /// Users, groups, roles and realms.
    #[serde(default)]
    pub access: crate::access::Access,
}

fn config_text(config: &BTreeMap<String, String>) -> String {
    config
        .iter()
        .map(|(key, value)| format!("{key}: {value}\n"))
        .collect()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The 40-hex-digit digest of a configuration (Proxmox uses SHA-1 of the file; clients treat it as opaque).
pub fn config_digest(config: &BTreeMap<String, String>) -> String {
    hex(&Sha256::digest(config_text(config).as_bytes()))[..40].to_string()
}

pub(crate) fn generated_mac(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    format!(
        "BC:24:11:{:02X}:{:02X}:{:02X}",
        digest[0], digest[1], digest[2]
    )
}

fn os_type_of(template: &str) -> &'static str {
    let name = template.rsplit('/').next().unwrap_or(template);
    for (prefix, os) in [
        ("debian", "debian"),
        ("ubuntu", "ubuntu"),
        ("alpine", "alpine"),
        ("centos", "centos"),
        ("rockylinux", "centos"),
        ("almalinux", "centos"),
        ("fedora", "fedora"),
        ("opensuse", "opensuse"),
        ("archlinux", "archlinux"),
        ("gentoo", "gentoo"),
        ("devuan", "devuan"),
        ("nixos", "nixos"),
    ] {
        if name.starts_with(prefix) {
            return os;
        }
    }
    "unmanaged"
}

pub(crate) fn template_format(name: &str) -> &'static str {
    if name.ends_with(".tar.zst") {
        "tzst"
    } else if name.ends_with(".tar.xz") {
        "txz"
    } else if name.ends_with(".tar.gz") {
        "tgz"
    } else {
        "raw"
    }
}

/// A stable pseudo-random fraction in 0..1 for metric noise.
pub(crate) fn noise(seed: u64) -> f64 {
    let digest = Sha256::digest(seed.to_le_bytes());
    f64::from(u16::from_le_bytes([digest[0], digest[1]])) / 65536.0
}

pub(crate) fn boolean(parameters: &BTreeMap<String, String>, name: &str) -> bool {
    parameters
        .get(name)
        .and_then(|value| parse_boolean(value))
        .unwrap_or(false)
}

fn typed_value(key: &str, value: &str) -> Value {
    let schema = lxc::config_properties();
    match schema::lookup(&schema, key).map(|property| property.kind) {
        Some(Kind::Integer { .. }) => value
            .parse::<i64>()
            .map_or_else(|_| json!(value), |number| json!(number)),
        Some(Kind::Boolean) => json!(i64::from(parse_boolean(value).unwrap_or(false))),
        Some(Kind::Number { .. }) => value
            .parse::<f64>()
            .map_or_else(|_| json!(value), |number| json!(number)),
        _ => json!(value),
    }
}

impl Cluster {
    /// A fresh cluster of `nodes` nodes named `pve1`..`pveN`, each with `local` (templates) and
    /// `local-lvm` (container disks).
    pub fn new(nodes: usize, now: i64) -> Cluster {
        let names: Vec<String> = (1..=nodes.max(1))
            .map(|index| format!("pve{index}"))
            .collect();
        let template = DEFAULT_TEMPLATE.trim_start_matches("local:").to_string();
        let size = APPLIANCES[0].3;
        let local_volumes = names
            .iter()
            .map(|name| {
                let volume = Volume {
                    volid: format!("local:{template}"),
                    content: "vztmpl".into(),
                    format: "tzst".into(),
                    size,
                    ctime: now - 86_400,
                    vmid: None,
                };
                (name.clone(), vec![volume])
            })
            .collect();
        Cluster {
            name: "pvesim".into(),
            nodes: names
                .iter()
                .map(|name| Node {
                    name: name.clone(),
                    online: true,
                    cpus: 16,
                    memory: 64 * GIB,
                    rootfs: 100 * GIB,
                })
                .collect(),
            storages: vec![
                Storage {
                    id: "local".into(),
                    kind: "dir".into(),
                    content: vec!["backup".into(), "iso".into(), "vztmpl".into()],
                    shared: false,
                    total: 100 * GIB,
                    volumes: local_volumes,
                },
                Storage {
                    id: "local-lvm".into(),
                    kind: "lvmthin".into(),
                    content: vec!["images".into(), "rootdir".into()],
                    shared: false,
                    total: 800 * GIB,
                    volumes: names
                        .iter()
                        .map(|name| (name.clone(), Vec::new()))
                        .collect(),
                },
            ],
            guests: BTreeMap::new(),
            tasks: Vec::new(),
            next_pid: 0x0009_E9B0,
            boot_time: now - 3600,
            next_console_port: 0,
            networks: (0..names.len())
                .map(|index| {
                    (
                        names[index].clone(),
                        crate::network::NodeNetwork::fresh(index),
                    )
                })
                .collect(),
            access: crate::access::Access::default(),
        }
    }

    /// The node by name, or Proxmox's error for an unknown node.
    pub fn node(&self, name: &str) -> Result<&Node, ApiError> {
        self.nodes
            .iter()
            .find(|node| node.name == name)
            .ok_or_else(|| ApiError::failed(format!("no such cluster node '{name}'")))
    }

    fn node_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|node| node.name == name)
    }

    /// Marks a node on- or offline.
    pub fn set_node_online(&mut self, name: &str, online: bool) -> bool {
        match self.node_mut(name) {
            Some(node) => {
                node.online = online;
                true
            }
            None => false,
        }
    }

    /// The container on a node, or Proxmox's missing-config error.
    pub fn guest(&self, node: &str, vmid: u32) -> Result<&Guest, ApiError> {
        self.guest_of(GuestKind::Lxc, node, vmid)
    }

    /// The guest of a kind on a node, or Proxmox's missing-config error.
    pub fn guest_of(&self, kind: GuestKind, node: &str, vmid: u32) -> Result<&Guest, ApiError> {
        self.guests
            .get(&vmid)
            .filter(|guest| guest.node == node && guest.kind == kind)
            .ok_or_else(|| {
                ApiError::failed(format!(
                    "Configuration file 'nodes/{node}/{}/{vmid}.conf' does not exist",
                    kind.folder()
                ))
            })
    }

    /// Removes a guest's volumes from every storage (its backups stay), logging each LVM-thin
    /// volume as Proxmox does; containers and VMs are destroyed alike.
    pub(crate) fn remove_volumes_of(&mut self, vmid: u32, log: &mut Vec<String>) {
        for storage in &mut self.storages {
            for volumes in storage.volumes.values_mut() {
                volumes.retain(|volume| {
                    let owned = volume.vmid == Some(vmid) && volume.content != "backup";
                    if owned && storage.kind == "lvmthin" {
                        let short = volume
                            .volid
                            .split_once(':')
                            .map_or(volume.volid.as_str(), |(_, name)| name);
                        log.push(format!(
                            "  Logical volume \"{short}\" successfully removed."
                        ));
                    }
                    !owned
                });
            }
        }
    }

    pub(crate) fn guest_mut(&mut self, vmid: u32) -> Option<&mut Guest> {
        self.guests.get_mut(&vmid)
    }

    pub(crate) fn storage(&self, id: &str) -> Result<&Storage, ApiError> {
        self.storages
            .iter()
            .find(|storage| storage.id == id)
            .ok_or_else(|| ApiError::failed(format!("storage '{id}' does not exist")))
    }

    pub(crate) fn storage_mut(&mut self, id: &str) -> Option<&mut Storage> {
        self.storages.iter_mut().find(|storage| storage.id == id)
    }

    pub(crate) fn volume_exists(&self, node: &str, volid: &str) -> bool {
        let Some((storage, _)) = volid.split_once(':') else {
            return false;
        };
        self.storages
            .iter()
            .filter(|candidate| candidate.id == storage)
            .any(|storage| {
                storage
                    .volumes
                    .get(node)
                    .is_some_and(|volumes| volumes.iter().any(|volume| volume.volid == volid))
            })
    }

    pub(crate) fn next_disk_name(
        &self,
        node: &str,
        storage: &str,
        vmid: u32,
        taken: &[(String, Volume)],
    ) -> String {
        (0..)
            .map(|index| format!("{storage}:vm-{vmid}-disk-{index}"))
            .find(|volid| {
                !self.volume_exists(node, volid)
                    && !taken.iter().any(|(_, volume)| &volume.volid == volid)
            })
            .expect("an unused disk name exists")
    }

    /// Registers a running task and returns its UPID.
    pub fn begin_task(&mut self, node: &str, kind: &str, id: &str, user: &str, now: i64) -> Upid {
        self.next_pid = self.next_pid.wrapping_add(1);
        let pstart = u64::try_from(now - self.boot_time).unwrap_or(0) * 100 + 0x1000_0000;
        let upid = Upid {
            node: node.to_string(),
            pid: self.next_pid,
            pstart,
            starttime: now,
            kind: kind.to_string(),
            id: id.to_string(),
            user: user.to_string(),
        };
        self.tasks.push(Task {
            upid: upid.to_string(),
            node: node.to_string(),
            pid: upid.pid,
            pstart,
            starttime: now,
            kind: kind.to_string(),
            id: id.to_string(),
            user: user.to_string(),
            endtime: None,
            exitstatus: None,
            log: Vec::new(),
        });
        upid
    }

    /// The task with this UPID.
    pub fn task(&self, upid: &str) -> Option<&Task> {
        self.tasks.iter().find(|task| task.upid == upid)
    }

    /// Marks a task stopped with its log and exit status.
    pub fn end_task(&mut self, upid: &str, result: &Result<Vec<String>, String>, now: i64) {
        if let Some(task) = self.tasks.iter_mut().find(|task| task.upid == upid) {
            match result {
                Ok(lines) => {
                    task.log.extend(lines.iter().cloned());
                    task.log.push("TASK OK".into());
                    task.exitstatus = Some("OK".into());
                }
                Err(message) => {
                    let message = message.trim_end_matches('\n');
                    task.log.push(format!("TASK ERROR: {message}"));
                    task.exitstatus = Some(message.to_string());
                }
            }
            task.endtime = Some(now);
        }
    }

    /// Whether a task is still running.
    pub fn task_running(&self, upid: &str) -> bool {
        self.task(upid).is_some_and(|task| task.endtime.is_none())
    }

    /// Sets or clears a guest's config lock; returns false if the guest does not exist.
    pub fn set_lock(&mut self, vmid: u32, lock: Option<&str>) -> bool {
        match self.guest_mut(vmid) {
            Some(guest) => {
                match lock {
                    Some(lock) => guest.config.insert("lock".into(), lock.into()),
                    None => guest.config.remove("lock"),
                };
                true
            }
            None => false,
        }
    }

    fn check_lock(guest: &Guest) -> Result<(), ApiError> {
        match guest.lock() {
            Some(lock) => Err(ApiError::failed(format!("CT is locked ({lock})"))),
            None => Ok(()),
        }
    }

    /// The lowest free vmid, or a check that `wanted` is free.
    pub fn next_id(&self, wanted: Option<u32>) -> Result<String, ApiError> {
        if let Some(vmid) = wanted {
            return if self.guests.contains_key(&vmid) {
                Err(ApiError::parameter(
                    "vmid",
                    format!("VM {vmid} already exists"),
                ))
            } else {
                Ok(vmid.to_string())
            };
        }
        (100..=999_999)
            .find(|vmid| !self.guests.contains_key(vmid))
            .map(|vmid| vmid.to_string())
            .ok_or_else(|| ApiError::failed("unable to get any free VMID in range [100, 999999]"))
    }

    /// Synchronous part of `POST /nodes/{node}/lxc`: checks, reserves the vmid with `lock: create`
    /// and returns the action whose completion writes the real configuration.
    pub fn prepare_create(
        &mut self,
        node: &str,
        parameters: &BTreeMap<String, String>,
        user: &str,
        now: i64,
    ) -> Result<Action, ApiError> {
        let vmid: u32 = parameters["vmid"]
            .parse()
            .map_err(|_| ApiError::parameter("vmid", "invalid vmid"))?;
        self.node(node)?;
        if let Some(existing) = self.guests.get(&vmid) {
            return Err(ApiError::failed(format!(
                "unable to create CT {vmid} - {} {vmid} already exists on node '{}'",
                existing.kind.label(),
                existing.node
            )));
        }
        if boolean(parameters, "restore") {
            return Err(ApiError::failed(format!(
                "unable to restore CT {vmid} - restoring backups is not simulated"
            )));
        }
        let unprivileged = boolean(parameters, "unprivileged");
        if parameters.contains_key("features") && !unprivileged && user != "root@pam" {
            return Err(ApiError::Forbidden(
                "Permission check failed (changing feature flags for privileged container is only allowed for root@pam)".into(),
            ));
        }
        let template = parameters["ostemplate"].clone();
        schema::check_volume_id(&template)
            .map_err(|message| ApiError::failed(message.trim_end().to_string()))?;
        let (template_storage, _) = template.split_once(':').unwrap_or_default();
        self.storage(template_storage)?;
        if !self.volume_exists(node, &template) {
            return Err(ApiError::failed(format!(
                "volume '{template}' does not exist"
            )));
        }
        let default_storage = parameters.get("storage").map_or("local", String::as_str);
        let rootfs_text = parameters
            .get("rootfs")
            .cloned()
            .unwrap_or_else(|| format!("{default_storage}:4"));
        let mut volumes = Vec::new();
        let mut config: BTreeMap<String, String> = BTreeMap::new();
        let skip = [
            "node",
            "vmid",
            "ostemplate",
            "bwlimit",
            "force",
            "ignore-unpack-errors",
            "password",
            "pool",
            "restore",
            "ssh-public-keys",
            "start",
            "storage",
            "unique",
            "debug",
        ];
        for (key, value) in parameters {
            if !skip.contains(&key.as_str()) {
                config.insert(key.clone(), value.clone());
            }
        }
        config.insert("rootfs".into(), rootfs_text);
        let disk_keys: Vec<String> = config
            .keys()
            .filter(|key| {
                *key == "rootfs"
                    || (key.starts_with("mp") && key[2..].bytes().all(|b| b.is_ascii_digit()))
            })
            .cloned()
            .collect();
        for key in disk_keys {
            let format = lxc::format_of(&key).expect("disk keys have formats");
            let mut disk = schema::parse_property_string(&key, format, &config[&key])
                .map_err(|message| ApiError::parameter(&key, message))?;
            let volume = disk["volume"].clone();
            if let Some((storage_id, size)) = volume.split_once(':')
                && let Ok(gib) = size.parse::<f64>()
            {
                let storage = self.storage(storage_id)?;
                if !storage.content.iter().any(|content| content == "rootdir") {
                    return Err(ApiError::failed(format!(
                        "unable to create CT {vmid} - storage '{storage_id}' does not support container directories"
                    )));
                }
                let bytes = (gib * GIB as f64) as u64;
                let volid = self.next_disk_name(node, storage_id, vmid, &volumes);
                let format = "raw";
                volumes.push((
                    storage_id.to_string(),
                    Volume {
                        volid: volid.clone(),
                        content: "rootdir".into(),
                        format: format.into(),
                        size: bytes,
                        ctime: now,
                        vmid: Some(vmid),
                    },
                ));
                disk.insert("volume".into(), volid);
                disk.insert("size".into(), schema::format_disk_size(bytes));
                config.insert(
                    key.clone(),
                    schema::print_property_string(format_of_key(&key), &disk),
                );
            }
        }
        let net_keys: Vec<String> = config
            .keys()
            .filter(|key| key.starts_with("net"))
            .cloned()
            .collect();
        for key in net_keys {
            let mut net = schema::parse_property_string(&key, lxc::NET_FORMAT, &config[&key])
                .map_err(|message| ApiError::parameter(&key, message))?;
            net.entry("hwaddr".into())
                .or_insert_with(|| generated_mac(&format!("{vmid}/{key}/{now}")));
            net.entry("type".into()).or_insert_with(|| "veth".into());
            config.insert(
                key.clone(),
                schema::print_property_string(lxc::NET_FORMAT, &net),
            );
        }
        for key in ["features"] {
            if let Some(value) = config.get(key).cloned() {
                let parsed = schema::parse_property_string(key, lxc::FEATURES_FORMAT, &value)
                    .map_err(|message| ApiError::parameter(key, message))?;
                config.insert(
                    key.into(),
                    schema::print_property_string(lxc::FEATURES_FORMAT, &parsed),
                );
            }
        }
        config
            .entry("arch".into())
            .or_insert_with(|| "amd64".into());
        config
            .entry("hostname".into())
            .or_insert_with(|| format!("CT{vmid}"));
        config
            .entry("memory".into())
            .or_insert_with(|| "512".into());
        config.entry("swap".into()).or_insert_with(|| "512".into());
        config
            .entry("ostype".into())
            .or_insert_with(|| os_type_of(&template).into());
        for key in [
            "onboot",
            "unprivileged",
            "protection",
            "template",
            "console",
            "debug",
        ] {
            if let Some(value) = config.get_mut(key) {
                *value = if parse_boolean(value).unwrap_or(false) {
                    "1".into()
                } else {
                    "0".into()
                };
            }
        }
        self.guests.insert(
            vmid,
            Guest {
                vmid,
                kind: GuestKind::Lxc,
                node: node.to_string(),
                config: BTreeMap::from([("lock".to_string(), "create".to_string())]),
                running: false,
                suspended: false,
                started_at: None,
                created_at: now,
            },
        );
        Ok(Action::Create {
            vmid,
            config,
            volumes,
            template,
            start: boolean(parameters, "start"),
        })
    }

    /// Synchronous checks of a power action (`start`, `stop`, ...).
    pub fn prepare_power(
        &self,
        node: &str,
        vmid: u32,
        action: &str,
        parameters: &BTreeMap<String, String>,
    ) -> Result<Action, ApiError> {
        self.node(node)?;
        let guest = self.guest(node, vmid)?;
        let skiplock = boolean(parameters, "skiplock");
        match action {
            "start" => {
                if !skiplock {
                    Self::check_lock(guest)?;
                }
                if guest.running {
                    return Err(ApiError::failed(format!("CT {vmid} already running")));
                }
                Ok(Action::Start { vmid })
            }
            "stop" => {
                if !guest.running {
                    return Err(ApiError::failed(format!("CT {vmid} not running")));
                }
                if !skiplock {
                    Self::check_lock(guest)?;
                }
                Ok(Action::Stop { vmid })
            }
            "shutdown" => {
                if !guest.running {
                    return Err(ApiError::failed(format!("CT {vmid} not running")));
                }
                Self::check_lock(guest)?;
                Ok(Action::Shutdown { vmid })
            }
            "reboot" => {
                if !guest.running {
                    return Err(ApiError::failed(format!("VM {vmid} not running")));
                }
                Self::check_lock(guest)?;
                Ok(Action::Reboot { vmid })
            }
            "suspend" => {
                if !guest.running {
                    return Err(ApiError::failed(format!("CT {vmid} not running")));
                }
                Self::check_lock(guest)?;
                Ok(Action::Suspend { vmid })
            }
            "resume" => {
                if !guest.running {
                    return Err(ApiError::failed(format!("CT {vmid} not running")));
                }
                Ok(Action::Resume { vmid })
            }
            other => Err(ApiError::Status(501, format!("unknown action '{other}'"))),
        }
    }

    /// Synchronous checks of `DELETE /nodes/{node}/lxc/{vmid}`.
    pub fn prepare_destroy(
        &self,
        node: &str,
        vmid: u32,
        parameters: &BTreeMap<String, String>,
    ) -> Result<Action, ApiError> {
        self.node(node)?;
        let guest = self.guest(node, vmid)?;
        Self::check_lock(guest)?;
        if guest
            .config
            .get("protection")
            .is_some_and(|value| value == "1")
        {
            return Err(ApiError::failed(format!(
                "can't remove CT {vmid} - protection mode enabled"
            )));
        }
        let force = boolean(parameters, "force");
        if guest.running && !force {
            return Err(ApiError::failed(format!(
                "unable to destroy CT {vmid} - container is running"
            )));
        }
        Ok(Action::Destroy {
            vmid,
            purge: boolean(parameters, "purge"),
            force,
        })
    }

    /// Synchronous checks of `PUT .../resize`; `None` when the size does not change.
    pub fn prepare_resize(
        &self,
        node: &str,
        vmid: u32,
        parameters: &BTreeMap<String, String>,
    ) -> Result<Option<Action>, ApiError> {
        self.node(node)?;
        let guest = self.guest(node, vmid)?;
        Self::check_lock(guest)?;
        if let Some(digest) = parameters.get("digest")
            && *digest != config_digest(&guest.config)
        {
            return Err(ApiError::failed(
                "detected modified configuration - file changed by other user? Try again.",
            ));
        }
        let disk = parameters["disk"].clone();
        let Some(value) = guest.config.get(&disk) else {
            return Err(ApiError::failed(format!("no such disk '{disk}'")));
        };
        let parsed = lxc::parse(&disk, value).unwrap_or_default();
        let current = parsed
            .get("size")
            .and_then(|size| parse_disk_size(size))
            .unwrap_or(0);
        let text = parameters["size"].as_str();
        let (grow, amount) = match text.strip_prefix('+') {
            Some(amount) => (true, amount),
            None => (false, text),
        };
        let amount = parse_disk_size(amount)
            .ok_or_else(|| ApiError::parameter("size", "unable to parse size"))?;
        let target = if grow { current + amount } else { amount };
        if target < current {
            return Err(ApiError::failed("unable to shrink disk size"));
        }
        if target == current {
            return Ok(None);
        }
        Ok(Some(Action::Resize {
            vmid,
            disk,
            size: target,
        }))
    }

    /// `PUT .../config`: checks and applies a configuration change synchronously.
    pub fn update_config(
        &mut self,
        node: &str,
        vmid: u32,
        parameters: &BTreeMap<String, String>,
        user: &str,
        now: i64,
    ) -> Result<(), ApiError> {
        self.node(node)?;
        let guest = self.guest(node, vmid)?.clone();
        if let Some(digest) = parameters.get("digest")
            && *digest != config_digest(&guest.config)
        {
            return Err(ApiError::failed(
                "detected modified configuration - file changed by other user? Try again.",
            ));
        }
        let deletes: Vec<String> = parameters
            .get("delete")
            .map(|list| {
                list.split([',', ';', ' '])
                    .filter(|item| !item.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        let only_lock_removal = deletes == ["lock"]
            && parameters
                .keys()
                .all(|key| ["node", "vmid", "delete", "digest"].contains(&key.as_str()));
        if !only_lock_removal {
            Self::check_lock(&guest)?;
        }
        let unprivileged = guest
            .config
            .get("unprivileged")
            .is_some_and(|value| value == "1");
        let touches_features =
            parameters.contains_key("features") || deletes.iter().any(|key| key == "features");
        if touches_features && !unprivileged && user != "root@pam" {
            return Err(ApiError::Forbidden(
                "Permission check failed (changing feature flags for privileged container is only allowed for root@pam)".into(),
            ));
        }
        let mut errors = Errors::new();
        for key in &deletes {
            if parameters.contains_key(key) {
                errors.insert(
                    key.clone(),
                    format!("unable to delete parameter '{key}' - parameter is also set"),
                );
            }
            if key == "rootfs" {
                errors.insert(
                    key.clone(),
                    "unable to delete required option 'rootfs'".into(),
                );
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::Parameters(errors));
        }
        let skip = ["node", "vmid", "delete", "digest", "revert"];
        let mut config = guest.config.clone();
        let mut new_volumes = Vec::new();
        for (key, value) in parameters
            .iter()
            .filter(|(key, _)| !skip.contains(&key.as_str()))
        {
            let mut value = value.clone();
            if let Some(format) = lxc::format_of(key) {
                let mut parsed = schema::parse_property_string(key, format, &value)
                    .map_err(|message| ApiError::parameter(key, message))?;
                if key.starts_with("net") {
                    let old_mac = config
                        .get(key)
                        .and_then(|old| lxc::parse(key, old))
                        .and_then(|old| old.get("hwaddr").cloned());
                    let mac =
                        old_mac.unwrap_or_else(|| generated_mac(&format!("{vmid}/{key}/{now}")));
                    parsed.entry("hwaddr".into()).or_insert(mac);
                    parsed.entry("type".into()).or_insert_with(|| "veth".into());
                }
                if key == "rootfs" {
                    let old = config
                        .get("rootfs")
                        .and_then(|old| lxc::parse("rootfs", old))
                        .unwrap_or_default();
                    if old.get("volume") != parsed.get("volume") {
                        return Err(ApiError::failed(
                            "unable to modify read-only option: 'rootfs'",
                        ));
                    }
                    if let Some(size) = old.get("size") {
                        parsed.insert("size".into(), size.clone());
                    }
                }
                if key.starts_with("mp") {
                    let volume = parsed["volume"].clone();
                    if let Some((storage_id, size)) = volume.split_once(':')
                        && let Ok(gib) = size.parse::<f64>()
                    {
                        self.storage(storage_id)?;
                        let bytes = (gib * GIB as f64) as u64;
                        let volid = self.next_disk_name(node, storage_id, vmid, &new_volumes);
                        new_volumes.push((
                            storage_id.to_string(),
                            Volume {
                                volid: volid.clone(),
                                content: "rootdir".into(),
                                format: "raw".into(),
                                size: bytes,
                                ctime: now,
                                vmid: Some(vmid),
                            },
                        ));
                        parsed.insert("volume".into(), volid);
                        parsed.insert("size".into(), schema::format_disk_size(bytes));
                    }
                }
                value = schema::print_property_string(format, &parsed);
            } else if let Some(flag) = parse_boolean(&value).filter(|_| {
                matches!(
                    schema::lookup(&lxc::config_properties(), key).map(|p| p.kind),
                    Some(Kind::Boolean)
                )
            }) {
                value = if flag { "1".into() } else { "0".into() };
            }
            config.insert(key.clone(), value);
        }
        for key in &deletes {
            if key.starts_with("mp")
                && let Some(old) = config.get(key).and_then(|old| lxc::parse(key, old))
                && let Some(volume) = old.get("volume").filter(|volume| !volume.starts_with('/'))
            {
                let index = (0..lxc::MAX_MOUNT_POINTS)
                    .find(|index| !config.contains_key(&format!("unused{index}")))
                    .unwrap_or(0);
                config.insert(format!("unused{index}"), volume.clone());
            }
            config.remove(key);
        }
        for (storage_id, volume) in new_volumes {
            if let Some(storage) = self.storage_mut(&storage_id) {
                storage
                    .volumes
                    .entry(node.to_string())
                    .or_default()
                    .push(volume);
            }
        }
        if let Some(guest) = self.guest_mut(vmid) {
            guest.config = config;
        }
        Ok(())
    }

    /// Synchronous checks of `POST /nodes/{node}/aplinfo`.
    pub fn prepare_download(
        &self,
        node: &str,
        storage: &str,
        template: &str,
    ) -> Result<Action, ApiError> {
        self.node(node)?;
        let target = self.storage(storage)?;
        if !target.content.iter().any(|content| content == "vztmpl") {
            return Err(ApiError::failed(format!(
                "storage '{storage}' does not support templates"
            )));
        }
        let Some((_, _, _, size)) = APPLIANCES.iter().find(|(name, ..)| *name == template) else {
            return Err(ApiError::failed(format!("no such template '{template}'")));
        };
        Ok(Action::Download {
            storage: storage.to_string(),
            template: template.to_string(),
            size: *size,
        })
    }

    /// Checks that a queued action can still run right before its effect (state may have changed
    /// while it waited for the config lock).
    pub fn recheck(&self, node: &str, action: &Action) -> Result<(), String> {
        let guest = action.vmid().and_then(|vmid| self.guests.get(&vmid));
        match (action, guest) {
            (
                Action::Create { .. }
                | Action::Download { .. }
                | Action::Upload { .. }
                | Action::NetworkApply
                | Action::VolumeDelete { .. }
                | Action::VmCreate { .. },
                _,
            ) => Ok(()),
            (Action::VmPower { .. } | Action::VmDestroy { .. }, _) => {
                crate::vm::recheck(node, action, guest)
            }
            (_, None) => Err(format!(
                "Configuration file 'nodes/{node}/lxc/{}.conf' does not exist",
                action.vmid().unwrap_or_default()
            )),
            (Action::Start { vmid }, Some(guest)) if guest.running => {
                Err(format!("CT {vmid} already running"))
            }
            (
                Action::Stop { vmid }
                | Action::Shutdown { vmid }
                | Action::Suspend { vmid }
                | Action::Resume { vmid },
                Some(guest),
            ) if !guest.running => Err(format!("CT {vmid} not running")),
            (Action::Reboot { vmid }, Some(guest)) if !guest.running => {
                Err(format!("VM {vmid} not running"))
            }
            (
                Action::Destroy {
                    vmid, force: false, ..
                },
                Some(guest),
            ) if guest.running => Err(format!(
                "unable to destroy CT {vmid} - container is running"
            )),
            _ => Ok(()),
        }
    }

    /// Applies a finished task's effect and returns its log lines.
    pub fn complete(
        &mut self,
        node: &str,
        action: &Action,
        now: i64,
    ) -> Result<Vec<String>, String> {
        self.recheck(node, action)?;
        let mut log = Vec::new();
        match action {
            Action::Create {
                vmid,
                config,
                volumes,
                template,
                start,
            } => {
                let name = template.rsplit('/').next().unwrap_or(template);
                for (storage_id, volume) in volumes {
                    if let Some(storage) = self.storage_mut(storage_id) {
                        if storage.kind == "lvmthin" {
                            let short = volume
                                .volid
                                .split_once(':')
                                .map_or(volume.volid.as_str(), |(_, name)| name);
                            log.push(format!("  Logical volume \"{short}\" created."));
                        }
                        storage
                            .volumes
                            .entry(node.to_string())
                            .or_default()
                            .push(volume.clone());
                    }
                }
                let size = APPLIANCES
                    .iter()
                    .find(|(candidate, ..)| *candidate == name)
                    .map_or(126_440_329, |entry| entry.3);
                log.push(format!(
                    "extracting archive '/var/lib/vz/template/cache/{name}'"
                ));
                log.push(format!(
                    "Total bytes read: {} ({} MiB, 1 MiB/s)",
                    size * 4,
                    (size * 4) >> 20
                ));
                log.push(format!(
                    "Detected container architecture: {}",
                    config.get("arch").map_or("amd64", String::as_str)
                ));
                for key in ["rsa", "ecdsa", "ed25519"] {
                    log.push(format!(
                        "Creating SSH host key 'ssh_host_{key}_key' - this may take some time ..."
                    ));
                    log.push(format!(
                        "done: SHA256:{} root@{}",
                        &config_digest(config)[..32],
                        config.get("hostname").map_or("localhost", String::as_str)
                    ));
                }
                if let Some(guest) = self.guest_mut(*vmid) {
                    guest.config = config.clone();
                    if *start {
                        guest.running = true;
                        guest.started_at = Some(now);
                    }
                }
            }
            Action::Start { vmid } | Action::Reboot { vmid } => {
                if let Some(guest) = self.guest_mut(*vmid) {
                    guest.running = true;
                    guest.suspended = false;
                    guest.started_at = Some(now);
                }
            }
            Action::Stop { vmid } | Action::Shutdown { vmid } => {
                if let Some(guest) = self.guest_mut(*vmid) {
                    guest.running = false;
                    guest.suspended = false;
                    guest.started_at = None;
                }
            }
            Action::Suspend { vmid } => {
                if let Some(guest) = self.guest_mut(*vmid) {
                    guest.suspended = true;
                }
            }
            Action::Resume { vmid } => {
                if let Some(guest) = self.guest_mut(*vmid) {
                    guest.suspended = false;
                }
            }
            Action::Destroy { vmid, purge, .. } => {
                self.remove_volumes_of(*vmid, &mut log);
                if *purge {
                    log.push(format!("purging CT {vmid} from related configurations.."));
                }
                self.guests.remove(vmid);
            }
            Action::Resize { vmid, disk, size } => {
                let Some(guest) = self.guest_mut(*vmid) else {
                    return Err("guest vanished".into());
                };
                let Some(mut parsed) = guest
                    .config
                    .get(disk)
                    .and_then(|value| lxc::parse(disk, value))
                else {
                    return Err(format!("no such disk '{disk}'"));
                };
                parsed.insert("size".into(), schema::format_disk_size(*size));
                let volid = parsed["volume"].clone();
                guest.config.insert(
                    disk.clone(),
                    schema::print_property_string(format_of_key(disk), &parsed),
                );
                for storage in &mut self.storages {
                    for volume in storage.volumes.values_mut().flatten() {
                        if volume.volid == volid {
                            volume.size = *size;
                        }
                    }
                }
                log.push(format!(
                    "  Size of logical volume pve/{} changed.",
                    volid
                        .split_once(':')
                        .map_or(volid.as_str(), |(_, name)| name)
                ));
                log.push("  Logical volume resized.".into());
            }
            Action::Download {
                storage,
                template,
                size,
            } => {
                let volid = format!("{storage}:vztmpl/{template}");
                let url = format!("http://download.proxmox.com/images/system/{template}");
                log.push(format!(
                    "downloading {url} to /var/lib/vz/template/cache/{template}"
                ));
                if self.volume_exists(node, &volid) {
                    log.push(format!("file '/var/lib/vz/template/cache/{template}' already exists - no need to download"));
                } else {
                    log.push(format!(
                        "download of '{url}' to '/var/lib/vz/template/cache/{template}' finished"
                    ));
                    if let Some(target) = self.storage_mut(storage) {
                        target
                            .volumes
                            .entry(node.to_string())
                            .or_default()
                            .push(Volume {
                                volid,
                                content: "vztmpl".into(),
                                format: template_format(template).into(),
                                size: *size,
                                ctime: now,
                                vmid: None,
                            });
                    }
                }
            }
            Action::Console { .. } => {}
            Action::VmCreate { .. } | Action::VmPower { .. } | Action::VmDestroy { .. } => {
                log.extend(self.complete_vm(node, action, now)?);
            }
            Action::Upload {
                storage,
                content,
                filename,
                size,
                checksum,
                mismatch,
            } => {
                log.extend(self.complete_upload(
                    node,
                    (storage, content, filename),
                    *size,
                    checksum.as_deref(),
                    mismatch.as_deref(),
                    now,
                )?);
            }
            Action::VolumeDelete { storage, volid } => {
                if let Some(target) = self.storage_mut(storage)
                    && let Some(volumes) = target.volumes.get_mut(node)
                {
                    volumes.retain(|volume| volume.volid != *volid);
                }
                log.push(format!("removed volume '{volid}'"));
            }
            Action::NetworkApply => {
                let network = self.networks.entry(node.to_string()).or_default();
                log.extend(network.apply());
            }
        }
        Ok(log)
    }

    /// Undoes a failed or cancelled task's reservations (a failed create removes the container).
    pub fn abort(&mut self, action: &Action) {
        if let Action::Create { vmid, .. } | Action::VmCreate { vmid, .. } = action
            && self
                .guests
                .get(vmid)
                .is_some_and(|guest| guest.lock() == Some("create"))
        {
            self.guests.remove(vmid);
        }
    }

    // ----- read views -----

    /// `GET .../config`.
    pub fn config_view(&self, node: &str, vmid: u32) -> Result<Value, ApiError> {
        let guest = self.guest(node, vmid)?;
        let mut object = serde_json::Map::new();
        for (key, value) in &guest.config {
            object.insert(key.clone(), typed_value(key, value));
        }
        object.insert("digest".into(), json!(config_digest(&guest.config)));
        Ok(Value::Object(object))
    }

    pub(crate) fn guest_metrics(&self, guest: &Guest, now: i64) -> serde_json::Map<String, Value> {
        let node_cpus = self.node(&guest.node).map_or(16, |node| node.cpus);
        let maxmem = guest.memory_bytes();
        let maxdisk = guest.disk_bytes();
        let uptime = guest
            .started_at
            .filter(|_| guest.running)
            .map_or(0, |started| (now - started).max(0));
        let running = guest.running;
        let seed = u64::from(guest.vmid) ^ (now as u64 / 10);
        let mut object = serde_json::Map::new();
        object.insert("vmid".into(), json!(guest.vmid));
        object.insert(
            "status".into(),
            json!(if running { "running" } else { "stopped" }),
        );
        if let Some(name) = guest.config.get(if guest.kind == GuestKind::Qemu {
            "name"
        } else {
            "hostname"
        }) {
            object.insert("name".into(), json!(name));
        }
        object.insert("type".into(), json!(guest.kind.name()));
        object.insert("cpus".into(), json!(guest.cores(node_cpus)));
        object.insert("maxmem".into(), json!(maxmem));
        object.insert("maxswap".into(), json!(guest.swap_bytes()));
        object.insert("maxdisk".into(), json!(maxdisk));
        let busy = if running && !guest.suspended {
            1.0
        } else {
            0.0
        };
        object.insert("cpu".into(), json!(busy * (0.002 + noise(seed) * 0.03)));
        object.insert(
            "mem".into(),
            json!(if running {
                (maxmem / 8).min(48 << 20) + (noise(seed + 1) * 8_000_000.0) as u64
            } else {
                0
            }),
        );
        object.insert("swap".into(), json!(0));
        object.insert(
            "disk".into(),
            json!(if maxdisk > 0 { maxdisk / 4 } else { 0 }),
        );
        let uptime_u = u64::try_from(uptime).unwrap_or(0);
        object.insert("netin".into(), json!(uptime_u * NET_IN_RATE));
        object.insert("netout".into(), json!(uptime_u * NET_OUT_RATE));
        object.insert(
            "diskread".into(),
            json!(if running {
                60_000_000 + uptime_u * 100
            } else {
                0
            }),
        );
        object.insert(
            "diskwrite".into(),
            json!(if running {
                4_000_000 + uptime_u * 50
            } else {
                0
            }),
        );
        object.insert("uptime".into(), json!(uptime));
        if let Some(lock) = guest.lock() {
            object.insert("lock".into(), json!(lock));
        }
        if let Some(tags) = guest.config.get("tags") {
            object.insert("tags".into(), json!(tags));
        }
        if guest
            .config
            .get("template")
            .is_some_and(|value| value == "1")
        {
            object.insert("template".into(), json!(1));
        }
        object
    }

    /// `GET .../status/current`.
    pub fn status_view(&self, node: &str, vmid: u32, now: i64) -> Result<Value, ApiError> {
        let guest = self.guest(node, vmid)?;
        let mut object = self.guest_metrics(guest, now);
        object.insert("ha".into(), json!({"managed": 0}));
        Ok(Value::Object(object))
    }

    /// `GET /nodes/{node}/lxc`.
    pub fn guest_list(&self, node: &str, now: i64) -> Result<Value, ApiError> {
        self.node(node)?;
        let list: Vec<Value> = self
            .guests
            .values()
            .filter(|guest| guest.node == node && guest.kind == GuestKind::Lxc)
            .map(|guest| Value::Object(self.guest_metrics(guest, now)))
            .collect();
        Ok(Value::Array(list))
    }

    fn node_usage(&self, node: &Node) -> (f64, u64) {
        let running: Vec<&Guest> = self
            .guests
            .values()
            .filter(|guest| guest.node == node.name && guest.running)
            .collect();
        let memory = 2 * GIB
            + running
                .iter()
                .map(|guest| (guest.memory_bytes() / 8).min(48 << 20))
                .sum::<u64>();
        let cpu = 0.01 + 0.002 * running.len() as f64;
        (cpu.min(1.0), memory.min(node.memory))
    }

    /// `GET /nodes`.
    pub fn node_list(&self, fingerprint: Option<&str>, now: i64) -> Value {
        let list: Vec<Value> = self
            .nodes
            .iter()
            .map(|node| {
                let mut object = json!({
                    "node": node.name,
                    "id": format!("node/{}", node.name),
                    "type": "node",
                    "status": if node.online { "online" } else { "offline" },
                });
                if node.online {
                    let (cpu, mem) = self.node_usage(node);
                    let extra = json!({
                        "cpu": cpu, "maxcpu": node.cpus, "mem": mem, "maxmem": node.memory,
                        "disk": 4 * GIB, "maxdisk": node.rootfs, "uptime": now - self.boot_time, "level": "",
                    });
                    if let (Some(target), Some(extra)) = (object.as_object_mut(), extra.as_object()) {
                        target.extend(extra.clone());
                    }
                }
                if let (Some(fingerprint), Some(target)) = (fingerprint, object.as_object_mut()) {
                    target.insert("ssl_fingerprint".into(), json!(fingerprint));
                }
                object
            })
            .collect();
        Value::Array(list)
    }

    /// `GET /nodes/{node}/status`.
    pub fn node_status(&self, name: &str, now: i64) -> Result<Value, ApiError> {
        let node = self.node(name)?;
        let (cpu, mem) = self.node_usage(node);
        let load = format!("{:.2}", cpu * f64::from(node.cpus));
        Ok(json!({
            "cpu": cpu,
            "wait": 0.0005,
            "uptime": now - self.boot_time,
            "idle": 0,
            "loadavg": [load.clone(), load.clone(), load],
            "kversion": "Linux 6.8.12-9-pve #1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9 (2025-03-16T19:18Z)",
            "pveversion": "pve-manager/8.4.1/2a5fa54a8503f96d",
            "cpuinfo": {"cores": node.cpus / 2, "cpus": node.cpus, "sockets": 1, "model": "Simulated CPU @ 3.00GHz", "mhz": "3000.000", "hvm": "1", "flags": "", "user_hz": 100},
            "memory": {"total": node.memory, "used": mem, "free": node.memory - mem},
            "swap": {"total": 8 * GIB, "used": 0, "free": 8 * GIB},
            "rootfs": {"total": node.rootfs, "used": 4 * GIB, "avail": node.rootfs - 4 * GIB, "free": node.rootfs - 4 * GIB},
            "ksm": {"shared": 0},
            "boot-info": {"mode": "efi", "secureboot": 0},
            "current-kernel": {"sysname": "Linux", "release": "6.8.12-9-pve", "machine": "x86_64", "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.8.12-9 (2025-03-16T19:18Z)"},
        }))
    }

    /// `GET /nodes/{node}/storage`.
    pub fn storage_list(
        &self,
        node: &str,
        content: Option<&str>,
        storage: Option<&str>,
    ) -> Result<Value, ApiError> {
        self.node(node)?;
        let wanted: Vec<&str> = content
            .map(|list| {
                list.split([',', ';', ' '])
                    .filter(|item| !item.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let list: Vec<Value> = self
            .storages
            .iter()
            .filter(|candidate| storage.is_none_or(|id| id == candidate.id))
            .filter(|candidate| wanted.is_empty() || wanted.iter().any(|item| candidate.content.iter().any(|content| content == item)))
            .map(|candidate| {
                let used = candidate.used(node);
                json!({
                    "storage": candidate.id,
                    "type": candidate.kind,
                    "content": candidate.content.join(","),
                    "active": 1, "enabled": 1, "shared": i64::from(candidate.shared),
                    "total": candidate.total, "used": used, "avail": candidate.total.saturating_sub(used),
                    "used_fraction": used as f64 / candidate.total as f64,
                })
            })
            .collect();
        Ok(Value::Array(list))
    }

    /// `GET /nodes/{node}/storage/{storage}/content`.
    pub fn storage_content(
        &self,
        node: &str,
        storage: &str,
        content: Option<&str>,
        vmid: Option<u32>,
    ) -> Result<Value, ApiError> {
        self.node(node)?;
        let target = self.storage(storage)?;
        let list: Vec<Value> = target
            .volumes
            .get(node)
            .into_iter()
            .flatten()
            .filter(|volume| content.is_none_or(|content| content == volume.content))
            .filter(|volume| vmid.is_none_or(|vmid| volume.vmid == Some(vmid)))
            .map(|volume| {
                let mut object = json!({
                    "volid": volume.volid, "content": volume.content, "format": volume.format,
                    "size": volume.size, "ctime": volume.ctime,
                });
                if let (Some(vmid), Some(target)) = (volume.vmid, object.as_object_mut()) {
                    target.insert("vmid".into(), json!(vmid));
                    target.insert("used".into(), json!(volume.size / 4));
                }
                object
            })
            .collect();
        Ok(Value::Array(list))
    }

    /// `GET /nodes/{node}/aplinfo`.
    pub fn appliance_list(&self, node: &str) -> Result<Value, ApiError> {
        self.node(node)?;
        let list: Vec<Value> = APPLIANCES
            .iter()
            .map(|(template, os, version, _)| {
                let package = template.split('_').next().unwrap_or(template);
                json!({
                    "template": template, "package": package, "version": version, "os": os,
                    "section": "system", "type": "lxc", "headline": format!("{os} (standard)"),
                    "description": format!("A small {os} system for containers."),
                    "location": format!("http://download.proxmox.com/images/system/{template}"),
                    "infopage": "https://pve.proxmox.com/wiki/Linux_Container#pct_supported_distributions",
                    "maintainer": "Proxmox Support Team <support@proxmox.com>",
                    "architecture": "amd64",
                    "sha512sum": hex(&Sha256::digest(template.as_bytes())).repeat(2),
                    "source": "http://download.proxmox.com/images",
                })
            })
            .collect();
        Ok(Value::Array(list))
    }

    /// `GET /cluster/resources`.
    pub fn resources(&self, kind: Option<&str>, now: i64) -> Value {
        let mut list = Vec::new();
        if kind.is_none_or(|kind| kind == "node") {
            for node in &self.nodes {
                let (cpu, mem) = self.node_usage(node);
                let mut entry = json!({"id": format!("node/{}", node.name), "type": "node", "node": node.name,
                    "status": if node.online { "online" } else { "offline" }, "level": "", "cgroup-mode": 2,
                    "maxcpu": node.cpus, "maxmem": node.memory, "maxdisk": node.rootfs});
                if node.online
                    && let Some(object) = entry.as_object_mut()
                {
                    object.insert("cpu".into(), json!(cpu));
                    object.insert("mem".into(), json!(mem));
                    object.insert("disk".into(), json!(4 * GIB));
                    object.insert("uptime".into(), json!(now - self.boot_time));
                }
                list.push(entry);
            }
        }
        if kind.is_none_or(|kind| kind == "vm") {
            for guest in self.guests.values() {
                let mut object = self.guest_metrics(guest, now);
                object.insert(
                    "id".into(),
                    json!(format!("{}/{}", guest.kind.name(), guest.vmid)),
                );
                object.insert("node".into(), json!(guest.node));
                object.insert(
                    "maxcpu".into(),
                    object.get("cpus").cloned().unwrap_or(json!(1)),
                );
                object.remove("cpus");
                object.remove("maxswap");
                object.remove("swap");
                object.insert(
                    "template".into(),
                    json!(i64::from(
                        guest
                            .config
                            .get("template")
                            .is_some_and(|value| value == "1")
                    )),
                );
                list.push(Value::Object(object));
            }
        }
        if kind.is_none_or(|kind| kind == "storage") {
            for node in &self.nodes {
                for storage in &self.storages {
                    let used = storage.used(&node.name);
                    list.push(json!({"id": format!("storage/{}/{}", node.name, storage.id), "type": "storage",
                        "storage": storage.id, "node": node.name, "status": if node.online { "available" } else { "unknown" },
                        "content": storage.content.join(","), "plugintype": storage.kind, "shared": i64::from(storage.shared),
                        "disk": used, "maxdisk": storage.total}));
                }
            }
        }
        Value::Array(list)
    }

    /// `GET /cluster/status`.
    pub fn cluster_status(&self) -> Value {
        let mut list = Vec::new();
        if self.nodes.len() > 1 {
            list.push(json!({"type": "cluster", "id": "cluster", "name": self.name, "nodes": self.nodes.len(),
                "quorate": 1, "version": self.nodes.len() + 1}));
        }
        for (index, node) in self.nodes.iter().enumerate() {
            list.push(json!({"type": "node", "id": format!("node/{}", node.name), "name": node.name,
                "nodeid": index + 1, "ip": format!("10.0.0.{}", index + 1), "online": i64::from(node.online),
                "local": i64::from(index == 0), "level": ""}));
        }
        Value::Array(list)
    }

    /// `GET .../rrddata`: one entry per step, keys left out before the guest existed.
    pub fn rrd_view(
        &self,
        node: &str,
        vmid: u32,
        timeframe: &str,
        now: i64,
    ) -> Result<Value, ApiError> {
        let guest = self.guest(node, vmid)?;
        let (count, step) = match timeframe {
            "hour" => (70, 60),
            "day" => (70, 1800),
            "week" => (70, 10_800),
            "month" => (70, 43_200),
            _ => (70, 604_800),
        };
        let end = now - now.rem_euclid(step);
        let node_cpus = self.node(node).map_or(16, |node| node.cpus);
        let list: Vec<Value> = (0..count)
            .map(|index| {
                let time = end - (count - 1 - index) * step;
                if time < guest.created_at - step {
                    return json!({"time": time});
                }
                let seed = u64::from(vmid) ^ (time as u64);
                // Running during this step: the counters of status/current and netstat grow at
                // the same rates the graph shows.
                let running = guest.running
                    && guest.started_at.is_some_and(|started| started <= time + step);
                let load = if running { 0.002 + noise(seed) * 0.05 } else { 0.0 };
                json!({
                    "time": time,
                    "cpu": load, "maxcpu": guest.cores(node_cpus),
                    "mem": if running { (guest.memory_bytes() as f64 * (0.05 + noise(seed + 1) * 0.1)) as u64 } else { 0 },
                    "maxmem": guest.memory_bytes(),
                    "disk": guest.disk_bytes() / 4, "maxdisk": guest.disk_bytes(),
                    "netin": if running { NET_IN_RATE as f64 } else { 0.0 },
                    "netout": if running { NET_OUT_RATE as f64 } else { 0.0 },
                    "diskread": if running { noise(seed + 4) * 4000.0 } else { 0.0 },
                    "diskwrite": if running { noise(seed + 5) * 8000.0 } else { 0.0 },
                })
            })
            .collect();
        Ok(Value::Array(list))
    }

    /// `GET /nodes/{node}/netstat`: per guest NIC the bytes sent to (`in`) and from (`out`) the
    /// guest, the same counters as the guest's `netin`/`netout` split over its NICs. Proxmox reads
    /// them from `/proc/net/dev` and sends every value as a string.
    pub fn netstat(&self, node: &str, now: i64) -> Result<Value, ApiError> {
        self.node(node)?;
        let mut list = Vec::new();
        for guest in self
            .guests
            .values()
            .filter(|guest| guest.node == node && guest.running)
        {
            let metrics = self.guest_metrics(guest, now);
            let total_in = metrics.get("netin").and_then(Value::as_u64).unwrap_or(0);
            let total_out = metrics.get("netout").and_then(Value::as_u64).unwrap_or(0);
            let nics: Vec<&String> = guest
                .config
                .keys()
                .filter(|key| {
                    key.strip_prefix("net").is_some_and(|index| {
                        !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit())
                    })
                })
                .collect();
            let count = nics.len() as u64;
            for (position, key) in nics.iter().enumerate() {
                let share =
                    |total: u64| total / count + if position == 0 { total % count } else { 0 };
                list.push(json!({
                    "vmid": guest.vmid.to_string(), "dev": key,
                    "in": share(total_in).to_string(), "out": share(total_out).to_string(),
                }));
            }
        }
        Ok(Value::Array(list))
    }

    /// `GET /cluster/tasks`: the recent tasks of every node, newest first.
    pub fn cluster_tasks(&self) -> Value {
        let mut tasks: Vec<&Task> = self.tasks.iter().collect();
        tasks.sort_by(|left, right| {
            right
                .starttime
                .cmp(&left.starttime)
                .then(right.pid.cmp(&left.pid))
        });
        let list: Vec<Value> = tasks
            .into_iter()
            .map(|task| {
                let mut object = json!({"upid": task.upid, "node": task.node, "pid": task.pid,
                    "pstart": task.pstart, "starttime": task.starttime, "type": task.kind,
                    "id": task.id, "user": task.user});
                if let (Some(endtime), Some(target)) = (task.endtime, object.as_object_mut()) {
                    target.insert("endtime".into(), json!(endtime));
                    target.insert(
                        "status".into(),
                        json!(task.exitstatus.clone().unwrap_or_default()),
                    );
                    target.insert("saved".into(), json!("1"));
                }
                object
            })
            .collect();
        Value::Array(list)
    }

    /// A node's network configuration (created fresh for a node a state file did not know).
    pub fn network_mut(
        &mut self,
        node: &str,
    ) -> Result<&mut crate::network::NodeNetwork, ApiError> {
        let index = self
            .nodes
            .iter()
            .position(|candidate| candidate.name == node)
            .ok_or_else(|| ApiError::failed(format!("no such cluster node '{node}'")))?;
        Ok(self
            .networks
            .entry(node.to_string())
            .or_insert_with(|| crate::network::NodeNetwork::fresh(index)))
    }

    /// The next console port in 5900..=5999.
    pub fn console_port(&mut self) -> u16 {
        let port = 5900 + self.next_console_port % 100;
        self.next_console_port = self.next_console_port.wrapping_add(1);
        port
    }
}

fn format_of_key(key: &str) -> &'static [schema::Property] {
    lxc::format_of(key).unwrap_or(lxc::ROOTFS_FORMAT)
}

/// Builds the JSON of a task's status.
pub fn task_status_view(task: &Task) -> Value {
    let mut object = json!({
        "upid": task.upid, "node": task.node, "pid": task.pid, "pstart": task.pstart,
        "starttime": task.starttime, "type": task.kind, "id": task.id,
        "status": if task.endtime.is_some() { "stopped" } else { "running" },
    });
    if let Some(target) = object.as_object_mut() {
        match task.user.split_once('!') {
            Some((user, token)) => {
                target.insert("user".into(), json!(user));
                target.insert("tokenid".into(), json!(token));
            }
            None => {
                target.insert("user".into(), json!(task.user));
            }
        }
        if let Some(exitstatus) = &task.exitstatus {
            target.insert("exitstatus".into(), json!(exitstatus));
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn parameters(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn created(cluster: &mut Cluster, vmid: u32) {
        let action = cluster
            .prepare_create(
                "pve1",
                &parameters(&[
                    ("vmid", &vmid.to_string()),
                    ("ostemplate", DEFAULT_TEMPLATE),
                    ("rootfs", "local-lvm:8"),
                    ("net0", "name=eth0,bridge=vmbr0,ip=dhcp"),
                    ("hostname", "web"),
                ]),
                "root@pam",
                NOW,
            )
            .unwrap();
        assert_eq!(
            cluster.guests[&vmid].config.get("lock").map(String::as_str),
            Some("create")
        );
        cluster.complete("pve1", &action, NOW).unwrap();
    }

    #[test]
    fn create_writes_normalised_config() {
        let mut cluster = Cluster::new(1, NOW);
        created(&mut cluster, 101);
        let config = &cluster.guests[&101].config;
        assert_eq!(config["rootfs"], "local-lvm:vm-101-disk-0,size=8G");
        assert!(
            config["net0"].starts_with("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:"),
            "{}",
            config["net0"]
        );
        assert!(config["net0"].ends_with(",ip=dhcp,type=veth"));
        assert_eq!(config["ostype"], "debian");
        assert_eq!(config["memory"], "512");
        assert!(!config.contains_key("lock"));
        let content = cluster
            .storage_content("pve1", "local-lvm", None, Some(101))
            .unwrap();
        assert_eq!(content[0]["volid"], "local-lvm:vm-101-disk-0");
    }

    #[test]
    fn synchronous_errors_table() {
        let mut cluster = Cluster::new(2, NOW);
        created(&mut cluster, 101);
        let none = BTreeMap::new();
        let cases: Vec<(Result<Action, ApiError>, &str)> = vec![
            (
                cluster.prepare_power("pve1", 101, "stop", &none),
                "CT 101 not running",
            ),
            (
                cluster.prepare_power("pve1", 101, "reboot", &none),
                "VM 101 not running",
            ),
            (
                cluster.prepare_power("pve1", 999, "start", &none),
                "Configuration file 'nodes/pve1/lxc/999.conf' does not exist",
            ),
            (
                cluster.prepare_power("pve2", 101, "start", &none),
                "Configuration file 'nodes/pve2/lxc/101.conf' does not exist",
            ),
            (
                cluster.prepare_power("pve9", 101, "start", &none),
                "no such cluster node 'pve9'",
            ),
        ];
        for (result, message) in cases {
            assert_eq!(result.unwrap_err(), ApiError::failed(message));
        }
        let again = cluster.prepare_create(
            "pve2",
            &parameters(&[("vmid", "101"), ("ostemplate", DEFAULT_TEMPLATE)]),
            "root@pam",
            NOW,
        );
        assert_eq!(
            again.unwrap_err(),
            ApiError::failed("unable to create CT 101 - CT 101 already exists on node 'pve1'")
        );
        let start = cluster.prepare_power("pve1", 101, "start", &none).unwrap();
        cluster.complete("pve1", &start, NOW).unwrap();
        assert_eq!(
            cluster
                .prepare_power("pve1", 101, "start", &none)
                .unwrap_err(),
            ApiError::failed("CT 101 already running")
        );
        assert_eq!(
            cluster.prepare_destroy("pve1", 101, &none).unwrap_err(),
            ApiError::failed("unable to destroy CT 101 - container is running")
        );
        cluster.set_lock(101, Some("backup"));
        assert_eq!(
            cluster
                .prepare_power("pve1", 101, "stop", &none)
                .unwrap_err(),
            ApiError::failed("CT is locked (backup)")
        );
    }

    #[test]
    fn nextid_and_resize() {
        let mut cluster = Cluster::new(1, NOW);
        assert_eq!(cluster.next_id(None).unwrap(), "100");
        created(&mut cluster, 100);
        assert_eq!(cluster.next_id(None).unwrap(), "101");
        assert_eq!(
            cluster.next_id(Some(100)).unwrap_err(),
            ApiError::parameter("vmid", "VM 100 already exists")
        );
        let grow = cluster
            .prepare_resize(
                "pve1",
                100,
                &parameters(&[("disk", "rootfs"), ("size", "+2G")]),
            )
            .unwrap()
            .unwrap();
        cluster.complete("pve1", &grow, NOW).unwrap();
        assert_eq!(
            cluster.guests[&100].config["rootfs"],
            "local-lvm:vm-100-disk-0,size=10G"
        );
        let shrink = cluster.prepare_resize(
            "pve1",
            100,
            &parameters(&[("disk", "rootfs"), ("size", "4G")]),
        );
        assert_eq!(
            shrink.unwrap_err(),
            ApiError::failed("unable to shrink disk size")
        );
    }

    #[test]
    fn failed_create_is_removed() {
        let mut cluster = Cluster::new(1, NOW);
        let action = cluster
            .prepare_create(
                "pve1",
                &parameters(&[
                    ("vmid", "105"),
                    ("ostemplate", DEFAULT_TEMPLATE),
                    ("rootfs", "local-lvm:1"),
                ]),
                "root@pam",
                NOW,
            )
            .unwrap();
        cluster.abort(&action);
        assert!(!cluster.guests.contains_key(&105));
    }
}
