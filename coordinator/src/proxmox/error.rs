//! Errors of the Proxmox client: how an answer of any Proxmox release is read into one error,
//! and how errors are classified for retries and for the API caller.
//!
//! Older servers put the error text only in the HTTP reason phrase; newer ones (HTTP server 5.2,
//! PVE 8.3 and later) also send `{"message": ...}` in the body; a 400 carries `{"errors": {...}}`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// A failure of a call to Proxmox.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProxmoxError {
    /// Proxmox answered with an error status.
    #[error("{message} (HTTP {status})")]
    Api {
        status: u16,
        message: String,
        /// Per-parameter reasons of a 400.
        errors: BTreeMap<String, String>,
    },
    /// The connection could not be opened: the request was not delivered.
    #[error("cannot connect to Proxmox: {message}")]
    Connect { message: String },
    /// The connection failed after the request may have been sent.
    #[error("the connection to Proxmox failed: {message}")]
    Transport { message: String },
    /// No answer in time; the request may or may not have been carried out.
    #[error("Proxmox did not answer within {} ms", after.as_millis())]
    Timeout { after: Duration },
    /// A task ended with an error exit status.
    #[error("Proxmox task {upid} failed: {exitstatus}")]
    Task { upid: String, exitstatus: String },
    /// A task was still running when its deadline passed.
    #[error("Proxmox task {upid} did not finish within {} s", after.as_secs())]
    TaskDeadline { upid: String, after: Duration },
    /// The answer was not what the API promises.
    #[error("unexpected answer from Proxmox: {message}")]
    Decode { message: String },
    /// The endpoint's settings are unusable (bad URL, fingerprint or CA).
    #[error("invalid Proxmox endpoint settings: {message}")]
    Config { message: String },
}

/// What a failure means for the caller: whether the request was carried out, and whether a
/// retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A lock refused the call (`CT is locked`, `can't lock file ... got timeout`); nothing was
    /// done and a later retry may pass.
    Locked,
    /// The request did not reach the node (connection refused, pveproxy's 595); nothing was done.
    Unreachable,
    /// The request may have been carried out (client timeout, broken connection, 596/597/599,
    /// a proxy's 502/503/504): an idempotent call may be repeated, any other needs checking first.
    Uncertain,
    /// The object already exists (`CT 101 already exists`, nextid's `VM 101 already exists`).
    AlreadyExists,
    /// The object does not exist (`Configuration file ... does not exist`, `no such task`).
    NotFound,
    /// `CT 101 already running`.
    AlreadyRunning,
    /// `CT 101 not running`.
    NotRunning,
    /// The token was refused (401).
    Unauthorized,
    /// The token lacks a privilege (403).
    Forbidden,
    /// A parameter was refused (400).
    Invalid,
    /// A task ended with an error.
    TaskFailed,
    /// A task did not end in time; it may still be running.
    TaskDeadline,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// Classifies an error answer by its status and text.
    pub fn of_answer(status: u16, message: &str, errors: &BTreeMap<String, String>) -> ErrorClass {
        let lower = message.to_ascii_lowercase();
        let any = |needle: &str| {
            lower.contains(needle)
                || errors
                    .values()
                    .any(|reason| reason.to_ascii_lowercase().contains(needle))
        };
        match status {
            401 => return ErrorClass::Unauthorized,
            403 => return ErrorClass::Forbidden,
            595 => return ErrorClass::Unreachable,
            502..=504 | 596 | 597 | 599 => return ErrorClass::Uncertain,
            _ => {}
        }
        if any("is locked") || (any("can't lock file") && any("got timeout")) {
            ErrorClass::Locked
        } else if any("already exists") {
            ErrorClass::AlreadyExists
        } else if any("already running") {
            ErrorClass::AlreadyRunning
        } else if any("not running") {
            ErrorClass::NotRunning
        } else if any("does not exist") || any("no such") {
            ErrorClass::NotFound
        } else if status == 400 {
            ErrorClass::Invalid
        } else {
            ErrorClass::Other
        }
    }
}

