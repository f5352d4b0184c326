//! Starting and stopping the coordinator: open the store, bind the listeners, serve HTTP(S)
//! until shutdown, write `endpoints.json`.

use shell::sync::MutexExt;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::App;
use crate::api::PeerAddress;
use crate::config::{Config, Limits};
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
    shell::write_atomically(&path, (body.to_string() + "\n").as_bytes(), None).map_err(|source| {
        ServeError::Endpoints {
            path: path.display().to_string(),
            source,
        }
    })
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
    let admin_key = crate::bootstrap::ensure_admin(&store, &data_dir)
        .map_err(|error| ServeError::Startup(format!("cannot create the first admin: {error}")))?;
    let app = App::build(config, store).await?;
    let quic = app.start_background().await?;
    let (stop, stopped) = watch::channel(false);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let filter = crate::api::filter(app.clone());
    let limits = app.config.limits.clone();
    let server = tokio::spawn(accept_loop(listener, tls, filter, limits, stopped));
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

/// Open connections, in total and per source address.
#[derive(Debug, Default)]
struct ConnectionBook {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it gives its place back.
struct ConnectionPermit {
    book: Arc<Mutex<ConnectionBook>>,
    address: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut book = self.book.locked();
        book.total = book.total.saturating_sub(1);
        if let Some(count) = book.per_address.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                book.per_address.remove(&self.address);
            }
        }
    }
}

/// Admits a connection from `address` unless a cap is reached. Trusted proxies carry many
/// clients, so only the total cap applies to them.
fn admit(
    book: &Arc<Mutex<ConnectionBook>>,
    limits: &Limits,
    address: IpAddr,
) -> Option<ConnectionPermit> {
    let mut open = book.locked();
    if open.total >= limits.http_max_connections {
        return None;
    }
    let from_address = open.per_address.get(&address).copied().unwrap_or(0);
    if from_address >= limits.http_max_connections_per_address
        && !limits.trusted_proxies.contains(&address)
    {
        return None;
    }
    open.total += 1;
    *open.per_address.entry(address).or_insert(0) += 1;
    Some(ConnectionPermit {
        book: book.clone(),
        address,
    })
}

/// When a connection last moved bytes and how many of its requests are being answered.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    last_millis: AtomicU64,
    in_progress: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            origin: Instant::now(),
            last_millis: AtomicU64::new(0),
            in_progress: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let millis = self.origin.elapsed().as_millis() as u64;
        self.last_millis.store(millis, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }

    fn busy(&self) -> bool {
        self.in_progress.load(Ordering::Relaxed) > 0
    }
}

/// Counts a request as in progress until its answer is ready (or it is dropped).
struct InProgress(Arc<Activity>);

impl InProgress {
    fn start(activity: &Arc<Activity>) -> InProgress {
        activity.in_progress.fetch_add(1, Ordering::Relaxed);
        InProgress(activity.clone())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A byte stream that records when it last read or wrote anything.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buffer.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(context, buffer);
        if matches!(result, Poll::Ready(Ok(()))) && buffer.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(context, data);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(context, buffers);
        if matches!(result, Poll::Ready(Ok(written)) if written > 0) {
            self.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Drives one connection: a connection with no request in progress that stays silent for the
/// idle timeout is asked to close, and dropped if it does not within the header timeout; a
/// server stop asks it to close after its requests.
async fn drive<C, E>(
    connection: C,
    close: impl Fn(Pin<&mut C>),
    activity: Arc<Activity>,
    limits: Limits,
    mut stopped: watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut connection = std::pin::pin!(connection);
    let mut stopping = *stopped.borrow();
    if stopping {
        close(connection.as_mut());
    }
    loop {
        let wake = if activity.busy() {
            limits.http_idle_timeout
        } else {
            limits
                .http_idle_timeout
                .saturating_sub(activity.quiet_for())
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "HTTP connection ended with an error");
                }
                return;
            }
            _ = stopped.changed(), if !stopping => {
                stopping = true;
                close(connection.as_mut());
            }
            _ = tokio::time::sleep(wake) => {
                if !activity.busy() && activity.quiet_for() >= limits.http_idle_timeout {
                    close(connection.as_mut());
                    let _ = tokio::time::timeout(limits.http_header_timeout, connection.as_mut()).await;
                    return;
                }
            }
        }
    }
}

/// Accepts connections until `stopped` turns true, then waits for open connections to finish
/// their requests.
async fn accept_loop<F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    filter: F,
    limits: Limits,
    stopped: watch::Receiver<bool>,
) where
    F: warp::Filter<Extract = (crate::api::Reply,), Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let connections = TaskTracker::new();
    let book = Arc::new(Mutex::new(ConnectionBook::default()));
    let mut stop = stopped.clone();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Some(permit) = admit(&book, &limits, peer.ip()) else {
            tracing::debug!(%peer, "refused an HTTP connection: too many open");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let stream = Watched {
            inner: stream,
            activity: activity.clone(),
        };
        let warp_service = warp::service(filter.clone());
        let requests = activity.clone();
        let service =
            hyper::service::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(PeerAddress(peer));
                let mut warp_service = warp_service.clone();
                let in_progress = InProgress::start(&requests);
                async move {
                    let answer = warp_service.call(request).await;
                    drop(in_progress);
                    answer
                }
            });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.http_header_timeout);
        builder.http2().timer(TokioTimer::new());
        let limits = limits.clone();
        let stopped = stopped.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => {
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    drive(
                        connection,
                        |connection| connection.graceful_shutdown(),
                        activity,
                        limits,
                        stopped,
                    )
                    .await;
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(limits.http_header_timeout, acceptor.accept(stream));
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
                    drive(
                        connection,
                        |connection| connection.graceful_shutdown(),
                        activity,
                        limits,
                        stopped,
                    )
                    .await;
                }
            }
        });
    }
    drop(listener);
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), connections.wait()).await;
}
