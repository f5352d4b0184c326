//! A real `hostplane-coordinator` process on the host for tests that reach it from containers,
//! and a small blocking client of its public REST API.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// How the coordinator is started.
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    /// The QUIC address agents dial; keep it across restarts so their saved address stays right.
    pub quic_listen: SocketAddr,
    /// Extra arguments after `serve`, e.g. `--dev`.
    pub serve_arguments: Vec<String>,
}

/// A running coordinator, stopped (SIGKILL) when dropped.
pub struct HostCoordinator {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub http: String,
    /// The first admin's API key (from `admin.key`).
    pub admin_key: String,
    log: PathBuf,
}

impl std::fmt::Debug for HostCoordinator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("HostCoordinator")
            .field("http", &self.http)
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl HostCoordinator {
    /// Starts the coordinator and waits (60 s at most) for its `listening` line. Its standard
    /// error goes to `DATA_DIR.logN` next to the data folder.
    pub fn start(options: &CoordinatorOptions) -> anyhow::Result<HostCoordinator> {
        std::fs::create_dir_all(&options.data_dir)?;
        let mut log = options.data_dir.with_extension("log0");
        for index in 0..1000 {
            log = options.data_dir.with_extension(format!("log{index}"));
            if !log.exists() {
                break;
            }
        }
        let stderr = std::fs::File::create(&log)?;
        let mut child = Command::new(&options.binary)
            .arg("--data-dir")
            .arg(&options.data_dir)
            .arg("serve")
            .args(&options.serve_arguments)
            .args(["--http-listen", "127.0.0.1:0", "--quic-listen"])
            .arg(options.quic_listen.to_string())
            .env_remove("HOSTPLANE_CONFIG")
            .env_remove("JOURNAL_STREAM")
            .env("HOSTPLANE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {}", options.binary.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut guard = HostCoordinator {
            child: Some(child),
            http: String::new(),
            admin_key: String::new(),
            log,
        };
        let started = Instant::now();
        let timeout = Duration::from_secs(60);
        let listening = loop {
            let remaining = timeout.saturating_sub(started.elapsed());
            match receiver.recv_timeout(remaining) {
                Ok(line) if line.starts_with("listening ") => break line,
                Ok(_) => {}
                Err(_) => bail!(
                    "the coordinator did not say where it listens within {timeout:?}:\n{}",
                    tail(&guard.log)
                ),
            }
        };
        guard.http = listening
            .split_whitespace()
            .find_map(|part| part.strip_prefix("http="))
            .context("no http= in the listening line")?
            .to_string();
        guard.admin_key = std::fs::read_to_string(options.data_dir.join("admin.key"))
            .context("no admin.key")?
            .trim()
            .to_string();
        Ok(guard)
    }

    /// Stops it with SIGTERM and checks that it exits cleanly within 20 s.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("the coordinator exited with {status}:\n{}", tail(&self.log));
                }
                return Ok(());
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the coordinator did not stop within 20 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines it logged.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for HostCoordinator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A status and a JSON body (`Null` when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// A blocking client of the REST API with an API key.
pub struct Api {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Api").finish_non_exhaustive()
    }
}

impl Api {
    pub fn new() -> anyhow::Result<Api> {
        Ok(Api {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(90))
                .build()?,
        })
    }

    /// `method` `base``path` with `x-api-key: key` and an optional JSON body.
    pub fn call(
        &self,
        method: &str,
        base: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{base}{path}");
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        self.runtime.block_on(async {
            let mut request = self
                .client
                .request(method.clone(), &url)
                .header("x-api-key", key);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("{method} {url}"))?;
            let status = response.status().as_u16();
            let bytes = response.bytes().await?;
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok(Answer { status, body })
        })
    }

    /// Like [`Api::call`], but fails unless the status is 2xx.
    pub fn ok(
        &self,
        method: &str,
        base: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let answer = self.call(method, base, path, key, body)?;
        if !(200..300).contains(&answer.status) {
            bail!("{method} {path}: {} {}", answer.status, answer.body);
        }
        Ok(answer.body)
    }

    /// GET `base``path` with the key, the whole body as bytes, and the response headers.
    pub fn get_bytes(
        &self,
        base: &str,
        path: &str,
        key: &str,
    ) -> anyhow::Result<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
        let url = format!("{base}{path}");
        self.runtime.block_on(async {
            let response = self
                .client
                .get(&url)
                .header("x-api-key", key)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.bytes().await?.to_vec();
            Ok((status, headers, body))
        })
    }

    /// Starts a task with `?wait=60` and polls it (within `timeout`) until it ends; returns the
    /// final task record.
    pub fn task(
        &self,
        method: &str,
        base: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let answer = self.ok(
            method,
            base,
            &format!("{path}{separator}wait=60"),
            key,
            body,
        )?;
        let mut task = answer["task"].clone();
        let id = task["id"]
            .as_str()
            .with_context(|| format!("{method} {path} did not answer with a task: {answer}"))?
            .to_string();
        let ended = |task: &Value| {
            matches!(
                task["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled" | "expired")
            )
        };
        let started = Instant::now();
        while !ended(&task) {
            if started.elapsed() > timeout {
                bail!("{method} {path}: task {id} did not end within {timeout:?}: {task}");
            }
            std::thread::sleep(Duration::from_millis(500));
            task = self.ok("GET", base, &format!("/api/v1/task/{id}"), key, None)?["task"].clone();
        }
        Ok(task)
    }

    /// Plain GET of a URL (no key), e.g. `/healthz`: the status, or an error when nothing answers.
    pub fn get_status(&self, url: &str) -> anyhow::Result<u16> {
        self.runtime.block_on(async {
            let response = self
                .client
                .get(url)
                .timeout(Duration::from_secs(5))
                .send()
                .await?;
            Ok(response.status().as_u16())
        })
    }
}
