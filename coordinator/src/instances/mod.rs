//! Instances: LXC containers whose lifecycle runs through Proxmox as tasks. What a caller may
//! ask of an instance (the field validator, creation and change parsing), where a new one goes
//! (placement), what its owner may use (quota), its record and state in the store, and the
//! task executors that do the work. The HTTP routes that call these live in
//! `api::instances`; this module knows nothing of HTTP.
//!
//! Invariant: an instance record exists (state `creating`) before Proxmox is asked to create
//! the container; after every outcome the record matches Proxmox (see [`executors`]).
//! Invariant: a record's state is one of [`InstanceState`]'s names; code names the variant,
//! never the string.

pub mod error;
pub mod executors;
pub mod kinds;
pub mod operations;
pub mod placement;
pub mod quota;
pub mod records;
pub mod request;
pub mod state;

pub use error::InstanceError;
pub use executors::{CreateInput, DownloadInput, PowerInput, UpdateInput, power_action, register};
pub use request::{CreateRequest, parse_create, valid_hostname};
pub use state::InstanceState;
