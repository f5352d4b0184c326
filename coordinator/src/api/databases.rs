//! Databases inside an instance: MariaDB and PostgreSQL, listed from the agent at
//! once; create, password change and drop as agent tasks; dumps streamed from the agent to the
//! HTTP client as they are produced.
//!
//! A dump is a task too (`database.dump`, its result carries the byte count and SHA-256). Its
//! bytes flow agent → QUIC data stream → a small bounded channel → the HTTP response, so the
//! coordinator holds a few chunks at most and a slow client slows the dump program itself.
//! The response ends normally only when the task succeeded and the SHA-256 and length the
//! agent reports match what went out; otherwise the body breaks off with an error, so a dump
//! that failed midway is never served as a complete one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use protocol::names::database::{check_database, check_password, check_user};
use protocol::{DatabaseEngine, DatabaseInfo, ErrorCode, Operation, OperationOutput, Secret};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use warp::Reply as _;

use super::agent_tasks::{agent_error, submit, task_error};
use super::list::Page;
use super::{Access, ApiError, ApiRequest, ApiResult, RouteTable, ok};
use crate::App;
use crate::agentwork;
use crate::auth::{parse_instance_id, require_instance};
use crate::store::records::InstanceRecord;
use crate::tasks::TaskState;
use crate::tasks::kinds::{DATABASE_CREATE, DATABASE_DROP, DATABASE_DUMP, DATABASE_PASSWORD};

/// How long a dump may run in all.
const DUMP_DEADLINE: Duration = Duration::from_secs(6 * 3600);
/// How long the agent has to start sending a dump.
const DUMP_START: Duration = Duration::from_secs(60);
/// How long the agent has to report a dump's result after its last byte.
const DUMP_RESULT: Duration = Duration::from_secs(60);
/// The largest piece read off the data stream at once.
const CHUNK: usize = 64 * 1024;

pub fn routes(table: &mut RouteTable) {
    use Access::Authenticated;
    table.add(
        Method::GET,
        "/api/v1/instance/{id}/database",
        Authenticated,
        "databases",
        "Databases of the instance's MariaDB and PostgreSQL: name, engine, size, owner",
        |a, r| Box::pin(list(a, r)),
    );
    table.add(
        Method::GET,
        "/api/v1/instance/{id}/database/{databaseid}",
        Authenticated,
        "databases",
        "One database; with action=dump (query or JSON body) a streamed dump instead",
        |a, r| Box::pin(get(a, r)),
    );
    table.add(
        Method::POST,
        "/api/v1/instance/{id}/database/{databaseid}",
        Authenticated,
        "databases",
        "Create a database and its user {engine, user?, password} (task)",
        |a, r| Box::pin(create(a, r)),
    );
    table.add(
        Method::PUT,
        "/api/v1/instance/{id}/database/{databaseid}",
        Authenticated,
        "databases",
        "Change the password of the database's user {password, engine?, user?} (task)",
        |a, r| Box::pin(change_password(a, r)),
    );
    table.add(
        Method::DELETE,
        "/api/v1/instance/{id}/database/{databaseid}",
        Authenticated,
        "databases",
        "Drop the database and its user {engine?} (task)",
        |a, r| Box::pin(drop_database(a, r)),
    );
    table.add(
        Method::POST,
        "/api/v1/instance/{id}/database/{databaseid}/dump",
        Authenticated,
        "databases",
        "Stream a dump (mysqldump --single-transaction or pg_dump); Accept-Encoding: zstd compresses it",
        |a, r| Box::pin(dump_route(a, r)),
    );
}

/// Reads an engine name.
fn parse_engine(text: &str) -> Result<DatabaseEngine, ApiError> {
    match text.to_ascii_lowercase().as_str() {
        "mariadb" | "mysql" => Ok(DatabaseEngine::MariaDb),
        "postgresql" | "postgres" | "pgsql" => Ok(DatabaseEngine::PostgreSql),
        _ => Err(ApiError::invalid_field(
            "engine",
            format!("{text:?} is neither mariadb nor postgresql"),
        )),
    }
}

fn engine_field(request: &ApiRequest) -> Result<Option<DatabaseEngine>, ApiError> {
    request
        .field("engine")?
        .as_deref()
        .map(parse_engine)
        .transpose()
}

