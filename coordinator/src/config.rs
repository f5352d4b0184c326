//! Coordinator configuration: a pure function of the TOML file, the environment and the flags.
//!
//! Precedence, lowest first: built-in defaults, the TOML file, `HOSTPLANE_*` environment variables,
//! command-line flags. Clap merges the last two; [`Config::resolve`] lays them over the file.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the configuration file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hostplane/coordinator.toml";
/// The production state directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/hostplane";
/// The ACME directory certificates are issued through unless another is configured.
pub const DEFAULT_ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// A configuration problem, named precisely enough to fix it from one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("no data directory: pass --data-dir or set HOSTPLANE_DATA_DIR")]
    NoDataDir,
}

/// The file form of the configuration: every field optional, unknown keys refused.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    /// The key that seals the store's secrets; `<data_dir>/secrets.key` when not set.
    pub secrets_key_file: Option<PathBuf>,
    pub http_listen: Option<String>,
    pub quic_listen: Option<String>,
    pub quic_advertise: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub ticket_ttl_seconds: Option<u64>,
    pub max_body_bytes: Option<usize>,
    pub agent_cert_lifetime_seconds: Option<u64>,
    pub enrollment_ttl_seconds: Option<u64>,
    pub log_format: Option<String>,
    /// Glob patterns of the packages customers may install or remove (empty: any).
    pub package_allow: Option<Vec<String>>,
    /// Glob patterns of the packages customers may never install or remove; deny wins.
    pub package_deny: Option<Vec<String>>,
    /// The ACME directory URL (any RFC 8555 server).
    pub acme_directory: Option<String>,
    /// A PEM root certificate to trust for the ACME directory's TLS instead of the system's.
    pub acme_ca_file: Option<PathBuf>,
    /// An email address given to the ACME server as the account's contact.
    pub acme_contact: Option<String>,
    /// How many days before expiry a certificate is renewed.
    pub acme_renew_before_days: Option<u64>,
    /// How often the renewal loop looks for certificates due.
    pub acme_check_interval_seconds: Option<u64>,
    /// How long after a failed renewal the next attempt waits.
    pub acme_retry_seconds: Option<u64>,
    /// Limits and timeouts against slow or hostile clients (`[limits]`).
    pub limits: Option<LimitSettings>,
}

