//! Parameter schemas of the simulated endpoints: LXC configuration keys, their property-string
//! formats, and the parameter lists of each endpoint.

use crate::schema::{
    self, Kind, Property, check_config_id, check_config_id_list, check_content, check_content_list,
    check_disk_size, check_dns_name, check_dns_name_list, check_ipv4, check_ipv4_config,
    check_ipv6, check_ipv6_config, check_mac_address, check_mount_point_string,
    check_nameserver_list, check_node, check_pool_id, check_startup_order, check_storage_id,
    check_tag_list, check_timezone, check_volume_id, formatted, integer, number, pattern, text,
    text_max,
};

/// How many `netN` interfaces a container may have.
pub const MAX_NETWORKS: u32 = 32;
/// How many `mpN` mount points (and `unusedN`, `devN` entries) a container may have.
pub const MAX_MOUNT_POINTS: u32 = 256;

const MOUNT_OPTIONS: &str = "(discard|lazytime|noatime|nodev|noexec|nosuid)(;(discard|lazytime|noatime|nodev|noexec|nosuid))*";

/// The `netN` property-string format.
pub const NET_FORMAT: &[Property] = &[
    Property::required("name", pattern(r"[-_.\w\d]+")),
    Property::optional("bridge", pattern(r"[-_.\w\d]+")),
    Property::optional("firewall", Kind::Boolean),
    Property::optional("gw", formatted(check_ipv4)),
    Property::optional("gw6", formatted(check_ipv6)),
    Property::optional("hwaddr", formatted(check_mac_address)),
    Property::optional("ip", formatted(check_ipv4_config)),
    Property::optional("ip6", formatted(check_ipv6_config)),
    Property::optional("link_down", Kind::Boolean),
    Property::optional("mtu", integer(Some(64), Some(65535))),
    Property::optional("rate", number(Some(0.0), None)),
    Property::optional("tag", integer(Some(1), Some(4094))),
    Property::optional("trunks", pattern(r"\d+(;\d+)*")),
    Property::optional("type", Kind::Enumeration(&["veth"])),
];

/// The `rootfs` property-string format.
pub const ROOTFS_FORMAT: &[Property] = &[
    Property::required("volume", formatted(check_mount_point_string)).default_key(),
    Property::optional("acl", Kind::Boolean),
    Property::optional("mountoptions", pattern(MOUNT_OPTIONS)),
    Property::optional("quota", Kind::Boolean),
    Property::optional("replicate", Kind::Boolean),
    Property::optional("ro", Kind::Boolean),
    Property::optional("shared", Kind::Boolean),
    Property::optional("size", formatted(check_disk_size)),
];

/// The `mpN` property-string format.
pub const MOUNT_POINT_FORMAT: &[Property] = &[
    Property::required("volume", formatted(check_mount_point_string)).default_key(),
    Property::required("mp", formatted(check_mount_point_string)),
    Property::optional("acl", Kind::Boolean),
    Property::optional("backup", Kind::Boolean),
    Property::optional("mountoptions", pattern(MOUNT_OPTIONS)),
    Property::optional("quota", Kind::Boolean),
    Property::optional("replicate", Kind::Boolean),
    Property::optional("ro", Kind::Boolean),
    Property::optional("shared", Kind::Boolean),
    Property::optional("size", formatted(check_disk_size)),
];

/// The `features` property-string format.
pub const FEATURES_FORMAT: &[Property] = &[
    Property::optional("force_rw_sys", Kind::Boolean),
    Property::optional("fuse", Kind::Boolean),
    Property::optional("keyctl", Kind::Boolean),
    Property::optional("mknod", Kind::Boolean),
    Property::optional("mount", pattern("[a-zA-Z0-9_; ]+")),
    Property::optional("nesting", Kind::Boolean),
];

/// The `devN` property-string format.
pub const DEVICE_FORMAT: &[Property] = &[
    Property::optional("path", pattern("/dev/.+")).default_key(),
    Property::optional("deny-write", Kind::Boolean),
    Property::optional("gid", integer(Some(0), None)),
    Property::optional("mode", pattern("0[0-7]{3}")),
    Property::optional("uid", integer(Some(0), None)),
];

