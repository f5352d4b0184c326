//! Databases inside the container, for MariaDB (or MySQL) and PostgreSQL: find which engines
//! are present, list databases, create a database with its own user and password, change a
//! user's password, drop a database with its user, and stream a dump.
//!
//! Planning (checked names, quoting, scripts, command lines) lives in [`names`] and [`plan`];
//! [`Databases`] runs the plans through a [`CommandRunner`], and [`dump`] streams dumps.
//!
//! Invariants: names are checked before any program starts; SQL goes to the clients on standard
//! input, so a password never appears in an argument, an environment variable or a log line.

pub mod dump;
pub use protocol::names::database as names;
pub mod plan;

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protocol::{
    DatabaseEngine, DatabaseInfo, ErrorCode, ErrorData, Operation, OperationOutput, Secret,
    TaskOutcome,
};

pub use dump::{Dump, DumpError, DumpSummary};
pub use names::NameError;
pub use plan::{DatabaseSettings, MariaDbSettings, PostgresSettings};

use futures_util::future::BoxFuture;

use crate::handler::{Handler, TaskContext};
use crate::process::{
    CommandRunner, CommandSpec, LineSink, Output, ProcessError, Stream, SystemRunner, task_log,
};
use plan::ClientFailure;

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// A name or password breaks the rules; nothing ran.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The engine is not usable here: its client program or its server socket is missing.
    #[error("{} is not available here: {reason}", engine_name(*.engine))]
    EngineMissing {
        /// The engine.
        engine: DatabaseEngine,
        /// What is missing.
        reason: String,
    },
    /// The database (or user) to create exists already.
    #[error("{0}")]
    Exists(String),
    /// The database or user named does not exist.
    #[error("{0}")]
    Missing(String),
    /// The server refused the administrative login.
    #[error("the server refused the administrative login: {0}")]
    Refused(String),
    /// A program could not be run to its end.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A client ran and failed.
    #[error("{program} failed with {status}: {message}")]
    Failed {
        /// The program.
        program: String,
        /// How it ended.
        status: String,
        /// The last lines it wrote on standard error.
        message: String,
    },
}

impl DatabaseError {
    /// The error as it crosses the wire.
    pub fn to_error_data(&self) -> ErrorData {
        let code = match self {
            DatabaseError::InvalidName(_) => ErrorCode::InvalidInput,
            DatabaseError::EngineMissing { .. } => ErrorCode::Unavailable,
            DatabaseError::Exists(_) => ErrorCode::Conflict,
            DatabaseError::Missing(_) => ErrorCode::NotFound,
            DatabaseError::Refused(_) => ErrorCode::PermissionDenied,
            DatabaseError::Process(ProcessError::NotFound { .. }) => ErrorCode::Unavailable,
            DatabaseError::Process(ProcessError::TimedOut { .. }) => ErrorCode::Timeout,
            DatabaseError::Process(_) => ErrorCode::Internal,
            DatabaseError::Failed { .. } => ErrorCode::CommandFailed,
        };
        let mut data = ErrorData::new(code, self.to_string());
        if let DatabaseError::InvalidName(error) = self {
            data = data.with_detail("field", error.what);
        }
        data
    }
}

impl From<DatabaseError> for ErrorData {
    fn from(error: DatabaseError) -> ErrorData {
        error.to_error_data()
    }
}

/// The engine's name for people.
pub fn engine_name(engine: DatabaseEngine) -> &'static str {
    match engine {
        DatabaseEngine::MariaDb => "MariaDB",
        DatabaseEngine::PostgreSql => "PostgreSQL",
    }
}

/// The database operations of one agent.
#[derive(Clone)]
pub struct Databases {
    runner: Arc<dyn CommandRunner>,
    settings: DatabaseSettings,
}

impl std::fmt::Debug for Databases {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Databases")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Databases {
    /// Database operations on this machine with `settings`.
    pub fn new(settings: DatabaseSettings) -> Databases {
        Databases::with_runner(Arc::new(SystemRunner), settings)
    }

    /// Database operations through `runner`.
    pub fn with_runner(runner: Arc<dyn CommandRunner>, settings: DatabaseSettings) -> Databases {
        Databases { runner, settings }
    }

    /// The settings in use.
    pub fn settings(&self) -> &DatabaseSettings {
        &self.settings
    }

