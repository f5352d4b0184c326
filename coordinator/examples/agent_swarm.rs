//! Load test of the agent channel: simulated agents, each with its own certificate from the
//! coordinator's CA and its own QUIC connection, against a real `hostplane-coordinator serve`
//! process on loopback. Reports handshakes per second, the coordinator's resident memory per idle
//! agent, its CPU while the agents idle, and ping round trips through the admin API with every
//! agent connected; then the resident memory and size of real `hostplane-agent run` processes.
//!
//! Run it through `scripts/bench/agent_swarm.sh`, which builds what it needs; see BENCHMARKS.md.
//!
//! How the simulated agents get identities the coordinator accepts: before the coordinator
//! process starts, this program opens the (empty) data directory with the coordinator library,
//! stores the instance records, starts the real agent channel in-process with its enrollment rate
//! limits raised, and enrolls every simulated agent through real one-time tokens and the real
//! enrollment ALPN. That writes the CA and the agents' enrollment generations into the store,
//! which the `serve` process then loads; every connection measured afterwards goes through the
//! process's full mutual-TLS handshake, its certificate verifier and the version handshake.
//!
//! The simulated agents speak the agent protocol as `hostplane-agent run` does (its transport
//! settings, Hello, heartbeats at the interval the Welcome names, answering tasks on the streams
//! the coordinator opens with the agent's own ping handler), and share a few client UDP endpoints
//! instead of one socket each.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use testkit::agent_crate as agent;

use agent::state::Identity;
use anyhow::{Context, anyhow, bail};
use clap::Parser;
use coordinator::channel::rate::RateLimit;
use coordinator::channel::{Channel, ChannelOptions};
use coordinator::config::Config;
use coordinator::store::records::InstanceRecord;
use coordinator::store::{Store, StoreError, Table};
use protocol::{
    AgentMessage, CoordinatorMessage, EnrollRequest, EnrollResponse, EnrollmentToken, Features,
    Heartbeat, Hello, HelloReply, Secret, StateSummary,
};
use rustls::pki_types::CertificateDer;
use shell::wire::{FrameReader, write_handshake, write_hello, write_message};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// The first instance id; simulated agent `i` serves instance `FIRST_INSTANCE + i`.
const FIRST_INSTANCE: u32 = 100_000;
/// Socket buffers asked for on the client endpoints (the coordinator asks the same).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// How long one handshake (QUIC, TLS, Hello and Welcome) may take before it counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts per simulated agent before it gives up.
const ATTEMPTS: u32 = 3;