fn name_error(field: &str, error: protocol::names::database::NameError) -> ApiError {
    ApiError::invalid_field(field, error.to_string())
}

/// The instance named by the path, checked for the caller.
fn instance(app: &App, request: &ApiRequest) -> Result<(u32, InstanceRecord), ApiError> {
    let principal = request.principal()?;
    let id = parse_instance_id(request.param(0))?;
    Ok((id, require_instance(app, principal, id)?))
}

/// Every database of both engines, and the engines the agent found; an engine that is not
/// installed (or not running) has none.
async fn all_databases(
    app: &App,
    id: u32,
) -> Result<(Vec<DatabaseInfo>, Vec<DatabaseEngine>), ApiError> {
    let mut databases = Vec::new();
    let mut engines = Vec::new();

    for engine in [DatabaseEngine::MariaDb, DatabaseEngine::PostgreSql] {
        match app
            .channel
            .call(
                id,
                Operation::DatabaseList { engine },
                agentwork::CALL_DEADLINE,
            )
            .await
        {
            Ok(OperationOutput::Databases(found)) => {
                engines.push(engine);
                databases.extend(found);
            }
            Ok(other) => {
                return Err(ApiError::internal(format!(
                    "the agent answered a database list with {other:?}"
                )));
            }
            Err(crate::channel::ChannelError::Operation(error))
                if error.code == ErrorCode::Unavailable =>
            {
                // The engine is not installed on this instance: it has no databases.
            }
            Err(crate::channel::ChannelError::Operation(error)) => {
                return Err(agent_error(&error));
            }
            Err(other) => return Err(super::agents::channel_error(other)),
        }
    }
    databases
        .sort_by(|a, b| (a.name.as_str(), a.engine as u8).cmp(&(b.name.as_str(), b.engine as u8)));
    Ok((databases, engines))
}

/// The database `name`, of `engine` when given: 404 when there is none, 409 when both engines
/// have one and the caller did not say which.
async fn find(
    app: &App,
    id: u32,
    name: &str,
    engine: Option<DatabaseEngine>,
) -> Result<DatabaseInfo, ApiError> {
    let found: Vec<DatabaseInfo> = all_databases(app, id)
        .await?
        .0
        .into_iter()
        .filter(|database| database.name == name && engine.is_none_or(|e| e == database.engine))
        .collect();
    match found.len() {
        0 => Err(ApiError::not_found(format!(
            "instance {id} has no database {name}"
        ))),
        1 => Ok(found.into_iter().next().expect("one")),
        _ => Err(ApiError::new(
            StatusCode::CONFLICT,
            "ambiguous_database",
            format!("both engines have a database {name}; name the engine"),
        )),
    }
}

async fn list(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, _) = instance(&app, &request)?;
    let page = Page::from_request(&request)?;
    let engine = engine_field(&request)?;
    let (databases, engines) = all_databases(&app, id).await?;
    let databases: Vec<Value> = databases
        .iter()
        .filter(|database| engine.is_none_or(|e| e == database.engine))
        .map(agentwork::database_json)
        .collect();
    let mut body = page.slice(&databases);
    body["engines"] = serde_json::to_value(engines).map_err(ApiError::internal)?;
    ok(&body)
}

async fn get(app: Arc<App>, request: ApiRequest) -> ApiResult {
    match request.field("action")?.as_deref() {
        None => {}
        Some("dump") => return dump_route(app, request).await,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "action",
                format!("{other:?} is not an action; the only one is dump"),
            ));
        }
    }
    let (id, _) = instance(&app, &request)?;
    let name = request.param(1).to_string();
    let engine = engine_field(&request)?;
    let database = find(&app, id, &name, engine).await?;
    ok(&agentwork::database_json(&database))
}

#[derive(Debug, Deserialize)]
struct CreateInput {
    engine: Option<String>,
    user: Option<String>,
    password: Option<Secret>,
    #[serde(flatten)]
    _rest: serde_json::Map<String, Value>,
}

/// The request's fields must be known ones (the dispatcher has taken the credential fields
/// out).
fn refuse_unknown(rest: &serde_json::Map<String, Value>) -> Result<(), ApiError> {
    match rest.keys().next() {
        Some(key) => Err(ApiError::invalid_field(
            key,
            "is not a field of this request",
        )),
        None => Ok(()),
    }
}