/// Limits and timeouts against slow or hostile clients: the `[limits]` table of the file, and
/// the same names as flags and `HOSTPLANE_*` environment variables. Every field is optional.
#[derive(Debug, Default, Clone, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    /// Seconds a client has to send a request's headers once it started one.
    #[arg(long, env = "HOSTPLANE_HTTP_HEADER_TIMEOUT_SECONDS")]
    pub http_header_timeout_seconds: Option<u64>,
    /// Seconds a connection with no request in progress may stay silent before it is closed.
    #[arg(long, env = "HOSTPLANE_HTTP_IDLE_TIMEOUT_SECONDS")]
    pub http_idle_timeout_seconds: Option<u64>,
    /// The most open HTTP connections in total.
    #[arg(long, env = "HOSTPLANE_HTTP_MAX_CONNECTIONS")]
    pub http_max_connections: Option<usize>,
    /// The most open HTTP connections from one address (trusted proxies are not limited).
    #[arg(long, env = "HOSTPLANE_HTTP_MAX_CONNECTIONS_PER_ADDRESS")]
    pub http_max_connections_per_address: Option<usize>,
    /// The most task event streams (SSE) one user may hold open.
    #[arg(long, env = "HOSTPLANE_MAX_EVENT_STREAMS_PER_USER")]
    pub max_event_streams_per_user: Option<usize>,
    /// The most requests with `?wait=` one user may have waiting at once.
    #[arg(long, env = "HOSTPLANE_MAX_WAITING_REQUESTS_PER_USER")]
    pub max_waiting_requests_per_user: Option<usize>,
    /// Failed logins of one user from one address before delays start.
    #[arg(long, env = "HOSTPLANE_LOGIN_FREE_FAILURES")]
    pub login_free_failures: Option<u32>,
    /// The longest delay, in seconds, failed logins of one user from one address lead to.
    #[arg(long, env = "HOSTPLANE_LOGIN_MAX_DELAY_SECONDS")]
    pub login_max_delay_seconds: Option<u64>,
    /// Failed logins from one address, for any users, before that address is delayed too.
    #[arg(long, env = "HOSTPLANE_LOGIN_ADDRESS_FREE_FAILURES")]
    pub login_address_free_failures: Option<u32>,
    /// Password hashes computed at once (each on a blocking thread).
    #[arg(long, env = "HOSTPLANE_PASSWORD_HASH_CONCURRENCY")]
    pub password_hash_concurrency: Option<usize>,
    /// Password hashes that may wait for a thread; beyond it a login is answered 503.
    #[arg(long, env = "HOSTPLANE_PASSWORD_HASH_QUEUE")]
    pub password_hash_queue: Option<usize>,
    /// How often expired login tickets are deleted, seconds.
    #[arg(long, env = "HOSTPLANE_TICKET_SWEEP_INTERVAL_SECONDS")]
    pub ticket_sweep_interval_seconds: Option<u64>,
    /// Pending QUIC handshakes above which new agents must prove their address (QUIC Retry).
    #[arg(long, env = "HOSTPLANE_QUIC_RETRY_ABOVE_HANDSHAKES")]
    pub quic_retry_above_handshakes: Option<usize>,
    /// Addresses of reverse proxies whose `X-Forwarded-For` is believed (comma-separated).
    #[arg(long, env = "HOSTPLANE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<String>>,
    /// A token `/metrics` requires as `Authorization: Bearer <token>`; without it `/metrics`
    /// is public.
    #[arg(long, env = "HOSTPLANE_METRICS_TOKEN")]
    pub metrics_token: Option<String>,
}

impl LimitSettings {
    /// These settings with every unset one taken from `lower`.
    pub fn over(self, lower: LimitSettings) -> LimitSettings {
        LimitSettings {
            http_header_timeout_seconds: self
                .http_header_timeout_seconds
                .or(lower.http_header_timeout_seconds),
            http_idle_timeout_seconds: self
                .http_idle_timeout_seconds
                .or(lower.http_idle_timeout_seconds),
            http_max_connections: self.http_max_connections.or(lower.http_max_connections),
            http_max_connections_per_address: self
                .http_max_connections_per_address
                .or(lower.http_max_connections_per_address),
            max_event_streams_per_user: self
                .max_event_streams_per_user
                .or(lower.max_event_streams_per_user),
            max_waiting_requests_per_user: self
                .max_waiting_requests_per_user
                .or(lower.max_waiting_requests_per_user),
            login_free_failures: self.login_free_failures.or(lower.login_free_failures),
            login_max_delay_seconds: self
                .login_max_delay_seconds
                .or(lower.login_max_delay_seconds),
            login_address_free_failures: self
                .login_address_free_failures
                .or(lower.login_address_free_failures),
            password_hash_concurrency: self
                .password_hash_concurrency
                .or(lower.password_hash_concurrency),
            password_hash_queue: self.password_hash_queue.or(lower.password_hash_queue),
            ticket_sweep_interval_seconds: self
                .ticket_sweep_interval_seconds
                .or(lower.ticket_sweep_interval_seconds),
            quic_retry_above_handshakes: self
                .quic_retry_above_handshakes
                .or(lower.quic_retry_above_handshakes),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            metrics_token: self.metrics_token.or(lower.metrics_token),
        }
    }
}

/// The resolved limits and timeouts.
#[derive(Debug, Clone)]
pub struct Limits {
    pub http_header_timeout: Duration,
    pub http_idle_timeout: Duration,
    pub http_max_connections: usize,
    pub http_max_connections_per_address: usize,
    pub max_event_streams_per_user: usize,
    pub max_waiting_requests_per_user: usize,
    pub login_free_failures: u32,
    pub login_max_delay: Duration,
    pub login_address_free_failures: u32,
    pub password_hash_concurrency: usize,
    pub password_hash_queue: usize,
    pub ticket_sweep_interval: Duration,
    pub quic_retry_above_handshakes: usize,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpAddr>,
    pub metrics_token: Option<String>,
}