#[derive(Debug, Parser)]
#[command(about = "Simulated agents against a real coordinator process on loopback")]
struct Args {
    /// Agent counts to measure, each against a fresh coordinator process.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    agents: Vec<usize>,
    /// Client UDP endpoints the simulated agents share.
    #[arg(long, default_value_t = 8)]
    endpoints: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Pings through the admin API once every agent is connected.
    #[arg(long, default_value_t = 2000)]
    pings: usize,
    /// How long the connected agents stay idle before memory and idle CPU are read; covers two
    /// heartbeat intervals (15 s), three keep-alives (10 s) and one store flush (30 s).
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// The `hostplane-coordinator` binary; by default the one next to this program's folder.
    #[arg(long)]
    coordinator: Option<PathBuf>,
    /// A `hostplane-agent` binary to measure, as LABEL=PATH (repeatable).
    #[arg(long = "agent-binary")]
    agent_binaries: Vec<String>,
    /// The simulated agents' QUIC keep-alive interval in seconds; by default the agent's own.
    #[arg(long)]
    keep_alive_seconds: Option<u64>,
    /// Before each coordinator run, the same agents against a bare quinn + rustls mutual-TLS
    /// server process (same certificates, TLS and transport settings, no agent protocol), so
    /// both are measured on the machine as it is at that moment.
    #[arg(long)]
    bare: bool,
    /// Run as that bare server on the CA in DATA_DIR (started by this program itself).
    #[arg(long, value_name = "DATA_DIR", hide = true)]
    bare_server: Option<PathBuf>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    coordinator::install_crypto_provider();
    if let Some(data) = &args.bare_server {
        return bare_server(data).await;
    }
    let coordinator_binary = match &args.coordinator {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("cannot find the target folder")?
            .join("hostplane-coordinator"),
    };
    if !coordinator_binary.is_file() {
        bail!(
            "{} is missing; build it first",
            coordinator_binary.display()
        );
    }
    let mut agent_binaries = Vec::new();
    for entry in &args.agent_binaries {
        let (label, path) = entry
            .split_once('=')
            .with_context(|| format!("--agent-binary {entry}: expected LABEL=PATH"))?;
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{} is missing; build it first", path.display());
        }
        agent_binaries.push((label.to_string(), path));
    }
    let largest = args.agents.iter().copied().max().unwrap_or(0);
    if largest == 0 || args.endpoints == 0 || args.concurrency == 0 {
        bail!("--agents, --endpoints and --concurrency must be positive");
    }

    println!("machine: {}", machine());
    println!("load before the run: {}", loadavg());
    let work = tempfile::tempdir()?;
    let data = work.path().join("data");
    let config_file = work.path().join("coordinator.toml");
    std::fs::write(&config_file, "")?;
    let endpoints = client_endpoints(args.endpoints)?;

    let started = Instant::now();
    let mut transport = agent::Transport::default();
    if let Some(seconds) = args.keep_alive_seconds {
        transport.keep_alive = Duration::from_secs(seconds.max(1));
    }
    println!(
        "simulated agents: keep-alive {:?}, idle timeout {:?}",
        transport.keep_alive, transport.idle_timeout
    );
    let fixture = prepare(
        &data,
        largest,
        agent_binaries.len() as u32,
        &endpoints,
        args.concurrency,
        transport,
    )
    .await?;
    println!(
        "enrolled {largest} simulated agents in-process in {:.1} s ({:.0}/s)",
        started.elapsed().as_secs_f64(),
        largest as f64 / started.elapsed().as_secs_f64()
    );

    // The first start creates the admin account (an argon2 hash that leaves memory behind in the
    // allocator); it is not measured, so every measured start is a plain restart.
    CoordinatorProcess::start(&coordinator_binary, &data, &config_file, work.path())
        .await?
        .stop()
        .await;

    let mut rows = Vec::new();
    for &count in &args.agents {
        if args.bare {
            let server = CoordinatorProcess::start_bare(&data, work.path()).await?;
            let row = swarm(&server, &fixture, count, &endpoints, &args).await;
            server.stop().await;
            let row = row?;
            println!("{}", row.describe());
            rows.push(row);
        }
        let server =
            CoordinatorProcess::start(&coordinator_binary, &data, &config_file, work.path())
                .await?;
        let row = swarm(&server, &fixture, count, &endpoints, &args).await;
        server.stop().await;
        let row = row?;
        println!("{}", row.describe());
        rows.push(row);
    }

    let mut agent_rows = Vec::new();
    if !agent_binaries.is_empty() {
        let server =
            CoordinatorProcess::start(&coordinator_binary, &data, &config_file, work.path())
                .await?;
        for (index, (label, path)) in agent_binaries.iter().enumerate() {
            let instance = FIRST_INSTANCE + largest as u32 + index as u32;
            let state = work.path().join(format!("agent-{label}"));
            let row = real_agent(&server, label, path, instance, &state, args.idle_seconds).await;
            match row {
                Ok(row) => agent_rows.push(row),
                Err(error) => {
                    server.stop().await;
                    return Err(error.context(format!("measuring {}", path.display())));
                }
            }
        }
        server.stop().await;
    }
    for endpoint in &endpoints {
        endpoint.close(0u32.into(), b"done");
    }

    println!();
    println!("load after the run: {}", loadavg());
    println!();
    println!(
        "| server | agents | handshakes/s | cores busy while connecting: server / load tool / rest \
         of the machine | server CPU per handshake | handshake p50 / p99 | server RSS idle \
         (baseline) | per idle agent | idle server CPU | ping p50 / p99 (HTTP) | ping p50 / p99 \
         (channel) | status read p50 / p99 (HTTP) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("{}", row.markdown());
    }
    if !agent_rows.is_empty() {
        println!();
        println!(
            "| hostplane-agent run | binary size | RSS idle and connected | of it anonymous / \
             file-backed | file-backed: own binary / libraries | peak RSS |"
        );
        println!("|---|---|---|---|---|---|");
        for row in &agent_rows {
            let mib = |kib: u64| kib as f64 / 1024.0;
            println!(
                "| {} | {:.2} MiB | {:.2} MiB | {:.2} / {:.2} MiB | {:.2} / {:.2} MiB | {:.2} MiB |",
                row.label,
                row.binary_bytes as f64 / 1048576.0,
                mib(row.rss_kib),
                mib(row.anon_kib),
                mib(row.file_kib),
                mib(row.own_file_kib),
                mib(row.file_kib.saturating_sub(row.own_file_kib)),
                mib(row.peak_kib)
            );
        }
    }
    Ok(())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |count| count.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|line| line.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0.0, |kib| kib as f64 / 1048576.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs, {memory:.1} GiB memory, Linux {}",
        kernel.trim()
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Client endpoints with the same socket buffers the coordinator asks for: with the default
/// 208 KiB a burst of handshakes overflows the receive queue.
fn client_endpoints(count: usize) -> anyhow::Result<Vec<quinn::Endpoint>> {
    (0..count).map(|_| buffered_endpoint(None)).collect()
}

/// A QUIC endpoint on 127.0.0.1 with `SOCKET_BUFFER` UDP buffers (as far as the kernel allows);
/// a server with `server`, a client without.
fn buffered_endpoint(server: Option<quinn::ServerConfig>) -> anyhow::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER);
    let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER);
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?)
}

/// What every run shares: one client configuration (the agent's TLS and transport settings with
/// its own certificate) per simulated agent, made before any measurement starts: a real agent
/// makes its one configuration on its own machine, not on the coordinator's cores.
struct Fixture {
    configs: Vec<quinn::ClientConfig>,
}

fn instance_record(id: u32) -> InstanceRecord {
    InstanceRecord {
        id,
        user: "benchmark".into(),
        node: "pve1".into(),
        hostname: format!("ct{id}"),
        template: "debian-12".into(),
        cpu: 1,
        memory: 512,
        swap: 0,
        disk: 4,
        state: "ready".into(),
        suspended: false,
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-01T00:00:00Z".into(),
    }
}

