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
    systemd_unit: Option<String>,
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
            systemd_unit: layout.systemd_unit.clone(),
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

    /// Starts nginx: through its systemd unit when systemd runs this system (so that nginx is
    /// started again at boot and is not part of the agent's service), otherwise directly (it
    /// detaches itself).
    pub async fn start(&self) -> Result<(), ServerFailure> {
        if let Some(unit) = &self.systemd_unit
            && Path::new("/run/systemd/system").is_dir()
        {
            let arguments: Vec<OsString> = vec!["start".into(), unit.into()];
            return match run_program(Path::new("systemctl"), &arguments, self.deadline).await {
                Ok(output) if output.success => Ok(()),
                Ok(output) => Err(ServerFailure {
                    message: format!(
                        "systemctl start {unit} failed with exit code {:?}",
                        output.code
                    ),
                    output: output.combined() + &read_tail(&self.startup_log),
                }),
                Err(error) => Err(ServerFailure {
                    message: format!("systemctl start {unit} failed: {error}"),
                    output: String::new(),
                }),
            };
        }
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
        let Some(master) = self.running_pid() else {
            return self.start().await;
        };
        let old_workers = accepting_workers(master);
        let arguments = vec![
            "-c".into(),
            self.main_config.clone().into(),
            "-s".into(),
            "reload".into(),
        ];
        self.run("reload", arguments).await?;
        // The signal is sent at once, but the old workers keep accepting connections until the
        // master has started new ones and told the old ones to stop. Wait for that, so that every
        // later connection reaches the new configuration.
        let started = tokio::time::Instant::now();
        while started.elapsed() < self.deadline.min(Duration::from_secs(10)) {
            let still = accepting_workers(master);
            if old_workers.iter().all(|pid| !still.contains(pid)) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(ServerFailure {
            message: "nginx kept its old worker processes: the new configuration was not loaded"
                .into(),
            output: read_tail(&self.startup_log),
        })
    }
}

/// The worker processes of an nginx master that still accept connections (not shutting down).
fn accepting_workers(master: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut workers = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces; the parent pid follows the state.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|field| field.parse::<u32>().ok());
        if parent != Some(master) {
            continue;
        }
        let title = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let title = String::from_utf8_lossy(&title);
        if title.contains("worker process") && !title.contains("shutting down") {
            workers.push(pid);
        }
    }
    workers
}

/// The last lines of a log file (bounded).
pub fn read_tail(path: &Path) -> String {
    const LIMIT: usize = 4096;
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(LIMIT);
    let tail = String::from_utf8_lossy(&text[start..]).into_owned();
    let lines: Vec<&str> = tail.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
