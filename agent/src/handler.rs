//! Operation handlers: the one place where new kinds of work plug into the agent, without
//! touching the transport. A [`Handler`] says which operations it performs and performs them,
//! reporting progress and log lines through its [`TaskContext`]; [`Handlers`] asks them in
//! order. The handlers themselves live with their operations, and `standard` assembles the set
//! an agent runs with.

use std::sync::Arc;
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use protocol::{DataStreamHeader, ErrorCode, ErrorData, Operation, TaskId, TaskOutcome};
use tokio::sync::mpsc;

/// The longest log line sent; longer lines are cut.
pub const MAX_LOG_LINE: usize = 4096;

/// What a running task reports before its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    Progress { percent: u8, message: String },
    Log(String),
}

/// Opens the stream that carries a task's bulk data (a database dump) to the coordinator.
#[derive(Debug, Clone)]
pub struct DataChannel {
    connection: quinn::Connection,
}

impl DataChannel {
    pub fn new(connection: quinn::Connection) -> DataChannel {
        DataChannel { connection }
    }

    /// Opens a unidirectional stream and writes its [`DataStreamHeader`]; everything written
    /// after that is the task's data. QUIC flow control makes writes wait while the coordinator
    /// is slow to read, which is the back-pressure of the whole path.
    pub async fn open(&self, task_id: TaskId) -> Result<quinn::SendStream, ErrorData> {
        let lost = |error: &dyn std::fmt::Display| {
            ErrorData::new(
                ErrorCode::Unavailable,
                format!("cannot open the data stream to the coordinator: {error}"),
            )
        };
        let mut send = self
            .connection
            .open_uni()
            .await
            .map_err(|error| lost(&error))?;
        shell::wire::write_message(&mut send, &DataStreamHeader { task_id })
            .await
            .map_err(|error| lost(&error))?;
        Ok(send)
    }
}

/// What a handler knows about the task it runs, and its way to report.
#[derive(Debug, Clone)]
pub struct TaskContext {
    pub task_id: TaskId,
    /// When the coordinator stops caring; the transport also stops the handler then.
    pub deadline: SystemTime,
    /// 1 for the first delivery.
    pub attempt: u32,
    events: mpsc::Sender<TaskEvent>,
    data: Option<DataChannel>,
}

impl TaskContext {
    /// A context whose reports go to `events` (the transport reads them; tests may too).
    pub fn new(
        task_id: TaskId,
        deadline: SystemTime,
        attempt: u32,
        events: mpsc::Sender<TaskEvent>,
    ) -> TaskContext {
        TaskContext {
            task_id,
            deadline,
            attempt,
            events,
            data: None,
        }
    }

    /// The same context with a way to open a data stream.
    pub fn with_data_channel(mut self, data: DataChannel) -> TaskContext {
        self.data = Some(data);
        self
    }

    /// The way to open a data stream, when the transport gives one.
    pub fn data_channel(&self) -> Option<&DataChannel> {
        self.data.as_ref()
    }

    /// Reports progress (0 to 100). Waits while the coordinator is slow to read.
    pub async fn progress(&self, percent: u8, message: impl Into<String>) {
        let _ = self
            .events
            .send(TaskEvent::Progress {
                percent: percent.min(100),
                message: cut(message.into()),
            })
            .await;
    }

    /// Reports one line of output.
    pub async fn log(&self, line: impl Into<String>) {
        let _ = self.events.send(TaskEvent::Log(cut(line.into()))).await;
    }
}

fn cut(mut text: String) -> String {
    if text.len() > MAX_LOG_LINE {
        let mut end = MAX_LOG_LINE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Performs some kinds of [`Operation`].
///
/// Handlers that must not overlap with themselves (apt, a web server reload) serialize inside
/// (for example with a `tokio::sync::Mutex` they hold); the transport runs tasks concurrently.
pub trait Handler: Send + Sync + 'static {
    /// Whether this handler performs `operation`.
    fn handles(&self, operation: &Operation) -> bool;

    /// Performs `operation`. The future must own what it needs (clone `Arc`s into it).
    fn handle(&self, operation: Operation, context: TaskContext)
    -> BoxFuture<'static, TaskOutcome>;
}

/// The handlers of an agent, asked in order.
#[derive(Clone, Default)]
pub struct Handlers {
    handlers: Vec<Arc<dyn Handler>>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Handlers({})", self.handlers.len())
    }
}

