//! Web work inside an instance, as data both sides understand: vhost specs, certificate uploads
//! and cache settings with their validation, and what the agent reports back about them.
//!
//! The coordinator validates a request with these functions before it sends anything (a 422 with
//! one reason per field); the agent validates again before it renders, so neither trusts the
//! other's checks. Pure: no IO and no clock; times are Unix seconds passed in or out.
//!
//! Invariant: a value accepted by these checks renders into nginx configuration without any
//! further escaping decisions (see [`vhost`]).

pub mod cache;
pub mod certificate;
pub mod vhost;
pub mod view;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, ErrorData};

pub use cache::{
    Bypass, CacheSettings, CacheStatus, MAX_BYPASS_RULES, MAX_PURGE_PATHS, MAX_SIZE_MEGABYTES,
    MAX_TTL_SECONDS, PurgeReport, PurgeRequest,
};
pub use certificate::{
    CertificateAttempt, CertificateInfo, CertificateSource, CertificateStatus, CertificateUpload,
    MAX_CHAIN_LENGTH, MAX_PEM_BYTES, check_challenge, name_covers,
};
pub use vhost::{
    Content, DEFAULT_WEB_ROOT, ErrorLevel, Limits, Logs, MAX_BODY_BYTES, MAX_EXTRA_BYTES,
    MAX_SERVER_NAMES, MAX_UPSTREAM_TIMEOUT_SECONDS, NameRedirect, PhpSpec, RESERVED_SUFFIX,
    Redirects, ServerName, Upstream, UpstreamScheme, ValidVhost, VhostId, VhostSpec, WwwRedirect,
    check_extra, is_safe_path_character,
};
pub use view::{VersionSummary, VhostInfo};

/// Whether a create-or-change operation expects the thing to exist already.
///
/// New variants are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// It must not exist yet ([`ErrorCode::Conflict`] otherwise), unless it exists with exactly
    /// the requested settings: a redelivered create then succeeds again.
    New,
    /// It must exist ([`ErrorCode::NotFound`] otherwise).
    Existing,
    /// Either: create it or change it.
    Any,
}

/// The prefix of the [`ErrorData`] detail keys that name a refused field.
pub const FIELD_DETAIL_PREFIX: &str = "field:";

/// One reason a field was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field, in JSON-path form (`server_names[2]`).
    pub field: String,
    /// Why it was refused, as a sentence.
    pub reason: String,
}

/// Every reason a request was refused, per field (a 422 at the API).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationError {
    /// The refused fields, in the order they were found.
    pub fields: Vec<FieldError>,
}

impl ValidationError {
    /// Adds one reason.
    pub fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.fields.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// A single-field error.
    pub fn single(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let mut error = ValidationError::default();
        error.push(field, reason);
        error
    }

    /// `Ok(value)` when nothing was refused.
    pub fn into_result<T>(self, value: T) -> Result<T, ValidationError> {
        if self.fields.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// Whether a reason was recorded for `field`.
    pub fn has(&self, field: &str) -> bool {
        self.fields.iter().any(|error| error.field == field)
    }

    /// The error as it crosses the wire: [`ErrorCode::InvalidInput`] with one detail per field,
    /// keyed `field:<name>`.
    pub fn to_error_data(&self) -> ErrorData {
        let mut data = ErrorData::new(ErrorCode::InvalidInput, self.to_string());
        for error in &self.fields {
            data = data.with_detail(
                format!("{FIELD_DETAIL_PREFIX}{}", error.field),
                error.reason.clone(),
            );
        }
        data
    }

    /// The per-field reasons of an error that came over the wire, if it carries any.
    pub fn from_error_data(data: &ErrorData) -> Option<ValidationError> {
        if data.code != ErrorCode::InvalidInput {
            return None;
        }
        let mut errors = ValidationError::default();
        for (key, reason) in &data.details {
            if let Some(field) = key.strip_prefix(FIELD_DETAIL_PREFIX) {
                errors.push(field, reason.clone());
            }
        }
        (!errors.fields.is_empty()).then_some(errors)
    }
}

impl From<ValidationError> for ErrorData {
    fn from(error: ValidationError) -> ErrorData {
        error.to_error_data()
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "invalid input: ")?;
        for (index, error) in self.fields.iter().enumerate() {
            if index > 0 {
                write!(formatter, "; ")?;
            }
            write!(formatter, "{}: {}", error.field, error.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_reasons_survive_error_data() {
        let mut error = ValidationError::single("server_names[1]", "contains the character ';'");
        error.push("root", "may not contain '..'");
        let data = error.to_error_data();
        assert_eq!(data.code, ErrorCode::InvalidInput);
        assert_eq!(ValidationError::from_error_data(&data), Some(error));
        let other = ErrorData::new(ErrorCode::InvalidInput, "x").with_detail("program", "nginx");
        assert_eq!(ValidationError::from_error_data(&other), None);
    }
}
