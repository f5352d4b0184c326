//! The client-certificate check of the QUIC handshake: the webpki chain check against the agent
//! CA, then the identity in the certificate against the current enrollment generation and the
//! revocations, so a stale or revoked certificate is refused inside the TLS handshake.

use shell::sync::RwLockExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::ca::AgentIdentity;

/// What the handshake may accept for one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorization {
    /// The only generation accepted.
    pub generation: u64,
    pub revoked: bool,
}

/// The in-memory copy of every instance's [`Authorization`], kept in step with the store by
/// enrollment and revocation. Reading it never touches the store, so a handshake costs no IO.
#[derive(Debug, Default)]
pub struct Authorizations {
    map: RwLock<HashMap<u32, Authorization>>,
}

/// Why a verified chain is still refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The certificate has no (or more than one) Hostplane identity.
    NoIdentity,
    /// The instance was never enrolled (or its record is gone).
    UnknownInstance,
    Revoked,
    /// A newer enrollment replaced this certificate.
    StaleGeneration,
}

impl Authorizations {
    pub fn set(&self, instance: u32, authorization: Authorization) {
        self.map.write_recovered().insert(instance, authorization);
    }

    pub fn remove(&self, instance: u32) {
        self.map.write_recovered().remove(&instance);
    }

    pub fn get(&self, instance: u32) -> Option<Authorization> {
        self.map.read_recovered().get(&instance).copied()
    }

    /// Whether `identity` may connect now.
    pub fn check(&self, identity: AgentIdentity) -> Result<(), Refusal> {
        match self.get(identity.instance) {
            None => Err(Refusal::UnknownInstance),
            Some(authorization) if authorization.revoked => Err(Refusal::Revoked),
            Some(authorization) if authorization.generation != identity.generation => {
                Err(Refusal::StaleGeneration)
            }
            Some(_) => Ok(()),
        }
    }
}

/// Counts of handshakes refused by this verifier, by reason.
#[derive(Debug, Default)]
pub struct RefusalCounts {
    pub chain: AtomicU64,
    pub identity: AtomicU64,
}

/// Wraps the webpki verifier (chain, expiry, key usage) and adds the identity check.
/// Client certificates are optional at the TLS level because the enrollment ALPN has none; the
/// connection code closes an agent-ALPN connection without a certificate before serving it.
#[derive(Debug)]
pub struct AgentCertVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    authorizations: Arc<Authorizations>,
    counts: Arc<RefusalCounts>,
}

impl AgentCertVerifier {
    pub fn new(
        inner: Arc<dyn ClientCertVerifier>,
        authorizations: Arc<Authorizations>,
        counts: Arc<RefusalCounts>,
    ) -> AgentCertVerifier {
        AgentCertVerifier {
            inner,
            authorizations,
            counts,
        }
    }
}

impl ClientCertVerifier for AgentCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Err(error) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            self.counts.chain.fetch_add(1, Ordering::Relaxed);
            return Err(error);
        }
        let refusal = match AgentIdentity::from_certificate(end_entity) {
            None => Refusal::NoIdentity,
            Some((identity, _)) => match self.authorizations.check(identity) {
                Ok(()) => return Ok(ClientCertVerified::assertion()),
                Err(refusal) => refusal,
            },
        };
        self.counts.identity.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(?refusal, "refused an agent certificate at the handshake");
        Err(rustls::Error::InvalidCertificate(match refusal {
            Refusal::Revoked | Refusal::StaleGeneration => CertificateError::Revoked,
            Refusal::NoIdentity | Refusal::UnknownInstance => {
                CertificateError::ApplicationVerificationFailure
            }
        }))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner
            .verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_current_unrevoked_generation_passes() {
        let authorizations = Authorizations::default();
        authorizations.set(
            101,
            Authorization {
                generation: 2,
                revoked: false,
            },
        );
        authorizations.set(
            102,
            Authorization {
                generation: 1,
                revoked: true,
            },
        );
        let identity = |instance, generation| AgentIdentity {
            instance,
            generation,
        };
        let cases = [
            (identity(101, 2), Ok(())),
            (identity(101, 1), Err(Refusal::StaleGeneration)),
            (identity(101, 3), Err(Refusal::StaleGeneration)),
            (identity(102, 1), Err(Refusal::Revoked)),
            (identity(103, 1), Err(Refusal::UnknownInstance)),
        ];
        for (identity, expected) in cases {
            assert_eq!(authorizations.check(identity), expected, "{identity:?}");
        }
    }
}