/// The `unusedN` property-string format.
pub const UNUSED_FORMAT: &[Property] =
    &[Property::required("volume", formatted(check_volume_id)).default_key()];

/// Property-string formats by configuration key prefix.
pub fn format_of(key: &str) -> Option<&'static [Property]> {
    let prefix = key.trim_end_matches(|c: char| c.is_ascii_digit());
    match prefix {
        "net" => Some(NET_FORMAT),
        "mp" => Some(MOUNT_POINT_FORMAT),
        "dev" => Some(DEVICE_FORMAT),
        "unused" => Some(UNUSED_FORMAT),
        "rootfs" if key == "rootfs" => Some(ROOTFS_FORMAT),
        "features" if key == "features" => Some(FEATURES_FORMAT),
        _ => None,
    }
}

/// Values of `ostype`.
pub const OS_TYPES: &[&str] = &[
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

/// Values of `lock`.
pub const LOCKS: &[&str] = &[
    "backup",
    "create",
    "destroyed",
    "disk",
    "fstrim",
    "migrate",
    "mounted",
    "rollback",
    "snapshot",
    "snapshot-delete",
];

const VMID: Kind = integer(Some(100), Some(999_999_999));

fn node() -> Property {
    Property::required("node", formatted(check_node))
}

fn vmid() -> Property {
    Property::required("vmid", VMID)
}

/// The configuration keys shared by create and update.
pub fn config_properties() -> Vec<Property> {
    vec![
        Property::optional(
            "arch",
            Kind::Enumeration(&["amd64", "i386", "arm64", "armhf", "riscv32", "riscv64"]),
        ),
        Property::optional("cmode", Kind::Enumeration(&["shell", "console", "tty"])),
        Property::optional("console", Kind::Boolean),
        Property::optional("cores", integer(Some(1), Some(8192))),
        Property::optional("cpulimit", number(Some(0.0), Some(8192.0))),
        Property::optional("cpuunits", integer(Some(0), Some(500_000))),
        Property::optional("debug", Kind::Boolean),
        Property::optional("description", text_max(8192)),
        Property::indexed("dev", MAX_MOUNT_POINTS, Kind::PropertyString(DEVICE_FORMAT)),
        Property::optional("features", Kind::PropertyString(FEATURES_FORMAT)),
        Property::optional("hookscript", formatted(check_volume_id)),
        Property::optional(
            "hostname",
            Kind::Text {
                min_length: None,
                max_length: Some(255),
                pattern: None,
                format: Some(check_dns_name),
            },
        ),
        Property::optional("lock", Kind::Enumeration(LOCKS)),
        Property::optional("memory", integer(Some(16), None)),
        Property::indexed(
            "mp",
            MAX_MOUNT_POINTS,
            Kind::PropertyString(MOUNT_POINT_FORMAT),
        ),
        Property::optional("nameserver", formatted(check_nameserver_list)),
        Property::indexed("net", MAX_NETWORKS, Kind::PropertyString(NET_FORMAT)),
        Property::optional("onboot", Kind::Boolean),
        Property::optional("ostype", Kind::Enumeration(OS_TYPES)),
        Property::optional("protection", Kind::Boolean),
        Property::optional("rootfs", Kind::PropertyString(ROOTFS_FORMAT)),
        Property::optional("searchdomain", formatted(check_dns_name_list)),
        Property::optional("startup", formatted(check_startup_order)),
        Property::optional("swap", integer(Some(0), None)),
        Property::optional("tags", formatted(check_tag_list)),
        Property::optional("template", Kind::Boolean),
        Property::optional("timezone", formatted(check_timezone)),
        Property::optional("tty", integer(Some(0), Some(6))),
        Property::optional("unprivileged", Kind::Boolean),
        Property::indexed(
            "unused",
            MAX_MOUNT_POINTS,
            Kind::PropertyString(UNUSED_FORMAT),
        ),
    ]
}

/// `POST /nodes/{node}/lxc`.
pub fn create_parameters() -> Vec<Property> {
    let mut properties = config_properties();
    properties.extend([
        node(),
        vmid(),
        Property::required("ostemplate", text_max(255)),
        Property::optional("bwlimit", number(Some(0.0), None)),
        Property::optional("force", Kind::Boolean),
        Property::optional("ignore-unpack-errors", Kind::Boolean),
        Property::optional(
            "password",
            Kind::Text {
                min_length: Some(5),
                max_length: None,
                pattern: None,
                format: None,
            },
        ),
        Property::optional("pool", formatted(check_pool_id)),
        Property::optional("restore", Kind::Boolean),
        Property::optional("ssh-public-keys", text()),
        Property::optional("start", Kind::Boolean),
        Property::optional("storage", formatted(check_storage_id)),
        Property::optional("unique", Kind::Boolean),
    ]);
    properties
}

/// `PUT /nodes/{node}/lxc/{vmid}/config`.
pub fn update_parameters() -> Vec<Property> {
    let mut properties = config_properties();
    properties.extend([
        node(),
        vmid(),
        Property::optional("delete", formatted(check_config_id_list)),
        Property::optional("digest", text_max(40)),
        Property::optional("revert", formatted(check_config_id_list)),
    ]);
    properties
}

/// Parameters of endpoints that take only a node.
pub fn node_only() -> Vec<Property> {
    vec![node()]
}

/// Parameters of endpoints that take only a node and a vmid.
pub fn guest_only() -> Vec<Property> {
    vec![node(), vmid()]
}

/// `GET .../config`.
pub fn config_read_parameters() -> Vec<Property> {
    vec![
        node(),
        vmid(),
        Property::optional("current", Kind::Boolean),
        Property::optional(
            "snapshot",
            Kind::Text {
                min_length: None,
                max_length: Some(40),
                pattern: None,
                format: Some(check_config_id),
            },
        ),
    ]
}

/// `DELETE /nodes/{node}/lxc/{vmid}`.
pub fn destroy_parameters() -> Vec<Property> {
    vec![
        node(),
        vmid(),
        Property::optional("destroy-unreferenced-disks", Kind::Boolean),
        Property::optional("force", Kind::Boolean),
        Property::optional("purge", Kind::Boolean),
    ]
}

/// Parameters of the `status/<action>` endpoints.
pub fn action_parameters(action: &str) -> Vec<Property> {
    let mut properties = vec![node(), vmid()];
    match action {
        "start" => properties.extend([
            Property::optional("debug", Kind::Boolean),
            Property::optional("skiplock", Kind::Boolean),
        ]),
        "stop" => properties.extend([
            Property::optional("overrule-shutdown", Kind::Boolean),
            Property::optional("skiplock", Kind::Boolean),
        ]),
        "shutdown" => properties.extend([
            Property::optional("forceStop", Kind::Boolean),
            Property::optional("timeout", integer(Some(0), None)),
        ]),
        "reboot" => properties.push(Property::optional("timeout", integer(Some(0), None))),
        _ => {}
    }
    properties
}

/// The `disk` values `resize` accepts.
pub fn resize_disks() -> &'static [&'static str] {
    static DISKS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        let mut disks = vec!["rootfs"];
        for index in 0..MAX_MOUNT_POINTS {
            disks.push(Box::leak(format!("mp{index}").into_boxed_str()));
        }
        disks
    });
    &DISKS
}

