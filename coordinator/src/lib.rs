//! The Hostplane coordinator: the public REST API, the store, the task system, the Proxmox
//! client and the agents' QUIC server. `main.rs` parses arguments and calls [`server::start`].

pub mod api;
pub mod auth;
pub mod config;
pub mod metrics;
pub mod server;
pub mod store;

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
    /// True once every listener is up; `/readyz` reports it.
    pub ready: AtomicBool,
}

impl App {
    /// Builds the application state and its route table.
    pub async fn build(config: Config, store: Store) -> Result<Arc<App>, ServeError> {
        let mut routes = api::RouteTable::new();
        api::health::routes(&mut routes);
        Ok(Arc::new(App {
            config,
            store,
            routes,
            metrics: Metrics::new(),
            ready: AtomicBool::new(false),
        }))
    }

    /// Starts the background parts (QUIC listener, task driver); returns the QUIC address.
    pub async fn start_background(self: &Arc<Self>) -> Result<Option<SocketAddr>, ServeError> {
        Ok(None)
    }

    /// Stops the background parts.
    pub async fn shutdown(&self) {}
}

/// Installs the aws-lc-rs crypto provider for rustls once per process.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
