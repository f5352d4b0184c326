//! The task driver: accepts tasks, hands each to the executor registered for its kind, writes
//! every state change before it takes effect, enforces deadlines and cancellation, publishes
//! events, and at start resumes or ends every task a previous run left unfinished.
//!
//! Each unfinished task has one runner (a tokio task) while the system runs. A runner waits for
//! its executor, applies the restart policy when the task was under way before a restart, then
//! races the executor against the deadline, a cancellation and the system stopping. Stopping
//! changes no task: what was under way stays so in the store and is dealt with at the next start,
//! exactly as after a crash.

use shell::sync::{MutexExt, RwLockExt};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::TaskError;
use super::machine::{Change, Creation, Progress, Refused, Task, TaskErrorBody, TaskState};
use super::persist::{self, Commit, TaskFilter, TaskPage};
use crate::metrics::StateLabel;
use crate::store::Store;
use crate::store::records::TaskLogLine;

/// The reason a task that was under way fails when its executor does not resume after a restart.
pub const RESTART_MESSAGE: &str = "the coordinator restarted while this task was running";
/// How long a cancelled or expired executor may take to wind down before it is dropped.
const WIND_DOWN: Duration = Duration::from_secs(10);
/// How long tasks found unfinished at start wait for their kind's executor to be registered.
const DEFAULT_EXECUTOR_GRACE: Duration = Duration::from_secs(30);
/// How often forgotten idempotency keys are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);
/// Events buffered per watched task before a slow watcher is told to re-read.
const EVENT_BUFFER: usize = 256;

/// What a caller asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Which executor runs it, e.g. `instance.start`.
    pub kind: String,
    /// The user id of the caller.
    pub owner: String,
    pub instance: Option<u32>,
    /// What the executor works from.
    pub input: Value,
    /// The whole input with its secrets, when `input` has them replaced (see [`super::secrets`]).
    pub secret_input: Option<super::secrets::Redacted<Value>>,
    /// The task expires when it has not ended this long after it was submitted.
    pub deadline: Option<Duration>,
    /// The same key from the same owner within 24 h gives back the first task.
    pub idempotency_key: Option<String>,
}

impl NewTask {
    /// A task of `kind` for `owner` with no input, instance, deadline or key.
    pub fn new(kind: impl Into<String>, owner: impl Into<String>) -> NewTask {
        NewTask {
            kind: kind.into(),
            owner: owner.into(),
            instance: None,
            input: Value::Null,
            secret_input: None,
            deadline: None,
            idempotency_key: None,
        }
    }

    pub fn instance(mut self, instance: u32) -> NewTask {
        self.instance = Some(instance);
        self
    }

    pub fn input(mut self, input: Value) -> NewTask {
        self.input = input;
        self
    }

    /// The whole input, secrets included, held apart from `input` and erased when the task ends.
    pub fn secret_input(mut self, input: Value) -> NewTask {
        self.secret_input = Some(super::secrets::Redacted::new(input));
        self
    }

