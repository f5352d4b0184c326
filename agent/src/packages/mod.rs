//! Debian packages inside the container: list what dpkg has installed, and install, upgrade or
//! remove with apt-get, non-interactively, waiting for apt's lock instead of failing on it, with
//! apt's output streamed line by line.
//!
//! Planning (checked names, command lines, reading answers) lives in [`names`], [`policy`] and
//! [`plan`]; [`Packages`] runs the plans through a [`CommandRunner`].
//!
//! Invariant: a name is checked by [`names::PackageSpec::parse`] before any program starts, and
//! two package operations of one agent never overlap (they queue on [`Exclusive::apt`]).

pub use protocol::names::package as names;
pub mod plan;
pub use protocol::names::package_policy as policy;

use std::sync::Arc;

use protocol::{ErrorCode, ErrorData, Operation, OperationOutput, PackageInfo, TaskOutcome};

pub use names::{NameError, PackageSpec};
pub use plan::{AptAction, AptSettings};
pub use policy::{PackagePolicy, PatternError, Refusal};

use futures_util::future::BoxFuture;

use crate::handler::{Handler, TaskContext};
use crate::process::{
    CommandRunner, CommandSpec, Exclusive, LineSink, Output, ProcessError, Stream, SystemRunner,
    task_log,
};
use plan::AptFailure;

/// Why a package operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// One or more names break Debian's rules; nothing ran.
    #[error("invalid package names: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidNames(Vec<NameError>),
    /// The operation needs at least one package name.
    #[error("no package named")]
    NothingNamed,
    /// A version pin was given where it means nothing (listing).
    #[error("a version cannot be given when listing packages ({0})")]
    VersionInList(String),
    /// A program could not be run to its end.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A named package is not known to apt.
    #[error("unknown package: {message}")]
    UnknownPackage {
        /// apt's own words.
        message: String,
    },
    /// Another program held the package database longer than the lock timeout.
    #[error("the package database stayed locked by another program: {message}")]
    Locked {
        /// apt's own words.
        message: String,
    },
    /// A program ran and failed.
    #[error("{program} failed with {status}: {message}")]
    Failed {
        /// The program.
        program: String,
        /// How it ended, for example `exit status 100`.
        status: String,
        /// The last lines it wrote on standard error.
        message: String,
    },
    /// The list of installed packages was larger than the bound on captured output.
    #[error("the list of installed packages is too long to report")]
    ListTooLong,
}

impl PackageError {
    /// The error as it crosses the wire.
    pub fn to_error_data(&self) -> ErrorData {
        let code = match self {
            PackageError::InvalidNames(_)
            | PackageError::NothingNamed
            | PackageError::VersionInList(_) => ErrorCode::InvalidInput,
            PackageError::Process(ProcessError::NotFound { .. }) => ErrorCode::Unavailable,
            PackageError::Process(ProcessError::TimedOut { .. }) => ErrorCode::Timeout,
            PackageError::Process(_) => ErrorCode::Internal,
            PackageError::UnknownPackage { .. } => ErrorCode::NotFound,
            PackageError::Locked { .. } => ErrorCode::Unavailable,
            PackageError::Failed { .. } => ErrorCode::CommandFailed,
            PackageError::ListTooLong => ErrorCode::ResourceExhausted,
        };
        let mut data = ErrorData::new(code, self.to_string());
        match self {
            PackageError::InvalidNames(errors) => {
                for error in errors {
                    data = data.with_detail(error.text.clone(), error.reason.clone());
                }
            }
            PackageError::Failed {
                program, status, ..
            } => {
                data = data
                    .with_detail("program", program.clone())
                    .with_detail("status", status.clone());
            }
            PackageError::Process(
                ProcessError::NotFound { program }
                | ProcessError::Start { program, .. }
                | ProcessError::TimedOut { program, .. }
                | ProcessError::Io { program, .. },
            ) => data = data.with_detail("program", program.clone()),
            _ => {}
        }
        data
    }
}

