//! LXC property strings (`net0`, `rootfs`, ...): comma-separated `key=value` lists whose default
//! key may be written bare, and the disk sizes inside them.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::Value;

/// Splits a property string into its pairs, in order; a bare value belongs to `default_key`.
pub fn parse(text: &str, default_key: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for part in text.split(',').filter(|part| !part.is_empty()) {
        match part.split_once('=') {
            Some((key, value)) => {
                if key.is_empty() {
                    return Err(format!("empty key in {part:?}"));
                }
                if pairs
                    .iter()
                    .any(|(existing, _): &(String, String)| existing == key)
                {
                    return Err(format!("duplicate key {key:?}"));
                }
                pairs.push((key.to_string(), value.to_string()));
            }
            None => match default_key {
                Some(key) if !pairs.iter().any(|(existing, _)| existing == key) => {
                    pairs.push((key.to_string(), part.to_string()));
                }
                _ => return Err(format!("{part:?} has no key")),
            },
        }
    }
    Ok(pairs)
}

/// Joins pairs back into a property string.
pub fn format(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The value of `key` among `pairs`.
pub fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
}

/// A Proxmox disk size (`8G`, `512M`, `1T`, bytes without a unit) in GiB, rounded up.
pub fn size_in_gib(text: &str) -> Option<u64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((index, _)) => (&text[..index], &text[index..]),
        None => (text, ""),
    };
    let number: f64 = number.parse().ok().filter(|value: &f64| *value >= 0.0)?;
    let factor = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "K" | "KB" | "KIB" => 1024.0,
        "M" | "MB" | "MIB" => 1024.0 * 1024.0,
        "G" | "GB" | "GIB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TB" | "TIB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let gib = number * factor / (1024.0 * 1024.0 * 1024.0);
    Some(gib.ceil() as u64)
}

/// The size in GiB of a `rootfs` value such as `local-lvm:vm-101-disk-0,size=8G`.
pub fn rootfs_size_gib(rootfs: &str) -> Option<u64> {
    let pairs = parse(rootfs, Some("volume")).ok()?;
    size_in_gib(get(&pairs, "size")?)
}

/// The `rootfs` parameter that makes Proxmox allocate a new volume of `gib` GiB on `storage`.
pub fn new_rootfs(storage: &str, gib: u64) -> String {
    format!("{storage}:{gib}")
}

fn valid_ipv4_cidr(text: &str) -> bool {
    text.split_once('/').is_some_and(|(address, prefix)| {
        address.parse::<Ipv4Addr>().is_ok() && prefix.parse::<u8>().is_ok_and(|bits| bits <= 32)
    })
}

fn valid_ipv6_cidr(text: &str) -> bool {
    text.split_once('/').is_some_and(|(address, prefix)| {
        address.parse::<Ipv6Addr>().is_ok() && prefix.parse::<u8>().is_ok_and(|bits| bits <= 128)
    })
}

