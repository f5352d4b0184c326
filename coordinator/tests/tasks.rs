//! The task system through its Rust API on a running coordinator: running, progress, logs,
//! failure, unknown kinds, cancellation, deadlines, idempotency, events, lists, metrics, and a
//! restart that loses nothing.

use std::sync::Arc;
use std::time::Duration;

use coordinator::config::Config;
use coordinator::server::{self, Running};
use coordinator::tasks::{
    NewTask, Phase, TaskContext, TaskError, TaskEvent, TaskFailure, TaskFilter, TaskState,
    resumable,
};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

const PATIENCE: Duration = Duration::from_secs(10);

async fn start(dir: &std::path::Path) -> Running {
    server::start(Config::for_tests(dir.to_path_buf()))
        .await
        .expect("coordinator starts")
}

/// Runs `input.steps` progress steps with a log line each, then answers with the input.
async fn echo(context: TaskContext) -> Result<Value, TaskFailure> {
    context.set_state(Phase::Running)?;
    let steps = context.input["steps"].as_u64().unwrap_or(0);
    for step in 1..=steps {
        context.progress((step * 100 / (steps + 1)) as u8, &format!("step {step}"))?;
        context.log(format!("did step {step}"))?;
    }
    Ok(context.input.clone())
}

/// Stays queued until cancelled or expired, like a task whose agent never connects.
async fn until_cancelled(context: TaskContext) -> Result<Value, TaskFailure> {
    context.cancelled().cancelled().await;
    Ok(Value::Null)
}

/// Tells the test it started, then works until cancelled; reports that it saw the cancellation.
fn blocker(
    started: mpsc::UnboundedSender<String>,
    saw_cancel: mpsc::UnboundedSender<String>,
) -> impl Fn(TaskContext) -> futures_util::future::BoxFuture<'static, Result<Value, TaskFailure>>
+ Send
+ Sync
+ 'static {
    move |context: TaskContext| {
        let started = started.clone();
        let saw_cancel = saw_cancel.clone();
        Box::pin(async move {
            context.set_state(Phase::Running)?;
            let _ = started.send(context.id.clone());
            context.cancelled().cancelled().await;
            let _ = saw_cancel.send(context.id.clone());
            Ok(json!("finished after the cancellation"))
        })
    }
}

#[tokio::test]
async fn a_task_runs_reports_progress_and_logs_and_keeps_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    let tasks = &running.app.tasks;
    tasks.register("test.echo", echo);

    let input = json!({"steps": 3, "name": "x"});
    let (task, existing) = tasks
        .submit(
            NewTask::new("test.echo", "user-1")
                .instance(101)
                .input(input.clone()),
        )
        .unwrap();
    assert!(!existing);
    assert!(matches!(task.state, TaskState::Queued | TaskState::Running));
    let done = tasks.wait(&task.id, PATIENCE).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded, "{done:?}");
    assert_eq!(done.result, Some(input));
    assert_eq!(done.progress.as_ref().unwrap().percent, 100);
    assert_eq!(done.attempts, 1);
    assert_eq!(done.instance, Some(101));
    assert!(done.updated_at >= done.created_at);
    let lines: Vec<String> = tasks
        .logs(&task.id)
        .unwrap()
        .into_iter()
        .map(|line| line.line)
        .collect();
    assert_eq!(lines, ["did step 1", "did step 2", "did step 3"]);

    let shown = done.to_json();
    assert_eq!(shown["state"], "succeeded");
    assert_eq!(shown["id"], task.id.as_str());
    assert!(shown.get("input").is_none() && shown.get("owner").is_none());
    running.stop().await;
}