impl Handlers {
    /// No handlers: every operation is unsupported.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Adds a handler after the present ones.
    pub fn with(mut self, handler: impl Handler) -> Handlers {
        self.handlers.push(Arc::new(handler));
        self
    }

    /// Runs `operation` on the first handler that takes it.
    pub fn dispatch(
        &self,
        operation: Operation,
        context: TaskContext,
    ) -> BoxFuture<'static, TaskOutcome> {
        match self
            .handlers
            .iter()
            .find(|handler| handler.handles(&operation))
        {
            Some(handler) => handler.handle(operation, context),
            None => {
                let name = operation_name(&operation);
                Box::pin(async move {
                    Err(ErrorData::new(
                        ErrorCode::Unsupported,
                        format!("this agent does not perform {name} operations"),
                    ))
                })
            }
        }
    }
}

/// A short name of an operation's kind, for messages.
pub fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Ping { .. } => "ping",
        Operation::PackageList { .. } => "package list",
        Operation::PackageInstall { .. } => "package install",
        Operation::PackageUpgrade { .. } => "package upgrade",
        Operation::PackageRemove { .. } => "package remove",
        Operation::DatabaseList { .. } => "database list",
        Operation::DatabaseCreate { .. } => "database create",
        Operation::DatabaseChangePassword { .. } => "database password change",
        Operation::DatabaseDrop { .. } => "database drop",
        Operation::DatabaseDump { .. } => "database dump",
        Operation::VhostList => "vhost list",
        Operation::VhostGet { .. } => "vhost read",
        Operation::VhostPut { .. } => "vhost change",
        Operation::VhostDelete { .. } => "vhost delete",
        Operation::VhostSetExtra { .. } => "vhost administrator's block change",
        Operation::CertificateGet { .. } => "certificate status",
        Operation::CertificateDeploy { .. } => "certificate deploy",
        Operation::CertificateRemove { .. } => "certificate remove",
        Operation::CertificateRecordAttempt { .. } => "certificate attempt record",
        Operation::CertificateRequestKey { .. } => "certificate key request",
        Operation::CertificateDeployIssued { .. } => "issued certificate deploy",
        Operation::AcmeChallengePut { .. } => "ACME challenge answer",
        Operation::AcmeChallengeRemove { .. } => "ACME challenge removal",
        Operation::CacheGet { .. } => "cache status",
        Operation::CacheSet { .. } => "cache change",
        Operation::CacheDisable { .. } => "cache disable",
        Operation::CachePurge { .. } => "cache purge",
        Operation::CertificateCheck { .. } => "certificate check",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ping::PingHandler;
    use protocol::OperationOutput;

    fn context() -> (TaskContext, mpsc::Receiver<TaskEvent>) {
        let (sender, receiver) = mpsc::channel(4);
        (
            TaskContext::new(TaskId([1; 16]), SystemTime::now(), 1, sender),
            receiver,
        )
    }

    #[tokio::test]
    async fn dispatch_finds_the_handler_or_says_unsupported() {
        let handlers = Handlers::new().with(PingHandler);
        let (context, _) = context();
        let pong = handlers
            .dispatch(
                Operation::Ping {
                    payload: vec![1, 2],
                },
                context.clone(),
            )
            .await;
        assert_eq!(
            pong,
            Ok(OperationOutput::Pong {
                payload: vec![1, 2]
            })
        );
        let unsupported = handlers
            .dispatch(Operation::PackageList { names: vec![] }, context)
            .await
            .unwrap_err();
        assert_eq!(unsupported.code, ErrorCode::Unsupported);
    }

    #[tokio::test]
    async fn long_log_lines_are_cut_on_a_character_boundary() {
        let (context, mut events) = context();
        context.log("é".repeat(MAX_LOG_LINE)).await;
        let Some(TaskEvent::Log(line)) = events.recv().await else {
            panic!("no log line")
        };
        assert!(line.len() <= MAX_LOG_LINE && line.len() >= MAX_LOG_LINE - 1);
    }
}
