//! pvesim: a simulator of the Proxmox VE API subset that Hostplane drives (LXC containers, QEMU
//! virtual machines, nodes, storages, templates and uploads, node networks, access control, tasks,
//! auth), served over HTTPS or plain HTTP, with fault injection. With [`Simulator::start_lxc`]
//! (`pvesim --lxc`) the containers are real LXC containers on this host and
//! `GET /nodes/{node}/network` lists the host's real bridges.
//!
//! QEMU virtual machines are always simulated: they have a configuration, a power state, tasks
//! and locks, and share the vmid space with containers, but no CPU is emulated and no process
//! runs, in either mode (the LXC-backed mode says so in the VM tasks' logs).
//!
//! `POST /nodes/{node}/storage/{storage}/upload` takes uploads as pveproxy does (multipart, the
//! file in the `filename` part); `POST .../content` allocates a disk image, as in the schema.
//!
//! Admin endpoints live outside `/api2/json`:
//! - `GET /_sim/faults` returns the current [`FaultSpec`]; `POST` or `PUT` replaces it (its `locks`
//!   are applied once, its `seed` reseeds the random generator); `DELETE` clears every fault.
//! - `GET /_sim/state` returns the whole cluster model as JSON.
//!
//! On the plain-HTTP listener they need no credentials; on the HTTPS listener they need the same
//! API token or ticket as the API.

pub mod access;
pub mod auth;
pub mod backend;
pub mod faults;
pub mod lxc;
pub mod lxc_backend;
pub mod model;
mod multipart;
pub mod network;
pub mod qemu;
pub mod schema;
mod server;
pub mod storage;
pub mod upid;
pub mod vm;

use shell::sync::MutexExt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use backend::{Backend, BackendFuture, SimulatedBackend};
pub use faults::{FailureRule, FaultSpec, Faults, LockFault, TaskEffect, TaskFault};
pub use lxc_backend::{LxcBackend, LxcConfig, LxcSetupError};
pub use model::{Action, ApiError, Cluster, Guest, Task, Volume};
pub use upid::Upid;

/// Settings of a simulator instance.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes, named `pve1`..`pveN`.
    pub nodes: usize,
    /// Accepted API tokens, `USER@REALM!TOKENID=SECRET`.
    pub tokens: Vec<String>,
    /// Accepted (`user@realm`, password) pairs for `POST /access/ticket`.
    pub users: Vec<(String, String)>,
    /// Serve HTTPS with a fresh self-signed certificate (otherwise plain HTTP).
    pub tls: bool,
    /// Wait before every 401 answer (Proxmox waits 3 s).
    pub auth_failure_delay: Duration,
    /// How long each simulated task runs.
    pub task_duration: Duration,
    /// Latency added to every API call.
    pub latency: Duration,
    /// How long a task waits for another task on the same container before failing with
    /// `can't lock file ... - got timeout` (Proxmox waits 10 s).
    pub lock_timeout: Duration,
    /// Load the cluster from this JSON file at start (when it exists) and save it after changes.
    pub state_file: Option<PathBuf>,
    /// Seed of the random generator used by fault injection.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1,
            tokens: Vec::new(),
            users: Vec::new(),
            tls: false,
            auth_failure_delay: Duration::from_secs(3),
            task_duration: Duration::from_millis(20),
            latency: Duration::ZERO,
            lock_timeout: Duration::from_secs(10),
            state_file: None,
            seed: 0,
        }
    }
}

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A configured token is malformed.
    #[error(transparent)]
    Token(#[from] auth::TokenFormatError),
    /// The certificate could not be generated or loaded.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// Reading or writing the state file, or the listener, failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The state file is not valid.
    #[error("state file is not valid: {0}")]
    State(#[from] serde_json::Error),
    /// The LXC backend cannot run on this host.
    #[error(transparent)]
    Lxc(#[from] LxcSetupError),
}

/// A read/write view on the simulated cluster for tests and tools.
#[derive(Clone)]
pub struct SimState {
    cluster: Arc<Mutex<Cluster>>,
}

impl std::fmt::Debug for SimState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SimState").finish_non_exhaustive()
    }
}