/// Stores `count + extra` instances and enrolls `count` simulated agents through the real
/// channel, started in-process on the data directory the `serve` process will use afterwards.
async fn prepare(
    data: &Path,
    count: usize,
    extra: u32,
    endpoints: &[quinn::Endpoint],
    concurrency: usize,
    transport: agent::Transport,
) -> anyhow::Result<Fixture> {
    std::fs::create_dir_all(data)?;
    let store = Store::open(data)?;
    store.write(|write| {
        for index in 0..count as u32 + extra {
            let id = FIRST_INSTANCE + index;
            write.put(
                Table::Instances,
                &InstanceRecord::key(id),
                &instance_record(id),
            )?;
        }
        Ok::<_, StoreError>(())
    })?;
    let mut options = ChannelOptions::from_config(&Config::for_tests(data.to_path_buf()));
    // One source address enrolls every simulated agent; the production limits would allow one a
    // second.
    let unlimited = RateLimit {
        burst: 1e9,
        per_second: 1e9,
    };
    options.enroll_per_address = unlimited;
    options.enroll_overall = unlimited;
    let channel = Channel::with_options(options, &store)?;
    let quic = channel.start().await?;
    let ca = CertificateDer::from(channel.ca_certificate_der());
    let limit = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(count);
    for index in 0..count {
        let channel = channel.clone();
        let endpoint = endpoints[index % endpoints.len()].clone();
        let limit = limit.clone();
        let ca = ca.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let instance = FIRST_INSTANCE + index as u32;
            let offer = tokio::task::spawn_blocking(move || {
                channel.issue_enrollment(instance, "benchmark")
            })
            .await??;
            let identity =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, enroll(&endpoint, quic, &offer.token))
                    .await
                    .map_err(|_| anyhow!("enrollment of instance {instance} timed out"))??;
            agent::tls::agent_config(&ca, &identity, transport)
                .map_err(|error| anyhow!("unusable identity: {error}"))
        }));
    }
    let mut configs = Vec::with_capacity(count);
    for task in tasks {
        configs.push(task.await??);
    }
    channel.shutdown().await;
    drop(channel);
    drop(store);
    Ok(Fixture { configs })
}

/// `hostplane-agent enroll` without the state directory: key, CSR, token on the enrollment ALPN.
async fn enroll(
    endpoint: &quinn::Endpoint,
    quic: SocketAddr,
    token: &str,
) -> anyhow::Result<Identity> {
    let decoded = EnrollmentToken::decode(token)?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "hostplane-agent");
    let csr = params.serialize_request(&key)?;
    let (config, _) =
        agent::tls::enrollment_config(decoded.ca_fingerprint, agent::Transport::default())
            .map_err(|error| anyhow!(error))?;
    let connection = endpoint
        .connect_with(config, quic, protocol::COORDINATOR_SERVER_NAME)?
        .await?;
    let (mut send, receive) = connection.open_bi().await?;
    let request = EnrollRequest {
        token: Secret::new(token),
        csr_der: csr.der().to_vec(),
        agent_version: agent::VERSION.to_string(),
    };
    write_handshake(&mut send, &request).await?;
    let _ = send.finish();
    let mut reader = FrameReader::new(receive, protocol::MAX_FRAME);
    let response = reader.handshake::<EnrollResponse>().await?;
    connection.close(0u32.into(), b"done");
    match response {
        Some(EnrollResponse::Enrolled(enrollment)) => {
            Identity::new(enrollment.certificate_der, key.serialize_der())
                .context("the coordinator sent an unreadable certificate")
        }
        Some(EnrollResponse::Refused(error)) => bail!("enrollment refused: {error}"),
        None => bail!("the coordinator closed the enrollment stream without an answer"),
    }
}

/// A `hostplane-coordinator serve` process, or the bare server this program also is.
struct CoordinatorProcess {
    child: tokio::process::Child,
    pid: u32,
    /// A bare quinn + rustls server: no HTTP API, no agent protocol.
    bare: bool,
    http: String,
    quic: SocketAddr,
    key: String,
    client: reqwest::Client,
}

impl CoordinatorProcess {
    async fn start(
        binary: &Path,
        data: &Path,
        config: &Path,
        work: &Path,
    ) -> anyhow::Result<CoordinatorProcess> {
        let mut command = tokio::process::Command::new(binary);
        command
            .arg("--config")
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .args([
                "serve",
                "--http-listen",
                "127.0.0.1:0",
                "--quic-listen",
                "127.0.0.1:0",
            ])
            .env("HOSTPLANE_LOG", "warn")
            .env_remove("JOURNAL_STREAM");
        let (child, pid, ready) = spawn_server(command, work, "coordinator").await?;
        let http = ready
            .split_whitespace()
            .find_map(|part| part.strip_prefix("http="))
            .context("no http= in the ready line")?
            .to_string();
        let key = std::fs::read_to_string(data.join("admin.key"))?
            .trim()
            .to_string();
        Ok(CoordinatorProcess {
            child,
            pid,
            bare: false,
            http,
            quic: quic_field(&ready)?,
            key,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()?,
        })
    }

