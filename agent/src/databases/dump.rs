//! A database dump as a stream of byte chunks, read from the dump program only as fast as the
//! consumer pulls them, optionally compressed with zstd on the way, with a SHA-256 and a byte
//! count of exactly what the stream gave.
//!
//! Invariant: the stream ends without an error only when the dump program exited with status 0
//! after writing everything; a program that fails or is killed midway makes the last item an
//! error, and [`Dump::finished`] then stays `None`. Memory use does not depend on the dump's
//! size: at most one chunk (plus the compressor's window) is held at a time.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_compression::tokio::bufread::ZstdEncoder;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use futures_util::stream::BoxStream;
use protocol::{ErrorCode, ErrorData, OperationOutput};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::process::Child;
use tokio::task::JoinHandle;

use crate::process::{self, CommandSpec, GroupGuard, ProcessError, STDERR_LIMIT};

/// The largest chunk the stream gives at once.
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Why a dump did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The dump program could not be started.
    #[error(transparent)]
    Start(#[from] ProcessError),
    /// Reading the dump failed.
    #[error("reading the dump from {program} failed: {source}")]
    Read {
        /// The dump program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The dump program ended with a failure (or was killed); what was sent is incomplete.
    #[error("{program} failed with {status}; the dump is incomplete: {message}")]
    Failed {
        /// The dump program.
        program: String,
        /// How it ended, for example `exit status 1` or `signal 9`.
        status: String,
        /// The last lines it wrote on standard error.
        message: String,
    },
}

impl DumpError {
    /// The error as it crosses the wire.
    pub fn to_error_data(&self) -> ErrorData {
        let code = match self {
            DumpError::Start(ProcessError::NotFound { .. }) => ErrorCode::Unavailable,
            DumpError::Start(_) | DumpError::Read { .. } => ErrorCode::Internal,
            DumpError::Failed { .. } => ErrorCode::CommandFailed,
        };
        ErrorData::new(code, self.to_string())
    }
}

/// What a completed dump gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpSummary {
    /// Bytes given by the stream (after compression, if any).
    pub bytes: u64,
    /// SHA-256 of exactly those bytes.
    pub sha256: [u8; 32],
}

impl DumpSummary {
    /// The task result that describes this dump.
    pub fn output(&self) -> OperationOutput {
        OperationOutput::DumpFinished {
            bytes: self.bytes,
            sha256: self.sha256,
        }
    }
}

/// A running dump: a `Stream` of chunks. Dropping it stops the dump program.
pub struct Dump {
    stream: BoxStream<'static, Result<Bytes, DumpError>>,
    finished: Arc<Mutex<Option<DumpSummary>>>,
    process_id: Option<u32>,
}

impl std::fmt::Debug for Dump {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Dump")
            .field("process_id", &self.process_id)
            .field("finished", &self.finished())
            .finish_non_exhaustive()
    }
}

impl Dump {
    /// Starts `command` (a dump program writing to standard output) and streams what it writes,
    /// compressed with zstd when `compress_zstd` is set.
    pub fn start(command: &CommandSpec, compress_zstd: bool) -> Result<Dump, DumpError> {
        let mut child = process::spawn(command)?;
        let guard = GroupGuard::new(&child);
        let process_id = child.id();
        let stdout = child.stdout.take().expect("standard output is piped");
        let stderr = child.stderr.take().expect("standard error is piped");
        let reader: Pin<Box<dyn AsyncRead + Send>> = if compress_zstd {
            Box::pin(ZstdEncoder::new(BufReader::with_capacity(
                CHUNK_SIZE, stdout,
            )))
        } else {
            Box::pin(stdout)
        };
        let finished = Arc::new(Mutex::new(None));
        let state = State {
            program: command.program.clone(),
            reader,
            child,
            guard,
            stderr: tokio::spawn(tail(stderr)),
            hasher: Sha256::new(),
            bytes: 0,
            finished: finished.clone(),
            done: false,
        };
        let stream = futures_util::stream::unfold(state, |mut state| async move {
            if state.done {
                return None;
            }
            let item = state.next().await;
            match item {
                Some(item) => {
                    if item.is_err() {
                        state.done = true;
                    }
                    Some((item, state))
                }
                None => None,
            }
        });
        Ok(Dump {
            stream: Box::pin(stream),
            finished,
            process_id,
        })
    }

    /// The byte count and SHA-256 once the stream has ended successfully; `None` before, and
    /// for ever if it ended with an error.
    pub fn finished(&self) -> Option<DumpSummary> {
        *self
            .finished
            .lock()
            .expect("the summary lock is never poisoned")
    }

    /// The dump program's process id (it leads its own process group).
    pub fn process_id(&self) -> Option<u32> {
        self.process_id
    }
}

