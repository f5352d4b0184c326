//! The wire protocol between the Hostplane coordinator and its agents: messages and framing.
//!
//! This crate does no IO and never reads a clock; times are passed in as Unix milliseconds.
//!
//! # Framing
//!
//! A frame is a 4-byte big-endian length followed by that many payload bytes. [`decode`] takes one
//! frame off a [`bytes::BytesMut`], returns `Ok(None)` while the frame is incomplete, and refuses
//! a declared length above [`MAX_FRAME`] as soon as the prefix is readable, before anything is
//! allocated. Control messages are serialized with bincode 2 in a single configuration (big-endian,
//! variable-length integers, limited to [`MAX_FRAME`]); bytes left after a message are an error.
//! Bulk data (database dumps) does not go through frames: it has its own stream that starts with
//! one [`DataStreamHeader`] frame.
//!
//! # Versioning
//!
//! bincode is not self-describing, so the version is checked before any body is read. The first
//! frames of a connection ([`Hello`] and [`HelloReply`]) and of an enrollment ([`EnrollRequest`]
//! and [`EnrollResponse`]) are handshake frames: their payload starts with the frozen prefix
//! [`HANDSHAKE_MAGIC`] followed by the sender's [`PROTOCOL_VERSION`] as a big-endian `u32`. That
//! prefix never changes, so any version can read it, and a peer of another version gets
//! [`ProtocolError::VersionMismatch`] naming both versions instead of a misread message. The ALPN
//! names ([`ALPN`], [`ENROLL_ALPN`]) carry the same version number. Any change to the layout of a
//! message that is not an append to an enum (below) needs a new protocol version.
//!
//! # Append-only enums
//!
//! bincode writes an enum variant as its position. Variants of every wire enum ([`Operation`],
//! [`OperationOutput`], [`AgentMessage`], [`CoordinatorMessage`], [`ErrorCode`], ...) are therefore
//! only ever appended at the end, never inserted, removed or reordered, and struct fields are never
//! changed within a protocol version. A peer that receives a variant it does not know gets a decode
//! error for that one message, not a misread one.
//!
//! `tests/golden.rs` holds the wire bytes of one value of every variant of every wire enum, so a
//! variant inserted, removed or reordered, or a layout changed, fails the tests.

mod enrollment_token;
mod error_data;
mod frame;
mod handshake;
mod message;
pub mod names;
mod task;
pub mod web;

pub use enrollment_token::{
    EnrollmentToken, MAX_TOKEN_ADDRESS, TOKEN_PREFIX, TOKEN_SECRET_BYTES, TokenError,
};
pub use error_data::{ErrorCode, ErrorData};
pub use frame::{
    Frame, FrameError, LENGTH_PREFIX, ProtocolError, decode, decode_message, decode_payload,
    encode, encode_message,
};
pub use handshake::{
    EnrollRequest, EnrollResponse, Enrollment, Features, HANDSHAKE_MAGIC, HANDSHAKE_PREFIX, Hello,
    HelloReply, RefusalReason, Refused, Welcome, decode_handshake, decode_hello, encode_handshake,
    encode_hello,
};
pub use message::{
    AgentMessage, CoordinatorMessage, DataStreamHeader, Engine, EngineStatus, Heartbeat,
    HeartbeatAck, StateSummary, TaskInventory,
};
pub use task::{
    DatabaseEngine, DatabaseInfo, Operation, OperationOutput, PackageInfo, ParseTaskIdError,
    Secret, TaskDelivery, TaskId, TaskOutcome,
};

/// The version of this protocol. It travels in every handshake frame and in the ALPN names.
pub const PROTOCOL_VERSION: u32 = 1;

/// The ALPN of an agent's authenticated connection.
pub const ALPN: &[u8] = b"hostplane/1";

/// The ALPN of enrollment, the only thing an unauthenticated peer can reach.
pub const ENROLL_ALPN: &[u8] = b"hostplane-enroll/1";

/// The DNS name in the coordinator's QUIC server certificate. Agents verify the server against
/// the pinned CA and this name, whatever address they dial.
pub const COORDINATOR_SERVER_NAME: &str = "coordinator.hostplane.internal";

/// The hard maximum size of a frame payload (1 MiB). Larger data goes on its own stream.
pub const MAX_FRAME: usize = 1 << 20;
