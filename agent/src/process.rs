//! Running external programs: an argument vector (never a shell), optional bytes on standard
//! input, output captured up to a bound, output lines streamed to a callback, and a time limit.
//!
//! Every program runs in its own process group, so a time limit (or dropping the future that
//! runs it) stops the program together with the children it started, for example `dpkg` under
//! `apt-get`.
//!
//! Invariant: nothing here ever starts `sh -c`; the program and each argument are passed to the
//! kernel as they are. Standard input is the only channel for secrets, and it is redacted from
//! `Debug` output.

use std::fmt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use futures_util::future::BoxFuture;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The default bound on captured standard output, in bytes.
pub const DEFAULT_STDOUT_LIMIT: usize = 1024 * 1024;
/// The bound on captured standard error, in bytes; the last bytes are kept.
pub const STDERR_LIMIT: usize = 64 * 1024;
/// The longest line handed to a line callback; the rest of a longer line is dropped.
pub const LINE_LIMIT: usize = 4096;
/// How long a program gets between the polite stop signal and the forced one.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Bytes for a program's standard input. Their `Debug` form shows only the length, because they
/// may hold a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Input(Vec<u8>);

impl Input {
    /// Wraps bytes for standard input.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Input(bytes.into())
    }

    /// The bytes, for the one place that writes them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Input {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "Input(<{} bytes redacted>)", self.0.len())
    }
}

/// One program to run: what a plan produces and a [`CommandRunner`] carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program, a name looked up in `PATH` or a path.
    pub program: String,
    /// The arguments, each passed as it is.
    pub args: Vec<String>,
    /// Environment variables set on top of the agent's own environment.
    pub env: Vec<(String, String)>,
    /// Bytes written to standard input, which is then closed; without them standard input is
    /// empty.
    pub stdin: Option<Input>,
    /// How long the program may run before it is stopped.
    pub timeout: Duration,
    /// The most bytes of standard output kept in [`Output::stdout`]; more is counted as
    /// truncation.
    pub stdout_limit: usize,
}

impl CommandSpec {
    /// A program with no arguments, a time limit of five minutes and the default output bound.
    pub fn new(program: impl Into<String>) -> Self {
        CommandSpec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(300),
            stdout_limit: DEFAULT_STDOUT_LIMIT,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets what standard input carries.
    pub fn stdin(mut self, input: Input) -> Self {
        self.stdin = Some(input);
        self
    }

    /// Sets the time limit.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the bound on captured standard output.
    pub fn stdout_limit(mut self, limit: usize) -> Self {
        self.stdout_limit = limit;
        self
    }

    /// The program and its arguments as one line, for messages. Never includes standard input.
    pub fn display(&self) -> String {
        let mut line = self.program.clone();
        for arg in &self.args {
            line.push(' ');
            line.push_str(arg);
        }
        line
    }

    /// A tokio command for this spec: no shell, its own process group, pipes for all three
    /// streams.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        command
    }
}

/// The locks of work that must not overlap on one machine. Clones share the same locks; the
/// agent makes one and hands it to every operation and to the transport.
#[derive(Debug, Clone, Default)]
pub struct Exclusive {
    apt: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Exclusive {
    /// A fresh set of locks.
    pub fn new() -> Exclusive {
        Exclusive::default()
    }

    /// Waits until no other package operation of this agent runs, and holds that until the
    /// guard is dropped. (apt's own lock also keeps other programs out; this one keeps the
    /// agent's operations in order instead of failing on each other.)
    pub async fn apt(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.apt.clone().lock_owned().await
    }
}

/// A line sink that sends each line to a task's log, in order, without making the program
/// wait for the coordinator, and the task that forwards them (it ends once the sink is dropped
/// and every line is sent; await it before reporting the result, so the log comes first).
pub fn task_log(
    context: &crate::handler::TaskContext,
) -> (
    impl FnMut(Stream, &str) + Send + 'static,
    tokio::task::JoinHandle<()>,
) {
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<String>();
    let context = context.clone();
    let forwarding = tokio::spawn(async move {
        while let Some(line) = receiver.recv().await {
            context.log(line).await;
        }
    });
    let sink = move |_: Stream, line: &str| {
        let _ = sender.send(line.to_string());
    };
    (sink, forwarding)
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// The callback that receives each output line (without its line ending) as it is produced.
pub type LineSink<'a> = &'a mut (dyn FnMut(Stream, &str) + Send);

/// What a program that ran to its end left behind. A non-zero exit is not an error at this
/// level: callers decide what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The exit code, if the program exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Standard output, up to the spec's bound.
    pub stdout: Vec<u8>,
    /// Whether standard output was longer than the bound.
    pub stdout_truncated: bool,
    /// The last [`STDERR_LIMIT`] bytes of standard error.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether the program exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// How the program ended, for messages: `exit status 100` or `signal 9`.
    pub fn status_text(&self) -> String {
        status_text(self.code, self.signal)
    }

    /// The last non-empty lines of standard error, at most `count`, for an error message.
    pub fn stderr_tail(&self, count: usize) -> String {
        let text = self.stderr_text();
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim_end)
            .filter(|line| !line.is_empty())
            .collect();
        lines[lines.len().saturating_sub(count)..].join("\n")
    }
}