#[tokio::test]
async fn failures_and_unknown_kinds_end_failed_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    let tasks = &running.app.tasks;
    tasks.register("test.fail", |context: TaskContext| async move {
        context.set_state(Phase::Running)?;
        Err(TaskFailure::new(
            "disk_full",
            "the storage has no room left",
        ))
    });
    tasks.register("test.quiet", |_context: TaskContext| async move {
        Ok(json!({"without": "set_state"}))
    });

    let (failing, _) = tasks.submit(NewTask::new("test.fail", "u")).unwrap();
    let failed = tasks.wait(&failing.id, PATIENCE).await.unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    let error = failed.error.unwrap();
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("disk_full", "the storage has no room left")
    );

    let (unknown, _) = tasks.submit(NewTask::new("test.nobody", "u")).unwrap();
    let unknown = tasks.wait(&unknown.id, PATIENCE).await.unwrap();
    assert_eq!(unknown.state, TaskState::Failed);
    let error = unknown.error.unwrap();
    assert_eq!(error.code, "no_executor");
    assert!(error.message.contains("test.nobody"), "{}", error.message);

    // An executor that never reports a state still ends with its result.
    let (quiet, _) = tasks.submit(NewTask::new("test.quiet", "u")).unwrap();
    let quiet = tasks.wait(&quiet.id, PATIENCE).await.unwrap();
    assert_eq!(quiet.state, TaskState::Succeeded);
    assert_eq!(quiet.result, Some(json!({"without": "set_state"})));

    assert!(matches!(
        tasks.submit(NewTask::new("Bad Kind", "u")),
        Err(TaskError::BadKind)
    ));
    running.stop().await;
}

#[tokio::test]
async fn cancelling_signals_the_executor_and_an_ended_task_cannot_be_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    let tasks = &running.app.tasks;
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let (saw_cancel, mut saw_cancel_rx) = mpsc::unbounded_channel();
    tasks.register("test.block", blocker(started, saw_cancel));

    let (task, _) = tasks.submit(NewTask::new("test.block", "u")).unwrap();
    let begun = tokio::time::timeout(PATIENCE, started_rx.recv())
        .await
        .unwrap();
    assert_eq!(begun.as_deref(), Some(task.id.as_str()));
    assert_eq!(
        tasks.get(&task.id).unwrap().unwrap().state,
        TaskState::Running
    );

    let cancelled = tasks.cancel(&task.id).unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert_eq!(cancelled.error.as_ref().unwrap().code, "cancelled");
    let told = tokio::time::timeout(PATIENCE, saw_cancel_rx.recv())
        .await
        .unwrap();
    assert_eq!(told.as_deref(), Some(task.id.as_str()));
    // The executor's late answer does not change the ended task.
    let after = tasks.wait(&task.id, PATIENCE).await.unwrap();
    assert_eq!(after.state, TaskState::Cancelled);
    assert_eq!(after.result, None);

    assert!(matches!(
        tasks.cancel(&task.id),
        Err(TaskError::Ended {
            state: TaskState::Cancelled,
            ..
        })
    ));
    assert!(matches!(
        tasks.cancel("no-such-task"),
        Err(TaskError::NotFound(_))
    ));

    // A queued task that nothing has started can be cancelled too.
    let gate = Arc::new(Notify::new());
    let waiting_gate = gate.clone();
    tasks.register("test.gate", move |_context: TaskContext| {
        let gate = waiting_gate.clone();
        async move {
            gate.notified().await;
            Ok(Value::Null)
        }
    });
    let (queued, _) = tasks.submit(NewTask::new("test.gate", "u")).unwrap();
    let cancelled = tasks.cancel(&queued.id).unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled);
    running.stop().await;
}

