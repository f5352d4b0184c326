//! Parameter schemas of the QEMU endpoints: the VM configuration keys, the property-string
//! formats the simulator checks key by key (disks, network cards, memory, agent, display), and
//! the parameter lists of create, config, status and destroy.
//!
//! Formats whose grammar is not modelled here (CPU models, boot order, PCI passthrough, cloud-init
//! IP settings...) are accepted as text: the simulator prefers letting a valid value through to
//! refusing one Proxmox accepts.

use crate::schema::{
    Kind, Property, check_bridge_id, check_config_id, check_disk_size, check_dns_name,
    check_mac_address, check_node, check_pool_id, check_startup_order, check_storage_id,
    check_tag_list, check_volume_id, formatted, integer, number, pattern, text, text_max,
};

/// How many `netN` cards a VM may have.
pub const MAX_NETWORKS: u32 = 32;

const NIC_MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

/// The `netN` property-string format. A card is written either `model=virtio,macaddr=MAC` or
/// `virtio=MAC`; the second form names the model by its key.
pub const NET_FORMAT: &[Property] = &[
    Property::optional("model", Kind::Enumeration(NIC_MODELS)).default_key(),
    Property::optional("bridge", formatted(check_bridge_id)),
    Property::optional("firewall", Kind::Boolean),
    Property::optional("link_down", Kind::Boolean),
    Property::optional("macaddr", formatted(check_mac_address)),
    Property::optional("mtu", integer(Some(1), Some(65520))),
    Property::optional("queues", integer(Some(0), Some(64))),
    Property::optional("rate", number(Some(0.0), None)),
    Property::optional("tag", integer(Some(1), Some(4094))),
    Property::optional("trunks", pattern(r"\d+(?:-\d+)?(?:;\d+(?:-\d+)?)*")),
    Property::optional("e1000", formatted(check_mac_address)),
    Property::optional("e1000-82540em", formatted(check_mac_address)),
    Property::optional("e1000-82544gc", formatted(check_mac_address)),
    Property::optional("e1000-82545em", formatted(check_mac_address)),
    Property::optional("e1000e", formatted(check_mac_address)),
    Property::optional("i82551", formatted(check_mac_address)),
    Property::optional("i82557b", formatted(check_mac_address)),
    Property::optional("i82559er", formatted(check_mac_address)),
    Property::optional("ne2k_isa", formatted(check_mac_address)),
    Property::optional("ne2k_pci", formatted(check_mac_address)),
    Property::optional("pcnet", formatted(check_mac_address)),
    Property::optional("rtl8139", formatted(check_mac_address)),
    Property::optional("virtio", formatted(check_mac_address)),
    Property::optional("vmxnet3", formatted(check_mac_address)),
];

/// The NIC models, which double as keys of a `netN` string.
pub fn nic_models() -> &'static [&'static str] {
    NIC_MODELS
}

const BANDWIDTH: Kind = number(Some(1.0), None);
const OPERATIONS: Kind = integer(Some(10), None);
const BURST: Kind = integer(Some(1), None);