/// `exit status N` or `signal N`.
pub fn status_text(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "an unknown status".to_string(),
    }
}

/// Why a program could not be run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program is not installed (not found in `PATH`).
    #[error("{program} is not installed")]
    NotFound {
        /// The program.
        program: String,
    },
    /// The program could not be started for another reason.
    #[error("could not start {program}: {source}")]
    Start {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The program ran past its time limit and was stopped.
    #[error("{program} did not finish within {} s and was stopped", .after.as_secs())]
    TimedOut {
        /// The program.
        program: String,
        /// The time limit.
        after: Duration,
        /// The last lines of standard error it wrote.
        stderr_tail: String,
    },
    /// Reading its output or waiting for it failed.
    #[error("lost track of {program}: {source}")]
    Io {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Carries out [`CommandSpec`]s. The real one is [`SystemRunner`]; tests of the operations may
/// use a fake that records what it was asked to run.
pub trait CommandRunner: Send + Sync {
    /// Runs `spec` to its end, handing each output line to `lines` if given.
    fn run<'a>(
        &'a self,
        spec: &'a CommandSpec,
        lines: Option<LineSink<'a>>,
    ) -> BoxFuture<'a, Result<Output, ProcessError>>;
}

/// Runs programs on this machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run<'a>(
        &'a self,
        spec: &'a CommandSpec,
        lines: Option<LineSink<'a>>,
    ) -> BoxFuture<'a, Result<Output, ProcessError>> {
        Box::pin(run(spec, lines))
    }
}

/// Starts a program described by `spec` with all three streams piped, in its own process group.
pub fn spawn(spec: &CommandSpec) -> Result<Child, ProcessError> {
    spec.command().spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ProcessError::NotFound {
                program: spec.program.clone(),
            }
        } else {
            ProcessError::Start {
                program: spec.program.clone(),
                source,
            }
        }
    })
}

/// Kills a process group when dropped unless disarmed: what stops a program (and its children)
/// whose future was dropped before the program ended.
#[derive(Debug)]
pub struct GroupGuard {
    group: Option<Pid>,
}

impl GroupGuard {
    /// Guards the process group led by `child` (started by [`spawn`]).
    pub fn new(child: &Child) -> Self {
        GroupGuard {
            group: child
                .id()
                .and_then(|id| i32::try_from(id).ok())
                .map(Pid::from_raw),
        }
    }

    /// Sends `signal` to the whole group now.
    pub fn signal(&self, signal: Signal) {
        if let Some(group) = self.group {
            let _ = killpg(group, signal);
        }
    }

    /// The program ended on its own: nothing to stop any more.
    pub fn disarm(&mut self) {
        self.group = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

/// Runs `spec` to its end: writes its standard input, captures its output within the bounds,
/// streams its lines to `lines`, and stops it (SIGTERM, then SIGKILL after [`STOP_GRACE`]) when
/// its time limit passes.
pub async fn run(spec: &CommandSpec, lines: Option<LineSink<'_>>) -> Result<Output, ProcessError> {
    let mut child = spawn(spec)?;
    let mut guard = GroupGuard::new(&child);
    let io_error = |source| ProcessError::Io {
        program: spec.program.clone(),
        source,
    };

    let stdin = child.stdin.take();
    let input = spec.stdin.clone();
    let feed = async move {
        if let (Some(mut stdin), Some(input)) = (stdin, input) {
            // A program that exits without reading all of its input closes the pipe; that is
            // its choice, and its exit status tells the rest.
            let _ = stdin.write_all(input.expose()).await;
            let _ = stdin.shutdown().await;
        }
    };
    let stdout = child.stdout.take().expect("standard output is piped");
    let stderr = child.stderr.take().expect("standard error is piped");
    let mut capture = Capture::new(spec.stdout_limit, lines);
    let collect = capture.collect(stdout, stderr);

    let work = async {
        let ((), collected) = tokio::join!(feed, collect);
        collected.map_err(io_error)?;
        child.wait().await.map_err(io_error)
    };
    let status = match tokio::time::timeout(spec.timeout, work).await {
        Ok(status) => status?,
        Err(_) => {
            guard.signal(Signal::SIGTERM);
            if tokio::time::timeout(STOP_GRACE, child.wait())
                .await
                .is_err()
            {
                guard.signal(Signal::SIGKILL);
                let _ = child.wait().await;
            }
            guard.disarm();
            return Err(ProcessError::TimedOut {
                program: spec.program.clone(),
                after: spec.timeout,
                stderr_tail: capture.stderr_tail(5),
            });
        }
    };
    // The leader has exited; a child it left behind in the group is stopped with it.
    drop(guard);
    Ok(capture.finish(status))
}

/// The exit code and signal of a status.
pub fn status_parts(status: ExitStatus) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    (status.code(), status.signal())
}

/// Output gathered while a program runs.
struct Capture<'a> {
    stdout_limit: usize,
    stdout: Vec<u8>,
    stdout_truncated: bool,
    stderr: Vec<u8>,
    lines: Option<LineSink<'a>>,
}