/// `PUT .../resize`.
pub fn resize_parameters() -> Vec<Property> {
    vec![
        node(),
        vmid(),
        Property::optional("digest", text_max(40)),
        Property::required("disk", Kind::Enumeration(resize_disks())),
        Property::required("size", pattern(r"\+?\d+(\.\d+)?[KMGT]?")),
    ]
}

/// `POST .../vncproxy`.
pub fn vncproxy_parameters() -> Vec<Property> {
    vec![
        node(),
        vmid(),
        Property::optional("height", integer(Some(16), Some(2160))),
        Property::optional("websocket", Kind::Boolean),
        Property::optional("width", integer(Some(16), Some(4096))),
    ]
}

/// `GET .../rrddata`.
pub fn rrddata_parameters() -> Vec<Property> {
    vec![
        node(),
        vmid(),
        Property::optional("cf", Kind::Enumeration(&["AVERAGE", "MAX"])),
        Property::required(
            "timeframe",
            Kind::Enumeration(&["hour", "day", "week", "month", "year"]),
        ),
    ]
}

/// `GET /nodes/{node}/storage`.
pub fn storage_list_parameters() -> Vec<Property> {
    vec![
        node(),
        Property::optional("content", formatted(check_content_list)),
        Property::optional("enabled", Kind::Boolean),
        Property::optional("format", Kind::Boolean),
        Property::optional("storage", formatted(check_storage_id)),
        Property::optional("target", formatted(check_node)),
    ]
}

