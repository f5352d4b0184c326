//! The version handshake and enrollment: frames that any version of a peer can recognise.
//!
//! A handshake frame's payload is [`HANDSHAKE_MAGIC`], then the sender's protocol version as a
//! big-endian `u32`, then the bincode body. This 8-byte prefix is frozen forever; only the body
//! changes between versions. A reader checks the magic and the version before it touches the
//! body, so a peer of another version is reported as [`ProtocolError::VersionMismatch`] instead of
//! being misread.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::frame::{ProtocolError, decode, decode_payload, encode_with_header};
use crate::{ErrorData, PROTOCOL_VERSION, Secret};

/// The first bytes of every handshake payload.
pub const HANDSHAKE_MAGIC: [u8; 4] = *b"HPLN";

/// Length of the frozen handshake prefix: the magic and the version.
pub const HANDSHAKE_PREFIX: usize = 8;

/// Feature flags an agent announces in its [`Hello`] and the coordinator confirms in its
/// [`Welcome`]. Bits this version does not know are kept as they are and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Features(u64);

impl Features {
    /// No features.
    pub const NONE: Features = Features(0);
    /// Package operations (apt).
    pub const PACKAGES: Features = Features(1 << 0);
    /// Database operations for the engines the agent reports.
    pub const DATABASES: Features = Features(1 << 1);
    /// Database dumps compressed with zstd.
    pub const DUMP_ZSTD: Features = Features(1 << 2);
    /// Certificate renewal over the live connection.
    pub const CERTIFICATE_RENEWAL: Features = Features(1 << 3);
    /// Task reconciliation after a reconnect.
    pub const RECONCILIATION: Features = Features(1 << 4);
    /// Everything this version of the protocol defines.
    pub const ALL: Features = Features(0b1_1111);

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Flags from raw bits, unknown bits included.
    pub const fn from_bits(bits: u64) -> Self {
        Features(bits)
    }

    /// Whether every flag of `other` is set in `self`.
    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags set in both.
    pub const fn intersection(self, other: Features) -> Features {
        Features(self.0 & other.0)
    }

    /// The flags set in either.
    pub const fn union(self, other: Features) -> Features {
        Features(self.0 | other.0)
    }
}

impl std::ops::BitOr for Features {
    type Output = Features;

    fn bitor(self, other: Features) -> Features {
        self.union(other)
    }
}

/// The first message an agent sends on a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the agent speaks; travels in the frozen prefix, not in the body.
    pub protocol_version: u32,
    /// The agent's own version, for example `0.1.0`.
    pub agent_version: String,
    /// What the agent can do.
    pub features: Features,
}

impl Hello {
    /// A hello for this crate's [`PROTOCOL_VERSION`].
    pub fn new(agent_version: impl Into<String>, features: Features) -> Self {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            agent_version: agent_version.into(),
            features,
        }
    }
}

/// The part of a [`Hello`] that travels as bincode.
#[derive(Serialize, Deserialize)]
struct HelloBody {
    agent_version: String,
    features: Features,
}

/// The coordinator accepts the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The coordinator's own version.
    pub coordinator_version: String,
    /// The instance the coordinator identified from the client certificate.
    pub instance_id: u32,
    /// The enrollment generation of that certificate.
    pub generation: u64,
    /// The features both sides will use: the agent's flags the coordinator also supports.
    pub features: Features,
    /// How often the agent should send a heartbeat, in milliseconds.
    pub heartbeat_interval_ms: u64,
}

/// Why the coordinator refuses a connection. New variants are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalReason {
    /// The coordinator does not speak the agent's protocol version.
    UnsupportedVersion {
        /// The version the coordinator speaks.
        supported: u32,
    },
    /// The certificate names an instance the coordinator does not know (any more).
    UnknownInstance,
    /// The instance's access was revoked; the agent must be enrolled again.
    Revoked,
    /// A newer enrollment replaced this certificate; the agent must be enrolled again.
    StaleGeneration,
    /// The coordinator is shutting down; try again later.
    ShuttingDown,
    /// Another live connection already serves this instance.
    AlreadyConnected,
}

/// The coordinator refuses the connection and will close it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// What the agent should do about it depends on this.
    pub reason: RefusalReason,
    /// One sentence for the agent's log.
    pub message: String,
}

