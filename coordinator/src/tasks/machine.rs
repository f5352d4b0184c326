//! The task state machine: the task record and the one function that changes it. Pure: the
//! current time is an argument and nothing here reads a clock, a disk or a network.
//!
//! States: `queued → sent → running → succeeded | failed | cancelled | expired`; coordinator-local
//! work may go `queued → running` directly, and a task the coordinator resumes after a restart
//! goes back to `queued`. Ended states never change again.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// Stored in task records and their indexes, so it lives with the other stored types.
pub use crate::store::records::TaskState;

/// How far a task has come, as its executor reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// 0 to 100.
    pub percent: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why a task failed, cancelled or expired: a snake_case code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskErrorBody {
    pub code: String,
    pub message: String,
}

/// A task as stored (table `Tasks`, key: its id). The API shows a subset, see [`Task::view`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub state: TaskState,
    pub kind: String,
    #[serde(default)]
    pub instance: Option<u32>,
    /// The user id of whoever asked for the task.
    pub owner: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub deadline: Option<OffsetDateTime>,
    #[serde(default)]
    pub progress: Option<Progress>,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<TaskErrorBody>,
    /// What the executor works from; never shown through the API.
    #[serde(default)]
    pub input: Value,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// How many times an executor was handed the task.
    #[serde(default)]
    pub attempts: u32,
    /// Creation order, unique per store; orders lists.
    pub sequence: u64,
    /// How many log lines are stored for the task.
    #[serde(default)]
    pub log_lines: u32,
}

/// The task's public JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskView<'a> {
    pub id: &'a str,
    pub state: TaskState,
    pub kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub deadline: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<&'a Progress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a TaskErrorBody>,
}

/// What a new task starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct Creation {
    pub id: String,
    pub kind: String,
    pub instance: Option<u32>,
    pub owner: String,
    pub input: Value,
    pub deadline: Option<OffsetDateTime>,
    pub idempotency_key: Option<String>,
    pub sequence: u64,
}

impl Task {
    /// A new task, `queued`.
    pub fn new(creation: Creation, now: OffsetDateTime) -> Task {
        Task {
            id: creation.id,
            state: TaskState::Queued,
            kind: creation.kind,
            instance: creation.instance,
            owner: creation.owner,
            created_at: now,
            updated_at: now,
            deadline: creation.deadline,
            progress: None,
            result: None,
            error: None,
            input: creation.input,
            idempotency_key: creation.idempotency_key,
            attempts: 0,
            sequence: creation.sequence,
            log_lines: 0,
        }
    }

    /// The public shape.
    pub fn view(&self) -> TaskView<'_> {
        TaskView {
            id: &self.id,
            state: self.state,
            kind: &self.kind,
            instance: self.instance,
            created_at: self.created_at,
            updated_at: self.updated_at,
            deadline: self.deadline,
            progress: self.progress.as_ref(),
            result: self.result.as_ref(),
            error: self.error.as_ref(),
        }
    }

    /// The public shape as a JSON value.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.view()).unwrap_or(Value::Null)
    }

    /// True once the deadline, if any, has passed at `now`.
    pub fn is_overdue(&self, now: OffsetDateTime) -> bool {
        self.deadline.is_some_and(|deadline| now >= deadline)
    }
}

/// A requested change to a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The driver hands the queued task to its executor (counts an attempt; stays `queued`).
    Begin,
    /// The work went to an agent: `queued → sent`.
    Send,
    /// The work is under way: `queued | sent → running`.
    Start,
    /// Back to `queued` (the agent went away, or the coordinator resumes after a restart).
    Requeue,
    /// How far the work has come; `sent` and `running` only.
    Progress(Progress),
    /// Done with a result: `sent | running → succeeded`.
    Succeed(Value),
    /// Failed with a reason: any unended state → `failed`.
    Fail(TaskErrorBody),
    /// Cancelled by a caller: any unended state → `cancelled`.
    Cancel,
    /// The deadline passed: any unended state → `expired`, only once `now` is past it.
    Expire,
}

impl Change {
    /// A short name, for messages and test tables.
    pub fn name(&self) -> &'static str {
        match self {
            Change::Begin => "begin",
            Change::Send => "send",
            Change::Start => "start",
            Change::Requeue => "requeue",
            Change::Progress(_) => "progress",
            Change::Succeed(_) => "succeed",
            Change::Fail(_) => "fail",
            Change::Cancel => "cancel",
            Change::Expire => "expire",
        }
    }
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the task already ended ({0})")]
    Ended(TaskState),
    #[error("a {state} task cannot {change}")]
    Illegal {
        state: TaskState,
        change: &'static str,
    },
    #[error("the task has no deadline or it has not passed")]
    NotOverdue,
    #[error("progress must be between 0 and 100, got {0}")]
    BadProgress(u8),
}

