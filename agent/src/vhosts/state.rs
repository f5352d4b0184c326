//! What the agent remembers about its vhosts. The state is stored inside each configuration
//! generation, so swapping the `live` link swaps configuration and state together.
//!
//! Invariant: the state in the live generation describes exactly the files nginx includes.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::vhosts::spec::{VhostId, VhostSpec};
use protocol::web::cache::CacheSettings;
use protocol::web::certificate::CertificateSource;

/// What is known about a deployed certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// Where it came from.
    pub source: CertificateSource,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// The subject's distinguished name.
    pub subject: String,
    /// The DNS names it covers.
    pub names: Vec<String>,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// SHA-256 of the leaf's DER, in hex.
    pub fingerprint_sha256: String,
}

/// The version of the stored state's layout; a newer one is refused rather than misread.
pub const STATE_FORMAT: u32 = 1;

/// The file name of the state inside a generation (not matched by nginx's `*.conf` include).
pub const STATE_FILE: &str = "state.json";

/// Every vhost of the instance, as of one configuration generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteState {
    /// [`STATE_FORMAT`] when written.
    pub format: u32,
    /// The generation this state belongs to.
    pub generation: u64,
    /// The vhosts by identifier.
    pub vhosts: BTreeMap<VhostId, VhostRecord>,
}

impl Default for SiteState {
    fn default() -> Self {
        SiteState {
            format: STATE_FORMAT,
            generation: 0,
            vhosts: BTreeMap::new(),
        }
    }
}

/// One vhost: the customer's spec, the administrator's block, TLS and cache, and its versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostRecord {
    /// The customer's spec.
    pub spec: VhostSpec,
    /// The administrator's verbatim block; customer changes never touch it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<String>,
    /// The certificate in service, if TLS is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsBinding>,
    /// The cache settings, if the cache is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSettings>,
    /// The applied version (1 for the first).
    pub version: u64,
    /// SHA-256 of the vhost's rendered file, in hex.
    pub hash: String,
    /// When this version was applied.
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
    /// The last applied versions, oldest first, the current one last.
    pub history: Vec<AppliedVersion>,
}

/// A certificate bound to a vhost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsBinding {
    /// The directory holding `fullchain.pem` and `privkey.pem`.
    pub dir: PathBuf,
    /// What the certificate is.
    pub info: CertificateInfo,
}

impl TlsBinding {
    /// The certificate file (leaf and chain).
    pub fn certificate_file(&self) -> PathBuf {
        self.dir.join("fullchain.pem")
    }

    /// The key file.
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("privkey.pem")
    }
}

/// One applied version of a vhost, enough to apply it again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedVersion {
    /// The version number.
    pub version: u64,
    /// SHA-256 of the rendered file.
    pub hash: String,
    /// When it was applied.
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
    /// The spec of that version.
    pub spec: VhostSpec,
    /// The administrator's block of that version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<String>,
    /// The cache settings of that version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSettings>,
}

/// What `GET` shows for a vhost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostView {
    /// The identifier.
    pub id: VhostId,
    /// The applied spec.
    pub spec: VhostSpec,
    /// The applied version.
    pub version: u64,
    /// SHA-256 of the applied configuration file.
    pub hash: String,
    /// When it was applied.
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
    /// Whether TLS is on.
    pub tls: bool,
    /// The cache settings, if on.
    pub cache: Option<CacheSettings>,
    /// Whether the administrator's block is set (its text is shown to administrators only).
    pub has_extra: bool,
    /// The remembered versions, oldest first: (version, hash, applied at).
    pub history: Vec<VersionSummary>,
}

/// One remembered version, without its spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionSummary {
    /// The version number.
    pub version: u64,
    /// SHA-256 of the rendered file.
    pub hash: String,
    /// When it was applied.
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
}

impl VhostRecord {
    /// The form that crosses the wire, with the administrator's block.
    pub fn to_wire(&self, id: &VhostId) -> protocol::web::VhostInfo {
        protocol::web::VhostInfo {
            id: id.clone(),
            spec: self.spec.clone(),
            version: self.version,
            hash: self.hash.clone(),
            applied_at_unix: self.applied_at.unix_timestamp(),
            tls: self.tls.is_some(),
            cache: self.cache.clone(),
            extra: self.extra.clone(),
            history: self
                .history
                .iter()
                .map(|entry| protocol::web::VersionSummary {
                    version: entry.version,
                    hash: entry.hash.clone(),
                    applied_at_unix: entry.applied_at.unix_timestamp(),
                })
                .collect(),
        }
    }

    /// The view of this record.
    pub fn view(&self, id: &VhostId) -> VhostView {
        VhostView {
            id: id.clone(),
            spec: self.spec.clone(),
            version: self.version,
            hash: self.hash.clone(),
            applied_at: self.applied_at,
            tls: self.tls.is_some(),
            cache: self.cache.clone(),
            has_extra: self.extra.is_some(),
            history: self
                .history
                .iter()
                .map(|entry| VersionSummary {
                    version: entry.version,
                    hash: entry.hash.clone(),
                    applied_at: entry.applied_at,
                })
                .collect(),
        }
    }
}