fn check_net_value(key: &str, value: &str) -> Result<(), String> {
    let boolean = || matches!(value, "0" | "1");
    let ok = match key {
        "name" => {
            !value.is_empty()
                && value.len() <= 15
                && value
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
        }
        "bridge" => {
            !value.is_empty()
                && value.len() <= 15
                && value
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
        }
        "ip" => matches!(value, "dhcp" | "manual") || valid_ipv4_cidr(value),
        "ip6" => matches!(value, "auto" | "dhcp" | "manual") || valid_ipv6_cidr(value),
        "gw" => value.parse::<Ipv4Addr>().is_ok(),
        "gw6" => value.parse::<Ipv6Addr>().is_ok(),
        "firewall" | "link_down" => boolean(),
        "tag" => value
            .parse::<u16>()
            .is_ok_and(|tag| (1..=4094).contains(&tag)),
        "mtu" => value
            .parse::<u32>()
            .is_ok_and(|mtu| (64..=65535).contains(&mtu)),
        "rate" => value.parse::<f64>().is_ok_and(|rate| rate >= 0.0),
        "hwaddr" => {
            let parts: Vec<&str> = value.split(':').collect();
            parts.len() == 6
                && parts
                    .iter()
                    .all(|part| part.len() == 2 && part.bytes().all(|b| b.is_ascii_hexdigit()))
        }
        "type" => value == "veth",
        "trunks" => value.split(';').all(|vid| {
            vid.parse::<u16>()
                .is_ok_and(|vid| (1..=4094).contains(&vid))
        }),
        _ => return Err(format!("unknown network setting {key:?}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("invalid value {value:?} for {key}"))
    }
}

/// The `net0` value for the API's `net` field: a property string or an object of the same keys
/// (`vlan` is accepted for `tag`). `name` defaults to `eth0`, `bridge` to `vmbr0`, `ip` to
/// `dhcp`. The error is a sentence for the caller.
pub fn network(input: &Value) -> Result<String, String> {
    let mut pairs: Vec<(String, String)> = match input {
        Value::String(text) => parse(text, None)?,
        Value::Object(map) => {
            let mut pairs = Vec::new();
            for (key, value) in map {
                let key = if key == "vlan" { "tag" } else { key.as_str() };
                let value = match value {
                    Value::String(text) => text.clone(),
                    Value::Number(number) => number.to_string(),
                    Value::Bool(flag) => if *flag { "1" } else { "0" }.to_string(),
                    Value::Null => continue,
                    _ => return Err(format!("{key} must be a string, number or boolean")),
                };
                pairs.push((key.to_string(), value));
            }
            pairs
        }
        _ => return Err("must be a property string or an object".into()),
    };
    for (key, default) in [("name", "eth0"), ("bridge", "vmbr0"), ("ip", "dhcp")] {
        if get(&pairs, key).is_none() {
            pairs.push((key.to_string(), default.to_string()));
        }
    }
    for (key, value) in &pairs {
        check_net_value(key, value)?;
    }
    let order = [
        "name",
        "bridge",
        "firewall",
        "gw",
        "gw6",
        "hwaddr",
        "ip",
        "ip6",
        "link_down",
        "mtu",
        "rate",
        "tag",
        "trunks",
        "type",
    ];
    pairs.sort_by_key(|(key, _)| order.iter().position(|known| known == key));
    Ok(format(&pairs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type Pairs = &'static [(&'static str, &'static str)];

    #[test]
    fn property_strings_round_trip() {
        let cases: &[(&str, Option<&str>, Result<Pairs, &str>)] = &[
            (
                "local-lvm:vm-101-disk-0,size=8G",
                Some("volume"),
                Ok(&[("volume", "local-lvm:vm-101-disk-0"), ("size", "8G")]),
            ),
            (
                "name=eth0,bridge=vmbr0,ip=dhcp",
                None,
                Ok(&[("name", "eth0"), ("bridge", "vmbr0"), ("ip", "dhcp")]),
            ),
            ("", None, Ok(&[])),
            ("eth0", None, Err("has no key")),
            ("a=1,a=2", None, Err("duplicate")),
            ("=1", None, Err("empty key")),
            ("x,y", Some("volume"), Err("has no key")),
        ];
        for (text, default_key, expected) in cases {
            let parsed = parse(text, *default_key);
            match expected {
                Ok(pairs) => {
                    let parsed = parsed.unwrap_or_else(|error| panic!("{text}: {error}"));
                    let wanted: Vec<(String, String)> = pairs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    assert_eq!(parsed, wanted, "{text}");
                    if default_key.is_none() {
                        assert_eq!(format(&parsed), *text);
                    }
                }
                Err(reason) => {
                    let error = parsed.expect_err(text);
                    assert!(error.contains(reason), "{text}: {error}");
                }
            }
        }
    }

    #[test]
    fn sizes_are_read_in_gib() {
        let cases: &[(&str, Option<u64>)] = &[
            ("8G", Some(8)),
            ("8g", Some(8)),
            ("512M", Some(1)),
            ("1536M", Some(2)),
            ("1T", Some(1024)),
            ("1.5G", Some(2)),
            ("1073741824", Some(1)),
            ("0", Some(0)),
            ("", None),
            ("8X", None),
            ("-1G", None),
        ];
        for (text, expected) in cases {
            assert_eq!(size_in_gib(text), *expected, "{text}");
        }
        assert_eq!(rootfs_size_gib("local-lvm:vm-101-disk-0,size=8G"), Some(8));
        assert_eq!(rootfs_size_gib("local:101/vm-101-disk-0.raw"), None);
        assert_eq!(new_rootfs("local-lvm", 8), "local-lvm:8");
    }

    #[test]
    fn network_settings_are_checked_and_completed() {
        let cases: &[(Value, Result<&str, &str>)] = &[
            (json!({}), Ok("name=eth0,bridge=vmbr0,ip=dhcp")),
            (
                json!({"bridge": "vmbr1", "ip": "10.0.0.5/24", "gw": "10.0.0.1", "firewall": true, "vlan": 20}),
                Ok("name=eth0,bridge=vmbr1,firewall=1,gw=10.0.0.1,ip=10.0.0.5/24,tag=20"),
            ),
            (
                json!("name=eth1,ip6=auto,rate=12.5"),
                Ok("name=eth1,bridge=vmbr0,ip=dhcp,ip6=auto,rate=12.5"),
            ),
            (
                json!({"ip": "10.0.0.5"}),
                Err("invalid value \"10.0.0.5\" for ip"),
            ),
            (json!({"ip": "10.0.0.5/33"}), Err("for ip")),
            (json!({"gw": "x"}), Err("for gw")),
            (json!({"tag": 5000}), Err("for tag")),
            (json!({"mtu": 10}), Err("for mtu")),
            (json!({"hwaddr": "BC:24:11:2E:C5"}), Err("for hwaddr")),
            (json!({"bridge": "vmbr0,ip=1"}), Err("for bridge")),
            (json!({"colour": "red"}), Err("unknown network setting")),
            (json!({"ip": ["a"]}), Err("must be a string")),
            (json!(42), Err("property string or an object")),
        ];
        for (input, expected) in cases {
            let result = network(input);
            match expected {
                Ok(text) => assert_eq!(result.as_deref(), Ok(*text), "{input}"),
                Err(reason) => {
                    let error = result.expect_err(&input.to_string());
                    assert!(error.contains(reason), "{input}: {error}");
                }
            }
        }
    }
}