/// The disk property-string format shared by `ideN`, `sataN`, `scsiN` and `virtioN` (the union of
/// their keys; `volume` is another name for the default key `file`).
pub const DISK_FORMAT: &[Property] = &[
    Property::optional("file", text()).default_key(),
    Property::optional("volume", text()),
    Property::optional("aio", Kind::Enumeration(&["native", "threads", "io_uring"])),
    Property::optional("backup", Kind::Boolean),
    Property::optional("bps", BANDWIDTH),
    Property::optional("bps_max_length", BURST),
    Property::optional("bps_rd", BANDWIDTH),
    Property::optional("bps_rd_length", BURST),
    Property::optional("bps_rd_max_length", BURST),
    Property::optional("bps_wr", BANDWIDTH),
    Property::optional("bps_wr_length", BURST),
    Property::optional("bps_wr_max_length", BURST),
    Property::optional(
        "cache",
        Kind::Enumeration(&["none", "writethrough", "writeback", "unsafe", "directsync"]),
    ),
    Property::optional("cyls", integer(None, None)),
    Property::optional("detect_zeroes", Kind::Boolean),
    Property::optional("discard", Kind::Enumeration(&["ignore", "on"])),
    Property::optional(
        "format",
        Kind::Enumeration(&["raw", "qcow", "qed", "qcow2", "vmdk", "cloop"]),
    ),
    Property::optional("heads", integer(None, None)),
    Property::optional("import-from", text()),
    Property::optional("iops", OPERATIONS),
    Property::optional("iops_max", OPERATIONS),
    Property::optional("iops_max_length", BURST),
    Property::optional("iops_rd", OPERATIONS),
    Property::optional("iops_rd_length", BURST),
    Property::optional("iops_rd_max", OPERATIONS),
    Property::optional("iops_rd_max_length", BURST),
    Property::optional("iops_wr", OPERATIONS),
    Property::optional("iops_wr_length", BURST),
    Property::optional("iops_wr_max", OPERATIONS),
    Property::optional("iops_wr_max_length", BURST),
    Property::optional("iothread", Kind::Boolean),
    Property::optional("mbps", BANDWIDTH),
    Property::optional("mbps_max", BANDWIDTH),
    Property::optional("mbps_rd", BANDWIDTH),
    Property::optional("mbps_rd_max", BANDWIDTH),
    Property::optional("mbps_wr", BANDWIDTH),
    Property::optional("mbps_wr_max", BANDWIDTH),
    Property::optional("media", Kind::Enumeration(&["cdrom", "disk"])),
    Property::optional("model", text_max(120)),
    Property::optional("product", text_max(16)),
    Property::optional("queues", integer(Some(2), None)),
    Property::optional("replicate", Kind::Boolean),
    Property::optional("rerror", Kind::Enumeration(&["ignore", "report", "stop"])),
    Property::optional("ro", Kind::Boolean),
    Property::optional("scsiblock", Kind::Boolean),
    Property::optional("secs", integer(None, None)),
    Property::optional("serial", text_max(60)),
    Property::optional("shared", Kind::Boolean),
    Property::optional("size", formatted(check_disk_size)),
    Property::optional("snapshot", Kind::Boolean),
    Property::optional("ssd", Kind::Boolean),
    Property::optional("trans", Kind::Enumeration(&["none", "lba", "auto"])),
    Property::optional("vendor", text_max(8)),
    Property::optional(
        "werror",
        Kind::Enumeration(&["enospc", "ignore", "report", "stop"]),
    ),
    Property::optional("wwn", pattern("(?:0x)?[0-9a-fA-F]{16}")),
];

/// The `memory` property-string format.
pub const MEMORY_FORMAT: &[Property] =
    &[Property::optional("current", integer(Some(16), None)).default_key()];

/// The `agent` property-string format.
pub const AGENT_FORMAT: &[Property] = &[
    Property::optional("enabled", Kind::Boolean).default_key(),
    Property::optional("freeze-fs-on-backup", Kind::Boolean),
    Property::optional("fstrim_cloned_disks", Kind::Boolean),
    Property::optional("type", Kind::Enumeration(&["virtio", "isa"])),
];

/// The `vga` property-string format.
pub const VGA_FORMAT: &[Property] = &[
    Property::optional(
        "type",
        Kind::Enumeration(&[
            "cirrus",
            "qxl",
            "qxl2",
            "qxl3",
            "qxl4",
            "none",
            "serial0",
            "serial1",
            "serial2",
            "serial3",
            "std",
            "virtio",
            "virtio-gl",
            "vmware",
        ]),
    )
    .default_key(),
    Property::optional("clipboard", Kind::Enumeration(&["vnc"])),
    Property::optional("memory", integer(Some(4), Some(512))),
];

/// The `unusedN` property-string format.
pub const UNUSED_FORMAT: &[Property] = &[
    Property::optional("file", formatted(check_volume_id)).default_key(),
    Property::optional("volume", formatted(check_volume_id)),
];

/// Disk buses with how many slots each has.
pub const DISK_BUSES: &[(&str, u32)] = &[("ide", 4), ("sata", 6), ("scsi", 31), ("virtio", 16)];

/// Property-string formats by configuration key.
pub fn format_of(key: &str) -> Option<&'static [Property]> {
    let prefix = key.trim_end_matches(|c: char| c.is_ascii_digit());
    let indexed = prefix.len() < key.len();
    match prefix {
        "net" if indexed => Some(NET_FORMAT),
        "unused" if indexed => Some(UNUSED_FORMAT),
        "ide" | "sata" | "scsi" | "virtio" if indexed => Some(DISK_FORMAT),
        "memory" if !indexed => Some(MEMORY_FORMAT),
        "agent" if !indexed => Some(AGENT_FORMAT),
        "vga" if !indexed => Some(VGA_FORMAT),
        _ => None,
    }
}

/// Values of `ostype`.
pub const OS_TYPES: &[&str] = &[
    "other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24",
    "l26", "solaris",
];

