//! What the agent reports about a vhost: the applied spec, its version and hash, and the last few
//! versions it remembers.

use serde::{Deserialize, Serialize};

use crate::web::cache::CacheSettings;
use crate::web::vhost::{VhostId, VhostSpec};

/// One vhost as applied on the instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostInfo {
    /// The identifier.
    pub id: VhostId,
    /// The applied spec.
    pub spec: VhostSpec,
    /// The applied version (1 for the first).
    pub version: u64,
    /// SHA-256 of the applied configuration file, in hex.
    pub hash: String,
    /// When this version was applied, Unix seconds.
    pub applied_at_unix: i64,
    /// Whether TLS is on.
    pub tls: bool,
    /// The cache settings, if the cache is on.
    pub cache: Option<CacheSettings>,
    /// The administrator's verbatim block, if set. The coordinator shows its text to
    /// administrators only.
    pub extra: Option<String>,
    /// The remembered versions, oldest first, the current one last.
    pub history: Vec<VersionSummary>,
}

/// One remembered version of a vhost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSummary {
    /// The version number.
    pub version: u64,
    /// SHA-256 of the rendered file, in hex.
    pub hash: String,
    /// When it was applied, Unix seconds.
    pub applied_at_unix: i64,
}