    /// Whether `engine` is usable here: its client program is installed and its server socket
    /// accepts a connection.
    pub async fn check_engine(&self, engine: DatabaseEngine) -> Result<(), DatabaseError> {
        let (client, dump, socket) = match engine {
            DatabaseEngine::MariaDb => (
                &self.settings.mariadb.client,
                &self.settings.mariadb.dump,
                self.settings.mariadb.socket.clone(),
            ),
            DatabaseEngine::PostgreSql => (
                &self.settings.postgres.client,
                &self.settings.postgres.dump,
                self.settings.postgres.socket_path(),
            ),
        };
        let missing = |reason: String| DatabaseError::EngineMissing { engine, reason };
        for program in [client, dump] {
            if find_program(program).is_none() {
                return Err(missing(format!("the program {program} is not installed")));
            }
        }
        match tokio::fs::metadata(&socket).await {
            Ok(metadata) if metadata.file_type().is_socket() => {}
            _ => {
                return Err(missing(format!(
                    "no server socket at {} (is the server installed and running?)",
                    socket.display()
                )));
            }
        }
        tokio::net::UnixStream::connect(&socket)
            .await
            .map_err(|error| {
                missing(format!(
                    "the server socket {} does not accept connections: {error}",
                    socket.display()
                ))
            })?;
        Ok(())
    }

    /// The engines usable here.
    pub async fn engines(&self) -> Vec<DatabaseEngine> {
        let mut present = Vec::new();
        for engine in [DatabaseEngine::MariaDb, DatabaseEngine::PostgreSql] {
            if self.check_engine(engine).await.is_ok() {
                present.push(engine);
            }
        }
        present
    }

    /// The databases of `engine` (system databases left out), sorted by name.
    pub async fn list(&self, engine: DatabaseEngine) -> Result<Vec<DatabaseInfo>, DatabaseError> {
        self.check_engine(engine).await?;
        let output = self.client(engine, plan::list_script(engine), None).await?;
        Ok(plan::parse_list(engine, &output.stdout_text()))
    }

    /// Creates database `name` and its user `user` with `password`. An existing user keeps its
    /// other databases and gets `password` as its password. Fails with
    /// [`DatabaseError::Exists`] when the database exists.
    pub async fn create(
        &self,
        engine: DatabaseEngine,
        name: &str,
        user: &str,
        password: &Secret,
        lines: LineSink<'_>,
    ) -> Result<(), DatabaseError> {
        names::check_database(engine, name)?;
        names::check_user(engine, user)?;
        names::check_password(password)?;
        self.check_engine(engine).await?;
        lines(
            Stream::Stdout,
            &format!(
                "creating {} database {name} owned by {user}",
                engine_name(engine)
            ),
        );
        let script = plan::create_script(engine, &self.settings, name, user, password);
        self.client(engine, script, Some(lines)).await?;
        Ok(())
    }

    /// Sets the password of `user`. Fails with [`DatabaseError::Missing`] when there is no such
    /// user.
    pub async fn change_password(
        &self,
        engine: DatabaseEngine,
        user: &str,
        password: &Secret,
        lines: LineSink<'_>,
    ) -> Result<(), DatabaseError> {
        names::check_user(engine, user)?;
        names::check_password(password)?;
        self.check_engine(engine).await?;
        lines(
            Stream::Stdout,
            &format!(
                "changing the password of {} user {user}",
                engine_name(engine)
            ),
        );
        let script = plan::change_password_script(engine, &self.settings, user, password);
        self.client(engine, script, Some(lines)).await?;
        Ok(())
    }

    /// Drops database `name` and the user that owns it, unless that user has other databases
    /// (then only its rights on this one go). Fails with [`DatabaseError::Missing`] when there
    /// is no such database.
    pub async fn drop(
        &self,
        engine: DatabaseEngine,
        name: &str,
        lines: LineSink<'_>,
    ) -> Result<(), DatabaseError> {
        names::check_database(engine, name)?;
        self.check_engine(engine).await?;
        let answer = self
            .client(engine, plan::owners_script(engine, name), None)
            .await?;
        let (exists, owners) = plan::parse_owners(&answer.stdout_text());
        if !exists {
            return Err(DatabaseError::Missing(format!(
                "there is no {} database {name}",
                engine_name(engine)
            )));
        }
        lines(
            Stream::Stdout,
            &format!("dropping {} database {name}", engine_name(engine)),
        );
        self.client(
            engine,
            plan::drop_script(engine, name, &owners),
            Some(lines),
        )
        .await?;
        if engine == DatabaseEngine::PostgreSql {
            for owner in &owners {
                let Some(script) = plan::drop_role_script(owner) else {
                    lines(
                        Stream::Stdout,
                        &format!(
                            "keeping user {}: it has other databases or is reserved",
                            owner.user
                        ),
                    );
                    continue;
                };
                // The database is gone; a role that still owns objects elsewhere stays, and
                // that is reported, not a failure.
                match self.client(engine, script, None).await {
                    Ok(_) => lines(Stream::Stdout, &format!("dropped user {}", owner.user)),
                    Err(error) => lines(
                        Stream::Stderr,
                        &format!("kept user {}: {error}", owner.user),
                    ),
                }
            }
        }
        Ok(())
    }