impl Stream for Dump {
    type Item = Result<Bytes, DumpError>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.as_mut().poll_next(context)
    }
}

struct State {
    program: String,
    reader: Pin<Box<dyn AsyncRead + Send>>,
    child: Child,
    guard: GroupGuard,
    stderr: JoinHandle<String>,
    hasher: Sha256,
    bytes: u64,
    finished: Arc<Mutex<Option<DumpSummary>>>,
    done: bool,
}

impl State {
    /// The next chunk; at the end, the dump program's verdict.
    async fn next(&mut self) -> Option<Result<Bytes, DumpError>> {
        let mut buffer = BytesMut::zeroed(CHUNK_SIZE);
        match self.reader.read(&mut buffer).await {
            Ok(0) => self.end().await,
            Ok(count) => {
                buffer.truncate(count);
                self.hasher.update(&buffer);
                self.bytes += count as u64;
                Some(Ok(buffer.freeze()))
            }
            Err(source) => Some(Err(DumpError::Read {
                program: self.program.clone(),
                source,
            })),
        }
    }

    /// The data has ended: success only if the program exited with status 0.
    async fn end(&mut self) -> Option<Result<Bytes, DumpError>> {
        self.done = true;
        let status = match self.child.wait().await {
            Ok(status) => status,
            Err(source) => {
                return Some(Err(DumpError::Read {
                    program: self.program.clone(),
                    source,
                }));
            }
        };
        self.guard.disarm();
        let (code, signal) = process::status_parts(status);
        if code == Some(0) {
            let sha256: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
            *self
                .finished
                .lock()
                .expect("the summary lock is never poisoned") = Some(DumpSummary {
                bytes: self.bytes,
                sha256,
            });
            None
        } else {
            let stderr = (&mut self.stderr).await.unwrap_or_default();
            Some(Err(DumpError::Failed {
                program: self.program.clone(),
                status: process::status_text(code, signal),
                message: last_lines(&stderr, 3),
            }))
        }
    }
}

/// Reads a stream to its end, keeping its last [`STDERR_LIMIT`] bytes.
async fn tail(mut stream: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(count) = stream.read(&mut buffer).await {
        if count == 0 {
            break;
        }
        kept.extend_from_slice(&buffer[..count]);
        if kept.len() > STDERR_LIMIT {
            kept.drain(..kept.len() - STDERR_LIMIT);
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    async fn collect(mut dump: Dump) -> (Vec<u8>, Option<DumpError>, Option<DumpSummary>) {
        let mut data = Vec::new();
        let mut error = None;
        while let Some(item) = dump.next().await {
            match item {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(failure) => error = Some(failure),
            }
        }
        (data, error, dump.finished())
    }

    #[tokio::test]
    async fn a_successful_program_gives_its_bytes_and_their_hash() {
        let command = CommandSpec::new("head").args(["-c", "300000", "/dev/urandom"]);
        let (data, error, summary) = collect(Dump::start(&command, false).unwrap()).await;
        assert!(error.is_none(), "{error:?}");
        let summary = summary.unwrap();
        assert_eq!(data.len(), 300_000);
        assert_eq!(summary.bytes, 300_000);
        assert_eq!(summary.sha256, <[u8; 32]>::from(Sha256::digest(&data)));
    }

    #[tokio::test]
    async fn a_failing_program_ends_the_stream_with_an_error() {
        // It writes some output, then fails.
        let command = CommandSpec::new("cat").args(["/etc/hostname", "/nonexistent-for-a-test"]);
        let (data, error, summary) = collect(Dump::start(&command, false).unwrap()).await;
        assert!(!data.is_empty());
        let error = error.expect("the failure must be an error");
        assert!(error.to_string().contains("exit status 1"), "{error}");
        assert!(error.to_string().contains("nonexistent"), "{error}");
        assert_eq!(error.to_error_data().code, ErrorCode::CommandFailed);
        assert_eq!(summary, None);
    }

    #[tokio::test]
    async fn compressed_output_hashes_the_compressed_bytes() {
        let command = CommandSpec::new("head").args(["-c", "200000", "/dev/zero"]);
        let (data, error, summary) = collect(Dump::start(&command, true).unwrap()).await;
        assert!(error.is_none());
        assert!(data.len() < 10_000, "zeros compress well: {}", data.len());
        assert_eq!(summary.unwrap().bytes, data.len() as u64);
        let mut decoder = async_compression::tokio::bufread::ZstdDecoder::new(&data[..]);
        let mut plain = Vec::new();
        decoder.read_to_end(&mut plain).await.unwrap();
        assert_eq!(plain, vec![0u8; 200_000]);
    }
}
