//! Why an instance operation was refused or failed: the domain's errors, mapped to HTTP only
//! by the API.

use crate::proxmox::ProxmoxError;
use crate::proxmox::registry::RegistryError;
use crate::store::StoreError;
use crate::tasks::TaskError;

use super::quota::QuotaExceeded;
use super::records::ReserveError;

/// A refused or failed instance operation.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// One reason per bad field, in the order they were found.
    #[error("invalid input: {}", summary(.0))]
    Invalid(Vec<(String, String)>),
    /// A create named a VMID that has an instance record.
    #[error("instance {0} already exists")]
    Exists(u32),
    /// A create named a VMID that is taken (in the store or in Proxmox).
    #[error("VMID {0} is already taken")]
    Taken(u32),
    /// The search for a free VMID gave up after this many tries.
    #[error("no free VMID found after {0} tries")]
    NoVmid(u32),
    /// No Proxmox node is registered.
    #[error("no Proxmox node is registered")]
    NoNodes,
    /// Nodes are registered but none is online.
    #[error("no registered Proxmox node is online")]
    NoNodeOnline,
    /// The named node is not registered.
    #[error("node {0:?} is not registered")]
    UnknownNode(String),
    /// The owner's quota would be exceeded.
    #[error("the quota of user {user} would be exceeded: {}", .exceeded.exceeded.join(", "))]
    Quota {
        /// The owner's user name.
        user: String,
        exceeded: QuotaExceeded,
    },
    /// A customer's change to a suspended instance.
    #[error("instance {0} is suspended; only an admin can change it until it is unsuspended")]
    Suspended(u32),
    /// Any change while the instance is being created.
    #[error("instance {0} is still being created")]
    Creating(u32),
    /// Any change while the instance is being destroyed.
    #[error("instance {0} is being destroyed")]
    Destroying(u32),
    /// A power action on an instance whose create failed.
    #[error("instance {0} failed to be created; delete it")]
    Failed(u32),
    /// A task input could not be encoded.
    #[error("cannot encode a task input: {0}")]
    Encode(#[from] serde_json::Error),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Proxmox(#[from] ProxmoxError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn summary(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .map(|(name, reason)| format!("{name}: {reason}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl InstanceError {
    /// A single invalid field.
    pub fn invalid_field(name: &str, reason: impl Into<String>) -> InstanceError {
        InstanceError::Invalid(vec![(name.to_string(), reason.into())])
    }
}

impl From<RegistryError> for InstanceError {
    fn from(error: RegistryError) -> InstanceError {
        match error {
            RegistryError::UnknownNode(node) => InstanceError::UnknownNode(node),
            RegistryError::Store(error) => InstanceError::Store(error),
            RegistryError::Proxmox(error) => InstanceError::Proxmox(error),
        }
    }
}

impl From<ReserveError> for InstanceError {
    fn from(error: ReserveError) -> InstanceError {
        match error {
            ReserveError::Taken(id) => InstanceError::Taken(id),
            ReserveError::Exhausted(tries) => InstanceError::NoVmid(tries),
            ReserveError::Quota { user, exceeded } => InstanceError::Quota { user, exceeded },
            ReserveError::Proxmox(error) => InstanceError::Proxmox(error),
            ReserveError::Store(error) => InstanceError::Store(error),
        }
    }
}
