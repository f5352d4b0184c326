//! Certificates from ACME (RFC 8555) for vhosts: the client and its account ([`client`]), the
//! `ssl.acme` task that issues or renews one vhost's certificate over HTTP-01 answered by the
//! vhost's own nginx ([`task`]), and the renewal loop ([`renewal`]).
//!
//! The directory is configurable (default Let's Encrypt; any RFC 8555 server), with an optional
//! root certificate for its TLS. The certificate's private key is made on the agent and never
//! leaves the instance.

pub mod client;
pub mod renewal;
pub mod task;

use shell::sync::MutexExt;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

pub use client::{AcmeClient, AcmeError, VhostAgent};
pub use task::AcmeInput;

use crate::App;

/// The ACME parts of the application: the client and the running renewal loop.
#[derive(Debug)]
pub struct Acme {
    pub client: AcmeClient,
    renewal: Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>>,
}

impl Acme {
    /// The client of the configured directory; the renewal loop starts with [`start`].
    pub fn new(client: AcmeClient) -> Acme {
        Acme {
            client,
            renewal: Mutex::new(None),
        }
    }

    /// Stops the renewal loop (tasks it started go on in the task system).
    pub async fn shutdown(&self) {
        let running = self.renewal.locked().take();
        if let Some((stop, handle)) = running {
            stop.cancel();
            let _ = handle.await;
        }
    }
}

/// Registers the `ssl.acme` executor and starts the renewal loop.
pub fn start(app: &Arc<App>) {
    task::register(app);
    let stop = CancellationToken::new();
    let handle = renewal::spawn(app, stop.clone());
    *app.acme.renewal.locked() = Some((stop, handle));
}
