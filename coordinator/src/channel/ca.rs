//! The agents' certificate authority: created once, then only ever loaded; it signs the agents'
//! certificates (with an identity the coordinator writes itself) and the QUIC server certificate.
//!
//! Invariant: once the store records that a CA exists, a missing, unreadable or different CA file
//! is an error. A silently regenerated CA would orphan every enrolled agent.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

use crate::store::records::AgentCaRecord;
use crate::store::{Store, StoreError, Table};

/// The CA certificate file in the data directory (PEM, 0644).
pub const CA_CERTIFICATE_FILE: &str = "agent-ca.crt";
/// The CA key file in the data directory (PEM, 0600).
pub const CA_KEY_FILE: &str = "agent-ca.key";
/// The `Meta` key of the [`AgentCaRecord`].
pub const CA_META_KEY: &str = "agent_ca";

/// How long the CA itself is valid.
const CA_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// How long a QUIC server certificate is valid; a new one is made at every start.
pub const SERVER_CERTIFICATE_LIFETIME: Duration = Duration::from_secs(398 * 24 * 3600);

/// Why the CA could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(
        "the agent CA file {path} is missing or unreadable ({message}); the store says a CA was \
         created (fingerprint {fingerprint}), so restore the file from a backup: a new CA would \
         orphan every enrolled agent"
    )]
    Missing {
        path: PathBuf,
        fingerprint: String,
        message: String,
    },
    #[error("the agent CA file {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "the agent CA certificate {path} has fingerprint {found}, but the store recorded \
         {expected}; restore the original CA files"
    )]
    Mismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate signing request is invalid: {0}")]
    InvalidRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who a client certificate belongs to, as the coordinator wrote it into the SAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AgentIdentity {
    pub instance: u32,
    pub generation: u64,
}

impl AgentIdentity {
    /// The URI SAN of the identity: `hostplane://instance/<id>/generation/<n>`.
    pub fn uri(&self) -> String {
        format!(
            "hostplane://instance/{}/generation/{}",
            self.instance, self.generation
        )
    }

    /// Parses [`AgentIdentity::uri`] back; anything else is `None`.
    pub fn from_uri(uri: &str) -> Option<AgentIdentity> {
        let rest = uri.strip_prefix("hostplane://instance/")?;
        let (instance, generation) = rest.split_once("/generation/")?;
        let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        if !digits(instance) || !digits(generation) {
            return None;
        }
        Some(AgentIdentity {
            instance: instance.parse().ok()?,
            generation: generation.parse().ok()?,
        })
    }

    /// The identity and expiry written in a DER certificate, if it has exactly one of our
    /// URIs. The certificate's chain must already have been verified.
    pub fn from_certificate(der: &[u8]) -> Option<(AgentIdentity, SystemTime)> {
        let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
        let names = certificate.subject_alternative_name().ok()??;
        let mut found = names
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => AgentIdentity::from_uri(uri),
                _ => None,
            });
        let identity = found.next()?;
        if found.next().is_some() {
            return None;
        }
        let not_after = certificate.validity().not_after.timestamp();
        let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.max(0) as u64);
        Some((identity, not_after))
    }
}

/// A certificate the CA signed, with its validity.
#[derive(Debug, Clone)]
pub struct Issued {
    pub certificate_der: Vec<u8>,
    pub not_after: SystemTime,
}

/// The loaded CA.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    certificate_der: CertificateDer<'static>,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "CertificateAuthority({})",
            hex::encode(self.fingerprint)
        )
    }
}

/// SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

