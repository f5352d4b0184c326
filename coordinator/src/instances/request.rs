//! Reading and checking what a caller asks of an instance: the field validator, the fields
//! of a create and of a change. Pure functions of the request's fields (and, for a change,
//! the instance's record).

use serde_json::{Map, Value};

use super::error::InstanceError;
use super::executors::UpdateInput;
use crate::proxmox::property;
use crate::proxmox::types::lenient_u64;
use crate::store::records::InstanceRecord;

/// Reads fields by name or alias and collects one reason per bad field.
struct Fields {
    map: Map<String, Value>,
    problems: Vec<(String, String)>,
}

impl Fields {
    fn new(map: Map<String, Value>) -> Fields {
        Fields {
            map,
            problems: Vec::new(),
        }
    }

    /// The value under `name` or one of its aliases; the field is named as `name`.
    fn raw(&self, names: &[&str]) -> Option<&Value> {
        names
            .iter()
            .find_map(|name| self.map.get(*name).filter(|value| !value.is_null()))
    }

    fn bad(&mut self, name: &str, reason: impl Into<String>) {
        self.problems.push((name.to_string(), reason.into()));
    }

    fn text(&mut self, names: &[&str]) -> Option<String> {
        match self.raw(names)? {
            Value::String(text) => Some(text.trim().to_string()),
            Value::Number(number) => Some(number.to_string()),
            _ => {
                self.bad(names[0], "must be a string");
                None
            }
        }
    }

    /// A whole number in `range`, sent as a number or a numeric string.
    fn number(&mut self, names: &[&str], range: std::ops::RangeInclusive<u64>) -> Option<u64> {
        let value = self.raw(names)?.clone();
        let number = lenient_u64(&value).filter(|_| match &value {
            Value::Number(number) => number.is_u64(),
            Value::String(text) => text.trim().parse::<u64>().is_ok(),
            _ => false,
        });
        match number {
            Some(number) if range.contains(&number) => Some(number),
            Some(_) => {
                self.bad(
                    names[0],
                    format!("must be between {} and {}", range.start(), range.end()),
                );
                None
            }
            None => {
                self.bad(names[0], "must be a whole number");
                None
            }
        }
    }

    fn boolean(&mut self, names: &[&str]) -> Option<bool> {
        match self.raw(names)? {
            Value::Bool(flag) => Some(*flag),
            Value::Number(number) if number.as_u64() == Some(0) => Some(false),
            Value::Number(number) if number.as_u64() == Some(1) => Some(true),
            Value::String(text) => match text.trim() {
                "1" | "true" | "yes" => Some(true),
                "0" | "false" | "no" => Some(false),
                _ => {
                    self.bad(names[0], "must be a boolean");
                    None
                }
            },
            _ => {
                self.bad(names[0], "must be a boolean");
                None
            }
        }
    }

    fn finish(self) -> Result<Map<String, Value>, InstanceError> {
        if self.problems.is_empty() {
            Ok(self.map)
        } else {
            Err(InstanceError::Invalid(self.problems))
        }
    }
}

/// A DNS host name as Proxmox accepts it.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

const OS_TYPES: &[&str] = &[
    "debian",
    "devuan",
    "ubuntu",
    "centos",
    "fedora",
    "opensuse",
    "archlinux",
    "alpine",
    "gentoo",
    "nixos",
    "unmanaged",
];

fn valid_storage_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
}

/// The checked fields of a create request.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    pub user: Option<String>,
    pub template: String,
    pub hostname: String,
    pub cpu: u32,
    pub memory: u64,
    pub swap: u64,
    pub disk: u64,
    pub node: Option<String>,
    pub storage: Option<String>,
    pub ostype: Option<String>,
    pub password: Option<String>,
    pub ssh_keys: Option<String>,
    pub net: Option<String>,
    pub start: bool,
}