impl From<PackageError> for ErrorData {
    fn from(error: PackageError) -> ErrorData {
        error.to_error_data()
    }
}

/// The package operations of one agent.
#[derive(Clone)]
pub struct Packages {
    runner: Arc<dyn CommandRunner>,
    exclusive: Exclusive,
    settings: AptSettings,
}

impl std::fmt::Debug for Packages {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Packages")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Packages {
    /// Package operations on this machine with the default settings, serialized on `exclusive`.
    pub fn new(exclusive: Exclusive) -> Packages {
        Packages::with_runner(Arc::new(SystemRunner), exclusive, AptSettings::default())
    }

    /// Package operations through `runner` with `settings`.
    pub fn with_runner(
        runner: Arc<dyn CommandRunner>,
        exclusive: Exclusive,
        settings: AptSettings,
    ) -> Packages {
        Packages {
            runner,
            exclusive,
            settings,
        }
    }

    /// The installed packages: those named (unknown names are simply absent), or all when
    /// `names` is empty. Sorted by name, then architecture.
    pub async fn list(&self, names: &[String]) -> Result<Vec<PackageInfo>, PackageError> {
        let specs = names::parse_all(names).map_err(PackageError::InvalidNames)?;
        if let Some(pinned) = specs.iter().find(|spec| spec.version.is_some()) {
            return Err(PackageError::VersionInList(pinned.apt_argument()));
        }
        self.list_specs(&specs).await
    }

    /// Installs the named packages and reports them as now installed.
    pub async fn install(
        &self,
        names: &[String],
        lines: LineSink<'_>,
    ) -> Result<Vec<PackageInfo>, PackageError> {
        let specs = self.apt(AptAction::Install, names, lines).await?;
        self.list_specs(&without_versions(&specs)).await
    }

    /// Upgrades the named packages, or every package when `names` is empty, and reports the
    /// named packages (or all) as now installed.
    pub async fn upgrade(
        &self,
        names: &[String],
        lines: LineSink<'_>,
    ) -> Result<Vec<PackageInfo>, PackageError> {
        let specs = self.apt(AptAction::Upgrade, names, lines).await?;
        self.list_specs(&without_versions(&specs)).await
    }

    /// Removes the named packages (their configuration files stay, as with `apt-get remove`).
    pub async fn remove(&self, names: &[String], lines: LineSink<'_>) -> Result<(), PackageError> {
        self.apt(AptAction::Remove, names, lines).await?;
        Ok(())
    }

    /// Performs a package [`Operation`], or answers `None` for any other kind. Each output line
    /// of apt goes to `lines`.
    pub async fn perform(&self, operation: &Operation, lines: LineSink<'_>) -> Option<TaskOutcome> {
        let outcome = match operation {
            Operation::PackageList { names } => {
                self.list(names).await.map(OperationOutput::Packages)
            }
            Operation::PackageInstall { names } => self
                .install(names, lines)
                .await
                .map(OperationOutput::Packages),
            Operation::PackageUpgrade { names } => self
                .upgrade(names, lines)
                .await
                .map(OperationOutput::Packages),
            Operation::PackageRemove { names } => self
                .remove(names, lines)
                .await
                .map(|()| OperationOutput::Done),
            _ => return None,
        };
        Some(outcome.map_err(ErrorData::from))
    }

    /// Checks the names, then runs apt-get for `action` while holding the agent's apt lock.
    async fn apt(
        &self,
        action: AptAction,
        names: &[String],
        lines: LineSink<'_>,
    ) -> Result<Vec<PackageSpec>, PackageError> {
        let specs = names::parse_all(names).map_err(PackageError::InvalidNames)?;
        let command =
            plan::apt_command(action, &specs, &self.settings).ok_or(PackageError::NothingNamed)?;
        let _turn = self.exclusive.apt().await;
        lines(Stream::Stdout, &format!("$ {}", command.display()));
        let output = self.runner.run(&command, Some(lines)).await?;
        if output.success() {
            Ok(specs)
        } else {
            Err(apt_failure(&command, &output))
        }
    }