/// Values of `lock`.
pub const LOCKS: &[&str] = &[
    "backup",
    "clone",
    "create",
    "migrate",
    "rollback",
    "snapshot",
    "snapshot-delete",
    "suspending",
    "suspended",
];

const KEYBOARDS: &[&str] = &[
    "de", "de-ch", "da", "en-gb", "en-us", "es", "fi", "fr", "fr-be", "fr-ca", "fr-ch", "hu", "is",
    "it", "ja", "lt", "mk", "nl", "no", "pl", "pt", "pt-br", "sv", "sl", "tr",
];

const VMID: Kind = integer(Some(100), Some(999_999_999));

fn node() -> Property {
    Property::required("node", formatted(check_node))
}

fn vmid() -> Property {
    Property::required("vmid", VMID)
}

/// The configuration keys of a VM (create and config update share them).
pub fn config_properties() -> Vec<Property> {
    let mut properties = vec![
        Property::optional("acpi", Kind::Boolean),
        Property::optional("affinity", text()),
        Property::optional("agent", Kind::PropertyString(AGENT_FORMAT)),
        Property::optional("amd-sev", text()),
        Property::optional("arch", Kind::Enumeration(&["x86_64", "aarch64"])),
        Property::optional("args", text()),
        Property::optional("audio0", text()),
        Property::optional("autostart", Kind::Boolean),
        Property::optional("balloon", integer(Some(0), None)),
        Property::optional("bios", Kind::Enumeration(&["seabios", "ovmf"])),
        Property::optional("boot", text()),
        Property::optional("bootdisk", pattern(r"(ide|sata|scsi|virtio)\d+")),
        Property::optional("cdrom", text()),
        Property::optional("cicustom", text()),
        Property::optional("cipassword", text()),
        Property::optional(
            "citype",
            Kind::Enumeration(&["configdrive2", "nocloud", "opennebula"]),
        ),
        Property::optional("ciupgrade", Kind::Boolean),
        Property::optional("ciuser", text()),
        Property::optional("cores", integer(Some(1), None)),
        Property::optional("cpu", text()),
        Property::optional("cpulimit", number(Some(0.0), Some(128.0))),
        Property::optional("cpuunits", integer(Some(1), Some(262_144))),
        Property::optional("description", text_max(8192)),
        Property::optional("efidisk0", text()),
        Property::optional("freeze", Kind::Boolean),
        Property::optional("hookscript", formatted(check_volume_id)),
        Property::indexed("hostpci", 16, text()),
        Property::optional("hotplug", text()),
        Property::optional("hugepages", Kind::Enumeration(&["any", "2", "1024"])),
        Property::indexed("ipconfig", MAX_NETWORKS, text()),
        Property::optional("ivshmem", text()),
        Property::optional("keephugepages", Kind::Boolean),
        Property::optional("keyboard", Kind::Enumeration(KEYBOARDS)),
        Property::optional("kvm", Kind::Boolean),
        Property::optional("localtime", Kind::Boolean),
        Property::optional("lock", Kind::Enumeration(LOCKS)),
        Property::optional("machine", text()),
        Property::optional("memory", Kind::PropertyString(MEMORY_FORMAT)),
        Property::optional("migrate_downtime", number(Some(0.0), None)),
        Property::optional("migrate_speed", integer(Some(0), None)),
        Property::optional("name", formatted(check_dns_name)),
        Property::optional("nameserver", text()),
        Property::indexed("net", MAX_NETWORKS, Kind::PropertyString(NET_FORMAT)),
        Property::optional("numa", Kind::Boolean),
        Property::indexed("numa", 8, text()),
        Property::optional("onboot", Kind::Boolean),
        Property::optional("ostype", Kind::Enumeration(OS_TYPES)),
        Property::indexed("parallel", 3, pattern(r"/dev/parport\d+|/dev/usb/lp\d+")),
        Property::optional("protection", Kind::Boolean),
        Property::optional("reboot", Kind::Boolean),
        Property::optional("rng0", text()),
        Property::optional(
            "scsihw",
            Kind::Enumeration(&[
                "lsi",
                "lsi53c810",
                "virtio-scsi-pci",
                "virtio-scsi-single",
                "megasas",
                "pvscsi",
            ]),
        ),
        Property::optional("searchdomain", text()),
        Property::indexed("serial", 4, pattern("(/dev/.+|socket)")),
        Property::optional("shares", integer(Some(0), Some(50_000))),
        Property::optional("smbios1", text_max(512)),
        Property::optional("smp", integer(Some(1), None)),
        Property::optional("sockets", integer(Some(1), None)),
        Property::optional("spice_enhancements", text()),
        Property::optional("sshkeys", text()),
        Property::optional(
            "startdate",
            pattern(r"(now|\d{4}-\d{1,2}-\d{1,2}(T\d{1,2}:\d{1,2}:\d{1,2})?)"),
        ),
        Property::optional("startup", formatted(check_startup_order)),
        Property::optional("tablet", Kind::Boolean),
        Property::optional("tags", formatted(check_tag_list)),
        Property::optional("tdf", Kind::Boolean),
        Property::optional("template", Kind::Boolean),
        Property::optional("tpmstate0", text()),
        Property::indexed("unused", 256, Kind::PropertyString(UNUSED_FORMAT)),
        Property::indexed("usb", 14, text()),
        Property::optional("vcpus", integer(Some(1), None)),
        Property::optional("vga", Kind::PropertyString(VGA_FORMAT)),
        Property::indexed("virtiofs", 10, text()),
        Property::optional(
            "vmgenid",
            pattern(r"(?:[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}|[01])"),
        ),
        Property::optional("vmstatestorage", formatted(check_storage_id)),
        Property::optional("watchdog", text()),
    ];
    for (bus, count) in DISK_BUSES {
        properties.push(Property::indexed(
            bus,
            *count,
            Kind::PropertyString(DISK_FORMAT),
        ));
    }
    properties
}

