//! Reading and writing length-prefixed frames on QUIC streams, with a size cap per reader so a
//! peer-declared length never sizes an allocation beyond it.

use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;

use protocol::{LENGTH_PREFIX, ProtocolError};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("reading the stream failed: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("writing the stream failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("the stream was closed: {0}")]
    Closed(#[from] quinn::ClosedStream),
    #[error("the peer declared a frame of {declared} bytes; at most {limit} are allowed here")]
    TooLarge { declared: usize, limit: usize },
    #[error("the stream ended in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Reads frames off one receive stream.
#[derive(Debug)]
pub struct FrameReader {
    stream: quinn::RecvStream,
    buffer: BytesMut,
    limit: usize,
}

impl FrameReader {
    /// A reader that refuses frames longer than `limit` (at most [`protocol::MAX_FRAME`]).
    pub fn new(stream: quinn::RecvStream, limit: usize) -> FrameReader {
        FrameReader {
            stream,
            buffer: BytesMut::new(),
            limit: limit.min(protocol::MAX_FRAME),
        }
    }

    /// Changes the cap for the following frames.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(protocol::MAX_FRAME);
    }

    /// Waits until the buffer holds one complete frame. `Ok(false)` when the stream ended
    /// cleanly between frames.
    async fn fill(&mut self) -> Result<bool, WireError> {
        loop {
            let wanted = match self.buffer.get(..LENGTH_PREFIX) {
                Some(prefix) => {
                    let declared =
                        u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
                    if declared > self.limit {
                        return Err(WireError::TooLarge {
                            declared,
                            limit: self.limit,
                        });
                    }
                    let complete = LENGTH_PREFIX + declared;
                    if self.buffer.len() >= complete {
                        return Ok(true);
                    }
                    complete - self.buffer.len()
                }
                None => LENGTH_PREFIX - self.buffer.len(),
            };
            // Reading at most what the current frame still needs keeps the buffer within one
            // frame, and `read_chunk` is cancel-safe, so this whole function is too.
            match self.stream.read_chunk(wanted, true).await? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk.bytes),
                None if self.buffer.is_empty() => return Ok(false),
                None => return Err(WireError::Truncated),
            }
        }
    }

    /// The next message, or `None` at the clean end of the stream.
    pub async fn message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, WireError> {
        if !self.fill().await? {
            return Ok(None);
        }
        Ok(protocol::decode_message(&mut self.buffer)?)
    }

    /// The next handshake message (magic and version checked first), or `None` at the end.
    pub async fn handshake<T: DeserializeOwned>(&mut self) -> Result<Option<T>, WireError> {
        if !self.fill().await? {
            return Ok(None);
        }
        Ok(protocol::decode_handshake(&mut self.buffer)?)
    }

    /// The next [`protocol::Hello`], or `None` at the end.
    pub async fn hello(&mut self) -> Result<Option<protocol::Hello>, WireError> {
        if !self.fill().await? {
            return Ok(None);
        }
        Ok(protocol::decode_hello(&mut self.buffer)?)
    }

    /// Stops the peer's sending side; used when a reader gives up on a stream.
    pub fn stop(&mut self, code: u32) {
        let _ = self.stream.stop(quinn::VarInt::from_u32(code));
    }
}

/// Writes one message as a frame.
pub async fn write_message<T: Serialize>(
    stream: &mut quinn::SendStream,
    message: &T,
) -> Result<(), WireError> {
    let frame = protocol::encode_message(message)?;
    stream.write_all(&frame).await?;
    Ok(())
}

/// Writes one handshake message (with the version prefix) as a frame.
pub async fn write_handshake<T: Serialize>(
    stream: &mut quinn::SendStream,
    message: &T,
) -> Result<(), WireError> {
    let frame = protocol::encode_handshake(message)?;
    stream.write_all(&frame).await?;
    Ok(())
}

/// Writes a [`protocol::Hello`] frame.
pub async fn write_hello(
    stream: &mut quinn::SendStream,
    hello: &protocol::Hello,
) -> Result<(), WireError> {
    let frame = protocol::encode_hello(hello)?;
    stream.write_all(&frame).await?;
    Ok(())
}
