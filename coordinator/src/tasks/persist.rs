//! Tasks in the store: every change of a task and its indexes is one write transaction, so the
//! record, the list indexes, the counts and the set of unfinished tasks never disagree.

use time::OffsetDateTime;

use super::TaskError;
use super::machine::{self, Change, Refused, Task, TaskState};
use crate::store::records::{IdempotencyRecord, TaskLogLine, TaskSummary};
use crate::store::{Read, Store, Table, Write};

/// How long an `Idempotency-Key` names its first task.
pub const IDEMPOTENCY_WINDOW: time::Duration = time::Duration::hours(24);
/// Log lines kept per task; later lines are dropped after one line saying so.
pub const MAX_LOG_LINES: u32 = 1000;
/// Longest log line kept, in bytes; longer lines are cut.
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// Which tasks a list shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFilter {
    /// Only this user's tasks (customers see only their own).
    pub owner: Option<String>,
    /// Only tasks of these instances (an instance-scoped credential).
    pub scope: Option<Vec<u32>>,
    pub instance: Option<u32>,
    pub state: Option<TaskState>,
    pub kind: Option<String>,
}

impl TaskFilter {
    fn accepts(&self, summary: &TaskSummary) -> bool {
        self.owner
            .as_ref()
            .is_none_or(|owner| *owner == summary.owner)
            && self.scope.as_ref().is_none_or(|scope| {
                summary
                    .instance
                    .is_some_and(|instance| scope.contains(&instance))
            })
            && self
                .instance
                .is_none_or(|instance| summary.instance == Some(instance))
            && self.state.is_none_or(|state| summary.state == state)
            && self.kind.as_ref().is_none_or(|kind| *kind == summary.kind)
    }
}

/// One page of a list and how many tasks match in all.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    pub total: u64,
}

fn order_key(sequence: u64) -> String {
    format!("{:020}", u64::MAX - sequence)
}

fn owner_key(owner: &str, sequence: u64) -> String {
    format!("{owner}/{}", order_key(sequence))
}

fn instance_prefix(instance: u32) -> String {
    format!("{instance:010}/")
}

fn log_key(id: &str, line: u32) -> String {
    format!("{id}/{line:06}")
}

fn idempotency_key(owner: &str, key: &str) -> String {
    format!("{owner}/{key}")
}

fn summary(task: &Task) -> TaskSummary {
    TaskSummary {
        id: task.id.clone(),
        owner: task.owner.clone(),
        instance: task.instance,
        kind: task.kind.clone(),
        state: task.state,
    }
}

fn add_count(write: &mut Write<'_>, key: &str, delta: i64) -> Result<(), TaskError> {
    let current: u64 = write.get(Table::TaskCounts, key)?.unwrap_or(0);
    let next = current.saturating_add_signed(delta);
    if next == 0 {
        write.delete(Table::TaskCounts, key)?;
    } else {
        write.put(Table::TaskCounts, key, &next)?;
    }
    Ok(())
}

fn put_indexes(write: &mut Write<'_>, task: &Task) -> Result<(), TaskError> {
    let summary = summary(task);
    write.put(Table::TaskOrder, &order_key(task.sequence), &summary)?;
    write.put(
        Table::TaskOwnerIndex,
        &owner_key(&task.owner, task.sequence),
        &summary,
    )?;
    if let Some(instance) = task.instance {
        let key = format!("{}{}", instance_prefix(instance), order_key(task.sequence));
        write.put(Table::TaskInstanceIndex, &key, &summary)?;
    }
    write.put(
        Table::TaskStateIndex,
        &state_key(task.state, task.sequence),
        &summary,
    )?;
    Ok(())
}

fn state_key(state: TaskState, sequence: u64) -> String {
    format!("{state}/{}", order_key(sequence))
}

/// Rebuilds the state index when it does not hold one entry per task (a store written before
/// the index existed); returns whether it did.
pub fn repair_state_index(store: &Store) -> Result<bool, TaskError> {
    let (tasks, indexed) = store.read(|read| {
        Ok::<_, TaskError>((
            read.count(Table::TaskOrder)?,
            read.count(Table::TaskStateIndex)?,
        ))
    })?;
    if tasks == indexed {
        return Ok(false);
    }
    store.write(|write| {
        for (key, _) in write.list::<TaskSummary>(Table::TaskStateIndex)? {
            write.delete(Table::TaskStateIndex, &key)?;
        }
        for (key, summary) in write.list::<TaskSummary>(Table::TaskOrder)? {
            let key = format!("{}/{key}", summary.state);
            write.put(Table::TaskStateIndex, &key, &summary)?;
        }
        Ok::<_, TaskError>(())
    })?;
    Ok(true)
}

