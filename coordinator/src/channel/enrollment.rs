//! Enrollment: issuing one-time tokens, and the unauthenticated enrollment ALPN that trades a
//! token and a CSR for a certificate whose identity the coordinator writes itself.

use shell::sync::MutexExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use protocol::{
    EnrollRequest, EnrollResponse, Enrollment, EnrollmentToken, ErrorCode, ErrorData,
    TOKEN_SECRET_BYTES,
};
use quinn::VarInt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::ca::AgentIdentity;
use super::verifier::Authorization;
use super::{ChannelError, Inner, close_code, now_rfc3339, parse_rfc3339, rfc3339};
use crate::store::records::{AgentRecord, EnrollmentTokenRecord, InstanceRecord};
use crate::store::{StoreError, Table};
use shell::wire::{FrameReader, WireError, write_handshake};

/// The largest enrollment request accepted (a CSR is well under 1 KiB).
const MAX_ENROLL_FRAME: usize = 16 * 1024;

/// The enrollment shape of the API.
#[derive(Debug, Clone, Serialize)]
pub struct EnrollmentOffer {
    /// Shown once; the coordinator keeps only its hash.
    pub token: String,
    pub expires_at: String,
    /// The line to run in the container.
    pub command: String,
}

fn token_hash(secret: &[u8]) -> String {
    hex::encode(Sha256::digest(secret))
}

pub(super) fn issue(
    inner: &Inner,
    instance: u32,
    created_by: &str,
) -> Result<EnrollmentOffer, ChannelError> {
    let address = match &inner.options.advertise {
        Some(address) => address.clone(),
        None => {
            let bound = inner
                .local_address
                .get()
                .copied()
                .ok_or(ChannelError::NotStarted)?;
            if bound.ip().is_unspecified() {
                return Err(ChannelError::NoAdvertisedAddress(bound.to_string()));
            }
            bound.to_string()
        }
    };
    let secret: [u8; TOKEN_SECRET_BYTES] = rand::random();
    let now = crate::clock::system_now();
    let expires = now + inner.options.enrollment_ttl;
    let record = EnrollmentTokenRecord {
        instance,
        created_at: rfc3339(now),
        expires_at: rfc3339(expires),
        created_by: created_by.to_string(),
    };
    inner.store.write(|write| {
        // Expired tokens are swept whenever a new one is made; the table stays small.
        let tokens: Vec<(String, EnrollmentTokenRecord)> = write.list(Table::EnrollmentTokens)?;
        for (hash, token) in tokens {
            if parse_rfc3339(&token.expires_at).is_none_or(|expires| expires <= now) {
                write.delete(Table::EnrollmentTokens, &hash)?;
            }
        }
        write.put(Table::EnrollmentTokens, &token_hash(&secret), &record)
    })?;
    let token = EnrollmentToken {
        secret,
        ca_fingerprint: inner.ca.fingerprint(),
        address,
    }
    .encode();
    Ok(EnrollmentOffer {
        command: format!("hostplane-agent enroll --token {token}"),
        token,
        expires_at: record.expires_at,
    })
}

fn refused(code: ErrorCode, message: impl Into<String>) -> ErrorData {
    ErrorData::new(code, message)
}

