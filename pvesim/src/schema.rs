//! A small parameter schema engine that checks values the way Proxmox's JSON schema code does:
//! loose scalar typing, ranges, enumerations, named formats and comma-separated property strings.

use shell::sync::MutexExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, Mutex};

use regex::Regex;

/// A named format check: `Err` carries Proxmox's message (usually ending in a newline).
pub type FormatCheck = fn(&str) -> Result<(), String>;

/// The type and constraints of one parameter or sub-property.
#[derive(Clone, Copy)]
pub enum Kind {
    /// An integer, possibly sent as a numeric string.
    Integer {
        minimum: Option<i64>,
        maximum: Option<i64>,
    },
    /// A decimal number, possibly sent as a numeric string.
    Number {
        minimum: Option<f64>,
        maximum: Option<f64>,
    },
    /// `0|1|true|false|yes|no|on|off`.
    Boolean,
    /// Free text with optional limits.
    Text {
        min_length: Option<usize>,
        max_length: Option<usize>,
        pattern: Option<&'static str>,
        format: Option<FormatCheck>,
    },
    /// One of a fixed list of values.
    Enumeration(&'static [&'static str]),
    /// A comma-separated `key=value` property string with its own sub-schema.
    PropertyString(&'static [Property]),
}

/// One parameter of an endpoint, or one key of a property string.
#[derive(Clone, Copy)]
pub struct Property {
    /// The name; for indexed parameters the prefix (`net` for `net[n]`).
    pub name: &'static str,
    /// The value's type.
    pub kind: Kind,
    /// Whether the parameter may be left out.
    pub optional: bool,
    /// In a property string: whether a bare value (without `key=`) belongs to this key.
    pub default_key: bool,
    /// For indexed parameters (`net[n]`): how many indexes exist (`net0` .. `net{count-1}`).
    pub count: Option<u32>,
    /// Another parameter that must be given whenever this one is (the schema's `requires`).
    pub requires: Option<&'static str>,
}

impl Property {
    /// A required parameter.
    pub const fn required(name: &'static str, kind: Kind) -> Property {
        Property {
            name,
            kind,
            optional: false,
            default_key: false,
            count: None,
            requires: None,
        }
    }

    /// An optional parameter.
    pub const fn optional(name: &'static str, kind: Kind) -> Property {
        Property {
            name,
            kind,
            optional: true,
            default_key: false,
            count: None,
            requires: None,
        }
    }

    /// An optional indexed parameter family such as `net[n]`.
    pub const fn indexed(name: &'static str, count: u32, kind: Kind) -> Property {
        Property {
            name,
            kind,
            optional: true,
            default_key: false,
            count: Some(count),
            requires: None,
        }
    }

    /// Names a parameter that must be given together with this one.
    pub const fn requires(mut self, other: &'static str) -> Property {
        self.requires = Some(other);
        self
    }

    /// Marks this key as the default key of a property string.
    pub const fn default_key(mut self) -> Property {
        self.default_key = true;
        self
    }
}

/// Shorthand constructors for kinds.
pub const fn integer(minimum: Option<i64>, maximum: Option<i64>) -> Kind {
    Kind::Integer { minimum, maximum }
}

/// A number kind.
pub const fn number(minimum: Option<f64>, maximum: Option<f64>) -> Kind {
    Kind::Number { minimum, maximum }
}

/// A plain text kind.
pub const fn text() -> Kind {
    Kind::Text {
        min_length: None,
        max_length: None,
        pattern: None,
        format: None,
    }
}

/// A text kind with a maximum length.
pub const fn text_max(max_length: usize) -> Kind {
    Kind::Text {
        min_length: None,
        max_length: Some(max_length),
        pattern: None,
        format: None,
    }
}

/// A text kind with a named format check.
pub const fn formatted(format: FormatCheck) -> Kind {
    Kind::Text {
        min_length: None,
        max_length: None,
        pattern: None,
        format: Some(format),
    }
}

/// A text kind that must match a regular expression as a whole.
pub const fn pattern(pattern: &'static str) -> Kind {
    Kind::Text {
        min_length: None,
        max_length: None,
        pattern: Some(pattern),
        format: None,
    }
}

/// Errors keyed by parameter name, as Proxmox reports them in `errors`.
pub type Errors = BTreeMap<String, String>;

