//! The record types kept in the store. Each is a JSON document; new fields get
//! `#[serde(default)]` so older records still read.

use serde::{Deserialize, Serialize};

/// A user's role, stored in user and API key records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Admin,
}

/// A user account (table `Users`, key: user id).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    #[serde(default)]
    pub email: Option<String>,
    pub role: Role,
    /// Argon2id PHC string; never serialized to the API.
    pub password_hash: String,
    pub created_at: String,
    pub updated_at: String,
    /// Limits an admin sets on a customer; `None` means no limit.
    #[serde(default)]
    pub quota: Quota,
}

/// Per-user limits, enforced before Proxmox is called.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Quota {
    #[serde(default)]
    pub max_instances: Option<u32>,
    #[serde(default)]
    pub max_cores: Option<u32>,
    /// MiB.
    #[serde(default)]
    pub max_memory: Option<u64>,
    /// GiB.
    #[serde(default)]
    pub max_disk: Option<u64>,
}

/// An instance the coordinator manages (table `Instances`, key: the VMID as 10 zero-padded
/// digits so keys sort numerically).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceRecord {
    pub id: u32,
    /// Owner user id.
    pub user: String,
    pub node: String,
    pub hostname: String,
    pub template: String,
    pub cpu: u32,
    /// MiB.
    pub memory: u64,
    /// MiB.
    pub swap: u64,
    /// GiB.
    pub disk: u64,
    /// `creating`, `ready`, `destroying`, `failed`: the coordinator's view of the record.
    pub state: String,
    #[serde(default)]
    pub suspended: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl InstanceRecord {
    /// The store key of an instance id.
    pub fn key(id: u32) -> String {
        format!("{id:010}")
    }
}

/// A login ticket (table `Tickets`, key: SHA-256 hex of the ticket). The ticket itself is
/// never stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TicketRecord {
    /// A short public id for the audit log.
    pub id: String,
    pub user: String,
    pub created_at: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// An API key (table `ApiKeys`, key: key id). The secret is kept only as its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiKeyRecord {
    pub id: String,
    /// Owner user id.
    pub user: String,
    pub name: String,
    pub role: Role,
    /// SHA-256 hex of the secret part.
    pub secret_sha256: String,
    pub created_at: String,
    /// Unix seconds; `None` never expires.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Instances the key is limited to; `None` is every instance of the owner.
    #[serde(default)]
    pub instances: Option<Vec<u32>>,
    #[serde(default)]
    pub last_used_at: Option<String>,
}

/// One mutating call (table `Audit`, key: sequence). Never changed once written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub sequence: u64,
    pub at: String,
    /// User id, or `None` when the caller was not authenticated.
    pub actor: Option<String>,
    pub credential: Option<String>,
    pub address: Option<String>,
    pub method: String,
    /// The route pattern.
    pub route: String,
    pub path: String,
    pub status: u16,
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Sent,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Expired,
}

impl TaskState {
    /// Every state, in life order.
    pub const ALL: [TaskState; 7] = [
        TaskState::Queued,
        TaskState::Sent,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::Expired,
    ];

    /// The name used in JSON, query strings and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Sent => "sent",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Expired => "expired",
        }
    }

    /// Parses a state name.
    pub fn parse(text: &str) -> Option<TaskState> {
        TaskState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }

    /// True for the states a task never leaves.
    pub fn is_ended(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::Expired
        )
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// What lists need of a task, kept in the task index tables (`TaskOrder`, `TaskOwnerIndex`,
/// `TaskInstanceIndex`) so a page reads only the records it shows. Rewritten on every state
/// change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskSummary {
    pub id: String,
    pub owner: String,
    #[serde(default)]
    pub instance: Option<u32>,
    pub kind: String,
    pub state: TaskState,
}

/// One log line of a task (table `TaskLogs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskLogLine {
    #[serde(with = "time::serde::rfc3339")]
    pub at: time::OffsetDateTime,
    pub line: String,
}

/// The first task a user's `Idempotency-Key` named (table `TaskIdempotency`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IdempotencyRecord {
    pub task: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
}

