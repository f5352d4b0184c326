//! A private nginx per test: its own directory, configuration, pid and logs, listening on loopback
//! ports that were free when the test started; stopped when the test ends.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use agent::WebHandler;
use agent::vhosts::WebOps;
use agent::vhosts::layout::WebLayout;
use agent::vhosts::probe::{HttpAnswer, http_get};
use agent::vhosts::spec::VhostSpec;

use crate::net::free_port;

/// Whether nginx can be run here; if not, [`crate::gate::skip`] says so.
pub fn nginx_available() -> bool {
    let found = std::process::Command::new("nginx")
        .arg("-v")
        .output()
        .is_ok_and(|output| output.status.success());
    found
        || crate::gate::skip(
            "nginx is not installed (apt-get install -y nginx); this test needs the real program",
        )
}

/// One private nginx with the agent's web operations on it.
pub struct Site {
    pub dir: tempfile::TempDir,
    pub ops: WebOps,
}

impl Site {
    /// Installs and starts a private nginx, or `None` when nginx is missing (see [`nginx_available`]).
    pub async fn start() -> Option<Site> {
        Site::start_with(|_| {}).await
    }

    /// [`Site::start`] on a private layout changed by `adjust` first.
    pub async fn start_with(adjust: impl FnOnce(&mut WebLayout)) -> Option<Site> {
        if !nginx_available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // nginx's workers run as an unprivileged user and must reach the document roots.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut layout = WebLayout::private(dir.path(), free_port(), free_port());
        adjust(&mut layout);
        let ops = WebOps::nginx(layout);
        ops.install().await.unwrap();
        Some(Site { dir, ops })
    }

    pub fn layout(&self) -> &WebLayout {
        self.ops.layout()
    }

    pub fn http_address(&self) -> SocketAddr {
        self.layout().http_listen
    }

    pub fn https_address(&self) -> SocketAddr {
        self.layout().https_listen
    }

    /// Writes a document root under the web root with an index page.
    pub fn document_root(&self, name: &str, index: &str) -> PathBuf {
        let root = self.layout().web_root.join(name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), index).unwrap();
        root
    }

    /// GET through nginx with a Host header.
    pub async fn get(&self, host: &str, path: &str) -> std::io::Result<HttpAnswer> {
        http_get(self.http_address(), host, path, Duration::from_secs(5)).await
    }

    /// The body of a 200 answer, or a description of what came instead.
    pub async fn body(&self, host: &str) -> String {
        match self.get(host, "/").await {
            Ok(answer) if answer.status == 200 => answer.body,
            Ok(answer) => format!("status {}", answer.status),
            Err(error) => format!("error {error}"),
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.layout().log_dir.join(name)).unwrap_or_default()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        stop_nginx(self.ops.layout());
    }
}

/// Stops the private nginx of a layout and waits (bounded) for its master to exit.
pub fn stop_nginx(layout: &WebLayout) {
    let pid = std::fs::read_to_string(layout.pid_file())
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    let _ = std::process::Command::new(&layout.nginx_binary)
        .arg("-e")
        .arg(layout.main_error_log())
        .arg("-c")
        .arg(&layout.main_config)
        .args(["-s", "stop"])
        .output();
    if let Some(pid) = pid {
        for _ in 0..100 {
            if !Path::new("/proc").join(pid.to_string()).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A private layout for the web handler; nginx is neither configured nor started until the
/// handler's first change. Stops that nginx when dropped.
pub struct HandlerSite {
    pub dir: tempfile::TempDir,
    pub handler: WebHandler,
    layout: WebLayout,
}

impl HandlerSite {
    /// A handler on a fresh private layout, or `None` when nginx is missing.
    pub fn new() -> Option<HandlerSite> {
        if !nginx_available() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let layout = WebLayout::private(dir.path(), free_port(), free_port());
        Some(HandlerSite {
            dir,
            handler: WebHandler::nginx(layout.clone()),
            layout,
        })
    }

    pub fn layout(&self) -> &WebLayout {
        &self.layout
    }

    /// Writes a document root under the web root with an index page.
    pub fn document_root(&self, name: &str, index: &str) {
        let root = self.layout.web_root.join(name);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), index).unwrap();
    }

    /// GET through nginx with a Host header.
    pub async fn get(&self, host: &str, path: &str) -> std::io::Result<HttpAnswer> {
        http_get(self.layout.http_listen, host, path, Duration::from_secs(5)).await
    }

    /// The body of a 200 answer, or a description of what came instead.
    pub async fn body(&self, host: &str) -> String {
        match self.get(host, "/").await {
            Ok(answer) if answer.status == 200 => answer.body,
            Ok(answer) => format!("status {}", answer.status),
            Err(error) => format!("error {error}"),
        }
    }
}

impl Drop for HandlerSite {
    fn drop(&mut self) {
        stop_nginx(&self.layout);
    }
}

/// An upstream that answers every request with its path and how many requests it has seen.
pub async fn upstream() -> (SocketAddr, Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let served = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let served = served.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|window| window == b"\r\n\r\n")
                    && request.len() < 65536
                {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("?").to_string();
                let number = served.fetch_add(1, Ordering::SeqCst) + 1;
                let body = format!("{path} #{number}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (address, count)
}

/// A static vhost spec.
pub fn static_spec(names: &[&str], root: &str) -> VhostSpec {
    VhostSpec {
        server_names: names.iter().map(|name| name.to_string()).collect(),
        root: Some(root.to_string()),
        proxy_pass: None,
        php: None,
        redirects: Default::default(),
        logs: Default::default(),
        limits: Default::default(),
    }
}

/// A reverse-proxy vhost spec.
pub fn proxy_spec(names: &[&str], upstream: &str) -> VhostSpec {
    VhostSpec {
        root: None,
        proxy_pass: Some(upstream.to_string()),
        ..static_spec(names, "unused")
    }
}
