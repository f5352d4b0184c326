//! Instance routes: the mapping from HTTP to the calls of [`crate::instances`] and back. A
//! handler reads the request, checks the caller's rights on the instance, calls the domain,
//! and answers with the task or the JSON view; [`instance_error`] is the one mapping of the
//! domain's errors to HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::list::Page;
use super::tasks::respond_with_task;
use super::{Access, ApiError, ApiRequest, ApiResult, RouteTable, ok};
use crate::App;
use crate::auth::{Principal, parse_instance_id, require_instance};
use crate::instances::{
    self, InstanceError, InstanceState, operations, parse_create, power_action,
};
use crate::proxmox::registry::RegistryError;
use crate::proxmox::types::ContainerStatus;
use crate::store::Table;
use crate::store::records::{InstanceRecord, UserRecord};

pub fn routes(table: &mut RouteTable) {
    use Access::Authenticated;
    table.add(
        Method::GET,
        "/api/v1/instance",
        Authenticated,
        "instances",
        "List instances with live status (customer: own; admin: all, filter user)",
        |a, r| Box::pin(list_instances(a, r)),
    );
    table.add(
        Method::POST,
        "/api/v1/instance",
        Authenticated,
        "instances",
        "Create an instance; the VMID is allocated safely (task)",
        |a, r| Box::pin(create_instance(a, r, None)),
    );
    table.add(
        Method::GET,
        "/api/v1/instance/{id}",
        Authenticated,
        "instances",
        "One instance: record, Proxmox config, live status, agent status",
        |a, r| Box::pin(get_instance(a, r)),
    );
    table.add(
        Method::POST,
        "/api/v1/instance/{id}",
        Authenticated,
        "instances",
        "Create an instance with this VMID (task); 409 if taken",
        |a, r| {
            Box::pin(async move {
                let id = parse_instance_id(r.param(0))?;
                create_instance(a, r, Some(id)).await
            })
        },
    );
    table.add(
        Method::PUT,
        "/api/v1/instance/{id}",
        Authenticated,
        "instances",
        "Change cpu, memory, swap, disk (grow only) or hostname (task)",
        |a, r| Box::pin(change_instance(a, r)),
    );
    table.add(
        Method::DELETE,
        "/api/v1/instance/{id}",
        Authenticated,
        "instances",
        "Stop if running, destroy and purge the instance (task)",
        |a, r| Box::pin(delete_instance(a, r)),
    );
    table.add(
        Method::POST,
        "/api/v1/instance/{id}/status/{action}",
        Authenticated,
        "instances",
        "start, stop, shutdown, reboot, suspend or unsuspend (task)",
        |a, r| Box::pin(instance_action(a, r)),
    );
}

// --- Errors ----------------------------------------------------------------------------------

pub(crate) fn registry_error(error: RegistryError) -> ApiError {
    instance_error(error.into())
}

fn conflict(code: &'static str, error: &InstanceError) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, code, error.to_string())
}

/// The HTTP form of an instance error: 422 names the bad fields, 409 a conflict with the
/// instance's state, the VMID or the quota, 503 a missing node or VMID, 502/504 Proxmox.
pub fn instance_error(error: InstanceError) -> ApiError {
    match error {
        InstanceError::Invalid(fields) => {
            let fields: Vec<(&str, String)> = fields
                .iter()
                .map(|(name, reason)| (name.as_str(), reason.clone()))
                .collect();
            ApiError::invalid(&fields)
        }
        InstanceError::UnknownNode(node) => {
            ApiError::invalid_field("node", format!("node {node:?} is not registered"))
        }
        InstanceError::Exists(_) | InstanceError::Taken(_) => conflict("instance_exists", &error),
        InstanceError::Quota {
            user: _,
            exceeded: ref refused,
        } => conflict("quota_exceeded", &error).with_details(json!({
            "quota": refused.quota,
            "exceeded": refused.exceeded,
        })),
        InstanceError::Suspended(_) => conflict("instance_suspended", &error),
        InstanceError::Creating(_) | InstanceError::Destroying(_) => {
            conflict("instance_busy", &error)
        }
        InstanceError::Failed(_) => conflict("instance_failed", &error),
        InstanceError::NoVmid(_) => ApiError::unavailable("no_vmid", error.to_string()),
        InstanceError::NoNodes => ApiError::unavailable(
            "no_nodes",
            "no Proxmox node is registered; an admin registers one with POST /api/v1/node",
        ),
        InstanceError::NoNodeOnline => ApiError::unavailable("no_nodes", error.to_string()),
        InstanceError::Encode(error) => ApiError::internal(error),
        InstanceError::Task(error) => error.into(),
        InstanceError::Proxmox(error) => error.into(),
        InstanceError::Store(error) => error.into(),
    }
}

