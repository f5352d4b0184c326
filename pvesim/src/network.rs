//! Node network interfaces as Proxmox keeps them: the running configuration and the pending one
//! (`/etc/network/interfaces.new`) that `PUT /nodes/{node}/network` applies, with the parameter
//! schemas of the network endpoints. Pure data; no IO.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::ApiError;
use crate::schema::{
    Kind, Property, check_cidr_v4, check_cidr_v6, check_config_id_list, check_interface,
    check_interface_list, check_ipv4, check_ipv4_mask, check_ipv6, check_node, check_vlan_list,
    formatted, integer, text, text_max,
};

/// Interface types a change may name.
pub const TYPES: &[&str] = &[
    "bridge",
    "bond",
    "eth",
    "alias",
    "vlan",
    "OVSBridge",
    "OVSBond",
    "OVSPort",
    "OVSIntPort",
    "vnet",
    "unknown",
];

/// Interface types the list may be filtered by.
const LIST_TYPES: &[&str] = &[
    "bridge",
    "bond",
    "eth",
    "alias",
    "vlan",
    "OVSBridge",
    "OVSBond",
    "OVSPort",
    "OVSIntPort",
    "vnet",
    "any_bridge",
    "any_local_bridge",
];

fn node() -> Property {
    Property::required("node", formatted(check_node))
}

fn interface() -> Property {
    Property::required(
        "iface",
        Kind::Text {
            min_length: Some(2),
            max_length: Some(20),
            pattern: None,
            format: Some(check_interface),
        },
    )
}

/// `GET /nodes/{node}/network`.
pub fn list_parameters() -> Vec<Property> {
    vec![
        node(),
        Property::optional("type", Kind::Enumeration(LIST_TYPES)),
    ]
}

/// `GET` and `DELETE /nodes/{node}/network/{iface}`.
pub fn interface_parameters() -> Vec<Property> {
    vec![node(), interface()]
}

/// `PUT /nodes/{node}/network` (apply) and `DELETE /nodes/{node}/network` (revert).
pub fn node_parameters() -> Vec<Property> {
    vec![node()]
}

/// `POST /nodes/{node}/network` (`update` false) and `PUT /nodes/{node}/network/{iface}` (true).
pub fn change_parameters(update: bool) -> Vec<Property> {
    let mut properties = vec![
        node(),
        interface(),
        Property::optional("address", formatted(check_ipv4)).requires("netmask"),
        Property::optional("address6", formatted(check_ipv6)).requires("netmask6"),
        Property::optional("autostart", Kind::Boolean),
        Property::optional("bond-primary", formatted(check_interface)),
        Property::optional(
            "bond_mode",
            Kind::Enumeration(&[
                "balance-rr",
                "active-backup",
                "balance-xor",
                "broadcast",
                "802.3ad",
                "balance-tlb",
                "balance-alb",
                "balance-slb",
                "lacp-balance-slb",
                "lacp-balance-tcp",
            ]),
        ),
        Property::optional(
            "bond_xmit_hash_policy",
            Kind::Enumeration(&["layer2", "layer2+3", "layer3+4"]),
        ),
        Property::optional("bridge_ports", formatted(check_interface_list)),
        Property::optional("bridge_vids", formatted(check_vlan_list)),
        Property::optional("bridge_vlan_aware", Kind::Boolean),
        Property::optional("cidr", formatted(check_cidr_v4)),
        Property::optional("cidr6", formatted(check_cidr_v6)),
        Property::optional("comments", text()),
        Property::optional("comments6", text()),
        Property::optional("gateway", formatted(check_ipv4)),
        Property::optional("gateway6", formatted(check_ipv6)),
        Property::optional("mtu", integer(Some(1280), Some(65520))),
        Property::optional("netmask", formatted(check_ipv4_mask)).requires("address"),
        Property::optional("netmask6", integer(Some(0), Some(128))).requires("address6"),
        Property::optional("ovs_bonds", formatted(check_interface_list)),
        Property::optional("ovs_bridge", formatted(check_interface)),
        Property::optional("ovs_options", text_max(1024)),
        Property::optional("ovs_ports", formatted(check_interface_list)),
        Property::optional("ovs_tag", integer(Some(1), Some(4094))),
        Property::optional("slaves", formatted(check_interface_list)),
        Property::required("type", Kind::Enumeration(TYPES)),
        Property::optional("vlan-id", integer(Some(1), Some(4094))),
        Property::optional("vlan-raw-device", formatted(check_interface)),
    ];
    if update {
        properties.push(Property::optional(
            "delete",
            formatted(check_config_id_list),
        ));
    }
    properties
}

