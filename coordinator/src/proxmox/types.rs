//! Typed answers of the Proxmox API. Proxmox is loosely typed (Perl): numbers may come as
//! strings (`nextid`, `vmid` in older lists, `cpus`), so numbers here accept both, and unknown
//! fields are kept where callers pass them on.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A number sent as a JSON number or as a numeric string.
pub fn lenient_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number
            .as_u64()
            .or_else(|| number.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(text) => text.trim().parse::<u64>().ok().or_else(|| {
            text.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| *f >= 0.0)
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

/// A float sent as a JSON number or as a numeric string.
pub fn lenient_f64(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn u32_lenient<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = Value::deserialize(deserializer)?;
    lenient_u64(&value)
        .and_then(|number| u32::try_from(number).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("expected a number, got {value}")))
}

fn optional_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<Value>::deserialize(deserializer)?
        .as_ref()
        .and_then(lenient_u64))
}

fn optional_f64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    Ok(Option::<Value>::deserialize(deserializer)?
        .as_ref()
        .and_then(lenient_f64))
}

/// `GET /version`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Version {
    pub version: String,
    #[serde(default)]
    pub release: Option<String>,
    #[serde(default)]
    pub repoid: Option<String>,
}

/// One entry of `GET /nodes`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct NodeSummary {
    pub node: String,
    /// `online`, `offline` or `unknown`.
    #[serde(default)]
    pub status: String,
    #[serde(default, deserialize_with = "optional_f64")]
    pub cpu: Option<f64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub maxcpu: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub mem: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub disk: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub maxdisk: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub uptime: Option<u64>,
    #[serde(default)]
    pub ssl_fingerprint: Option<String>,
}

/// One entry of `GET /nodes/{node}/lxc`, and `GET .../status/current`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ContainerStatus {
    #[serde(deserialize_with = "u32_lenient")]
    pub vmid: u32,
    /// `running` or `stopped`.
    pub status: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default, deserialize_with = "optional_f64")]
    pub cpu: Option<f64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub cpus: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub mem: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub maxmem: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub swap: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub maxswap: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub disk: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub maxdisk: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub netin: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub netout: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub uptime: Option<u64>,
    #[serde(default)]
    pub tags: Option<String>,
}

impl ContainerStatus {
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status` and the entries of the task list.
///
/// Proxmox also sends the fields of the UPID one by one (`type`, `id`, `user`, `tokenid`,
/// `starttime`); they are not read here: the UPID is read by [`super::Upid::parse`] alone.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TaskStatus {
    pub upid: String,
    #[serde(default)]
    pub node: String,
    /// `running` or `stopped` in a task status; in a task list, absent while the task runs
    /// and the exit status once it ended.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub exitstatus: Option<String>,
}

/// True for the exit statuses Proxmox counts as success: `OK` and `WARNINGS: n`.
pub fn exit_status_is_success(exitstatus: &str) -> bool {
    let exitstatus = exitstatus.trim();
    exitstatus == "OK" || exitstatus.starts_with("WARNINGS:")
}

impl TaskStatus {
    pub fn is_running(&self) -> bool {
        self.status == "running"
    }

    /// `None` while running; then whether it succeeded.
    pub fn succeeded(&self) -> Option<bool> {
        if self.is_running() {
            None
        } else {
            Some(
                self.exitstatus
                    .as_deref()
                    .is_some_and(exit_status_is_success),
            )
        }
    }
}

/// One entry of `GET /nodes/{node}/storage`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct StorageSummary {
    pub storage: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Comma-separated content types, e.g. `rootdir,images`.
    #[serde(default)]
    pub content: String,
    #[serde(default, deserialize_with = "optional_u64")]
    pub active: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub enabled: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub total: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub used: Option<u64>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub avail: Option<u64>,
}

impl StorageSummary {
    /// True when the storage holds this content type.
    pub fn holds(&self, content: &str) -> bool {
        self.content.split(',').any(|kind| kind.trim() == content)
    }
}

/// One entry of `GET /nodes/{node}/storage/{storage}/content`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct StorageVolume {
    pub volid: String,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub size: Option<u64>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "optional_u64")]
    pub ctime: Option<u64>,
}

/// `POST .../vncproxy`.
#[derive(Clone, Deserialize, PartialEq)]
pub struct VncTicket {
    #[serde(default)]
    pub user: String,
    pub ticket: String,
    #[serde(deserialize_with = "u32_lenient")]
    pub port: u32,
    #[serde(default)]
    pub upid: Option<String>,
    #[serde(default)]
    pub cert: Option<String>,
}

impl std::fmt::Debug for VncTicket {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("VncTicket")
            .field("user", &self.user)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A JSON object as Proxmox sent it (config, node status, RRD points).
pub type Object = Map<String, Value>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_accepted_as_strings() {
        let cases: &[(Value, Option<u64>)] = &[
            (json!(101), Some(101)),
            (json!("101"), Some(101)),
            (json!(" 7 "), Some(7)),
            (json!(2.0), Some(2)),
            (json!("4.0"), Some(4)),
            (json!("x"), None),
            (json!(-1), None),
            (json!(null), None),
        ];
        for (value, expected) in cases {
            assert_eq!(lenient_u64(value), *expected, "{value}");
        }
        let listed: Vec<ContainerStatus> = serde_json::from_value(json!([
            {"vmid": "101", "status": "running", "cpus": "2", "maxmem": 536870912},
            {"vmid": 102, "status": "stopped"}
        ]))
        .unwrap();
        assert_eq!(listed[0].vmid, 101);
        assert_eq!(listed[0].cpus, Some(2));
        assert!(listed[0].is_running());
        assert_eq!(listed[1].vmid, 102);
        assert!(
            serde_json::from_value::<ContainerStatus>(json!({"vmid": "abc", "status": "x"}))
                .is_err()
        );
    }

    #[test]
    fn task_exit_statuses() {
        let cases: &[(&str, Option<&str>, Option<bool>)] = &[
            ("running", None, None),
            ("stopped", Some("OK"), Some(true)),
            ("stopped", Some("WARNINGS: 2"), Some(true)),
            ("stopped", Some("unexpected status"), Some(false)),
            (
                "stopped",
                Some("can't lock file '/run/lock/lxc/pve-config-101.lock' - got timeout"),
                Some(false),
            ),
            ("stopped", None, Some(false)),
        ];
        for (status, exitstatus, expected) in cases {
            let task: TaskStatus = serde_json::from_value(json!({
                "upid": "UPID:pve1:00000001:00000001:00000001:vzstart:101:root@pam:",
                "status": status, "exitstatus": exitstatus, "type": "vzstart", "id": "101",
                "user": "api@pve", "tokenid": "ci", "starttime": "1700000000"
            }))
            .unwrap();
            assert_eq!(task.succeeded(), *expected, "{status} {exitstatus:?}");
        }
    }
}