/// Applies `change` at `now`: the changed task, or why the change is not allowed.
pub fn apply(task: &Task, change: Change, now: OffsetDateTime) -> Result<Task, Refused> {
    use TaskState::*;
    if task.state.is_ended() {
        return Err(Refused::Ended(task.state));
    }
    let illegal = || Refused::Illegal {
        state: task.state,
        change: change.name(),
    };
    let mut next = task.clone();
    match (&change, task.state) {
        (Change::Begin, Queued) => next.attempts = next.attempts.saturating_add(1),
        (Change::Send, Queued) => next.state = Sent,
        (Change::Start, Queued | Sent) => next.state = Running,
        (Change::Requeue, Sent | Running) => {
            next.state = Queued;
            next.progress = None;
        }
        (Change::Progress(progress), Sent | Running) => {
            if progress.percent > 100 {
                return Err(Refused::BadProgress(progress.percent));
            }
            next.progress = Some(progress.clone());
        }
        (Change::Succeed(result), Sent | Running) => {
            next.state = Succeeded;
            next.result = Some(result.clone());
            next.progress = Some(Progress {
                percent: 100,
                message: next.progress.and_then(|progress| progress.message),
            });
        }
        (Change::Fail(error), _) => {
            next.state = Failed;
            next.error = Some(error.clone());
        }
        (Change::Cancel, _) => {
            next.state = Cancelled;
            next.error = Some(TaskErrorBody {
                code: "cancelled".into(),
                message: "the task was cancelled".into(),
            });
        }
        (Change::Expire, _) => {
            if !task.is_overdue(now) {
                return Err(Refused::NotOverdue);
            }
            next.state = Expired;
            next.error = Some(TaskErrorBody {
                code: "expired".into(),
                message: match task.state {
                    Queued => "the deadline passed before the task could start".into(),
                    _ => "the deadline passed before the task finished".into(),
                },
            });
        }
        _ => return Err(illegal()),
    }
    next.updated_at = now;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    const CREATED: OffsetDateTime = datetime!(2025-01-01 00:00:00 UTC);
    const LATER: OffsetDateTime = datetime!(2025-01-01 00:05:00 UTC);
    const DEADLINE: OffsetDateTime = datetime!(2025-01-01 00:10:00 UTC);
    const PAST_DEADLINE: OffsetDateTime = datetime!(2025-01-01 00:10:00.001 UTC);

    fn task(state: TaskState) -> Task {
        let mut task = Task::new(
            Creation {
                id: "t".into(),
                kind: "test".into(),
                instance: Some(101),
                owner: "u".into(),
                input: json!({"a": 1}),
                deadline: Some(DEADLINE),
                idempotency_key: None,
                sequence: 1,
            },
            CREATED,
        );
        task.state = state;
        task
    }

    fn changes() -> Vec<Change> {
        vec![
            Change::Begin,
            Change::Send,
            Change::Start,
            Change::Requeue,
            Change::Progress(Progress {
                percent: 40,
                message: Some("half".into()),
            }),
            Change::Succeed(json!({"ok": true})),
            Change::Fail(TaskErrorBody {
                code: "boom".into(),
                message: "it broke".into(),
            }),
            Change::Cancel,
            Change::Expire,
        ]
    }

    /// Every state against every change, at a time past the deadline. `None`: refused.
    #[test]
    fn every_transition_is_either_allowed_to_its_state_or_refused() {
        use TaskState::*;
        // Columns: begin, send, start, requeue, progress, succeed, fail, cancel, expire.
        let table: &[(TaskState, [Option<TaskState>; 9])] = &[
            (
                Queued,
                [
                    Some(Queued),
                    Some(Sent),
                    Some(Running),
                    None,
                    None,
                    None,
                    Some(Failed),
                    Some(Cancelled),
                    Some(Expired),
                ],
            ),
            (
                Sent,
                [
                    None,
                    None,
                    Some(Running),
                    Some(Queued),
                    Some(Sent),
                    Some(Succeeded),
                    Some(Failed),
                    Some(Cancelled),
                    Some(Expired),
                ],
            ),
            (
                Running,
                [
                    None,
                    None,
                    None,
                    Some(Queued),
                    Some(Running),
                    Some(Succeeded),
                    Some(Failed),
                    Some(Cancelled),
                    Some(Expired),
                ],
            ),
            (Succeeded, [None; 9]),
            (Failed, [None; 9]),
            (Cancelled, [None; 9]),
            (Expired, [None; 9]),
        ];
        assert_eq!(table.len(), TaskState::ALL.len());
        for (state, expected) in table {
            for (change, expected) in changes().into_iter().zip(expected) {
                let name = change.name();
                let outcome = apply(&task(*state), change, PAST_DEADLINE);
                match (outcome, expected) {
                    (Ok(next), Some(expected)) => {
                        assert_eq!(next.state, *expected, "{state} + {name}");
                        assert_eq!(next.updated_at, PAST_DEADLINE, "{state} + {name}");
                    }
                    (Err(refused), None) => {
                        if state.is_ended() {
                            assert_eq!(refused, Refused::Ended(*state));
                        }
                    }
                    (outcome, expected) => {
                        panic!("{state} + {name}: got {outcome:?}, expected {expected:?}")
                    }
                }
            }
        }
    }

    #[test]
    fn expiry_waits_for_the_deadline() {
        let cases: &[(Option<OffsetDateTime>, OffsetDateTime, bool)] = &[
            (Some(DEADLINE), LATER, false),
            (Some(DEADLINE), DEADLINE, true),
            (Some(DEADLINE), PAST_DEADLINE, true),
            (None, PAST_DEADLINE, false),
        ];
        for (deadline, now, allowed) in cases {
            let mut queued = task(TaskState::Running);
            queued.deadline = *deadline;
            let outcome = apply(&queued, Change::Expire, *now);
            assert_eq!(outcome.is_ok(), *allowed, "{deadline:?} at {now}");
            if !allowed {
                assert_eq!(outcome.unwrap_err(), Refused::NotOverdue);
            }
        }
    }

    #[test]
    fn outcomes_carry_their_result_or_reason() {
        let running = task(TaskState::Running);
        let done = apply(&running, Change::Succeed(json!({"x": 2})), LATER).unwrap();
        assert_eq!(done.result, Some(json!({"x": 2})));
        assert_eq!(done.progress.as_ref().map(|p| p.percent), Some(100));
        assert_eq!(done.error, None);

        let failure = TaskErrorBody {
            code: "proxmox_error".into(),
            message: "no space".into(),
        };
        let failed = apply(&running, Change::Fail(failure.clone()), LATER).unwrap();
        assert_eq!(failed.error, Some(failure));

        let cancelled = apply(&running, Change::Cancel, LATER).unwrap();
        assert_eq!(cancelled.error.unwrap().code, "cancelled");

        let expired = apply(&task(TaskState::Queued), Change::Expire, DEADLINE).unwrap();
        assert_eq!(expired.error.unwrap().code, "expired");
    }

    #[test]
    fn begin_counts_attempts_and_requeue_clears_progress() {
        let queued = task(TaskState::Queued);
        let begun = apply(&queued, Change::Begin, LATER).unwrap();
        assert_eq!(begun.attempts, 1);
        let running = apply(&begun, Change::Start, LATER).unwrap();
        let progressed = apply(
            &running,
            Change::Progress(Progress {
                percent: 50,
                message: None,
            }),
            LATER,
        )
        .unwrap();
        let requeued = apply(&progressed, Change::Requeue, LATER).unwrap();
        assert_eq!(requeued.state, TaskState::Queued);
        assert_eq!(requeued.progress, None);
        let again = apply(&requeued, Change::Begin, LATER).unwrap();
        assert_eq!(again.attempts, 2);
    }

    #[test]
    fn progress_above_one_hundred_is_refused() {
        let outcome = apply(
            &task(TaskState::Running),
            Change::Progress(Progress {
                percent: 101,
                message: None,
            }),
            LATER,
        );
        assert_eq!(outcome.unwrap_err(), Refused::BadProgress(101));
    }

    #[test]
    fn the_public_shape_has_exactly_the_documented_fields() {
        let mut running = task(TaskState::Running);
        running.progress = Some(Progress {
            percent: 10,
            message: None,
        });
        let value = running.to_json();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "created_at",
                "deadline",
                "id",
                "instance",
                "kind",
                "progress",
                "state",
                "updated_at"
            ]
        );
        assert_eq!(value["created_at"], "2025-01-01T00:00:00Z");
        assert_eq!(value["state"], "running");

        let mut bare = task(TaskState::Queued);
        bare.instance = None;
        bare.deadline = None;
        let value = bare.to_json();
        assert!(value.get("instance").is_none() && value.get("deadline").is_none());
    }

    #[test]
    fn records_round_trip_through_json() {
        let original = task(TaskState::Sent);
        let bytes = serde_json::to_vec(&original).unwrap();
        let back: Task = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn state_names_parse_back() {
        for state in TaskState::ALL {
            assert_eq!(TaskState::parse(state.as_str()), Some(state));
        }
        assert_eq!(TaskState::parse("done"), None);
    }
}