/// `POST /nodes/{node}/qemu`.
pub fn create_parameters() -> Vec<Property> {
    let mut properties = config_properties();
    properties.extend([
        node(),
        vmid(),
        Property::optional("archive", text_max(255)),
        Property::optional("bwlimit", integer(Some(0), None)),
        Property::optional("force", Kind::Boolean).requires("archive"),
        Property::optional("import-working-storage", formatted(check_storage_id)),
        Property::optional("live-restore", Kind::Boolean),
        Property::optional("pool", formatted(check_pool_id)),
        Property::optional("start", Kind::Boolean),
        Property::optional("storage", formatted(check_storage_id)),
        Property::optional("unique", Kind::Boolean).requires("archive"),
    ]);
    properties
}

/// `GET /nodes/{node}/qemu`.
pub fn list_parameters() -> Vec<Property> {
    vec![node(), Property::optional("full", Kind::Boolean)]
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

/// Parameters of endpoints that take only a node and a vmid.
pub fn guest_only() -> Vec<Property> {
    vec![node(), vmid()]
}

/// `DELETE /nodes/{node}/qemu/{vmid}`.
pub fn destroy_parameters() -> Vec<Property> {
    vec![
        node(),
        vmid(),
        Property::optional("destroy-unreferenced-disks", Kind::Boolean),
        Property::optional("purge", Kind::Boolean),
        Property::optional("skiplock", Kind::Boolean),
    ]
}

/// The power actions of `POST .../status/<action>`.
pub const POWER_ACTIONS: &[&str] = &["start", "stop", "reset", "shutdown"];

/// Parameters of the `status/<action>` endpoints.
pub fn action_parameters(action: &str) -> Vec<Property> {
    let mut properties = vec![
        node(),
        vmid(),
        Property::optional("skiplock", Kind::Boolean),
    ];
    match action {
        "start" => properties.extend([
            Property::optional("force-cpu", text()),
            Property::optional("machine", text()),
            Property::optional("migratedfrom", formatted(check_node)),
            Property::optional("migration_network", text()),
            Property::optional("migration_type", Kind::Enumeration(&["secure", "insecure"])),
            Property::optional("nets-host-mtu", pattern(r"net\d+=\d+(,net\d+=\d+)*")),
            Property::optional("stateuri", text_max(128)),
            Property::optional("targetstorage", text()),
            Property::optional("timeout", integer(Some(0), None)),
        ]),
        "stop" => properties.extend([
            Property::optional("keepActive", Kind::Boolean),
            Property::optional("migratedfrom", formatted(check_node)),
            Property::optional("overrule-shutdown", Kind::Boolean),
            Property::optional("timeout", integer(Some(0), None)),
        ]),
        "shutdown" => properties.extend([
            Property::optional("forceStop", Kind::Boolean),
            Property::optional("keepActive", Kind::Boolean),
            Property::optional("timeout", integer(Some(0), None)),
        ]),
        _ => {}
    }
    properties
}