/// The coordinator's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The connection is accepted.
    Welcome(Welcome),
    /// The connection is refused.
    Refused(Refused),
}

/// What `hostplane-agent enroll` sends, on the enrollment ALPN, as a handshake frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The one-time enrollment token.
    pub token: Secret,
    /// A certificate signing request in DER. The coordinator ignores every name in it.
    pub csr_der: Vec<u8>,
    /// The agent's own version.
    pub agent_version: String,
}

/// A successful enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    /// The agent's signed certificate in DER.
    pub certificate_der: Vec<u8>,
    /// The coordinator's CA certificate in DER.
    pub ca_certificate_der: Vec<u8>,
    /// The instance the certificate identifies.
    pub instance_id: u32,
    /// The enrollment generation written into the certificate.
    pub generation: u64,
}

/// The coordinator's answer to an [`EnrollRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnrollResponse {
    /// The agent is enrolled.
    Enrolled(Enrollment),
    /// Enrollment failed, for example with [`crate::ErrorCode::Unauthenticated`] for a bad token.
    Refused(ErrorData),
}

/// Encodes a [`Hello`] as a handshake frame carrying `hello.protocol_version` in its prefix.
pub fn encode_hello(hello: &Hello) -> Result<Bytes, ProtocolError> {
    let body = HelloBody {
        agent_version: hello.agent_version.clone(),
        features: hello.features,
    };
    encode_versioned(hello.protocol_version, &body)
}

/// Takes a [`Hello`] frame off the front of `buffer`.
///
/// Returns `Ok(None)` on partial input. A complete frame is consumed; if it comes from another
/// protocol version the result is [`ProtocolError::VersionMismatch`] with both versions.
pub fn decode_hello(buffer: &mut BytesMut) -> Result<Option<Hello>, ProtocolError> {
    Ok(decode_handshake::<HelloBody>(buffer)?.map(|body| Hello {
        protocol_version: PROTOCOL_VERSION,
        agent_version: body.agent_version,
        features: body.features,
    }))
}

/// Encodes a handshake message ([`HelloReply`], [`EnrollRequest`], [`EnrollResponse`]) as a frame
/// whose prefix carries [`PROTOCOL_VERSION`].
pub fn encode_handshake<T: Serialize>(message: &T) -> Result<Bytes, ProtocolError> {
    encode_versioned(PROTOCOL_VERSION, message)
}

/// Takes a handshake frame off the front of `buffer` and decodes its body as a `T`, after checking
/// the magic and that the version is [`PROTOCOL_VERSION`].
///
/// Returns `Ok(None)` on partial input; a complete frame is always consumed.
pub fn decode_handshake<T: DeserializeOwned>(
    buffer: &mut BytesMut,
) -> Result<Option<T>, ProtocolError> {
    let Some(frame) = decode(buffer)? else {
        return Ok(None);
    };
    let payload = &frame.payload[..];
    if !payload.starts_with(&HANDSHAKE_MAGIC) {
        let shown = payload.len().min(HANDSHAKE_MAGIC.len());
        return Err(ProtocolError::BadMagic {
            found: payload[..shown].to_vec(),
        });
    }
    let Some(version) = payload.get(HANDSHAKE_MAGIC.len()..HANDSHAKE_PREFIX) else {
        return Err(ProtocolError::Decode(
            bincode::error::DecodeError::UnexpectedEnd {
                additional: HANDSHAKE_PREFIX - payload.len(),
            },
        ));
    };
    let theirs = u32::from_be_bytes([version[0], version[1], version[2], version[3]]);
    if theirs != PROTOCOL_VERSION {
        return Err(ProtocolError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        });
    }
    decode_payload(&payload[HANDSHAKE_PREFIX..]).map(Some)
}

fn encode_versioned<T: Serialize>(version: u32, body: &T) -> Result<Bytes, ProtocolError> {
    let mut prefix = [0u8; HANDSHAKE_PREFIX];
    prefix[..HANDSHAKE_MAGIC.len()].copy_from_slice(&HANDSHAKE_MAGIC);
    prefix[HANDSHAKE_MAGIC.len()..].copy_from_slice(&version.to_be_bytes());
    encode_with_header(&prefix, body)
}
