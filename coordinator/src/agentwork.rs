//! Work done by an instance's agent: a typed [`Operation`] becomes a task, persisted before
//! anything is sent, delivered to the agent when it is connected (queued while it is not, until
//! the task's deadline), acknowledged, followed through its progress and log lines, and ended
//! with the agent's result. Reads that need an answer now go straight to the agent ([`call`]).
//!
//! Delivery is at least once. The task's id is the agent's task id, and the agent answers a
//! task it has seen before from its own store (or waits for the running copy), so a task
//! delivered again (after a lost connection, or after this coordinator restarted and resumed
//! it) is never done twice; a task the agent was running when it died comes back as
//! `interrupted`. Dumps are the exception: their data stream cannot be resumed, so a dump whose
//! connection is lost fails.
//!
//! Invariant: the task is `sent` in the store before its delivery leaves the coordinator, and
//! `running` once the agent acknowledged it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use protocol::{ErrorCode, ErrorData, Operation, OperationOutput, TaskDelivery, TaskId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::App;
use crate::api::tasks::respond_with_task;
use crate::api::{ApiError, ApiRequest, ApiResult};
use crate::api::{vhosts, web_json, web_services};
use crate::channel::{AgentEvent, ChannelError, RequestEvent};
use crate::tasks::{Executor, NewTask, Phase, RestartPolicy, TaskContext, TaskFailure};

/// Task kinds whose work is an agent operation.
pub const PACKAGE_INSTALL: &str = "package.install";
pub const PACKAGE_UPGRADE: &str = "package.upgrade";
pub const PACKAGE_REMOVE: &str = "package.remove";
pub const DATABASE_CREATE: &str = "database.create";
pub const DATABASE_PASSWORD: &str = "database.password";
pub const DATABASE_DROP: &str = "database.drop";
pub const DATABASE_DUMP: &str = "database.dump";

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
    (vhosts::VHOST_CREATE, Redelivery::Yes),
    (vhosts::VHOST_CHANGE, Redelivery::Yes),
    (vhosts::VHOST_DELETE, Redelivery::Yes),
    (vhosts::VHOST_EXTRA, Redelivery::Yes),
    (web_services::SSL_DEPLOY, Redelivery::Yes),
    (web_services::SSL_REMOVE, Redelivery::Yes),
    (web_services::CACHE_ENABLE, Redelivery::Yes),
    (web_services::CACHE_CHANGE, Redelivery::Yes),
    (web_services::CACHE_DISABLE, Redelivery::Yes),
    (web_services::CACHE_PURGE, Redelivery::Yes),
];

/// How long an agent task may wait and run, unless the route says otherwise: long enough to
/// ride out an agent that reconnects after a reboot, short enough that stale work is not done
/// a day later.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(3600);
/// How long a direct call to the agent may take.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);
/// How long a queued task re-checks the connection even without a connect event.
const RECHECK: Duration = Duration::from_secs(5);
/// How long a cancelled task waits for the agent's answer before it ends anyway.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

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

/// Submits `operation` as a task for the instance's agent and answers as every task route does
/// (`202`, `Location`, `?wait=`, `Idempotency-Key`). The caller has checked the instance and
/// the input.
pub async fn submit(
    app: &App,
    request: &ApiRequest,
    instance: u32,
    kind: &str,
    operation: Operation,
) -> ApiResult {
    let principal = request.principal()?;
    let new = new_task(&principal.user_id, instance, kind, &operation);
    respond_with_task(app, request, new).await
}

/// Asks the agent now (reads): `503` while it is not connected, `504` past the deadline, and
/// the agent's failure as its status.
pub async fn call(
    app: &App,
    instance: u32,
    operation: Operation,
) -> Result<OperationOutput, ApiError> {
    app.channel
        .call(instance, operation, CALL_DEADLINE)
        .await
        .map_err(|error| match error {
            ChannelError::Operation(error) => agent_error(&error),
            other => crate::api::agents::channel_error(other),
        })
}

/// The API form of a failure the agent reported.
pub fn agent_error(error: &ErrorData) -> ApiError {
    use http::StatusCode;
    let status = match error.code {
        ErrorCode::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::CommandFailed => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, error.code.as_str(), error.message.clone())
}