/// The highest sequence number used so far (0 when there are no tasks).
pub fn last_sequence(store: &Store) -> Result<u64, TaskError> {
    let first: Vec<(String, TaskSummary)> =
        store.read(|read| read.range(Table::TaskOrder, "", Some(1)))?;
    Ok(first
        .first()
        .and_then(|(key, _)| key.parse::<u64>().ok())
        .map(|inverted| u64::MAX - inverted)
        .unwrap_or(0))
}

/// How many tasks are in each state.
pub fn state_counts(store: &Store) -> Result<Vec<(TaskState, u64)>, TaskError> {
    store.read(|read| {
        TaskState::ALL
            .into_iter()
            .map(|state| {
                let count: u64 = read
                    .get(Table::TaskCounts, &format!("state/{state}"))?
                    .unwrap_or(0);
                Ok((state, count))
            })
            .collect()
    })
}

/// The ids of every task not yet ended.
pub fn active_ids(store: &Store) -> Result<Vec<String>, TaskError> {
    let active: Vec<(String, String)> = store.list(Table::TaskActive)?;
    Ok(active.into_iter().map(|(id, _kind)| id).collect())
}

/// How a change is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Durable before the call returns (concurrent writers share one flush to disk).
    Durable,
    /// Durable with the next durable commit; a crash before it loses the change.
    Buffered,
}

/// Stores a new task, or, when the owner already used its idempotency key within the window,
/// returns that first task and `true`.
/// A task with secrets has its whole input, `secret_input`, held apart (see [`super::secrets`]).
pub fn create(
    store: &Store,
    task: &Task,
    secret_input: Option<&serde_json::Value>,
    now: OffsetDateTime,
) -> Result<(Task, bool), TaskError> {
    store.write_grouped(|write| {
        if let Some(key) = &task.idempotency_key {
            let index = idempotency_key(&task.owner, key);
            let earlier: Option<IdempotencyRecord> = write.get(Table::TaskIdempotency, &index)?;
            if let Some(earlier) = earlier
                && now - earlier.created_at < IDEMPOTENCY_WINDOW
                && let Some(first) = write.get::<Task>(Table::Tasks, &earlier.task)?
            {
                if first.kind != task.kind || first.instance != task.instance {
                    return Err(TaskError::IdempotencyConflict {
                        kind: first.kind,
                        instance: first.instance,
                    });
                }
                return Ok((first, true));
            }
            write.put(
                Table::TaskIdempotency,
                &index,
                &IdempotencyRecord {
                    task: task.id.clone(),
                    created_at: now,
                },
            )?;
        }
        insert(write, task)?;
        if let Some(input) = secret_input {
            super::secrets::hold(write, &task.id, input)?;
        }
        Ok((task.clone(), false))
    })
}

/// Writes a task that is not stored yet, with its indexes and counts, inside a caller's
/// transaction (imports and tests fill many at once this way). The task's `sequence` must be
/// unique; a task system opened afterwards continues after the highest one.
pub fn insert(write: &mut Write<'_>, task: &Task) -> Result<(), TaskError> {
    write.put(Table::Tasks, &task.id, task)?;
    put_indexes(write, task)?;
    if !task.state.is_ended() {
        write.put(Table::TaskActive, &task.id, &task.kind)?;
    }
    add_count(write, &format!("owner/{}", task.owner), 1)?;
    if let Some(instance) = task.instance {
        add_count(write, &format!("instance/{instance}"), 1)?;
    }
    add_count(write, &format!("state/{}", task.state), 1)?;
    Ok(())
}

/// Applies one change and stores it with its indexes; returns the task before and after.
/// Progress is buffered (it is not worth a flush: it becomes durable with the next state
/// change); every other change is durable when this returns.
pub fn change(
    store: &Store,
    id: &str,
    change: Change,
    now: OffsetDateTime,
) -> Result<(Task, Task), TaskError> {
    let commit = if matches!(change, Change::Progress(_)) {
        Commit::Buffered
    } else {
        Commit::Durable
    };
    change_as(store, id, change, now, commit)
}