#[tokio::test]
async fn deadlines_expire_queued_and_overrunning_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    let tasks = &running.app.tasks;
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let (saw_cancel, mut saw_cancel_rx) = mpsc::unbounded_channel();
    tasks.register("test.block", blocker(started, saw_cancel));
    // Waits for an agent that never comes: stays queued.
    tasks.register("test.agent", |context: TaskContext| async move {
        context.cancelled().cancelled().await;
        Err(TaskFailure::new("never", "the agent never came"))
    });

    let (overrun, _) = tasks
        .submit(NewTask::new("test.block", "u").deadline(Duration::from_millis(300)))
        .unwrap();
    let (never, _) = tasks
        .submit(NewTask::new("test.agent", "u").deadline(Duration::from_millis(300)))
        .unwrap();
    assert!(overrun.deadline.unwrap() > overrun.created_at);
    tokio::time::timeout(PATIENCE, started_rx.recv())
        .await
        .unwrap();

    let overrun = tasks.wait(&overrun.id, PATIENCE).await.unwrap();
    assert_eq!(overrun.state, TaskState::Expired, "{overrun:?}");
    assert!(overrun.updated_at >= overrun.deadline.unwrap());
    let error = overrun.error.unwrap();
    assert_eq!(error.code, "expired");
    assert!(error.message.contains("before the task finished"));
    let told = tokio::time::timeout(PATIENCE, saw_cancel_rx.recv())
        .await
        .unwrap();
    assert_eq!(told.as_deref(), Some(overrun.id.as_str()));

    let never = tasks.wait(&never.id, PATIENCE).await.unwrap();
    assert_eq!(never.state, TaskState::Expired);
    assert!(
        never
            .error
            .unwrap()
            .message
            .contains("before the task could start")
    );
    running.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_gives_back_the_first_task_of_the_same_user() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    let tasks = &running.app.tasks;
    tasks.register("test.echo", echo);
    tasks.register("test.other", echo);

    let first = tasks
        .submit(
            NewTask::new("test.echo", "alice")
                .instance(150)
                .idempotency_key("order-17"),
        )
        .unwrap();
    assert!(!first.1);
    let again = tasks
        .submit(
            NewTask::new("test.echo", "alice")
                .instance(150)
                .idempotency_key("order-17"),
        )
        .unwrap();
    assert!(again.1);
    assert_eq!(again.0.id, first.0.id);

    let someone_else = tasks
        .submit(
            NewTask::new("test.echo", "bob")
                .instance(150)
                .idempotency_key("order-17"),
        )
        .unwrap();
    assert!(!someone_else.1);
    assert_ne!(someone_else.0.id, first.0.id);

    let other_key = tasks
        .submit(
            NewTask::new("test.echo", "alice")
                .instance(150)
                .idempotency_key("order-18"),
        )
        .unwrap();
    assert_ne!(other_key.0.id, first.0.id);

    assert!(matches!(
        tasks.submit(
            NewTask::new("test.other", "alice")
                .instance(150)
                .idempotency_key("order-17")
        ),
        Err(TaskError::IdempotencyConflict { .. })
    ));
    for bad in ["", "has space", &"x".repeat(256)] {
        assert!(
            matches!(
                tasks.submit(NewTask::new("test.echo", "alice").idempotency_key(bad)),
                Err(TaskError::BadIdempotencyKey)
            ),
            "{bad:?}"
        );
    }
    let page = tasks.list(&TaskFilter::default(), 50, 0).unwrap();
    assert_eq!(page.total, 3, "a replay creates no task");
    running.stop().await;
}

#[tokio::test]
async fn a_watcher_sees_the_state_then_every_event_then_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    let tasks = &running.app.tasks;
    let gate = Arc::new(Notify::new());
    let executor_gate = gate.clone();
    tasks.register("test.gated", move |context: TaskContext| {
        let gate = executor_gate.clone();
        async move {
            gate.notified().await;
            context.set_state(Phase::Sent)?;
            context.set_state(Phase::Running)?;
            context.progress(30, "copying")?;
            context.log("copied the files")?;
            Ok(json!({"copied": 3}))
        }
    });
    let (task, _) = tasks.submit(NewTask::new("test.gated", "u")).unwrap();
    let mut watch = tasks.subscribe(&task.id).unwrap();
    assert_eq!(watch.task.state, TaskState::Queued);
    gate.notify_one();

    let mut seen = Vec::new();
    while let Some(event) = tokio::time::timeout(PATIENCE, watch.next()).await.unwrap() {
        seen.push(match event {
            TaskEvent::State(task) => format!("state {}", task.state),
            TaskEvent::Progress(progress) => format!("progress {}", progress.percent),
            TaskEvent::Log(line) => format!("log {}", line.line),
        });
        assert!(seen.len() < 20, "too many events: {seen:?}");
    }
    assert_eq!(
        seen,
        [
            "state sent",
            "state running",
            "progress 30",
            "log copied the files",
            "state succeeded"
        ]
    );
    assert_eq!(watch.task.state, TaskState::Succeeded);

    // A watcher of an ended task gets its state and nothing more.
    let mut late = tasks.subscribe(&task.id).unwrap();
    assert_eq!(late.task.state, TaskState::Succeeded);
    assert!(late.next().await.is_none());
    assert!(matches!(
        tasks.subscribe("missing"),
        Err(TaskError::NotFound(_))
    ));
    running.stop().await;
}