/// Checks a create body (the fields of the instance API; `image`, `name`, `nodeId` and
/// `variables` of the older panel API as aliases). Every bad field is named in one error.
pub fn parse_create(map: Map<String, Value>) -> Result<CreateRequest, InstanceError> {
    let mut fields = Fields::new(map);
    let user = fields.text(&["user", "username", "userId"]);
    let template = fields.text(&["template", "image", "ostemplate"]);
    match &template {
        None if !fields.problems.iter().any(|(name, _)| name == "template") => {
            fields.bad("template", "is required");
        }
        Some(text) if text.is_empty() || text.len() > 255 => {
            fields.bad("template", "must be 1 to 255 characters");
        }
        _ => {}
    }
    let hostname = fields.text(&["hostname", "name"]);
    match &hostname {
        None if !fields.problems.iter().any(|(name, _)| name == "hostname") => {
            fields.bad("hostname", "is required");
        }
        Some(name) if !valid_hostname(name) => {
            fields.bad(
                "hostname",
                "must be a DNS name (letters, digits, '-' and '.')",
            );
        }
        _ => {}
    }
    let cpu = fields.number(&["cpu", "cores"], 1..=8192).unwrap_or(1) as u32;
    let memory = fields
        .number(&["memory"], 16..=4 * 1024 * 1024)
        .unwrap_or(512);
    let swap = fields.number(&["swap"], 0..=4 * 1024 * 1024).unwrap_or(512);
    let disk = fields.number(&["disk"], 1..=128 * 1024).unwrap_or(8);
    let node = fields.text(&["node", "nodeId"]);
    let storage = fields.text(&["storage"]);
    if let Some(storage) = &storage
        && !valid_storage_name(storage)
    {
        fields.bad("storage", "must be a storage name");
    }
    let ostype = fields.text(&["ostype"]);
    if let Some(ostype) = &ostype
        && !OS_TYPES.contains(&ostype.as_str())
    {
        fields.bad("ostype", format!("must be one of {}", OS_TYPES.join(", ")));
    }
    let password = match fields.raw(&["password"]) {
        Some(Value::String(password)) if password.chars().count() >= 5 => Some(password.clone()),
        Some(Value::String(_)) => {
            fields.bad("password", "must be at least 5 characters");
            None
        }
        Some(_) => {
            fields.bad("password", "must be a string");
            None
        }
        None => None,
    };
    let ssh_keys = match fields.raw(&["ssh_keys", "ssh-public-keys"]).cloned() {
        None => None,
        Some(value) => {
            let keys: Option<Vec<String>> = match value {
                Value::String(text) => Some(
                    text.lines()
                        .map(str::trim)
                        .filter(|line| !line.is_empty())
                        .map(str::to_string)
                        .collect(),
                ),
                Value::Array(items) => items
                    .iter()
                    .map(|item| item.as_str().map(|text| text.trim().to_string()))
                    .collect(),
                _ => None,
            };
            match keys {
                Some(keys)
                    if !keys.is_empty()
                        && keys.iter().all(|key| {
                            key.split_whitespace().count() >= 2
                                && ["ssh-", "ecdsa-", "sk-"]
                                    .iter()
                                    .any(|prefix| key.starts_with(prefix))
                        }) =>
                {
                    Some(keys.join("\n"))
                }
                _ => {
                    fields.bad(
                        "ssh_keys",
                        "must be OpenSSH public keys (a string of lines or a list)",
                    );
                    None
                }
            }
        }
    };
    let net = match fields.raw(&["net"]).cloned() {
        None => None,
        Some(value) => match property::network(&value) {
            Ok(net) => Some(net),
            Err(reason) => {
                fields.bad("net", reason);
                None
            }
        },
    };
    let start = fields.boolean(&["start"]).unwrap_or(false);
    if let Some(variables) = fields.raw(&["variables"])
        && !variables.is_object()
    {
        fields.bad("variables", "must be an object");
    }
    fields.finish()?;
    Ok(CreateRequest {
        user,
        template: template.unwrap_or_default(),
        hostname: hostname.unwrap_or_default(),
        cpu,
        memory,
        swap,
        disk,
        node,
        storage,
        ostype,
        password,
        ssh_keys,
        net,
        start,
    })
}

