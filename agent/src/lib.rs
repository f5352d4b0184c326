//! The Hostplane agent: enrolls with the coordinator, keeps a mutually authenticated QUIC
//! connection to it, and carries out typed operations inside its container.
//!
//! Entry points: [`enroll()`] (one-time token to certificate) and [`spawn`] / [`run()`] (the
//! connection loop). New kinds of work plug in as a [`Handler`]; the transport does not change.

pub mod backoff;
pub mod cache;
pub mod certs;
pub mod databases;
pub mod enroll;
pub mod handler;
pub mod packages;
pub mod ping;
pub mod process;
pub mod run;
pub mod standard;
pub mod standby;
pub mod state;
pub mod tasks;
pub mod tls;
pub mod vhosts;
pub mod web_handler;

pub use enroll::{EnrollError, EnrollOptions, Enrolled, enroll};
pub use handler::{DataChannel, Handler, Handlers, TaskContext, TaskEvent};
pub use ping::PingHandler;
pub use run::{AgentHandle, AgentState, ConnectionPhase, RunOptions, run, spawn};
pub use standby::{Standby, StandbyOptions, until_enrolled};
pub use state::{StateDir, StateError};
pub use tasks::{DiskFinishedTasks, FinishedTasks, MemoryFinishedTasks};
pub use tls::Transport;
pub use web_handler::WebHandler;

/// The default state directory (certificate, key, CA, finished-task store).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/hostplane-agent";

/// This agent's version, sent in its hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Installs the aws-lc-rs crypto provider for rustls once per process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
