//! The data streams of dumps on their way from the executor that received one to the request
//! that serves it.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

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
    pub(super) fn give(&self, task: &str, stream: quinn::RecvStream) {
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
