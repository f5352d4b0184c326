//! The task routes over HTTP (list, one, cancel, Server-Sent Events, metrics) with real API
//! keys, the answer every task-starting route gives (`respond_with_task`), and the cost of a
//! list page with 10,000 tasks stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coordinator::api::ApiRequest;
use coordinator::api::tasks::respond_with_task;
use coordinator::auth::{Credential, Principal};
use coordinator::store::records::Role;
use coordinator::tasks::{
    Creation, NewTask, Phase, Task, TaskContext, TaskFailure, TaskState, persist,
};
use http::{HeaderMap, HeaderValue, Method};
use serde_json::{Value, json};
use testkit::coordinator::TestServer;
use tokio::sync::Notify;

const PATIENCE: Duration = Duration::from_secs(10);

async fn echo(context: TaskContext) -> Result<Value, TaskFailure> {
    context.set_state(Phase::Running)?;
    Ok(context.input.clone())
}

async fn until_cancelled(context: TaskContext) -> Result<Value, TaskFailure> {
    context.set_state(Phase::Running)?;
    context.cancelled().cancelled().await;
    Ok(Value::Null)
}

fn principal(user_id: &str) -> Principal {
    Principal {
        user_id: user_id.to_string(),
        username: user_id.to_string(),
        role: Role::Customer,
        credential: Credential::ApiKey("test".into()),
        instance_scope: None,
    }
}

fn request(query: &str, idempotency_key: Option<&str>, user_id: &str) -> ApiRequest {
    let mut headers = HeaderMap::new();
    if let Some(key) = idempotency_key {
        headers.insert("idempotency-key", HeaderValue::from_str(key).unwrap());
    }
    let mut request = ApiRequest::new(
        Method::POST,
        "/api/v1/instance/101/status/start".into(),
        query,
        headers,
        Bytes::new(),
        None,
    );
    request.principal = Some(principal(user_id));
    request
}

