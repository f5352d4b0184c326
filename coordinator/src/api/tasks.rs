//! The task routes (`/api/v1/task...`: list, one, cancel, Server-Sent Events) and
//! [`respond_with_task`], the one way every route that starts long work answers.

use shell::sync::MutexExt;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde_json::{Value, json};
use warp::Reply as _;

use super::list::Page;
use super::{Access, ApiError, ApiRequest, ApiResult, RouteTable, json_response, ok};
use crate::App;
use crate::auth::Principal;
use crate::tasks::{NewTask, Task, TaskError, TaskEvent, TaskFilter, TaskState, TaskView};

/// The longest `?wait=` a caller may ask for, in seconds.
pub const MAX_WAIT_SECONDS: f64 = 60.0;
/// How often an idle event stream sends a comment so proxies keep it open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub fn routes(table: &mut RouteTable) {
    table.add(
        Method::GET,
        "/api/v1/task",
        Access::Authenticated,
        "tasks",
        "List tasks, newest first (customers: their own); filters instance, state, kind",
        |app, request| Box::pin(list_tasks(app, request)),
    );
    table.add(
        Method::GET,
        "/api/v1/task/{taskid}",
        Access::Authenticated,
        "tasks",
        "One task with its log lines",
        |app, request| Box::pin(get_task(app, request)),
    );
    table.add(
        Method::DELETE,
        "/api/v1/task/{taskid}",
        Access::Authenticated,
        "tasks",
        "Cancel a task that has not ended (409 once it has)",
        |app, request| Box::pin(cancel_task(app, request)),
    );
    table.add(
        Method::GET,
        "/api/v1/task/{taskid}/events",
        Access::Authenticated,
        "tasks",
        "Server-Sent Events: the task's state, then progress, log lines and state changes until it ends",
        |app, request| Box::pin(task_events(app, request)),
    );
}

impl From<TaskError> for ApiError {
    fn from(error: TaskError) -> ApiError {
        match error {
            TaskError::NotFound(id) => ApiError::not_found(format!("task {id} does not exist")),
            TaskError::Ended { .. } => {
                ApiError::new(StatusCode::CONFLICT, "task_ended", error.to_string())
            }
            TaskError::Refused(_) => ApiError::conflict(error.to_string()),
            TaskError::IdempotencyConflict { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                error.to_string(),
            ),
            TaskError::BadIdempotencyKey => ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_idempotency_key",
                error.to_string(),
            ),
            TaskError::Stopping => ApiError::unavailable("stopping", error.to_string()),
            TaskError::BadKind | TaskError::Store(_) => ApiError::internal(error),
        }
    }
}

/// The `?wait=` of a request in seconds: `None` when absent; 400 when not a number, 422 when
/// outside 0 to 60.
pub fn wait_parameter(request: &ApiRequest) -> Result<Option<Duration>, ApiError> {
    let Some((_, text)) = request.query.iter().find(|(name, _)| name == "wait") else {
        return Ok(None);
    };
    let seconds: f64 = text.trim().parse().map_err(|_| {
        ApiError::bad_request(format!(
            "parameter wait must be a number of seconds, got {text:?}"
        ))
    })?;
    if !seconds.is_finite() || !(0.0..=MAX_WAIT_SECONDS).contains(&seconds) {
        return Err(ApiError::invalid_field(
            "wait",
            format!("must be between 0 and {MAX_WAIT_SECONDS} seconds"),
        ));
    }
    Ok(Some(Duration::from_secs_f64(seconds)))
}

/// The body of every answer about one task: `{"task": {...}}`.
pub fn task_body(task: &Task) -> Value {
    json!({ "task": task.to_json() })
}

/// Counts what each user holds open (event streams, waiting requests) against a cap.
#[derive(Debug, Default)]
pub struct UserSlots {
    held: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

/// One held place; dropping it gives it back.
pub struct UserSlot {
    held: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut held = self.held.locked();
        if let Some(count) = held.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.user);
            }
        }
    }
}

impl UserSlots {
    /// Takes a place for `user` unless they already hold `limit`; the 429 names `what`.
    pub fn take(&self, user: &str, limit: usize, what: &str) -> Result<UserSlot, ApiError> {
        let mut held = self.held.locked();
        let count = held.entry(user.to_string()).or_insert(0);
        if *count >= limit {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_open",
                format!("at most {limit} {what} may be open per user; close one first"),
            ));
        }
        *count += 1;
        Ok(UserSlot {
            held: self.held.clone(),
            user: user.to_string(),
        })
    }
}

