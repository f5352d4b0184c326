//! QUIC client configurations: enrollment (coordinator pinned by its CA fingerprint, no client
//! certificate) and the agent connection (coordinator verified against the stored CA, the
//! agent's certificate presented). Both use TLS 1.3 only and never resume sessions.

use shell::sync::MutexExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::state::Identity;

/// Transport settings tuned by tests; production uses [`Transport::default`].
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            // Longer than the heartbeat interval the coordinator names (15 s), so while
            // heartbeats flow they keep the connection alive and no keep-alive is ever sent; it
            // still fires within the idle timeout if a coordinator asks for rarer heartbeats.
            // With 10 s, keep-alives from 10,000 agents cost the coordinator as much CPU as their
            // heartbeats did.
            keep_alive: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(40),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The largest UDP payload MTU discovery tries: a jumbo-frame network (or loopback) carries a
/// dump in six times fewer packets than the 1452-byte default; on an ordinary 1500-byte path
/// the probes above it are lost and discovery settles where it would have anyway.
pub const MTU_UPPER_BOUND: u16 = 8952;

fn transport_config(transport: Transport) -> Arc<quinn::TransportConfig> {
    let mut config = quinn::TransportConfig::default();
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_UPPER_BOUND);
    config
        .mtu_discovery_config(Some(mtu))
        // The coordinator opens one stream per task; more than this wait for a free one.
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(32))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .stream_receive_window(quinn::VarInt::from_u32(256 * 1024))
        .receive_window(quinn::VarInt::from_u32(1024 * 1024))
        .datagram_receive_buffer_size(None)
        .keep_alive_interval(Some(transport.keep_alive))
        .max_idle_timeout(quinn::IdleTimeout::try_from(transport.idle_timeout).ok());
    Arc::new(config)
}

fn finish(
    mut tls: rustls::ClientConfig,
    alpn: &[u8],
    transport: Transport,
) -> Result<quinn::ClientConfig, String> {
    tls.alpn_protocols = vec![alpn.to_vec()];
    tls.resumption = Resumption::disabled();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|error| error.to_string())?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config(transport));
    Ok(config)
}

/// The client configuration of an agent connection.
pub fn agent_config(
    ca: &CertificateDer<'static>,
    identity: &Identity,
    transport: Transport,
) -> Result<quinn::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|error| error.to_string())?;
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![identity.certificate.clone()],
            identity.key.clone_key().into(),
        )
        .map_err(|error| error.to_string())?;
    finish(tls, protocol::ALPN, transport)
}

/// Accepts the coordinator only if its chain contains the CA with the pinned fingerprint and the
/// server certificate verifies against that CA. Remembers why it refused.
#[derive(Debug)]
pub struct PinnedCa {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
    /// Why the last check failed, in words for the operator.
    pub failure: Mutex<Option<String>>,
}

impl PinnedCa {
    pub fn new(fingerprint: [u8; 32]) -> PinnedCa {
        PinnedCa {
            fingerprint,
            provider: provider(),
            failure: Mutex::new(None),
        }
    }

    fn refuse(&self, message: String) -> rustls::Error {
        *self.failure.locked() = Some(message.clone());
        rustls::Error::General(message)
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|certificate| <[u8; 32]>::from(Sha256::digest(certificate)) == self.fingerprint)
        else {
            return Err(self.refuse(
                "the coordinator's CA does not match the fingerprint in the token: this token is \
                 for another coordinator (or the address is wrong)"
                    .into(),
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|error| self.refuse(format!("the pinned CA is unusable: {error}")))?;
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|error| self.refuse(error.to_string()))?;
        verifier
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
            .map_err(|error| {
                self.refuse(format!(
                    "the coordinator's certificate does not verify against its CA: {error}"
                ))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The client configuration of enrollment, with the verifier whose refusal reason is readable.
pub fn enrollment_config(
    fingerprint: [u8; 32],
    transport: Transport,
) -> Result<(quinn::ClientConfig, Arc<PinnedCa>), String> {
    let verifier = Arc::new(PinnedCa::new(fingerprint));
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| error.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    Ok((finish(tls, protocol::ENROLL_ALPN, transport)?, verifier))
}