    /// This program as a bare quinn + rustls server (see [`bare_server`]).
    async fn start_bare(data: &Path, work: &Path) -> anyhow::Result<CoordinatorProcess> {
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command.arg("--bare-server").arg(data);
        let (child, pid, ready) = spawn_server(command, work, "bare-server").await?;
        Ok(CoordinatorProcess {
            child,
            pid,
            bare: true,
            http: String::new(),
            quic: quic_field(&ready)?,
            key: String::new(),
            client: reqwest::Client::new(),
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> anyhow::Result<serde_json::Value> {
        let response = self
            .client
            .request(method, format!("{}{path}", self.http))
            .header("x-api-key", &self.key)
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{path}: {status} {body}");
        }
        Ok(body)
    }

    /// Agents the coordinator counts as connected, from its metrics.
    async fn connected_agents(&self) -> anyhow::Result<u64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.http))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|line| line.strip_prefix("hostplane_agents_connected "))
            .and_then(|value| value.trim().parse().ok())
            .context("no hostplane_agents_connected in /metrics")
    }

    fn rss_kib(&self) -> u64 {
        status_field(self.pid, "VmRSS:")
    }

    fn cpu(&self) -> Duration {
        cpu_time(self.pid)
    }

    async fn stop(mut self) {
        let _ = tokio::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            eprintln!("the coordinator did not stop within 20 s of SIGTERM; killing it");
            let _ = self.child.kill().await;
        }
    }
}

fn quic_field(ready: &str) -> anyhow::Result<SocketAddr> {
    Ok(ready
        .split_whitespace()
        .find_map(|part| part.strip_prefix("quic="))
        .context("no quic= in the ready line")?
        .parse()?)
}

/// Starts a server process and waits for its `listening ...` line.
async fn spawn_server(
    mut command: tokio::process::Command,
    work: &Path,
    name: &str,
) -> anyhow::Result<(tokio::process::Child, u32, String)> {
    let log_path = work.join(format!("{name}.log"));
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log_path)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start the {name}"))?;
    let pid = child.id().context("the server exited at once")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("listening ") {
                return anyhow::Ok(line);
            }
        }
        bail!(
            "the {name} exited before it was ready; see {}",
            log_path.display()
        )
    })
    .await
    .map_err(|_| anyhow!("the {name} was not ready within 60 s"))??;
    // Keep reading its standard output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, pid, ready))
}

/// A `kB` field of `/proc/PID/status`.
fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|line| line.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Resident KiB of a process's mappings of one file, from `/proc/PID/smaps`.
fn mapped_file_kib(pid: u32, file: &Path) -> u64 {
    let Ok(file) = std::fs::canonicalize(file) else {
        return 0;
    };
    let file = file.to_string_lossy().into_owned();
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut inside = false;
    let mut total = 0;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: address range, permissions, offset, device, inode, path.
            inside = fields.nth(4) == Some(file.as_str());
        } else if inside && first == "Rss:" {
            total += fields
                .next()
                .and_then(|kib| kib.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// User and system CPU time of a process, from `/proc/PID/stat` (in USER_HZ = 100 ticks, fixed by
/// the Linux ABI).
fn cpu_time(pid: u32) -> Duration {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after it are counted from its closing paren.
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The kernel's UDP drop counters (`/proc/net/snmp`): receive buffer overflows and send
/// buffer errors, for this network namespace.
#[derive(Debug, Clone, Copy, Default)]
struct UdpDrops {
    receive_buffer: u64,
    send_buffer: u64,
}

impl UdpDrops {
    fn now() -> UdpDrops {
        let text = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
        let mut lines = text.lines().filter(|line| line.starts_with("Udp:"));
        let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
            return UdpDrops::default();
        };
        let counters: HashMap<&str, u64> = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .filter_map(|(name, value)| Some((name, value.parse().ok()?)))
            .collect();
        UdpDrops {
            receive_buffer: counters.get("RcvbufErrors").copied().unwrap_or(0),
            send_buffer: counters.get("SndbufErrors").copied().unwrap_or(0),
        }
    }

    fn since(&self, earlier: UdpDrops) -> UdpDrops {
        UdpDrops {
            receive_buffer: self.receive_buffer.saturating_sub(earlier.receive_buffer),
            send_buffer: self.send_buffer.saturating_sub(earlier.send_buffer),
        }
    }
}

/// This program's own CPU time.
fn own_cpu() -> Duration {
    cpu_time(std::process::id())
}

/// Busy and total time of the whole machine (every CPU), from `/proc/stat`.
#[derive(Debug, Clone, Copy)]
struct MachineCpu {
    busy: Duration,
    total: Duration,
}

impl MachineCpu {
    fn now() -> MachineCpu {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = text
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|value| value.parse().ok())
            .collect();
        let total: u64 = ticks.iter().sum();
        // idle and iowait
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        MachineCpu {
            busy: Duration::from_millis(total.saturating_sub(idle) * 10),
            total: Duration::from_millis(total * 10),
        }
    }

    /// Busy time since `earlier`, and the wall time of all CPUs together.
    fn since(&self, earlier: MachineCpu) -> (Duration, Duration) {
        (
            self.busy.saturating_sub(earlier.busy),
            self.total.saturating_sub(earlier.total),
        )
    }
}

/// CPU of the server (coordinator or bare), this program and everything else during a phase,
/// in cores.
#[derive(Debug, Clone, Copy, Default)]
struct CpuShare {
    coordinator: f64,
    tool: f64,
    others: f64,
}

impl CpuShare {
    fn measure(
        seconds: f64,
        coordinator: Duration,
        tool: Duration,
        machine: (Duration, Duration),
    ) -> CpuShare {
        let cores = |time: Duration| time.as_secs_f64() / seconds;
        CpuShare {
            coordinator: cores(coordinator),
            tool: cores(tool),
            others: cores(machine.0.saturating_sub(coordinator + tool)),
        }
    }

    fn describe(&self) -> String {
        format!(
            "server {:.2}, load tool {:.2}, everything else {:.2} cores",
            self.coordinator, self.tool, self.others
        )
    }
}

/// What one simulated agent reports.
#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    retries: AtomicU64,
    failed: AtomicU64,
    lost: AtomicU64,
    heartbeats: AtomicU64,
    tasks: AtomicU64,
}

