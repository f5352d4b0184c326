//! The Hostplane coordinator: the public REST API, the instances, the store, the task system,
//! the Proxmox client and the agents' QUIC server. `main.rs` parses arguments and calls
//! [`server::start`].

pub mod acme;
pub mod admin_cli;
pub mod agentwork;
pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod channel;
pub mod clock;
pub mod config;
pub mod instances;
pub mod metrics;
pub mod operation_secrets;
pub mod proxmox;
pub mod server;
pub mod store;
pub mod tasks;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use config::Config;
use metrics::Metrics;
use server::ServeError;
use store::Store;

/// Everything a request handler can reach. Built once at start.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub store: Store,
    pub routes: api::RouteTable,
    pub metrics: Metrics,
    /// Long work: tasks, their executors and their events.
    pub tasks: tasks::TaskSystem,
    /// The agents' QUIC channel: enrollment, live connections, requests to agents.
    pub channel: channel::Channel,
    /// True once every listener is up; `/readyz` reports it.
    pub ready: AtomicBool,
    /// Login throttling per user and address.
    pub login_limiter: auth::LoginLimiter,
    /// Password hashing on the blocking pool, with a bounded queue.
    pub passwords: auth::PasswordWork,
    /// Task event streams (SSE) open per user.
    pub event_streams: api::tasks::UserSlots,
    /// Requests with `?wait=` waiting per user.
    pub waiting_requests: api::tasks::UserSlots,
    /// A password hash checked when a login names an unknown user, so timing does not tell.
    pub unknown_user_hash: String,
    /// The registered Proxmox nodes and their clients.
    pub proxmox: proxmox::registry::Registry,
    /// Dump data streams on their way from an agent task to the HTTP request serving them.
    pub dumps: agentwork::DumpHandoffs,
    /// Certificates from ACME: the client and the renewal loop.
    pub acme: acme::Acme,
}

impl App {
    /// Builds the application state and its route table.
    pub async fn build(config: Config, store: Store) -> Result<Arc<App>, ServeError> {
        let mut routes = api::RouteTable::new();
        api::health::routes(&mut routes);
        api::operations::routes(&mut routes);
        api::users::routes(&mut routes);
        let unknown_user_hash = auth::hash_password(&auth::random_token(16))
            .map_err(|error| ServeError::Startup(error.to_string()))?;
        api::tasks::routes(&mut routes);
        api::instances::routes(&mut routes);
        api::nodes::routes(&mut routes);
        api::quota::routes(&mut routes);
        let metrics = Metrics::new();
        let tasks =
            tasks::TaskSystem::new(store.clone(), metrics.tasks.clone()).map_err(|error| {
                ServeError::Startup(format!("cannot open the task system: {error}"))
            })?;
        api::agents::routes(&mut routes);
        api::packages::routes(&mut routes);
        api::databases::routes(&mut routes);
        api::vhosts::routes(&mut routes);
        api::web_services::routes(&mut routes);
        let acme = acme::Acme::new(acme::AcmeClient::new(config.acme.clone(), store.clone()));
        let channel = channel::Channel::open(&config, &store)
            .map_err(|error| ServeError::Startup(error.to_string()))?;
        let login_limiter = auth::LoginLimiter::new(
            config.limits.login_free_failures,
            config.limits.login_address_free_failures,
            config.limits.login_max_delay,
        );
        let passwords = auth::PasswordWork::new(
            config.limits.password_hash_concurrency,
            config.limits.password_hash_queue,
        );
        Ok(Arc::new(App {
            config,
            store,
            routes,
            metrics,
            tasks,
            channel,
            ready: AtomicBool::new(false),
            login_limiter,
            passwords,
            event_streams: api::tasks::UserSlots::default(),
            waiting_requests: api::tasks::UserSlots::default(),
            unknown_user_hash,
            proxmox: proxmox::registry::Registry::default(),
            dumps: agentwork::DumpHandoffs::default(),
            acme,
        }))
    }

    /// Starts the background parts (QUIC listener, task driver); returns the QUIC address.
    pub async fn start_background(self: &Arc<Self>) -> Result<Option<SocketAddr>, ServeError> {
        instances::register(self);
        agentwork::register(self);
        acme::start(self);
        if self.config.dev {
            proxmox::dev::start(self)
                .await
                .map_err(ServeError::Startup)?;
        }
        self.tasks.start();
        start_ticket_sweep(self);
        let quic = self
            .channel
            .start()
            .await
            .map_err(|error| ServeError::Startup(error.to_string()))?;
        Ok(Some(quic))
    }

    /// Stops the background parts.
    pub async fn shutdown(&self) {
        self.acme.shutdown().await;
        self.channel.shutdown().await;
        self.tasks.shutdown().await;
        self.proxmox.shutdown().await;
    }
}

/// Deletes expired login tickets every `ticket_sweep_interval`, until the app is dropped.
fn start_ticket_sweep(app: &Arc<App>) {
    let app = Arc::downgrade(app);
    tokio::spawn(async move {
        let Some(interval) = app
            .upgrade()
            .map(|app| app.config.limits.ticket_sweep_interval)
        else {
            return;
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Some(app) = app.upgrade() else { return };
            let swept = tokio::task::spawn_blocking(move || {
                let now = clock::unix_now();
                app.store
                    .write(|write| store::tickets::sweep_expired(write, now, 10_000))
            })
            .await;
            match swept {
                Ok(Ok(0)) => {}
                Ok(Ok(count)) => tracing::debug!(count, "deleted expired login tickets"),
                Ok(Err(error)) => tracing::warn!(%error, "cannot delete expired login tickets"),
                Err(error) => tracing::error!(%error, "the ticket sweep panicked"),
            }
        }
    });
}

/// Installs the aws-lc-rs crypto provider for rustls once per process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