/// The API form of an ended task's error (for a route that waited for the task).
pub fn task_error(code: &str, message: &str) -> ApiError {
    use http::StatusCode;
    if let Some(known) = ErrorCode::ALL
        .into_iter()
        .find(|known| known.as_str() == code)
    {
        return agent_error(&ErrorData::new(known, message));
    }
    let (status, code) = match code {
        "agent_offline" => (StatusCode::SERVICE_UNAVAILABLE, "agent_offline"),
        "stopping" => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
        "connection_lost" => (StatusCode::BAD_GATEWAY, "connection_lost"),
        "cancelled" => (StatusCode::CONFLICT, "cancelled"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "agent_task_failed"),
    };
    ApiError::new(status, code, message.to_string())
}

/// The task result of an operation's output, in the API's JSON shapes.
pub fn output_json(output: &OperationOutput) -> Value {
    match output {
        OperationOutput::Pong { payload } => json!({ "payload": hex::encode(payload) }),
        OperationOutput::Packages(packages) => json!({ "packages": packages_json(packages) }),
        OperationOutput::Databases(databases) => {
            json!({ "databases": databases.iter().map(database_json).collect::<Vec<_>>() })
        }
        OperationOutput::Done => json!({}),
        OperationOutput::DumpFinished { bytes, sha256 } => {
            json!({ "bytes": bytes, "sha256": hex::encode(sha256) })
        }
        OperationOutput::Vhosts(vhosts) => json!({
            "vhosts": vhosts
                .iter()
                .map(|vhost| web_json::vhost_json(vhost, false))
                .collect::<Vec<_>>()
        }),
        OperationOutput::Vhost(vhost) => json!({ "vhost": web_json::vhost_json(vhost, false) }),
        OperationOutput::Certificate(status) => {
            json!({ "certificate": web_json::certificate_json(status) })
        }
        OperationOutput::CertificateSigningRequest { csr_der } => {
            json!({ "csr_bytes": csr_der.len() })
        }
        OperationOutput::Cache(status) => json!({ "cache": web_json::cache_json(status) }),
        OperationOutput::CachePurged(report) => json!({ "removed_files": report.removed_files }),
    }
}

/// Packages in the API's shape.
pub fn packages_json(packages: &[protocol::PackageInfo]) -> Vec<Value> {
    packages
        .iter()
        .map(|package| {
            json!({
                "name": package.name,
                "version": package.version,
                "architecture": package.architecture,
            })
        })
        .collect()
}

/// A database in the API's shape.
pub fn database_json(database: &protocol::DatabaseInfo) -> Value {
    json!({
        "name": database.name,
        "engine": database.engine,
        "size": database.size_bytes,
        "owner": database.owner,
    })
}

/// The data streams of dumps, handed from the executor that received one to the HTTP request
/// that serves it, whichever comes first.
#[derive(Debug, Default)]
pub struct DumpHandoffs {
    slots: Mutex<HashMap<String, Handoff>>,
}

#[derive(Debug)]
enum Handoff {
    Waiting(oneshot::Sender<quinn::RecvStream>),
    Ready(quinn::RecvStream),
}

impl DumpHandoffs {
    fn give(&self, task: &str, stream: quinn::RecvStream) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.remove(task) {
            Some(Handoff::Waiting(sender)) => {
                if let Err(mut stream) = sender.send(stream) {
                    let _ = stream.stop(quinn::VarInt::from_u32(0));
                }
            }
            _ => {
                slots.insert(task.to_string(), Handoff::Ready(stream));
            }
        }
    }

    /// The data stream of dump task `task`, once its agent has opened it.
    pub async fn take(&self, task: &str) -> Option<quinn::RecvStream> {
        let receiver = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.remove(task) {
                Some(Handoff::Ready(stream)) => return Some(stream),
                _ => {
                    let (sender, receiver) = oneshot::channel();
                    slots.insert(task.to_string(), Handoff::Waiting(sender));
                    receiver
                }
            }
        };
        receiver.await.ok()
    }

    /// Forgets the slot of a task that ended (a stream nobody took is stopped).
    pub fn forget(&self, task: &str) {
        let removed = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(task);
        if let Some(Handoff::Ready(mut stream)) = removed {
            let _ = stream.stop(quinn::VarInt::from_u32(0));
        }
    }
}

