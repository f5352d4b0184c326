//! The `hostplane-agent` command: parse arguments, start tracing, run a subcommand.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "hostplane-agent", version, about = "Hostplane agent")]
struct Cli {
    /// State directory: certificate, key, CA certificate, finished tasks.
    #[arg(long, global = true, env = "HOSTPLANE_AGENT_STATE_DIR", default_value = agent::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll with a coordinator using a one-time token.
    Enroll {
        #[arg(long, env = "HOSTPLANE_ENROLL_TOKEN")]
        token: String,
        /// Dial this HOST:PORT instead of the address in the token.
        #[arg(long)]
        coordinator: Option<String>,
    },
    /// Connect to the coordinator and serve its requests (what the systemd unit runs). Before
    /// enrollment it waits, using a token left in the state directory as `enroll.token`.
    Run {
        /// Dial this HOST:PORT instead of the address saved at enrollment.
        #[arg(long, env = "HOSTPLANE_COORDINATOR")]
        coordinator: Option<String>,
        /// Longest wait between reconnect attempts, in seconds.
        #[arg(long, default_value_t = 60)]
        max_backoff_seconds: u64,
    },
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping");
}

fn init_tracing() {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // `HOSTPLANE_LOG` takes `level` and `target=level` items (`info,agent=debug`). A target
    // filter rather than an `EnvFilter`: the agent then links no regular-expression engine,
    // which keeps its binary, and with it its resident memory, smaller.
    let default = Targets::new().with_default(LevelFilter::INFO);
    let filter = match std::env::var("HOSTPLANE_LOG") {
        Ok(text) => text.parse::<Targets>().unwrap_or_else(|error| {
            eprintln!("HOSTPLANE_LOG={text:?} is not a log filter ({error}); logging at info");
            default
        }),
        Err(_) => default,
    };
    let registry = tracing_subscriber::registry().with(filter);
    // Under systemd (JOURNAL_STREAM is set) logs go to the journal with their fields.
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        registry.with(journald).init();
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match cli.command {
        Command::Enroll { token, coordinator } => {
            let mut options = agent::EnrollOptions::new(token, &cli.state_dir);
            options.coordinator = coordinator;
            let enrolled = runtime.block_on(agent::enroll(options))?;
            println!(
                "enrolled instance={} generation={} coordinator={} state_dir={}",
                enrolled.instance_id,
                enrolled.generation,
                enrolled.coordinator,
                cli.state_dir.display()
            );
            Ok(())
        }
        Command::Run {
            coordinator,
            max_backoff_seconds,
        } => {
            let mut standby = agent::StandbyOptions::new(&cli.state_dir);
            standby.coordinator = coordinator.clone();
            let mut options = agent::RunOptions::new(&cli.state_dir);
            options.coordinator = coordinator;
            options.backoff_maximum = std::time::Duration::from_secs(max_backoff_seconds.max(1));
            standby.retry_maximum = options.backoff_maximum;
            runtime.block_on(async {
                let shutdown = shutdown_signal();
                tokio::pin!(shutdown);
                // Not enrolled yet: wait for an identity instead of failing.
                tokio::select! {
                    waited = agent::until_enrolled(&standby) => { waited?; }
                    () = &mut shutdown => return Ok::<_, anyhow::Error>(()),
                }
                agent::run(options, agent::Handlers::standard(), shutdown).await?;
                Ok(())
            })?;
            Ok(())
        }
    }
}
