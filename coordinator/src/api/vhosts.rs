//! Vhosts of an instance, served by the instance's nginx through its agent: the list
//! and one vhost come from the agent at once; create, change and delete are agent tasks, each one
//! tested, reversible change of the whole web server on the instance.
//!
//! A vhost is typed data checked here with the protocol's rules (422 with one reason per field)
//! before a task exists; the agent checks again before it renders. The administrator's `extra`
//! block has its own route and is shown to administrators only.

use std::path::Path;
use std::sync::Arc;

use http::Method;
use protocol::web::{DEFAULT_WEB_ROOT, Presence, ValidationError, VhostId, VhostSpec, check_extra};
use protocol::{Operation, OperationOutput};
use serde::Deserialize;
use serde_json::Value;

use super::agent_tasks::{agent_error, submit};
use super::list::Page;
use super::{Access, ApiError, ApiRequest, ApiResult, RouteTable, ok};
use crate::App;
use crate::agentwork::{self, AgentWorkError, results::vhost_json};
use crate::auth::{parse_instance_id, require_instance};
use crate::store::Table;
use crate::store::records::{AcmeCertificateRecord, InstanceRecord};
use crate::tasks::kinds::{VHOST_CHANGE, VHOST_CREATE, VHOST_DELETE, VHOST_EXTRA};

pub fn routes(table: &mut RouteTable) {
    use Access::{Admin, Authenticated};
    table.add(
        Method::GET,
        "/api/v1/instance/{id}/vhost",
        Authenticated,
        "vhosts",
        "The instance's vhosts as applied, each with its version and hash",
        |a, r| Box::pin(list(a, r)),
    );
    let one = "/api/v1/instance/{id}/vhost/{vhostid}";
    table.add(
        Method::GET,
        one,
        Authenticated,
        "vhosts",
        "One vhost with its applied version, hash and remembered versions",
        |a, r| Box::pin(get(a, r)),
    );
    table.add(
        Method::POST,
        one,
        Authenticated,
        "vhosts",
        "Create a vhost {server_names, root | proxy_pass, php?, redirects?, logs?, limits?} (task)",
        |a, r| Box::pin(put(a, r, Presence::New)),
    );
    table.add(
        Method::PUT,
        one,
        Authenticated,
        "vhosts",
        "Replace a vhost's spec; its certificate, cache and administrator's block stay (task)",
        |a, r| Box::pin(put(a, r, Presence::Existing)),
    );
    table.add(
        Method::DELETE,
        one,
        Authenticated,
        "vhosts",
        "Remove a vhost with its certificate and cache (task)",
        |a, r| Box::pin(delete(a, r)),
    );
    table.add(
        Method::PUT,
        "/api/v1/instance/{id}/vhost/{vhostid}/extra",
        Admin,
        "vhosts",
        "Set (a string) or clear (null) the administrator's nginx block of a vhost (task)",
        |a, r| Box::pin(set_extra(a, r)),
    );
}

/// The instance named by the path, checked for the caller.
pub(crate) fn instance(app: &App, request: &ApiRequest) -> Result<(u32, InstanceRecord), ApiError> {
    let principal = request.principal()?;
    let id = parse_instance_id(request.param(0))?;
    Ok((id, require_instance(app, principal, id)?))
}

/// The instance and the vhost id named by the path; a malformed vhost id is a 422.
pub(crate) fn target(
    app: &App,
    request: &ApiRequest,
) -> Result<(u32, InstanceRecord, VhostId), ApiError> {
    let (id, record) = instance(app, request)?;
    let vhost = VhostId::parse(request.param(1)).map_err(|_| {
        ApiError::invalid_field(
            "vhostid",
            "a vhost id is 1 to 63 lower-case letters, digits or '-', not starting with '-'",
        )
    })?;
    Ok((id, record, vhost))
}

/// Checks that the caller may change the instance now (not suspended, not busy).
pub(crate) fn changeable(request: &ApiRequest, record: &InstanceRecord) -> Result<(), ApiError> {
    super::instances::check_changeable(request.principal()?, record)
}

/// The JSON body as an object (the dispatcher has taken the credential fields out); no body is
/// an empty object.
pub(crate) fn body_object(
    request: &ApiRequest,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    match request.json_body()? {
        None => Ok(serde_json::Map::new()),
        Some(Value::Object(object)) => Ok(object.clone()),
        Some(_) => Err(ApiError::bad_request("the body must be a JSON object")),
    }
}