/// Registers the executor of every agent task kind. Executors hold the application weakly.
pub fn register(app: &Arc<App>) {
    for (kind, redelivery) in KINDS {
        app.tasks.register(
            kind,
            AgentExecutor {
                app: Arc::downgrade(app),
                redelivery: *redelivery,
            },
        );
    }
}

struct AgentExecutor {
    app: Weak<App>,
    redelivery: Redelivery,
}

impl Executor for AgentExecutor {
    fn run(&self, context: TaskContext) -> BoxFuture<'static, Result<Value, TaskFailure>> {
        let app = self.app.clone();
        let redelivery = self.redelivery;
        Box::pin(async move {
            let app = app
                .upgrade()
                .ok_or_else(|| TaskFailure::new("stopping", "the coordinator is stopping"))?;
            let id = context.id.clone();
            let result = drive(&app, &context, redelivery).await;
            app.dumps.forget(&id);
            result
        })
    }

    fn on_restart(&self) -> RestartPolicy {
        match self.redelivery {
            Redelivery::Yes => RestartPolicy::Resume,
            Redelivery::No => RestartPolicy::Fail,
        }
    }

    fn sets_state_first(&self) -> bool {
        true
    }
}

fn stored(error: crate::tasks::TaskError) -> TaskFailure {
    TaskFailure::from(error)
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// The agent's task id of a coordinator task (the same UUID).
pub fn agent_task_id(id: &str) -> Result<TaskId, TaskFailure> {
    uuid::Uuid::parse_str(id)
        .map(|uuid| TaskId::from_bytes(*uuid.as_bytes()))
        .map_err(|_| TaskFailure::new("bad_task", format!("task id {id} is not a UUID")))
}

/// How following one delivery ended.
enum Followed {
    Ended(Result<Value, TaskFailure>),
    Lost(String),
}

async fn drive(
    app: &Arc<App>,
    context: &TaskContext,
    redelivery: Redelivery,
) -> Result<Value, TaskFailure> {
    let input = crate::tasks::secrets::input(&app.store, context)?.into_inner();
    // The error names no value: the input may hold a secret.
    let input: Input = serde_json::from_value(input).map_err(|error| {
        TaskFailure::new(
            "bad_input",
            format!("the task's input is unreadable ({:?})", error.classify()),
        )
    })?;
    let instance = context
        .instance
        .ok_or_else(|| TaskFailure::new("bad_input", "an agent task needs an instance"))?;
    let task_id = agent_task_id(&context.id)?;
    let deadline = context
        .deadline
        .map(SystemTime::from)
        .unwrap_or_else(|| SystemTime::now() + DEFAULT_DEADLINE);
    let dump = matches!(input.operation, Operation::DatabaseDump { .. });
    let mut attempt = 0u32;
    loop {
        if context.is_cancelled() {
            return Err(TaskFailure::new("cancelled", "the task was cancelled"));
        }
        // Subscribed before looking, so a connection that comes right after is not missed.
        let mut events = app.channel.subscribe();
        if !app.channel.is_connected(instance) {
            if redelivery == Redelivery::No {
                return Err(TaskFailure::new(
                    "agent_offline",
                    format!("the agent of instance {instance} is not connected"),
                ));
            }
            context.set_state(Phase::Queued).map_err(stored)?;
            wait_for_agent(app, &mut events, instance, context).await?;
            continue;
        }
        context.set_state(Phase::Sent).map_err(stored)?;
        attempt += 1;
        let delivery = TaskDelivery {
            task_id,
            operation: input.operation.clone(),
            deadline_unix_ms: unix_ms(deadline),
            attempt,
        };
        let remaining = deadline
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_millis(1));
        let data = dump.then(|| app.channel.expect_data(instance, task_id));
        let request = match app.channel.deliver(instance, delivery, remaining).await {
            Ok(request) => request,
            Err(ChannelError::AgentOffline(_) | ChannelError::ConnectionLost(_))
                if redelivery == Redelivery::Yes =>
            {
                let _ = context.log("the agent went away before it took the task; it is delivered again when it reconnects");
                continue;
            }
            Err(error) => return Err(channel_failure(error)),
        };
        let followed = follow(app, context, request, data).await;
        match followed {
            Followed::Ended(result) => return result,
            Followed::Lost(why) => {
                if redelivery == Redelivery::No {
                    return Err(TaskFailure::new(
                        "connection_lost",
                        format!("the connection to the agent was lost: {why}"),
                    ));
                }
                let _ = context.log(format!(
                    "the connection to the agent was lost ({why}); the task is delivered again \
                     when it reconnects, and the agent answers it without doing it twice"
                ));
                context.set_state(Phase::Queued).map_err(stored)?;
            }
        }
    }
}