    pub fn deadline(mut self, deadline: Duration) -> NewTask {
        self.deadline = Some(deadline);
        self
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> NewTask {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// Why an executor's work failed: a snake_case code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub code: String,
    pub message: String,
}

impl TaskFailure {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> TaskFailure {
        TaskFailure {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl From<TaskError> for TaskFailure {
    fn from(error: TaskError) -> TaskFailure {
        TaskFailure::new("task_error", error.to_string())
    }
}

impl From<TaskFailure> for TaskErrorBody {
    fn from(failure: TaskFailure) -> TaskErrorBody {
        TaskErrorBody {
            code: failure.code,
            message: failure.message,
        }
    }
}

/// What happens to a task that was sent or running when the coordinator stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Run it again from `queued`; the executor must be idempotent or check what was done.
    Resume,
    /// End it `failed` with [`RESTART_MESSAGE`].
    Fail,
}

/// The states an executor moves its task through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting again (the agent went away before it took the work).
    Queued,
    /// Handed to an agent.
    Sent,
    /// Under way.
    Running,
}

/// Runs the tasks of one kind.
pub trait Executor: Send + Sync + 'static {
    /// Does the work; the value is the task's `result`. Must stop soon after
    /// `context.cancelled()` fires (cancellation or deadline).
    fn run(&self, context: TaskContext) -> BoxFuture<'static, Result<Value, TaskFailure>>;

    /// What to do with a task of this kind that was under way when the coordinator stopped.
    fn on_restart(&self) -> RestartPolicy {
        RestartPolicy::Fail
    }

    /// True when `run` moves its task to `sent` or `running` ([`TaskContext::set_state`])
    /// before it acts on anything outside the coordinator, and acts on nothing when that
    /// write fails. The driver then counts the attempt without waiting for the disk: the
    /// state change makes the count durable before anything acts. False (the default): the
    /// count is durable before `run` is called.
    fn sets_state_first(&self) -> bool {
        false
    }
}

impl<F, Work> Executor for F
where
    F: Fn(TaskContext) -> Work + Send + Sync + 'static,
    Work: Future<Output = Result<Value, TaskFailure>> + Send + 'static,
{
    fn run(&self, context: TaskContext) -> BoxFuture<'static, Result<Value, TaskFailure>> {
        Box::pin(self(context))
    }
}

/// An executor whose tasks resume after a restart.
#[derive(Debug, Clone)]
pub struct Resumable<E>(pub E);

impl<E: Executor> Executor for Resumable<E> {
    fn run(&self, context: TaskContext) -> BoxFuture<'static, Result<Value, TaskFailure>> {
        self.0.run(context)
    }

    fn on_restart(&self) -> RestartPolicy {
        RestartPolicy::Resume
    }

    fn sets_state_first(&self) -> bool {
        self.0.sets_state_first()
    }
}

/// Wraps an executor so its tasks resume after a restart.
pub fn resumable<E: Executor>(executor: E) -> Resumable<E> {
    Resumable(executor)
}

/// Something that happened to a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    /// The task changed state (carries the whole task).
    State(Box<Task>),
    Progress(Progress),
    Log(TaskLogLine),
}

/// What an executor gets: the task's facts and the ways to report on it.
#[derive(Clone)]
pub struct TaskContext {
    pub id: String,
    pub kind: String,
    pub owner: String,
    pub instance: Option<u32>,
    pub input: Value,
    pub deadline: Option<OffsetDateTime>,
    /// 1 for the first run, 2 after a resume, ...
    pub attempt: u32,
    cancelled: CancellationToken,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TaskContext {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "TaskContext({} {})", self.kind, self.id)
    }
}

impl TaskContext {
    /// Records how far the work has come (0 to 100). Fails once the task has ended, e.g. when
    /// it was cancelled.
    pub fn progress(&self, percent: u8, message: &str) -> Result<(), TaskError> {
        let progress = Progress {
            percent,
            message: (!message.is_empty()).then(|| message.to_string()),
        };
        self.inner
            .transition(&self.id, Change::Progress(progress))
            .map(drop)
    }

    /// Adds a line to the task's log.
    pub fn log(&self, line: impl AsRef<str>) -> Result<(), TaskError> {
        self.inner.log(&self.id, line.as_ref())
    }

    /// Moves the task to `phase`; written before the caller acts on it. Moving to the state it
    /// is already in changes nothing.
    pub fn set_state(&self, phase: Phase) -> Result<Task, TaskError> {
        let current = self.task()?;
        let (target, change) = match phase {
            Phase::Queued => (TaskState::Queued, Change::Requeue),
            Phase::Sent => (TaskState::Sent, Change::Send),
            Phase::Running => (TaskState::Running, Change::Start),
        };
        if current.state == target {
            return Ok(current);
        }
        self.inner.transition(&self.id, change)
    }