struct SwarmRow {
    label: &'static str,
    agents: usize,
    connect_seconds: f64,
    failed: u64,
    retries: u64,
    handshake_cpu_ms: f64,
    handshake_p50_ms: f64,
    handshake_p99_ms: f64,
    connect_cpu: CpuShare,
    connect_drops: UdpDrops,
    idle_cpu: CpuShare,
    rss_baseline_kib: u64,
    rss_idle_kib: u64,
    coordinator_counted: u64,
    idle_cpu_percent: f64,
    idle_seconds: f64,
    heartbeats: u64,
    lost: u64,
    pings: usize,
    ping_errors: usize,
    http_p50_ms: f64,
    http_p99_ms: f64,
    channel_p50_ms: f64,
    channel_p99_ms: f64,
    status_p50_ms: f64,
    status_p99_ms: f64,
}

impl SwarmRow {
    fn handshakes_per_second(&self) -> f64 {
        (self.agents as u64 - self.failed) as f64 / self.connect_seconds
    }

    fn kib_per_agent(&self) -> f64 {
        self.rss_idle_kib.saturating_sub(self.rss_baseline_kib) as f64 / self.agents as f64
    }

    fn describe(&self) -> String {
        format!(
            "{} with {} agents: connected in {:.2} s ({:.0} handshakes/s, {} retries, {} failed, \
             {} UDP receive buffer drops, {} send buffer errors, server counts {}), server RSS {} \
             KiB -> {} KiB after {:.0} s idle ({:.1} KiB per agent), idle CPU {:.1} % of a core \
             ({} heartbeats answered, {} connections lost), {} pings ({} errors): HTTP p50 {:.2} \
             ms p99 {:.2} ms, channel p50 {:.2} ms p99 {:.2} ms, status reads p50 {:.2} ms p99 \
             {:.2} ms; CPU while connecting: {}; while idle: {}; load {}",
            self.label,
            self.agents,
            self.connect_seconds,
            self.handshakes_per_second(),
            self.retries,
            self.failed,
            self.connect_drops.receive_buffer,
            self.connect_drops.send_buffer,
            self.coordinator_counted,
            self.rss_baseline_kib,
            self.rss_idle_kib,
            self.idle_seconds,
            self.kib_per_agent(),
            self.idle_cpu_percent,
            self.heartbeats,
            self.lost,
            self.pings,
            self.ping_errors,
            self.http_p50_ms,
            self.http_p99_ms,
            self.channel_p50_ms,
            self.channel_p99_ms,
            self.status_p50_ms,
            self.status_p99_ms,
            self.connect_cpu.describe(),
            self.idle_cpu.describe(),
            loadavg(),
        )
    }

    fn markdown(&self) -> String {
        format!(
            "| {} | {} | {:.0} | {:.2} / {:.2} / {:.2} | {:.2} ms | {:.1} / {:.1} ms | {:.1} MiB \
             ({:.1} MiB) | {:.1} KiB | {:.1} % | {} | {} | {} |",
            self.label,
            self.agents,
            self.handshakes_per_second(),
            self.connect_cpu.coordinator,
            self.connect_cpu.tool,
            self.connect_cpu.others,
            self.handshake_cpu_ms,
            self.handshake_p50_ms,
            self.handshake_p99_ms,
            self.rss_idle_kib as f64 / 1024.0,
            self.rss_baseline_kib as f64 / 1024.0,
            self.kib_per_agent(),
            self.idle_cpu_percent,
            pair(self.http_p50_ms, self.http_p99_ms),
            pair(self.channel_p50_ms, self.channel_p99_ms),
            pair(self.status_p50_ms, self.status_p99_ms),
        )
    }
}