/// Waits until the instance's agent connects, the task is cancelled or its deadline passes
/// (the driver cancels it then).
pub(crate) async fn wait_for_agent(
    app: &Arc<App>,
    events: &mut tokio::sync::broadcast::Receiver<AgentEvent>,
    instance: u32,
    context: &TaskContext,
) -> Result<(), TaskFailure> {
    loop {
        if app.channel.is_connected(instance) {
            return Ok(());
        }
        tokio::select! {
            event = events.recv() => match event {
                Ok(AgentEvent::Connected { instance: connected, .. }) if connected == instance => return Ok(()),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err(TaskFailure::new("stopping", "the agent channel stopped"));
                }
            },
            _ = tokio::time::sleep(RECHECK) => {}
            _ = context.cancelled().cancelled() => {
                return Err(TaskFailure::new("cancelled", "the task was cancelled"));
            }
        }
    }
}

fn channel_failure(error: ChannelError) -> TaskFailure {
    match error {
        ChannelError::AgentOffline(instance) => TaskFailure::new(
            "agent_offline",
            format!("the agent of instance {instance} is not connected"),
        ),
        ChannelError::DeadlineExceeded => TaskFailure::new(
            "timeout",
            "the task's deadline passed before the agent answered",
        ),
        ChannelError::Operation(error) => operation_failure(&error),
        other => TaskFailure::new("agent_error", other.to_string()),
    }
}

fn operation_failure(error: &ErrorData) -> TaskFailure {
    TaskFailure::new(error.code.as_str(), error.message.clone())
}

/// Follows one delivery to its end, recording what the agent reports.
async fn follow(
    app: &Arc<App>,
    context: &TaskContext,
    mut request: crate::channel::Request,
    mut data: Option<crate::channel::DataWaiter>,
) -> Followed {
    loop {
        let event = tokio::select! {
            event = request.next_event() => event,
            stream = async { data.as_mut()?.stream().await }, if data.is_some() => {
                data = None;
                if let Some(stream) = stream {
                    app.dumps.give(&context.id, stream);
                }
                continue;
            }
            _ = context.cancelled().cancelled() => {
                request.cancel().await;
                let _ = tokio::time::timeout(CANCEL_GRACE, async {
                    while let Ok(Some(event)) = request.next_event().await {
                        if matches!(event, RequestEvent::Finished(_)) {
                            break;
                        }
                    }
                })
                .await;
                return Followed::Ended(Err(TaskFailure::new("cancelled", "the task was cancelled")));
            }
        };
        match event {
            Ok(Some(RequestEvent::Acknowledged { duplicate })) => {
                if let Err(error) = context.set_state(Phase::Running) {
                    return Followed::Ended(Err(stored(error)));
                }
                if duplicate {
                    let _ = context.log(
                        "the agent already had this task and answers with its result instead of \
                         doing it again",
                    );
                }
            }
            Ok(Some(RequestEvent::Progress { percent, message })) => {
                let _ = context.progress(percent, &message);
            }
            Ok(Some(RequestEvent::Log(line))) => {
                let _ = context.log(line);
            }
            Ok(Some(RequestEvent::Finished(Ok(output)))) => {
                return Followed::Ended(Ok(output_json(&output)));
            }
            Ok(Some(RequestEvent::Finished(Err(error)))) => {
                return Followed::Ended(Err(operation_failure(&error)));
            }
            Ok(None) => {
                return Followed::Ended(Err(TaskFailure::new(
                    "agent_error",
                    "the agent's answer ended without a result",
                )));
            }
            Err(ChannelError::ConnectionLost(why)) => return Followed::Lost(why),
            Err(error) => return Followed::Ended(Err(channel_failure(error))),
        }
    }
}
