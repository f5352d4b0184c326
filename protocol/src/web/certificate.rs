//! TLS certificates of vhosts as data: an upload as a customer sends it (checked for shape here;
//! the X.509 checks need a parser and happen on the agent), where a certificate came from, its
//! status, the coverage rule of names, and ACME HTTP-01 challenge answers.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Secret;
use crate::web::ValidationError;
use crate::web::vhost::ServerName;

/// The largest PEM text accepted in one field.
pub const MAX_PEM_BYTES: usize = 64 * 1024;
/// The most certificates in a chain, leaf included.
pub const MAX_CHAIN_LENGTH: usize = 8;

/// A certificate with its key and chain, in PEM, as uploaded or issued.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateUpload {
    /// The leaf certificate, optionally followed by its chain.
    pub certificate: String,
    /// The leaf's private key (PKCS #8, SEC1 or PKCS #1), unencrypted.
    pub private_key: Secret,
    /// Intermediate certificates, leaf's issuer first.
    #[serde(default)]
    pub chain: Option<String>,
    /// Whether plain HTTP should now redirect to HTTPS (unchanged when absent).
    #[serde(default)]
    pub redirect_http: Option<bool>,
}

impl fmt::Debug for CertificateUpload {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CertificateUpload")
            .field("certificate_bytes", &self.certificate.len())
            .field("private_key", &self.private_key)
            .field("chain_bytes", &self.chain.as_ref().map(String::len))
            .field("redirect_http", &self.redirect_http)
            .finish()
    }
}

impl CertificateUpload {
    /// The checks that need no X.509 parser: each field is present, bounded and looks like PEM.
    pub fn check_shape(&self) -> Result<(), ValidationError> {
        let mut errors = ValidationError::default();
        let fields = [
            (
                "certificate",
                Some(self.certificate.as_str()),
                "CERTIFICATE",
            ),
            (
                "private_key",
                Some(self.private_key.expose()),
                "PRIVATE KEY",
            ),
            ("chain", self.chain.as_deref(), "CERTIFICATE"),
        ];
        for (field, text, label) in fields {
            let Some(text) = text else {
                continue;
            };
            if text.len() > MAX_PEM_BYTES {
                errors.push(field, format!("is larger than {MAX_PEM_BYTES} bytes"));
            } else if !(text.contains("-----BEGIN ") && text.contains(label)) {
                errors.push(field, format!("must hold a PEM {label} block"));
            }
        }
        errors.into_result(())
    }
}

/// Where a certificate came from.
///
/// New variants are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertificateSource {
    /// Uploaded by the customer.
    Upload,
    /// Issued through ACME.
    Acme,
}

/// What is known about a deployed certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateInfo {
    /// Where it came from.
    pub source: CertificateSource,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// The subject's distinguished name.
    pub subject: String,
    /// The DNS names it covers.
    pub names: Vec<String>,
    /// Start of validity, Unix seconds.
    pub not_before_unix: i64,
    /// End of validity, Unix seconds.
    pub not_after_unix: i64,
    /// SHA-256 of the leaf's DER, in hex.
    pub fingerprint_sha256: String,
}

/// The latest attempt to deploy, issue or renew a vhost's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateAttempt {
    /// When it ended, Unix seconds.
    pub at_unix: i64,
    /// Upload or ACME.
    pub source: CertificateSource,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// The status of a vhost's TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// The certificate in service, if any.
    pub certificate: Option<CertificateInfo>,
    /// Whether plain HTTP redirects to HTTPS.
    pub redirect_http: bool,
    /// The latest attempt and its error.
    pub last_attempt: Option<CertificateAttempt>,
}

/// Whether a certificate name covers a server name: equal, or a one-label wildcard match of a plain
/// name. A wildcard server name needs the same wildcard in the certificate.
pub fn name_covers(certificate_name: &str, server_name: &ServerName) -> bool {
    let server = server_name.as_str();
    if certificate_name == server {
        return true;
    }
    match certificate_name.strip_prefix("*.") {
        Some(suffix) if !server_name.is_wildcard() => server
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        _ => false,
    }
}

/// Checks an ACME challenge token (base64url, RFC 8555 section 8.3) and key authorization.
pub fn check_challenge(token: &str, key_authorization: &str) -> Result<(), ValidationError> {
    let mut errors = ValidationError::default();
    let base64url = |text: &str| {
        text.chars()
            .all(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '_'))
    };
    if token.is_empty() || token.len() > 256 || !base64url(token) {
        errors.push("token", "a token is 1 to 256 base64url characters");
    }
    let valid_authorization =
        key_authorization
            .split_once('.')
            .is_some_and(|(prefix, thumbprint)| {
                prefix == token && !thumbprint.is_empty() && base64url(thumbprint)
            });
    if !valid_authorization || key_authorization.len() > 512 {
        errors.push(
            "key_authorization",
            "must be the token, a '.', and the account key thumbprint in base64url",
        );
    }
    errors.into_result(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_coverage_cases() {
        let cases = [
            ("example.com", "example.com", true),
            ("*.example.com", "www.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", "*.example.com", true),
            ("www.example.com", "*.example.com", false),
            ("other.com", "example.com", false),
        ];
        for (certificate_name, server_name, expected) in cases {
            let server_name = ServerName::parse(server_name).unwrap();
            assert_eq!(
                name_covers(certificate_name, &server_name),
                expected,
                "{certificate_name} / {server_name}"
            );
        }
    }

    #[test]
    fn challenge_cases() {
        let cases = [
            ("abc_DEF-123", "abc_DEF-123.thumb", true),
            ("abc", "abd.thumb", false),
            ("abc", "abc.", false),
            ("../x", "../x.t", false),
            ("a/b", "a/b.t", false),
            ("", ".t", false),
            ("abc", "abc.t\nx", false),
        ];
        for (token, authorization, valid) in cases {
            assert_eq!(
                check_challenge(token, authorization).is_ok(),
                valid,
                "{token:?} {authorization:?}"
            );
        }
    }

    #[test]
    fn upload_shape_cases() {
        let pem = |label: &str| format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n");
        let upload = |certificate: String, key: String, chain: Option<String>| CertificateUpload {
            certificate,
            private_key: Secret::new(key),
            chain,
            redirect_http: None,
        };
        let cases = [
            (upload(pem("CERTIFICATE"), pem("PRIVATE KEY"), None), None),
            (
                upload(pem("CERTIFICATE"), pem("EC PRIVATE KEY"), None),
                None,
            ),
            (
                upload(String::new(), pem("PRIVATE KEY"), None),
                Some("certificate"),
            ),
            (
                upload(pem("CERTIFICATE"), "secret".into(), None),
                Some("private_key"),
            ),
            (
                upload(pem("CERTIFICATE"), pem("PRIVATE KEY"), Some(pem("X"))),
                Some("chain"),
            ),
            (
                upload("x".repeat(MAX_PEM_BYTES + 1), pem("PRIVATE KEY"), None),
                Some("certificate"),
            ),
        ];
        for (upload, refused) in cases {
            let result = upload.check_shape();
            match refused {
                None => assert!(result.is_ok(), "{result:?}"),
                Some(field) => assert!(result.is_err_and(|error| error.has(field))),
            }
        }
        let debug = format!("{:?}", upload(pem("CERTIFICATE"), pem("PRIVATE KEY"), None));
        assert!(!debug.contains("AAAA"), "{debug}");
    }
}
