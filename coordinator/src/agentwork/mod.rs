//! Work done by an instance's agent: a typed [`Operation`] becomes a task, persisted before
//! anything is sent, delivered to the agent when it is connected (queued while it is not, until
//! the task's deadline), acknowledged, followed through its progress and log lines, and ended
//! with the agent's result ([`executor`]). Reads that need an answer now go straight to the
//! agent ([`call`]). A dump's data stream is handed from its executor to whoever serves it
//! ([`dumps`]); what an agent reports is kept in the task's result in the shapes of
//! [`results`].
//!
//! Delivery is at least once. The task's id is the agent's task id, and the agent answers a
//! task it has seen before from its own store (or waits for the running copy), so a task
//! delivered again (after a lost connection, or after this coordinator restarted and resumed
//! it) is never done twice; a task the agent was running when it died comes back as
//! `interrupted`. Dumps are the exception: their data stream cannot be resumed, so a dump whose
//! connection is lost fails.
//!
//! This module knows nothing of HTTP: its failures are [`AgentWorkError`], which the API maps.
//!
//! Invariant: the task is `sent` in the store before its delivery leaves the coordinator, and
//! `running` once the agent acknowledged it.

pub mod dumps;
pub mod executor;
pub mod results;

use std::time::Duration;

use protocol::{ErrorData, Operation, OperationOutput};
use serde::{Deserialize, Serialize};

pub use dumps::DumpHandoffs;
pub use executor::{agent_task_id, register, wait_for_agent};
pub use results::{database_json, output_json, packages_json};

use crate::App;
use crate::channel::ChannelError;
use crate::tasks::NewTask;
use crate::tasks::kinds::{
    CACHE_CHANGE, CACHE_DISABLE, CACHE_ENABLE, CACHE_PURGE, DATABASE_CREATE, DATABASE_DROP,
    DATABASE_DUMP, DATABASE_PASSWORD, PACKAGE_INSTALL, PACKAGE_REMOVE, PACKAGE_UPGRADE, SSL_DEPLOY,
    SSL_REMOVE, VHOST_CHANGE, VHOST_CREATE, VHOST_DELETE, VHOST_EXTRA,
};

/// Whether a task of a kind is delivered again after its connection was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// Delivered again when the agent reconnects, and resumed after a coordinator restart:
    /// the agent answers a repeat from its store.
    Yes,
    /// Failed when the connection is lost (the work streams data that cannot be resumed).
    No,
}

/// Every agent task kind and its redelivery rule.
pub const KINDS: &[(&str, Redelivery)] = &[
    (PACKAGE_INSTALL, Redelivery::Yes),
    (PACKAGE_UPGRADE, Redelivery::Yes),
    (PACKAGE_REMOVE, Redelivery::Yes),
    (DATABASE_CREATE, Redelivery::Yes),
    (DATABASE_PASSWORD, Redelivery::Yes),
    (DATABASE_DROP, Redelivery::Yes),
    (DATABASE_DUMP, Redelivery::No),
    (VHOST_CREATE, Redelivery::Yes),
    (VHOST_CHANGE, Redelivery::Yes),
    (VHOST_DELETE, Redelivery::Yes),
    (VHOST_EXTRA, Redelivery::Yes),
    (SSL_DEPLOY, Redelivery::Yes),
    (SSL_REMOVE, Redelivery::Yes),
    (CACHE_ENABLE, Redelivery::Yes),
    (CACHE_CHANGE, Redelivery::Yes),
    (CACHE_DISABLE, Redelivery::Yes),
    (CACHE_PURGE, Redelivery::Yes),
];

/// How long an agent task may wait and run, unless the route says otherwise: long enough to
/// ride out an agent that reconnects after a reboot, short enough that stale work is not done
/// a day later.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(3600);
/// How long a direct call to the agent may take.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// Why a direct call to an agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentWorkError {
    /// The agent did the work and reported a failure.
    #[error("the agent reported an error: {}", .0.message)]
    Agent(ErrorData),
    /// The channel could not carry the request (agent offline, deadline, lost connection).
    #[error(transparent)]
    Channel(ChannelError),
}

impl From<ChannelError> for AgentWorkError {
    fn from(error: ChannelError) -> AgentWorkError {
        match error {
            ChannelError::Operation(error) => AgentWorkError::Agent(error),
            other => AgentWorkError::Channel(other),
        }
    }
}

/// The stored input of an agent task.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Input {
    operation: Operation,
}

/// The task for `operation` on `instance`, as `owner`.
pub fn new_task(owner: &str, instance: u32, kind: &str, operation: &Operation) -> NewTask {
    let task = NewTask::new(kind, owner)
        .instance(instance)
        .deadline(DEFAULT_DEADLINE);
    crate::operation_secrets::with_operation(task, operation)
}

/// Asks the agent now (reads), within [`CALL_DEADLINE`].
pub async fn call(
    app: &App,
    instance: u32,
    operation: Operation,
) -> Result<OperationOutput, AgentWorkError> {
    app.channel
        .call(instance, operation, CALL_DEADLINE)
        .await
        .map_err(AgentWorkError::from)
}
