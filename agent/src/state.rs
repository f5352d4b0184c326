//! The agent's state directory: its identity (key and certificate in one file, so a renewal
//! replaces both at once), the CA certificate and the enrollment facts.
//!
//! Files: `identity.pem` (0600: certificate then PKCS#8 key), `ca.crt` (0644), `agent.json`
//! (0644: coordinator address, instance, generation, CA fingerprint).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

/// The identity file: the certificate and its private key.
pub const IDENTITY_FILE: &str = "identity.pem";
/// The coordinator's CA certificate.
pub const CA_FILE: &str = "ca.crt";
/// Enrollment facts.
pub const ENROLLMENT_FILE: &str = "agent.json";

/// Why the state directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "this agent is not enrolled ({path} is missing); run `hostplane-agent enroll --token ...` first"
    )]
    NotEnrolled { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged: {message}; enroll the agent again")]
    Corrupt { path: PathBuf, message: String },
}

/// What the agent learned when it enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentFacts {
    /// `host:port` of the coordinator's QUIC endpoint.
    pub coordinator: String,
    pub instance_id: u32,
    pub generation: u64,
    /// SHA-256 hex of the CA certificate.
    pub ca_fingerprint: String,
}

/// The agent's certificate and key, with the certificate's validity.
pub struct Identity {
    pub certificate: CertificateDer<'static>,
    pub key: PrivatePkcs8KeyDer<'static>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            certificate: self.certificate.clone(),
            key: self.key.clone_key(),
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Identity")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The validity of a DER certificate.
pub fn validity(certificate: &[u8]) -> Option<(SystemTime, SystemTime)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let time = |seconds: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64);
    Some((
        time(parsed.validity().not_before.timestamp()),
        time(parsed.validity().not_after.timestamp()),
    ))
}

impl Identity {
    /// An identity from DER parts; `None` if the certificate cannot be parsed.
    pub fn new(certificate: Vec<u8>, key: Vec<u8>) -> Option<Identity> {
        let (not_before, not_after) = validity(&certificate)?;
        Some(Identity {
            certificate: CertificateDer::from(certificate),
            key: PrivatePkcs8KeyDer::from(key),
            not_before,
            not_after,
        })
    }

    /// When to renew: two thirds into the certificate's lifetime.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + lifetime * 2 / 3
    }
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), StateError> {
    shell::write_atomically(path, contents, Some(mode)).map_err(|source| StateError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> StateDir {
        StateDir { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Creates the directory (0700) if needed.
    pub fn create(&self) -> Result<(), StateError> {
        use std::os::unix::fs::DirBuilderExt;
        let error = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(error)
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, StateError> {
        let path = self.file(name);
        std::fs::read(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => StateError::NotEnrolled { path },
            _ => StateError::Read { path, source },
        })
    }

    /// Writes everything an enrollment produced: CA first, identity, then the facts, so a
    /// directory with `agent.json` is complete.
    pub fn save_enrollment(
        &self,
        facts: &EnrollmentFacts,
        identity: &Identity,
        ca_certificate: &[u8],
    ) -> Result<(), StateError> {
        self.create()?;
        write_atomically(
            &self.file(CA_FILE),
            pem("CERTIFICATE", ca_certificate).as_bytes(),
            0o644,
        )?;
        self.save_identity(identity)?;
        let json = serde_json::to_vec_pretty(facts).expect("facts serialize");
        write_atomically(&self.file(ENROLLMENT_FILE), &json, 0o644)
    }

    /// Replaces the identity (after a renewal) in one rename.
    pub fn save_identity(&self, identity: &Identity) -> Result<(), StateError> {
        let text = pem("CERTIFICATE", &identity.certificate)
            + &pem("PRIVATE KEY", identity.key.secret_pkcs8_der());
        write_atomically(&self.file(IDENTITY_FILE), text.as_bytes(), 0o600)
    }

    pub fn load_facts(&self) -> Result<EnrollmentFacts, StateError> {
        let bytes = self.read(ENROLLMENT_FILE)?;
        serde_json::from_slice(&bytes).map_err(|error| StateError::Corrupt {
            path: self.file(ENROLLMENT_FILE),
            message: error.to_string(),
        })
    }

    pub fn load_identity(&self) -> Result<Identity, StateError> {
        let bytes = self.read(IDENTITY_FILE)?;
        let corrupt = |message: String| StateError::Corrupt {
            path: self.file(IDENTITY_FILE),
            message,
        };
        let certificate = CertificateDer::from_pem_slice(&bytes)
            .map_err(|error| corrupt(format!("no certificate ({error})")))?;
        let key = PrivatePkcs8KeyDer::from_pem_slice(&bytes)
            .map_err(|error| corrupt(format!("no private key ({error})")))?;
        Identity::new(certificate.to_vec(), key.secret_pkcs8_der().to_vec())
            .ok_or_else(|| corrupt("the certificate cannot be parsed".into()))
    }

    pub fn load_ca(&self) -> Result<CertificateDer<'static>, StateError> {
        let bytes = self.read(CA_FILE)?;
        CertificateDer::from_pem_slice(&bytes).map_err(|error| StateError::Corrupt {
            path: self.file(CA_FILE),
            message: error.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_two_thirds_into_the_lifetime() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let identity = Identity {
            certificate: CertificateDer::from(Vec::new()),
            key: PrivatePkcs8KeyDer::from(Vec::new()),
            not_before: start,
            not_after: start + Duration::from_secs(9),
        };
        assert_eq!(identity.renew_at(), start + Duration::from_secs(6));
    }

    #[test]
    fn a_missing_directory_says_to_enroll() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("nothing"));
        let error = state.load_facts().unwrap_err();
        assert!(error.to_string().contains("enroll"), "{error}");
    }
}