const NOT_IN_SCHEMA: &str =
    "property is not defined in schema and the schema does not allow additional properties";
const MISSING: &str = "property is missing and it is not optional";

static REGEX_CACHE: LazyLock<Mutex<HashMap<&'static str, Regex>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn whole_match(pattern: &'static str, value: &str) -> bool {
    let mut cache = REGEX_CACHE.locked();
    let regex = cache.entry(pattern).or_insert_with(|| {
        Regex::new(&format!("^(?:{pattern})$")).expect("schema patterns are valid")
    });
    regex.is_match(value)
}

/// Finds the schema entry for a parameter name, including indexed names such as `net3`.
pub fn lookup<'a>(schema: &'a [Property], name: &str) -> Option<&'a Property> {
    schema.iter().find(|property| match property.count {
        None => property.name == name,
        Some(count) => name
            .strip_prefix(property.name)
            .filter(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
            .filter(|index| index.len() == 1 || !index.starts_with('0'))
            .and_then(|index| index.parse::<u32>().ok())
            .is_some_and(|index| index < count),
    })
}

/// Parses a boolean the way Proxmox does.
pub fn parse_boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Parses an integer the way Proxmox does (optional sign, decimal digits).
pub fn parse_integer(value: &str) -> Option<i64> {
    let digits = value.strip_prefix(['-', '+']).unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn parse_number(value: &str) -> Option<f64> {
    if whole_match(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", value) {
        value.parse().ok()
    } else {
        None
    }
}

/// Checks one value against a kind; `path` names it in nested errors.
pub fn check_value(path: &str, kind: &Kind, value: &str, errors: &mut Errors) {
    let mut fail = |message: String| {
        errors.insert(path.to_string(), message);
    };
    match kind {
        Kind::Integer { minimum, maximum } => {
            let Some(number) = parse_integer(value) else {
                return fail(format!("type check ('integer') failed - got '{value}'"));
            };
            if let Some(maximum) = maximum.filter(|maximum| number > *maximum) {
                return fail(format!("value must have a maximum value of {maximum}"));
            }
            if let Some(minimum) = minimum.filter(|minimum| number < *minimum) {
                fail(format!("value must have a minimum value of {minimum}"));
            }
        }
        Kind::Number { minimum, maximum } => {
            let Some(number) = parse_number(value) else {
                return fail(format!("type check ('number') failed - got '{value}'"));
            };
            if let Some(maximum) = maximum.filter(|maximum| number > *maximum) {
                return fail(format!("value must have a maximum value of {maximum}"));
            }
            if let Some(minimum) = minimum.filter(|minimum| number < *minimum) {
                fail(format!("value must have a minimum value of {minimum}"));
            }
        }
        Kind::Boolean => {
            if parse_boolean(value).is_none() {
                fail(format!("type check ('boolean') failed - got '{value}'"));
            }
        }
        Kind::Text {
            min_length,
            max_length,
            pattern,
            format,
        } => {
            if let Some(format) = format
                && let Err(message) = format(value)
            {
                return fail(format!("invalid format - {message}"));
            }
            if let Some(pattern) = pattern
                && !whole_match(pattern, value)
            {
                return fail("value does not match the regex pattern".to_string());
            }
            let length = value.chars().count();
            if let Some(max_length) = max_length.filter(|max_length| length > *max_length) {
                return fail(format!("value may only be {max_length} characters long"));
            }
            if let Some(min_length) = min_length.filter(|min_length| length < *min_length) {
                fail(format!(
                    "value must be at least {min_length} characters long"
                ));
            }
        }
        Kind::Enumeration(values) => {
            if !values.contains(&value) {
                fail(format!(
                    "value '{value}' does not have a value in the enumeration '{}'",
                    values.join(", ")
                ));
            }
        }
        Kind::PropertyString(format) => {
            if let Err(message) = parse_property_string(path, format, value) {
                fail(message);
            }
        }
    }
}

/// Checks a parameter map against a schema and returns every error, keyed by parameter.
pub fn verify(schema: &[Property], parameters: &BTreeMap<String, String>) -> Result<(), Errors> {
    let mut errors = Errors::new();
    for (name, value) in parameters {
        match lookup(schema, name) {
            None => {
                errors.insert(name.clone(), NOT_IN_SCHEMA.to_string());
            }
            Some(property) => check_value(name, &property.kind, value, &mut errors),
        }
    }
    for property in schema {
        if !property.optional && property.count.is_none() && !parameters.contains_key(property.name)
        {
            errors.insert(property.name.to_string(), MISSING.to_string());
        }
        // Proxmox reports a missing companion under the companion's name.
        if let Some(other) = property.requires
            && parameters.contains_key(property.name)
            && !parameters.contains_key(other)
        {
            errors.insert(
                other.to_string(),
                format!(
                    "missing property - '{}' requires this property",
                    property.name
                ),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Splits and checks a property string; `Err` is the whole message Proxmox puts under the parameter.
pub fn parse_property_string(
    path: &str,
    format: &[Property],
    value: &str,
) -> Result<BTreeMap<String, String>, String> {
    let mut parsed = BTreeMap::new();
    for part in value.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        let (key, item) = match part.split_once('=') {
            Some((key, item)) if !key.is_empty() && !item.is_empty() => (key.to_string(), item),
            Some(_) => {
                return Err(
                    "invalid format - missing key in comma-separated list property\n".into(),
                );
            }
            None => match format.iter().find(|property| property.default_key) {
                Some(property) => (property.name.to_string(), part),
                None => {
                    return Err(
                        "invalid format - missing key in comma-separated list property\n".into(),
                    );
                }
            },
        };
        if parsed.insert(key.clone(), item.to_string()).is_some() {
            return Err(format!(
                "invalid format - duplicate key in comma-separated list property: {key}\n"
            ));
        }
    }
    let mut errors = Errors::new();
    for (key, item) in &parsed {
        let nested = format!("{path}.{key}");
        match format.iter().find(|property| property.name == key) {
            None => {
                errors.insert(nested, NOT_IN_SCHEMA.to_string());
            }
            Some(property) => check_value(&nested, &property.kind, item, &mut errors),
        }
    }
    for property in format {
        if !property.optional && !parsed.contains_key(property.name) {
            errors.insert(format!("{path}.{}", property.name), MISSING.to_string());
        }
    }
    if errors.is_empty() {
        return Ok(parsed);
    }
    let mut message = String::from("invalid format - format error\n");
    for (key, text) in errors {
        message.push_str(&format!("{key}: {}\n", text.trim_end_matches('\n')));
    }
    Err(message)
}

/// Writes a property string the way Proxmox normalises it: the default key's bare value first,
/// then required keys, then optional keys, each group sorted.
pub fn print_property_string(format: &[Property], values: &BTreeMap<String, String>) -> String {
    let mut parts = Vec::new();
    let default = format.iter().find(|property| property.default_key);
    if let Some(default) = default
        && let Some(value) = values.get(default.name)
    {
        parts.push(value.clone());
    }
    let is_required = |key: &str| {
        format
            .iter()
            .any(|property| property.name == key && !property.optional && !property.default_key)
    };
    let is_default = |key: &str| default.is_some_and(|property| property.name == key);
    for required_first in [true, false] {
        for (key, value) in values {
            if !is_default(key) && is_required(key) == required_first {
                parts.push(format!("{key}={value}"));
            }
        }
    }
    parts.join(",")
}

// Named formats. Messages follow Proxmox's wording where it is known.

const DNS_LABEL: &str = r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?";

/// `dns-name`.
pub fn check_dns_name(value: &str) -> Result<(), String> {
    if whole_match(
        r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)*",
        value,
    ) {
        Ok(())
    } else {
        Err(format!(
            "value '{value}' does not look like a valid DNS name\n"
        ))
    }
}

/// `dns-name-list`.
pub fn check_dns_name_list(value: &str) -> Result<(), String> {
    value
        .split([',', ';', ' '])
        .filter(|item| !item.is_empty())
        .try_for_each(check_dns_name)
}

/// `pve-node`.
pub fn check_node(value: &str) -> Result<(), String> {
    if whole_match(DNS_LABEL, value) {
        Ok(())
    } else {
        Err(format!(
            "value '{value}' does not look like a valid node name\n"
        ))
    }
}

/// `pve-storage-id`.
pub fn check_storage_id(value: &str) -> Result<(), String> {
    if whole_match(r"(?i:[a-z][a-z0-9\-_.]*[a-z0-9])", value) {
        Ok(())
    } else {
        Err(format!(
            "storage ID '{value}' contains illegal characters\n"
        ))
    }
}

/// `pve-volume-id`.
pub fn check_volume_id(value: &str) -> Result<(), String> {
    if whole_match(r"(?i:[a-z][a-z0-9\-_.]*[a-z0-9]):.+", value) {
        Ok(())
    } else {
        Err(format!("unable to parse volume ID '{value}'\n"))
    }
}

/// `pve-configid`.
pub fn check_config_id(value: &str) -> Result<(), String> {
    if whole_match(r"(?i:[a-z][a-z0-9_-]+)", value) {
        Ok(())
    } else {
        Err(format!("invalid configuration ID '{value}'\n"))
    }
}

/// `pve-configid-list`.
pub fn check_config_id_list(value: &str) -> Result<(), String> {
    value
        .split([',', ';', ' '])
        .filter(|item| !item.is_empty())
        .try_for_each(check_config_id)
}

/// `pve-tag-list`.
pub fn check_tag_list(value: &str) -> Result<(), String> {
    let tags: Vec<&str> = value
        .split([';', ',', ' '])
        .filter(|item| !item.is_empty())
        .collect();
    if tags.is_empty() {
        return Err("tag list is empty\n".into());
    }
    for tag in tags {
        if !whole_match(r"(?i:[a-z0-9_][a-z0-9_\-+.]*)", tag) {
            return Err(format!("invalid characters in tag '{tag}'\n"));
        }
    }
    Ok(())
}

/// `pve-poolid`.
pub fn check_pool_id(value: &str) -> Result<(), String> {
    if whole_match(r"[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+){0,2}", value) {
        Ok(())
    } else {
        Err(format!("invalid pool ID '{value}'\n"))
    }
}

/// `ipv4`.
pub fn check_ipv4(value: &str) -> Result<(), String> {
    value
        .parse::<std::net::Ipv4Addr>()
        .map(|_| ())
        .map_err(|_| format!("value '{value}' does not look like a valid IPv4 address\n"))
}

/// `ipv6`.
pub fn check_ipv6(value: &str) -> Result<(), String> {
    value
        .parse::<std::net::Ipv6Addr>()
        .map(|_| ())
        .map_err(|_| format!("value '{value}' does not look like a valid IPv6 address\n"))
}

fn cidr(value: &str, v6: bool) -> bool {
    let Some((address, prefix)) = value.split_once('/') else {
        return false;
    };
    let Some(prefix) = parse_integer(prefix) else {
        return false;
    };
    if v6 {
        address.parse::<std::net::Ipv6Addr>().is_ok() && (0..=128).contains(&prefix)
    } else {
        address.parse::<std::net::Ipv4Addr>().is_ok() && (0..=32).contains(&prefix)
    }
}

/// `pve-ipv4-config`.
pub fn check_ipv4_config(value: &str) -> Result<(), String> {
    if value == "dhcp" || value == "manual" || cidr(value, false) {
        Ok(())
    } else {
        Err(format!(
            "value '{value}' does not look like a valid IPv4 network configuration\n"
        ))
    }
}

/// `pve-ipv6-config`.
pub fn check_ipv6_config(value: &str) -> Result<(), String> {
    if ["auto", "dhcp", "manual"].contains(&value) || cidr(value, true) {
        Ok(())
    } else {
        Err(format!(
            "value '{value}' does not look like a valid IPv6 network configuration\n"
        ))
    }
}

/// `mac-addr` (unicast only).
pub fn check_mac_address(value: &str) -> Result<(), String> {
    if whole_match(r"(?i:[a-f0-9][02468ace](:[a-f0-9]{2}){5})", value) {
        Ok(())
    } else {
        Err(format!(
            "value '{value}' does not look like a valid unicast MAC address\n"
        ))
    }
}

/// `disk-size`.
pub fn check_disk_size(value: &str) -> Result<(), String> {
    if parse_disk_size(value).is_some() {
        Ok(())
    } else {
        Err(format!("unable to parse size '{value}'\n"))
    }
}

/// Parses a disk size (`8G`, `512M`, `1.5T`, plain bytes) into bytes.
pub fn parse_disk_size(value: &str) -> Option<u64> {
    if !whole_match(r"\d+(\.\d+)?[KMGT]?", value) {
        return None;
    }
    let (number, unit) = match value.chars().last() {
        Some(unit @ ('K' | 'M' | 'G' | 'T')) => (&value[..value.len() - 1], unit),
        _ => (value, 'B'),
    };
    let number: f64 = number.parse().ok()?;
    let factor = match unit {
        'K' => 1u64 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        'T' => 1 << 40,
        _ => 1,
    };
    Some((number * factor as f64) as u64)
}

/// Writes a size in bytes the way Proxmox does in disk property strings (`8G`, `512M`).
pub fn format_disk_size(bytes: u64) -> String {
    for (unit, factor) in [
        ('T', 1u64 << 40),
        ('G', 1 << 30),
        ('M', 1 << 20),
        ('K', 1 << 10),
    ] {
        if bytes >= factor && bytes % factor == 0 {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}")
}

/// `pve-lxc-mp-string`: a volume id, `STORAGE:SIZE`, or an absolute path without `.`/`..` parts.
pub fn check_mount_point_string(value: &str) -> Result<(), String> {
    if value.split('/').any(|part| part == "." || part == "..") {
        return Err(format!("{value} contains illegal character sequences\n"));
    }
    Ok(())
}

/// `pve-startup-order`.
pub fn check_startup_order(value: &str) -> Result<(), String> {
    for part in value.split(',').filter(|part| !part.is_empty()) {
        let number = match part.split_once('=') {
            Some(("order" | "up" | "down", number)) => number,
            Some(_) => return Err("unable to parse startup options\n".into()),
            None => part,
        };
        if parse_integer(number).is_none_or(|number| number < 0) {
            return Err("unable to parse startup options\n".into());
        }
    }
    Ok(())
}

/// `pve-ct-timezone`.
pub fn check_timezone(value: &str) -> Result<(), String> {
    if value == "host" || whole_match(r"[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*", value) {
        Ok(())
    } else {
        Err(format!("invalid time zone '{value}'\n"))
    }
}

/// `lxc-ip-with-ll-iface-list`.
pub fn check_nameserver_list(value: &str) -> Result<(), String> {
    for item in value.split([',', ';', ' ']).filter(|item| !item.is_empty()) {
        let address = item.split_once('%').map_or(item, |(address, _)| address);
        if address.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("unable to parse IP address '{item}'\n"));
        }
    }
    Ok(())
}

/// `pve-iface`: a network interface name.
pub fn check_interface(value: &str) -> Result<(), String> {
    if whole_match(r"[a-zA-Z][a-zA-Z0-9_]{1,20}([:\.]\d+)?", value) {
        Ok(())
    } else {
        Err(format!("invalid network interface name '{value}'\n"))
    }
}

/// `pve-iface-list`.
pub fn check_interface_list(value: &str) -> Result<(), String> {
    value
        .split([',', ';', ' '])
        .filter(|item| !item.is_empty())
        .try_for_each(check_interface)
}

/// `pve-bridge-id`.
pub fn check_bridge_id(value: &str) -> Result<(), String> {
    if whole_match(r"[-_.\w\d]+", value) && value.len() <= 16 {
        Ok(())
    } else {
        Err(format!("invalid bridge ID '{value}'\n"))
    }
}

/// `CIDRv4`.
pub fn check_cidr_v4(value: &str) -> Result<(), String> {
    if cidr(value, false) {
        Ok(())
    } else {
        Err(format!(
            "value '{value}' does not look like a valid IPv4 CIDR network\n"
        ))
    }
}

/// `CIDRv6`.
pub fn check_cidr_v6(value: &str) -> Result<(), String> {
    if cidr(value, true) {
        Ok(())
    } else {
        Err(format!(
            "value '{value}' does not look like a valid IPv6 CIDR network\n"
        ))
    }
}

/// `ipv4mask`: a dotted netmask with contiguous ones.
pub fn check_ipv4_mask(value: &str) -> Result<(), String> {
    let bits = value.parse::<std::net::Ipv4Addr>().map(u32::from);
    match bits {
        Ok(bits) if bits.leading_ones() + bits.trailing_zeros() == 32 => Ok(()),
        _ => Err(format!(
            "value '{value}' does not look like a valid IP netmask\n"
        )),
    }
}

/// `pve-vlan-id-or-range-list`.
pub fn check_vlan_list(value: &str) -> Result<(), String> {
    for item in value.split([',', ';', ' ']).filter(|item| !item.is_empty()) {
        let (low, high) = item.split_once('-').unwrap_or((item, item));
        let valid = |text: &str| parse_integer(text).is_some_and(|id| (2..=4094).contains(&id));
        if !valid(low) || !valid(high) {
            return Err(format!("invalid VLAN tag '{item}'\n"));
        }
    }
    Ok(())
}

const REALM: &str = r"[A-Za-z][A-Za-z0-9\.\-_]+";

/// `pve-userid`: `name@realm`.
pub fn check_user_id(value: &str) -> Result<(), String> {
    let valid = value.rsplit_once('@').is_some_and(|(name, realm)| {
        !name.is_empty()
            && name.len() <= 60
            && !name.contains([':', '/', '@'])
            && !name.chars().any(char::is_control)
            && whole_match(REALM, realm)
    });
    if valid && value.len() <= 64 {
        Ok(())
    } else {
        Err(format!(
            "value '{value}' does not look like a valid user name\n"
        ))
    }
}

/// `pve-groupid`.
pub fn check_group_id(value: &str) -> Result<(), String> {
    if whole_match(r"[A-Za-z0-9\.\-_]+", value) {
        Ok(())
    } else {
        Err(format!("invalid group name '{value}'\n"))
    }
}

/// `pve-groupid-list`.
pub fn check_group_id_list(value: &str) -> Result<(), String> {
    value
        .split([',', ';', ' '])
        .filter(|item| !item.is_empty())
        .try_for_each(check_group_id)
}

/// `email-opt`: empty or an address.
pub fn check_email(value: &str) -> Result<(), String> {
    if value.is_empty()
        || whole_match(
            r"[\w\+\-\~]+(\.[\w\+\-\~]+)*@[a-zA-Z0-9\-]+(\.[a-zA-Z0-9\-]+)*",
            value,
        )
    {
        Ok(())
    } else {
        Err(format!(
            "value '{value}' does not look like a valid email address\n"
        ))
    }
}

/// Storage content types.
pub const CONTENT_TYPES: &[&str] = &[
    "images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import",
];

/// `pve-storage-content`.
pub fn check_content(value: &str) -> Result<(), String> {
    if CONTENT_TYPES.contains(&value) {
        Ok(())
    } else {
        Err(format!("invalid content type '{value}'\n"))
    }
}

/// `pve-storage-content-list`.
pub fn check_content_list(value: &str) -> Result<(), String> {
    value
        .split([',', ';', ' '])
        .filter(|item| !item.is_empty())
        .try_for_each(check_content)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET: &[Property] = &[
        Property::required("name", pattern(r"[-_.\w\d]+")),
        Property::optional("bridge", pattern(r"[-_.\w\d]+")),
        Property::optional("firewall", Kind::Boolean),
        Property::optional("ip", formatted(check_ipv4_config)),
        Property::optional("tag", integer(Some(1), Some(4094))),
        Property::optional("type", Kind::Enumeration(&["veth"])),
    ];
    const ROOTFS: &[Property] = &[
        Property::required("volume", formatted(check_mount_point_string)).default_key(),
        Property::optional("size", formatted(check_disk_size)),
    ];
    const SCHEMA: &[Property] = &[
        Property::required("vmid", integer(Some(100), Some(999_999_999))),
        Property::optional("memory", integer(Some(16), None)),
        Property::optional("onboot", Kind::Boolean),
        Property::optional("cpulimit", number(Some(0.0), Some(8192.0))),
        Property::optional("ostype", Kind::Enumeration(&["debian", "ubuntu"])),
        Property::optional(
            "hostname",
            Kind::Text {
                min_length: None,
                max_length: Some(10),
                pattern: None,
                format: Some(check_dns_name),
            },
        ),
        Property::indexed("net", 32, Kind::PropertyString(NET)),
        Property::optional("rootfs", Kind::PropertyString(ROOTFS)),
    ];

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn verify_table() {
        type Pairs = &'static [(&'static str, &'static str)];
        let cases: &[(Pairs, Pairs)] = &[
            (&[("vmid", "100")], &[]),
            (
                &[("vmid", "+100"), ("onboot", "yes"), ("cpulimit", "1.5")],
                &[],
            ),
            (
                &[],
                &[("vmid", "property is missing and it is not optional")],
            ),
            (
                &[("vmid", "99")],
                &[("vmid", "value must have a minimum value of 100")],
            ),
            (
                &[("vmid", "1000000000")],
                &[("vmid", "value must have a maximum value of 999999999")],
            ),
            (
                &[("vmid", "abc")],
                &[("vmid", "type check ('integer') failed - got 'abc'")],
            ),
            (
                &[("vmid", "1.5")],
                &[("vmid", "type check ('integer') failed - got '1.5'")],
            ),
            (
                &[("vmid", "100"), ("onboot", "maybe")],
                &[("onboot", "type check ('boolean') failed - got 'maybe'")],
            ),
            (
                &[("vmid", "100"), ("cpulimit", "x")],
                &[("cpulimit", "type check ('number') failed - got 'x'")],
            ),
            (
                &[("vmid", "100"), ("ostype", "windows")],
                &[(
                    "ostype",
                    "value 'windows' does not have a value in the enumeration 'debian, ubuntu'",
                )],
            ),
            (
                &[("vmid", "100"), ("bogus", "1")],
                &[(
                    "bogus",
                    "property is not defined in schema and the schema does not allow additional properties",
                )],
            ),
            (&[("vmid", "100"), ("net31", "name=eth0")], &[]),
            (
                &[("vmid", "100"), ("net32", "name=eth0")],
                &[(
                    "net32",
                    "property is not defined in schema and the schema does not allow additional properties",
                )],
            ),
            (
                &[("vmid", "100"), ("net01", "name=eth0")],
                &[(
                    "net01",
                    "property is not defined in schema and the schema does not allow additional properties",
                )],
            ),
            (
                &[("vmid", "100"), ("net0", "bridge=vmbr0")],
                &[(
                    "net0",
                    "invalid format - format error\nnet0.name: property is missing and it is not optional\n",
                )],
            ),
            (
                &[("vmid", "100"), ("net0", "name=eth0,tag=5000,mtu=1")],
                &[(
                    "net0",
                    "invalid format - format error\nnet0.mtu: property is not defined in schema and the schema does not allow additional properties\nnet0.tag: value must have a maximum value of 4094\n",
                )],
            ),
            (
                &[("vmid", "100"), ("net0", "eth0")],
                &[(
                    "net0",
                    "invalid format - missing key in comma-separated list property\n",
                )],
            ),
            (
                &[("vmid", "100"), ("net0", "name=a,name=b")],
                &[(
                    "net0",
                    "invalid format - duplicate key in comma-separated list property: name\n",
                )],
            ),
            (&[("vmid", "100"), ("rootfs", "local-lvm:8")], &[]),
            (
                &[("vmid", "100"), ("hostname", "bad_name")],
                &[(
                    "hostname",
                    "invalid format - value 'bad_name' does not look like a valid DNS name\n",
                )],
            ),
            (
                &[("vmid", "100"), ("hostname", "a-very-long-name")],
                &[("hostname", "value may only be 10 characters long")],
            ),
        ];
        for (input, expected) in cases {
            let result = verify(SCHEMA, &params(input));
            let expected: Errors = params(expected);
            match result {
                Ok(()) => assert!(
                    expected.is_empty(),
                    "{input:?} passed, expected {expected:?}"
                ),
                Err(errors) => assert_eq!(errors, expected, "{input:?}"),
            }
        }
    }

    #[test]
    fn prints_normalised_property_strings() {
        let net =
            parse_property_string("net0", NET, "ip=dhcp,bridge=vmbr0,name=eth0,type=veth").unwrap();
        assert_eq!(
            print_property_string(NET, &net),
            "name=eth0,bridge=vmbr0,ip=dhcp,type=veth"
        );
        let rootfs =
            parse_property_string("rootfs", ROOTFS, "size=8G,local-lvm:vm-101-disk-0").unwrap();
        assert_eq!(
            print_property_string(ROOTFS, &rootfs),
            "local-lvm:vm-101-disk-0,size=8G"
        );
    }

    #[test]
    fn disk_sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("8G", Some(8 << 30)),
            ("512M", Some(512 << 20)),
            ("1.5G", Some(3 << 29)),
            ("100", Some(100)),
            ("8g", None),
            ("G", None),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_disk_size(text), *bytes, "{text}");
        }
        assert_eq!(format_disk_size(8 << 30), "8G");
        assert_eq!(format_disk_size(1536 << 20), "1536M");
    }
}