    /// The task as stored now.
    pub fn task(&self) -> Result<Task, TaskError> {
        persist::get(&self.inner.store, &self.id)?
            .ok_or_else(|| TaskError::NotFound(self.id.clone()))
    }

    /// Fires when the task is cancelled or expires; the executor should stop soon after.
    pub fn cancelled(&self) -> &CancellationToken {
        &self.cancelled
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.is_cancelled()
    }
}

struct Runner {
    cancel: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

struct Inner {
    store: Store,
    gauge: Family<StateLabel, Gauge>,
    executors: RwLock<HashMap<String, Arc<dyn Executor>>>,
    /// Bumped on every registration so runners waiting for an executor look again.
    registrations: watch::Sender<u64>,
    runners: Mutex<HashMap<String, Runner>>,
    channels: Mutex<HashMap<String, broadcast::Sender<TaskEvent>>>,
    sequence: AtomicU64,
    started: AtomicBool,
    stopping: CancellationToken,
    executor_grace_millis: AtomicU64,
    sweeper: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The task system. Cheap to clone.
#[derive(Clone)]
pub struct TaskSystem {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TaskSystem {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("TaskSystem")
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.locked()
}

/// The current time, to the millisecond.
pub fn now() -> OffsetDateTime {
    let now = crate::clock::now();
    now.replace_millisecond(now.millisecond()).unwrap_or(now)
}

fn valid_kind(kind: &str) -> bool {
    (1..=64).contains(&kind.len())
        && kind.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"._-".contains(&byte)
        })
}

/// Checks an `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub fn valid_idempotency_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|byte| byte.is_ascii_graphic())
}

/// Resolves once `deadline` has passed by the wall clock; never without a deadline.
async fn deadline_reached(deadline: Option<OffsetDateTime>) {
    let Some(deadline) = deadline else {
        return std::future::pending().await;
    };
    for _ in 0..1000 {
        let left = deadline - now();
        if left <= time::Duration::ZERO {
            return;
        }
        let left = Duration::try_from(left).unwrap_or(Duration::from_millis(1));
        tokio::time::sleep(left + Duration::from_millis(1)).await;
    }
    std::future::pending().await
}

impl Inner {
    fn executor(&self, kind: &str) -> Option<Arc<dyn Executor>> {
        self.executors.read_recovered().get(kind).cloned()
    }

    fn executor_grace(&self) -> Duration {
        Duration::from_millis(self.executor_grace_millis.load(Ordering::Relaxed))
    }

    fn state_gauge(&self, state: TaskState) -> Gauge {
        self.gauge
            .get_or_create(&StateLabel {
                state: state.as_str().to_string(),
            })
            .clone()
    }

    fn publish(&self, id: &str, event: TaskEvent) {
        let ended = matches!(&event, TaskEvent::State(task) if task.state.is_ended());
        let mut channels = lock(&self.channels);
        if let Some(sender) = channels.get(id) {
            let _ = sender.send(event);
        }
        if ended {
            channels.remove(id);
        }
    }

    /// Applies and stores one change, then updates the gauges and tells watchers.
    fn transition(&self, id: &str, change: Change) -> Result<Task, TaskError> {
        let commit = if matches!(change, Change::Progress(_)) {
            Commit::Buffered
        } else {
            Commit::Durable
        };
        self.transition_as(id, change, commit)
    }

    /// [`Inner::transition`], committed as `commit` says.
    fn transition_as(&self, id: &str, change: Change, commit: Commit) -> Result<Task, TaskError> {
        let is_progress = matches!(change, Change::Progress(_));
        let (before, after) = persist::change_as(&self.store, id, change, now(), commit)?;
        if before.state != after.state {
            self.state_gauge(before.state).dec();
            self.state_gauge(after.state).inc();
            self.publish(id, TaskEvent::State(Box::new(after.clone())));
        } else if is_progress && let Some(progress) = &after.progress {
            self.publish(id, TaskEvent::Progress(progress.clone()));
        }
        Ok(after)
    }