async fn create(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, record) = instance(&app, &request)?;
    super::instances::check_changeable(request.principal()?, &record)?;
    let name = request.param(1).to_string();
    let input: CreateInput = request.input()?;
    refuse_unknown(&input._rest)?;
    let engine =
        parse_engine(input.engine.as_deref().ok_or_else(|| {
            ApiError::invalid_field("engine", "is required: mariadb or postgresql")
        })?)?;
    let user = input.user.unwrap_or_else(|| name.clone());
    let password = input
        .password
        .ok_or_else(|| ApiError::invalid_field("password", "is required"))?;
    let mut fields = Vec::new();
    if let Err(error) = check_database(engine, &name) {
        fields.push(("databaseid", error.to_string()));
    }
    if let Err(error) = check_user(engine, &user) {
        fields.push(("user", error.to_string()));
    }
    if let Err(error) = check_password(&password) {
        fields.push(("password", error.to_string()));
    }
    if !fields.is_empty() {
        return Err(ApiError::invalid(&fields));
    }
    let operation = Operation::DatabaseCreate {
        engine,
        name,
        user,
        password,
    };
    submit(&app, &request, id, DATABASE_CREATE, operation).await
}

#[derive(Debug, Deserialize)]
struct PasswordInput {
    engine: Option<String>,
    user: Option<String>,
    password: Option<Secret>,
    #[serde(flatten)]
    _rest: serde_json::Map<String, Value>,
}

async fn change_password(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, record) = instance(&app, &request)?;
    super::instances::check_changeable(request.principal()?, &record)?;
    let name = request.param(1).to_string();
    let input: PasswordInput = request.input()?;
    refuse_unknown(&input._rest)?;
    let password = input
        .password
        .ok_or_else(|| ApiError::invalid_field("password", "is required"))?;
    check_password(&password).map_err(|error| name_error("password", error))?;
    let engine = input.engine.as_deref().map(parse_engine).transpose()?;
    // The user is the database's owner unless the caller names one.
    let (engine, user) = match (engine, input.user) {
        (Some(engine), Some(user)) => (engine, user),
        (engine, user) => {
            let database = find(&app, id, &name, engine).await?;
            (database.engine, user.unwrap_or(database.owner))
        }
    };
    check_user(engine, &user).map_err(|error| name_error("user", error))?;
    let operation = Operation::DatabaseChangePassword {
        engine,
        user,
        password,
    };
    submit(&app, &request, id, DATABASE_PASSWORD, operation).await
}

async fn drop_database(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, record) = instance(&app, &request)?;
    super::instances::check_changeable(request.principal()?, &record)?;
    let name = request.param(1).to_string();
    let engine = match engine_field(&request)? {
        Some(engine) => engine,
        None => find(&app, id, &name, None).await?.engine,
    };
    check_database(engine, &name).map_err(|error| name_error("databaseid", error))?;
    let operation = Operation::DatabaseDrop { engine, name };
    submit(&app, &request, id, DATABASE_DROP, operation).await
}