/// One interface: its type and its settings as written in the interfaces file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Interface {
    /// `bridge`, `eth`, `bond`...
    pub kind: String,
    /// Settings (`cidr`, `gateway`, `bridge_ports`, `autostart`...), values as written.
    pub settings: BTreeMap<String, String>,
}

impl Interface {
    /// A bridge with these ports and an optional IPv4 address.
    pub fn bridge(ports: &str, cidr: Option<&str>) -> Interface {
        let mut settings = BTreeMap::from([
            ("autostart".to_string(), "1".to_string()),
            ("bridge_ports".to_string(), ports.to_string()),
            ("bridge_stp".to_string(), "off".to_string()),
            ("bridge_fd".to_string(), "0".to_string()),
        ]);
        if let Some(cidr) = cidr {
            settings.insert("cidr".into(), cidr.into());
        }
        Interface {
            kind: "bridge".into(),
            settings,
        }
    }
}

/// A node's network configuration: what runs, and what waits to be applied.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NodeNetwork {
    /// The running configuration by interface name.
    pub active: BTreeMap<String, Interface>,
    /// The pending configuration, when a change has not been applied yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<BTreeMap<String, Interface>>,
}

/// Settings kept as integers or booleans in answers.
fn typed(key: &str, value: &str) -> Value {
    match key {
        "autostart" | "bridge_vlan_aware" => json!(i64::from(value == "1")),
        "mtu" | "netmask6" | "ovs_tag" | "vlan-id" | "priority" => value
            .parse::<i64>()
            .map_or_else(|_| json!(value), |number| json!(number)),
        _ => json!(value),
    }
}

const SETTINGS: &[&str] = &[
    "address",
    "address6",
    "autostart",
    "bond-primary",
    "bond_mode",
    "bond_xmit_hash_policy",
    "bridge_ports",
    "bridge_vids",
    "bridge_vlan_aware",
    "cidr",
    "cidr6",
    "comments",
    "comments6",
    "gateway",
    "gateway6",
    "mtu",
    "netmask",
    "netmask6",
    "ovs_bonds",
    "ovs_bridge",
    "ovs_options",
    "ovs_ports",
    "ovs_tag",
    "slaves",
    "vlan-id",
    "vlan-raw-device",
];

fn prefix_mask(prefix: u32) -> String {
    let bits = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix.min(32))
    };
    std::net::Ipv4Addr::from(bits).to_string()
}

impl NodeNetwork {
    /// A fresh node: one NIC and the default bridge on it.
    pub fn fresh(index: usize) -> NodeNetwork {
        let nic = Interface {
            kind: "eth".into(),
            settings: BTreeMap::new(),
        };
        let gateway = "10.0.0.254".to_string();
        let mut bridge = Interface::bridge("eno1", Some(&format!("10.0.0.{}/24", index + 1)));
        bridge.settings.insert("gateway".into(), gateway);
        NodeNetwork {
            active: BTreeMap::from([("eno1".to_string(), nic), ("vmbr0".to_string(), bridge)]),
            pending: None,
        }
    }

    /// The configuration answers show: the pending one when it exists (as Proxmox reads
    /// `interfaces.new` first).
    pub fn current(&self) -> &BTreeMap<String, Interface> {
        self.pending.as_ref().unwrap_or(&self.active)
    }