/// `p50 / p99 ms`, or a dash where nothing was measured.
fn pair(p50: f64, p99: f64) -> String {
    if p50.is_nan() {
        "-".into()
    } else {
        format!("{p50:.2} / {p99:.2} ms")
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

async fn swarm(
    server: &CoordinatorProcess,
    fixture: &Fixture,
    count: usize,
    endpoints: &[quinn::Endpoint],
    args: &Args,
) -> anyhow::Result<SwarmRow> {
    let quic = server.quic;
    // Let start-up work settle before the baseline is read.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_baseline_kib = server.rss_kib();

    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let limit = Arc::new(Semaphore::new(args.concurrency));
    let (report, mut reports) = mpsc::unbounded_channel::<Option<Duration>>();
    let cpu_before = server.cpu();
    let own_before = own_cpu();
    let machine_before = MachineCpu::now();
    let drops_before = UdpDrops::now();
    let started = Instant::now();
    let mut agents = Vec::with_capacity(count);
    for index in 0..count {
        let simulated = SimulatedAgent {
            config: fixture.configs[index].clone(),
            endpoint: endpoints[index % endpoints.len()].clone(),
            quic,
            bare: server.bare,
            counters: counters.clone(),
            stop: stop.clone(),
        };
        let limit = limit.clone();
        let report = report.clone();
        agents.push(tokio::spawn(simulated.run(limit, report)));
    }
    drop(report);
    let mut handshakes = Vec::with_capacity(count);
    let deadline = Duration::from_secs(120 + count as u64 / 50);
    let mut failed = 0;
    while handshakes.len() + failed < count {
        match tokio::time::timeout(deadline.saturating_sub(started.elapsed()), reports.recv()).await
        {
            Ok(Some(Some(elapsed))) => handshakes.push(elapsed.as_secs_f64() * 1000.0),
            Ok(Some(None)) => failed += 1,
            Ok(None) => break,
            Err(_) => bail!(
                "only {} of {count} agents connected within {deadline:?}",
                handshakes.len()
            ),
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    let handshake_cpu = server.cpu().saturating_sub(cpu_before);
    let connect_cpu = CpuShare::measure(
        connect_seconds,
        handshake_cpu,
        own_cpu().saturating_sub(own_before),
        MachineCpu::now().since(machine_before),
    );
    let connect_drops = UdpDrops::now().since(drops_before);
    let handshakes = sorted(handshakes);
    println!(
        "{count} agents: {} connected in {connect_seconds:.2} s; CPU meanwhile: {}",
        handshakes.len(),
        connect_cpu.describe()
    );

    let idle_started = Instant::now();
    let heartbeats_before = counters.heartbeats.load(Ordering::Relaxed);
    let cpu_idle_before = server.cpu();
    let own_idle_before = own_cpu();
    let machine_idle_before = MachineCpu::now();
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle_seconds = idle_started.elapsed().as_secs_f64();
    let idle_cpu = server.cpu().saturating_sub(cpu_idle_before);
    let idle_share = CpuShare::measure(
        idle_seconds,
        idle_cpu,
        own_cpu().saturating_sub(own_idle_before),
        MachineCpu::now().since(machine_idle_before),
    );
    let rss_idle_kib = server.rss_kib();
    let heartbeats = counters.heartbeats.load(Ordering::Relaxed) - heartbeats_before;
    let coordinator_counted = if server.bare {
        counters.connected.load(Ordering::Relaxed)
    } else {
        server.connected_agents().await?
    };
    // The bare server has no API to ping through.
    let ping_count = if server.bare { 0 } else { args.pings };

    // Pings through the admin API to agents spread over the whole swarm.
    let mut http = Vec::with_capacity(ping_count);
    let mut channel = Vec::with_capacity(ping_count);
    let mut ping_errors = 0;
    let mut seen_errors: HashMap<String, usize> = HashMap::new();
    let pings_started = Instant::now();
    for _ in 0..ping_count {
        if pings_started.elapsed() > Duration::from_secs(120) {
            eprintln!("the pings took more than 120 s; stopping them early");
            break;
        }
        let instance = FIRST_INSTANCE + rand::random_range(0..count as u32);
        let sent = Instant::now();
        match server
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/instance/{instance}/agent/ping"),
            )
            .await
        {
            Ok(body) => {
                http.push(sent.elapsed().as_secs_f64() * 1000.0);
                channel.push(body["rtt_ms"].as_f64().unwrap_or(f64::NAN));
            }
            Err(error) => {
                ping_errors += 1;
                *seen_errors.entry(error.to_string()).or_default() += 1;
            }
        }
    }
    for (error, times) in &seen_errors {
        eprintln!("ping failed {times} times: {error}");
    }
    let pings = http.len() + ping_errors;
    let http = sorted(http);
    let channel = sorted(channel);

    // The same number of reads of an agent's status: the HTTP and authentication part of a ping
    // without the agent and without the audit record every POST writes to disk.
    let mut status = Vec::with_capacity(ping_count);
    let status_started = Instant::now();
    for _ in 0..ping_count {
        if status_started.elapsed() > Duration::from_secs(60) {
            break;
        }
        let instance = FIRST_INSTANCE + rand::random_range(0..count as u32);
        let sent = Instant::now();
        let answer = server
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/instance/{instance}/agent"),
            )
            .await?;
        if answer["connected"] != true {
            bail!("instance {instance} is not shown as connected: {answer}");
        }
        status.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    let status = sorted(status);

    stop.cancel();
    for agent in agents {
        let _ = tokio::time::timeout(Duration::from_secs(10), agent).await;
    }
    Ok(SwarmRow {
        label: if server.bare {
            "bare quinn + rustls"
        } else {
            "coordinator"
        },
        agents: count,
        connect_seconds,
        failed: counters.failed.load(Ordering::Relaxed),
        retries: counters.retries.load(Ordering::Relaxed),
        handshake_cpu_ms: handshake_cpu.as_secs_f64() * 1000.0 / count as f64,
        connect_cpu,
        connect_drops,
        idle_cpu: idle_share,
        handshake_p50_ms: percentile(&handshakes, 0.50),
        handshake_p99_ms: percentile(&handshakes, 0.99),
        rss_baseline_kib,
        rss_idle_kib,
        coordinator_counted,
        idle_cpu_percent: idle_cpu.as_secs_f64() * 100.0 / idle_seconds,
        idle_seconds,
        heartbeats,
        lost: counters.lost.load(Ordering::Relaxed),
        pings,
        ping_errors,
        http_p50_ms: percentile(&http, 0.50),
        http_p99_ms: percentile(&http, 0.99),
        channel_p50_ms: percentile(&channel, 0.50),
        channel_p99_ms: percentile(&channel, 0.99),
        status_p50_ms: percentile(&status, 0.50),
        status_p99_ms: percentile(&status, 0.99),
    })
}

/// The control stream after the version handshake.
type Session = (
    quinn::SendStream,
    FrameReader<quinn::RecvStream>,
    protocol::Welcome,
);

/// One simulated agent.
struct SimulatedAgent {
    config: quinn::ClientConfig,
    endpoint: quinn::Endpoint,
    quic: SocketAddr,
    /// Only the QUIC and TLS handshake, then an idle connection (against the bare server).
    bare: bool,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

impl SimulatedAgent {
    async fn run(self, limit: Arc<Semaphore>, report: mpsc::UnboundedSender<Option<Duration>>) {
        let config = self.config.clone();
        let mut attempt = 0;
        let (connection, session) = loop {
            attempt += 1;
            let Ok(permit) = limit.acquire().await else {
                return;
            };
            let started = Instant::now();
            let result =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(config.clone())).await;
            drop(permit);
            match result {
                Ok(Ok(parts)) => {
                    let _ = report.send(Some(started.elapsed()));
                    break parts;
                }
                outcome => {
                    if attempt >= ATTEMPTS || self.stop.is_cancelled() {
                        let error = match outcome {
                            Ok(Err(error)) => error.to_string(),
                            _ => "timed out".into(),
                        };
                        eprintln!("an agent gave up after {attempt} attempts: {error}");
                        self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        let _ = report.send(None);
                        return;
                    }
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        self.counters.connected.fetch_add(1, Ordering::Relaxed);
        let stopped = match session {
            Some((send, reader, welcome)) => {
                let interval =
                    Duration::from_millis(welcome.heartbeat_interval_ms.clamp(500, 600_000));
                self.serve(&connection, send, reader, interval).await
            }
            None => tokio::select! {
                _ = self.stop.cancelled() => true,
                _ = connection.closed() => false,
            },
        };
        if !stopped {
            self.counters.lost.fetch_add(1, Ordering::Relaxed);
        }
        connection.close(0u32.into(), b"stopping");
    }

    async fn handshake(
        &self,
        config: quinn::ClientConfig,
    ) -> anyhow::Result<(quinn::Connection, Option<Session>)> {
        let connection = self
            .endpoint
            .connect_with(config, self.quic, protocol::COORDINATOR_SERVER_NAME)?
            .await?;
        if self.bare {
            return Ok((connection, None));
        }
        let (mut send, receive) = connection.open_bi().await?;
        write_hello(
            &mut send,
            &Hello::new(agent::VERSION, Features::CERTIFICATE_RENEWAL),
        )
        .await?;
        let mut reader = FrameReader::new(receive, 64 * 1024);
        match reader.handshake::<HelloReply>().await? {
            Some(HelloReply::Welcome(welcome)) => Ok((connection, Some((send, reader, welcome)))),
            Some(HelloReply::Refused(refused)) => bail!("refused: {}", refused.message),
            None => bail!("the coordinator ended the stream before its welcome"),
        }
    }

    /// Heartbeats and task streams until asked to stop (`true`) or the connection ends (`false`).
    async fn serve(
        &self,
        connection: &quinn::Connection,
        mut send: quinn::SendStream,
        mut reader: FrameReader<quinn::RecvStream>,
        interval: Duration,
    ) -> bool {
        let mut heartbeat = tokio::time::interval(interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return true,
                _ = heartbeat.tick() => {
                    let message = AgentMessage::Heartbeat(Heartbeat {
                        sent_at_unix_ms: SystemTime::now()
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0, |elapsed| elapsed.as_millis() as u64),
                        summary: StateSummary {
                            uptime_seconds: 0,
                            load_average: [0.0; 3],
                            running_tasks: 0,
                            finished_tasks: 0,
                            engines: Vec::new(),
                        },
                    });
                    if write_message(&mut send, &message).await.is_err() {
                        return false;
                    }
                }
                message = reader.message::<CoordinatorMessage>() => match message {
                    Ok(Some(CoordinatorMessage::HeartbeatAck(_))) => {
                        self.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return false,
                },
                incoming = connection.accept_bi() => match incoming {
                    Ok((send, receive)) => {
                        self.counters.tasks.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(serve_task(send, receive));
                    }
                    Err(_) => return false,
                },
            }
        }
    }
}

/// Answers one task stream with the agent's own handlers (ping).
async fn serve_task(mut send: quinn::SendStream, receive: quinn::RecvStream) {
    let mut reader = FrameReader::new(receive, protocol::MAX_FRAME);
    let Ok(Ok(Some(CoordinatorMessage::Task(delivery)))) = tokio::time::timeout(
        Duration::from_secs(10),
        reader.message::<CoordinatorMessage>(),
    )
    .await
    else {
        let _ = send.reset(4u32.into());
        return;
    };
    let task_id = delivery.task_id;
    let ack = AgentMessage::TaskAck {
        task_id,
        duplicate: false,
    };
    if write_message(&mut send, &ack).await.is_err() {
        return;
    }
    let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(delivery.deadline_unix_ms);
    let (events, _reports) = mpsc::channel(4);
    let context = agent::TaskContext::new(task_id, deadline, delivery.attempt, events);
    let outcome = agent::Handlers::standard()
        .dispatch(delivery.operation, context)
        .await;
    let _ = write_message(&mut send, &AgentMessage::TaskResult { task_id, outcome }).await;
    let _ = send.finish();
}

/// A bare quinn + rustls mutual-TLS server for comparison: the coordinator's CA, a server
/// certificate from it, TLS 1.3 without resumption, the webpki client-certificate check, the
/// coordinator's transport limits and socket buffers; it accepts connections and holds them,
/// with no identity check beyond the chain, no streams and no store. Prints its address, stops
/// on SIGTERM or after an hour.
async fn bare_server(data: &Path) -> anyhow::Result<()> {
    let (chain, key, ca) = {
        let store = Store::open(data)?;
        let ca = coordinator::channel::ca::CertificateAuthority::load_or_create(data, &store)?;
        let (certificate, key) = ca.issue_server_certificate()?;
        let ca_der = ca.certificate_der().clone();
        (vec![certificate, ca_der.clone()], key, ca_der)
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key.into())?;
    tls.alpn_protocols = vec![protocol::ALPN.to_vec()];
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    // The coordinator's limits (coordinator/src/channel/server.rs).
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(8u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window((256 * 1024u32).into())
        .receive_window((1024 * 1024u32).into())
        .send_window(1024 * 1024)
        .datagram_receive_buffer_size(None)
        .keep_alive_interval(None)
        .max_idle_timeout(Some(Duration::from_secs(40).try_into()?));
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config
        .transport_config(Arc::new(transport))
        .max_incoming(16_384)
        .incoming_buffer_size(64 * 1024)
        .incoming_buffer_size_total(32 * 1024 * 1024);
    let endpoint = buffered_endpoint(Some(config))?;
    println!("listening quic={}", endpoint.local_addr()?);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let lifetime = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(lifetime);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                tokio::spawn(async move {
                    if let Ok(connection) = incoming.await {
                        connection.closed().await;
                    }
                });
            }
            _ = terminate.recv() => break,
            _ = &mut lifetime => break,
        }
    }
    endpoint.close(0u32.into(), b"done");
    let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    Ok(())
}

/// What a real `hostplane-agent run` process costs.
struct AgentRow {
    label: String,
    binary_bytes: u64,
    rss_kib: u64,
    /// Heap and stacks.
    anon_kib: u64,
    /// Pages of the binary and the libraries it maps.
    file_kib: u64,
    /// Of those, pages of the agent's own binary.
    own_file_kib: u64,
    peak_kib: u64,
}

/// Enrolls a real agent binary with a token from the API, runs it until connected and pinged,
/// lets it idle, and reads its resident memory.
async fn real_agent(
    server: &CoordinatorProcess,
    label: &str,
    binary: &Path,
    instance: u32,
    state: &Path,
    idle_seconds: u64,
) -> anyhow::Result<AgentRow> {
    let offer = server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/instance/{instance}/enrollment"),
        )
        .await?;
    let token = offer["token"].as_str().context("no token in the answer")?;
    let enroll = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(binary)
            .arg("--state-dir")
            .arg(state)
            .args(["enroll", "--token", token])
            .env("HOSTPLANE_LOG", "warn")
            .output(),
    )
    .await
    .map_err(|_| anyhow!("enroll did not finish within 60 s"))??;
    if !enroll.status.success() {
        bail!("enroll failed: {}", String::from_utf8_lossy(&enroll.stderr));
    }
    let mut child = tokio::process::Command::new(binary)
        .arg("--state-dir")
        .arg(state)
        .arg("run")
        .env("HOSTPLANE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("the agent exited at once")?;
    let status_path = format!("/api/v1/instance/{instance}/agent");
    let started = Instant::now();
    loop {
        let status = server.call(reqwest::Method::GET, &status_path).await?;
        if status["connected"] == true {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the {label} agent did not connect within 30 s: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/instance/{instance}/agent/ping"),
        )
        .await?;
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let status = server.call(reqwest::Method::GET, &status_path).await?;
    if status["connected"] != true {
        bail!("the {label} agent was not connected after idling: {status}");
    }
    let row = AgentRow {
        label: label.to_string(),
        binary_bytes: std::fs::metadata(binary)?.len(),
        rss_kib: status_field(pid, "VmRSS:"),
        anon_kib: status_field(pid, "RssAnon:"),
        file_kib: status_field(pid, "RssFile:"),
        own_file_kib: mapped_file_kib(pid, binary),
        peak_kib: status_field(pid, "VmHWM:"),
    };
    let _ = child.kill().await;
    Ok(row)
}