/// [`change`], committed as `commit` says.
pub fn change_as(
    store: &Store,
    id: &str,
    change: Change,
    now: OffsetDateTime,
    commit: Commit,
) -> Result<(Task, Task), TaskError> {
    let work = |write: &mut Write<'_>| {
        let before: Task = write
            .get(Table::Tasks, id)?
            .ok_or_else(|| TaskError::NotFound(id.to_string()))?;
        let after = machine::apply(&before, change, now).map_err(|refused| match refused {
            Refused::Ended(state) => TaskError::Ended {
                id: id.to_string(),
                state,
            },
            other => TaskError::Refused(other),
        })?;
        write.put(Table::Tasks, id, &after)?;
        if after.state != before.state {
            write.delete(
                Table::TaskStateIndex,
                &state_key(before.state, before.sequence),
            )?;
            put_indexes(write, &after)?;
            add_count(write, &format!("state/{}", before.state), -1)?;
            add_count(write, &format!("state/{}", after.state), 1)?;
            if after.state.is_ended() {
                write.delete(Table::TaskActive, id)?;
                super::secrets::erase(write, id, now)?;
            }
        }
        Ok((before, after))
    };
    match commit {
        Commit::Buffered => store.write_buffered(work),
        Commit::Durable => store.write_grouped(work),
    }
}

/// Appends a log line; `None` when the task's log is full and the line was dropped.
pub fn append_log(
    store: &Store,
    id: &str,
    line: &str,
    now: OffsetDateTime,
) -> Result<Option<TaskLogLine>, TaskError> {
    // Log lines ride on the next durable commit; a crash may lose the last few, never a state.
    store.write_buffered(|write| {
        let mut task: Task = write
            .get(Table::Tasks, id)?
            .ok_or_else(|| TaskError::NotFound(id.to_string()))?;
        if task.log_lines > MAX_LOG_LINES {
            return Ok(None);
        }
        let text = if task.log_lines == MAX_LOG_LINES {
            "further log lines were dropped".to_string()
        } else {
            cut(line, MAX_LOG_LINE_BYTES).to_string()
        };
        let entry = TaskLogLine {
            at: now,
            line: text,
        };
        write.put(Table::TaskLogs, &log_key(id, task.log_lines), &entry)?;
        task.log_lines += 1;
        write.put(Table::Tasks, id, &task)?;
        Ok(Some(entry))
    })
}

fn cut(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Every log line of a task, oldest first.
pub fn logs(store: &Store, id: &str) -> Result<Vec<TaskLogLine>, TaskError> {
    let lines: Vec<(String, TaskLogLine)> =
        store.read(|read| read.range(Table::TaskLogs, &format!("{id}/"), None))?;
    Ok(lines.into_iter().map(|(_, line)| line).collect())
}

/// One task.
pub fn get(store: &Store, id: &str) -> Result<Option<Task>, TaskError> {
    Ok(store.get(Table::Tasks, id)?)
}

fn stored_count(read: &Read, key: &str) -> Result<u64, TaskError> {
    Ok(read.get(Table::TaskCounts, key)?.unwrap_or(0))
}

/// A page of tasks, newest first. Pages through the index with the fewest entries among those
/// the filter names (all tasks, one owner's, one instance's, one state's); when that index
/// covers the whole filter, only the entries up to the page's end and the records on the page
/// are read, otherwise the index's entries are checked against the rest of the filter.
pub fn list(
    store: &Store,
    filter: &TaskFilter,
    limit: usize,
    offset: usize,
) -> Result<TaskPage, TaskError> {
    #[derive(PartialEq)]
    enum Covers {
        Nothing,
        Owner,
        Instance,
        State,
    }
    store.read(|read| {
        let mut candidates = vec![(
            Table::TaskOrder,
            String::new(),
            read.count(Table::TaskOrder)?,
            Covers::Nothing,
        )];
        if let Some(owner) = &filter.owner {
            candidates.push((
                Table::TaskOwnerIndex,
                format!("{owner}/"),
                stored_count(read, &format!("owner/{owner}"))?,
                Covers::Owner,
            ));
        }
        if let Some(instance) = filter.instance {
            candidates.push((
                Table::TaskInstanceIndex,
                instance_prefix(instance),
                stored_count(read, &format!("instance/{instance}"))?,
                Covers::Instance,
            ));
        }
        if let Some(state) = filter.state {
            candidates.push((
                Table::TaskStateIndex,
                format!("{state}/"),
                stored_count(read, &format!("state/{state}"))?,
                Covers::State,
            ));
        }
        let Some((table, prefix, count, covers)) =
            candidates.into_iter().min_by_key(|(_, _, count, _)| *count)
        else {
            return Ok(TaskPage {
                tasks: Vec::new(),
                total: 0,
            });
        };
        let named = [
            filter.owner.is_some(),
            filter.instance.is_some(),
            filter.state.is_some(),
            filter.kind.is_some(),
            filter.scope.is_some(),
        ]
        .into_iter()
        .filter(|named| *named)
        .count();
        let covered = named == 0 || (named == 1 && covers != Covers::Nothing);
        let (ids, total) = if covered {
            let entries: Vec<(String, TaskSummary)> =
                read.range(table, &prefix, Some(offset.saturating_add(limit)))?;
            let ids = entries
                .into_iter()
                .skip(offset)
                .map(|(_, summary)| summary.id)
                .collect::<Vec<_>>();
            (ids, count)
        } else {
            let entries: Vec<(String, TaskSummary)> = read.range(table, &prefix, None)?;
            let mut total = 0u64;
            let mut ids = Vec::new();
            for (_, summary) in entries {
                if !filter.accepts(&summary) {
                    continue;
                }
                if total >= offset as u64 && ids.len() < limit {
                    ids.push(summary.id);
                }
                total += 1;
            }
            (ids, total)
        };
        let mut tasks = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(task) = read.get::<Task>(Table::Tasks, &id)? {
                tasks.push(task);
            }
        }
        Ok(TaskPage { tasks, total })
    })
}

