//! TLS certificates of vhosts: checking an uploaded (or ACME-issued) certificate before it is
//! deployed, the status shown for it, and the HTTP-01 challenge files nginx answers from.
//!
//! Invariant: a certificate reaches the web server only after [`check_certificate`] accepted it
//! for the vhost's names at the given time; its key is written readable by its owner only.

pub mod apply;

use std::fmt;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

pub use protocol::web::certificate::{
    CertificateSource, CertificateUpload, MAX_CHAIN_LENGTH, MAX_PEM_BYTES, check_challenge,
    name_covers,
};

use crate::vhosts::spec::{ServerName, ValidationError};

pub use crate::vhosts::state::CertificateInfo;

/// The latest attempt to deploy or renew a vhost's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateAttempt {
    /// When it ended.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Upload or ACME.
    pub source: CertificateSource,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// The status of a vhost's TLS, as shown at the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// The certificate in service, if any.
    pub certificate: Option<CertificateInfo>,
    /// Whether plain HTTP redirects to HTTPS.
    pub redirect_http: bool,
    /// The latest attempt and its error.
    pub last_attempt: Option<CertificateAttempt>,
}

impl CertificateInfo {
    /// The form that crosses the wire.
    pub fn to_wire(&self) -> protocol::web::CertificateInfo {
        protocol::web::CertificateInfo {
            source: self.source,
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            names: self.names.clone(),
            not_before_unix: self.not_before.unix_timestamp(),
            not_after_unix: self.not_after.unix_timestamp(),
            fingerprint_sha256: self.fingerprint_sha256.clone(),
        }
    }
}

impl CertificateStatus {
    /// The form that crosses the wire.
    pub fn to_wire(&self) -> protocol::web::CertificateStatus {
        protocol::web::CertificateStatus {
            certificate: self.certificate.as_ref().map(CertificateInfo::to_wire),
            redirect_http: self.redirect_http,
            last_attempt: self.last_attempt.as_ref().map(|attempt| {
                protocol::web::CertificateAttempt {
                    at_unix: attempt.at.unix_timestamp(),
                    source: attempt.source,
                    error: attempt.error.clone(),
                }
            }),
        }
    }
}

/// A certificate that passed every check, ready to be written.
#[derive(Clone, PartialEq, Eq)]
pub struct CheckedCertificate {
    /// What the status shows.
    pub info: CertificateInfo,
    /// Leaf then chain, as PEM.
    pub fullchain_pem: String,
    /// The private key, as PEM.
    pub key_pem: String,
}

impl fmt::Debug for CheckedCertificate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CheckedCertificate")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Reads every PEM block of a field, refusing oversized or broken input.
fn pem_blocks(field: &str, text: &str, errors: &mut ValidationError) -> Vec<Pem> {
    if text.len() > MAX_PEM_BYTES {
        errors.push(field, format!("is larger than {MAX_PEM_BYTES} bytes"));
        return Vec::new();
    }
    let mut blocks = Vec::new();
    for block in Pem::iter_from_buffer(text.as_bytes()) {
        match block {
            Ok(block) => blocks.push(block),
            Err(error) => {
                errors.push(field, format!("is not valid PEM: {error}"));
                return Vec::new();
            }
        }
    }
    blocks
}