#[tokio::test]
async fn lists_page_newest_first_with_filters_totals_and_state_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    let tasks = &running.app.tasks;
    tasks.register("test.echo", echo);
    tasks.register("test.fail", |_context: TaskContext| async move {
        Err(TaskFailure::new("nope", "refused"))
    });
    let mut ids = Vec::new();
    for index in 0..30u32 {
        let owner = if index % 3 == 0 { "carol" } else { "dave" };
        let kind = if index % 5 == 0 {
            "test.fail"
        } else {
            "test.echo"
        };
        let (task, _) = tasks
            .submit(NewTask::new(kind, owner).instance(200 + index % 2))
            .unwrap();
        ids.push(task.id);
    }
    for id in &ids {
        assert!(tasks.wait(id, PATIENCE).await.unwrap().state.is_ended());
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();

    let everything = TaskFilter::default();
    let first = tasks.list(&everything, 10, 0).unwrap();
    assert_eq!(first.total, 30);
    let shown: Vec<&str> = first.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(shown, newest_first[..10]);
    let last = tasks.list(&everything, 10, 25).unwrap();
    assert_eq!(last.tasks.len(), 5);
    assert_eq!(last.tasks[4].id, ids[0]);
    assert!(tasks.list(&everything, 10, 30).unwrap().tasks.is_empty());

    // Every filter, alone and combined, against a count made here from the submissions.
    let expected = |owner: Option<&str>, instance: Option<u32>, state: Option<TaskState>| {
        (0..30u32)
            .filter(|index| {
                owner.is_none_or(|o| o == if index % 3 == 0 { "carol" } else { "dave" })
            })
            .filter(|index| instance.is_none_or(|i| i == 200 + index % 2))
            .filter(|index| {
                state.is_none_or(|s| {
                    s == if index % 5 == 0 {
                        TaskState::Failed
                    } else {
                        TaskState::Succeeded
                    }
                })
            })
            .count() as u64
    };
    for owner in [None, Some("carol"), Some("dave")] {
        for instance in [None, Some(200), Some(201)] {
            for state in [None, Some(TaskState::Failed), Some(TaskState::Succeeded)] {
                let filter = TaskFilter {
                    owner: owner.map(str::to_string),
                    instance,
                    state,
                    ..TaskFilter::default()
                };
                let page = tasks.list(&filter, 4, 1).unwrap();
                let want = expected(owner, instance, state);
                assert_eq!(page.total, want, "{filter:?}");
                assert_eq!(
                    page.tasks.len() as u64,
                    want.saturating_sub(1).min(4),
                    "{filter:?}"
                );
                for task in &page.tasks {
                    assert!(owner.is_none_or(|o| task.owner == o));
                    assert!(instance.is_none_or(|i| task.instance == Some(i)));
                    assert!(state.is_none_or(|s| task.state == s));
                }
            }
        }
    }
    let by_kind = TaskFilter {
        kind: Some("test.fail".into()),
        ..TaskFilter::default()
    };
    assert_eq!(tasks.list(&by_kind, 50, 0).unwrap().total, 6);
    let scoped = TaskFilter {
        scope: Some(vec![201]),
        ..TaskFilter::default()
    };
    assert_eq!(tasks.list(&scoped, 50, 0).unwrap().total, 15);

    let metrics = running.app.metrics.render();
    assert!(
        metrics.contains("hostplane_tasks{state=\"succeeded\"} 24"),
        "{metrics}"
    );
    assert!(metrics.contains("hostplane_tasks{state=\"failed\"} 6"));
    assert!(metrics.contains("hostplane_tasks{state=\"running\"} 0"));
    running.stop().await;
}