impl SimState {
    /// A copy of the whole cluster.
    pub fn snapshot(&self) -> Cluster {
        self.lock().clone()
    }

    /// A copy of one container.
    pub fn guest(&self, vmid: u32) -> Option<Guest> {
        self.lock().guests.get(&vmid).cloned()
    }

    /// All vmids.
    pub fn vmids(&self) -> Vec<u32> {
        self.lock().guests.keys().copied().collect()
    }

    /// A copy of one task.
    pub fn task(&self, upid: &str) -> Option<Task> {
        self.lock().task(upid).cloned()
    }

    /// Runs a closure with the cluster locked (to read or change anything).
    pub fn with<T>(&self, work: impl FnOnce(&mut Cluster) -> T) -> T {
        work(&mut self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.locked()
    }
}

/// A running simulator.
pub struct Simulator {
    inner: server::Running,
    // Copies real container state into the model (LXC backend only); stopped on drop.
    watcher: Option<AbortOnDrop>,
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Simulator")
            .field("base_url", &self.base_url())
            .finish()
    }
}

impl Simulator {
    /// Starts serving on `listener` with the simulated backend.
    pub async fn start(
        config: SimConfig,
        listener: tokio::net::TcpListener,
    ) -> Result<Simulator, SimError> {
        let backend = Arc::new(SimulatedBackend {
            task_duration: config.task_duration,
        });
        Self::start_with_backend(config, listener, backend).await
    }

    /// Starts serving on `listener` with another backend.
    pub async fn start_with_backend(
        config: SimConfig,
        listener: tokio::net::TcpListener,
        backend: Arc<dyn Backend>,
    ) -> Result<Simulator, SimError> {
        Ok(Simulator {
            inner: server::Running::start(config, listener, backend).await?,
            watcher: None,
        })
    }

    /// Starts serving on `listener` with containers backed by real LXC containers on this host
    /// (see [`lxc_backend`]), and keeps the model's running/frozen state in line with them.
    pub async fn start_lxc(
        config: SimConfig,
        listener: tokio::net::TcpListener,
        lxc: LxcConfig,
    ) -> Result<Simulator, SimError> {
        let backend = Arc::new(LxcBackend::new(lxc)?);
        let mut simulator =
            Self::start_with_backend(config, listener, backend.clone() as Arc<dyn Backend>).await?;
        simulator.watcher = Some(AbortOnDrop(backend.watch(simulator.state())));
        Ok(simulator)
    }

    /// The API base URL, e.g. `https://127.0.0.1:PORT/api2/json`.
    pub fn base_url(&self) -> String {
        let scheme = if self.inner.certificate.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/api2/json", self.inner.address)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.address
    }

    /// The server certificate in PEM form (HTTPS only).
    pub fn certificate_pem(&self) -> Option<String> {
        self.inner
            .certificate
            .as_ref()
            .map(|certificate| certificate.pem.clone())
    }

    /// The certificate's SHA-256 fingerprint as `AA:BB:...` (HTTPS only).
    pub fn fingerprint(&self) -> Option<String> {
        self.inner
            .certificate
            .as_ref()
            .map(|certificate| certificate.fingerprint.clone())
    }

    /// A handle to change faults at run time.
    pub fn faults(&self) -> Faults {
        self.inner.shared.faults.clone()
    }

    /// A view on the cluster model.
    pub fn state(&self) -> SimState {
        SimState {
            cluster: self.inner.shared.cluster.clone(),
        }
    }

    /// Stops accepting, closes connections, cancels running tasks and saves the state file.
    pub async fn shutdown(mut self) {
        self.watcher.take();
        self.inner.shutdown().await;
    }
}
