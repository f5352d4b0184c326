//! The enrollment token: what an administrator pastes into a container to enroll its agent.
//!
//! A token is the text `hpe1_` followed by unpadded URL-safe base64 of: 32 random secret bytes,
//! the 32-byte SHA-256 fingerprint of the coordinator's CA certificate (DER), then the
//! coordinator's QUIC address as UTF-8 `host:port`. The secret is what the coordinator checks
//! (it keeps only a hash of it); the fingerprint lets the agent pin the coordinator on first
//! contact; the address tells it where to dial.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The text every token starts with; the digit is the token format's version.
pub const TOKEN_PREFIX: &str = "hpe1_";

/// Length of the random secret in a token, in bytes (256 bits).
pub const TOKEN_SECRET_BYTES: usize = 32;

/// The longest address a token may carry, in bytes.
pub const MAX_TOKEN_ADDRESS: usize = 255;

/// The parts of an enrollment token.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// The one-time secret.
    pub secret: [u8; TOKEN_SECRET_BYTES],
    /// SHA-256 of the coordinator's CA certificate in DER.
    pub ca_fingerprint: [u8; 32],
    /// The coordinator's QUIC address, `host:port`.
    pub address: String,
}

impl std::fmt::Debug for EnrollmentToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EnrollmentToken")
            .field("secret", &"<redacted>")
            .field("address", &self.address)
            .finish()
    }
}

/// Why a text is not an enrollment token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The text does not start with [`TOKEN_PREFIX`].
    #[error("this is not a Hostplane enrollment token (it should start with {TOKEN_PREFIX})")]
    WrongPrefix,
    /// The part after the prefix is not URL-safe base64.
    #[error("the enrollment token is damaged (not valid base64); copy it again in full")]
    NotBase64,
    /// The decoded token is too short or too long, or its address is not `host:port` text.
    #[error("the enrollment token is damaged ({0}); copy it again in full")]
    Malformed(&'static str),
}

impl EnrollmentToken {
    /// The token as text.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(TOKEN_SECRET_BYTES + 32 + self.address.len());
        bytes.extend_from_slice(&self.secret);
        bytes.extend_from_slice(&self.ca_fingerprint);
        bytes.extend_from_slice(self.address.as_bytes());
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses token text; surrounding whitespace is ignored.
    pub fn decode(text: &str) -> Result<EnrollmentToken, TokenError> {
        let body = text
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(TokenError::WrongPrefix)?;
        // The longest valid token, encoded, is well below this; longer input is refused before
        // it is decoded.
        if body.len() > 4 * (TOKEN_SECRET_BYTES + 32 + MAX_TOKEN_ADDRESS) / 3 + 4 {
            return Err(TokenError::Malformed("too long"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::NotBase64)?;
        if bytes.len() <= TOKEN_SECRET_BYTES + 32 {
            return Err(TokenError::Malformed("too short"));
        }
        let (secret, rest) = bytes.split_at(TOKEN_SECRET_BYTES);
        let (fingerprint, address) = rest.split_at(32);
        let address = std::str::from_utf8(address)
            .map_err(|_| TokenError::Malformed("the address is not text"))?;
        let valid_address = address.len() <= MAX_TOKEN_ADDRESS
            && address
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid_address {
            return Err(TokenError::Malformed("the address is not host:port"));
        }
        Ok(EnrollmentToken {
            secret: secret.try_into().expect("split at the secret length"),
            ca_fingerprint: fingerprint.try_into().expect("split at 32 bytes"),
            address: address.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EnrollmentToken {
        EnrollmentToken {
            secret: [7; TOKEN_SECRET_BYTES],
            ca_fingerprint: [9; 32],
            address: "coordinator.example:4433".into(),
        }
    }

    #[test]
    fn a_token_survives_encoding() {
        let text = sample().encode();
        assert!(text.starts_with(TOKEN_PREFIX));
        assert_eq!(
            EnrollmentToken::decode(&format!("  {text}\n")),
            Ok(sample())
        );
    }

    #[test]
    fn damaged_tokens_are_named() {
        let good = sample().encode();
        let cases: Vec<(String, TokenError)> = vec![
            ("hpe2_abc".into(), TokenError::WrongPrefix),
            (format!("{good}!"), TokenError::NotBase64),
            (good[..40].to_string(), TokenError::Malformed("too short")),
            (
                EnrollmentToken {
                    address: "no-port".into(),
                    ..sample()
                }
                .encode(),
                TokenError::Malformed("the address is not host:port"),
            ),
            (
                format!("{TOKEN_PREFIX}{}", "A".repeat(1000)),
                TokenError::Malformed("too long"),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(EnrollmentToken::decode(&text), Err(expected), "{text}");
        }
    }

    #[test]
    fn the_debug_form_hides_the_secret() {
        assert!(!format!("{:?}", sample()).contains("7, 7"));
    }
}