    fn log(&self, id: &str, line: &str) -> Result<(), TaskError> {
        if let Some(entry) = persist::append_log(&self.store, id, line, now())? {
            self.publish(id, TaskEvent::Log(entry));
        }
        Ok(())
    }

    fn expire(&self, id: &str, cancel: &CancellationToken) -> Result<(), TaskError> {
        let outcome = self.transition(id, Change::Expire);
        cancel.cancel();
        outcome.map(drop)
    }

    fn spawn(self: &Arc<Self>, id: String, recovered: bool) {
        if self.stopping.is_cancelled() {
            return;
        }
        let cancel = CancellationToken::new();
        {
            let mut runners = lock(&self.runners);
            if runners.contains_key(&id) {
                return;
            }
            runners.insert(
                id.clone(),
                Runner {
                    cancel: cancel.clone(),
                    handle: None,
                },
            );
        }
        let handle = tokio::spawn(run_task(self.clone(), id.clone(), recovered, cancel));
        if let Some(runner) = lock(&self.runners).get_mut(&id) {
            runner.handle = Some(handle);
        }
    }

    /// Waits for the executor of the task's kind: not at all for a new task, up to the grace
    /// period for one found unfinished at start. `None` when the task ended meanwhile.
    async fn await_executor(
        &self,
        task: &Task,
        recovered: bool,
        cancel: &CancellationToken,
    ) -> Result<Option<Arc<dyn Executor>>, TaskError> {
        let started = tokio::time::Instant::now();
        let mut registrations = self.registrations.subscribe();
        loop {
            if let Some(executor) = self.executor(&task.kind) {
                return Ok(Some(executor));
            }
            let grace = if recovered {
                self.executor_grace()
            } else {
                Duration::ZERO
            };
            let waited = started.elapsed();
            if waited >= grace {
                let message = if recovered {
                    format!(
                        "the coordinator restarted and no executor for tasks of kind {:?} was \
                         registered within {} s",
                        task.kind,
                        grace.as_secs()
                    )
                } else {
                    format!("no executor handles tasks of kind {:?}", task.kind)
                };
                self.transition(
                    &task.id,
                    Change::Fail(TaskErrorBody {
                        code: "no_executor".into(),
                        message,
                    }),
                )?;
                return Ok(None);
            }
            tokio::select! {
                changed = registrations.changed() => {
                    if changed.is_err() {
                        return Ok(None);
                    }
                }
                _ = tokio::time::sleep(grace - waited) => {}
                _ = cancel.cancelled() => return Ok(None),
                _ = deadline_reached(task.deadline) => {
                    self.expire(&task.id, cancel)?;
                    return Ok(None);
                }
                _ = self.stopping.cancelled() => return Ok(None),
            }
        }
    }

