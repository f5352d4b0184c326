//! The request path: one bidirectional stream per task, opened by the coordinator. The task goes
//! out as one frame; the agent answers with an acknowledgement, progress and log frames, and the
//! result, then ends the stream.

use std::time::Duration;

use protocol::{
    AgentMessage, CoordinatorMessage, OperationOutput, TaskDelivery, TaskId, TaskOutcome,
};
use quinn::VarInt;

use super::{ChannelError, Inner, close_code};
use shell::wire::{FrameReader, WireError, write_message};

/// What the agent reported about a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestEvent {
    /// The agent stored the task; `duplicate` when it already knew it (and did not start it again).
    Acknowledged {
        duplicate: bool,
    },
    Progress {
        percent: u8,
        message: String,
    },
    Log(String),
    /// The task ended; no event follows.
    Finished(TaskOutcome),
}

/// A task in flight on its own stream.
#[derive(Debug)]
pub struct Request {
    task_id: TaskId,
    send: quinn::SendStream,
    reader: FrameReader<quinn::RecvStream>,
    deadline: tokio::time::Instant,
    finished: bool,
}

fn lost(error: WireError) -> ChannelError {
    match error {
        WireError::Read(error) | WireError::Write(error) => {
            ChannelError::ConnectionLost(error.to_string())
        }
        other => ChannelError::Protocol(other.to_string()),
    }
}

pub(super) async fn open(
    inner: &Inner,
    instance: u32,
    delivery: TaskDelivery,
    deadline: Duration,
) -> Result<Request, ChannelError> {
    let connection = inner
        .registry
        .connection(instance)
        .ok_or(ChannelError::AgentOffline(instance))?;
    let deadline = tokio::time::Instant::now() + deadline;
    let (mut send, receive) = tokio::time::timeout_at(deadline, connection.open_bi())
        .await
        .map_err(|_| ChannelError::DeadlineExceeded)?
        .map_err(|error| ChannelError::ConnectionLost(error.to_string()))?;
    let task_id = delivery.task_id;
    tokio::time::timeout_at(
        deadline,
        write_message(&mut send, &CoordinatorMessage::Task(delivery)),
    )
    .await
    .map_err(|_| ChannelError::DeadlineExceeded)?
    .map_err(lost)?;
    Ok(Request {
        task_id,
        send,
        reader: FrameReader::new(receive, protocol::MAX_FRAME),
        deadline,
        finished: false,
    })
}

impl Request {
    pub fn task_id(&self) -> TaskId {
        self.task_id
    }

    /// The next report of the agent; `Ok(None)` after [`RequestEvent::Finished`].
    pub async fn next_event(&mut self) -> Result<Option<RequestEvent>, ChannelError> {
        if self.finished {
            return Ok(None);
        }
        let message =
            match tokio::time::timeout_at(self.deadline, self.reader.message::<AgentMessage>())
                .await
            {
                Ok(message) => message.map_err(lost)?,
                Err(_) => {
                    self.cancel().await;
                    return Err(ChannelError::DeadlineExceeded);
                }
            };
        let Some(message) = message else {
            return Err(ChannelError::ConnectionLost(
                "the agent ended the task's stream without a result".into(),
            ));
        };
        let (task_id, event) = match message {
            AgentMessage::TaskAck { task_id, duplicate } => {
                (task_id, RequestEvent::Acknowledged { duplicate })
            }
            AgentMessage::TaskProgress {
                task_id,
                percent,
                message,
            } => (
                task_id,
                RequestEvent::Progress {
                    percent: percent.min(100),
                    message,
                },
            ),
            AgentMessage::TaskLog { task_id, line } => (task_id, RequestEvent::Log(line)),
            AgentMessage::TaskResult { task_id, outcome } => {
                self.finished = true;
                let _ = self.send.finish();
                (task_id, RequestEvent::Finished(outcome))
            }
            other => {
                return Err(ChannelError::Protocol(format!(
                    "unexpected message on a task stream: {other:?}"
                )));
            }
        };
        if task_id != self.task_id {
            return Err(ChannelError::Protocol(format!(
                "a report for task {task_id} arrived on the stream of task {}",
                self.task_id
            )));
        }
        Ok(Some(event))
    }

    /// Waits for the result, skipping progress and log lines.
    pub async fn outcome(mut self) -> Result<OperationOutput, ChannelError> {
        loop {
            match self.next_event().await? {
                Some(RequestEvent::Finished(outcome)) => {
                    return outcome.map_err(ChannelError::Operation);
                }
                Some(_) => continue,
                None => {
                    return Err(ChannelError::Protocol("the task already finished".into()));
                }
            }
        }
    }

    /// Asks the agent to stop the task. The result (cancelled, or finished anyway) still arrives
    /// through [`Request::next_event`].
    pub async fn cancel(&mut self) {
        let message = CoordinatorMessage::CancelTask {
            task_id: self.task_id,
        };
        let sent = tokio::time::timeout(
            Duration::from_secs(1),
            write_message(&mut self.send, &message),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            let _ = self.send.reset(VarInt::from_u32(close_code::PROTOCOL));
        }
    }
}
