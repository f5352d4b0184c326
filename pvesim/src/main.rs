//! The `pvesim` command: parse arguments, start the simulator, print `listening URL`, and run
//! until SIGTERM or SIGINT.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pvesim::{SimConfig, Simulator};

/// A simulator of the Proxmox VE API subset for LXC containers.
#[derive(Debug, Parser)]
#[command(name = "pvesim", version)]
struct Arguments {
    /// Address to listen on, e.g. 127.0.0.1:8006 (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8006")]
    listen: String,
    /// Serve plain HTTP instead of HTTPS with a self-signed certificate.
    #[arg(long)]
    plain_http: bool,
    /// Accepted API token `USER@REALM!TOKENID=SECRET` (repeatable).
    #[arg(long = "token")]
    tokens: Vec<String>,
    /// Accepted user `USER@REALM:PASSWORD` for tickets (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
    /// Number of nodes (pve1..pveN).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// JSON file to load the cluster from and save it to.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Delay before every 401 answer, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    auth_delay_ms: u64,
    /// Duration of each simulated task, in milliseconds.
    #[arg(long, default_value_t = 20)]
    task_ms: u64,
    /// Latency added to every API call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// How long a task waits for another task on the same container, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    lock_timeout_ms: u64,
    /// Seed for random fault injection.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let arguments = Arguments::parse();
    let users = arguments
        .users
        .iter()
        .map(|entry| {
            entry
                .split_once(':')
                .map(|(user, password)| (user.to_string(), password.to_string()))
                .with_context(|| format!("--user expects USER@REALM:PASSWORD, got '{entry}'"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let config = SimConfig {
        nodes: arguments.nodes,
        tokens: arguments.tokens,
        users,
        tls: !arguments.plain_http,
        auth_failure_delay: Duration::from_millis(arguments.auth_delay_ms),
        task_duration: Duration::from_millis(arguments.task_ms),
        latency: Duration::from_millis(arguments.latency_ms),
        lock_timeout: Duration::from_millis(arguments.lock_timeout_ms),
        state_file: arguments.state,
        seed: arguments.seed,
    };
    let listener = tokio::net::TcpListener::bind(&arguments.listen)
        .await
        .with_context(|| format!("cannot listen on {}", arguments.listen))?;
    let simulator = Simulator::start(config, listener).await?;
    if let Some(fingerprint) = simulator.fingerprint() {
        eprintln!("certificate fingerprint {fingerprint}");
    }
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening {}", simulator.base_url())?;
        stdout.flush()?;
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    simulator.shutdown().await;
    Ok(())
}