async fn body_of(response: coordinator::api::Reply) -> (u16, HeaderMap, Value) {
    use hyper::body::Body as _;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(frame) =
        std::future::poll_fn(|context| std::pin::Pin::new(&mut body).poll_frame(context)).await
    {
        if let Ok(data) = frame.unwrap().into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    (status, headers, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn a_submitted_task_is_answered_202_with_its_location_or_200_after_waiting() {
    let server = TestServer::start().await;
    let app = server.app();
    app.tasks.register("test.echo", echo);
    let gate = Arc::new(Notify::new());
    let held = gate.clone();
    app.tasks
        .register("test.gated", move |context: TaskContext| {
            let gate = held.clone();
            async move {
                gate.notified().await;
                echo(context).await
            }
        });

    // No wait: 202 at once, whatever the task does next.
    let response = respond_with_task(
        app,
        &request("", None, "u1"),
        NewTask::new("test.gated", "u1").instance(101),
    )
    .await
    .unwrap();
    let (status, headers, body) = body_of(response).await;
    assert_eq!(status, 202);
    let id = body["task"]["id"].as_str().unwrap().to_string();
    assert_eq!(headers["location"], format!("/api/v1/task/{id}").as_str());
    assert_eq!(body["task"]["kind"], "test.gated");
    assert_eq!(body["task"]["instance"], 101);
    assert_eq!(body["task"]["state"], "queued");

    // A wait that runs out: still 202 with the task as it is.
    let response = respond_with_task(
        app,
        &request("wait=0.3", None, "u1"),
        NewTask::new("test.gated", "u1"),
    )
    .await
    .unwrap();
    let (status, _, body) = body_of(response).await;
    assert_eq!(status, 202);
    assert!(
        !TaskState::parse(body["task"]["state"].as_str().unwrap())
            .unwrap()
            .is_ended()
    );

    // A wait the task finishes within: 200 with the final task.
    let response = respond_with_task(
        app,
        &request("wait=10", None, "u1"),
        NewTask::new("test.echo", "u1").input(json!({"x": 1})),
    )
    .await
    .unwrap();
    let (status, _, body) = body_of(response).await;
    assert_eq!(status, 200);
    assert_eq!(body["task"]["state"], "succeeded");
    assert_eq!(body["task"]["result"], json!({"x": 1}));

    // Bad waits are refused before any task exists.
    let before = app.tasks.list(&Default::default(), 1, 0).unwrap().total;
    for (query, status) in [
        ("wait=soon", 400),
        ("wait=61", 422),
        ("wait=-1", 422),
        ("wait=NaN", 422),
    ] {
        let error = respond_with_task(
            app,
            &request(query, None, "u1"),
            NewTask::new("test.echo", "u1"),
        )
        .await
        .unwrap_err();
        assert_eq!(error.status.as_u16(), status, "{query}");
    }
    assert_eq!(
        app.tasks.list(&Default::default(), 1, 0).unwrap().total,
        before
    );

    // The Idempotency-Key header: the same user gets the first task back, another user not.
    let first = respond_with_task(
        app,
        &request("", Some("pay-42"), "u1"),
        NewTask::new("test.echo", "u1"),
    )
    .await
    .unwrap();
    let (_, first_headers, first) = body_of(first).await;
    assert!(first_headers.get("idempotent-replayed").is_none());
    let again = respond_with_task(
        app,
        &request("wait=10", Some("pay-42"), "u1"),
        NewTask::new("test.echo", "u1"),
    )
    .await
    .unwrap();
    let (status, again_headers, again) = body_of(again).await;
    assert_eq!(again["task"]["id"], first["task"]["id"]);
    assert_eq!(status, 200);
    assert_eq!(again_headers["idempotent-replayed"], "true");
    let other = respond_with_task(
        app,
        &request("", Some("pay-42"), "u2"),
        NewTask::new("test.echo", "u2"),
    )
    .await
    .unwrap();
    let (_, _, other) = body_of(other).await;
    assert_ne!(other["task"]["id"], first["task"]["id"]);
    let reused = respond_with_task(
        app,
        &request("", Some("pay-42"), "u1"),
        NewTask::new("test.gated", "u1"),
    )
    .await
    .unwrap_err();
    assert_eq!(reused.status.as_u16(), 409);
    let bad_key = respond_with_task(
        app,
        &request("", Some("two words"), "u1"),
        NewTask::new("test.echo", "u1"),
    )
    .await
    .unwrap_err();
    assert_eq!(bad_key.status.as_u16(), 400);
}

#[tokio::test]
async fn the_task_routes_show_customers_only_their_own_tasks() {
    let mut server = TestServer::start().await;
    let (alice, alice_key) = server.customer("alice").await;
    let (bob, bob_key) = server.customer("bob").await;
    let app = server.app().clone();
    app.tasks.register("test.echo", echo);
    app.tasks.register("test.block", until_cancelled);
    app.tasks
        .register("test.fail", |_context: TaskContext| async move {
            Err(TaskFailure::new("nope", "refused on purpose"))
        });

    let submit = |kind: &str, owner: &str, instance: u32| {
        app.tasks
            .submit(NewTask::new(kind, owner).instance(instance))
            .unwrap()
            .0
            .id
    };
    let alice_done = submit("test.echo", &alice, 300);
    let alice_failed = submit("test.fail", &alice, 301);
    let alice_running = submit("test.block", &alice, 300);
    let bob_done = submit("test.echo", &bob, 400);
    for id in [&alice_done, &alice_failed, &bob_done] {
        assert!(app.tasks.wait(id, PATIENCE).await.unwrap().state.is_ended());
    }

    let ids = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|task| task["id"].as_str().unwrap().to_string())
            .collect()
    };
    let list = server
        .call("GET", "/api/v1/task", Some(&alice_key), None)
        .await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    assert_eq!(list.body["total"], 3);
    assert_eq!(list.body["limit"], 50);
    assert_eq!(list.body["offset"], 0);
    assert_eq!(
        ids(&list.body),
        [
            alice_running.clone(),
            alice_failed.clone(),
            alice_done.clone()
        ]
    );
    let everything = server.admin("GET", "/api/v1/task", None).await;
    assert_eq!(everything.body["total"], 4);

    let cases: &[(&str, &[&String])] = &[
        ("?state=failed", &[&alice_failed]),
        ("?instance=300", &[&alice_running, &alice_done]),
        ("?instance=300&state=succeeded", &[&alice_done]),
        ("?kind=test.block", &[&alice_running]),
        ("?instance=400", &[]),
        ("?limit=1&offset=1", &[&alice_failed]),
    ];
    for (query, expected) in cases {
        let answer = server
            .call(
                "GET",
                &format!("/api/v1/task{query}"),
                Some(&alice_key),
                None,
            )
            .await;
        assert_eq!(answer.status, 200, "{query}: {:?}", answer.body);
        let expected: Vec<String> = expected.iter().map(|id| id.to_string()).collect();
        if *query != "?limit=1&offset=1" {
            assert_eq!(answer.body["total"], expected.len(), "{query}");
        }
        assert_eq!(ids(&answer.body), expected, "{query}");
    }
    // Seed 000 sends GET parameters as a JSON body.
    let by_body = server
        .call(
            "GET",
            "/api/v1/task",
            Some(&alice_key),
            Some(json!({"state": "failed"})),
        )
        .await;
    assert_eq!(ids(&by_body.body), std::slice::from_ref(&alice_failed));
    for (query, status) in [
        ("?state=finished", 422),
        ("?limit=0", 422),
        ("?limit=1001", 422),
        ("?limit=ten", 400),
        ("?instance=abc", 400),
    ] {
        let answer = server
            .call(
                "GET",
                &format!("/api/v1/task{query}"),
                Some(&alice_key),
                None,
            )
            .await;
        assert_eq!(answer.status, status, "{query}: {:?}", answer.body);
    }

    let own = server
        .call(
            "GET",
            &format!("/api/v1/task/{alice_done}"),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(own.status, 200);
    assert_eq!(own.body["task"]["state"], "succeeded");
    assert!(own.body["log"].is_array());
    let failed = server
        .call(
            "GET",
            &format!("/api/v1/task/{alice_failed}"),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(
        failed.body["task"]["error"],
        json!({"code": "nope", "message": "refused on purpose"})
    );
    let foreign = server
        .call(
            "GET",
            &format!("/api/v1/task/{alice_done}"),
            Some(&bob_key),
            None,
        )
        .await;
    assert_eq!(foreign.status, 404);
    assert_eq!(foreign.body["error"]["code"], "not_found");
    let admin_view = server
        .admin("GET", &format!("/api/v1/task/{alice_done}"), None)
        .await;
    assert_eq!(admin_view.status, 200);
    assert_eq!(
        server
            .call("GET", "/api/v1/task/nothing-here", Some(&alice_key), None)
            .await
            .status,
        404
    );

    let path = format!("/api/v1/task/{alice_running}");
    assert_eq!(
        server
            .call("DELETE", &path, Some(&bob_key), None)
            .await
            .status,
        404
    );
    let cancelled = server.call("DELETE", &path, Some(&alice_key), None).await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["task"]["state"], "cancelled");
    let again = server.call("DELETE", &path, Some(&alice_key), None).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["error"]["code"], "task_ended");

    for (method, path) in [
        ("GET", "/api/v1/task".to_string()),
        ("GET", format!("/api/v1/task/{alice_done}")),
        ("DELETE", format!("/api/v1/task/{alice_done}")),
        ("GET", format!("/api/v1/task/{alice_done}/events")),
    ] {
        assert_eq!(
            server.call(method, &path, None, None).await.status,
            401,
            "{method} {path}"
        );
    }

    let metrics = server.call("GET", "/metrics", None, None).await;
    assert_eq!(metrics.status, 200);
    let text = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "hostplane_tasks{state=\"succeeded\"} 2",
        "hostplane_tasks{state=\"failed\"} 1",
        "hostplane_tasks{state=\"cancelled\"} 1",
        "hostplane_tasks{state=\"queued\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    server.stop().await;
}

/// Reads one response's Server-Sent Events until the stream ends: (event, data) pairs.
async fn read_events(
    response: &mut reqwest::Response,
    buffer: &mut String,
    until_frames: Option<usize>,
) -> Vec<(String, Value)> {
    let mut frames = Vec::new();
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let mut event = None;
            let mut data = None;
            for line in frame.lines() {
                if let Some(name) = line.strip_prefix("event: ") {
                    event = Some(name.to_string());
                } else if let Some(text) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(text).unwrap());
                }
            }
            if let (Some(event), Some(data)) = (event, data) {
                frames.push((event, data));
            }
            if until_frames.is_some_and(|count| frames.len() >= count) {
                return frames;
            }
        }
        let chunk = tokio::time::timeout(PATIENCE, response.chunk())
            .await
            .expect("the event stream went quiet")
            .unwrap();
        match chunk {
            Some(bytes) => buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
            None => return frames,
        }
    }
}