impl From<InstanceError> for ApiError {
    fn from(error: InstanceError) -> ApiError {
        instance_error(error)
    }
}

// --- Input -----------------------------------------------------------------------------------

/// The request's input as a JSON object: the body, or the query string without a body.
fn input_object(request: &ApiRequest) -> Result<Map<String, Value>, ApiError> {
    match request.json_body()? {
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        None => Ok(request
            .query
            .iter()
            .filter(|(key, _)| key != "wait")
            .map(|(key, value)| (key.clone(), Value::String(value.clone())))
            .collect()),
    }
}

// --- Ownership -------------------------------------------------------------------------------

fn user_record(app: &App, id: &str) -> Result<Option<UserRecord>, ApiError> {
    if let Some(user) = app.store.get::<UserRecord>(Table::Users, id)? {
        return Ok(Some(user));
    }
    // A username is accepted too (the instance API names users by username).
    let id: Option<String> = app.store.get(Table::UsernameIndex, &id.to_lowercase())?;
    match id {
        Some(id) => Ok(app.store.get(Table::Users, &id)?),
        None => Ok(None),
    }
}

/// The owner of a new instance: the caller, or for an admin the named user.
fn owner_of(app: &App, principal: &Principal, named: Option<&str>) -> Result<UserRecord, ApiError> {
    let Some(named) = named else {
        return user_record(app, &principal.user_id)?
            .ok_or_else(|| ApiError::unauthorized("the caller's account no longer exists"));
    };
    let user = user_record(app, named)?;
    match user {
        Some(user) if principal.is_admin() || user.id == principal.user_id => Ok(user),
        Some(_) => Err(ApiError::forbidden(
            "customers create instances for themselves only",
        )),
        None if principal.is_admin() => Err(ApiError::invalid_field(
            "user",
            format!("no user {named:?}"),
        )),
        None => Err(ApiError::forbidden(
            "customers create instances for themselves only",
        )),
    }
}

/// Refuses customers' changes to a suspended instance, and every change while it is being
/// created or destroyed.
pub(crate) fn check_changeable(
    principal: &Principal,
    record: &InstanceRecord,
) -> Result<(), ApiError> {
    instances::records::check_changeable(principal.is_admin(), record).map_err(instance_error)
}

// --- Views -----------------------------------------------------------------------------------

/// The API form of an instance, with live facts when they are known.
pub fn instance_json(record: &InstanceRecord, live: Option<&ContainerStatus>) -> Value {
    let status = match (InstanceState::of(record), live) {
        (_, Some(live)) => live.status.clone(),
        (Some(InstanceState::Creating), None) => InstanceState::Creating.to_string(),
        _ => "unknown".into(),
    };
    let status = if record.suspended && status == "running" {
        "suspended".to_string()
    } else {
        status
    };
    let mut value = json!({
        "id": record.id,
        "hostname": record.hostname,
        "user": record.user,
        "node": record.node,
        "status": status,
        "state": record.state,
        "suspended": record.suspended,
        "cpu": record.cpu,
        "memory": record.memory,
        "swap": record.swap,
        "disk": record.disk,
        "template": record.template,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    });
    if let Some(live) = live {
        value["live"] = json!({
            "status": live.status,
            "lock": live.lock,
            "cpu": live.cpu,
            "cpus": live.cpus,
            "mem": live.mem,
            "maxmem": live.maxmem,
            "swap": live.swap,
            "maxswap": live.maxswap,
            "disk": live.disk,
            "maxdisk": live.maxdisk,
            "netin": live.netin,
            "netout": live.netout,
            "uptime": live.uptime,
        });
    }
    value
}

/// The agent's status for `GET /instance/<id>`. The agent channel plugs in here; until it
/// exists every instance reports `never`.
pub fn agent_status_hook(app: &App, id: u32) -> Value {
    let _ = (app, id);
    json!({ "connected": false, "state": "never" })
}

