//! The web server as the transaction sees it: test a whole configuration, reload it. The nginx
//! implementation runs the real program with argument vectors and bounded output.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::vhosts::layout::WebLayout;
use crate::vhosts::program::run_program;

/// Why the web server refused or failed an action, with its own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFailure {
    /// What failed, as a sentence.
    pub message: String,
    /// The server's output (bounded).
    pub output: String,
}

/// The actions a configuration transaction needs from the web server.
pub trait WebServer: Send + Sync {
    /// Tests the whole configuration whose main file is `main_config`.
    fn test(&self, main_config: &Path) -> impl Future<Output = Result<(), ServerFailure>> + Send;
    /// Makes the running server load its main configuration again, starting it if it is not running.
    fn reload(&self) -> impl Future<Output = Result<(), ServerFailure>> + Send;
}

/// nginx, started with `-c` on the layout's main configuration.
#[derive(Debug, Clone)]
pub struct Nginx {
    binary: PathBuf,
    main_config: PathBuf,
    startup_log: PathBuf,
    pid_file: PathBuf,
    deadline: Duration,
}

impl Nginx {
    /// nginx as the layout describes it.
    pub fn new(layout: &WebLayout) -> Nginx {
        Nginx {
            binary: layout.nginx_binary.clone(),
            main_config: layout.main_config.clone(),
            startup_log: layout.main_error_log(),
            pid_file: layout.pid_file(),
            deadline: Duration::from_secs(30),
        }
    }

    async fn run(&self, what: &str, arguments: Vec<OsString>) -> Result<(), ServerFailure> {
        let mut full: Vec<OsString> = vec!["-e".into(), self.startup_log.clone().into()];
        full.extend(arguments);
        match run_program(&self.binary, &full, self.deadline).await {
            Ok(output) if output.success => Ok(()),
            Ok(output) => Err(ServerFailure {
                message: format!("nginx {what} failed with exit code {:?}", output.code),
                output: output.combined(),
            }),
            Err(error) => Err(ServerFailure {
                message: format!("nginx {what} failed: {error}"),
                output: String::new(),
            }),
        }
    }

    /// The master's process id, if the pid file names a live process.
    pub fn running_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Path::new("/proc")
            .join(pid.to_string())
            .exists()
            .then_some(pid)
    }

    /// Starts nginx (it detaches itself).
    pub async fn start(&self) -> Result<(), ServerFailure> {
        self.run("start", vec!["-c".into(), self.main_config.clone().into()])
            .await
    }

    /// Stops nginx at once, waiting (bounded) for the master to exit.
    pub async fn stop(&self) -> Result<(), ServerFailure> {
        let Some(pid) = self.running_pid() else {
            return Ok(());
        };
        self.run(
            "stop",
            vec![
                "-c".into(),
                self.main_config.clone().into(),
                "-s".into(),
                "stop".into(),
            ],
        )
        .await?;
        for _ in 0..100 {
            if !Path::new("/proc").join(pid.to_string()).exists() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ServerFailure {
            message: format!("nginx (pid {pid}) did not stop within 5 s"),
            output: String::new(),
        })
    }
}

impl WebServer for Nginx {
    async fn test(&self, main_config: &Path) -> Result<(), ServerFailure> {
        self.run(
            "configuration test",
            vec!["-t".into(), "-q".into(), "-c".into(), main_config.into()],
        )
        .await
    }

    async fn reload(&self) -> Result<(), ServerFailure> {
        if self.running_pid().is_none() {
            return self.start().await;
        }
        self.run(
            "reload",
            vec![
                "-c".into(),
                self.main_config.clone().into(),
                "-s".into(),
                "reload".into(),
            ],
        )
        .await
    }
}
