//! Tasks: their ids, the typed operations an agent can perform, and the typed results.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ErrorData;
use crate::web::{
    CacheSettings, CacheStatus, CertificateSource, CertificateStatus, CertificateUpload, Presence,
    PurgeReport, PurgeRequest, VhostId, VhostInfo, VhostSpec,
};

/// The id of a task: 16 random bytes (a UUID), chosen by the coordinator.
///
/// Fixed-size so that lists of ids have a known cost on the wire. On the wire (bincode) it is the
/// 16 raw bytes; in human-readable formats such as JSON, and in [`std::fmt::Display`], it is the
/// usual hyphenated lowercase form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub [u8; 16]);

impl TaskId {
    /// Wraps 16 bytes, for example those of a `uuid::Uuid`.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        TaskId(bytes)
    }

    /// The 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, byte) in self.0.iter().enumerate() {
            if matches!(index, 4 | 6 | 8 | 10) {
                formatter.write_str("-")?;
            }
            write!(formatter, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for TaskId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "TaskId({self})")
    }
}

/// A task id string is not 32 hexadecimal digits in the hyphenated UUID layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid task id {0:?}: expected the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")]
pub struct ParseTaskIdError(pub String);

impl std::str::FromStr for TaskId {
    type Err = ParseTaskIdError;

    /// Accepts the hyphenated form (either case) and the plain 32-digit form.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseTaskIdError(text.to_owned());
        let digits: Vec<u8> = if text.len() == 36 {
            let hyphens_in_place = text
                .bytes()
                .enumerate()
                .all(|(index, byte)| (byte == b'-') == matches!(index, 8 | 13 | 18 | 23));
            if !hyphens_in_place {
                return Err(error());
            }
            text.bytes().filter(|byte| *byte != b'-').collect()
        } else if text.len() == 32 {
            text.bytes().collect()
        } else {
            return Err(error());
        };
        let mut bytes = [0u8; 16];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let high = (pair[0] as char).to_digit(16).ok_or_else(error)?;
            let low = (pair[1] as char).to_digit(16).ok_or_else(error)?;
            *byte = (high * 16 + low) as u8;
        }
        Ok(TaskId(bytes))
    }
}

impl Serialize for TaskId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 16]>::deserialize(deserializer).map(TaskId)
        }
    }
}

/// A string that must not show up in logs: its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Secret(<redacted>)")
    }
}

/// The database servers an agent can manage.
///
/// New variants are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DatabaseEngine {
    /// MariaDB (or MySQL).
    #[serde(rename = "mariadb")]
    MariaDb,
    /// PostgreSQL.
    #[serde(rename = "postgresql")]
    PostgreSql,
}