#[tokio::test]
async fn after_a_restart_every_unfinished_task_is_resumed_or_ended_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (started, mut started_rx) = mpsc::unbounded_channel();
    let (saw_cancel, _saw_cancel_rx) = mpsc::unbounded_channel();
    let ids;
    {
        let running = start(dir.path()).await;
        let tasks = &running.app.tasks;
        tasks.register("test.fragile", blocker(started.clone(), saw_cancel.clone()));
        tasks.register(
            "test.sturdy",
            resumable(blocker(started.clone(), saw_cancel.clone())),
        );
        tasks.register("test.orphan", blocker(started.clone(), saw_cancel.clone()));
        tasks.register("test.waiting", until_cancelled);
        tasks.register("test.late", until_cancelled);
        tasks.register("test.echo", echo);

        let submit = |new: NewTask| tasks.submit(new).unwrap().0.id;
        let quick = submit(NewTask::new("test.echo", "u").input(json!({"steps": 1})));
        assert_eq!(
            tasks.wait(&quick, PATIENCE).await.unwrap().state,
            TaskState::Succeeded
        );
        let fragile = submit(NewTask::new("test.fragile", "u"));
        let sturdy = submit(NewTask::new("test.sturdy", "u").idempotency_key("k1"));
        let orphan = submit(NewTask::new("test.orphan", "u"));
        let waiting = submit(NewTask::new("test.waiting", "u"));
        let overdue = submit(NewTask::new("test.late", "u").deadline(Duration::from_secs(1)));
        for _ in 0..3 {
            tokio::time::timeout(PATIENCE, started_rx.recv())
                .await
                .unwrap();
        }
        for id in [&fragile, &sturdy, &orphan] {
            assert_eq!(tasks.get(id).unwrap().unwrap().state, TaskState::Running);
        }
        assert_eq!(
            tasks.get(&waiting).unwrap().unwrap().state,
            TaskState::Queued
        );
        ids = [quick, fragile, sturdy, orphan, waiting, overdue];
        // Stopping is like a crash for the tasks: nothing is ended on the way out.
        running.stop().await;
    }

    let running = start(dir.path()).await;
    let tasks = &running.app.tasks;
    let [quick, fragile, sturdy, orphan, waiting, overdue] = &ids;
    assert_eq!(
        tasks.list(&TaskFilter::default(), 50, 0).unwrap().total,
        6,
        "no task is lost"
    );
    for id in [fragile, sturdy, orphan] {
        assert_eq!(
            tasks.get(id).unwrap().unwrap().state,
            TaskState::Running,
            "not reset before its executor decides"
        );
    }
    // The second life: every executor finishes at once.
    tasks.register("test.fragile", echo);
    tasks.register("test.sturdy", resumable(echo));
    tasks.register("test.waiting", echo);
    tasks.register("test.late", until_cancelled);
    tasks.set_executor_grace(Duration::from_millis(200));

    let quick = tasks.wait(quick, PATIENCE).await.unwrap();
    assert_eq!(quick.state, TaskState::Succeeded);
    assert_eq!(quick.attempts, 1);

    let fragile = tasks.wait(fragile, PATIENCE).await.unwrap();
    assert_eq!(fragile.state, TaskState::Failed);
    let error = fragile.error.unwrap();
    assert_eq!(error.code, "coordinator_restarted");
    assert_eq!(
        error.message,
        "the coordinator restarted while this task was running"
    );

    let sturdy_task = tasks.wait(sturdy, PATIENCE).await.unwrap();
    assert_eq!(sturdy_task.state, TaskState::Succeeded);
    assert_eq!(sturdy_task.attempts, 2);
    assert!(
        tasks
            .logs(sturdy)
            .unwrap()
            .iter()
            .any(|line| line.line.contains("restarted"))
    );
    // Its idempotency key survived the restart too.
    let replay = tasks
        .submit(NewTask::new("test.sturdy", "u").idempotency_key("k1"))
        .unwrap();
    assert!(replay.1);
    assert_eq!(&replay.0.id, sturdy);

    let orphan = tasks.wait(orphan, PATIENCE).await.unwrap();
    assert_eq!(orphan.state, TaskState::Failed);
    assert_eq!(orphan.error.unwrap().code, "no_executor");

    let waiting = tasks.wait(waiting, PATIENCE).await.unwrap();
    assert_eq!(waiting.state, TaskState::Succeeded);
    assert_eq!(waiting.attempts, 2);

    let overdue = tasks.wait(overdue, PATIENCE).await.unwrap();
    assert_eq!(overdue.state, TaskState::Expired);
    assert_eq!(
        overdue.deadline,
        Some(overdue.created_at + Duration::from_secs(1))
    );

    let counts = tasks.counts().unwrap();
    let active: u64 = counts
        .iter()
        .filter(|(state, _)| !state.is_ended())
        .map(|(_, count)| count)
        .sum();
    assert_eq!(active, 0, "{counts:?}");
    running.stop().await;
}
