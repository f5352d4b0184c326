//! Every table of the store, with what its keys and values are. Names carry a layout version.

/// A table of the store. Keys are strings; values are JSON documents of the named record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Store-wide facts: `schema_version`, first-start markers. Values vary per key.
    Meta,
    /// Key: user id. Value: `UserRecord`.
    Users,
    /// Key: lower-cased username. Value: user id (a unique index).
    UsernameIndex,
    /// Key: lower-cased email. Value: user id (a unique index).
    EmailIndex,
    /// Key: SHA-256 hex of the ticket. Value: `TicketRecord`.
    Tickets,
    /// Key: key id. Value: `ApiKeyRecord` (with the SHA-256 of the secret).
    ApiKeys,
    /// Key: VMID, 10 zero-padded digits. Value: `InstanceRecord`.
    Instances,
    /// Key: 20 zero-padded digits of a sequence number. Value: `AuditRecord`. Append-only.
    Audit,
}

impl Table {
    /// Every table, created when the store opens.
    pub const ALL: &'static [Table] = &[
        Table::Meta,
        Table::Users,
        Table::UsernameIndex,
        Table::EmailIndex,
        Table::Tickets,
        Table::ApiKeys,
        Table::Instances,
        Table::Audit,
    ];

    /// The redb table name, versioned.
    pub fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta_v1",
            Table::Users => "users_v1",
            Table::UsernameIndex => "username_index_v1",
            Table::EmailIndex => "email_index_v1",
            Table::Tickets => "tickets_v1",
            Table::ApiKeys => "api_keys_v1",
            Table::Instances => "instances_v1",
            Table::Audit => "audit_v1",
        }
    }
}