    async fn list_specs(&self, specs: &[PackageSpec]) -> Result<Vec<PackageInfo>, PackageError> {
        let command = plan::list_command(specs, &self.settings);
        let output = self.runner.run(&command, None).await?;
        let unknown_only = output.code == Some(1)
            && !specs.is_empty()
            && plan::only_unknown_packages(&output.stderr_text());
        if !output.success() && !unknown_only {
            return Err(failed(&command, &output));
        }
        if output.stdout_truncated {
            return Err(PackageError::ListTooLong);
        }
        Ok(plan::parse_list(&output.stdout_text()))
    }
}

impl Handler for Packages {
    fn handles(&self, operation: &Operation) -> bool {
        matches!(
            operation,
            Operation::PackageList { .. }
                | Operation::PackageInstall { .. }
                | Operation::PackageUpgrade { .. }
                | Operation::PackageRemove { .. }
        )
    }

    fn handle(
        &self,
        operation: Operation,
        context: TaskContext,
    ) -> BoxFuture<'static, TaskOutcome> {
        let packages = self.clone();
        Box::pin(async move {
            let (mut sink, forwarding) = task_log(&context);
            let outcome = packages.perform(&operation, &mut sink).await;
            drop(sink);
            let _ = forwarding.await;
            outcome.unwrap_or_else(|| {
                Err(ErrorData::new(
                    ErrorCode::Internal,
                    "the package handler got another kind of operation",
                ))
            })
        })
    }
}

fn without_versions(specs: &[PackageSpec]) -> Vec<PackageSpec> {
    specs
        .iter()
        .map(|spec| PackageSpec {
            version: None,
            ..spec.clone()
        })
        .collect()
}

fn apt_failure(command: &CommandSpec, output: &Output) -> PackageError {
    let message = output.stderr_tail(3);
    match plan::classify_failure(&output.stderr_text()) {
        AptFailure::UnknownPackage => PackageError::UnknownPackage { message },
        AptFailure::Locked => PackageError::Locked { message },
        AptFailure::Other => failed(command, output),
    }
}