    fn view(&self, name: &str, interface: &Interface, priority: usize) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("iface".into(), json!(name));
        object.insert("type".into(), json!(interface.kind));
        object.insert("priority".into(), json!(priority));
        let has_address = interface.settings.contains_key("cidr");
        object.insert(
            "method".into(),
            json!(if has_address { "static" } else { "manual" }),
        );
        object.insert(
            "method6".into(),
            json!(if interface.settings.contains_key("cidr6") {
                "static"
            } else {
                "manual"
            }),
        );
        let mut families = vec![json!("inet")];
        if interface.settings.contains_key("cidr6") {
            families.push(json!("inet6"));
        }
        object.insert("families".into(), Value::Array(families));
        for (key, value) in &interface.settings {
            object.insert(key.clone(), typed(key, value));
        }
        if let Some(cidr) = interface.settings.get("cidr")
            && let Some((address, prefix)) = cidr.split_once('/')
        {
            object.insert("address".into(), json!(address));
            object.insert(
                "netmask".into(),
                json!(prefix_mask(prefix.parse().unwrap_or(32))),
            );
        }
        if let Some(cidr6) = interface.settings.get("cidr6")
            && let Some((address, prefix)) = cidr6.split_once('/')
        {
            object.insert("address6".into(), json!(address));
            object.insert(
                "netmask6".into(),
                json!(prefix.parse::<u32>().unwrap_or(64)),
            );
        }
        if self.active.contains_key(name) {
            object.insert("active".into(), json!(1));
        }
        if interface.kind == "eth" {
            object.insert("exists".into(), json!(1));
        }
        Value::Object(object)
    }

    /// `GET /nodes/{node}/network`, filtered by type.
    pub fn list(&self, kind: Option<&str>) -> Vec<Value> {
        self.current()
            .iter()
            .enumerate()
            .filter(|(_, (_, interface))| match kind {
                None => true,
                Some("any_bridge" | "any_local_bridge") => {
                    interface.kind == "bridge" || interface.kind == "OVSBridge"
                }
                Some(kind) => interface.kind == kind,
            })
            .map(|(index, (name, interface))| self.view(name, interface, index + 3))
            .collect()
    }

    /// A short description of the pending change, as the list's `changes` attribute.
    pub fn changes(&self) -> Option<String> {
        let pending = self.pending.as_ref()?;
        let mut text = String::new();
        for (name, interface) in pending {
            if self.active.get(name) != Some(interface) {
                text.push_str(&format!("+iface {name} ({})\n", interface.kind));
            }
        }
        for name in self.active.keys() {
            if !pending.contains_key(name) {
                text.push_str(&format!("-iface {name}\n"));
            }
        }
        Some(text)
    }

    /// `GET /nodes/{node}/network/{iface}`.
    pub fn get(&self, name: &str) -> Result<Value, ApiError> {
        let interface = self
            .current()
            .get(name)
            .ok_or_else(|| ApiError::parameter("iface", "interface does not exist"))?;
        let priority = self
            .current()
            .keys()
            .position(|key| key == name)
            .unwrap_or(0);
        Ok(self.view(name, interface, priority + 3))
    }

    /// `POST` (create) or `PUT` (update) of one interface: the change is pending until applied.
    pub fn change(
        &mut self,
        name: &str,
        parameters: &BTreeMap<String, String>,
        update: bool,
    ) -> Result<(), ApiError> {
        let mut config = self.current().clone();
        let kind = parameters["type"].clone();
        let mut interface = match (config.get(name), update) {
            (Some(existing), true) => {
                if existing.kind != kind {
                    return Err(ApiError::parameter("type", "interface type mismatch"));
                }
                existing.clone()
            }
            (None, true) => {
                return Err(ApiError::parameter("iface", "interface does not exist"));
            }
            (Some(_), false) => {
                return Err(ApiError::parameter("iface", "interface already exists"));
            }
            (None, false) => Interface {
                kind: kind.clone(),
                settings: BTreeMap::new(),
            },
        };
        if kind == "bridge" && !name.starts_with("vmbr") && !update {
            return Err(ApiError::parameter(
                "iface",
                "invalid bridge name - name must start with 'vmbr'",
            ));
        }
        if let Some(deletes) = parameters.get("delete") {
            for key in deletes.split([',', ';', ' ']).filter(|key| !key.is_empty()) {
                interface.settings.remove(key);
                if key == "cidr" || key == "address" || key == "netmask" {
                    interface.settings.remove("cidr");
                }
            }
        }
        for (key, value) in parameters {
            if !SETTINGS.contains(&key.as_str()) || key == "address" || key == "netmask" {
                continue;
            }
            let value = match key.as_str() {
                "autostart" | "bridge_vlan_aware" => {
                    let on = crate::schema::parse_boolean(value).unwrap_or(false);
                    if on { "1" } else { "0" }.to_string()
                }
                _ => value.clone(),
            };
            interface.settings.insert(key.clone(), value);
        }
        if let (Some(address), Some(mask)) = (parameters.get("address"), parameters.get("netmask"))
        {
            let bits = mask
                .parse::<std::net::Ipv4Addr>()
                .map(|mask| u32::from(mask).leading_ones())
                .unwrap_or(32);
            interface
                .settings
                .insert("cidr".into(), format!("{address}/{bits}"));
        }
        if let Some(ports) = interface.settings.get("bridge_ports") {
            for port in ports.split([',', ';', ' ']).filter(|port| !port.is_empty()) {
                if !config.contains_key(port) {
                    return Err(ApiError::failed(format!(
                        "bridge port '{port}' does not exist"
                    )));
                }
            }
        }
        config.insert(name.to_string(), interface);
        self.pending = Some(config);
        Ok(())
    }

    /// `DELETE /nodes/{node}/network/{iface}`: removal is pending too.
    pub fn remove(&mut self, name: &str) -> Result<(), ApiError> {
        let mut config = self.current().clone();
        if config.remove(name).is_none() {
            return Err(ApiError::parameter("iface", "interface does not exist"));
        }
        self.pending = Some(config);
        Ok(())
    }

    /// Applies the pending configuration; returns the task log lines.
    pub fn apply(&mut self) -> Vec<String> {
        match self.pending.take() {
            Some(pending) => {
                let mut log = vec!["applying pending network configuration".to_string()];
                for name in pending.keys() {
                    if !self.active.contains_key(name) {
                        log.push(format!("info: adding interface {name}"));
                    }
                }
                for name in self.active.keys() {
                    if !pending.contains_key(name) {
                        log.push(format!("info: removing interface {name}"));
                    }
                }
                self.active = pending;
                log
            }
            None => vec!["no pending network changes".to_string()],
        }
    }

    /// Replaces the bridges of the running configuration with the host's (LXC-backed mode),
    /// keeping every other interface.
    pub fn adopt_host_bridges(&mut self, bridges: &BTreeMap<String, Interface>) {
        self.active
            .retain(|name, interface| interface.kind != "bridge" || bridges.contains_key(name));
        for (name, bridge) in bridges {
            self.active.insert(name.clone(), bridge.clone());
        }
        for port in bridges
            .values()
            .filter_map(|bridge| bridge.settings.get("bridge_ports"))
            .flat_map(|ports| ports.split(' '))
            .filter(|port| !port.is_empty())
        {
            self.active
                .entry(port.to_string())
                .or_insert_with(|| Interface {
                    kind: "eth".into(),
                    settings: BTreeMap::new(),
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameters(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn changes_stay_pending_until_applied() {
        let mut network = NodeNetwork::fresh(0);
        network
            .change(
                "vmbr1",
                &parameters(&[
                    ("type", "bridge"),
                    ("bridge_ports", ""),
                    ("autostart", "yes"),
                ]),
                false,
            )
            .unwrap();
        assert!(!network.active.contains_key("vmbr1"));
        let listed = network.list(Some("bridge"));
        assert_eq!(listed.len(), 2);
        assert!(listed[1].get("active").is_none(), "{}", listed[1]);
        assert_eq!(listed[1]["autostart"], 1);
        assert!(network.changes().unwrap().contains("+iface vmbr1"));
        network
            .change(
                "vmbr0",
                &parameters(&[
                    ("type", "bridge"),
                    ("address", "192.168.5.2"),
                    ("netmask", "255.255.255.0"),
                ]),
                true,
            )
            .unwrap();
        assert_eq!(network.get("vmbr0").unwrap()["cidr"], "192.168.5.2/24");
        assert_eq!(network.active["vmbr0"].settings["cidr"], "10.0.0.1/24");
        network.apply();
        assert_eq!(network.active["vmbr0"].settings["cidr"], "192.168.5.2/24");
        assert!(network.active.contains_key("vmbr1"));
        assert_eq!(network.changes(), None);
        assert_eq!(
            network.change("vmbr0", &parameters(&[("type", "eth")]), true),
            Err(ApiError::parameter("type", "interface type mismatch"))
        );
    }
}
