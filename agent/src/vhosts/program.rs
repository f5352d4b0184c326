//! Running an external program with an argument vector (never a shell), a deadline, and its
//! output captured up to a bound.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// The most bytes kept from each of a program's output streams.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// What a finished program left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its exit code, if it exited (rather than being killed by a signal).
    pub code: Option<i32>,
    /// Standard output, cut at [`OUTPUT_LIMIT`].
    pub stdout: String,
    /// Standard error, cut at [`OUTPUT_LIMIT`].
    pub stderr: String,
}

impl ProgramOutput {
    /// Both streams together, for reports.
    pub fn combined(&self) -> String {
        let mut text = self.stderr.trim_end().to_string();
        if !self.stdout.trim().is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(self.stdout.trim_end());
        }
        text
    }
}

/// Why a program could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// It could not be started.
    #[error("could not start {program}: {source}")]
    Start {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// It ran past its deadline and was killed.
    #[error("{program} did not finish within {seconds} s and was stopped")]
    Timeout {
        /// The program.
        program: String,
        /// The deadline.
        seconds: u64,
    },
    /// Waiting for it failed.
    #[error("waiting for {program} failed: {source}")]
    Wait {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
}

async fn read_bounded(mut stream: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(count) => {
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..count.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Runs `program` with `arguments`, no standard input, and a deadline.
pub async fn run_program(
    program: &Path,
    arguments: &[OsString],
    deadline: Duration,
) -> Result<ProgramOutput, ProgramError> {
    let name = program.display().to_string();
    let mut child = Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ProgramError::Start {
            program: name.clone(),
            source,
        })?;
    let stdout = child
        .stdout
        .take()
        .map(|stream| tokio::spawn(read_bounded(stream)));
    let stderr = child
        .stderr
        .take()
        .map(|stream| tokio::spawn(read_bounded(stream)));
    let status = match tokio::time::timeout(deadline, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => {
            return Err(ProgramError::Wait {
                program: name,
                source,
            });
        }
        Err(_) => {
            let _ = child.kill().await;
            return Err(ProgramError::Timeout {
                program: name,
                seconds: deadline.as_secs(),
            });
        }
    };
    // A daemon may keep the pipes open after its parent exits; do not wait on them forever.
    let collect = |handle: Option<tokio::task::JoinHandle<String>>| async move {
        match handle {
            Some(handle) => tokio::time::timeout(Duration::from_secs(2), handle)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default(),
            None => String::new(),
        }
    };
    Ok(ProgramOutput {
        success: status.success(),
        code: status.code(),
        stdout: collect(stdout).await,
        stderr: collect(stderr).await,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_is_bounded_and_status_reported() {
        let output = run_program(
            Path::new("head"),
            &[
                "-c".into(),
                (OUTPUT_LIMIT * 3).to_string().into(),
                "/dev/zero".into(),
            ],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert!(output.success);
        assert_eq!(output.stdout.len(), OUTPUT_LIMIT);
        let output = run_program(Path::new("false"), &[], Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!((output.success, output.code), (false, Some(1)));
    }

    #[tokio::test]
    async fn deadline_stops_the_program() {
        let result = run_program(
            Path::new("sleep"),
            &["30".into()],
            Duration::from_millis(200),
        )
        .await;
        assert!(
            matches!(result, Err(ProgramError::Timeout { .. })),
            "{result:?}"
        );
    }
}
