//! Length-prefixed frames and the single bincode configuration used for every message.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Serialize, de::DeserializeOwned};

use crate::MAX_FRAME;

/// Size of the length prefix in front of every frame: a big-endian `u32`.
pub const LENGTH_PREFIX: usize = 4;

/// The bincode configuration of the wire format. Every encode and decode in this crate goes
/// through it, so there is exactly one byte layout.
///
/// Integers are variable-length and big-endian; the limit makes bincode refuse any length inside
/// a message that would claim more than [`MAX_FRAME`] bytes.
pub(crate) const WIRE_CONFIG: bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME>,
> = bincode::config::standard()
    .with_big_endian()
    .with_limit::<MAX_FRAME>();

/// One complete frame: the payload without its length prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The bytes the sender put after the length prefix.
    pub payload: Bytes,
}

/// Why a frame could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length declared in a prefix (or the payload to be sent) is above the hard maximum.
    /// Nothing has been allocated for it; the stream cannot be trusted any more and should be
    /// closed.
    #[error("frame of {declared} bytes is larger than the maximum of {maximum} bytes")]
    TooLarge {
        /// The length that was declared or requested.
        declared: u64,
        /// The maximum, [`MAX_FRAME`].
        maximum: usize,
    },
}

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The frame around the message is invalid.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The message could not be serialized.
    #[error("cannot encode message: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// The frame payload is not a valid message of the expected type.
    #[error("cannot decode message: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The message ended before the end of its frame.
    #[error("{trailing} unexpected bytes after the message")]
    TrailingBytes {
        /// How many bytes were left over.
        trailing: usize,
    },
    /// A handshake frame does not start with the protocol's magic bytes: the peer does not speak
    /// this protocol at all.
    #[error("peer does not speak the Hostplane protocol (handshake starts with {found:02x?})")]
    BadMagic {
        /// The first bytes that were found instead (shorter if the frame was shorter).
        found: Vec<u8>,
    },
    /// The peer speaks another version of the protocol. The message body was not read, since its
    /// layout is only known for our own version.
    #[error("protocol version mismatch: we speak version {ours}, the peer speaks version {theirs}")]
    VersionMismatch {
        /// [`crate::PROTOCOL_VERSION`].
        ours: u32,
        /// The version written in the peer's handshake frame.
        theirs: u32,
    },
}

/// Takes one complete frame off the front of `buffer`.
///
/// Returns `Ok(None)` when the buffer holds only part of a frame (nothing is consumed then), and
/// consumes exactly one frame when it is complete. A declared length above [`MAX_FRAME`] is
/// refused as soon as the prefix is readable, before anything is allocated or reserved; in that
/// case nothing is consumed. The payload shares the buffer's memory, so this never allocates.
pub fn decode(buffer: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let Some(prefix) = buffer.get(..LENGTH_PREFIX) else {
        return Ok(None);
    };
    let declared = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    let length = checked_length(u64::from(declared))?;
    if buffer.len() - LENGTH_PREFIX < length {
        return Ok(None);
    }
    buffer.advance(LENGTH_PREFIX);
    Ok(Some(Frame {
        payload: buffer.split_to(length).freeze(),
    }))
}

/// Appends one frame holding `payload` to `destination`.
pub fn encode(payload: &[u8], destination: &mut BytesMut) -> Result<(), FrameError> {
    let length = checked_length(payload.len() as u64)?;
    destination.reserve(LENGTH_PREFIX + length);
    destination.put_u32(length as u32);
    destination.put_slice(payload);
    Ok(())
}

/// Serializes `message` and returns it as one complete frame, length prefix included.
pub fn encode_message<T: Serialize>(message: &T) -> Result<Bytes, ProtocolError> {
    encode_with_header(&[], message)
}

/// Takes one frame off the front of `buffer` and deserializes it as a `T`.
///
/// Returns `Ok(None)` on partial input, like [`decode`]. Once a frame is complete it is consumed
/// even if its payload turns out not to be a valid `T`, so the stream stays aligned on frame
/// boundaries. Bytes left in the payload after the message are an error.
pub fn decode_message<T: DeserializeOwned>(
    buffer: &mut BytesMut,
) -> Result<Option<T>, ProtocolError> {
    match decode(buffer)? {
        Some(frame) => decode_payload(&frame.payload).map(Some),
        None => Ok(None),
    }
}

/// Deserializes a whole frame payload as a `T`, refusing trailing bytes.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, ProtocolError> {
    let (message, read) = bincode::serde::decode_from_slice(payload, WIRE_CONFIG)?;
    match payload.len() - read {
        0 => Ok(message),
        trailing => Err(ProtocolError::TrailingBytes { trailing }),
    }
}

/// Builds a frame whose payload is `header` followed by the serialized `message`.
pub(crate) fn encode_with_header<T: Serialize>(
    header: &[u8],
    message: &T,
) -> Result<Bytes, ProtocolError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    out.extend_from_slice(header);
    bincode::serde::encode_into_std_write(message, &mut out, WIRE_CONFIG)?;
    let length = checked_length((out.len() - LENGTH_PREFIX) as u64)?;
    out[..LENGTH_PREFIX].copy_from_slice(&(length as u32).to_be_bytes());
    Ok(Bytes::from(out))
}

fn checked_length(declared: u64) -> Result<usize, FrameError> {
    if declared > MAX_FRAME as u64 {
        return Err(FrameError::TooLarge {
            declared,
            maximum: MAX_FRAME,
        });
    }
    // The check above keeps the value within `usize` on every platform we build for.
    Ok(declared as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_prefix_and_partial_payload_are_not_consumed() {
        let mut buffer = BytesMut::from(&[0u8, 0, 0][..]);
        assert_eq!(decode(&mut buffer), Ok(None));
        assert_eq!(buffer.len(), 3);
        let mut buffer = BytesMut::from(&[0u8, 0, 0, 3, 1, 2][..]);
        assert_eq!(decode(&mut buffer), Ok(None));
        assert_eq!(buffer.len(), 6);
    }

    #[test]
    fn exactly_one_frame_is_consumed() {
        let mut buffer = BytesMut::new();
        encode(b"abc", &mut buffer).unwrap();
        encode(b"", &mut buffer).unwrap();
        encode(b"de", &mut buffer).unwrap();
        let payloads: Vec<Bytes> = std::iter::from_fn(|| decode(&mut buffer).unwrap())
            .map(|frame| frame.payload)
            .collect();
        assert_eq!(payloads, [&b"abc"[..], b"", b"de"]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn largest_allowed_frame_is_accepted_and_one_more_byte_is_refused() {
        let mut buffer = BytesMut::new();
        encode(&vec![7; MAX_FRAME], &mut buffer).unwrap();
        assert_eq!(
            decode(&mut buffer).unwrap().unwrap().payload.len(),
            MAX_FRAME
        );
        assert_eq!(
            encode(&vec![7; MAX_FRAME + 1], &mut buffer),
            Err(FrameError::TooLarge {
                declared: MAX_FRAME as u64 + 1,
                maximum: MAX_FRAME
            })
        );
        assert!(buffer.is_empty());
    }
}