/// One typed operation for an agent. There is deliberately no way to run an arbitrary command.
///
/// New variants are only ever appended at the end, never inserted, removed or reordered, because
/// bincode identifies a variant by its position. A peer that receives a variant it does not know fails to decode the message and
/// answers [`crate::ErrorCode::Unsupported`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Answer at once with [`OperationOutput::Pong`] carrying the same payload.
    Ping {
        /// Echoed back unchanged.
        payload: Vec<u8>,
    },
    /// List installed packages; an empty `names` lists all of them. Answers
    /// [`OperationOutput::Packages`].
    PackageList {
        /// Package names to report on; empty means all installed packages.
        names: Vec<String>,
    },
    /// Install packages. Answers [`OperationOutput::Packages`] with the named packages as now
    /// installed.
    PackageInstall {
        /// Package names, at least one.
        names: Vec<String>,
    },
    /// Upgrade packages; an empty `names` upgrades everything. Answers
    /// [`OperationOutput::Packages`] with the packages as now installed.
    PackageUpgrade {
        /// Package names; empty means all installed packages.
        names: Vec<String>,
    },
    /// Remove packages. Answers [`OperationOutput::Done`].
    PackageRemove {
        /// Package names, at least one.
        names: Vec<String>,
    },
    /// List the databases of one engine. Answers [`OperationOutput::Databases`].
    DatabaseList {
        /// Which server to ask.
        engine: DatabaseEngine,
    },
    /// Create a database and a user that owns it. Answers [`OperationOutput::Done`].
    DatabaseCreate {
        /// Which server.
        engine: DatabaseEngine,
        /// Database name.
        name: String,
        /// Owner user name; created if missing.
        user: String,
        /// The user's password.
        password: Secret,
    },
    /// Change a database user's password. Answers [`OperationOutput::Done`].
    DatabaseChangePassword {
        /// Which server.
        engine: DatabaseEngine,
        /// User name.
        user: String,
        /// The new password.
        password: Secret,
    },
    /// Drop a database. Answers [`OperationOutput::Done`].
    DatabaseDrop {
        /// Which server.
        engine: DatabaseEngine,
        /// Database name.
        name: String,
    },
    /// Dump a database. The dump itself travels on its own stream that starts with a
    /// [`crate::DataStreamHeader`]; the result is [`OperationOutput::DumpFinished`].
    DatabaseDump {
        /// Which server.
        engine: DatabaseEngine,
        /// Database name.
        name: String,
        /// Compress the dump with zstd before sending it.
        compress_zstd: bool,
    },
    /// List the vhosts. Answers [`OperationOutput::Vhosts`].
    VhostList,
    /// One vhost with its applied version. Answers [`OperationOutput::Vhost`].
    VhostGet {
        /// The vhost.
        id: VhostId,
    },
    /// Create or change a vhost as one tested, reversible change of the web server; its
    /// administrator's block, certificate and cache stay. Answers [`OperationOutput::Vhost`].
    VhostPut {
        /// The vhost.
        id: VhostId,
        /// What it serves and how.
        spec: VhostSpec,
        /// Whether the vhost must be new, must exist, or either.
        presence: Presence,
    },
    /// Remove a vhost with its certificate, challenge answers and cache. Answers
    /// [`OperationOutput::Done`].
    VhostDelete {
        /// The vhost.
        id: VhostId,
    },
    /// Set (or clear, with `None`) a vhost's administrator's block, kept apart from the spec so
    /// that customer changes never lose it. Answers [`OperationOutput::Vhost`].
    VhostSetExtra {
        /// The vhost.
        id: VhostId,
        /// nginx directives placed verbatim inside the vhost's server block.
        extra: Option<String>,
    },
    /// The TLS status of a vhost. Answers [`OperationOutput::Certificate`].
    CertificateGet {
        /// The vhost.
        vhost: VhostId,
    },
    /// Check a certificate and its key against the vhost's names and the agent's clock, write it
    /// and switch the vhost to HTTPS. Answers [`OperationOutput::Certificate`].
    CertificateDeploy {
        /// The vhost.
        vhost: VhostId,
        /// Certificate, key and chain in PEM.
        upload: CertificateUpload,
        /// Where it came from.
        source: CertificateSource,
    },
    /// Turn TLS off for a vhost and remove its certificate files. Answers
    /// [`OperationOutput::Done`].
    CertificateRemove {
        /// The vhost.
        vhost: VhostId,
    },
    /// Record an attempt that failed before anything reached the agent (an ACME order the CA
    /// refused), so the status shows it. Answers [`OperationOutput::Done`].
    CertificateRecordAttempt {
        /// The vhost.
        vhost: VhostId,
        /// Where the certificate was to come from.
        source: CertificateSource,
        /// Why it failed; `None` records a success.
        error: Option<String>,
    },
    /// Make a new private key on the agent, kept for the vhost and never sent, and answer a
    /// certificate signing request for every name of the vhost. Answers
    /// [`OperationOutput::CertificateSigningRequest`].
    CertificateRequestKey {
        /// The vhost.
        vhost: VhostId,
    },
    /// Deploy an issued certificate with the key of the latest
    /// [`Operation::CertificateRequestKey`] for the vhost. Answers
    /// [`OperationOutput::Certificate`].
    CertificateDeployIssued {
        /// The vhost.
        vhost: VhostId,
        /// Leaf then chain, in PEM.
        certificate_chain: String,
        /// Whether plain HTTP should now redirect to HTTPS (unchanged when absent).
        redirect_http: Option<bool>,
        /// Where it came from.
        source: CertificateSource,
    },
    /// Answer `/.well-known/acme-challenge/<token>` on the vhost with the key authorization
    /// (HTTP-01). Answers [`OperationOutput::Done`].
    AcmeChallengePut {
        /// The vhost.
        vhost: VhostId,
        /// The challenge token.
        token: String,
        /// The token, a '.', and the account key thumbprint.
        key_authorization: String,
    },
    /// Stop answering a challenge token. Answers [`OperationOutput::Done`].
    AcmeChallengeRemove {
        /// The vhost.
        vhost: VhostId,
        /// The challenge token.
        token: String,
    },
    /// A vhost's cache settings and size. Answers [`OperationOutput::Cache`].
    CacheGet {
        /// The vhost.
        vhost: VhostId,
    },
    /// Turn a vhost's cache on, or change its settings. Answers [`OperationOutput::Cache`].
    CacheSet {
        /// The vhost.
        vhost: VhostId,
        /// The settings.
        settings: CacheSettings,
        /// `New` to enable (the cache must be off), `Existing` to change (it must be on).
        presence: Presence,
    },
    /// Turn a vhost's cache off and remove its files. Answers [`OperationOutput::Done`].
    CacheDisable {
        /// The vhost.
        vhost: VhostId,
    },
    /// Remove cached answers, keeping the cache directory. Answers
    /// [`OperationOutput::CachePurged`].
    CachePurge {
        /// The vhost.
        vhost: VhostId,
        /// Everything, or the given request URIs.
        request: PurgeRequest,
    },
    /// Check a certificate against the vhost's names and the agent's clock without deploying it,
    /// so that a bad upload is refused before a task exists. Answers [`OperationOutput::Done`],
    /// or [`crate::ErrorCode::InvalidInput`] with the reasons per field.
    CertificateCheck {
        /// The vhost.
        vhost: VhostId,
        /// Certificate, key and chain in PEM.
        upload: CertificateUpload,
    },
}

