//! QEMU virtual machines on the cluster model: the same lifecycle as containers (configuration
//! with a `lock: create` reservation, power state, tasks, locks), in the vmid space they share,
//! without emulating a CPU. Pure: no IO; the clock is passed in.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::model::{
    Action, ApiError, Cluster, GIB, Guest, GuestKind, Volume, boolean, config_digest, generated_mac,
};
use crate::qemu;
use crate::schema::{self, Kind, parse_boolean, parse_disk_size};

/// The QEMU version a running simulated VM reports.
pub const QEMU_VERSION: &str = "9.2.0";

fn is_disk_key(key: &str) -> bool {
    qemu::DISK_BUSES.iter().any(|(bus, _)| {
        key.strip_prefix(bus)
            .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
    }) || key == "efidisk0"
        || key == "tpmstate0"
}

fn disk_of(key: &str, value: &str) -> Option<BTreeMap<String, String>> {
    let mut parsed = schema::parse_property_string(key, qemu::format_of(key)?, value).ok()?;
    if let Some(volume) = parsed.remove("volume") {
        parsed.entry("file".into()).or_insert(volume);
    }
    Some(parsed)
}

/// The sum of the sizes of a VM's disks (CD-ROMs left out).
pub fn disk_bytes(config: &BTreeMap<String, String>) -> u64 {
    config
        .iter()
        .filter(|(key, _)| is_disk_key(key))
        .filter_map(|(key, value)| disk_of(key, value))
        .filter(|disk| disk.get("media").is_none_or(|media| media != "cdrom"))
        .filter_map(|disk| disk.get("size").and_then(|size| parse_disk_size(size)))
        .sum()
}

