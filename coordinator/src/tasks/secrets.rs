//! The secret part of a task's input (a database password, an uploaded private key), held apart
//! from the plain input.
//!
//! A task that carries a secret stores its plain input with every secret replaced by
//! [`PLACEHOLDER`], and its whole input in the sealed table `TaskSecrets` (see
//! `store::sealing`), written in the transaction that creates the task. Its executor reads the
//! whole input through [`input`], the one way to it. The transaction that moves the task to an
//! end state replaces the held input with [`TaskSecretsRecord::Erased`], so the record keeps
//! only that there was a secret and when it was erased.
//!
//! Invariant: a task's secrets are never in its plain input, its result, its log, an answer or
//! a `Debug` output, and they are gone from the store's records once the task has ended.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::TaskError;
use super::system::{TaskContext, TaskFailure};
use crate::store::{Store, StoreError, Table, Write};

/// What a secret is replaced with in a task's plain input.
pub const PLACEHOLDER: &str = "<secret>";

/// A value that must not show up in logs: its `Debug` output is `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    pub fn new(value: T) -> Redacted<T> {
        Redacted(value)
    }

    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::fmt::Debug for Redacted<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("<redacted>")
    }
}

/// The secret input of one task (table `TaskSecrets`, key: task id; sealed).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskSecretsRecord {
    /// The task's whole input, secrets included, while the task has not ended.
    Held { input: Value },
    /// The task ended; its secrets were erased at this time (RFC 3339).
    Erased { at: String },
}

impl std::fmt::Debug for TaskSecretsRecord {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskSecretsRecord::Held { .. } => formatter.write_str("Held(<redacted>)"),
            TaskSecretsRecord::Erased { at } => write!(formatter, "Erased({at})"),
        }
    }
}

/// Stores a new task's whole input, inside the transaction that creates the task.
pub(super) fn hold(write: &mut Write<'_>, id: &str, input: &Value) -> Result<(), StoreError> {
    write.put(
        Table::TaskSecrets,
        id,
        &TaskSecretsRecord::Held {
            input: input.clone(),
        },
    )
}

/// Erases the secrets of a task that has just ended, inside the transaction that ends it.
pub(super) fn erase(
    write: &mut Write<'_>,
    id: &str,
    now: time::OffsetDateTime,
) -> Result<(), StoreError> {
    let held: Option<TaskSecretsRecord> = write.get(Table::TaskSecrets, id)?;
    if matches!(held, Some(TaskSecretsRecord::Held { .. })) {
        let at = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        write.put(Table::TaskSecrets, id, &TaskSecretsRecord::Erased { at })?;
    }
    Ok(())
}

/// The secret record of a task, if it had secrets.
pub fn record(store: &Store, id: &str) -> Result<Option<TaskSecretsRecord>, TaskError> {
    Ok(store.get(Table::TaskSecrets, id)?)
}

/// The whole input an executor works from: the held input, secrets included, when the task has
/// secrets, else its plain input.
pub fn input(store: &Store, context: &TaskContext) -> Result<Redacted<Value>, TaskFailure> {
    let unreadable = |error: StoreError| {
        TaskFailure::new(
            "bad_input",
            format!("the task's secret input is unreadable: {error}"),
        )
    };
    match store
        .get::<TaskSecretsRecord>(Table::TaskSecrets, &context.id)
        .map_err(unreadable)?
    {
        None => Ok(Redacted::new(context.input.clone())),
        Some(TaskSecretsRecord::Held { input }) => Ok(Redacted::new(input)),
        Some(TaskSecretsRecord::Erased { .. }) => Err(TaskFailure::new(
            "bad_input",
            "the task's secret input was erased when it ended",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::machine::{Change, Creation, Task};
    use crate::tasks::persist;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn held_secrets_are_erased_in_the_change_that_ends_the_task() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sealed(dir.path(), &dir.path().join("secrets.key")).unwrap();
        let now = datetime!(2025-01-01 00:00:00 UTC);
        for (index, end) in [
            Change::Cancel,
            Change::Fail(crate::tasks::TaskErrorBody {
                code: "x".into(),
                message: "y".into(),
            }),
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("task-{index}");
            let task = Task::new(
                Creation {
                    id: id.clone(),
                    kind: "database.create".into(),
                    instance: None,
                    owner: "o".into(),
                    input: json!({"password": PLACEHOLDER}),
                    deadline: None,
                    idempotency_key: None,
                    sequence: index as u64 + 1,
                },
                now,
            );
            let whole = json!({"password": "hunter2-secret"});
            persist::create(&store, &task, Some(&whole), now).unwrap();
            assert_eq!(
                record(&store, &id).unwrap(),
                Some(TaskSecretsRecord::Held { input: whole })
            );
            persist::change(&store, &id, Change::Begin, now).unwrap();
            assert!(matches!(
                record(&store, &id).unwrap(),
                Some(TaskSecretsRecord::Held { .. })
            ));
            persist::change(&store, &id, end, now).unwrap();
            assert_eq!(
                record(&store, &id).unwrap(),
                Some(TaskSecretsRecord::Erased {
                    at: "2025-01-01T00:00:00Z".into()
                })
            );
        }
    }

    #[test]
    fn debug_output_never_shows_a_held_secret() {
        let held = TaskSecretsRecord::Held {
            input: json!({"password": "hunter2-secret"}),
        };
        assert!(!format!("{held:?}").contains("hunter2"));
        let wrapped = Redacted::new(json!({"password": "hunter2-secret"}));
        assert_eq!(format!("{wrapped:?}"), "<redacted>");
    }
}