    /// Starts a dump of database `name`, compressed with zstd when `compress_zstd` is set.
    pub async fn dump(
        &self,
        engine: DatabaseEngine,
        name: &str,
        compress_zstd: bool,
    ) -> Result<Dump, DatabaseError> {
        names::check_database(engine, name)?;
        self.check_engine(engine).await?;
        // Ask first, so that a missing database is "not found" rather than a failed dump.
        let answer = self
            .client(engine, plan::owners_script(engine, name), None)
            .await?;
        if !plan::parse_owners(&answer.stdout_text()).0 {
            return Err(DatabaseError::Missing(format!(
                "there is no {} database {name}",
                engine_name(engine)
            )));
        }
        let command = plan::dump_command(engine, &self.settings, name);
        Dump::start(&command, compress_zstd).map_err(|error| match error {
            DumpError::Start(error) => DatabaseError::Process(error),
            other => DatabaseError::Failed {
                program: command.program.clone(),
                status: String::new(),
                message: other.to_string(),
            },
        })
    }

    /// Performs a database [`Operation`] other than a dump, or answers `None` for any other
    /// kind (dumps need a data stream: see [`Databases::dump`]).
    pub async fn perform(&self, operation: &Operation, lines: LineSink<'_>) -> Option<TaskOutcome> {
        let outcome = match operation {
            Operation::DatabaseList { engine } => {
                self.list(*engine).await.map(OperationOutput::Databases)
            }
            Operation::DatabaseCreate {
                engine,
                name,
                user,
                password,
            } => self
                .create(*engine, name, user, password, lines)
                .await
                .map(|()| OperationOutput::Done),
            Operation::DatabaseChangePassword {
                engine,
                user,
                password,
            } => self
                .change_password(*engine, user, password, lines)
                .await
                .map(|()| OperationOutput::Done),
            Operation::DatabaseDrop { engine, name } => self
                .drop(*engine, name, lines)
                .await
                .map(|()| OperationOutput::Done),
            _ => return None,
        };
        Some(outcome.map_err(ErrorData::from))
    }

    /// Runs the engine's client with `script` on standard input; a failure is classified.
    async fn client(
        &self,
        engine: DatabaseEngine,
        script: String,
        lines: Option<LineSink<'_>>,
    ) -> Result<Output, DatabaseError> {
        let command = plan::client_command(engine, &self.settings, script);
        let output = match lines {
            Some(sink) => self.runner.run(&command, Some(sink)).await?,
            None => self.runner.run(&command, None).await?,
        };
        if output.success() {
            Ok(output)
        } else {
            Err(client_failure(engine, &command, &output))
        }
    }
}

impl Handler for Databases {
    /// Every database operation; a dump's data goes on the data stream the transport gives.
    fn handles(&self, operation: &Operation) -> bool {
        matches!(
            operation,
            Operation::DatabaseList { .. }
                | Operation::DatabaseCreate { .. }
                | Operation::DatabaseChangePassword { .. }
                | Operation::DatabaseDrop { .. }
                | Operation::DatabaseDump { .. }
        )
    }

    fn handle(
        &self,
        operation: Operation,
        context: TaskContext,
    ) -> BoxFuture<'static, TaskOutcome> {
        let databases = self.clone();
        Box::pin(async move {
            if let Operation::DatabaseDump {
                engine,
                name,
                compress_zstd,
            } = operation
            {
                return databases
                    .send_dump(engine, &name, compress_zstd, &context)
                    .await;
            }
            let (mut sink, forwarding) = task_log(&context);
            let outcome = databases.perform(&operation, &mut sink).await;
            drop(sink);
            let _ = forwarding.await;
            outcome.unwrap_or_else(|| {
                Err(ErrorData::new(
                    ErrorCode::Internal,
                    "the database handler got another kind of operation",
                ))
            })
        })
    }
}

