//! The `pvesim` command: parse arguments, start the simulator, print `listening URL`, and run
//! until SIGTERM or SIGINT.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pvesim::{LxcConfig, SimConfig, Simulator};

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
    /// Back containers with real LXC containers on this host (needs root, the base container
    /// and the bridge, which the LXC test harness creates).
    #[arg(long)]
    lxc: bool,
    /// LXC mode: the stopped container to clone [default: hostplane-base-bookworm].
    #[arg(long, requires = "lxc")]
    lxc_base: Option<String>,
    /// LXC mode: the bridge for the containers [default: hpbr0].
    #[arg(long, requires = "lxc")]
    lxc_bridge: Option<String>,
    /// LXC mode: the host's address on the bridge with the prefix length [default: 10.213.37.1/24].
    #[arg(long, requires = "lxc")]
    lxc_host_address: Option<String>,
    /// LXC mode: last bytes of the addresses to hand out, FIRST-LAST [default: 100-199].
    #[arg(long, requires = "lxc")]
    lxc_addresses: Option<String>,
    /// LXC mode: container VMID is named PREFIX+VMID [default: pvesim-].
    #[arg(long, requires = "lxc")]
    lxc_name_prefix: Option<String>,
    /// LXC mode: apt proxy URL written into every container, e.g. http://10.213.37.1:3142.
    #[arg(long, requires = "lxc")]
    lxc_apt_proxy: Option<String>,
}

/// The LXC settings from the `--lxc-*` flags over the defaults.
fn lxc_config(arguments: &Arguments) -> anyhow::Result<LxcConfig> {
    let mut config = LxcConfig::default();
    if let Some(base) = &arguments.lxc_base {
        config.base.clone_from(base);
    }
    if let Some(bridge) = &arguments.lxc_bridge {
        config.bridge.clone_from(bridge);
    }
    if let Some(cidr) = &arguments.lxc_host_address {
        let (address, length) = cidr
            .split_once('/')
            .context("--lxc-host-address expects ADDRESS/LENGTH")?;
        config.host_address = address
            .parse()
            .with_context(|| format!("--lxc-host-address: '{address}' is not an IPv4 address"))?;
        config.prefix_length = length
            .parse()
            .with_context(|| format!("--lxc-host-address: '{length}' is not a prefix length"))?;
    }
    if let Some(range) = &arguments.lxc_addresses {
        let (first, last) = range
            .split_once('-')
            .context("--lxc-addresses expects FIRST-LAST")?;
        let first: u8 = first.parse().context("--lxc-addresses: FIRST is 1-254")?;
        let last: u8 = last.parse().context("--lxc-addresses: LAST is 1-254")?;
        anyhow::ensure!(
            (1..=last).contains(&first) && last < 255,
            "--lxc-addresses: expected 1 <= FIRST <= LAST <= 254"
        );
        config.addresses = first..=last;
    }
    if let Some(prefix) = &arguments.lxc_name_prefix {
        config.name_prefix.clone_from(prefix);
    }
    config.apt_proxy.clone_from(&arguments.lxc_apt_proxy);
    Ok(config)
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
    let lxc = arguments.lxc.then(|| lxc_config(&arguments)).transpose()?;
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
    let simulator = match lxc {
        Some(lxc) => Simulator::start_lxc(config, listener, lxc).await?,
        None => Simulator::start(config, listener).await?,
    };
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