fn typed_value(key: &str, value: &str) -> Value {
    let schema = qemu::config_properties();
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

/// Writes a NIC the way Proxmox normalises it: `<model>=<mac>` first, then the other keys.
fn print_nic(nic: &BTreeMap<String, String>) -> String {
    let mut parts = Vec::new();
    if let (Some(model), Some(mac)) = (nic.get("model"), nic.get("macaddr")) {
        parts.push(format!("{model}={mac}"));
    }
    for (key, value) in nic {
        if key != "model" && key != "macaddr" {
            parts.push(format!("{key}={value}"));
        }
    }
    parts.join(",")
}

fn locked(guest: &Guest) -> Result<(), String> {
    match guest.lock() {
        Some(lock) => Err(format!("VM is locked ({lock})")),
        None => Ok(()),
    }
}

/// Checks a queued VM action right before its effect.
pub fn recheck(node: &str, action: &Action, guest: Option<&Guest>) -> Result<(), String> {
    let vmid = action.vmid().unwrap_or_default();
    let Some(guest) = guest.filter(|guest| guest.kind == GuestKind::Qemu) else {
        return Err(format!(
            "Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"
        ));
    };
    match action {
        Action::VmPower {
            action, skiplock, ..
        } => {
            if !skiplock {
                locked(guest)?;
            }
            match action.as_str() {
                "start" if guest.running => Err(format!("VM {vmid} already running")),
                "reset" if !guest.running => Err(format!("VM {vmid} not running")),
                _ => Ok(()),
            }
        }
        Action::VmDestroy { .. } if guest.running => {
            Err(format!("VM {vmid} is running - destroy failed"))
        }
        _ => Ok(()),
    }
}

/// The task log line that says a VM is only simulated.
pub const SIMULATED: &str = "QEMU is simulated: no virtual machine process runs on this host";

impl Cluster {
    /// Synchronous part of `POST /nodes/{node}/qemu`: checks, reserves the vmid with
    /// `lock: create` and returns the action whose completion writes the configuration.
    pub fn prepare_vm_create(
        &mut self,
        node: &str,
        parameters: &BTreeMap<String, String>,
        now: i64,
    ) -> Result<Action, ApiError> {
        let vmid: u32 = parameters["vmid"]
            .trim_start_matches('+')
            .parse()
            .map_err(|_| ApiError::parameter("vmid", "invalid vmid"))?;
        self.node(node)?;
        if let Some(existing) = self.guests.get(&vmid) {
            return Err(ApiError::failed(format!(
                "unable to create VM {vmid} - {} {vmid} already exists on node '{}'",
                existing.kind.label(),
                existing.node
            )));
        }
        if parameters.contains_key("archive") {
            return Err(ApiError::failed(format!(
                "unable to restore VM {vmid} - restoring backups is not simulated"
            )));
        }
        let skip = [
            "node",
            "vmid",
            "archive",
            "bwlimit",
            "force",
            "import-working-storage",
            "live-restore",
            "pool",
            "start",
            "storage",
            "unique",
        ];
        let mut config: BTreeMap<String, String> = parameters
            .iter()
            .filter(|(key, _)| !skip.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let mut volumes: Vec<(String, Volume)> = Vec::new();
        let disk_keys: Vec<String> = config
            .keys()
            .filter(|key| is_disk_key(key))
            .cloned()
            .collect();
        for key in disk_keys {
            let Some(mut disk) = disk_of(&key, &config[&key]) else {
                continue;
            };
            let Some(file) = disk.get("file").cloned() else {
                return Err(ApiError::parameter(
                    &key,
                    format!(
                        "invalid format - format error\n{key}.file: property is missing and it is not optional\n"
                    ),
                ));
            };
            if file == "none" || disk.get("media").is_some_and(|media| media == "cdrom") {
                if file != "none" && file != "cdrom" && !self.volume_exists(node, &file) {
                    return Err(ApiError::failed(format!("volume '{file}' does not exist")));
                }
                continue;
            }
            if let Some((storage_id, size)) = file.split_once(':')
                && let Ok(gib) = size.parse::<f64>()
            {
                let storage = self.storage(storage_id)?;
                if !storage.content.iter().any(|content| content == "images") {
                    return Err(ApiError::failed(format!(
                        "unable to create VM {vmid} - storage '{storage_id}' does not support vm images"
                    )));
                }
                let bytes = (gib * GIB as f64) as u64;
                let volid = self.next_disk_name(node, storage_id, vmid, &volumes);
                volumes.push((
                    storage_id.to_string(),
                    Volume {
                        volid: volid.clone(),
                        content: "images".into(),
                        format: "raw".into(),
                        size: bytes,
                        ctime: now,
                        vmid: Some(vmid),
                    },
                ));
                disk.insert("file".into(), volid);
                disk.insert("size".into(), schema::format_disk_size(bytes));
                config.insert(
                    key.clone(),
                    schema::print_property_string(qemu::DISK_FORMAT, &disk),
                );
            } else if !self.volume_exists(node, &file) {
                return Err(ApiError::failed(format!("volume '{file}' does not exist")));
            }
        }
        let net_keys: Vec<String> = config
            .keys()
            .filter(|key| key.starts_with("net") && qemu::format_of(key).is_some())
            .cloned()
            .collect();
        for key in net_keys {
            let mut nic = schema::parse_property_string(&key, qemu::NET_FORMAT, &config[&key])
                .map_err(|message| ApiError::parameter(&key, message))?;
            if let Some(model) = qemu::nic_models()
                .iter()
                .find(|model| nic.contains_key(**model))
            {
                let mac = nic.remove(*model).unwrap_or_default();
                nic.insert("model".into(), model.to_string());
                nic.insert("macaddr".into(), mac);
            }
            if !nic.contains_key("model") {
                return Err(ApiError::parameter(
                    &key,
                    format!(
                        "invalid format - format error\n{key}.model: property is missing and it is not optional\n"
                    ),
                ));
            }
            nic.entry("macaddr".into())
                .or_insert_with(|| generated_mac(&format!("qemu/{vmid}/{key}/{now}")));
            config.insert(key.clone(), print_nic(&nic));
        }
        for (key, value) in config.iter_mut() {
            if matches!(
                schema::lookup(&qemu::config_properties(), key).map(|property| property.kind),
                Some(Kind::Boolean)
            ) {
                *value = if parse_boolean(value).unwrap_or(false) {
                    "1".into()
                } else {
                    "0".into()
                };
            }
        }
        let uuid = crate::model::hex(&Sha256::digest(format!("{vmid}/{now}").as_bytes()));
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &uuid[0..8],
            &uuid[8..12],
            &uuid[12..16],
            &uuid[16..20],
            &uuid[20..32]
        );
        config
            .entry("smbios1".into())
            .or_insert_with(|| format!("uuid={uuid}"));
        config.entry("vmgenid".into()).or_insert(uuid);
        config.insert(
            "meta".into(),
            format!("creation-qemu={QEMU_VERSION},ctime={now}"),
        );
        self.guests.insert(
            vmid,
            Guest {
                vmid,
                kind: GuestKind::Qemu,
                node: node.to_string(),
                config: BTreeMap::from([("lock".to_string(), "create".to_string())]),
                running: false,
                suspended: false,
                started_at: None,
                created_at: now,
            },
        );
        Ok(Action::VmCreate {
            vmid,
            config,
            volumes,
            start: boolean(parameters, "start"),
        })
    }

    /// Synchronous checks of `POST .../qemu/{vmid}/status/<action>`; the rest is checked when the
    /// task runs, as Proxmox does inside its worker.
    pub fn prepare_vm_power(
        &self,
        node: &str,
        vmid: u32,
        action: &str,
        parameters: &BTreeMap<String, String>,
    ) -> Result<Action, ApiError> {
        self.node(node)?;
        let guest = self.guest_of(GuestKind::Qemu, node, vmid)?;
        if action == "reset" && !guest.running {
            return Err(ApiError::failed(format!("VM {vmid} not running")));
        }
        Ok(Action::VmPower {
            vmid,
            action: action.to_string(),
            skiplock: boolean(parameters, "skiplock"),
        })
    }

    /// Synchronous checks of `DELETE /nodes/{node}/qemu/{vmid}`.
    pub fn prepare_vm_destroy(
        &self,
        node: &str,
        vmid: u32,
        parameters: &BTreeMap<String, String>,
    ) -> Result<Action, ApiError> {
        self.node(node)?;
        let guest = self.guest_of(GuestKind::Qemu, node, vmid)?;
        if !boolean(parameters, "skiplock") {
            locked(guest).map_err(ApiError::failed)?;
        }
        if guest
            .config
            .get("protection")
            .is_some_and(|value| value == "1")
        {
            return Err(ApiError::failed(format!(
                "can't remove VM {vmid} - protection mode enabled"
            )));
        }
        if guest.running {
            return Err(ApiError::failed(format!(
                "VM {vmid} is running - destroy failed"
            )));
        }
        Ok(Action::VmDestroy {
            vmid,
            purge: boolean(parameters, "purge"),
        })
    }

    /// Applies a finished VM task's effect and returns its log lines.
    pub(crate) fn complete_vm(
        &mut self,
        node: &str,
        action: &Action,
        now: i64,
    ) -> Result<Vec<String>, String> {
        let mut log = Vec::new();
        match action {
            Action::VmCreate {
                vmid,
                config,
                volumes,
                start,
            } => {
                for (storage_id, volume) in volumes {
                    if let Some(storage) = self.storage_mut(storage_id) {
                        let short = volume
                            .volid
                            .split_once(':')
                            .map_or(volume.volid.as_str(), |(_, name)| name);
                        if storage.kind == "lvmthin" {
                            log.push(format!("  Logical volume \"{short}\" created."));
                        } else {
                            log.push(format!(
                                "Formatting '/var/lib/vz/images/{vmid}/{short}', fmt=raw size={}",
                                volume.size
                            ));
                        }
                        storage
                            .volumes
                            .entry(node.to_string())
                            .or_default()
                            .push(volume.clone());
                    }
                }
                if let Some(guest) = self.guest_mut(*vmid) {
                    guest.config = config.clone();
                    if *start {
                        guest.running = true;
                        guest.started_at = Some(now);
                    }
                }
            }
            Action::VmPower { vmid, action, .. } => {
                let Some(guest) = self.guest_mut(*vmid) else {
                    return Err(format!("VM {vmid} vanished"));
                };
                match action.as_str() {
                    "start" => {
                        guest.running = true;
                        guest.started_at = Some(now);
                        log.push(format!("VM {vmid} started (simulated, no CPU emulation)"));
                    }
                    "reset" => {
                        guest.started_at = Some(now);
                    }
                    _ => {
                        if !guest.running {
                            log.push(format!("VM {vmid} not running"));
                        }
                        guest.running = false;
                        guest.started_at = None;
                    }
                }
            }
            Action::VmDestroy { vmid, purge } => {
                self.remove_volumes_of(*vmid, &mut log);
                if *purge {
                    log.push(format!("purging VM {vmid} from related configurations.."));
                }
                self.guests.remove(vmid);
            }
            _ => {}
        }
        Ok(log)
    }

    /// `GET /nodes/{node}/qemu/{vmid}/config`.
    pub fn vm_config_view(&self, node: &str, vmid: u32) -> Result<Value, ApiError> {
        let guest = self.guest_of(GuestKind::Qemu, node, vmid)?;
        let mut object = serde_json::Map::new();
        for (key, value) in &guest.config {
            object.insert(key.clone(), typed_value(key, value));
        }
        object.insert("digest".into(), json!(config_digest(&guest.config)));
        Ok(Value::Object(object))
    }

    fn vm_metrics(&self, guest: &Guest, now: i64) -> serde_json::Map<String, Value> {
        let mut object = self.guest_metrics(guest, now);
        object.remove("type");
        object.remove("swap");
        object.remove("maxswap");
        object.insert("disk".into(), json!(0));
        if guest.running {
            object.insert("pid".into(), json!(100_000 + guest.vmid));
        }
        object
    }

    /// `GET /nodes/{node}/qemu/{vmid}/status/current`.
    pub fn vm_status_view(&self, node: &str, vmid: u32, now: i64) -> Result<Value, ApiError> {
        let guest = self.guest_of(GuestKind::Qemu, node, vmid)?;
        let mut object = self.vm_metrics(guest, now);
        object.insert("ha".into(), json!({"managed": 0}));
        object.insert(
            "qmpstatus".into(),
            json!(if guest.running { "running" } else { "stopped" }),
        );
        if guest.running {
            object.insert("running-qemu".into(), json!(QEMU_VERSION));
            object.insert("running-machine".into(), json!("pc-i440fx-9.2+pve0"));
        }
        if guest
            .config
            .get("agent")
            .is_some_and(|agent| agent.starts_with('1') || agent.contains("enabled=1"))
        {
            object.insert("agent".into(), json!(1));
        }
        Ok(Value::Object(object))
    }

    /// `GET /nodes/{node}/qemu`.
    pub fn vm_list(&self, node: &str, now: i64) -> Result<Value, ApiError> {
        self.node(node)?;
        let list: Vec<Value> = self
            .guests
            .values()
            .filter(|guest| guest.node == node && guest.kind == GuestKind::Qemu)
            .map(|guest| Value::Object(self.vm_metrics(guest, now)))
            .collect();
        Ok(Value::Array(list))
    }
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

    #[test]
    fn vms_and_containers_share_one_id_space() {
        let mut cluster = Cluster::new(1, NOW);
        let create = cluster
            .prepare_vm_create(
                "pve1",
                &parameters(&[
                    ("vmid", "100"),
                    ("scsi0", "local-lvm:8"),
                    ("net0", "virtio,bridge=vmbr0"),
                    ("memory", "2048"),
                    ("name", "vm1"),
                ]),
                NOW,
            )
            .unwrap();
        assert_eq!(
            cluster
                .prepare_create(
                    "pve1",
                    &parameters(&[
                        ("vmid", "100"),
                        ("ostemplate", crate::model::DEFAULT_TEMPLATE)
                    ]),
                    "root@pam",
                    NOW,
                )
                .unwrap_err(),
            ApiError::failed("unable to create CT 100 - VM 100 already exists on node 'pve1'")
        );
        cluster.complete("pve1", &create, NOW).unwrap();
        let config = &cluster.guests[&100].config;
        assert_eq!(config["scsi0"], "local-lvm:vm-100-disk-0,size=8G");
        assert!(
            config["net0"].starts_with("virtio=BC:24:11:"),
            "{}",
            config["net0"]
        );
        assert!(config["net0"].ends_with(",bridge=vmbr0"));
        assert_eq!(cluster.guests[&100].memory_bytes(), 2048 << 20);
        assert_eq!(
            cluster.guest("pve1", 100).unwrap_err(),
            ApiError::failed("Configuration file 'nodes/pve1/lxc/100.conf' does not exist")
        );
        assert_eq!(
            cluster
                .prepare_vm_power("pve1", 100, "reset", &BTreeMap::new())
                .unwrap_err(),
            ApiError::failed("VM 100 not running")
        );
        let start = cluster
            .prepare_vm_power("pve1", 100, "start", &BTreeMap::new())
            .unwrap();
        cluster.complete("pve1", &start, NOW).unwrap();
        assert_eq!(
            cluster.complete("pve1", &start, NOW).unwrap_err(),
            "VM 100 already running"
        );
        assert_eq!(
            cluster
                .prepare_vm_destroy("pve1", 100, &BTreeMap::new())
                .unwrap_err(),
            ApiError::failed("VM 100 is running - destroy failed")
        );
        let view = cluster.vm_status_view("pve1", 100, NOW + 5).unwrap();
        assert_eq!(view["status"], "running");
        assert_eq!(view["qmpstatus"], "running");
        assert_eq!(view["maxdisk"], 8u64 << 30);
    }
}
