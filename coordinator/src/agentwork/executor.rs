//! The executor of every agent task kind: it delivers the task's operation when the agent is
//! connected, follows the delivery to its end and delivers again after a lost connection when
//! the kind allows it.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use protocol::{ErrorData, Operation, TaskDelivery, TaskId};
use serde_json::Value;

use super::{DEFAULT_DEADLINE, Input, KINDS, Redelivery, output_json};
use crate::App;
use crate::channel::{AgentEvent, ChannelError, RequestEvent};
use crate::tasks::{Executor, Phase, RestartPolicy, TaskContext, TaskFailure};

/// How long a queued task re-checks the connection even without a connect event.
const RECHECK: Duration = Duration::from_secs(5);
/// How long a cancelled task waits for the agent's answer before it ends anyway.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

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
        .unwrap_or_else(|| crate::clock::system_now() + DEFAULT_DEADLINE);
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
            .duration_since(crate::clock::system_now())
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
pub async fn wait_for_agent(
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