fn at_least(key: &'static str, value: usize, least: usize) -> Result<usize, ConfigError> {
    if value < least {
        return Err(ConfigError::Invalid {
            key,
            message: format!("must be at least {least}"),
        });
    }
    Ok(value)
}

impl Limits {
    fn resolve(settings: LimitSettings) -> Result<Limits, ConfigError> {
        let trusted_proxies = settings
            .trusted_proxies
            .unwrap_or_default()
            .iter()
            .map(|text| {
                text.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| ConfigError::Invalid {
                        key: "trusted_proxies",
                        message: format!("{text:?} is not an IP address"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if settings
            .metrics_token
            .as_deref()
            .is_some_and(|token| token.len() < 16)
        {
            return Err(ConfigError::Invalid {
                key: "metrics_token",
                message: "must be at least 16 characters".into(),
            });
        }
        let hash_threads = std::thread::available_parallelism().map_or(2, |count| count.get());
        Ok(Limits {
            http_header_timeout: positive(
                "http_header_timeout_seconds",
                settings.http_header_timeout_seconds.unwrap_or(10),
            )?,
            http_idle_timeout: positive(
                "http_idle_timeout_seconds",
                settings.http_idle_timeout_seconds.unwrap_or(60),
            )?,
            http_max_connections: at_least(
                "http_max_connections",
                settings.http_max_connections.unwrap_or(10_000),
                1,
            )?,
            http_max_connections_per_address: at_least(
                "http_max_connections_per_address",
                settings.http_max_connections_per_address.unwrap_or(256),
                1,
            )?,
            max_event_streams_per_user: at_least(
                "max_event_streams_per_user",
                settings.max_event_streams_per_user.unwrap_or(16),
                1,
            )?,
            max_waiting_requests_per_user: at_least(
                "max_waiting_requests_per_user",
                settings.max_waiting_requests_per_user.unwrap_or(32),
                1,
            )?,
            login_free_failures: settings.login_free_failures.unwrap_or(3),
            login_max_delay: positive(
                "login_max_delay_seconds",
                settings.login_max_delay_seconds.unwrap_or(300),
            )?,
            login_address_free_failures: settings.login_address_free_failures.unwrap_or(50),
            password_hash_concurrency: at_least(
                "password_hash_concurrency",
                settings
                    .password_hash_concurrency
                    .unwrap_or(hash_threads.div_ceil(2)),
                1,
            )?,
            password_hash_queue: settings.password_hash_queue.unwrap_or(64),
            ticket_sweep_interval: positive(
                "ticket_sweep_interval_seconds",
                settings.ticket_sweep_interval_seconds.unwrap_or(600),
            )?,
            quic_retry_above_handshakes: settings.quic_retry_above_handshakes.unwrap_or(64),
            trusted_proxies,
            metrics_token: settings.metrics_token,
        })
    }
}

impl FileConfig {
    /// Parses TOML text; the error names the file.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.message().to_string()
                + &error
                    .span()
                    .map(|span| format!(" (at byte {})", span.start))
                    .unwrap_or_default(),
        })
    }

    /// Reads the file; a missing default file is an empty configuration, a missing named one an error.
    pub fn load(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
        let (path, required) = match path {
            Some(path) => (path.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => FileConfig::parse(&text, &path),
            Err(error) if !required && error.kind() == std::io::ErrorKind::NotFound => {
                Ok(FileConfig::default())
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }
}

/// Values given on the command line or in the environment (already merged by clap).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub secrets_key_file: Option<PathBuf>,
    pub http_listen: Option<String>,
    pub quic_listen: Option<String>,
    pub quic_advertise: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub ticket_ttl_seconds: Option<u64>,
    pub agent_cert_lifetime_seconds: Option<u64>,
    /// Limits and timeouts given as flags or in the environment.
    pub limits: LimitSettings,
    pub dev: bool,
}

/// The resolved configuration the coordinator runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// The key that seals the store's secrets (see `store::sealing`), kept apart from the store.
    pub secrets_key_file: PathBuf,
    pub http_listen: SocketAddr,
    pub quic_listen: SocketAddr,
    /// The `host:port` agents are told to dial; defaults to the QUIC listen address.
    pub quic_advertise: Option<String>,
    pub tls: Option<TlsFiles>,
    pub ticket_ttl: Duration,
    pub max_body_bytes: usize,
    pub agent_cert_lifetime: Duration,
    pub enrollment_ttl: Duration,
    pub json_logs: bool,
    /// Which packages customers may install or remove (admins are not limited).
    pub package_policy: protocol::names::package_policy::PackagePolicy,
    /// Where and how certificates are issued through ACME.
    pub acme: AcmeSettings,
    /// Limits and timeouts against slow or hostile clients.
    pub limits: Limits,
    /// Development mode: built-in Proxmox simulator, local addresses, an admin key printed.
    pub dev: bool,
}

/// The ACME client's settings.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The directory URL.
    pub directory: String,
    /// The root certificate trusted for the directory's TLS, when not the system's.
    pub ca_file: Option<PathBuf>,
    /// The account's contact email.
    pub contact: Option<String>,
    /// Certificates are renewed this long before they expire.
    pub renew_before: Duration,
    /// How often the renewal loop looks for certificates due.
    pub check_interval: Duration,
    /// How long after a failed renewal the next attempt waits.
    pub retry_after: Duration,
}

impl AcmeSettings {
    fn resolve(file: &FileConfig) -> Result<AcmeSettings, ConfigError> {
        let directory = file
            .acme_directory
            .clone()
            .unwrap_or_else(|| DEFAULT_ACME_DIRECTORY.to_string());
        if !(directory.starts_with("https://") || directory.starts_with("http://"))
            || directory.chars().any(char::is_whitespace)
        {
            return Err(ConfigError::Invalid {
                key: "acme_directory",
                message: format!("{directory:?} is not an http(s) URL"),
            });
        }
        if let Some(contact) = &file.acme_contact {
            let valid = contact
                .split_once('@')
                .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'))
                && !contact.chars().any(|c| c.is_whitespace() || c.is_control());
            if !valid {
                return Err(ConfigError::Invalid {
                    key: "acme_contact",
                    message: format!("{contact:?} is not an email address"),
                });
            }
        }
        let days = file.acme_renew_before_days.unwrap_or(30);
        if days == 0 || days > 3650 {
            return Err(ConfigError::Invalid {
                key: "acme_renew_before_days",
                message: "must be between 1 and 3650".into(),
            });
        }
        Ok(AcmeSettings {
            directory,
            ca_file: file.acme_ca_file.clone(),
            contact: file.acme_contact.clone(),
            renew_before: Duration::from_secs(days * 24 * 3600),
            check_interval: positive(
                "acme_check_interval_seconds",
                file.acme_check_interval_seconds.unwrap_or(3600),
            )?,
            retry_after: positive(
                "acme_retry_seconds",
                file.acme_retry_seconds.unwrap_or(6 * 3600),
            )?,
        })
    }
}

/// The HTTPS certificate and key files for the API.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

fn parse_address(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Invalid {
        key,
        message: format!("{value:?} is not an IP:PORT address"),
    })
}