impl ProxmoxError {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            ProxmoxError::Api {
                status,
                message,
                errors,
            } => ErrorClass::of_answer(*status, message, errors),
            ProxmoxError::Connect { .. } => ErrorClass::Unreachable,
            ProxmoxError::Transport { .. } | ProxmoxError::Timeout { .. } => ErrorClass::Uncertain,
            ProxmoxError::Task { exitstatus, .. } => {
                match ErrorClass::of_answer(500, exitstatus, &BTreeMap::new()) {
                    ErrorClass::Locked => ErrorClass::Locked,
                    _ => ErrorClass::TaskFailed,
                }
            }
            ProxmoxError::TaskDeadline { .. } => ErrorClass::TaskDeadline,
            ProxmoxError::Decode { .. } | ProxmoxError::Config { .. } => ErrorClass::Other,
        }
    }

    /// True when the request may have been carried out even though it failed.
    pub fn outcome_unknown(&self) -> bool {
        self.class() == ErrorClass::Uncertain
    }

    /// True for a deadline passed on our side or a gateway timeout on Proxmox's.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ProxmoxError::Timeout { .. } | ProxmoxError::TaskDeadline { .. }
        ) || matches!(self, ProxmoxError::Api { status, .. } if *status == 596 || *status == 504)
    }

    /// The Proxmox text of the error, without the HTTP status.
    pub fn proxmox_message(&self) -> String {
        match self {
            ProxmoxError::Api { message, .. } => message.clone(),
            ProxmoxError::Task { exitstatus, .. } => exitstatus.clone(),
            other => other.to_string(),
        }
    }
}

fn canonical_reason(status: u16) -> Option<&'static str> {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
}