/// A registered Proxmox node and how to reach its API (table `ProxmoxNodes`, key: the node
/// name as Proxmox knows it). The token secret is needed in clear to call Proxmox; it is never
/// answered by a route nor written to a log (`Debug` hides it).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct ProxmoxNodeRecord {
    pub name: String,
    /// Host name or IP address of the API.
    pub address: String,
    pub port: u16,
    /// `https`, or `http` for a simulator behind no TLS.
    #[serde(default = "https")]
    pub scheme: String,
    /// `USER@REALM!TOKENID`.
    pub token_id: String,
    pub token_secret: String,
    /// SHA-256 fingerprint of the API certificate (`AA:BB:...`).
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// PEM of the CA that signed the API certificate.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// Accept any certificate (explicit, logged).
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_at: String,
}

fn https() -> String {
    "https".into()
}

impl std::fmt::Debug for ProxmoxNodeRecord {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ProxmoxNodeRecord")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("port", &self.port)
            .field("scheme", &self.scheme)
            .field("token_id", &self.token_id)
            .field("token_secret", &"<redacted>")
            .field("fingerprint", &self.fingerprint)
            .field("insecure", &self.insecure)
            .field("tags", &self.tags)
            .finish()
    }
}

/// The agent of one instance (table `Agents`, key: [`InstanceRecord::key`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentRecord {
    pub instance: u32,
    /// Enrollment generation of the only certificates accepted; bumped by each enrollment.
    pub generation: u64,
    /// Revoked agents are refused until enrolled again.
    #[serde(default)]
    pub revoked: bool,
    pub enrolled_at: String,
    #[serde(default)]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub last_seen: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    /// Expiry of the newest certificate issued to the agent.
    #[serde(default)]
    pub certificate_not_after: Option<String>,
}

/// A pending enrollment token (table `EnrollmentTokens`, key: SHA-256 hex of its secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnrollmentTokenRecord {
    pub instance: u32,
    pub created_at: String,
    pub expires_at: String,
    /// The user id that asked for it.
    pub created_by: String,
}

/// The agents' certificate authority (table `Meta`, key `agent_ca`). Once this record exists,
/// a missing or different CA file is a startup error, never a reason to make a new CA.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentCaRecord {
    /// SHA-256 hex of the CA certificate in DER.
    pub fingerprint: String,
    pub created_at: String,
}

/// An ACME account (table `AcmeAccounts`, key: the directory URL). The credentials hold the
/// account's private key: they never appear in an answer, a log line or a `Debug` output.
#[derive(Clone, Serialize, Deserialize)]
pub struct AcmeAccountRecord {
    /// The account's URL at the directory.
    pub account_url: String,
    /// `instant_acme::AccountCredentials` as JSON.
    pub credentials: serde_json::Value,
    pub created_at: String,
}

impl std::fmt::Debug for AcmeAccountRecord {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AcmeAccountRecord")
            .field("account_url", &self.account_url)
            .field("credentials", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A vhost whose certificate comes from ACME (table `AcmeCertificates`, key:
/// [`AcmeCertificateRecord::key`]). The renewal loop reads these.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AcmeCertificateRecord {
    pub instance: u32,
    pub vhost: String,
    /// The user the renewal tasks belong to (the instance's owner when it was asked for).
    pub owner: String,
    /// Whether HTTP redirects to HTTPS once the certificate serves.
    #[serde(default)]
    pub redirect_http: Option<bool>,
    /// The names of the certificate in service.
    #[serde(default)]
    pub names: Vec<String>,
    /// Unix seconds: validity of the certificate in service, if one was issued.
    #[serde(default)]
    pub not_after: Option<i64>,
    /// Unix seconds of the latest attempt, and its error when it failed.
    #[serde(default)]
    pub last_attempt_at: Option<i64>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// The id of the issue or renewal task under way, if any.
    #[serde(default)]
    pub task: Option<String>,
    pub created_at: String,
}

impl AcmeCertificateRecord {
    /// The key of a vhost's record.
    pub fn key(instance: u32, vhost: &str) -> String {
        format!("{}/{vhost}", InstanceRecord::key(instance))
    }
}