impl Operation {
    /// Whether performing the operation changes anything in the container. The agent records
    /// such a task durably before it starts, so a delivery repeated after the agent restarted
    /// mid-way is answered as interrupted instead of being done a second time; operations that
    /// only read (or stream, as a dump does) are simply run again.
    pub fn changes_state(&self) -> bool {
        match self {
            Operation::Ping { .. }
            | Operation::PackageList { .. }
            | Operation::DatabaseList { .. }
            | Operation::DatabaseDump { .. }
            | Operation::VhostList
            | Operation::VhostGet { .. }
            | Operation::CertificateGet { .. }
            | Operation::CacheGet { .. }
            | Operation::CertificateCheck { .. } => false,
            Operation::PackageInstall { .. }
            | Operation::PackageUpgrade { .. }
            | Operation::PackageRemove { .. }
            | Operation::DatabaseCreate { .. }
            | Operation::DatabaseChangePassword { .. }
            | Operation::DatabaseDrop { .. }
            | Operation::VhostPut { .. }
            | Operation::VhostDelete { .. }
            | Operation::VhostSetExtra { .. }
            | Operation::CertificateDeploy { .. }
            | Operation::CertificateRemove { .. }
            | Operation::CertificateRecordAttempt { .. }
            | Operation::CertificateRequestKey { .. }
            | Operation::CertificateDeployIssued { .. }
            | Operation::AcmeChallengePut { .. }
            | Operation::AcmeChallengeRemove { .. }
            | Operation::CacheSet { .. }
            | Operation::CacheDisable { .. }
            | Operation::CachePurge { .. } => true,
        }
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageInfo {
    /// Package name.
    pub name: String,
    /// Installed version.
    pub version: String,
    /// Architecture, for example `amd64` or `all`.
    pub architecture: String,
}

/// One database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// Database name.
    pub name: String,
    /// The server it lives in.
    pub engine: DatabaseEngine,
    /// Size on disk in bytes.
    pub size_bytes: u64,
    /// The user that owns it.
    pub owner: String,
}

/// The typed result of a successful [`Operation`]. New variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperationOutput {
    /// The answer to [`Operation::Ping`].
    Pong {
        /// The ping's payload.
        payload: Vec<u8>,
    },
    /// Packages, for the package operations that report them.
    Packages(Vec<PackageInfo>),
    /// Databases, for [`Operation::DatabaseList`].
    Databases(Vec<DatabaseInfo>),
    /// The operation succeeded and has nothing to report.
    Done,
    /// A dump was sent completely on its data stream.
    DumpFinished {
        /// How many bytes were sent on the data stream (after compression, if any).
        bytes: u64,
        /// SHA-256 of exactly those bytes.
        sha256: [u8; 32],
    },
    /// Vhosts, for [`Operation::VhostList`].
    Vhosts(Vec<VhostInfo>),
    /// One vhost as now applied.
    Vhost(Box<VhostInfo>),
    /// A vhost's TLS status.
    Certificate(CertificateStatus),
    /// The answer to [`Operation::CertificateRequestKey`].
    CertificateSigningRequest {
        /// The request, DER.
        csr_der: Vec<u8>,
    },
    /// A vhost's cache status.
    Cache(CacheStatus),
    /// What a purge removed.
    CachePurged(PurgeReport),
}

/// A task sent from the coordinator to an agent. Delivery is at least once: the same task may
/// arrive again with a higher `attempt`, and the agent answers a task it has finished with the
/// stored result instead of doing the work twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDelivery {
    /// The task's id.
    pub task_id: TaskId,
    /// What to do.
    pub operation: Operation,
    /// When the task stops being worth doing, in milliseconds since the Unix epoch. The agent
    /// compares it with its own clock; this crate never reads a clock.
    pub deadline_unix_ms: u64,
    /// 1 for the first delivery, then 2, 3, ... for each redelivery.
    pub attempt: u32,
}

/// How a task ended: a typed output or an error as data.
pub type TaskOutcome = Result<OperationOutput, ErrorData>;