/// Whether the client takes a zstd-compressed body.
fn accepts_zstd(request: &ApiRequest) -> bool {
    request.header("accept-encoding").is_some_and(|value| {
        value.split(',').any(|part| {
            let mut pieces = part.trim().split(';');
            let coding = pieces.next().unwrap_or("").trim();
            let refused = pieces.any(|parameter| {
                parameter
                    .trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            coding.eq_ignore_ascii_case("zstd") && !refused
        })
    })
}

async fn dump_route(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, _) = instance(&app, &request)?;
    let principal = request.principal()?;
    let name = request.param(1).to_string();
    let engine = match engine_field(&request)? {
        Some(engine) => engine,
        None => find(&app, id, &name, None).await?.engine,
    };
    check_database(engine, &name).map_err(|error| name_error("databaseid", error))?;
    let content_encoding = accepts_zstd(&request);
    let compress_zstd = content_encoding
        || match request.field("compress")?.as_deref() {
            None | Some("none") => false,
            Some("zstd") => true,
            Some(other) => {
                return Err(ApiError::invalid_field(
                    "compress",
                    format!("{other:?} is neither none nor zstd"),
                ));
            }
        };
    if !app.channel.is_connected(id) {
        return Err(ApiError::unavailable(
            "agent_offline",
            format!("the agent of instance {id} is not connected; a dump needs it now"),
        ));
    }
    let operation = Operation::DatabaseDump {
        engine,
        name: name.clone(),
        compress_zstd,
    };
    let new = agentwork::new_task(&principal.user_id, id, DATABASE_DUMP, &operation)
        .deadline(DUMP_DEADLINE);
    let (task, _) = app.tasks.submit(new)?;
    let stream = tokio::select! {
        stream = app.dumps.take(&task.id) => stream,
        ended = app.tasks.wait(&task.id, DUMP_START) => {
            app.dumps.forget(&task.id);
            let task = ended?;
            return Err(match (&task.state, &task.error) {
                (_, Some(error)) => task_error(&error.code, &error.message),
                (state, None) if !state.is_ended() => {
                    let _ = app.tasks.cancel(&task.id);
                    ApiError::gateway_timeout("the agent did not start the dump in time")
                }
                _ => ApiError::internal("the dump task ended without sending data"),
            });
        }
    };
    let Some(stream) = stream else {
        return Err(ApiError::internal("the dump's data stream was lost"));
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(pump(app.clone(), task.id.clone(), stream, sender));
    let body = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let mut response = warp::reply::stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let extension = match (engine, compress_zstd && !content_encoding) {
        (_, true) => "sql.zst",
        _ => "sql",
    };
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"{name}.{extension}\""))
    {
        headers.insert(http::header::CONTENT_DISPOSITION, value);
    }
    if content_encoding {
        headers.insert(
            http::header::CONTENT_ENCODING,
            HeaderValue::from_static("zstd"),
        );
    }
    if let Ok(value) = HeaderValue::from_str(&task.id) {
        headers.insert("x-task-id", value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("/api/v1/task/{}", task.id)) {
        headers.insert(http::header::LOCATION, value);
    }
    Ok(response)
}

/// Moves the dump from its data stream to the response, hashing it, and ends the response
/// cleanly only when the task's result vouches for every byte.
async fn pump(
    app: Arc<App>,
    task: String,
    mut stream: quinn::RecvStream,
    sender: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let broken = |message: String| Err(std::io::Error::other(message));
    loop {
        match stream.read_chunk(CHUNK, true).await {
            Ok(Some(chunk)) => {
                hasher.update(&chunk.bytes);
                total += chunk.bytes.len() as u64;
                if sender.send(Ok(chunk.bytes)).await.is_err() {
                    // The client went away: stop the agent's dump and end the task.
                    let _ = stream.stop(quinn::VarInt::from_u32(0));
                    let _ = app.tasks.cancel(&task);
                    return;
                }
            }
            Ok(None) => break,
            Err(error) => {
                let outcome = app.tasks.wait(&task, Duration::from_secs(5)).await;
                let reason = match outcome.ok().and_then(|task| task.error) {
                    Some(error) => error.message,
                    None => error.to_string(),
                };
                let _ = sender
                    .send(broken(format!("the dump broke off: {reason}")))
                    .await;
                return;
            }
        }
    }
    let digest = hex::encode(hasher.finalize());
    let ended = app.tasks.wait(&task, DUMP_RESULT).await;
    let verdict = match ended {
        Ok(task) if task.state == TaskState::Succeeded => {
            let result = task.result.unwrap_or(Value::Null);
            let bytes = result.get("bytes").and_then(Value::as_u64);
            let sha256 = result.get("sha256").and_then(Value::as_str);
            if bytes == Some(total) && sha256 == Some(digest.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "the agent reports {bytes:?} bytes with SHA-256 {sha256:?}, but {total} bytes \
                     with SHA-256 {digest} arrived"
                ))
            }
        }
        Ok(task) => Err(task
            .error
            .map(|error| error.message)
            .unwrap_or_else(|| format!("the dump task is {}", task.state.as_str()))),
        Err(error) => Err(error.to_string()),
    };
    if let Err(reason) = verdict {
        tracing::warn!(task, %reason, "a dump failed after its data");
        let _ = sender
            .send(broken(format!("the dump failed: {reason}")))
            .await;
    }
}
