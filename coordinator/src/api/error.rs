//! The one error type of the API and its JSON form: `{"error": {"code", "message", "details"}}`,
//! and the HTTP form of the errors of the layers below (authentication, users, Proxmox).

use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};

use crate::auth::AuthError;
use crate::proxmox::ProxmoxError;
use crate::store::StoreError;
use crate::users::UserError;

/// An error answered to an API caller. Its message is for people; it never carries a secret,
/// a file path of the coordinator or a stack trace.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            headers: Vec::new(),
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: &str) -> ApiError {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((name, value));
        }
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 422 with one reason per field: `details.fields.<name> = reason`.
    pub fn invalid(fields: &[(&str, String)]) -> ApiError {
        let mut map = serde_json::Map::new();
        for (name, reason) in fields {
            map.insert((*name).to_string(), Value::String(reason.clone()));
        }
        let summary = fields
            .iter()
            .map(|(name, reason)| format!("{name}: {reason}"))
            .collect::<Vec<_>>()
            .join("; ");
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("invalid input: {summary}"),
        )
        .with_details(json!({ "fields": map }))
    }

    /// A single invalid field.
    pub fn invalid_field(name: &str, reason: impl Into<String>) -> ApiError {
        ApiError::invalid(&[(name, reason.into())])
    }

    pub fn too_many_requests(retry_after_seconds: u64) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many attempts; retry after {retry_after_seconds} s"),
        )
        .with_header(http::header::RETRY_AFTER, &retry_after_seconds.to_string())
    }

    pub fn bad_gateway(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, "proxmox_error", message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn gateway_timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", message)
    }

    /// An internal failure: the cause is logged here, the caller sees a generic sentence.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "internal error while answering a request");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the coordinator failed to complete the request; the cause is in its log",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = &self.details {
            error["details"] = details.clone();
        }
        json!({ "error": error })
    }

    /// The HTTP response.
    pub fn into_response(self) -> warp::reply::Response {
        let mut response = super::json_response(self.status, &self.body());
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError::internal(error)
    }
}

impl From<AuthError> for ApiError {
    /// A refused credential is 401, a missing admin right 403, an instance the caller may not
    /// see 404 (as if it did not exist), too many failed logins 429.
    fn from(error: AuthError) -> ApiError {
        match error {
            AuthError::Refused => ApiError::unauthorized(error.to_string()),
            AuthError::AdminOnly => ApiError::forbidden(error.to_string()),
            AuthError::NoSuchInstance(_) | AuthError::NotAnInstanceId(_) => {
                ApiError::not_found(error.to_string())
            }
            AuthError::RateLimited(wait) => ApiError::too_many_requests(wait),
            AuthError::Busy => ApiError::unavailable("busy", error.to_string())
                .with_header(http::header::RETRY_AFTER, "1"),
            AuthError::Hashing(_) | AuthError::Store(_) => ApiError::internal(error),
        }
    }
}

impl From<UserError> for ApiError {
    /// A taken username or email is 409.
    fn from(error: UserError) -> ApiError {
        match error {
            UserError::UsernameTaken(_) | UserError::EmailInUse(_) => {
                ApiError::conflict(error.to_string())
            }
            UserError::Store(error) => ApiError::from(error),
        }
    }
}

impl From<ProxmoxError> for ApiError {
    /// Proxmox's refusals reach the caller as 502 with Proxmox's message, deadlines as 504.
    fn from(error: ProxmoxError) -> ApiError {
        if error.is_timeout() {
            ApiError::gateway_timeout(format!("Proxmox: {}", error.proxmox_message()))
        } else {
            match error {
                ProxmoxError::Config { .. } => ApiError::bad_gateway(error.to_string()),
                other => ApiError::bad_gateway(format!("Proxmox: {}", other.proxmox_message())),
            }
        }
    }
}
