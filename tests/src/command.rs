//! Running host programs with a time limit, feeding their input and capturing their output.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// What a finished program left behind.
#[derive(Debug, Clone)]
pub struct Output {
    /// How the program ended.
    pub status: ExitStatus,
    /// Everything it wrote to standard output.
    pub stdout: Vec<u8>,
    /// Everything it wrote to standard error.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether the program exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Standard output as text when the program succeeded, otherwise an error naming `what` with
    /// the exit status and the end of both outputs.
    pub fn checked(self, what: &str) -> anyhow::Result<String> {
        if self.success() {
            return Ok(self.stdout_text());
        }
        bail!(
            "{what} failed ({}):\n{}\n{}",
            self.status,
            tail(&self.stdout_text(), 2000),
            tail(&self.stderr_text(), 2000)
        )
    }
}

/// The last `limit` bytes of `text` (cut at a character boundary).
fn tail(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Runs `program` with `arguments`, writing `input` to its standard input, and kills it when it
/// has not finished after `timeout`.
pub fn run_with_input(
    program: &str,
    arguments: &[&str],
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> anyhow::Result<Output> {
    let mut child = Command::new(program)
        .args(arguments)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    let writer = match (input, child.stdin.take()) {
        (Some(bytes), Some(mut stdin)) => Some(thread::spawn(move || {
            // A program that exits without reading everything closes the pipe; that is its answer.
            let _ = stdin.write_all(&bytes);
        })),
        _ => None,
    };
    let stdout = child.stdout.take().map(read_in_background);
    let stderr = child.stderr.take().map(read_in_background);
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{program} {} did not finish within {timeout:?}",
                arguments.join(" ")
            );
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let collect = |reader: Option<thread::JoinHandle<Vec<u8>>>| {
        reader
            .map(|handle| handle.join().unwrap_or_default())
            .unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// Runs `program` with `arguments` and no input, killing it after `timeout`.
pub fn run(program: &str, arguments: &[&str], timeout: Duration) -> anyhow::Result<Output> {
    run_with_input(program, arguments, None, timeout)
}

/// Runs `program` and returns its standard output, or an error when it fails or times out.
pub fn run_checked(program: &str, arguments: &[&str], timeout: Duration) -> anyhow::Result<String> {
    run(program, arguments, timeout)?.checked(&format!("{program} {}", arguments.join(" ")))
}

/// Whether `program` is found on `PATH`.
pub fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|folder| folder.join(program).is_file())
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let output = run_with_input(
            "sh",
            &["-c", "cat; echo err >&2; exit 3"],
            Some(b"in".to_vec()),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(output.stdout, b"in");
        assert_eq!(output.stderr, b"err\n");
        assert_eq!(output.status.code(), Some(3));
        assert!(output.checked("sh").is_err());
    }

    #[test]
    fn kills_a_program_that_outlives_its_timeout() {
        let started = Instant::now();
        let error = run("sleep", &["30"], Duration::from_millis(200)).unwrap_err();
        assert!(error.to_string().contains("did not finish"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn tail_keeps_the_end_on_a_character_boundary() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ééé", 3), "é");
        assert_eq!(tail("ab", 3), "ab");
    }
}
