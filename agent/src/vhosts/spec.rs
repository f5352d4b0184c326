//! The typed vhost spec and its validation. They live in the protocol crate, so the coordinator
//! refuses a bad spec with the same rules before it sends anything; this module gives them their
//! place among the agent's vhost modules.

pub use protocol::web::vhost::*;
pub use protocol::web::{FieldError, Presence, ValidationError};