async fn list_instances(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?;
    let page = Page::from_request(&request)?;
    let filter_user = request.field("user")?;
    let records: Vec<(String, InstanceRecord)> = app.store.list(Table::Instances)?;
    let wanted_user = match (&filter_user, principal.is_admin()) {
        (Some(named), true) => Some(
            user_record(&app, named)?
                .map(|user| user.id)
                .unwrap_or_else(|| named.clone()),
        ),
        (_, true) => None,
        (_, false) => Some(principal.user_id.clone()),
    };
    let visible: Vec<InstanceRecord> = records
        .into_iter()
        .map(|(_, record)| record)
        .filter(|record| wanted_user.as_ref().is_none_or(|user| &record.user == user))
        .filter(|record| {
            principal
                .instance_scope
                .as_ref()
                .is_none_or(|scope| scope.contains(&record.id))
        })
        .collect();
    let total = visible.len();
    let shown: Vec<InstanceRecord> = visible
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .collect();
    // One list call per node gives the live status of every instance shown.
    let nodes: Vec<String> = {
        let mut nodes: Vec<String> = shown.iter().map(|record| record.node.clone()).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    };
    let lookups = nodes.iter().map(|node| {
        let app = app.clone();
        async move {
            let client = app.proxmox.client(&app.store, node).ok()?;
            client.containers(node).await.ok()
        }
    });
    let answers = futures_util::future::join_all(lookups).await;
    let mut live: HashMap<(String, u32), ContainerStatus> = HashMap::new();
    for (node, answer) in nodes.iter().zip(answers) {
        for status in answer.unwrap_or_default() {
            live.insert((node.clone(), status.vmid), status);
        }
    }
    let data: Vec<Value> = shown
        .iter()
        .map(|record| instance_json(record, live.get(&(record.node.clone(), record.id))))
        .collect();
    ok(&page.body(&data, total))
}

async fn get_instance(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?;
    let id = parse_instance_id(request.param(0))?;
    let record = require_instance(&app, principal, id)?;
    let mut live = None;
    let mut config = Value::Null;
    let mut proxmox_error = Value::Null;
    match app.proxmox.client(&app.store, &record.node) {
        Ok(client) => {
            let (status, configuration) = tokio::join!(
                client.container_status(&record.node, id),
                client.container_config(&record.node, id)
            );
            match status {
                Ok(status) => live = Some(status),
                Err(error) => proxmox_error = json!(error.proxmox_message()),
            }
            if let Ok(configuration) = configuration {
                config = Value::Object(configuration);
            }
        }
        Err(error) => proxmox_error = json!(error.to_string()),
    }
    let mut value = instance_json(&record, live.as_ref());
    value["config"] = config;
    value["agent"] = agent_status_hook(&app, id);
    if !proxmox_error.is_null() {
        value["proxmox_error"] = proxmox_error;
    }
    ok(&json!({ "instance": value }))
}

async fn create_instance(app: Arc<App>, request: ApiRequest, wanted: Option<u32>) -> ApiResult {
    let principal = request.principal()?.clone();
    let create = parse_create(input_object(&request)?)?;
    let owner = owner_of(&app, &principal, create.user.as_deref())?;
    if let Some(key) = request.headers.get("idempotency-key")
        && let Ok(key) = key.to_str()
        && let Some(task) = operations::replay_create(&app, &principal.user_id, key, wanted)?
    {
        return respond_with_task(&app, &request, task).await;
    }
    let reserved =
        operations::reserve_create(&app, &principal.user_id, &owner, create, wanted).await?;
    let answer = respond_with_task(&app, &request, reserved.task).await;
    let replayed = answer
        .as_ref()
        .is_ok_and(|response| response.headers().contains_key("idempotent-replayed"));
    if answer.is_err() || replayed {
        // No task took this reservation: release it.
        operations::release(&app, reserved.vmid)?;
    }
    answer
}

async fn change_instance(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?.clone();
    let id = parse_instance_id(request.param(0))?;
    let record = require_instance(&app, &principal, id)?;
    let fields = input_object(&request)?;
    let task = operations::change(
        &app,
        &principal.user_id,
        principal.is_admin(),
        &record,
        fields,
    )?;
    respond_with_task(&app, &request, task).await
}

async fn delete_instance(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?.clone();
    let id = parse_instance_id(request.param(0))?;
    let record = require_instance(&app, &principal, id)?;
    let (task, restore) =
        operations::start_destroy(&app, &principal.user_id, principal.is_admin(), &record)?;
    let answer = respond_with_task(&app, &request, task).await;
    if answer.is_err() {
        restore.undo(&app)?;
    }
    answer
}

async fn instance_action(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?.clone();
    let id = parse_instance_id(request.param(0))?;
    let record = require_instance(&app, &principal, id)?;
    let name = request.param(1).to_string();
    if power_action(&name).is_none() {
        return Err(ApiError::not_found(format!(
            "no action {name:?}; actions are start, stop, shutdown, reboot, suspend, unsuspend"
        )));
    }
    if matches!(name.as_str(), "suspend" | "unsuspend" | "resume") && !principal.is_admin() {
        return Err(ApiError::forbidden(
            "only an admin suspends or unsuspends an instance",
        ));
    }
    let task = operations::power(
        &app,
        &principal.user_id,
        principal.is_admin(),
        &record,
        name,
    )?;
    respond_with_task(&app, &request, task).await
}