/// Checks a change body against the instance's record: only the fields that change (a disk
/// grows only), and at least one of them.
pub fn parse_change(
    map: Map<String, Value>,
    record: &InstanceRecord,
) -> Result<UpdateInput, InstanceError> {
    let mut fields = Fields::new(map);
    let cpu = fields
        .number(&["cpu", "cores"], 1..=8192)
        .map(|cpu| cpu as u32);
    let memory = fields.number(&["memory"], 16..=4 * 1024 * 1024);
    let swap = fields.number(&["swap"], 0..=4 * 1024 * 1024);
    let disk = fields.number(&["disk"], 1..=128 * 1024);
    let hostname = fields.text(&["hostname", "name"]);
    if let Some(name) = &hostname
        && !valid_hostname(name)
    {
        fields.bad(
            "hostname",
            "must be a DNS name (letters, digits, '-' and '.')",
        );
    }
    if let Some(disk) = disk
        && disk < record.disk
    {
        fields.bad("disk", format!("can only grow (now {} GiB)", record.disk));
    }
    let known = ["cpu", "cores", "memory", "swap", "disk", "hostname", "name"];
    let unknown: Vec<String> = fields
        .map
        .keys()
        .filter(|key| !known.contains(&key.as_str()))
        .cloned()
        .collect();
    for key in unknown {
        fields.bad(&key, "cannot be changed here");
    }
    fields.finish()?;
    let change = UpdateInput {
        cpu: cpu.filter(|cpu| *cpu != record.cpu),
        memory: memory.filter(|memory| *memory != record.memory),
        swap: swap.filter(|swap| *swap != record.swap),
        disk: disk.filter(|disk| *disk != record.disk),
        hostname: hostname.filter(|name| *name != record.hostname),
    };
    if change == UpdateInput::default() {
        return Err(InstanceError::invalid_field(
            "body",
            "nothing to change: give cpu, memory, swap, disk or hostname with a new value",
        ));
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<CreateRequest, InstanceError> {
        match value {
            Value::Object(map) => parse_create(map),
            _ => unreachable!(),
        }
    }

    #[test]
    fn create_bodies_with_aliases_and_defaults() {
        let request = parse(json!({
            "image": "debian-12", "name": "web1", "cpu": "2", "memory": "1024",
            "nodeId": "pve1", "variables": {"a": 1}, "ssh_keys": ["ssh-ed25519 AAAA x"],
            "start": 1
        }))
        .unwrap();
        assert_eq!(request.template, "debian-12");
        assert_eq!(request.hostname, "web1");
        assert_eq!(
            (request.cpu, request.memory, request.swap, request.disk),
            (2, 1024, 512, 8)
        );
        assert_eq!(request.node.as_deref(), Some("pve1"));
        assert_eq!(request.ssh_keys.as_deref(), Some("ssh-ed25519 AAAA x"));
        assert!(request.start);
    }

    #[test]
    fn bad_create_bodies_name_every_field() {
        let cases: &[(Value, &[&str])] = &[
            (json!({}), &["template", "hostname"]),
            (json!({"template": "t", "hostname": "-bad"}), &["hostname"]),
            (
                json!({"template": "t", "hostname": "h", "cpu": 0, "memory": 8, "disk": "x", "swap": -1}),
                &["cpu", "memory", "disk", "swap"],
            ),
            (
                json!({"template": "t", "hostname": "h", "ostype": "windows", "password": "abc"}),
                &["ostype", "password"],
            ),
            (
                json!({"template": "t", "hostname": "h", "ssh_keys": "not a key", "net": {"ip": "x"}}),
                &["ssh_keys", "net"],
            ),
            (
                json!({"template": "t", "hostname": "h", "start": "maybe", "variables": 3, "storage": "a b"}),
                &["start", "variables", "storage"],
            ),
            (
                json!({"template": 5.5, "hostname": "h", "cpu": 1.5}),
                &["cpu"],
            ),
        ];
        for (body, names) in cases {
            let error = parse(body.clone()).expect_err(&body.to_string());
            let InstanceError::Invalid(fields) = error else {
                panic!("{body}: {error}");
            };
            for name in *names {
                assert!(
                    fields.iter().any(|(field, _)| field == name),
                    "{body}: {name} missing in {fields:?}"
                );
            }
        }
    }

    #[test]
    fn host_names() {
        let cases = [
            ("web1", true),
            ("web-1.example.com", true),
            ("", false),
            ("-web", false),
            ("web_1", false),
            ("a..b", false),
        ];
        for (name, valid) in cases {
            assert_eq!(valid_hostname(name), valid, "{name}");
        }
        assert!(!valid_hostname(&"a".repeat(64)));
    }
}
