//! Authentication and authorization: the one path every route goes through.
//!
//! Invariant: a principal comes only from a verified credential (API key, ticket); handlers
//! never look at credentials themselves.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::App;
use crate::api::{Access, ApiError, ApiRequest};

/// A caller's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Customer,
}

/// Which credential authenticated the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Credential {
    ApiKey(String),
    Ticket(String),
}

impl Credential {
    /// The credential's id, for the audit log (never the secret).
    pub fn id(&self) -> String {
        match self {
            Credential::ApiKey(id) => format!("apikey:{id}"),
            Credential::Ticket(id) => format!("ticket:{id}"),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    pub role: Role,
    pub credential: Credential,
    /// An API key limited to some instances carries their ids.
    pub instance_scope: Option<Vec<u32>>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Authenticates a request for a route with the given access rule.
pub async fn authenticate(
    _app: &Arc<App>,
    _request: &ApiRequest,
    access: Access,
) -> Result<Option<Principal>, ApiError> {
    match access {
        Access::Public => Ok(None),
        Access::Authenticated | Access::Admin => {
            Err(ApiError::unauthorized("credentials are required"))
        }
    }
}

/// The instance `id` if the principal may act on it: admins on every instance, a customer on
/// their own, an instance-scoped key on its instances. Everyone else gets 404, as if the
/// instance did not exist.
pub fn require_instance(
    app: &App,
    principal: &Principal,
    id: u32,
) -> Result<crate::store::records::InstanceRecord, ApiError> {
    let not_found = || ApiError::not_found(format!("instance {id} does not exist"));
    if let Some(scope) = &principal.instance_scope
        && !scope.contains(&id)
    {
        return Err(not_found());
    }
    let record: Option<crate::store::records::InstanceRecord> = app.store.get(
        crate::store::Table::Instances,
        &crate::store::records::InstanceRecord::key(id),
    )?;
    match record {
        Some(record) if principal.is_admin() || record.user == principal.user_id => Ok(record),
        _ => Err(not_found()),
    }
}

/// Parses an instance id from a path parameter; anything but a VMID is a 404.
pub fn parse_instance_id(text: &str) -> Result<u32, ApiError> {
    text.parse::<u32>()
        .ok()
        .filter(|id| (100..=999_999_999).contains(id))
        .ok_or_else(|| ApiError::not_found(format!("instance {text:?} does not exist")))
}
