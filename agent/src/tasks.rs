//! What the agent remembers about tasks, so a repeated delivery is answered instead of done twice:
//! the finished ones (behind [`FinishedTasks`], which a durable store can implement) and the ones
//! running now (a repeated delivery waits for the running one's result).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use protocol::{TaskId, TaskOutcome};
use tokio::sync::watch;

/// Remembers the results of finished tasks.
pub trait FinishedTasks: Send + Sync + 'static {
    /// The stored result of a finished task.
    fn get(&self, task_id: &TaskId) -> Option<TaskOutcome>;
    /// Stores a result; called before the result is sent.
    fn record(&self, task_id: TaskId, outcome: &TaskOutcome);
    /// How many results are remembered.
    fn count(&self) -> u64;
    /// Every remembered id (for reconciliation after a reconnect).
    fn ids(&self) -> Vec<TaskId>;
}

/// Finished tasks in memory, the oldest forgotten beyond a capacity. Lost on restart.
#[derive(Debug)]
pub struct MemoryFinishedTasks {
    capacity: usize,
    entries: Mutex<(HashMap<TaskId, TaskOutcome>, VecDeque<TaskId>)>,
}

impl MemoryFinishedTasks {
    pub fn new(capacity: usize) -> MemoryFinishedTasks {
        MemoryFinishedTasks {
            capacity: capacity.max(1),
            entries: Mutex::new((HashMap::new(), VecDeque::new())),
        }
    }
}

impl FinishedTasks for MemoryFinishedTasks {
    fn get(&self, task_id: &TaskId) -> Option<TaskOutcome> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.0.get(task_id).cloned()
    }

    fn record(&self, task_id: TaskId, outcome: &TaskOutcome) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *entries;
        if map.insert(task_id, outcome.clone()).is_none() {
            order.push_back(task_id);
        }
        while order.len() > self.capacity {
            if let Some(oldest) = order.pop_front() {
                map.remove(&oldest);
            }
        }
    }

    fn count(&self) -> u64 {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.0.len() as u64
    }

    fn ids(&self) -> Vec<TaskId> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.1.iter().copied().collect()
    }
}

/// How a delivered task relates to what the agent knows.
#[derive(Debug)]
pub enum Admission {
    /// New: run it, then call [`TaskBook::finish`].
    Run,
    /// Finished before: answer with this result.
    Finished(TaskOutcome),
    /// Running now: wait on this for the result.
    Running(watch::Receiver<Option<TaskOutcome>>),
}

/// The finished tasks and the running ones.
#[derive(Clone)]
pub struct TaskBook {
    finished: Arc<dyn FinishedTasks>,
    running: Arc<Mutex<HashMap<TaskId, watch::Sender<Option<TaskOutcome>>>>>,
}

impl std::fmt::Debug for TaskBook {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "TaskBook({} finished)", self.finished.count())
    }
}

impl TaskBook {
    pub fn new(finished: Arc<dyn FinishedTasks>) -> TaskBook {
        TaskBook {
            finished,
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Decides what to do with a delivery of `task_id`.
    pub fn admit(&self, task_id: TaskId) -> Admission {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(outcome) = self.finished.get(&task_id) {
            return Admission::Finished(outcome);
        }
        if let Some(sender) = running.get(&task_id) {
            return Admission::Running(sender.subscribe());
        }
        running.insert(task_id, watch::channel(None).0);
        Admission::Run
    }

    /// Records the result of a task admitted with [`Admission::Run`].
    pub fn finish(&self, task_id: TaskId, outcome: &TaskOutcome) {
        self.finished.record(task_id, outcome);
        let sender = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&task_id);
        if let Some(sender) = sender {
            let _ = sender.send(Some(outcome.clone()));
        }
    }

    pub fn running_count(&self) -> u32 {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len() as u32
    }

    pub fn finished_count(&self) -> u64 {
        self.finished.count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::OperationOutput;

    #[test]
    fn a_task_runs_once_and_repeats_get_its_result() {
        let book = TaskBook::new(Arc::new(MemoryFinishedTasks::new(2)));
        let id = TaskId([1; 16]);
        assert!(matches!(book.admit(id), Admission::Run));
        let Admission::Running(mut waiting) = book.admit(id) else {
            panic!("a second delivery while running must wait")
        };
        book.finish(id, &Ok(OperationOutput::Done));
        assert_eq!(
            *waiting.borrow_and_update(),
            Some(Ok(OperationOutput::Done))
        );
        assert!(matches!(
            book.admit(id),
            Admission::Finished(Ok(OperationOutput::Done))
        ));
        assert_eq!(book.running_count(), 0);
    }

    #[test]
    fn the_memory_store_forgets_the_oldest_beyond_its_capacity() {
        let store = MemoryFinishedTasks::new(2);
        for byte in 1..=3 {
            store.record(TaskId([byte; 16]), &Ok(OperationOutput::Done));
        }
        assert_eq!(store.count(), 2);
        assert!(store.get(&TaskId([1; 16])).is_none());
        assert!(store.get(&TaskId([3; 16])).is_some());
    }
}
