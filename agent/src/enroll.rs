//! `hostplane-agent enroll`: make a key here, send a CSR with the one-time token on the
//! enrollment ALPN to the coordinator pinned by the token's CA fingerprint, store what comes back.

use shell::sync::MutexExt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use protocol::{EnrollRequest, EnrollResponse, EnrollmentToken, Secret};
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData};
use sha2::{Digest, Sha256};

use crate::state::{EnrollmentFacts, Identity, StateDir, StateError};
use crate::tls::{Transport, enrollment_config};
use shell::wire::{FrameReader, WireError, write_handshake};

/// What `enroll` needs.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    pub token: String,
    /// Dial this `host:port` instead of the token's address.
    pub coordinator: Option<String>,
    pub state_dir: PathBuf,
    /// How long the whole exchange may take.
    pub timeout: Duration,
}

impl EnrollOptions {
    pub fn new(token: impl Into<String>, state_dir: impl Into<PathBuf>) -> EnrollOptions {
        EnrollOptions {
            token: token.into(),
            coordinator: None,
            state_dir: state_dir.into(),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why enrollment failed; every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Token(#[from] protocol::TokenError),
    #[error("cannot resolve the coordinator address {address}: {message}")]
    Resolve { address: String, message: String },
    #[error("cannot reach the coordinator at {address}: {message}")]
    Connect { address: String, message: String },
    #[error("{0}")]
    WrongCoordinator(String),
    #[error("the coordinator refused the enrollment: {0}")]
    Refused(protocol::ErrorData),
    #[error("the coordinator did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the enrollment exchange failed: {0}")]
    Exchange(String),
    #[error("key generation failed: {0}")]
    Key(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// The outcome of a successful enrollment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub instance_id: u32,
    pub generation: u64,
    pub coordinator: String,
}

/// Resolves `host:port` to a socket address.
pub async fn resolve(address: &str) -> Result<SocketAddr, EnrollError> {
    let error = |message: String| EnrollError::Resolve {
        address: address.to_string(),
        message,
    };
    tokio::net::lookup_host(address)
        .await
        .map_err(|e| error(e.to_string()))?
        .next()
        .ok_or_else(|| error("no address found".into()))
}

/// A client endpoint for dialing `remote`.
pub fn client_endpoint(remote: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let local: SocketAddr = if remote.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    quinn::Endpoint::client(local)
}

/// Enrolls and writes the state directory.
pub async fn enroll(options: EnrollOptions) -> Result<Enrolled, EnrollError> {
    crate::install_crypto_provider();
    let token = EnrollmentToken::decode(&options.token)?;
    let address = options
        .coordinator
        .clone()
        .unwrap_or_else(|| token.address.clone());
    let timeout = options.timeout;
    match tokio::time::timeout(timeout, exchange(&options, &token, &address)).await {
        Ok(result) => result,
        Err(_) => Err(EnrollError::Timeout(timeout)),
    }
}

async fn exchange(
    options: &EnrollOptions,
    token: &EnrollmentToken,
    address: &str,
) -> Result<Enrolled, EnrollError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|error| EnrollError::Key(error.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "hostplane-agent");
    let csr = params
        .serialize_request(&key)
        .map_err(|error| EnrollError::Key(error.to_string()))?;

    let remote = resolve(address).await?;
    let connect_error = |message: String| EnrollError::Connect {
        address: address.to_string(),
        message,
    };
    let (config, verifier) = enrollment_config(token.ca_fingerprint, Transport::default())
        .map_err(EnrollError::Exchange)?;
    let endpoint = client_endpoint(remote).map_err(|e| connect_error(e.to_string()))?;
    let pinned_failure = || verifier.failure.locked().clone();
    let connection = match endpoint
        .connect_with(config, remote, protocol::COORDINATOR_SERVER_NAME)
        .map_err(|e| connect_error(e.to_string()))?
        .await
    {
        Ok(connection) => connection,
        Err(error) => {
            return Err(match pinned_failure() {
                Some(reason) => EnrollError::WrongCoordinator(reason),
                None => connect_error(error.to_string()),
            });
        }
    };
    let result = async {
        let (mut send, receive) = connection
            .open_bi()
            .await
            .map_err(|e| EnrollError::Exchange(e.to_string()))?;
        let request = EnrollRequest {
            token: Secret::new(options.token.trim()),
            csr_der: csr.der().to_vec(),
            agent_version: crate::VERSION.to_string(),
        };
        let wire = |error: WireError| EnrollError::Exchange(error.to_string());
        write_handshake(&mut send, &request).await.map_err(wire)?;
        let _ = send.finish();
        let mut reader = FrameReader::new(receive, protocol::MAX_FRAME);
        match reader.handshake::<EnrollResponse>().await.map_err(wire)? {
            Some(EnrollResponse::Enrolled(enrollment)) => Ok(enrollment),
            Some(EnrollResponse::Refused(error)) => Err(EnrollError::Refused(error)),
            None => Err(EnrollError::Exchange(
                "the coordinator closed the stream without an answer".into(),
            )),
        }
    }
    .await;
    connection.close(quinn::VarInt::from_u32(0), b"done");
    endpoint.close(quinn::VarInt::from_u32(0), b"done");
    let enrollment = result?;

    let fingerprint: [u8; 32] = Sha256::digest(&enrollment.ca_certificate_der).into();
    if fingerprint != token.ca_fingerprint {
        return Err(EnrollError::WrongCoordinator(
            "the coordinator sent a CA certificate that does not match the token".into(),
        ));
    }
    let issued_key = x509_parser::parse_x509_certificate(&enrollment.certificate_der)
        .map(|(_, certificate)| certificate.public_key().raw.to_vec())
        .map_err(|error| EnrollError::Exchange(format!("unreadable certificate: {error}")))?;
    if issued_key != key.subject_public_key_info() {
        return Err(EnrollError::Exchange(
            "the certificate the coordinator sent is not for this agent's key".into(),
        ));
    }
    let identity = Identity::new(enrollment.certificate_der, key.serialize_der())
        .ok_or_else(|| EnrollError::Exchange("unreadable certificate".into()))?;
    let facts = EnrollmentFacts {
        coordinator: address.to_string(),
        instance_id: enrollment.instance_id,
        generation: enrollment.generation,
        ca_fingerprint: hex::encode(fingerprint),
    };
    StateDir::new(&options.state_dir).save_enrollment(
        &facts,
        &identity,
        &enrollment.ca_certificate_der,
    )?;
    Ok(Enrolled {
        instance_id: enrollment.instance_id,
        generation: enrollment.generation,
        coordinator: address.to_string(),
    })
}
