//! Starting and stopping the coordinator: open the store, bind the listeners, serve HTTP(S)
//! until shutdown, write `endpoints.json`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_service::Service;

use crate::App;
use crate::api::PeerAddress;
use crate::config::Config;
use crate::store::{Store, StoreError};

/// Why the coordinator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen for HTTP on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot load the HTTPS certificate or key: {0}")]
    Tls(String),
    #[error("cannot write {path}: {source}")]
    Endpoints {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Startup(String),
}

/// A running coordinator.
pub struct Running {
    pub app: Arc<App>,
    /// The bound HTTP address.
    pub http: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The bound QUIC address, once the channel listens.
    pub quic: Option<SocketAddr>,
    /// The first admin's API key, only on the start that created it.
    pub admin_key: Option<String>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Running({})", self.http)
    }
}

impl Running {
    /// The base URL of the HTTP API, e.g. `http://127.0.0.1:8080`.
    pub fn http_url(&self) -> String {
        format!("{}://{}", self.scheme, self.http)
    }

    /// The line printed when ready.
    pub fn listening_line(&self) -> String {
        match self.quic {
            Some(quic) => format!("listening http={} quic={quic}", self.http_url()),
            None => format!("listening http={}", self.http_url()),
        }
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets requests finish.
    pub async fn wait(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        self.stop().await;
    }

    /// Stops serving now.
    pub async fn stop(self) {
        self.app.ready.store(false, Ordering::Release);
        let _ = self.stop.send(true);
        let _ = self.server.await;
        self.app.shutdown().await;
    }
}

fn create_data_dir(path: &Path) -> Result<(), ServeError> {
    let error = |source| ServeError::DataDir {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(error)?;
    }
    Ok(())
}

fn tls_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, ServeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let Some(files) = &config.tls else {
        return Ok(None);
    };
    crate::install_crypto_provider();
    let certificates = CertificateDer::pem_file_iter(&files.certificate)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| ServeError::Tls(format!("{}: {error}", files.certificate.display())))?;
    if certificates.is_empty() {
        return Err(ServeError::Tls(format!(
            "{}: no certificate in the file",
            files.certificate.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|error| ServeError::Tls(format!("{}: {error}", files.key.display())))?;
    let mut server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|error| ServeError::Tls(error.to_string()))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

/// Writes `<data-dir>/endpoints.json` so scripts and tests can read the addresses back.
fn write_endpoints(running: &Running, data_dir: &Path) -> Result<(), ServeError> {
    let path = data_dir.join("endpoints.json");
    let body = serde_json::json!({
        "http": running.http_url(),
        "quic": running.quic.map(|quic| quic.to_string()),
    });
    let temporary = data_dir.join("endpoints.json.tmp");
    let error = |source| ServeError::Endpoints {
        path: path.display().to_string(),
        source,
    };
    std::fs::write(&temporary, body.to_string() + "\n").map_err(error)?;
    std::fs::rename(&temporary, &path).map_err(error)
}

/// Opens everything and starts serving; returns once the listeners are bound.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    create_data_dir(&config.data_dir)?;
    let store = Store::open_sealed(&config.data_dir, &config.secrets_key_file)?;
    let tls = tls_acceptor(&config)?;
    let listener = TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| ServeError::Bind {
            address: config.http_listen,
            source,
        })?;
    let http = listener.local_addr().map_err(|source| ServeError::Bind {
        address: config.http_listen,
        source,
    })?;
    let data_dir = config.data_dir.clone();
    let admin_key = crate::bootstrap::ensure_admin(&store, &data_dir).map_err(|error| {
        ServeError::Startup(format!("cannot create the first admin: {}", error.message))
    })?;
    let app = App::build(config, store).await?;
    let quic = app.start_background().await?;
    let (stop, stopped) = watch::channel(false);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let filter = crate::api::filter(app.clone());
    let server = tokio::spawn(accept_loop(listener, tls, filter, stopped));
    app.ready.store(true, Ordering::Release);
    let running = Running {
        app,
        http,
        scheme,
        quic,
        admin_key,
        stop,
        server,
    };
    write_endpoints(&running, &data_dir)?;
    Ok(running)
}

/// Accepts connections until `stopped` turns true, then waits for open connections to finish
/// their requests.
async fn accept_loop<F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    filter: F,
    mut stopped: watch::Receiver<bool>,
) where
    F: warp::Filter<Extract = (crate::api::Reply,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let warp_service = warp::service(filter.clone());
        let service =
            hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(PeerAddress(peer));
                let mut warp_service = warp_service.clone();
                warp_service.call(request)
            });
        let builder = auto::Builder::new(TokioExecutor::new());
        match &tls {
            None => {
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let watched = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = watched.await {
                        tracing::debug!(%error, "HTTP connection ended with an error");
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    );
                    let stream = match handshake.await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    if let Err(error) = watcher.watch(connection).await {
                        tracing::debug!(%error, "HTTPS connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), graceful.shutdown()).await;
}