fn failed(command: &CommandSpec, output: &Output) -> PackageError {
    PackageError::Failed {
        program: command.program.clone(),
        status: output.status_text(),
        message: output.stderr_tail(3),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what it is asked to run and answers from a script.
    #[derive(Default)]
    struct Recorder {
        ran: Mutex<Vec<CommandSpec>>,
        answers: Mutex<Vec<Output>>,
    }

    impl CommandRunner for Recorder {
        fn run<'a>(
            &'a self,
            spec: &'a CommandSpec,
            _lines: Option<LineSink<'a>>,
        ) -> BoxFuture<'a, Result<Output, ProcessError>> {
            self.ran.lock().unwrap().push(spec.clone());
            let answer = self.answers.lock().unwrap().remove(0);
            Box::pin(async move { Ok(answer) })
        }
    }

    fn answer(code: i32, stdout: &str, stderr: &str) -> Output {
        Output {
            code: Some(code),
            signal: None,
            stdout: stdout.as_bytes().to_vec(),
            stdout_truncated: false,
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    fn packages(answers: Vec<Output>) -> (Packages, Arc<Recorder>) {
        let recorder = Arc::new(Recorder {
            ran: Mutex::new(Vec::new()),
            answers: Mutex::new(answers),
        });
        (
            Packages::with_runner(recorder.clone(), Exclusive::new(), AptSettings::default()),
            recorder,
        )
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[tokio::test]
    async fn bad_names_run_nothing() {
        let (packages, recorder) = packages(Vec::new());
        let mut sink = |_: Stream, _: &str| {};
        for bad in [
            names(&["-y"]),
            names(&["hello", "--purge"]),
            names(&["a;b"]),
        ] {
            let error = packages.install(&bad, &mut sink).await.unwrap_err();
            assert_eq!(error.to_error_data().code, ErrorCode::InvalidInput);
            assert!(packages.remove(&bad, &mut sink).await.is_err());
            assert!(packages.list(&bad).await.is_err());
        }
        let error = packages.install(&[], &mut sink).await.unwrap_err();
        assert!(matches!(error, PackageError::NothingNamed));
        assert!(recorder.ran.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn install_reports_the_packages_as_installed_and_errors_are_typed() {
        let (packages, recorder) = packages(vec![
            answer(0, "Setting up hello (2.10-3) ...\n", ""),
            answer(0, "ii \thello\t2.10-3\tamd64\n", ""),
            answer(100, "", "E: Unable to locate package nothing-like-it\n"),
            answer(
                100,
                "",
                "E: Sub-process /usr/bin/dpkg returned an error code (1)\n",
            ),
        ]);
        let mut seen = Vec::new();
        let mut sink = |_: Stream, line: &str| seen.push(line.to_string());
        let installed = packages
            .install(&names(&["hello=2.10-3"]), &mut sink)
            .await
            .unwrap();
        assert_eq!(
            installed,
            vec![PackageInfo {
                name: "hello".into(),
                version: "2.10-3".into(),
                architecture: "amd64".into()
            }]
        );
        let ran = recorder.ran.lock().unwrap().clone();
        assert_eq!(ran[0].args.last().unwrap(), "hello=2.10-3");
        // The listing afterwards asks for the name without the version.
        assert_eq!(ran[1].args.last().unwrap(), "hello");
        assert!(seen[0].starts_with("$ apt-get "));

        let unknown = packages
            .install(&names(&["nothing-like-it"]), &mut |_: Stream, _: &str| {})
            .await
            .unwrap_err();
        assert_eq!(unknown.to_error_data().code, ErrorCode::NotFound);
        let failed = packages
            .remove(&names(&["hello"]), &mut |_: Stream, _: &str| {})
            .await
            .unwrap_err();
        let data = failed.to_error_data();
        assert_eq!(data.code, ErrorCode::CommandFailed);
        assert!(data.message.contains("returned an error code"), "{data}");
    }

    #[tokio::test]
    async fn perform_answers_only_package_operations() {
        let (packages, _) = packages(vec![answer(
            1,
            "",
            "dpkg-query: no packages found matching zz\n",
        )]);
        let mut sink = |_: Stream, _: &str| {};
        let outcome = packages
            .perform(
                &Operation::PackageList {
                    names: names(&["zz"]),
                },
                &mut sink,
            )
            .await;
        assert_eq!(outcome, Some(Ok(OperationOutput::Packages(Vec::new()))));
        let other = packages
            .perform(
                &Operation::Ping {
                    payload: Vec::new(),
                },
                &mut sink,
            )
            .await;
        assert_eq!(other, None);
    }

    #[tokio::test]
    async fn as_a_handler_it_logs_apt_lines_before_the_result() {
        let (packages, _) = packages(vec![
            answer(0, "Setting up hello (2.10-3) ...\n", ""),
            answer(0, "ii \thello\t2.10-3\tamd64\n", ""),
        ]);
        assert!(packages.handles(&Operation::PackageRemove { names: Vec::new() }));
        assert!(!packages.handles(&Operation::DatabaseList {
            engine: protocol::DatabaseEngine::MariaDb
        }));
        let (sender, mut events) = tokio::sync::mpsc::channel(16);
        let context = TaskContext::new(
            protocol::TaskId([7; 16]),
            std::time::SystemTime::now() + std::time::Duration::from_secs(60),
            1,
            sender,
        );
        let handlers = crate::handler::Handlers::new().with(packages);
        let outcome = handlers
            .dispatch(
                Operation::PackageInstall {
                    names: names(&["hello"]),
                },
                context,
            )
            .await;
        assert!(matches!(outcome, Ok(OperationOutput::Packages(ref list)) if list.len() == 1));
        // The recorder does not call the sink; the command line is logged before apt runs.
        let first = events.try_recv().unwrap();
        assert!(
            matches!(&first, crate::handler::TaskEvent::Log(line) if line.starts_with("$ apt-get")),
            "{first:?}"
        );
    }
}
