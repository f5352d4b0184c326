//! The agent routes of an instance: enrollment tokens, the agent's status, revocation and a
//! ping through the agent channel.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::json;

use super::{Access, ApiError, ApiRequest, ApiResult, RouteTable, created, ok};
use crate::App;
use crate::auth::{parse_instance_id, require_instance};
use crate::channel::ChannelError;

/// How long a ping may take before the API gives up.
const PING_DEADLINE: Duration = Duration::from_secs(10);

pub fn routes(table: &mut RouteTable) {
    table.add(
        Method::POST,
        "/api/v1/instance/{id}/enrollment",
        Access::Authenticated,
        "agents",
        "A one-time agent enrollment token and the command to run in the container",
        |app, request| Box::pin(enrollment(app, request)),
    );
    table.add(
        Method::GET,
        "/api/v1/instance/{id}/agent",
        Access::Authenticated,
        "agents",
        "The agent's status: connected, version, last seen, certificate expiry",
        |app, request| Box::pin(status(app, request)),
    );
    table.add(
        Method::DELETE,
        "/api/v1/instance/{id}/agent",
        Access::Authenticated,
        "agents",
        "Revoke the agent: its connection closes and its certificate is refused",
        |app, request| Box::pin(revoke(app, request)),
    );
    table
        .add(
            Method::POST,
            "/api/v1/instance/{id}/agent/ping",
            Access::Admin,
            "agents",
            "Round trip of a ping through the agent channel",
            |app, request| Box::pin(ping(app, request)),
        )
        // A measurement: it changes nothing, so it does not wait for an audit record's flush.
        .changes_nothing();
}

/// The API form of a channel failure.
pub fn channel_error(error: ChannelError) -> ApiError {
    match error {
        ChannelError::AgentOffline(instance) => ApiError::unavailable(
            "agent_offline",
            format!("the agent of instance {instance} is not connected"),
        ),
        ChannelError::DeadlineExceeded => {
            ApiError::gateway_timeout("the agent did not answer before the deadline")
        }
        ChannelError::ConnectionLost(_) => ApiError::unavailable(
            "agent_offline",
            "the connection to the agent was lost during the request",
        ),
        ChannelError::NoAdvertisedAddress(_) | ChannelError::NotStarted => ApiError::unavailable(
            "channel_not_configured",
            "the coordinator has no address to give agents; its administrator must set quic_advertise",
        ),
        ChannelError::Operation(error) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "agent_error",
            format!("the agent reported an error: {}", error.message),
        ),
        other => ApiError::internal(other),
    }
}

async fn enrollment(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?;
    let id = parse_instance_id(request.param(0))?;
    require_instance(&app, principal, id)?;
    let offer = app
        .channel
        .issue_enrollment(id, &principal.user_id)
        .map_err(channel_error)?;
    created(&offer)
}

async fn status(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?;
    let id = parse_instance_id(request.param(0))?;
    require_instance(&app, principal, id)?;
    ok(&app.channel.status(id).map_err(channel_error)?)
}

async fn revoke(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?;
    let id = parse_instance_id(request.param(0))?;
    require_instance(&app, principal, id)?;
    app.channel.revoke(id).map_err(channel_error)?;
    ok(&app.channel.status(id).map_err(channel_error)?)
}

async fn ping(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?;
    let id = parse_instance_id(request.param(0))?;
    require_instance(&app, principal, id)?;
    let rtt = app
        .channel
        .ping(id, PING_DEADLINE)
        .await
        .map_err(channel_error)?;
    ok(&json!({ "rtt_ms": rtt.as_secs_f64() * 1000.0 }))
}
