//! What the agent remembers about tasks, so a repeated delivery is answered instead of done twice:
//! the finished ones (behind [`FinishedTasks`], which a durable store can implement) and the ones
//! running now (a repeated delivery waits for the running one's result).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use protocol::{ErrorCode, ErrorData, TaskId, TaskOutcome};
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
    /// Notes, durably where the store is durable, that a task which changes the container has
    /// started; called before its work starts. A store that survives a restart answers a task
    /// started but never finished as interrupted, so it is not done twice.
    fn mark_started(&self, _task_id: TaskId) {}
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

/// Finished tasks on disk, one small file each in a folder of the state directory, so a task
/// delivered again after the agent restarted is answered from here instead of being done twice.
///
/// `<id>.started` is written (and flushed) before a task that changes the container starts;
/// `<id>.done` holds its outcome as JSON and replaces the marker. At open, every task that was
/// started and never finished (the agent was killed, or the machine rebooted) is recorded as
/// [`ErrorCode::Interrupted`]. The oldest results are forgotten beyond a capacity.
#[derive(Debug)]
pub struct DiskFinishedTasks {
    folder: PathBuf,
    capacity: usize,
    order: Mutex<(VecDeque<TaskId>, HashSet<TaskId>)>,
}

const DONE: &str = "done";
const STARTED: &str = "started";

fn parse_file_name(name: &str) -> Option<(TaskId, &str)> {
    let (id, extension) = name.split_once('.')?;
    Some((id.parse().ok()?, extension))
}

impl DiskFinishedTasks {
    /// Opens (creating it 0700 if needed) the folder and settles what a previous run left.
    pub fn open(folder: impl Into<PathBuf>, capacity: usize) -> std::io::Result<DiskFinishedTasks> {
        use std::os::unix::fs::DirBuilderExt;
        let folder = folder.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&folder)?;
        let mut done: Vec<(SystemTime, TaskId)> = Vec::new();
        let mut started = Vec::new();
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some((id, extension)) = name.to_str().and_then(parse_file_name) else {
                continue;
            };
            match extension {
                DONE => {
                    let modified = entry
                        .metadata()
                        .and_then(|metadata| metadata.modified())
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    done.push((modified, id));
                }
                STARTED => started.push(id),
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        done.sort();
        let store = DiskFinishedTasks {
            folder,
            capacity: capacity.max(1),
            order: Mutex::new((VecDeque::new(), HashSet::new())),
        };
        {
            let mut order = store.order.lock().unwrap_or_else(|p| p.into_inner());
            for (_, id) in done {
                order.0.push_back(id);
                order.1.insert(id);
            }
        }
        for id in started {
            if store.contains(&id) {
                let _ = std::fs::remove_file(store.path(&id, STARTED));
                continue;
            }
            tracing::warn!(task = %id, "a task was running when the agent stopped; it is recorded as interrupted");
            store.record(
                id,
                &Err(ErrorData::new(
                    ErrorCode::Interrupted,
                    "the agent stopped while this task was running; it may have been partly \
                     done and was not started again",
                )),
            );
        }
        store.prune();
        Ok(store)
    }

    fn path(&self, id: &TaskId, extension: &str) -> PathBuf {
        self.folder.join(format!("{id}.{extension}"))
    }

    fn contains(&self, id: &TaskId) -> bool {
        let order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        order.1.contains(id)
    }

    fn prune(&self) {
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        while order.0.len() > self.capacity {
            if let Some(oldest) = order.0.pop_front() {
                order.1.remove(&oldest);
                let _ = std::fs::remove_file(self.path(&oldest, DONE));
            }
        }
    }

    fn sync_folder(&self) {
        if let Ok(folder) = std::fs::File::open(&self.folder) {
            let _ = folder.sync_all();
        }
    }
}