    async fn drive(
        self: &Arc<Self>,
        id: &str,
        recovered: bool,
        cancel: &CancellationToken,
    ) -> Result<(), TaskError> {
        let Some(task) = persist::get(&self.store, id)? else {
            return Ok(());
        };
        if task.state.is_ended() {
            return Ok(());
        }
        let Some(executor) = self.await_executor(&task, recovered, cancel).await? else {
            return Ok(());
        };
        let task = persist::get(&self.store, id)?.ok_or_else(|| TaskError::NotFound(id.into()))?;
        if task.state.is_ended() {
            return Ok(());
        }
        if recovered && matches!(task.state, TaskState::Sent | TaskState::Running) {
            match executor.on_restart() {
                RestartPolicy::Fail => {
                    self.transition(
                        id,
                        Change::Fail(TaskErrorBody {
                            code: "coordinator_restarted".into(),
                            message: RESTART_MESSAGE.into(),
                        }),
                    )?;
                    return Ok(());
                }
                RestartPolicy::Resume => {
                    self.transition(id, Change::Requeue)?;
                    self.log(
                        id,
                        "the coordinator restarted while this task was running; it runs again",
                    )?;
                }
            }
        }
        // Counting the attempt needs no flush of its own when the executor's first state
        // change, written before it acts, makes it durable.
        let begin = if executor.sets_state_first() {
            Commit::Buffered
        } else {
            Commit::Durable
        };
        let task = self.transition_as(id, Change::Begin, begin)?;
        let context = TaskContext {
            id: task.id.clone(),
            kind: task.kind.clone(),
            owner: task.owner.clone(),
            instance: task.instance,
            input: task.input.clone(),
            deadline: task.deadline,
            attempt: task.attempts,
            cancelled: cancel.clone(),
            inner: self.clone(),
        };
        let mut work = executor.run(context);
        let outcome = tokio::select! {
            result = &mut work => Some(result),
            _ = cancel.cancelled() => None,
            _ = deadline_reached(task.deadline) => {
                self.expire(id, cancel)?;
                None
            }
            _ = self.stopping.cancelled() => return Ok(()),
        };
        match outcome {
            Some(Ok(result)) => {
                let current =
                    persist::get(&self.store, id)?.ok_or_else(|| TaskError::NotFound(id.into()))?;
                if current.state == TaskState::Queued {
                    self.transition(id, Change::Start)?;
                }
                self.transition(id, Change::Succeed(result))?;
            }
            Some(Err(failure)) => {
                self.transition(id, Change::Fail(failure.into()))?;
            }
            None => {
                tokio::select! {
                    _ = tokio::time::timeout(WIND_DOWN, work) => {}
                    _ = self.stopping.cancelled() => {}
                }
            }
        }
        Ok(())
    }
}

async fn run_task(inner: Arc<Inner>, id: String, recovered: bool, cancel: CancellationToken) {
    match inner.drive(&id, recovered, &cancel).await {
        Ok(()) => {}
        Err(error @ (TaskError::Ended { .. } | TaskError::NotFound(_))) => {
            tracing::debug!(task = %id, %error, "the task ended while its executor worked");
        }
        Err(error) => {
            tracing::error!(task = %id, %error, "driving a task failed; it is resumed or ended at the next start");
        }
    }
    lock(&inner.runners).remove(&id);
}

/// A subscription to one task's events, starting from its state when subscribed.
pub struct TaskWatch {
    /// The task as last seen (its state when subscribed, then kept current).
    pub task: Task,
    receiver: broadcast::Receiver<TaskEvent>,
    inner: Arc<Inner>,
    done: bool,
}

impl std::fmt::Debug for TaskWatch {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "TaskWatch({})", self.task.id)
    }
}

impl TaskWatch {
    /// The next event; `None` after the event that ended the task (or when the system stops).
    pub async fn next(&mut self) -> Option<TaskEvent> {
        if self.done {
            return None;
        }
        let event = match self.receiver.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(_)) => match self.reread() {
                Some(task) => TaskEvent::State(Box::new(task)),
                None => {
                    self.done = true;
                    return None;
                }
            },
            Err(broadcast::error::RecvError::Closed) => {
                self.done = true;
                return match self.reread() {
                    Some(task) if task != self.task => Some(TaskEvent::State(Box::new(task))),
                    _ => None,
                };
            }
        };
        match &event {
            TaskEvent::State(task) => {
                self.task = (**task).clone();
                self.done = task.state.is_ended();
            }
            TaskEvent::Progress(progress) => self.task.progress = Some(progress.clone()),
            TaskEvent::Log(_) => {}
        }
        Some(event)
    }

    fn reread(&mut self) -> Option<Task> {
        let task = persist::get(&self.inner.store, &self.task.id).ok()??;
        self.task = task.clone();
        Some(task)
    }
}

impl Drop for TaskWatch {
    fn drop(&mut self) {
        let mut channels = lock(&self.inner.channels);
        if channels
            .get(&self.task.id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            channels.remove(&self.task.id);
        }
    }
}

