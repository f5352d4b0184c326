//! The `hostplane-coordinator` command: parse arguments, load configuration, start tracing,
//! then serve or run an administrative subcommand.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use coordinator::config::{Config, FileConfig, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "hostplane-coordinator",
    version,
    about = "Hostplane coordinator"
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "HOSTPLANE_CONFIG")]
    config: Option<PathBuf>,
    /// State directory (redb store, CA, endpoints.json).
    #[arg(long, global = true, env = "HOSTPLANE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API and the agent channel.
    Serve(Box<ServeArgs>),
    /// Manage users and API keys on this machine (the coordinator must be stopped).
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input (one line).
    Create {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        admin: bool,
    },
    /// List users.
    List,
    /// Create an API key for a user and print it once.
    Key {
        #[arg(long)]
        username: String,
        #[arg(long, default_value = "created on the command line")]
        name: String,
    },
    /// Set a new password, read from standard input (one line); ends the user's tickets.
    ResetPassword {
        #[arg(long)]
        username: String,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Development mode: state under the user's state folder, built-in Proxmox simulator, an
    /// admin API key printed.
    #[arg(long)]
    dev: bool,
    /// HTTP listen address, IP:PORT (port 0 picks a free one).
    #[arg(long, env = "HOSTPLANE_HTTP_LISTEN")]
    http_listen: Option<String>,
    /// QUIC listen address for agents, IP:PORT.
    #[arg(long, env = "HOSTPLANE_QUIC_LISTEN")]
    quic_listen: Option<String>,
    /// The HOST:PORT agents are told to dial (put in enrollment tokens).
    #[arg(long, env = "HOSTPLANE_QUIC_ADVERTISE")]
    quic_advertise: Option<String>,
    /// PEM certificate chain for HTTPS.
    #[arg(long, env = "HOSTPLANE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, env = "HOSTPLANE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Lifetime of login tickets, seconds.
    #[arg(long, env = "HOSTPLANE_TICKET_TTL_SECONDS")]
    ticket_ttl_seconds: Option<u64>,
    /// Lifetime of agent certificates, seconds.
    #[arg(long, env = "HOSTPLANE_AGENT_CERT_LIFETIME_SECONDS")]
    agent_cert_lifetime_seconds: Option<u64>,
    #[command(flatten)]
    limits: coordinator::config::LimitSettings,
    /// The key that seals the store's secrets (default: a systemd credential named
    /// hostplane-secrets-key when there is one, else secrets.key in the data directory).
    #[arg(long, env = "HOSTPLANE_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
}

/// The secrets key handed over as a systemd credential, when the service has one.
fn credential_key_file() -> Option<PathBuf> {
    let path = PathBuf::from(std::env::var_os("CREDENTIALS_DIRECTORY")?)
        .join(coordinator::store::sealing::CREDENTIAL_NAME);
    path.exists().then_some(path)
}

fn dev_data_dir() -> Option<PathBuf> {
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .map(|dir| dir.join("hostplane"))
}

fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        EnvFilter::try_from_env("HOSTPLANE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    // Under systemd (JOURNAL_STREAM is set) logs go to the journal with their fields.
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        registry.with(journald).init();
    } else if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}

fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn user_command(data_dir: &std::path::Path, command: UserCommand) -> anyhow::Result<()> {
    use coordinator::admin_cli;
    match command {
        UserCommand::Create {
            username,
            email,
            admin,
        } => {
            let password = read_password()?;
            let id = admin_cli::create_user(data_dir, &username, &password, email, admin)?;
            println!("created user {username} with id {id}");
        }
        UserCommand::List => {
            for line in admin_cli::list_users(data_dir)? {
                println!("{line}");
            }
        }
        UserCommand::Key { username, name } => {
            println!("{}", admin_cli::create_key(data_dir, &username, &name)?);
        }
        UserCommand::ResetPassword { username } => {
            let password = read_password()?;
            admin_cli::reset_password(data_dir, &username, &password)?;
            println!("password of {username} changed; their tickets are ended");
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    // One line per failure, whatever RUST_BACKTRACE says: the operator needs the key and value.
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hostplane-coordinator: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::User(command) => {
            let file = FileConfig::load(cli.config.as_deref())?;
            let overrides = Overrides {
                data_dir: cli.data_dir,
                ..Overrides::default()
            };
            let config = Config::resolve(file, overrides, dev_data_dir())?;
            user_command(&config.data_dir, command)
        }
        Command::Serve(args) => {
            let args = *args;
            let file = FileConfig::load(cli.config.as_deref())?;
            let overrides = Overrides {
                data_dir: cli.data_dir,
                http_listen: args.http_listen,
                quic_listen: args.quic_listen,
                quic_advertise: args.quic_advertise,
                tls_cert: args.tls_cert,
                tls_key: args.tls_key,
                ticket_ttl_seconds: args.ticket_ttl_seconds,
                agent_cert_lifetime_seconds: args.agent_cert_lifetime_seconds,
                limits: args.limits,
                secrets_key_file: args.secrets_key_file.or_else(credential_key_file),
                dev: args.dev,
            };
            let config = Config::resolve(file, overrides, dev_data_dir())?;
            init_tracing(config.json_logs);
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(async move {
                let running = coordinator::server::start(config).await?;
                if let Some(key) = &running.admin_key {
                    let path = running.app.config.data_dir.join("admin.key");
                    // Under systemd this output is kept in the journal, which more people may
                    // read than the key file: name the file only.
                    if std::env::var_os("JOURNAL_STREAM").is_some() {
                        println!("admin api key created: it is in {}", path.display());
                    } else {
                        println!(
                            "admin api key (shown once, also in {}): {key}",
                            path.display()
                        );
                    }
                }
                println!("{}", running.listening_line());
                running.wait(shutdown_signal()).await;
                anyhow::Ok(())
            })
        }
    }
}
