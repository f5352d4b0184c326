//! Reading and writing length-prefixed frames on a stream (a QUIC stream in both programs), with
//! a size cap per reader so a peer-declared length never sizes an allocation beyond it.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use protocol::{LENGTH_PREFIX, ProtocolError};

/// The most a single read asks the stream for; the buffer grows by at most this much at once.
const READ_STEP: usize = 64 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("reading the stream failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("writing the stream failed: {0}")]
    Write(#[source] std::io::Error),
    #[error("the peer declared a frame of {declared} bytes; at most {limit} are allowed here")]
    TooLarge { declared: usize, limit: usize },
    #[error("the stream ended in the middle of a frame")]
    Truncated,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Reads frames off one receive stream.
#[derive(Debug)]
pub struct FrameReader<R> {
    stream: R,
    buffer: BytesMut,
    limit: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader that refuses frames longer than `limit` (at most [`protocol::MAX_FRAME`]).
    pub fn new(stream: R, limit: usize) -> FrameReader<R> {
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
            // frame, and `read_buf` is cancel-safe, so this whole function is too.
            let step = wanted.min(READ_STEP);
            self.buffer.reserve(step);
            let read = self
                .stream
                .read_buf(&mut (&mut self.buffer).limit(step))
                .await
                .map_err(WireError::Read)?;
            if read == 0 {
                return match self.buffer.is_empty() {
                    true => Ok(false),
                    false => Err(WireError::Truncated),
                };
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
}

async fn write_frame<W: AsyncWrite + Unpin>(stream: &mut W, frame: &[u8]) -> Result<(), WireError> {
    stream.write_all(frame).await.map_err(WireError::Write)
}

/// Writes one message as a frame.
pub async fn write_message<W: AsyncWrite + Unpin, T: Serialize>(
    stream: &mut W,
    message: &T,
) -> Result<(), WireError> {
    write_frame(stream, &protocol::encode_message(message)?).await
}

/// Writes one handshake message (with the version prefix) as a frame.
pub async fn write_handshake<W: AsyncWrite + Unpin, T: Serialize>(
    stream: &mut W,
    message: &T,
) -> Result<(), WireError> {
    write_frame(stream, &protocol::encode_handshake(message)?).await
}

/// Writes a [`protocol::Hello`] frame.
pub async fn write_hello<W: AsyncWrite + Unpin>(
    stream: &mut W,
    hello: &protocol::Hello,
) -> Result<(), WireError> {
    write_frame(stream, &protocol::encode_hello(hello)?).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{AgentMessage, ErrorCode, ErrorData, Features, Hello, TaskId};
    use tokio::io::{AsyncWriteExt, duplex};

    fn log_line(line: &str) -> AgentMessage {
        AgentMessage::TaskLog {
            task_id: TaskId([7; 16]),
            line: line.to_string(),
        }
    }

    #[tokio::test]
    async fn frames_round_trip_and_the_clean_end_is_none() {
        let (mut near, far) = duplex(1 << 16);
        let hello = Hello::new("1.2.3", Features::NONE);
        let refusal = ErrorData::new(ErrorCode::Conflict, "no");
        let writer = tokio::spawn(async move {
            write_hello(&mut near, &hello).await.unwrap();
            write_message(&mut near, &log_line("first")).await.unwrap();
            write_handshake(&mut near, &refusal).await.unwrap();
            write_message(&mut near, &log_line(&"x".repeat(200_000)))
                .await
                .unwrap();
        });
        let mut reader = FrameReader::new(far, protocol::MAX_FRAME);
        let hello = reader.hello().await.unwrap().unwrap();
        assert_eq!(hello.agent_version, "1.2.3");
        let first: AgentMessage = reader.message().await.unwrap().unwrap();
        assert_eq!(first, log_line("first"));
        let refusal: ErrorData = reader.handshake().await.unwrap().unwrap();
        assert_eq!(refusal.code, ErrorCode::Conflict);
        let long: AgentMessage = reader.message().await.unwrap().unwrap();
        assert_eq!(long, log_line(&"x".repeat(200_000)));
        writer.await.unwrap();
        assert!(reader.message::<AgentMessage>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_frame_arriving_one_byte_at_a_time_is_assembled() {
        let frame = protocol::encode_message(&log_line("piece by piece")).unwrap();
        let (mut near, far) = duplex(1);
        let writer = tokio::spawn(async move {
            for byte in frame.iter() {
                near.write_all(&[*byte]).await.unwrap();
            }
        });
        let mut reader = FrameReader::new(far, 1024);
        let message: AgentMessage = reader.message().await.unwrap().unwrap();
        assert_eq!(message, log_line("piece by piece"));
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_stream_ending_inside_a_frame_is_truncated() {
        let frame = protocol::encode_message(&log_line("cut short")).unwrap();
        for cut in 1..frame.len() {
            let (mut near, far) = duplex(1 << 12);
            near.write_all(&frame[..cut]).await.unwrap();
            drop(near);
            let mut reader = FrameReader::new(far, 1024);
            let error = reader.message::<AgentMessage>().await.unwrap_err();
            assert!(
                matches!(error, WireError::Truncated),
                "cut at {cut}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_from_its_prefix() {
        let frame = protocol::encode_message(&log_line(&"y".repeat(100))).unwrap();
        let declared = frame.len() - LENGTH_PREFIX;
        let (mut near, far) = duplex(1 << 12);
        // Only the prefix is sent: the refusal must not wait for the body.
        near.write_all(&frame[..LENGTH_PREFIX]).await.unwrap();
        let mut reader = FrameReader::new(far, declared - 1);
        let error = reader.message::<AgentMessage>().await.unwrap_err();
        assert!(
            matches!(error, WireError::TooLarge { declared: d, limit } if d == declared && limit == declared - 1),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "the peer declared a frame of {declared} bytes; at most {} are allowed here",
                declared - 1
            )
        );
    }

    #[tokio::test]
    async fn the_limit_never_exceeds_the_protocol_maximum_and_can_change() {
        let (mut near, far) = duplex(1 << 12);
        let mut reader = FrameReader::new(far, usize::MAX);
        near.write_all(&(protocol::MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        let error = reader.message::<AgentMessage>().await.unwrap_err();
        assert!(
            matches!(error, WireError::TooLarge { limit, .. } if limit == protocol::MAX_FRAME),
            "{error}"
        );

        let (mut near, far) = duplex(1 << 12);
        let mut reader = FrameReader::new(far, 1024);
        write_message(&mut near, &log_line("fits")).await.unwrap();
        write_message(&mut near, &log_line("does not fit"))
            .await
            .unwrap();
        let fits: AgentMessage = reader.message().await.unwrap().unwrap();
        assert_eq!(fits, log_line("fits"));
        reader.set_limit(4);
        let error = reader.message::<AgentMessage>().await.unwrap_err();
        assert!(
            matches!(error, WireError::TooLarge { limit: 4, .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_message_of_another_type_is_a_protocol_error() {
        let (mut near, far) = duplex(1 << 12);
        write_message(&mut near, &[0xffu8; 3]).await.unwrap();
        let mut reader = FrameReader::new(far, 1024);
        let error = reader.message::<AgentMessage>().await.unwrap_err();
        assert!(matches!(error, WireError::Protocol(_)), "{error}");
    }
}
