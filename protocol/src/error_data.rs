//! Failures as data: a code from a closed list, a sentence for people, and key/value details.

use serde::{Deserialize, Serialize};

/// What kind of failure happened. The names in snake case (see [`ErrorCode::as_str`]) are what
/// the HTTP API shows.
///
/// New variants are only ever appended, never inserted or reordered: bincode identifies a variant
/// by its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or a value is out of range.
    InvalidInput,
    /// The thing the request names does not exist.
    NotFound,
    /// The request contradicts the current state (for example the thing already exists).
    Conflict,
    /// A program or service the operation needs is not available right now; trying later may work.
    Unavailable,
    /// The deadline passed before the operation finished.
    Timeout,
    /// A bug or an unexpected failure on the side that reports it.
    Internal,
    /// The peer does not implement this request.
    Unsupported,
    /// The operation was cancelled before it finished.
    Cancelled,
    /// The peer is not allowed to make this request.
    PermissionDenied,
    /// The peer could not be identified, or its credentials (a token, a certificate) are invalid.
    Unauthenticated,
    /// A limit was reached (rate, size, disk space).
    ResourceExhausted,
    /// An external program ran and failed.
    CommandFailed,
    /// The agent stopped (crashed, was killed or restarted) while the task was running; the work
    /// may have been partly done and is not started again by itself.
    Interrupted,
}

impl ErrorCode {
    /// Every code, in wire order.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidInput,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::Internal,
        ErrorCode::Unsupported,
        ErrorCode::Cancelled,
        ErrorCode::PermissionDenied,
        ErrorCode::Unauthenticated,
        ErrorCode::ResourceExhausted,
        ErrorCode::CommandFailed,
        ErrorCode::Interrupted,
    ];

    /// The snake case name, for example `invalid_input`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::CommandFailed => "command_failed",
            ErrorCode::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A failure that crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorData {
    /// What kind of failure it is; code paths branch on this, never on the message.
    pub code: ErrorCode,
    /// One sentence for people.
    pub message: String,
    /// Facts that help, for example `("program", "apt-get")` or `("exit_status", "100")`.
    pub details: Vec<(String, String)>,
}

impl ErrorData {
    /// An error with no details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorData {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// Adds one detail.
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.details.push((key.into(), value.into()));
        self
    }
}

impl std::fmt::Display for ErrorData {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}: {}", self.code, self.message)?;
        for (key, value) in &self.details {
            write!(formatter, " ({key}: {value})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ErrorData {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        for name in &names {
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn display_shows_code_message_and_details() {
        let error =
            ErrorData::new(ErrorCode::NotFound, "no such database").with_detail("name", "shop");
        assert_eq!(
            error.to_string(),
            "not_found: no such database (name: shop)"
        );
    }
}