/// Submits `new` and answers as the API contract says: `202 Accepted` with
/// `Location: /api/v1/task/<id>` and `{"task": {...}}`; with `?wait=<seconds>` it holds the
/// answer until the task ends (then `200`) or the wait is over (still `202`). The
/// `Idempotency-Key` header, when the handler set no key itself, names the task so a repeated
/// request from the same user within 24 h gets the first task back.
pub async fn respond_with_task(app: &App, request: &ApiRequest, mut new: NewTask) -> ApiResult {
    let wait = wait_parameter(request)?;
    // A waiting request holds a connection for up to its wait: each user has a few.
    let _waiting = match (wait, request.principal.as_ref()) {
        (Some(wait), Some(principal)) if !wait.is_zero() => Some(app.waiting_requests.take(
            &principal.user_id,
            app.config.limits.max_waiting_requests_per_user,
            "requests with ?wait=",
        )?),
        _ => None,
    };
    if new.idempotency_key.is_none()
        && let Some(value) = request.headers.get("idempotency-key")
    {
        let key = value.to_str().map_err(|_| TaskError::BadIdempotencyKey)?;
        new.idempotency_key = Some(key.to_string());
    }
    let (mut task, existing) = app.tasks.submit(new)?;
    if let Some(wait) = wait
        && !task.state.is_ended()
        && !wait.is_zero()
    {
        task = app.tasks.wait(&task.id, wait).await?;
    }
    let status = if wait.is_some() && task.state.is_ended() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut response = json_response(status, &task_body(&task));
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/task/{}", task.id)) {
        response
            .headers_mut()
            .insert(http::header::LOCATION, location);
    }
    if existing {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// True when the principal may see the task: admins see all, customers their own; an
/// instance-scoped credential sees only its instances' tasks.
pub fn may_see(principal: &Principal, task: &Task) -> bool {
    let scoped = principal.instance_scope.as_ref().is_none_or(|scope| {
        task.instance
            .is_some_and(|instance| scope.contains(&instance))
    });
    scoped && (principal.is_admin() || task.owner == principal.user_id)
}

/// The task named by the path, if the caller may see it; 404 otherwise.
fn visible_task(app: &App, request: &ApiRequest) -> Result<Task, ApiError> {
    let principal = request.principal()?;
    let id = request.param(0);
    match app.tasks.get(id)? {
        Some(task) if may_see(principal, &task) => Ok(task),
        _ => Err(ApiError::not_found(format!("task {id} does not exist"))),
    }
}

async fn list_tasks(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?;
    let page = Page::from_request(&request)?;
    let state = match request.field("state")? {
        None => None,
        Some(text) => Some(TaskState::parse(&text).ok_or_else(|| {
            ApiError::invalid_field(
                "state",
                format!(
                    "must be one of {}",
                    TaskState::ALL.map(TaskState::as_str).join(", ")
                ),
            )
        })?),
    };
    let filter = TaskFilter {
        owner: (!principal.is_admin()).then(|| principal.user_id.clone()),
        scope: principal.instance_scope.clone(),
        instance: request.number_field::<u32>("instance")?,
        state,
        kind: request.field("kind")?.filter(|kind| !kind.is_empty()),
    };
    let found = app.tasks.list(&filter, page.limit, page.offset)?;
    let data: Vec<TaskView<'_>> = found.tasks.iter().map(Task::view).collect();
    ok(&page.typed(&data, found.total as usize))
}

async fn get_task(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let task = visible_task(&app, &request)?;
    let log = app.tasks.logs(&task.id)?;
    let mut body = task_body(&task);
    body["log"] = serde_json::to_value(log).map_err(ApiError::internal)?;
    ok(&body)
}

async fn cancel_task(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let task = visible_task(&app, &request)?;
    let task = app.tasks.cancel(&task.id)?;
    ok(&task_body(&task))
}

fn sse_frame(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

fn event_frame(event: &TaskEvent) -> Bytes {
    match event {
        TaskEvent::State(task) => sse_frame("state", &task.to_json()),
        TaskEvent::Progress(progress) => sse_frame(
            "progress",
            &serde_json::to_value(progress).unwrap_or_default(),
        ),
        TaskEvent::Log(line) => sse_frame("log", &serde_json::to_value(line).unwrap_or_default()),
    }
}

async fn task_events(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let task = visible_task(&app, &request)?;
    let slot = app.event_streams.take(
        &request.principal()?.user_id,
        app.config.limits.max_event_streams_per_user,
        "event streams",
    )?;
    let mut watch = app.tasks.subscribe(&task.id)?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(64);
    tokio::spawn(async move {
        let _slot = slot;
        if sender
            .send(Ok(sse_frame("state", &watch.task.to_json())))
            .await
            .is_err()
        {
            return;
        }
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.tick().await;
        // Ends the stream soon after the server starts stopping, so open streams do not hold
        // a graceful shutdown up.
        let mut serving = tokio::time::interval(Duration::from_millis(250));
        let mut seen_ready = app.ready.load(Ordering::Acquire);
        loop {
            tokio::select! {
                event = watch.next() => match event {
                    Some(event) => {
                        if sender.send(Ok(event_frame(&event))).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                _ = keep_alive.tick() => {
                    if sender.send(Ok(Bytes::from_static(b": keep-alive\n\n"))).await.is_err() {
                        return;
                    }
                }
                _ = serving.tick() => {
                    let ready = app.ready.load(Ordering::Acquire);
                    if seen_ready && !ready {
                        return;
                    }
                    seen_ready |= ready;
                }
                _ = sender.closed() => return,
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let mut response = warp::reply::stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}
