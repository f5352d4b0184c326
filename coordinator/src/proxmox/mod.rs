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