fn to_offset(time: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(time)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // A positive serial number that does not start with a zero byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

/// Writes `contents` to `path` atomically, with `mode` permissions.
fn write_private(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    shell::write_atomically(path, contents, Some(mode)).map_err(|source| CaError::Write {
        path: path.to_path_buf(),
        source,
    })
}

impl CertificateAuthority {
    /// Loads the CA the store knows about, or creates one on the very first start.
    pub fn load_or_create(data_dir: &Path, store: &Store) -> Result<CertificateAuthority, CaError> {
        let certificate_path = data_dir.join(CA_CERTIFICATE_FILE);
        let key_path = data_dir.join(CA_KEY_FILE);
        let record: Option<AgentCaRecord> = store.get(Table::Meta, CA_META_KEY)?;
        match record {
            Some(record) => {
                let authority = Self::load(&certificate_path, &key_path, &record.fingerprint)?;
                let found = hex::encode(authority.fingerprint);
                if found != record.fingerprint {
                    return Err(CaError::Mismatch {
                        path: certificate_path,
                        expected: record.fingerprint,
                        found,
                    });
                }
                Ok(authority)
            }
            None => {
                if certificate_path.exists() || key_path.exists() {
                    // Files without a record: a store that was replaced. Adopting them keeps the
                    // enrolled agents working; a damaged file is still an error.
                    let authority = Self::load(&certificate_path, &key_path, "(not recorded)")?;
                    Self::record(store, &authority)?;
                    tracing::warn!(
                        fingerprint = %hex::encode(authority.fingerprint),
                        "adopted the agent CA files found in the data directory"
                    );
                    return Ok(authority);
                }
                let authority = Self::create(&certificate_path, &key_path)?;
                Self::record(store, &authority)?;
                tracing::info!(
                    fingerprint = %hex::encode(authority.fingerprint),
                    "created the agent certificate authority"
                );
                Ok(authority)
            }
        }
    }

    fn record(store: &Store, authority: &CertificateAuthority) -> Result<(), CaError> {
        let record = AgentCaRecord {
            fingerprint: hex::encode(authority.fingerprint),
            created_at: super::now_rfc3339(),
        };
        store.put(Table::Meta, CA_META_KEY, &record)?;
        Ok(())
    }

    fn create(certificate_path: &Path, key_path: &Path) -> Result<CertificateAuthority, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Hostplane agent CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = crate::clock::system_now();
        params.not_before = to_offset(now - Duration::from_secs(3600));
        params.not_after = to_offset(now + CA_LIFETIME);
        params.serial_number = Some(random_serial());
        let certificate = params.self_signed(&key)?;
        write_private(key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_private(certificate_path, certificate.pem().as_bytes(), 0o644)?;
        let certificate_der = certificate.der().clone();
        Ok(CertificateAuthority {
            fingerprint: fingerprint(&certificate_der),
            issuer: Issuer::new(params, key),
            certificate_der,
        })
    }

    fn load(
        certificate_path: &Path,
        key_path: &Path,
        recorded: &str,
    ) -> Result<CertificateAuthority, CaError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|error| CaError::Missing {
                path: path.to_path_buf(),
                fingerprint: recorded.to_string(),
                message: error.to_string(),
            })
        };
        let certificate_pem = read(certificate_path)?;
        let key_pem = read(key_path)?;
        let corrupt = |path: &Path, message: String| CaError::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        use rustls_pki_types::pem::PemObject;
        let certificate_der = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
            .map_err(|error| corrupt(certificate_path, error.to_string()))?;
        let key =
            KeyPair::from_pem(&key_pem).map_err(|error| corrupt(key_path, error.to_string()))?;
        let parsed = x509_parser::parse_x509_certificate(&certificate_der)
            .map_err(|error| corrupt(certificate_path, error.to_string()))?
            .1;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(corrupt(
                key_path,
                "the key does not belong to the CA certificate".into(),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&certificate_der, key)
            .map_err(|error| corrupt(certificate_path, error.to_string()))?;
        Ok(CertificateAuthority {
            fingerprint: fingerprint(&certificate_der),
            issuer,
            certificate_der,
        })
    }

    /// The CA certificate in DER.
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.certificate_der
    }

    /// SHA-256 of the CA certificate.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// Signs a certificate for the public key in `csr_der`. Every name and extension in the
    /// request is ignored: the identity is `identity`, the validity `lifetime` from now.
    pub fn issue_agent_certificate(
        &self,
        csr_der: &[u8],
        identity: AgentIdentity,
        lifetime: Duration,
    ) -> Result<Issued, CaError> {
        let request =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|error| CaError::InvalidRequest(error.to_string()))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            format!("hostplane agent {}", identity.instance),
        );
        params.distinguished_name = name;
        params.subject_alt_names =
            vec![SanType::URI(identity.uri().try_into().map_err(
                |error: rcgen::Error| CaError::InvalidRequest(error.to_string()),
            )?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let now = crate::clock::system_now();
        // A little back-dating absorbs clock skew between host and container; a quarter of the
        // lifetime at most so that short test lifetimes stay meaningful.
        let backdate = (lifetime / 4).min(Duration::from_secs(300));
        let not_after = now + lifetime;
        params.not_before = to_offset(now - backdate);
        params.not_after = to_offset(not_after);
        params.serial_number = Some(random_serial());
        let signed = CertificateSigningRequestParams {
            params,
            public_key: request.public_key,
        }
        .signed_by(&self.issuer)?;
        Ok(Issued {
            certificate_der: signed.der().to_vec(),
            not_after,
        })
    }

    /// A 32-byte secret for `purpose`: HMAC-SHA256 over the purpose, keyed with the CA's private
    /// key. The same on every start for as long as the CA exists, so it needs no file of its own,
    /// and no other secret can be computed from it.
    pub fn derive_secret(&self, purpose: &str) -> [u8; 32] {
        use aws_lc_rs::hmac;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.issuer.key().serialize_der());
        let mut secret = [0u8; 32];
        secret.copy_from_slice(hmac::sign(&key, purpose.as_bytes()).as_ref());
        secret
    }

    /// A fresh key and certificate for the QUIC endpoint, named [`protocol::COORDINATOR_SERVER_NAME`].
    pub fn issue_server_certificate(
        &self,
    ) -> Result<(CertificateDer<'static>, PrivatePkcs8KeyDer<'static>), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![protocol::COORDINATOR_SERVER_NAME.into()])?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Hostplane coordinator");
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = crate::clock::system_now();
        params.not_before = to_offset(now - Duration::from_secs(3600));
        params.not_after = to_offset(now + SERVER_CERTIFICATE_LIFETIME);
        params.serial_number = Some(random_serial());
        let certificate = params.signed_by(&key, &self.issuer)?;
        Ok((
            certificate.der().clone(),
            PrivatePkcs8KeyDer::from(key.serialize_der()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> Vec<u8> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["admin.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "instance 999 please");
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn identity_uris_round_trip_and_strangers_are_refused() {
        let identity = AgentIdentity {
            instance: 101,
            generation: 3,
        };
        assert_eq!(identity.uri(), "hostplane://instance/101/generation/3");
        assert_eq!(AgentIdentity::from_uri(&identity.uri()), Some(identity));
        for bad in [
            "hostplane://instance/101",
            "hostplane://instance/-1/generation/3",
            "hostplane://instance/101/generation/3/x",
            "https://instance/101/generation/3",
            "hostplane://instance//generation/3",
        ] {
            assert_eq!(AgentIdentity::from_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_ca_is_created_once_then_loaded_and_a_lost_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = CertificateAuthority::load_or_create(dir.path(), &store).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(CA_KEY_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = CertificateAuthority::load_or_create(dir.path(), &store).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        // Secrets derived from the CA key survive a restart and differ by purpose and by CA.
        assert_eq!(first.derive_secret("a"), again.derive_secret("a"));
        assert_ne!(first.derive_secret("a"), first.derive_secret("b"));
        let other_dir = tempfile::tempdir().unwrap();
        let other_store = Store::open(other_dir.path()).unwrap();
        let other = CertificateAuthority::load_or_create(other_dir.path(), &other_store).unwrap();
        assert_ne!(first.derive_secret("a"), other.derive_secret("a"));

        std::fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
        let error = CertificateAuthority::load_or_create(dir.path(), &store).unwrap_err();
        assert!(matches!(error, CaError::Missing { .. }), "{error}");
        assert!(
            !dir.path().join(CA_KEY_FILE).exists(),
            "no new key was made"
        );

        std::fs::write(dir.path().join(CA_KEY_FILE), "garbage").unwrap();
        let error = CertificateAuthority::load_or_create(dir.path(), &store).unwrap_err();
        assert!(matches!(error, CaError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn a_replaced_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let other_store = Store::open(other.path()).unwrap();
        CertificateAuthority::load_or_create(dir.path(), &store).unwrap();
        CertificateAuthority::load_or_create(other.path(), &other_store).unwrap();
        for file in [CA_CERTIFICATE_FILE, CA_KEY_FILE] {
            std::fs::copy(other.path().join(file), dir.path().join(file)).unwrap();
        }
        let error = CertificateAuthority::load_or_create(dir.path(), &store).unwrap_err();
        assert!(matches!(error, CaError::Mismatch { .. }), "{error}");
    }

    #[test]
    fn agent_certificates_carry_only_the_identity_the_coordinator_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let authority = CertificateAuthority::load_or_create(dir.path(), &store).unwrap();
        let identity = AgentIdentity {
            instance: 101,
            generation: 2,
        };
        let issued = authority
            .issue_agent_certificate(&csr(), identity, Duration::from_secs(600))
            .unwrap();
        let (found, not_after) = AgentIdentity::from_certificate(&issued.certificate_der).unwrap();
        assert_eq!(found, identity);
        let difference = not_after
            .duration_since(issued.not_after)
            .unwrap_or_else(|error| error.duration());
        assert!(difference < Duration::from_secs(2));
        let (_, parsed) = x509_parser::parse_x509_certificate(&issued.certificate_der).unwrap();
        let text = format!("{:?}", parsed.subject()) + &format!("{:?}", parsed.extensions());
        assert!(!text.contains("admin.example") && !text.contains("999"));
        assert!(
            authority
                .issue_agent_certificate(b"not a request", identity, Duration::from_secs(60))
                .is_err()
        );
    }
}