/// `GET /nodes/{node}/storage/{storage}/content`.
pub fn storage_content_parameters() -> Vec<Property> {
    vec![
        node(),
        Property::required("storage", formatted(check_storage_id)),
        Property::optional("content", formatted(check_content)),
        Property::optional("vmid", VMID),
    ]
}

/// `GET /nodes/{node}/storage/{storage}` and `.../status`.
pub fn storage_parameters() -> Vec<Property> {
    vec![
        node(),
        Property::required("storage", formatted(check_storage_id)),
    ]
}

/// `POST /nodes/{node}/aplinfo`.
pub fn download_parameters() -> Vec<Property> {
    vec![
        node(),
        Property::required("storage", formatted(check_storage_id)),
        Property::required("template", text_max(255)),
    ]
}

/// `GET /nodes/{node}/tasks`.
pub fn task_list_parameters() -> Vec<Property> {
    vec![
        node(),
        Property::optional("errors", Kind::Boolean),
        Property::optional("limit", integer(Some(0), None)),
        Property::optional("since", integer(None, None)),
        Property::optional("source", Kind::Enumeration(&["archive", "active", "all"])),
        Property::optional("start", integer(Some(0), None)),
        Property::optional("statusfilter", text()),
        Property::optional("typefilter", text()),
        Property::optional("until", integer(None, None)),
        Property::optional("userfilter", text()),
        Property::optional("vmid", VMID),
    ]
}

/// Task endpoints that take a node and a UPID.
pub fn task_parameters() -> Vec<Property> {
    vec![node(), Property::required("upid", text())]
}

/// `GET .../tasks/{upid}/log`.
pub fn task_log_parameters() -> Vec<Property> {
    vec![
        node(),
        Property::required("upid", text()),
        Property::optional("download", Kind::Boolean),
        Property::optional("limit", integer(Some(0), None)),
        Property::optional("start", integer(Some(0), None)),
    ]
}

/// `GET /cluster/resources`.
pub fn resources_parameters() -> Vec<Property> {
    vec![Property::optional(
        "type",
        Kind::Enumeration(&["vm", "storage", "node", "sdn"]),
    )]
}

/// `GET /cluster/nextid`.
pub fn nextid_parameters() -> Vec<Property> {
    vec![Property::optional("vmid", VMID)]
}

/// `POST /access/ticket`.
pub fn ticket_parameters() -> Vec<Property> {
    vec![
        Property::optional("new-format", Kind::Boolean),
        Property::optional("otp", text()),
        Property::required("password", text()),
        Property::optional("path", text_max(64)),
        Property::optional("privs", text_max(64)),
        Property::optional("realm", text_max(32)),
        Property::optional("tfa-challenge", text()),
        Property::required("username", text_max(64)),
    ]
}

/// `POST .../snapshot`.
pub fn snapshot_create_parameters() -> Vec<Property> {
    vec![
        node(),
        vmid(),
        Property::optional("description", text()),
        Property::required(
            "snapname",
            Kind::Text {
                min_length: None,
                max_length: Some(40),
                pattern: None,
                format: Some(check_config_id),
            },
        ),
    ]
}

/// Parameters without any schema (index endpoints).
pub fn no_parameters() -> Vec<Property> {
    Vec::new()
}

/// Re-export for callers that need to parse a stored property string.
pub fn parse(key: &str, value: &str) -> Option<std::collections::BTreeMap<String, String>> {
    schema::parse_property_string(key, format_of(key)?, value).ok()
}