fn positive(key: &'static str, value: u64) -> Result<Duration, ConfigError> {
    if value == 0 {
        return Err(ConfigError::Invalid {
            key,
            message: "must be at least 1 second".into(),
        });
    }
    Ok(Duration::from_secs(value))
}

impl Config {
    /// Lays the overrides over the file and checks every value. `dev_data_dir` is where `--dev`
    /// keeps its state when no directory is named.
    pub fn resolve(
        file: FileConfig,
        overrides: Overrides,
        dev_data_dir: Option<PathBuf>,
    ) -> Result<Config, ConfigError> {
        let dev = overrides.dev;
        let acme = AcmeSettings::resolve(&file)?;
        let limits = Limits::resolve(
            overrides
                .limits
                .clone()
                .over(file.limits.clone().unwrap_or_default()),
        )?;
        let data_dir = match overrides.data_dir.or(file.data_dir) {
            Some(dir) => dir,
            None if dev => dev_data_dir.ok_or(ConfigError::NoDataDir)?,
            None => PathBuf::from(DEFAULT_DATA_DIR),
        };
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data_dir",
                message: "must not be empty".into(),
            });
        }
        let secrets_key_file = overrides
            .secrets_key_file
            .or(file.secrets_key_file)
            .unwrap_or_else(|| data_dir.join(crate::store::sealing::KEY_FILE));
        if secrets_key_file.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "secrets_key_file",
                message: "must not be empty".into(),
            });
        }
        let default_http = if dev {
            "127.0.0.1:8080"
        } else {
            "0.0.0.0:8080"
        };
        let default_quic = if dev {
            "127.0.0.1:4433"
        } else {
            "0.0.0.0:4433"
        };
        let http_listen = parse_address(
            "http_listen",
            overrides
                .http_listen
                .as_deref()
                .or(file.http_listen.as_deref())
                .unwrap_or(default_http),
        )?;
        let quic_listen = parse_address(
            "quic_listen",
            overrides
                .quic_listen
                .as_deref()
                .or(file.quic_listen.as_deref())
                .unwrap_or(default_quic),
        )?;
        let quic_advertise = overrides.quic_advertise.or(file.quic_advertise);
        if let Some(advertise) = &quic_advertise {
            let valid = advertise
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(ConfigError::Invalid {
                    key: "quic_advertise",
                    message: format!("{advertise:?} is not HOST:PORT"),
                });
            }
        }
        let tls = match (
            overrides.tls_cert.or(file.tls_cert),
            overrides.tls_key.or(file.tls_key),
        ) {
            (Some(certificate), Some(key)) => Some(TlsFiles { certificate, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    key: "tls_key",
                    message: "tls_cert is set, so tls_key is required".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "tls_cert",
                    message: "tls_key is set, so tls_cert is required".into(),
                });
            }
        };
        let ticket_ttl = positive(
            "ticket_ttl_seconds",
            overrides
                .ticket_ttl_seconds
                .or(file.ticket_ttl_seconds)
                .unwrap_or(2 * 3600),
        )?;
        let agent_cert_lifetime = positive(
            "agent_cert_lifetime_seconds",
            overrides
                .agent_cert_lifetime_seconds
                .or(file.agent_cert_lifetime_seconds)
                .unwrap_or(7 * 24 * 3600),
        )?;
        let enrollment_ttl = positive(
            "enrollment_ttl_seconds",
            file.enrollment_ttl_seconds.unwrap_or(15 * 60),
        )?;
        let max_body_bytes = file.max_body_bytes.unwrap_or(1024 * 1024);
        if max_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "max_body_bytes",
                message: "must be at least 1024".into(),
            });
        }
        let json_logs = match file.log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "log_format",
                    message: format!("{other:?} is neither \"text\" nor \"json\""),
                });
            }
        };
        let package_policy = protocol::names::package_policy::PackagePolicy::new(
            file.package_allow.unwrap_or_default(),
            file.package_deny.unwrap_or_default(),
        )
        .map_err(|error| ConfigError::Invalid {
            key: "package_allow/package_deny",
            message: error.to_string(),
        })?;
        Ok(Config {
            data_dir,
            secrets_key_file,
            http_listen,
            quic_listen,
            quic_advertise,
            tls,
            ticket_ttl,
            max_body_bytes,
            agent_cert_lifetime,
            enrollment_ttl,
            json_logs,
            package_policy,
            acme,
            limits,
            dev,
        })
    }

    /// A configuration for tests: everything on loopback port 0 under `data_dir`.
    pub fn for_tests(data_dir: PathBuf) -> Config {
        let overrides = Overrides {
            data_dir: Some(data_dir),
            http_listen: Some("127.0.0.1:0".into()),
            quic_listen: Some("127.0.0.1:0".into()),
            ..Overrides::default()
        };
        Config::resolve(FileConfig::default(), overrides, None).expect("test configuration")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(file: &str, overrides: Overrides) -> Result<Config, String> {
        let file = FileConfig::parse(file, Path::new("test.toml")).map_err(|e| e.to_string())?;
        Config::resolve(file, overrides, Some(PathBuf::from("/dev-state")))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn precedence_flags_over_file_over_defaults() {
        let config = resolve("http_listen = \"127.0.0.1:9000\"", Overrides::default()).unwrap();
        assert_eq!(config.http_listen.port(), 9000);
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let overrides = Overrides {
            http_listen: Some("127.0.0.1:9001".into()),
            ..Overrides::default()
        };
        let config = resolve("http_listen = \"127.0.0.1:9000\"", overrides).unwrap();
        assert_eq!(config.http_listen.port(), 9001);
    }

    #[test]
    fn dev_mode_uses_the_dev_directory_and_loopback() {
        let overrides = Overrides {
            dev: true,
            ..Overrides::default()
        };
        let config = resolve("", overrides).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/dev-state"));
        assert!(config.http_listen.ip().is_loopback());
    }

    #[test]
    fn bad_values_are_named() {
        let cases: &[(&str, &str)] = &[
            ("http_listen = \"nowhere\"", "http_listen"),
            ("quic_listen = \"1.2.3.4\"", "quic_listen"),
            ("quic_advertise = \"host\"", "quic_advertise"),
            ("tls_cert = \"/c.pem\"", "tls_key"),
            ("ticket_ttl_seconds = 0", "ticket_ttl_seconds"),
            ("log_format = \"xml\"", "log_format"),
            ("max_body_bytes = 10", "max_body_bytes"),
            ("htp_listen = \"127.0.0.1:1\"", "htp_listen"),
            ("ticket_ttl_seconds = \"soon\"", "invalid type"),
            ("acme_directory = \"ftp://x\"", "acme_directory"),
            ("acme_contact = \"nobody\"", "acme_contact"),
            ("acme_renew_before_days = 0", "acme_renew_before_days"),
            (
                "acme_check_interval_seconds = 0",
                "acme_check_interval_seconds",
            ),
            (
                "[limits]\nhttp_header_timeout_seconds = 0",
                "http_header_timeout_seconds",
            ),
            ("[limits]\ntrusted_proxies = [\"proxy\"]", "trusted_proxies"),
            ("[limits]\nhttp_max_connections = 0", "http_max_connections"),
            ("[limits]\nsome_limit = 1", "some_limit"),
        ];
        for (text, expected) in cases {
            let error = resolve(text, Overrides::default()).unwrap_err();
            assert!(
                error.contains(expected),
                "{text:?} gave {error:?}, expected it to mention {expected:?}"
            );
        }
    }

    #[test]
    fn limits_come_from_the_file_unless_a_flag_says_otherwise() {
        let file = "[limits]\nhttp_idle_timeout_seconds = 5\nhttp_max_connections = 7\n\
                    trusted_proxies = [\"10.0.0.1\", \"::1\"]";
        let overrides = Overrides {
            limits: LimitSettings {
                http_max_connections: Some(9),
                ..LimitSettings::default()
            },
            ..Overrides::default()
        };
        let config = resolve(file, overrides).unwrap();
        assert_eq!(config.limits.http_idle_timeout, Duration::from_secs(5));
        assert_eq!(config.limits.http_max_connections, 9);
        assert_eq!(config.limits.http_header_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.trusted_proxies.len(), 2);
    }

    #[test]
    fn a_named_missing_file_is_an_error_but_the_default_is_optional() {
        let error = FileConfig::load(Some(Path::new("/nonexistent/hostplane.toml"))).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/hostplane.toml"));
    }
}
