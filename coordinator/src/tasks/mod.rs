//! The task system: long work (Proxmox calls, agent operations) as tasks that are written to
//! the store before anything acts on them, run by executors registered per kind, and watched
//! through events.
//!
//! [`machine`] is the pure state machine, [`persist`] keeps tasks and their indexes in the
//! store, [`system`] drives them: it hands queued tasks to executors, enforces deadlines and
//! cancellation, and after a restart resumes or ends every task that had not ended. [`kinds`]
//! lists every task kind.

pub mod kinds;
pub mod machine;
pub mod persist;
pub mod secrets;
pub mod system;

pub use machine::{Creation, Progress, Refused, Task, TaskErrorBody, TaskState, TaskView};
pub use persist::{TaskFilter, TaskPage};
pub use system::{
    Executor, NewTask, Phase, RestartPolicy, TaskContext, TaskEvent, TaskFailure, TaskSystem,
    TaskWatch, resumable,
};

use crate::store::StoreError;

/// Why a task operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {0} does not exist")]
    NotFound(String),
    #[error("task {id} already ended ({state})")]
    Ended { id: String, state: TaskState },
    #[error("{0}")]
    Refused(Refused),
    #[error("this Idempotency-Key was first used for another request")]
    IdempotencyConflict { kind: String, instance: Option<u32> },
    #[error("the Idempotency-Key must be 1 to 255 visible ASCII characters")]
    BadIdempotencyKey,
    #[error("the task kind must be 1 to 64 characters of a-z, 0-9, '.', '_' or '-'")]
    BadKind,
    #[error("the task system is stopping")]
    Stopping,
    #[error(transparent)]
    Store(#[from] StoreError),
}