fn encode_pem(label: &str, der: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in encoded.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).unwrap_or_default());
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// The DNS names a certificate covers (subjectAltName only, as browsers do).
fn certificate_names(certificate: &X509Certificate<'_>) -> Vec<String> {
    match certificate.subject_alternative_name() {
        Ok(Some(extension)) => extension
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Checks a certificate for a vhost at `now`: it parses, the key matches the leaf, the leaf covers
/// every server name and is within its validity, and each chain certificate signed the one before.
pub fn check_certificate(
    upload: &CertificateUpload,
    names: &[ServerName],
    now: OffsetDateTime,
    source: CertificateSource,
) -> Result<CheckedCertificate, ValidationError> {
    let mut errors = ValidationError::default();
    let mut blocks = pem_blocks("certificate", &upload.certificate, &mut errors);
    if let Some(chain) = &upload.chain {
        blocks.extend(pem_blocks("chain", chain, &mut errors));
    }
    let key_blocks = pem_blocks("private_key", upload.private_key.expose(), &mut errors);
    if !errors.fields.is_empty() {
        return Err(errors);
    }
    if let Some(block) = blocks.iter().find(|block| block.label != "CERTIFICATE") {
        errors.push(
            "certificate",
            format!(
                "holds a '{}' block where certificates were expected",
                block.label
            ),
        );
    }
    if blocks.is_empty() {
        errors.push("certificate", "holds no certificate");
    }
    if blocks.len() > MAX_CHAIN_LENGTH {
        errors.push(
            "chain",
            format!("holds more than {MAX_CHAIN_LENGTH} certificates"),
        );
    }
    let key_block = match key_blocks.as_slice() {
        [block]
            if matches!(
                block.label.as_str(),
                "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY"
            ) =>
        {
            Some(block)
        }
        [block] if block.label.contains("ENCRYPTED") => {
            errors.push(
                "private_key",
                "is encrypted; upload the key without a passphrase",
            );
            None
        }
        [block] => {
            errors.push(
                "private_key",
                format!("holds a '{}' block, not a private key", block.label),
            );
            None
        }
        _ => {
            errors.push("private_key", "must hold exactly one private key");
            None
        }
    };
    if !errors.fields.is_empty() {
        return Err(errors);
    }

    let mut certificates = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        match block.parse_x509() {
            Ok(certificate) => certificates.push(certificate),
            Err(error) => {
                let field = if index == 0 {
                    "certificate".to_string()
                } else {
                    format!("chain[{}]", index - 1)
                };
                errors.push(field, format!("does not parse as X.509: {error}"));
            }
        }
    }
    if !errors.fields.is_empty() {
        return Err(errors);
    }
    let leaf = &certificates[0];

    if let Some(key_block) = key_block {
        match rcgen::KeyPair::try_from(key_block.contents.as_slice()) {
            Ok(key) => {
                if key.public_key_raw() != leaf.public_key().subject_public_key.data.as_ref() {
                    errors.push("private_key", "does not match the certificate");
                }
            }
            Err(error) => errors.push("private_key", format!("does not parse: {error}")),
        }
    }

    let covered = certificate_names(leaf);
    for name in names {
        if !covered
            .iter()
            .any(|certificate_name| name_covers(certificate_name, name))
        {
            errors.push(
                "certificate",
                format!("does not cover the server name {name}"),
            );
        }
    }

    for (index, certificate) in certificates.iter().enumerate() {
        let field = if index == 0 {
            "certificate".to_string()
        } else {
            format!("chain[{}]", index - 1)
        };
        let not_before = certificate.validity().not_before.to_datetime();
        let not_after = certificate.validity().not_after.to_datetime();
        if now < not_before {
            errors.push(field.clone(), format!("is not valid before {not_before}"));
        }
        if now > not_after {
            errors.push(field.clone(), format!("expired at {not_after}"));
        }
        if let Some(issuer) = certificates.get(index + 1) {
            let issuer_field = format!("chain[{index}]");
            if certificate.issuer() != issuer.subject() {
                errors.push(
                    issuer_field,
                    format!("is not the issuer of the certificate before it (expected {}); put the chain in order", certificate.issuer()),
                );
            } else if certificate
                .verify_signature(Some(issuer.public_key()))
                .is_err()
            {
                errors.push(issuer_field, "did not sign the certificate before it");
            }
        }
    }

    let info = CertificateInfo {
        source,
        issuer: leaf.issuer().to_string(),
        subject: leaf.subject().to_string(),
        names: covered,
        not_before: leaf.validity().not_before.to_datetime(),
        not_after: leaf.validity().not_after.to_datetime(),
        fingerprint_sha256: hex::encode(Sha256::digest(&blocks[0].contents)),
    };
    let fullchain_pem = blocks
        .iter()
        .map(|block| encode_pem("CERTIFICATE", &block.contents))
        .collect();
    let key_pem = key_block
        .map(|block| encode_pem(&block.label, &block.contents))
        .unwrap_or_default();
    errors.into_result(CheckedCertificate {
        info,
        fullchain_pem,
        key_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_input_is_refused_per_field() {
        let names = [ServerName::parse("example.com").unwrap()];
        let cases = [
            ("", "", "certificate"),
            (
                "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
                "",
                "certificate",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "private_key",
            ),
        ];
        for (certificate, key, field) in cases {
            let upload = CertificateUpload {
                certificate: certificate.into(),
                private_key: protocol::Secret::new(key),
                chain: None,
                redirect_http: None,
            };
            let error = check_certificate(
                &upload,
                &names,
                OffsetDateTime::UNIX_EPOCH,
                CertificateSource::Upload,
            )
            .unwrap_err();
            assert!(error.has(field), "{certificate:?}: {error}");
        }
    }
}
