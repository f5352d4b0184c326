//! The HTTP side of agent work: a route answers with the task of an operation
//! ([`submit`]), and the failures of the agent, of the channel and of an ended agent task
//! become their statuses here.

use http::StatusCode;
use protocol::{ErrorCode, ErrorData, Operation};

use super::agents::channel_error;
use super::tasks::respond_with_task;
use super::{ApiError, ApiRequest, ApiResult};
use crate::App;
use crate::agentwork::{self, AgentWorkError};

/// Submits `operation` as a task for the instance's agent and answers as every task route does
/// (`202`, `Location`, `?wait=`, `Idempotency-Key`). The caller has checked the instance and
/// the input.
pub async fn submit(
    app: &App,
    request: &ApiRequest,
    instance: u32,
    kind: &str,
    operation: Operation,
) -> ApiResult {
    let principal = request.principal()?;
    let new = agentwork::new_task(&principal.user_id, instance, kind, &operation);
    respond_with_task(app, request, new).await
}

impl From<AgentWorkError> for ApiError {
    /// A direct call: `503` while the agent is not connected, `504` past the deadline, and the
    /// agent's failure as its status.
    fn from(error: AgentWorkError) -> ApiError {
        match error {
            AgentWorkError::Agent(error) => agent_error(&error),
            AgentWorkError::Channel(error) => channel_error(error),
        }
    }
}

/// The API form of a failure the agent reported.
pub fn agent_error(error: &ErrorData) -> ApiError {
    let status = match error.code {
        ErrorCode::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Unsupported => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::CommandFailed => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, error.code.as_str(), error.message.clone())
}

/// The API form of an ended agent task's error (for a route that waited for the task).
pub fn task_error(code: &str, message: &str) -> ApiError {
    if let Some(known) = ErrorCode::ALL
        .into_iter()
        .find(|known| known.as_str() == code)
    {
        return agent_error(&ErrorData::new(known, message));
    }
    let (status, code) = match code {
        "agent_offline" => (StatusCode::SERVICE_UNAVAILABLE, "agent_offline"),
        "stopping" => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
        "connection_lost" => (StatusCode::BAD_GATEWAY, "connection_lost"),
        "cancelled" => (StatusCode::CONFLICT, "cancelled"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "agent_task_failed"),
    };
    ApiError::new(status, code, message.to_string())
}
