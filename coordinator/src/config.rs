//! Coordinator configuration: a pure function of the TOML file, the environment and the flags.
//!
//! Precedence, lowest first: built-in defaults, the TOML file, `HOSTPLANE_*` environment variables,
//! command-line flags. Clap merges the last two; [`Config::resolve`] lays them over the file.

use std::net::SocketAddr;
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
    fn a_named_missing_file_is_an_error_but_the_default_is_optional() {
        let error = FileConfig::load(Some(Path::new("/nonexistent/hostplane.toml"))).unwrap_err();
        assert!(error.to_string().contains("/nonexistent/hostplane.toml"));
    }
}
