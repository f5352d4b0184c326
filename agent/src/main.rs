//! The `hostplane-agent` command: parse arguments, start tracing, run a subcommand.

use std::path::PathBuf;

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
    /// Connect to the coordinator and serve its requests (what the systemd unit runs).
    Run,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Enroll { .. } | Command::Run => {
            anyhow::bail!("the agent channel is not part of this build yet")
        }
    }
}
