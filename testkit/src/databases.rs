//! Private throwaway MariaDB and PostgreSQL servers for tests, each in its own temporary folder,
//! reachable only through a unix socket there, and stopped when their guard is dropped.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::databases::{DatabaseSettings, MariaDbSettings, PostgresSettings, find_program};
use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, chown};

/// Whether the programs a test needs are here and it runs as root; if not,
/// [`crate::gate::skip`] says why.
pub fn available(programs: &[&str]) -> bool {
    let mut missing: Vec<String> = programs
        .iter()
        .filter(|program| find_program(program).is_none() && postgres_bin(program).is_none())
        .map(|program| program.to_string())
        .collect();
    if !nix::unistd::Uid::effective().is_root() {
        missing.push("root".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    crate::gate::skip(format!(
        "this test needs {} (packages mariadb-server, mariadb-client, postgresql)",
        missing.join(", ")
    ))
}

/// A program from the newest PostgreSQL installed (`initdb`, `postgres`, `pg_ctl` are not in
/// `PATH` on Debian).
pub fn postgres_bin(program: &str) -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin").join(program)))
        })
        .filter(|(_, path)| path.exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, path)| path)
}

fn system_user(name: &str) -> anyhow::Result<User> {
    User::from_name(name)?.with_context(|| format!("no system user {name}"))
}

fn folder_for(owner: &User, path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::create_dir_all(path)?;
    chown(path, Some(owner.uid), Some(owner.gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn run_checked(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Stops a server process: a polite signal, then SIGKILL if it has not ended within ten
/// seconds.
fn stop(child: &mut Child, polite: Signal) {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, polite);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits (at most 60 s) until `ready` says yes, failing early if the server exits.
fn wait_until(
    child: &mut Child,
    log: &Path,
    what: &str,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{what} exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if ready() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not become ready within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private MariaDB server; dropping it stops the server and removes its files.
pub struct MariaDbServer {
    child: Child,
    /// The server's unix socket.
    pub socket: PathBuf,
    _directory: tempfile::TempDir,
}

impl MariaDbServer {
    /// Installs a fresh data folder and starts `mariadbd` on a socket in it (no network).
    pub fn start() -> anyhow::Result<MariaDbServer> {
        let directory = tempfile::tempdir()?;
        std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o755))?;
        let mysql = system_user("mysql")?;
        let data = directory.path().join("data");
        let run = directory.path().join("run");
        folder_for(&mysql, &data, 0o750)?;
        folder_for(&mysql, &run, 0o755)?;
        // Servers started at the same time must not share a folder for temporary tables.
        let temporary = directory.path().join("tmp");
        folder_for(&mysql, &temporary, 0o750)?;
        let log = directory.path().join("error.log");
        run_checked(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg("--user=mysql")
                .arg(format!("--datadir={}", data.display()))
                .arg("--auth-root-authentication-method=socket")
                .arg("--skip-test-db")
                .arg(format!("--tmpdir={}", temporary.display())),
            "mariadb-install-db",
        )?;
        let socket = run.join("s");
        let mut child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg("--user=mysql")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", run.join("pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!("--tmpdir={}", temporary.display()))
            .arg("--skip-networking")
            .arg("--innodb-buffer-pool-size=32M")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("could not start mariadbd")?;
        let probe = socket.clone();
        wait_until(&mut child, &log, "mariadbd", || {
            std::os::unix::net::UnixStream::connect(&probe).is_ok()
        })?;
        Ok(MariaDbServer {
            child,
            socket,
            _directory: directory,
        })
    }

    /// Settings that reach this server as root over its socket.
    pub fn settings(&self) -> MariaDbSettings {
        MariaDbSettings {
            socket: self.socket.clone(),
            ..MariaDbSettings::default()
        }
    }

    /// The server's process id.
    pub fn process_id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        stop(&mut self.child, Signal::SIGTERM);
    }
}

/// A private PostgreSQL server; dropping it stops the server and removes its files.
///
/// Its `pg_hba.conf` lets the `postgres` role in without a password (the agent's administrative
/// login) and asks every other role for its SCRAM password, so tests can see that a password
/// works and that an old one does not.
pub struct PostgresServer {
    child: Child,
    /// The folder of the server's socket.
    pub socket_directory: PathBuf,
    /// The port that names the socket file.
    pub port: u16,
    _directory: tempfile::TempDir,
}

impl PostgresServer {
    /// Runs `initdb` and starts `postgres` on a socket in a fresh folder (no network).
    pub fn start() -> anyhow::Result<PostgresServer> {
        let directory = tempfile::tempdir()?;
        std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o755))?;
        let postgres = system_user("postgres")?;
        let data = directory.path().join("data");
        let run = directory.path().join("run");
        folder_for(&postgres, &data, 0o700)?;
        folder_for(&postgres, &run, 0o755)?;
        let initdb = postgres_bin("initdb").context("initdb is not installed")?;
        run_checked(
            Command::new(initdb)
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "--no-sync"])
                .current_dir(directory.path())
                .uid(postgres.uid.as_raw())
                .gid(postgres.gid.as_raw()),
            "initdb",
        )?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all postgres trust\nlocal all all scram-sha-256\n",
        )?;
        let port = 5432;
        let log = directory.path().join("server.log");
        let log_file = std::fs::File::create(&log)?;
        let server = postgres_bin("postgres").context("postgres is not installed")?;
        let mut child = Command::new(server)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&run)
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", "listen_addresses=", "-c", "fsync=off"])
            .current_dir(directory.path())
            .uid(postgres.uid.as_raw())
            .gid(postgres.gid.as_raw())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("could not start postgres")?;
        let ready = postgres_bin("pg_isready").context("pg_isready is not installed")?;
        let socket_directory = run.clone();
        wait_until(&mut child, &log, "postgres", || {
            Command::new(&ready)
                .arg("-q")
                .arg("-h")
                .arg(&socket_directory)
                .arg("-p")
                .arg(port.to_string())
                .status()
                .is_ok_and(|status| status.success())
        })?;
        Ok(PostgresServer {
            child,
            socket_directory: run,
            port,
            _directory: directory,
        })
    }

    /// Settings that reach this server as the `postgres` role over its socket.
    pub fn settings(&self) -> PostgresSettings {
        PostgresSettings {
            socket_directory: self.socket_directory.clone(),
            port: self.port,
            run_as: None,
            ..PostgresSettings::default()
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: it does not wait for clients to leave.
        stop(&mut self.child, Signal::SIGINT);
    }
}

/// Settings with `mariadb` pointing at a private server and PostgreSQL at nothing, or the other
/// way round.
pub fn settings(
    mariadb: Option<&MariaDbServer>,
    postgres: Option<&PostgresServer>,
) -> DatabaseSettings {
    let nowhere = PathBuf::from("/nonexistent-socket-folder");
    DatabaseSettings {
        mariadb: mariadb
            .map(MariaDbServer::settings)
            .unwrap_or(MariaDbSettings {
                socket: nowhere.join("mysqld.sock"),
                ..MariaDbSettings::default()
            }),
        postgres: postgres
            .map(PostgresServer::settings)
            .unwrap_or(PostgresSettings {
                socket_directory: nowhere,
                run_as: None,
                ..PostgresSettings::default()
            }),
    }
}
