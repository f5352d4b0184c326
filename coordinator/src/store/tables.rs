//! Every table of the store, with what its keys and values are. Names carry a layout version.

/// A table of the store. Keys are strings; values are JSON documents of the named record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Store-wide facts: `schema_version` (written on creation, read and migrated on open; see
    /// the store's module), first-start markers. Values vary per key.
    Meta,
    /// Key: user id. Value: `UserRecord`.
    Users,
    /// Key: lower-cased username. Value: user id (a unique index).
    UsernameIndex,
    /// Key: lower-cased email. Value: user id (a unique index).
    EmailIndex,
    /// Key: SHA-256 hex of the ticket. Value: `TicketRecord`.
    Tickets,
    /// Key: `<user id>/<ticket hash>`. Value: the ticket's expiry, Unix seconds. Finds a user's
    /// tickets without reading every ticket.
    TicketsByUser,
    /// Key: `<expiry, Unix seconds, 20 zero-padded digits>/<ticket hash>`. Value: the user id.
    /// Expired tickets come first, for the sweep.
    TicketsByExpiry,
    /// Key: key id. Value: `ApiKeyRecord` (with the SHA-256 of the secret).
    ApiKeys,
    /// Key: VMID, 10 zero-padded digits. Value: `InstanceRecord`.
    Instances,
    /// Key: 20 zero-padded digits of a sequence number. Value: `AuditRecord`. Append-only.
    Audit,
    /// Key: task id. Value: `tasks::Task` (the whole record, with its input).
    Tasks,
    /// Key: 20 zero-padded digits of `u64::MAX - sequence`, so newest tasks come first.
    /// Value: `TaskSummary`. One entry per task; lists page through it.
    TaskOrder,
    /// Key: `<owner user id>/<inverted sequence as in TaskOrder>`. Value: `TaskSummary`.
    TaskOwnerIndex,
    /// Key: `<VMID, 10 zero-padded digits>/<inverted sequence>`. Value: `TaskSummary`.
    TaskInstanceIndex,
    /// Key: `<state>/<inverted sequence>`. Value: `TaskSummary`. Moves on every state change.
    TaskStateIndex,
    /// Key: id of a task not yet ended. Value: its kind. Read at start to resume or end them.
    TaskActive,
    /// Key: `<task id>/<line number, 6 zero-padded digits>`. Value: `TaskLogLine`.
    TaskLogs,
    /// Key: task id. Value: `tasks::secrets::TaskSecretsRecord`, the secret part of a task's
    /// input until the task ends, then only that there was one. Sealed.
    TaskSecrets,
    /// Key: `<owner user id>/<Idempotency-Key>`. Value: `IdempotencyRecord` (valid 24 h).
    TaskIdempotency,
    /// Key: `owner/<user id>`, `instance/<VMID>` or `state/<state>`. Value: a count of tasks.
    TaskCounts,
    /// Key: Proxmox node name. Value: `ProxmoxNodeRecord` (endpoint and API token). Sealed.
    ProxmoxNodes,
    /// Key: VMID, 10 zero-padded digits (as `Instances`). Value: `AgentRecord`.
    Agents,
    /// Key: SHA-256 hex of an enrollment token's secret. Value: `EnrollmentTokenRecord`.
    EnrollmentTokens,
    /// Key: the ACME directory URL. Value: `AcmeAccountRecord` (the account key: a secret).
    /// Sealed.
    AcmeAccounts,
    /// Key: `<VMID, 10 zero-padded digits>/<vhost id>`. Value: `AcmeCertificateRecord`, one per
    /// vhost whose certificate is issued and renewed through ACME.
    AcmeCertificates,
}

impl Table {
    /// Every table, created when the store opens.
    pub const ALL: &'static [Table] = &[
        Table::Meta,
        Table::Users,
        Table::UsernameIndex,
        Table::EmailIndex,
        Table::Tickets,
        Table::TicketsByUser,
        Table::TicketsByExpiry,
        Table::ApiKeys,
        Table::Instances,
        Table::Audit,
        Table::Tasks,
        Table::TaskOrder,
        Table::TaskOwnerIndex,
        Table::TaskInstanceIndex,
        Table::TaskStateIndex,
        Table::TaskActive,
        Table::TaskLogs,
        Table::TaskSecrets,
        Table::TaskIdempotency,
        Table::TaskCounts,
        Table::ProxmoxNodes,
        Table::Agents,
        Table::EnrollmentTokens,
        Table::AcmeAccounts,
        Table::AcmeCertificates,
    ];

    /// The redb table name, versioned.
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta_v1",
            Table::Users => "users_v1",
            Table::UsernameIndex => "username_index_v1",
            Table::EmailIndex => "email_index_v1",
            Table::Tickets => "tickets_v1",
            Table::TicketsByUser => "tickets_by_user_v1",
            Table::TicketsByExpiry => "tickets_by_expiry_v1",
            Table::ApiKeys => "api_keys_v1",
            Table::Instances => "instances_v1",
            Table::Audit => "audit_v1",
            Table::Tasks => "tasks_v1",
            Table::TaskOrder => "task_order_v1",
            Table::TaskOwnerIndex => "task_owner_index_v1",
            Table::TaskInstanceIndex => "task_instance_index_v1",
            Table::TaskStateIndex => "task_state_index_v1",
            Table::TaskActive => "task_active_v1",
            Table::TaskLogs => "task_logs_v1",
            Table::TaskSecrets => "task_secrets_v1",
            Table::TaskIdempotency => "task_idempotency_v1",
            Table::TaskCounts => "task_counts_v1",
            Table::ProxmoxNodes => "proxmox_nodes_v1",
            Table::Agents => "agents_v1",
            Table::EnrollmentTokens => "enrollment_tokens_v1",
            Table::AcmeAccounts => "acme_accounts_v1",
            Table::AcmeCertificates => "acme_certificates_v1",
        }
    }

    /// True for the tables that hold secrets: their records are sealed in the store file (see
    /// `store::sealing`).
    pub fn is_sealed(self) -> bool {
        matches!(
            self,
            Table::ProxmoxNodes | Table::AcmeAccounts | Table::TaskSecrets
        )
    }
}