/// A typed value from the body object; a wrong shape is a 400, as the API contract says.
pub(crate) fn from_body<T: serde::de::DeserializeOwned>(
    object: serde_json::Map<String, Value>,
) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(object)).map_err(|error| {
        ApiError::new(
            http::StatusCode::BAD_REQUEST,
            "bad_input",
            format!("the input does not have the expected shape: {error}"),
        )
    })
}

/// A 422 with every refused field; several reasons for one field are joined.
pub(crate) fn invalid(errors: &ValidationError) -> ApiError {
    let mut fields: Vec<(&str, String)> = Vec::new();
    for error in &errors.fields {
        match fields.iter_mut().find(|(name, _)| *name == error.field) {
            Some((_, reason)) => {
                reason.push_str("; ");
                reason.push_str(&error.reason);
            }
            None => fields.push((error.field.as_str(), error.reason.clone())),
        }
    }
    ApiError::invalid(&fields)
}

/// The API form of an agent's failure: its per-field reasons as a 422 when it has them.
pub(crate) fn agent_failure(error: &protocol::ErrorData) -> ApiError {
    match ValidationError::from_error_data(error) {
        Some(fields) => invalid(&fields),
        None => agent_error(error),
    }
}

/// Asks the agent now, with per-field reasons kept.
pub(crate) async fn call(
    app: &App,
    instance: u32,
    operation: Operation,
) -> Result<OperationOutput, ApiError> {
    agentwork::call(app, instance, operation)
        .await
        .map_err(|error| match error {
            AgentWorkError::Agent(error) => agent_failure(&error),
            other => ApiError::from(other),
        })
}

/// A vhost spec from the body, checked with the protocol's rules.
fn parse_spec(request: &ApiRequest) -> Result<VhostSpec, ApiError> {
    let spec: VhostSpec = from_body(body_object(request)?)?;
    spec.validate(Path::new(DEFAULT_WEB_ROOT))
        .map_err(|errors| invalid(&errors))?;
    Ok(spec)
}

fn unexpected(what: &str, output: &OperationOutput) -> ApiError {
    ApiError::internal(format!("the agent answered {what} with {output:?}"))
}

async fn list(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, _) = instance(&app, &request)?;
    let page = Page::from_request(&request)?;
    let admin = request.principal()?.is_admin();
    match call(&app, id, Operation::VhostList).await? {
        OperationOutput::Vhosts(vhosts) => {
            let items: Vec<Value> = vhosts
                .iter()
                .map(|vhost| vhost_json(vhost, admin))
                .collect();
            ok(&page.slice(&items))
        }
        other => Err(unexpected("a vhost list", &other)),
    }
}

async fn get(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, _, vhost) = target(&app, &request)?;
    let admin = request.principal()?.is_admin();
    match call(&app, id, Operation::VhostGet { id: vhost }).await? {
        OperationOutput::Vhost(info) => ok(&vhost_json(&info, admin)),
        other => Err(unexpected("a vhost read", &other)),
    }
}

async fn put(app: Arc<App>, request: ApiRequest, presence: Presence) -> ApiResult {
    let (id, record, vhost) = target(&app, &request)?;
    changeable(&request, &record)?;
    let spec = parse_spec(&request)?;
    let kind = match presence {
        Presence::New => VHOST_CREATE,
        _ => VHOST_CHANGE,
    };
    let operation = Operation::VhostPut {
        id: vhost,
        spec,
        presence,
    };
    submit(&app, &request, id, kind, operation).await
}

async fn delete(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, record, vhost) = target(&app, &request)?;
    changeable(&request, &record)?;
    // A deleted vhost's certificate is no longer renewed.
    app.store.delete(
        Table::AcmeCertificates,
        &AcmeCertificateRecord::key(id, vhost.as_str()),
    )?;
    submit(
        &app,
        &request,
        id,
        VHOST_DELETE,
        Operation::VhostDelete { id: vhost },
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtraInput {
    /// The block, or `null` to clear it.
    extra: Option<String>,
}

async fn set_extra(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, _, vhost) = target(&app, &request)?;
    let input: ExtraInput = from_body(body_object(&request)?)?;
    if let Some(extra) = &input.extra {
        check_extra(extra).map_err(|errors| invalid(&errors))?;
    }
    submit(
        &app,
        &request,
        id,
        VHOST_EXTRA,
        Operation::VhostSetExtra {
            id: vhost,
            extra: input.extra,
        },
    )
    .await
}