#[tokio::test]
async fn the_event_stream_sends_the_state_then_progress_logs_and_the_end() {
    let mut server = TestServer::start().await;
    let (alice, alice_key) = server.customer("alice").await;
    let (_bob, bob_key) = server.customer("bob").await;
    let app = server.app().clone();
    let gate = Arc::new(Notify::new());
    let held = gate.clone();
    app.tasks
        .register("test.gated", move |context: TaskContext| {
            let gate = held.clone();
            async move {
                gate.notified().await;
                context.set_state(Phase::Running)?;
                context.progress(50, "half way")?;
                context.log("unpacked the template")?;
                Ok(json!({"done": true}))
            }
        });
    let (task, _) = app
        .tasks
        .submit(NewTask::new("test.gated", &alice).instance(500))
        .unwrap();
    let path = format!("{}/api/v1/task/{}/events", server.url, task.id);

    let refused = server
        .client
        .get(&path)
        .header("x-api-key", &bob_key)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);

    let mut response = server
        .client
        .get(&path)
        .header("x-api-key", &alice_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut buffer = String::new();
    let first = read_events(&mut response, &mut buffer, Some(1)).await;
    assert_eq!(first[0].0, "state");
    assert_eq!(first[0].1["state"], "queued");
    assert_eq!(first[0].1["id"], task.id.as_str());

    gate.notify_one();
    let rest = read_events(&mut response, &mut buffer, None).await;
    let names: Vec<String> = rest
        .iter()
        .map(|(event, data)| match event.as_str() {
            "state" => format!("state {}", data["state"].as_str().unwrap()),
            "progress" => format!("progress {}", data["percent"]),
            "log" => format!("log {}", data["line"].as_str().unwrap()),
            other => other.to_string(),
        })
        .collect();
    assert_eq!(
        names,
        [
            "state running",
            "progress 50",
            "log unpacked the template",
            "state succeeded"
        ]
    );
    assert_eq!(rest[3].1["result"], json!({"done": true}));
    assert_eq!(rest[1].1["message"], "half way");
    assert!(rest[2].1["at"].as_str().unwrap().ends_with('Z'));

    // The stream of an ended task: its state, then the end.
    let mut ended = server
        .client
        .get(&path)
        .header("x-api-key", &alice_key)
        .send()
        .await
        .unwrap();
    let mut buffer = String::new();
    let frames = read_events(&mut ended, &mut buffer, None).await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].1["state"], "succeeded");
    server.stop().await;
}