impl TaskSystem {
    /// Opens the task system over the store and sets the tasks-by-state gauges from it. Nothing
    /// runs until [`TaskSystem::start`].
    pub fn new(store: Store, gauge: Family<StateLabel, Gauge>) -> Result<TaskSystem, TaskError> {
        if persist::repair_state_index(&store)? {
            tracing::info!("rebuilt the index of tasks by state");
        }
        let sequence = persist::last_sequence(&store)?;
        let inner = Inner {
            store,
            gauge,
            executors: RwLock::new(HashMap::new()),
            registrations: watch::channel(0).0,
            runners: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            sequence: AtomicU64::new(sequence),
            started: AtomicBool::new(false),
            stopping: CancellationToken::new(),
            executor_grace_millis: AtomicU64::new(DEFAULT_EXECUTOR_GRACE.as_millis() as u64),
            sweeper: Mutex::new(None),
        };
        for (state, count) in persist::state_counts(&inner.store)? {
            inner
                .state_gauge(state)
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        Ok(TaskSystem {
            inner: Arc::new(inner),
        })
    }

    /// Registers the executor of `kind` (replacing an earlier one). Tasks of that kind waiting
    /// since a restart start at once.
    pub fn register(&self, kind: &str, executor: impl Executor) {
        self.inner
            .executors
            .write_recovered()
            .insert(kind.to_string(), Arc::new(executor));
        self.inner
            .registrations
            .send_modify(|generation| *generation += 1);
    }

    /// How long tasks found unfinished at start wait for their executor to be registered
    /// before they fail (default 30 s).
    pub fn set_executor_grace(&self, grace: Duration) {
        self.inner
            .executor_grace_millis
            .store(grace.as_millis() as u64, Ordering::Relaxed);
        self.inner
            .registrations
            .send_modify(|generation| *generation += 1);
    }

    /// Starts driving: every task a previous run left unfinished is resumed or ended, and
    /// forgotten idempotency keys are swept hourly. Needs a tokio runtime.
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::AcqRel) {
            return;
        }
        match persist::active_ids(&self.inner.store) {
            Ok(ids) => {
                if !ids.is_empty() {
                    tracing::info!(count = ids.len(), "resuming or ending unfinished tasks");
                }
                for id in ids {
                    self.inner.spawn(id, true);
                }
            }
            Err(error) => tracing::error!(%error, "cannot read the unfinished tasks"),
        }
        let inner = self.inner.clone();
        let sweeper = tokio::spawn(async move {
            loop {
                match persist::sweep_idempotency(&inner.store, now()) {
                    Ok(0) => {}
                    Ok(count) => tracing::debug!(count, "forgot old idempotency keys"),
                    Err(error) => tracing::warn!(%error, "sweeping idempotency keys failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
                    _ = inner.stopping.cancelled() => return,
                }
            }
        });
        *lock(&self.inner.sweeper) = Some(sweeper);
    }

    /// Stops every runner without changing any task, and drops the executors (which may hold
    /// the application). Tasks under way are dealt with at the next start.
    pub async fn shutdown(&self) {
        self.inner.stopping.cancel();
        let handles: Vec<_> = lock(&self.inner.runners)
            .drain()
            .filter_map(|(_, runner)| runner.handle)
            .chain(lock(&self.inner.sweeper).take())
            .collect();
        for handle in &handles {
            handle.abort();
        }
        for handle in handles {
            let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
        }
        self.inner.executors.write_recovered().clear();
        lock(&self.inner.channels).clear();
    }