impl FinishedTasks for DiskFinishedTasks {
    fn get(&self, task_id: &TaskId) -> Option<TaskOutcome> {
        if !self.contains(task_id) {
            return None;
        }
        let bytes = std::fs::read(self.path(task_id, DONE)).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(outcome) => Some(outcome),
            Err(error) => {
                tracing::error!(task = %task_id, %error, "a stored task result is unreadable");
                Some(Err(ErrorData::new(
                    ErrorCode::Internal,
                    format!("this task finished but its stored result is unreadable: {error}"),
                )))
            }
        }
    }

    fn record(&self, task_id: TaskId, outcome: &TaskOutcome) {
        let json = match serde_json::to_vec(outcome) {
            Ok(json) => json,
            Err(error) => {
                tracing::error!(task = %task_id, %error, "cannot encode a task result");
                return;
            }
        };
        if let Err(error) = shell::write_atomically(&self.path(&task_id, DONE), &json, None) {
            tracing::error!(task = %task_id, %error, "cannot store a task result");
            return;
        }
        let _ = std::fs::remove_file(self.path(&task_id, STARTED));
        self.sync_folder();
        {
            let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
            if order.1.insert(task_id) {
                order.0.push_back(task_id);
            }
        }
        self.prune();
    }

    fn count(&self) -> u64 {
        let order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        order.0.len() as u64
    }

    fn ids(&self) -> Vec<TaskId> {
        let order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        order.0.iter().copied().collect()
    }

    fn mark_started(&self, task_id: TaskId) {
        let written =
            std::fs::File::create(self.path(&task_id, STARTED)).and_then(|file| file.sync_all());
        match written {
            Ok(()) => self.sync_folder(),
            Err(error) => {
                tracing::error!(task = %task_id, %error, "cannot note that a task started")
            }
        }
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

    /// Notes that a task admitted with [`Admission::Run`] that changes the container starts.
    pub fn mark_started(&self, task_id: TaskId) {
        self.finished.mark_started(task_id);
    }

    /// Records the result of a task admitted with [`Admission::Run`]; only results worth
    /// remembering (`remember`: the task changed the container) go to the finished store.
    pub fn finish(&self, task_id: TaskId, outcome: &TaskOutcome) {
        self.finish_with(task_id, outcome, true);
    }

    /// As [`TaskBook::finish`], storing the result only when `remember` is set.
    pub fn finish_with(&self, task_id: TaskId, outcome: &TaskOutcome, remember: bool) {
        if remember {
            self.finished.record(task_id, outcome);
        }
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
    fn the_disk_store_keeps_results_and_settles_interrupted_tasks() {
        let folder = tempfile::tempdir().unwrap();
        let done = TaskId([1; 16]);
        let interrupted = TaskId([2; 16]);
        {
            let store = DiskFinishedTasks::open(folder.path(), 10).unwrap();
            store.mark_started(done);
            store.record(done, &Ok(OperationOutput::Done));
            store.mark_started(interrupted);
            assert!(store.get(&interrupted).is_none());
        }
        let reopened = DiskFinishedTasks::open(folder.path(), 10).unwrap();
        assert_eq!(reopened.get(&done), Some(Ok(OperationOutput::Done)));
        let error = reopened.get(&interrupted).unwrap().unwrap_err();
        assert_eq!(error.code, ErrorCode::Interrupted);
        assert_eq!(reopened.count(), 2);
        let leftovers: Vec<_> = std::fs::read_dir(folder.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| !name.ends_with(".done"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn the_disk_store_forgets_the_oldest_beyond_its_capacity() {
        let folder = tempfile::tempdir().unwrap();
        let store = DiskFinishedTasks::open(folder.path(), 2).unwrap();
        for byte in 1..=3 {
            store.record(TaskId([byte; 16]), &Ok(OperationOutput::Done));
        }
        assert_eq!(store.count(), 2);
        assert!(store.get(&TaskId([1; 16])).is_none());
        assert!(
            !folder
                .path()
                .join(format!("{}.done", TaskId([1; 16])))
                .exists()
        );
        let reopened = DiskFinishedTasks::open(folder.path(), 2).unwrap();
        assert_eq!(reopened.ids(), vec![TaskId([2; 16]), TaskId([3; 16])]);
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