fn stored_task(index: u64, owner: &str) -> Task {
    let now = time::OffsetDateTime::now_utc();
    let mut task = Task::new(
        Creation {
            id: format!("bench-{index:05}"),
            kind: "bench.work".into(),
            instance: Some(1000 + (index % 50) as u32),
            owner: owner.to_string(),
            input: json!({"index": index}),
            deadline: None,
            idempotency_key: None,
            sequence: index + 1,
        },
        now,
    );
    task.state = if index % 7 == 0 {
        TaskState::Failed
    } else {
        TaskState::Succeeded
    };
    task
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test]
async fn a_page_of_fifty_among_ten_thousand_tasks_reads_only_the_page() {
    const TASKS: u64 = 10_000;
    let mut server = TestServer::start().await;
    let (customer, customer_key) = server.customer("paging").await;
    let admin_key = server.admin_key.clone();
    server.stop().await;
    {
        let store = coordinator::store::Store::open(server.dir.path()).unwrap();
        store
            .write(|write| {
                for index in 0..TASKS {
                    let owner = if index % 2 == 0 {
                        customer.as_str()
                    } else {
                        "other"
                    };
                    persist::insert(write, &stored_task(index, owner))?;
                }
                Ok::<_, coordinator::tasks::TaskError>(())
            })
            .unwrap();
    }
    let running = coordinator::server::start(coordinator::config::Config::for_tests(
        server.dir.path().to_path_buf(),
    ))
    .await
    .unwrap();
    let url = running.http_url();
    let client = reqwest::Client::new();

    let mut report = Vec::new();
    for (name, key, query, total, first_id) in [
        (
            "admin, first page",
            &admin_key,
            "limit=50",
            TASKS,
            "bench-09999",
        ),
        (
            "customer, first page",
            &customer_key,
            "limit=50",
            TASKS / 2,
            "bench-09998",
        ),
        (
            "admin, last page",
            &admin_key,
            "limit=50&offset=9950",
            TASKS,
            "bench-00049",
        ),
        (
            "admin, filtered by state",
            &admin_key,
            "limit=50&state=failed",
            1429,
            "bench-09996",
        ),
    ] {
        let mut samples = Vec::new();
        for round in 0..21 {
            let began = Instant::now();
            let response = client
                .get(format!("{url}/api/v1/task?{query}"))
                .header("x-api-key", key)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            samples.push(began.elapsed());
            if round == 0 {
                assert_eq!(status, 200, "{name}: {body:?}");
                assert_eq!(body["total"], total, "{name}");
                assert_eq!(body["data"].as_array().unwrap().len(), 50, "{name}");
                assert_eq!(body["data"][0]["id"], first_id, "{name}");
            }
        }
        let median = median(samples);
        report.push(format!("{name}: median {median:?}"));
        if !name.contains("last") {
            assert!(median < Duration::from_millis(250), "{name}: {median:?}");
        }
    }
    eprintln!(
        "GET /api/v1/task with {TASKS} tasks stored:\n{}",
        report.join("\n")
    );
    let metrics = running.app.metrics.render();
    assert!(
        metrics.contains("hostplane_tasks{state=\"failed\"} 1429"),
        "{metrics}"
    );
    running.stop().await;
}
