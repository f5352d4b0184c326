//! The task kinds of the instance lifecycle and of template downloads, in one place.

/// Creates a container and settles its record (`instance.create`).
pub const CREATE: &str = "instance.create";
/// Starts, stops, shuts down, reboots, suspends or resumes a container (`instance.power`).
pub const POWER: &str = "instance.power";
/// Changes cores, memory, swap, disk or host name (`instance.update`).
pub const UPDATE: &str = "instance.update";
/// Stops if running, destroys and purges a container (`instance.delete`).
pub const DESTROY: &str = "instance.delete";
/// Downloads a container template onto a node's storage (`template.download`).
pub const DOWNLOAD: &str = "template.download";
