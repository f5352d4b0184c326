//! The Proxmox VE client: one [`Client`] per endpoint, its errors, task ids, retry policy, TLS
//! trust and LXC property strings.

pub mod client;
pub mod dev;
pub mod error;
pub mod property;
pub mod registry;
pub mod retry;
pub mod tls;
pub mod types;
pub mod upid;

pub use client::{Client, ClientSettings, CreateContainer, Endpoint, PowerAction, PowerOutcome};
pub use error::{ErrorClass, ProxmoxError};
pub use retry::{CallKind, RetryPolicy};
pub use tls::Trust;
pub use upid::Upid;

use crate::api::ApiError;

impl From<ProxmoxError> for ApiError {
    /// Proxmox's refusals reach the caller as 502 with Proxmox's message, deadlines as 504.
    fn from(error: ProxmoxError) -> ApiError {
        if error.is_timeout() {
            ApiError::gateway_timeout(format!("Proxmox: {}", error.proxmox_message()))
        } else {
            match error {
                ProxmoxError::Config { .. } => ApiError::bad_gateway(error.to_string()),
                other => ApiError::bad_gateway(format!("Proxmox: {}", other.proxmox_message())),
            }
        }
    }
}