/// Forgets idempotency keys older than the window; returns how many.
pub fn sweep_idempotency(store: &Store, now: OffsetDateTime) -> Result<usize, TaskError> {
    store.write(|write| {
        let all: Vec<(String, IdempotencyRecord)> = write.list(Table::TaskIdempotency)?;
        let mut removed = 0;
        for (key, record) in all {
            if now - record.created_at >= IDEMPOTENCY_WINDOW {
                write.delete(Table::TaskIdempotency, &key)?;
                removed += 1;
            }
        }
        Ok(removed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::machine::Creation;
    use time::macros::datetime;

    fn stored(index: u64, state: TaskState) -> Task {
        let mut task = Task::new(
            Creation {
                id: format!("t{index}"),
                kind: "k".into(),
                instance: None,
                owner: "o".into(),
                input: serde_json::Value::Null,
                deadline: None,
                idempotency_key: None,
                sequence: index,
            },
            datetime!(2025-01-01 00:00:00 UTC),
        );
        task.state = state;
        task
    }

    #[test]
    fn a_missing_state_index_is_rebuilt_and_lists_by_state_agree() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let states = [TaskState::Queued, TaskState::Failed, TaskState::Succeeded];
        store
            .write(|write| {
                for index in 1..=9 {
                    insert(write, &stored(index, states[index as usize % 3]))?;
                }
                Ok::<_, TaskError>(())
            })
            .unwrap();
        assert!(!repair_state_index(&store).unwrap());
        // As if written before the index existed.
        store
            .write(|write| {
                for (key, _) in write.list::<TaskSummary>(Table::TaskStateIndex)? {
                    write.delete(Table::TaskStateIndex, &key)?;
                }
                Ok::<_, TaskError>(())
            })
            .unwrap();
        assert!(repair_state_index(&store).unwrap());
        let failed = TaskFilter {
            state: Some(TaskState::Failed),
            ..TaskFilter::default()
        };
        let page = list(&store, &failed, 2, 0).unwrap();
        assert_eq!(page.total, 3);
        let ids: Vec<&str> = page.tasks.iter().map(|task| task.id.as_str()).collect();
        assert_eq!(ids, ["t7", "t4"]);
        assert_eq!(last_sequence(&store).unwrap(), 9);
        let active = active_ids(&store).unwrap();
        assert_eq!(active, ["t3", "t6", "t9"]);
    }

    #[test]
    fn a_state_change_moves_the_task_between_state_lists() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .write(|write| insert(write, &stored(1, TaskState::Queued)))
            .unwrap();
        let now = datetime!(2025-01-01 00:01:00 UTC);
        change(&store, "t1", Change::Start, now).unwrap();
        let count = |state| {
            let filter = TaskFilter {
                state: Some(state),
                ..TaskFilter::default()
            };
            list(&store, &filter, 10, 0).unwrap().tasks.len()
        };
        assert_eq!(
            (count(TaskState::Queued), count(TaskState::Running)),
            (0, 1)
        );
        change(&store, "t1", Change::Cancel, now).unwrap();
        assert_eq!(
            (count(TaskState::Running), count(TaskState::Cancelled)),
            (0, 1)
        );
        assert!(active_ids(&store).unwrap().is_empty());
        assert_eq!(
            state_counts(&store).unwrap(),
            TaskState::ALL
                .into_iter()
                .map(|state| (state, u64::from(state == TaskState::Cancelled)))
                .collect::<Vec<_>>()
        );
    }
}
