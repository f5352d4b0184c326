//! The Hostplane agent: enrolls with the coordinator, keeps a mutually authenticated QUIC
//! connection to it, and carries out typed operations inside its container.

use std::path::PathBuf;

pub mod cache;
pub mod certs;
pub mod vhosts;

/// The default state directory (certificate, key, CA, finished-task store).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hostplane-agent";

/// Where the agent keeps its state.
#[derive(Debug, Clone)]
pub struct StateDir(pub PathBuf);
