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