    /// Stores a new task and starts it, or gives back the first task of the same owner's
    /// idempotency key (then `true`).
    pub fn submit(&self, new: NewTask) -> Result<(Task, bool), TaskError> {
        if self.inner.stopping.is_cancelled() {
            return Err(TaskError::Stopping);
        }
        if !valid_kind(&new.kind) {
            return Err(TaskError::BadKind);
        }
        if let Some(key) = &new.idempotency_key
            && !valid_idempotency_key(key)
        {
            return Err(TaskError::BadIdempotencyKey);
        }
        let created_at = now();
        let deadline = new.deadline.map(|deadline| {
            created_at + time::Duration::try_from(deadline).unwrap_or(time::Duration::MAX)
        });
        let sequence = self.inner.sequence.fetch_add(1, Ordering::AcqRel) + 1;
        let task = Task::new(
            Creation {
                id: uuid::Uuid::new_v4().to_string(),
                kind: new.kind,
                instance: new.instance,
                owner: new.owner,
                input: new.input,
                deadline,
                idempotency_key: new.idempotency_key,
                sequence,
            },
            created_at,
        );
        let secret_input = new.secret_input.as_ref().map(|input| input.expose());
        let (task, existing) = persist::create(&self.inner.store, &task, secret_input, created_at)?;
        if !existing {
            self.inner.state_gauge(task.state).inc();
            if self.inner.started.load(Ordering::Acquire) {
                self.inner.spawn(task.id.clone(), false);
            }
        }
        Ok((task, existing))
    }

    /// One task.
    pub fn get(&self, id: &str) -> Result<Option<Task>, TaskError> {
        persist::get(&self.inner.store, id)
    }

    /// A task's log lines, oldest first.
    pub fn logs(&self, id: &str) -> Result<Vec<TaskLogLine>, TaskError> {
        persist::logs(&self.inner.store, id)
    }

    /// A page of tasks, newest first, and how many match.
    pub fn list(
        &self,
        filter: &TaskFilter,
        limit: usize,
        offset: usize,
    ) -> Result<TaskPage, TaskError> {
        persist::list(&self.inner.store, filter, limit, offset)
    }

    /// Cancels a task that has not ended: the state is written first, then its executor is
    /// told. A task that already ended gives [`TaskError::Ended`].
    pub fn cancel(&self, id: &str) -> Result<Task, TaskError> {
        let task = self.inner.transition(id, Change::Cancel)?;
        if let Some(runner) = lock(&self.inner.runners).get(id) {
            runner.cancel.cancel();
        }
        Ok(task)
    }

    /// Adds a line to a task's log from outside its executor (e.g. the agent channel).
    pub fn log(&self, id: &str, line: &str) -> Result<(), TaskError> {
        self.inner.log(id, line)
    }

    /// Watches a task: its state now, then every event until it ends.
    pub fn subscribe(&self, id: &str) -> Result<TaskWatch, TaskError> {
        let receiver = lock(&self.inner.channels)
            .entry(id.to_string())
            .or_insert_with(|| broadcast::channel(EVENT_BUFFER).0)
            .subscribe();
        let task = match persist::get(&self.inner.store, id) {
            Ok(Some(task)) => task,
            Ok(None) => {
                lock(&self.inner.channels).remove(id);
                return Err(TaskError::NotFound(id.to_string()));
            }
            Err(error) => return Err(error),
        };
        Ok(TaskWatch {
            done: task.state.is_ended(),
            task,
            receiver,
            inner: self.inner.clone(),
        })
    }

    /// Waits up to `timeout` for the task to end; returns it as it is then.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Task, TaskError> {
        let mut watch = self.subscribe(id)?;
        let until = tokio::time::Instant::now() + timeout;
        while !watch.task.state.is_ended() {
            match tokio::time::timeout_at(until, watch.next()).await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        if watch.task.state.is_ended() {
            return Ok(watch.task.clone());
        }
        Ok(persist::get(&self.inner.store, id)?.unwrap_or_else(|| watch.task.clone()))
    }

    /// How many tasks are in each state, from the store.
    pub fn counts(&self) -> Result<Vec<(TaskState, u64)>, TaskError> {
        persist::state_counts(&self.inner.store)
    }
}

impl From<Refused> for TaskError {
    fn from(refused: Refused) -> TaskError {
        TaskError::Refused(refused)
    }
}
