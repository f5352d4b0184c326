//! Bulk data from agents (database dumps): each dump comes on a unidirectional stream the agent
//! opens, whose first frame is a [`DataStreamHeader`] naming the task. A caller that expects data
//! for a task registers a [`DataWaiter`] before the task is delivered; a stream nobody waits for,
//! or one naming a task of another instance, is stopped at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::{DataStreamHeader, TaskId};
use quinn::VarInt;
use tokio::sync::oneshot;

use super::close_code;

/// How long an agent has to send the header after opening a data stream.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest header frame accepted (it holds one task id).
const MAX_HEADER: usize = 256;

type Waiters = Arc<Mutex<HashMap<TaskId, (u32, oneshot::Sender<quinn::RecvStream>)>>>;

/// The tasks for which a data stream is expected.
#[derive(Debug, Default, Clone)]
pub struct DataWaiters {
    waiters: Waiters,
}

/// Receives the data stream of one task; dropping it stops waiting.
#[derive(Debug)]
pub struct DataWaiter {
    task_id: TaskId,
    receiver: Option<oneshot::Receiver<quinn::RecvStream>>,
    waiters: Waiters,
}

impl DataWaiter {
    /// The data stream, once the agent has opened it; `None` if it never will (the waiter was
    /// replaced by another for the same task).
    pub async fn stream(&mut self) -> Option<quinn::RecvStream> {
        let receiver = self.receiver.as_mut()?;
        let stream = receiver.await.ok();
        self.receiver = None;
        stream
    }
}

impl Drop for DataWaiter {
    fn drop(&mut self) {
        if self.receiver.is_some() {
            self.waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.task_id);
        }
    }
}

impl DataWaiters {
    /// Expects a data stream for `task_id` from the agent of `instance`.
    pub fn expect(&self, instance: u32, task_id: TaskId) -> DataWaiter {
        let (sender, receiver) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(task_id, (instance, sender));
        DataWaiter {
            task_id,
            receiver: Some(receiver),
            waiters: self.waiters.clone(),
        }
    }

    /// How many tasks wait for data now.
    pub fn waiting(&self) -> usize {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Serves a data stream the agent of `instance` opened: reads its header and hands the
    /// stream to the waiter of its task, or stops it.
    pub async fn accept(&self, instance: u32, mut stream: quinn::RecvStream) {
        let header = tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut stream)).await;
        let refuse = |mut stream: quinn::RecvStream, why: &str| {
            tracing::debug!(instance, why, "refused a data stream");
            let _ = stream.stop(VarInt::from_u32(close_code::PROTOCOL));
        };
        let header = match header {
            Ok(Ok(header)) => header,
            Ok(Err(why)) => return refuse(stream, &why),
            Err(_) => return refuse(stream, "no header in time"),
        };
        let waiter = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            match waiters.get(&header.task_id) {
                Some((owner, _)) if *owner == instance => waiters.remove(&header.task_id),
                _ => None,
            }
        };
        match waiter {
            Some((_, sender)) => {
                if let Err(stream) = sender.send(stream) {
                    refuse(stream, "the waiter is gone");
                }
            }
            None => refuse(stream, "no task of this agent expects data"),
        }
    }
}

/// Reads exactly the header frame, leaving the data after it unread.
async fn read_header(stream: &mut quinn::RecvStream) -> Result<DataStreamHeader, String> {
    let mut prefix = [0u8; protocol::LENGTH_PREFIX];
    stream
        .read_exact(&mut prefix)
        .await
        .map_err(|error| error.to_string())?;
    let length = u32::from_be_bytes(prefix) as usize;
    if length > MAX_HEADER {
        return Err(format!("a data stream header of {length} bytes"));
    }
    let mut payload = vec![0u8; length];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(|error| error.to_string())?;
    protocol::decode_payload(&payload).map_err(|error| error.to_string())
}
