//! The messages of an established agent connection, one enum per direction.

use serde::{Deserialize, Serialize};

use crate::{ErrorData, TaskDelivery, TaskId, TaskOutcome};

/// Services an agent can find in its container. New variants are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The nginx web server.
    Nginx,
    /// The MariaDB database server.
    MariaDb,
    /// The PostgreSQL database server.
    PostgreSql,
}

/// One service found in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStatus {
    /// Which service.
    pub engine: Engine,
    /// Its installed version, empty if unknown.
    pub version: String,
    /// Whether it is running.
    pub active: bool,
}

/// A small summary of the agent's state, sent with every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSummary {
    /// Seconds since the container booted.
    pub uptime_seconds: u64,
    /// Load averages over 1, 5 and 15 minutes.
    pub load_average: [f32; 3],
    /// Tasks currently running on the agent.
    pub running_tasks: u32,
    /// Tasks the agent has finished and still remembers.
    pub finished_tasks: u64,
    /// Services present in the container.
    pub engines: Vec<EngineStatus>,
}

/// The agent is alive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The agent's clock when it sent this, in milliseconds since the Unix epoch.
    pub sent_at_unix_ms: u64,
    /// The agent's state.
    pub summary: StateSummary,
}

/// The coordinator's answer to a [`Heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// Echoed from the heartbeat, so the agent can measure the round trip.
    pub heartbeat_sent_at_unix_ms: u64,
    /// The coordinator's clock when it answered, so the agent can notice clock skew.
    pub coordinator_time_unix_ms: u64,
}

/// One side's view of tasks, exchanged after every (re)connect.
///
/// The agent sends its inventory first and the coordinator answers with its own. Then each side
/// resends only what the other lacks: the agent resends the result of every task it has finished
/// that the coordinator lists as running, and the coordinator redelivers every task it lists as
/// running that the agent lists neither as running nor as finished.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskInventory {
    /// Tasks in progress. For the coordinator: tasks sent whose result it has not recorded.
    pub running: Vec<TaskId>,
    /// Tasks finished. For the agent: those it still remembers. For the coordinator: those whose
    /// result it has recorded and that the agent might still remember.
    pub finished: Vec<TaskId>,
}

/// The first frame of a unidirectional stream that carries bulk data for a task (a database
/// dump). Everything after this frame is raw data, not frames; the end of the stream is the end
/// of the data, which the task's result then describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataStreamHeader {
    /// The task the data belongs to.
    pub task_id: TaskId,
}

/// Everything an agent sends after the handshake. New variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMessage {
    /// The agent is alive; answered by [`CoordinatorMessage::HeartbeatAck`].
    Heartbeat(Heartbeat),
    /// The agent has received a task and stored it; sent before any work starts.
    TaskAck {
        /// The task received.
        task_id: TaskId,
        /// The agent already knew this task (running or finished) and did not start it again.
        duplicate: bool,
    },
    /// How far a running task has come.
    TaskProgress {
        /// The task.
        task_id: TaskId,
        /// From 0 to 100.
        percent: u8,
        /// What it is doing now.
        message: String,
    },
    /// One line of output of a running task.
    TaskLog {
        /// The task.
        task_id: TaskId,
        /// The line, without its line ending.
        line: String,
    },
    /// A task has ended. For a repeated delivery of a finished task this is the stored result.
    TaskResult {
        /// The task.
        task_id: TaskId,
        /// What came of it.
        outcome: TaskOutcome,
    },
    /// The agent's task inventory after a (re)connect; answered by
    /// [`CoordinatorMessage::Reconcile`].
    Reconcile(TaskInventory),
    /// The agent asks for a new certificate for a fresh key; answered by
    /// [`CoordinatorMessage::CertificateRenewed`] or [`CoordinatorMessage::Error`].
    RenewCertificate {
        /// A certificate signing request in DER. The coordinator ignores every name in it.
        csr_der: Vec<u8>,
    },
}

/// Everything the coordinator sends after the handshake. New variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorMessage {
    /// The answer to a heartbeat.
    HeartbeatAck(HeartbeatAck),
    /// A task to perform.
    Task(TaskDelivery),
    /// Stop a task; the agent answers with a result, [`crate::ErrorCode::Cancelled`] if it stopped
    /// in time.
    CancelTask {
        /// The task.
        task_id: TaskId,
    },
    /// The coordinator has durably recorded a task's result; the agent need not resend it.
    ResultRecorded {
        /// The task.
        task_id: TaskId,
    },
    /// The coordinator's task inventory, in answer to the agent's.
    Reconcile(TaskInventory),
    /// A renewed certificate for the agent.
    CertificateRenewed {
        /// The signed certificate in DER.
        certificate_der: Vec<u8>,
    },
    /// A request from the agent failed.
    Error(ErrorData),
}