/// Checks the token and signs the CSR, consuming the token in the transaction that records the
/// new generation.
fn enroll(inner: &Inner, request: &EnrollRequest) -> Result<Enrollment, ErrorData> {
    let token = EnrollmentToken::decode(request.token.expose())
        .map_err(|error| refused(ErrorCode::Unauthenticated, error.to_string()))?;
    if token.ca_fingerprint != inner.ca.fingerprint() {
        return Err(refused(
            ErrorCode::Unauthenticated,
            "this token was issued by another coordinator",
        ));
    }
    // Parse the request before the token is spent, so a broken CSR does not waste it.
    rcgen::CertificateSigningRequestParams::from_der(&request.csr_der.as_slice().into()).map_err(
        |error| {
            refused(
                ErrorCode::InvalidInput,
                format!("the certificate signing request is invalid: {error}"),
            )
        },
    )?;
    let hash = token_hash(&token.secret);
    let lifetime = inner.options.certificate_lifetime;
    let agent_version: String = request.agent_version.chars().take(64).collect();
    let _guard = inner.identity_lock.locked();
    let outcome = inner.store.write(|write| {
        let Some(record) = write.get::<EnrollmentTokenRecord>(Table::EnrollmentTokens, &hash)?
        else {
            return Ok(Err(refused(
                ErrorCode::Unauthenticated,
                "this enrollment token is unknown or was already used; ask for a new one",
            )));
        };
        write.delete(Table::EnrollmentTokens, &hash)?;
        let expired =
            parse_rfc3339(&record.expires_at).is_none_or(|at| at <= crate::clock::system_now());
        if expired {
            return Ok(Err(refused(
                ErrorCode::Unauthenticated,
                format!(
                    "this enrollment token expired at {}; ask for a new one",
                    record.expires_at
                ),
            )));
        }
        let key = InstanceRecord::key(record.instance);
        if write
            .get::<InstanceRecord>(Table::Instances, &key)?
            .is_none()
        {
            return Ok(Err(refused(
                ErrorCode::NotFound,
                format!("instance {} no longer exists", record.instance),
            )));
        }
        let previous = write.get::<AgentRecord>(Table::Agents, &key)?;
        let generation = previous.as_ref().map_or(1, |agent| agent.generation + 1);
        let identity = AgentIdentity {
            instance: record.instance,
            generation,
        };
        let issued = match inner
            .ca
            .issue_agent_certificate(&request.csr_der, identity, lifetime)
        {
            Ok(issued) => issued,
            Err(error) => {
                return Err(StoreError::Database(format!("signing failed: {error}")));
            }
        };
        write.put(
            Table::Agents,
            &key,
            &AgentRecord {
                instance: record.instance,
                generation,
                revoked: false,
                enrolled_at: now_rfc3339(),
                revoked_at: None,
                last_seen: previous.as_ref().and_then(|agent| agent.last_seen.clone()),
                version: Some(agent_version.clone()),
                certificate_not_after: Some(rfc3339(issued.not_after)),
            },
        )?;
        Ok(Ok(Enrollment {
            certificate_der: issued.certificate_der,
            ca_certificate_der: inner.ca.certificate_der().to_vec(),
            instance_id: record.instance,
            generation,
        }))
    });
    let enrollment = match outcome {
        Ok(outcome) => outcome?,
        Err(error) => {
            tracing::error!(%error, "enrollment failed in the store");
            return Err(refused(
                ErrorCode::Internal,
                "the coordinator could not record the enrollment; try again",
            ));
        }
    };
    inner.authorizations.set(
        enrollment.instance_id,
        Authorization {
            generation: enrollment.generation,
            revoked: false,
        },
    );
    drop(_guard);
    // An agent still connected with the previous generation is cut off now.
    if let Some(connection) = inner.registry.connection(enrollment.instance_id) {
        connection.close(
            VarInt::from_u32(close_code::REPLACED),
            b"the instance was enrolled again",
        );
    }
    tracing::info!(
        instance = enrollment.instance_id,
        generation = enrollment.generation,
        "enrolled an agent"
    );
    Ok(enrollment)
}

pub(super) async fn serve(inner: Arc<Inner>, connection: quinn::Connection) {
    let remote = connection.remote_address();
    let allowed = inner.limiter.locked().attempt(remote.ip(), Instant::now());
    let exchange = tokio::time::timeout(inner.options.handshake_timeout, async {
        let (mut send, receive) = connection.accept_bi().await.ok()?;
        let mut reader = FrameReader::new(receive, MAX_ENROLL_FRAME);
        let request = reader.handshake::<EnrollRequest>().await;
        let response = match (allowed, request) {
            (Err(wait), _) => EnrollResponse::Refused(refused(
                ErrorCode::ResourceExhausted,
                format!(
                    "too many enrollment attempts; try again in {} s",
                    wait.as_secs().max(1)
                ),
            )),
            (Ok(()), Ok(Some(request))) => match enroll(&inner, &request) {
                Ok(enrollment) => EnrollResponse::Enrolled(enrollment),
                Err(error) => EnrollResponse::Refused(error),
            },
            (
                Ok(()),
                Err(WireError::Protocol(protocol::ProtocolError::VersionMismatch {
                    theirs, ..
                })),
            ) => EnrollResponse::Refused(refused(
                ErrorCode::Unsupported,
                format!(
                    "this coordinator speaks protocol version {}, the agent speaks {theirs}",
                    protocol::PROTOCOL_VERSION
                ),
            )),
            (Ok(()), Ok(None) | Err(_)) => {
                inner
                    .counters
                    .protocol_violations
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        match &response {
            EnrollResponse::Enrolled(_) => {
                inner.counters.enrollments.fetch_add(1, Ordering::Relaxed)
            }
            EnrollResponse::Refused(_) => inner
                .counters
                .enrollments_refused
                .fetch_add(1, Ordering::Relaxed),
        };
        write_handshake(&mut send, &response).await.ok()?;
        send.finish().ok()?;
        Some(())
    })
    .await;
    if matches!(exchange, Ok(Some(()))) {
        // Let the agent read the answer and close first.
        let _ = tokio::time::timeout(Duration::from_secs(5), connection.closed()).await;
    }
    connection.close(VarInt::from_u32(close_code::ENROLLMENT_DONE), b"done");
}