impl Databases {
    /// Runs a dump and sends it on the task's data stream as it is produced. A dump that fails
    /// midway resets the stream, so the coordinator never takes what arrived for a whole dump,
    /// and the result is the error.
    async fn send_dump(
        &self,
        engine: DatabaseEngine,
        name: &str,
        compress_zstd: bool,
        context: &TaskContext,
    ) -> TaskOutcome {
        use futures_util::StreamExt;
        let Some(data) = context.data_channel() else {
            return Err(ErrorData::new(
                ErrorCode::Unsupported,
                "a dump needs a data stream, which this transport does not give",
            ));
        };
        let mut dump = self
            .dump(engine, name, compress_zstd)
            .await
            .map_err(|error| error.to_error_data())?;
        let mut send = data.open(context.task_id).await?;
        while let Some(chunk) = dump.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    let _ = send.reset(quinn::VarInt::from_u32(1));
                    return Err(error.to_error_data());
                }
            };
            if let Err(error) = send.write_all(&chunk).await {
                return Err(ErrorData::new(
                    ErrorCode::Unavailable,
                    format!("the coordinator stopped taking the dump: {error}"),
                ));
            }
        }
        let Some(summary) = dump.finished() else {
            let _ = send.reset(quinn::VarInt::from_u32(1));
            return Err(ErrorData::new(
                ErrorCode::Internal,
                "the dump ended without a summary",
            ));
        };
        let _ = send.finish();
        // Wait until the coordinator has read everything (or gave up), so the result never
        // overtakes the data.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), send.stopped()).await;
        Ok(summary.output())
    }
}

fn client_failure(engine: DatabaseEngine, command: &CommandSpec, output: &Output) -> DatabaseError {
    let message = output.stderr_tail(3);
    match plan::classify_failure(engine, &output.stderr_text()) {
        ClientFailure::Exists => DatabaseError::Exists(message),
        ClientFailure::Missing => DatabaseError::Missing(message),
        ClientFailure::Unreachable => DatabaseError::EngineMissing {
            engine,
            reason: message,
        },
        ClientFailure::Refused => DatabaseError::Refused(message),
        ClientFailure::Other => DatabaseError::Failed {
            program: command.program.clone(),
            status: output.status_text(),
            message,
        },
    }
}

/// The full path of `program`: itself if it contains a slash, else the first executable of
/// that name in `PATH` (with the system folders added, as a service's `PATH` may lack them).
pub fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &Path| {
        std::fs::metadata(path)
            .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = PathBuf::from(program);
        return executable(&path).then_some(path);
    }
    let path_variable = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_variable)
        .chain(
            [
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
            .into_iter()
            .map(PathBuf::from),
        )
        .map(|folder| folder.join(program))
        .find(|candidate| executable(candidate))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        ran: Mutex<Vec<CommandSpec>>,
    }

    impl CommandRunner for Recorder {
        fn run<'a>(
            &'a self,
            spec: &'a CommandSpec,
            _lines: Option<LineSink<'a>>,
        ) -> BoxFuture<'a, Result<Output, ProcessError>> {
            self.ran.lock().unwrap().push(spec.clone());
            Box::pin(async { panic!("nothing may run for a refused request") })
        }
    }

    #[tokio::test]
    async fn refused_names_run_nothing() {
        let recorder = Arc::new(Recorder::default());
        let databases = Databases::with_runner(recorder.clone(), DatabaseSettings::default());
        let password = Secret::new("fine password");
        let mut sink = |_: Stream, _: &str| {};
        let cases = [
            (DatabaseEngine::MariaDb, "bad-name", "fine"),
            (DatabaseEngine::MariaDb, "fine", "bad user"),
            (DatabaseEngine::MariaDb, "mysql", "fine"),
            (DatabaseEngine::MariaDb, "fine", "root"),
            (DatabaseEngine::PostgreSql, "Fine", "fine"),
            (DatabaseEngine::PostgreSql, "fine", "bad-user"),
            (DatabaseEngine::PostgreSql, "postgres", "fine"),
            (DatabaseEngine::PostgreSql, "fine", "postgres"),
        ];
        for (engine, name, user) in cases {
            let error = databases
                .create(engine, name, user, &password, &mut sink)
                .await
                .unwrap_err();
            assert!(
                matches!(error, DatabaseError::InvalidName(_)),
                "{engine:?} {name} {user}: {error}"
            );
            assert_eq!(error.to_error_data().code, ErrorCode::InvalidInput);
        }
        for engine in [DatabaseEngine::MariaDb, DatabaseEngine::PostgreSql] {
            let error = databases
                .create(engine, "fine", "fine", &Secret::new("a\nb"), &mut sink)
                .await
                .unwrap_err();
            assert!(matches!(error, DatabaseError::InvalidName(_)));
            assert!(!format!("{error:?}").contains("a\nb"));
            assert!(databases.drop(engine, "x;y", &mut sink).await.is_err());
            assert!(databases.dump(engine, "../etc", false).await.is_err());
        }
        assert!(recorder.ran.lock().unwrap().is_empty());
    }
}
