//! Where the web server's files live and where it listens: one description used by real containers
//! and by tests alike, so both run the same rendering and the same transaction.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The web server's addresses and directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebLayout {
    /// The nginx program.
    pub nginx_binary: PathBuf,
    /// The main configuration file the agent writes (nginx is started with `-c` on it).
    pub main_config: PathBuf,
    /// The agent's directory: configuration generations, the `live` link, certificates, challenges.
    pub base_dir: PathBuf,
    /// Temporary request bodies and proxy buffers.
    pub runtime_dir: PathBuf,
    /// The pid file of the nginx master.
    pub pid_file: PathBuf,
    /// The systemd unit that runs nginx, when systemd runs it: nginx is started through it, so
    /// it is started again at boot and never lives in the agent's own service.
    pub systemd_unit: Option<String>,
    /// Log files.
    pub log_dir: PathBuf,
    /// Every document root lives inside this directory.
    pub web_root: PathBuf,
    /// Per-vhost caches live in subdirectories of this directory.
    pub cache_dir: PathBuf,
    /// nginx's MIME types file, if any.
    pub mime_types: Option<PathBuf>,
    /// nginx's standard FastCGI parameters file.
    pub fastcgi_params: PathBuf,
    /// Where plain HTTP is served.
    pub http_listen: SocketAddr,
    /// Where HTTPS is served.
    pub https_listen: SocketAddr,
    /// The `user` directive for worker processes, if any.
    pub worker_user: Option<String>,
    /// How many worker processes nginx runs (`None`: one per core).
    pub worker_processes: Option<u32>,
    /// How many applied versions of each vhost are remembered.
    pub history_limit: usize,
    /// How many configuration generations are kept on disk.
    pub generations_kept: usize,
}

impl WebLayout {
    /// The layout of a Debian container: nginx's own paths, ports 80 and 443 on every address.
    /// The pid file is the one Debian's `nginx.service` waits for, and the temporary folders live
    /// on disk beside Debian's, so the same configuration starts at boot under systemd.
    pub fn debian() -> WebLayout {
        WebLayout {
            nginx_binary: PathBuf::from("/usr/sbin/nginx"),
            main_config: PathBuf::from("/etc/nginx/nginx.conf"),
            base_dir: PathBuf::from("/etc/nginx/hostplane"),
            runtime_dir: PathBuf::from("/var/lib/nginx/hostplane"),
            pid_file: PathBuf::from("/run/nginx.pid"),
            systemd_unit: Some("nginx.service".into()),
            log_dir: PathBuf::from("/var/log/nginx"),
            web_root: PathBuf::from("/var/www"),
            cache_dir: PathBuf::from("/var/cache/nginx/hostplane"),
            mime_types: Some(PathBuf::from("/etc/nginx/mime.types")),
            fastcgi_params: PathBuf::from("/etc/nginx/fastcgi_params"),
            http_listen: SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 80),
            https_listen: SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 443),
            worker_user: Some("www-data".into()),
            worker_processes: None,
            history_limit: 5,
            generations_kept: 5,
        }
    }

    /// A private layout under one directory, listening on loopback at the given ports.
    pub fn private(dir: &Path, http_port: u16, https_port: u16) -> WebLayout {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        WebLayout {
            nginx_binary: PathBuf::from("nginx"),
            main_config: dir.join("nginx.conf"),
            base_dir: dir.join("hostplane"),
            runtime_dir: dir.join("run"),
            pid_file: dir.join("run").join("nginx.pid"),
            systemd_unit: None,
            log_dir: dir.join("log"),
            web_root: dir.join("www"),
            cache_dir: dir.join("cache"),
            mime_types: Some(PathBuf::from("/etc/nginx/mime.types")).filter(|path| path.exists()),
            fastcgi_params: PathBuf::from("/etc/nginx/fastcgi_params"),
            http_listen: SocketAddr::new(loopback, http_port),
            https_listen: SocketAddr::new(loopback, https_port),
            worker_user: None,
            worker_processes: Some(1),
            history_limit: 5,
            generations_kept: 5,
        }
    }

    /// The address the agent connects to for its own checks: the HTTP listener, with loopback in
    /// place of an unspecified address.
    pub fn probe_address(&self) -> SocketAddr {
        let ip = match self.http_listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.http_listen.port())
    }

    /// The address the agent's checks come from: the probe address's own address, bound
    /// explicitly, so nginx can answer the probe to it alone (on loopback the kernel would
    /// otherwise pick 127.0.0.1 for any 127.0.0.0/8 destination).
    pub fn probe_source(&self) -> IpAddr {
        self.probe_address().ip()
    }

    /// The `live` link: the configuration generation nginx includes.
    pub fn live_link(&self) -> PathBuf {
        self.base_dir.join("live")
    }

    /// The directory holding every configuration generation.
    pub fn generations_dir(&self) -> PathBuf {
        self.base_dir.join("generations")
    }

    /// The directory of one configuration generation.
    pub fn generation_dir(&self, generation: u64) -> PathBuf {
        self.generations_dir().join(generation.to_string())
    }

    /// The directory holding each vhost's certificate directories.
    pub fn tls_dir(&self) -> PathBuf {
        self.base_dir.join("tls")
    }

    /// The directory of ACME HTTP-01 answers.
    pub fn challenges_dir(&self) -> PathBuf {
        self.base_dir.join("acme-challenge")
    }

    /// The main error log (nginx's own start-up and reload errors).
    pub fn main_error_log(&self) -> PathBuf {
        self.log_dir.join("error.log")
    }

    /// The pid file of the nginx master.
    pub fn pid_file(&self) -> PathBuf {
        self.pid_file.clone()
    }
}