/// Reads an error answer: the body's `message` (newer servers) wins over the reason phrase
/// (older servers), which wins over a plain-text body; a 400's `errors` are kept per parameter
/// and named in the message.
pub fn error_from_answer(status: u16, reason: Option<&str>, body: &[u8]) -> ProxmoxError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let body_message = parsed
        .as_ref()
        .and_then(|value| value.get("message"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_string);
    let mut errors = BTreeMap::new();
    if let Some(Value::Object(map)) = parsed.as_ref().and_then(|value| value.get("errors")) {
        for (name, reason) in map {
            let text = match reason {
                Value::String(text) => text.trim().to_string(),
                other => other.to_string(),
            };
            errors.insert(name.clone(), text);
        }
    }
    let reason = reason
        .map(str::trim)
        .filter(|text| !text.is_empty() && Some(*text) != canonical_reason(status))
        .map(str::to_string);
    let plain_body = if parsed.is_none() {
        std::str::from_utf8(body)
            .ok()
            .map(str::trim)
            .filter(|text| !text.is_empty() && text.len() <= 1000)
            .map(str::to_string)
    } else {
        None
    };
    let mut message = body_message
        .or(reason)
        .or(plain_body)
        .or_else(|| canonical_reason(status).map(str::to_string))
        .unwrap_or_else(|| format!("HTTP status {status}"));
    if !errors.is_empty() {
        let details = errors
            .iter()
            .map(|(name, reason)| format!("{name}: {reason}"))
            .collect::<Vec<_>>()
            .join("; ");
        message = format!("{} ({details})", message.trim_end_matches('.'));
    }
    ProxmoxError::Api {
        status,
        message,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_of_every_release_are_read() {
        // (status, reason phrase, body, expected message, expected class)
        let cases: &[(u16, Option<&str>, &str, &str, ErrorClass)] = &[
            // An older server: the text only in the reason phrase.
            (
                500,
                Some("CT 101 already running"),
                r#"{"data":null}"#,
                "CT 101 already running",
                ErrorClass::AlreadyRunning,
            ),
            // A newer server: the full text in the body wins over the first line in the reason.
            (
                500,
                Some("unable to create CT 101 - CT 101 already exists on node 'pve1'"),
                "{\"data\":null,\"message\":\"unable to create CT 101 - CT 101 already exists on node 'pve1'\\n\"}",
                "unable to create CT 101 - CT 101 already exists on node 'pve1'",
                ErrorClass::AlreadyExists,
            ),
            (
                500,
                Some("CT is locked (backup)"),
                r#"{"data":null,"message":"CT is locked (backup)\n"}"#,
                "CT is locked (backup)",
                ErrorClass::Locked,
            ),
            (
                500,
                None,
                r#"{"data":null,"message":"can't lock file '/run/lock/lxc/pve-config-101.lock' - got timeout\n"}"#,
                "can't lock file '/run/lock/lxc/pve-config-101.lock' - got timeout",
                ErrorClass::Locked,
            ),
            (
                500,
                Some("CT 101 not running"),
                "",
                "CT 101 not running",
                ErrorClass::NotRunning,
            ),
            (
                500,
                Some("Configuration file 'nodes/pve1/lxc/999.conf' does not exist"),
                r#"{"data":null}"#,
                "Configuration file 'nodes/pve1/lxc/999.conf' does not exist",
                ErrorClass::NotFound,
            ),
            // A 400 names the parameters.
            (
                400,
                Some("Parameter verification failed."),
                r#"{"data":null,"errors":{"vmid":"VM 101 already exists"}}"#,
                "Parameter verification failed (vmid: VM 101 already exists)",
                ErrorClass::AlreadyExists,
            ),
            (
                400,
                Some("Parameter verification failed."),
                r#"{"data":null,"errors":{"memory":"value must have a minimum value of 16","cores":"type check ('integer') failed - got 'x'"}}"#,
                "Parameter verification failed (cores: type check ('integer') failed - got 'x'; memory: value must have a minimum value of 16)",
                ErrorClass::Invalid,
            ),
            (
                400,
                None,
                r#"{"data":null,"errors":{"upid":"no such task"}}"#,
                "Bad Request (upid: no such task)",
                ErrorClass::NotFound,
            ),
            // pveproxy's pseudo-codes: empty body, text in the reason phrase.
            (
                595,
                Some("No route to host"),
                "",
                "No route to host",
                ErrorClass::Unreachable,
            ),
            (
                595,
                Some("Connection refused"),
                "",
                "Connection refused",
                ErrorClass::Unreachable,
            ),
            (
                596,
                Some("Connection timed out"),
                "",
                "Connection timed out",
                ErrorClass::Uncertain,
            ),
            (
                596,
                Some("Broken pipe"),
                "",
                "Broken pipe",
                ErrorClass::Uncertain,
            ),
            (597, None, "", "HTTP status 597", ErrorClass::Uncertain),
            // Authentication: the detail of older releases, the bare sentence of newer ones.
            (
                401,
                Some("No ticket"),
                "",
                "No ticket",
                ErrorClass::Unauthorized,
            ),
            (
                401,
                Some("Authentication failed!"),
                "",
                "Authentication failed!",
                ErrorClass::Unauthorized,
            ),
            (
                403,
                Some("Permission check failed (/vms/101, VM.Allocate)"),
                r#"{"data":null}"#,
                "Permission check failed (/vms/101, VM.Allocate)",
                ErrorClass::Forbidden,
            ),
            // Before routing: a plain-text body and a canonical reason.
            (
                501,
                Some("Not Implemented"),
                "Method 'GET /x' not implemented",
                "Method 'GET /x' not implemented",
                ErrorClass::Other,
            ),
            (
                500,
                Some("Internal Server Error"),
                "",
                "Internal Server Error",
                ErrorClass::Other,
            ),
            (502, None, "", "Bad Gateway", ErrorClass::Uncertain),
        ];
        for (status, reason, body, message, class) in cases {
            let error = error_from_answer(*status, *reason, body.as_bytes());
            assert_eq!(
                error.proxmox_message(),
                *message,
                "{status} {reason:?} {body}"
            );
            assert_eq!(error.class(), *class, "{status} {reason:?} {body}");
        }
    }

    #[test]
    fn transport_and_task_errors_are_classified() {
        let cases: &[(ProxmoxError, ErrorClass, bool)] = &[
            (
                ProxmoxError::Connect {
                    message: "connection refused".into(),
                },
                ErrorClass::Unreachable,
                false,
            ),
            (
                ProxmoxError::Transport {
                    message: "connection reset".into(),
                },
                ErrorClass::Uncertain,
                true,
            ),
            (
                ProxmoxError::Timeout {
                    after: Duration::from_secs(1),
                },
                ErrorClass::Uncertain,
                true,
            ),
            (
                ProxmoxError::Task {
                    upid: "UPID:x".into(),
                    exitstatus: "unexpected status".into(),
                },
                ErrorClass::TaskFailed,
                false,
            ),
            (
                ProxmoxError::Task {
                    upid: "UPID:x".into(),
                    exitstatus: "can't lock file '/run/lock/lxc/pve-config-101.lock' - got timeout"
                        .into(),
                },
                ErrorClass::Locked,
                false,
            ),
            (
                ProxmoxError::TaskDeadline {
                    upid: "UPID:x".into(),
                    after: Duration::from_secs(5),
                },
                ErrorClass::TaskDeadline,
                false,
            ),
        ];
        for (error, class, unknown) in cases {
            assert_eq!(error.class(), *class, "{error}");
            assert_eq!(error.outcome_unknown(), *unknown, "{error}");
        }
    }
}