impl<'a> Capture<'a> {
    fn new(stdout_limit: usize, lines: Option<LineSink<'a>>) -> Self {
        Capture {
            stdout_limit,
            stdout: Vec::new(),
            stdout_truncated: false,
            stderr: Vec::new(),
            lines,
        }
    }

    /// Reads both streams until both end, keeping within the bounds and calling the line sink.
    async fn collect(
        &mut self,
        mut stdout: impl AsyncRead + Unpin,
        mut stderr: impl AsyncRead + Unpin,
    ) -> std::io::Result<()> {
        let mut out_lines = LineSplitter::default();
        let mut err_lines = LineSplitter::default();
        let mut out_buffer = vec![0u8; 8192];
        let mut err_buffer = vec![0u8; 8192];
        let mut out_open = true;
        let mut err_open = true;
        while out_open || err_open {
            tokio::select! {
                read = stdout.read(&mut out_buffer), if out_open => {
                    let count = read?;
                    if count == 0 {
                        out_open = false;
                        if let Some(line) = out_lines.finish() {
                            self.emit(Stream::Stdout, &line);
                        }
                    } else {
                        let chunk = &out_buffer[..count];
                        let room = self.stdout_limit.saturating_sub(self.stdout.len());
                        if chunk.len() > room {
                            self.stdout_truncated = true;
                        }
                        self.stdout.extend_from_slice(&chunk[..chunk.len().min(room)]);
                        for line in out_lines.push(chunk) {
                            self.emit(Stream::Stdout, &line);
                        }
                    }
                }
                read = stderr.read(&mut err_buffer), if err_open => {
                    let count = read?;
                    if count == 0 {
                        err_open = false;
                        if let Some(line) = err_lines.finish() {
                            self.emit(Stream::Stderr, &line);
                        }
                    } else {
                        let chunk = &err_buffer[..count];
                        self.stderr.extend_from_slice(chunk);
                        if self.stderr.len() > STDERR_LIMIT {
                            let excess = self.stderr.len() - STDERR_LIMIT;
                            self.stderr.drain(..excess);
                        }
                        for line in err_lines.push(chunk) {
                            self.emit(Stream::Stderr, &line);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn emit(&mut self, stream: Stream, line: &str) {
        if let Some(sink) = self.lines.as_mut() {
            sink(stream, line);
        }
    }

    fn stderr_tail(&self, count: usize) -> String {
        Output {
            code: None,
            signal: None,
            stdout: Vec::new(),
            stdout_truncated: false,
            stderr: self.stderr.clone(),
        }
        .stderr_tail(count)
    }

    fn finish(self, status: ExitStatus) -> Output {
        let (code, signal) = status_parts(status);
        Output {
            code,
            signal,
            stdout: self.stdout,
            stdout_truncated: self.stdout_truncated,
            stderr: self.stderr,
        }
    }
}

/// Splits a byte stream into lines of at most [`LINE_LIMIT`] bytes; the rest of a longer line is
/// dropped. A carriage return before the line feed is removed.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
    overlong: bool,
}

impl LineSplitter {
    /// Takes the next bytes and returns the lines they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for piece in bytes.split_inclusive(|byte| *byte == b'\n') {
            let (content, ended) = match piece.strip_suffix(b"\n") {
                Some(content) => (content, true),
                None => (piece, false),
            };
            let room = LINE_LIMIT.saturating_sub(self.partial.len());
            if content.len() > room {
                self.overlong = true;
            }
            self.partial
                .extend_from_slice(&content[..content.len().min(room)]);
            if ended {
                lines.push(self.take());
            }
        }
        lines
    }

    /// The last line if the stream ended without a line feed.
    pub fn finish(&mut self) -> Option<String> {
        if self.partial.is_empty() && !self.overlong {
            None
        } else {
            Some(self.take())
        }
    }

    fn take(&mut self) -> String {
        let mut bytes = std::mem::take(&mut self.partial);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        self.overlong = false;
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_across_chunks_and_bounded() {
        let mut splitter = LineSplitter::default();
        assert_eq!(splitter.push(b"one\r\ntw"), vec!["one".to_string()]);
        assert_eq!(
            splitter.push(b"o\n\nthree"),
            vec!["two".to_string(), String::new()]
        );
        assert_eq!(splitter.finish(), Some("three".to_string()));
        assert_eq!(splitter.finish(), None);

        let long = vec![b'x'; LINE_LIMIT * 3];
        let mut lines = splitter.push(&long);
        lines.extend(splitter.push(b"y\nz\n"));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), LINE_LIMIT);
        assert_eq!(lines[1], "z");
    }

    #[test]
    fn standard_input_never_shows_in_debug_output() {
        let spec = CommandSpec::new("mariadb").stdin(Input::new("SET PASSWORD 'hunter2'"));
        let text = format!("{spec:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }

    #[tokio::test]
    async fn arguments_reach_the_program_unchanged_and_no_shell_runs() {
        let spec =
            CommandSpec::new("printf").args(["%s|", "a b", "$(echo no)", "'quoted'", ";", "*"]);
        let output = run(&spec, None).await.unwrap();
        assert!(output.success());
        assert_eq!(output.stdout_text(), "a b|$(echo no)|'quoted'|;|*|");
    }

    #[tokio::test]
    async fn standard_input_is_delivered_and_lines_are_streamed() {
        let spec = CommandSpec::new("cat").stdin(Input::new("first\nsecond\nthird"));
        let mut seen = Vec::new();
        let mut sink = |stream: Stream, line: &str| seen.push((stream, line.to_string()));
        let output = run(&spec, Some(&mut sink)).await.unwrap();
        assert!(output.success());
        assert_eq!(
            seen,
            vec![
                (Stream::Stdout, "first".to_string()),
                (Stream::Stdout, "second".to_string()),
                (Stream::Stdout, "third".to_string()),
            ]
        );
    }

    #[tokio::test]
    async fn output_is_bounded_and_truncation_reported() {
        let spec = CommandSpec::new("head")
            .args(["-c", "100000", "/dev/zero"])
            .stdout_limit(1000);
        let output = run(&spec, None).await.unwrap();
        assert!(output.success());
        assert_eq!(output.stdout.len(), 1000);
        assert!(output.stdout_truncated);
    }

    #[tokio::test]
    async fn large_standard_input_does_not_deadlock_against_large_output() {
        let input = vec![b'a'; 4 * 1024 * 1024];
        let spec = CommandSpec::new("cat")
            .stdin(Input::new(input))
            .stdout_limit(10);
        let output = run(&spec, None).await.unwrap();
        assert!(output.success());
        assert!(output.stdout_truncated);
    }

    #[tokio::test]
    async fn failure_status_and_standard_error_are_reported() {
        let spec = CommandSpec::new("ls").arg("/nonexistent-path-for-a-test");
        let output = run(&spec, None).await.unwrap();
        assert!(!output.success());
        assert_eq!(output.status_text(), "exit status 2");
        assert!(output.stderr_tail(1).contains("nonexistent"));
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let spec = CommandSpec::new("no-such-program-here");
        match run(&spec, None).await {
            Err(ProcessError::NotFound { program }) => assert_eq!(program, "no-such-program-here"),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_time_limit_stops_the_program_and_its_children() {
        // `timeout` starts `sleep` as its child; both must go when the limit passes.
        let spec = CommandSpec::new("timeout")
            .args(["--foreground", "60", "sleep", "31.4159"])
            .timeout(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let result = run(&spec, None).await;
        assert!(
            matches!(result, Err(ProcessError::TimedOut { .. })),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let mut left = true;
        for _ in 0..50 {
            left = sleeper_running("31.4159");
            if !left {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!left, "the child of the stopped program is still running");
    }

    fn sleeper_running(marker: &str) -> bool {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
            .any(|cmdline| {
                let text = String::from_utf8_lossy(&cmdline);
                text.starts_with("sleep\0") && text.contains(marker)
            })
    }
}
