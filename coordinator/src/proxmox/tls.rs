//! TLS trust for Proxmox endpoints. Proxmox ships a self-signed certificate, so an endpoint is
//! trusted through its CA certificate or through the SHA-256 fingerprint of its certificate
//! (pinning). The pin replaces only the chain check: the handshake signatures are still
//! verified against the pinned certificate's key. Accepting any certificate needs an explicit
//! insecure setting and is logged.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::error::ProxmoxError;

/// How the endpoint's certificate is trusted.
#[derive(Clone, PartialEq, Eq)]
pub enum Trust {
    /// The certificate's SHA-256 fingerprint must match.
    Fingerprint([u8; 32]),
    /// The chain must lead to one of these CA certificates (PEM text).
    CaPem(String),
    /// Any certificate (signatures are still checked). Only for explicit insecure setups.
    Insecure,
}

impl fmt::Debug for Trust {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::Fingerprint(pin) => {
                write!(formatter, "Fingerprint({})", format_fingerprint(pin))
            }
            Trust::CaPem(_) => formatter.write_str("CaPem(..)"),
            Trust::Insecure => formatter.write_str("Insecure"),
        }
    }
}

/// Parses a SHA-256 fingerprint written as 64 hex digits, with or without `:` between pairs.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    if digits.len() != 64 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(
            "must be a SHA-256 fingerprint: 32 hex byte pairs, optionally separated by ':'".into(),
        );
    }
    let mut pin = [0u8; 32];
    hex::decode_to_slice(&digits, &mut pin).map_err(|error| error.to_string())?;
    Ok(pin)
}

/// Writes a fingerprint as Proxmox shows it: upper-case pairs joined by `:`.
pub fn format_fingerprint(pin: &[u8; 32]) -> String {
    pin.iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The SHA-256 fingerprint of a DER certificate.
pub fn fingerprint_of(certificate: &[u8]) -> [u8; 32] {
    Sha256::digest(certificate).into()
}

fn equal_in_constant_time(left: &[u8; 32], right: &[u8; 32]) -> bool {
    left.iter()
        .zip(right.iter())
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}

/// Accepts exactly the pinned certificate (or, insecure, any) and verifies handshake signatures
/// with the provider's algorithms.
#[derive(Debug)]
struct PinnedVerifier {
    pin: Option<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(pin) if equal_in_constant_time(pin, &fingerprint_of(end_entity)) => {
                Ok(ServerCertVerified::assertion())
            }
            Some(_) => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, certificate, signed, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signed: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, certificate, signed, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

fn config_error(message: impl Into<String>) -> ProxmoxError {
    ProxmoxError::Config {
        message: message.into(),
    }
}

/// The rustls client configuration for a trust setting.
pub fn client_config(trust: &Trust) -> Result<ClientConfig, ProxmoxError> {
    crate::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| config_error(error.to_string()))?;
    let config = match trust {
        Trust::CaPem(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let certificate = certificate
                    .map_err(|error| config_error(format!("unreadable CA certificate: {error}")))?;
                roots
                    .add(certificate)
                    .map_err(|error| config_error(format!("unusable CA certificate: {error}")))?;
            }
            if roots.is_empty() {
                return Err(config_error("the CA file holds no certificate"));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: Some(*pin),
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        Trust::Insecure => {
            tracing::warn!(
                "a Proxmox endpoint is configured to accept any TLS certificate; \
                 its traffic and API token can be intercepted"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                    pin: None,
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// The provider used for signature checks, for callers that need one.
pub fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_parsed_in_both_spellings() {
        let colon = "AB:".repeat(31) + "CD";
        let cases: &[(&str, Result<u8, ()>)] = &[
            (&colon, Ok(0xAB)),
            (&"ab".repeat(32), Ok(0xAB)),
            ("AB:CD", Err(())),
            (&"zz".repeat(32), Err(())),
            ("", Err(())),
        ];
        for (text, expected) in cases {
            match (parse_fingerprint(text), expected) {
                (Ok(pin), Ok(first)) => assert_eq!(pin[0], *first, "{text}"),
                (Err(_), Err(())) => {}
                (result, _) => panic!("{text}: unexpected {result:?}"),
            }
        }
        let pin = parse_fingerprint(&colon).unwrap();
        assert_eq!(format_fingerprint(&pin), colon);
    }

    #[test]
    fn the_pin_accepts_only_its_certificate() {
        let verifier = PinnedVerifier {
            pin: Some(fingerprint_of(b"certificate one")),
            algorithms: provider().signature_verification_algorithms,
        };
        let name = ServerName::try_from("pve.example").unwrap();
        let check = |bytes: &'static [u8]| {
            verifier.verify_server_cert(
                &CertificateDer::from(bytes),
                &[],
                &name,
                &[],
                UnixTime::now(),
            )
        };
        assert!(check(b"certificate one").is_ok());
        assert!(check(b"certificate two").is_err());
    }

    #[test]
    fn a_ca_setting_without_certificates_is_refused() {
        let error = client_config(&Trust::CaPem("not a certificate".into())).unwrap_err();
        assert!(error.to_string().contains("no certificate"), "{error}");
    }
}
