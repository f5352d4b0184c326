//! The typed description of a vhost as a customer sends it, and its validation into a form that
//! can be rendered without any further checks. The agent validates against its own web root; the
//! coordinator, which does not know it, against [`DEFAULT_WEB_ROOT`].
//!
//! Invariant: every string that leaves this module inside a `ValidVhost` is made only of characters
//! that have no meaning to the nginx configuration parser (no whitespace, quotes, backslashes,
//! semicolons, braces, `$` or `#`), so rendering cannot be steered by customer text.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::web::ValidationError;

/// The most server names one vhost may carry.
pub const MAX_SERVER_NAMES: usize = 32;

/// The directory every document root of an instance lives in (relative roots are inside it).
pub const DEFAULT_WEB_ROOT: &str = "/var/www";

/// The top-level domain reserved for names the agent uses itself (RFC 2606).
pub const RESERVED_SUFFIX: &str = ".invalid";

/// What a customer asks for: a vhost's names, what it serves, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostSpec {
    /// Host names the vhost answers to; the first plain (non-wildcard) name is its canonical name.
    pub server_names: Vec<String>,
    /// The document root, relative to the web root (or absolute inside it).
    #[serde(default)]
    pub root: Option<String>,
    /// An upstream to reverse-proxy to, `http://host[:port][/path]` or `https://...`.
    #[serde(default)]
    pub proxy_pass: Option<String>,
    /// PHP-FPM for a document root.
    #[serde(default)]
    pub php: Option<PhpSpec>,
    /// Redirects between names and schemes.
    #[serde(default)]
    pub redirects: Redirects,
    /// Access and error logging.
    #[serde(default)]
    pub logs: Logs,
    /// Request limits.
    #[serde(default)]
    pub limits: Limits,
}

/// PHP-FPM settings of a vhost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhpSpec {
    /// The absolute path of the PHP-FPM unix socket.
    pub socket: String,
}

/// Redirects a vhost performs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redirects {
    /// Whether to move visitors to or from the `www.` names.
    #[serde(default)]
    pub www: WwwRedirect,
    /// Whether plain HTTP is redirected to HTTPS once the vhost has a certificate.
    #[serde(default)]
    pub https: bool,
}

/// Direction of a `www.` redirect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WwwRedirect {
    /// No redirect between names.
    #[default]
    None,
    /// `example.com` moves to `www.example.com`.
    ToWww,
    /// `www.example.com` moves to `example.com`.
    FromWww,
}

/// Logging of a vhost; the files themselves are placed by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logs {
    /// Whether requests are logged to the vhost's access log.
    #[serde(default = "yes")]
    pub access: bool,
    /// The least severe level written to the vhost's error log.
    #[serde(default)]
    pub error_level: ErrorLevel,
}

fn yes() -> bool {
    true
}

impl Default for Logs {
    fn default() -> Self {
        Logs {
            access: true,
            error_level: ErrorLevel::default(),
        }
    }
}

/// nginx error log levels a customer may choose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorLevel {
    /// `warn`.
    Warn,
    /// `error`.
    #[default]
    Error,
    /// `crit`.
    Crit,
}

impl ErrorLevel {
    /// The level as nginx spells it.
    pub fn as_nginx(self) -> &'static str {
        match self {
            ErrorLevel::Warn => "warn",
            ErrorLevel::Error => "error",
            ErrorLevel::Crit => "crit",
        }
    }
}

/// Request limits of a vhost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The largest request body accepted, in bytes (nginx default 1 MiB).
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// How long to wait for the upstream (or PHP) to answer, in seconds.
    #[serde(default)]
    pub upstream_timeout_seconds: Option<u32>,
}

/// The largest body limit accepted (16 GiB).
pub const MAX_BODY_BYTES: u64 = 16 << 30;
/// The longest upstream timeout accepted (one hour).
pub const MAX_UPSTREAM_TIMEOUT_SECONDS: u32 = 3600;

/// A validated host name: lower case, DNS labels, optionally a leading `*.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServerName(String);

impl ServerName {
    /// Parses a host name, refusing anything nginx or DNS would not take as one plain name.
    pub fn parse(input: &str) -> Result<ServerName, String> {
        if input.is_empty() {
            return Err("is empty".into());
        }
        if input.len() > 253 {
            return Err("is longer than 253 characters".into());
        }
        if let Some(bad) = input
            .chars()
            .find(|character| !character.is_ascii_graphic())
        {
            return Err(format!(
                "contains the character {bad:?}; host names are letters, digits, '-' and '.'"
            ));
        }
        let lower = input.to_ascii_lowercase();
        let (wildcard, rest) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let labels: Vec<&str> = rest.split('.').collect();
        for label in &labels {
            if label.is_empty() {
                return Err("has an empty label (two dots, or a leading or trailing dot)".into());
            }
            if label.len() > 63 {
                return Err("has a label longer than 63 characters".into());
            }
            if let Some(bad) = label
                .chars()
                .find(|character| !(character.is_ascii_alphanumeric() || *character == '-'))
            {
                return Err(if bad == '*' {
                    "may hold a wildcard only as a leading '*.'".into()
                } else {
                    format!(
                        "contains the character {bad:?}; host names are letters, digits, '-' and '.'"
                    )
                });
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err("has a label that starts or ends with '-'".into());
            }
        }
        if wildcard && labels.len() < 2 {
            return Err("a wildcard needs at least two labels after '*.'".into());
        }
        if lower.ends_with(RESERVED_SUFFIX) {
            return Err(format!("names under '{RESERVED_SUFFIX}' are reserved"));
        }
        Ok(ServerName(lower))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the name starts with `*.`.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// A host that this name answers to: itself, or for a wildcard one name under it.
    pub fn sample_host(&self) -> String {
        match self.0.strip_prefix("*.") {
            Some(rest) => format!("hostplane-check.{rest}"),
            None => self.0.clone(),
        }
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl TryFrom<String> for ServerName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ServerName::parse(&value)
    }
}

impl From<ServerName> for String {
    fn from(value: ServerName) -> String {
        value.0
    }
}

/// A validated vhost identifier: a DNS-label-like word, usable in file and variable names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VhostId(String);

impl VhostId {
    /// Parses an identifier: 1 to 63 of `a-z`, `0-9`, `-`, starting with a letter or digit.
    pub fn parse(input: &str) -> Result<VhostId, ValidationError> {
        let valid = !input.is_empty()
            && input.len() <= 63
            && input.chars().all(|character| {
                character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
            })
            && !input.starts_with('-');
        if valid {
            Ok(VhostId(input.to_string()))
        } else {
            Err(ValidationError::single(
                "vhost",
                "a vhost id is 1 to 63 lower-case letters, digits or '-', not starting with '-'",
            ))
        }
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier in a form nginx accepts inside variable and zone names.
    pub fn as_symbol(&self) -> String {
        self.0.replace('-', "_")
    }
}

impl fmt::Display for VhostId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl TryFrom<String> for VhostId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        VhostId::parse(&value).map_err(|error| error.to_string())
    }
}

impl From<VhostId> for String {
    fn from(value: VhostId) -> String {
        value.0
    }
}

/// The scheme of a proxied upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamScheme {
    /// Plain HTTP.
    Http,
    /// HTTPS.
    Https,
}

/// A parsed reverse-proxy upstream, rendered back from its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `http` or `https`.
    pub scheme: UpstreamScheme,
    /// A host name or an IP address literal (IPv6 without brackets).
    pub host: String,
    /// The port, if one was given.
    pub port: Option<u16>,
    /// The path, starting with `/`, if one was given.
    pub path: Option<String>,
}

impl Upstream {
    /// Parses `http://host[:port][/path]`.
    pub fn parse(input: &str) -> Result<Upstream, String> {
        let (scheme, rest) = if let Some(rest) = input.strip_prefix("http://") {
            (UpstreamScheme::Http, rest)
        } else if let Some(rest) = input.strip_prefix("https://") {
            (UpstreamScheme::Https, rest)
        } else {
            return Err("must start with http:// or https://".into());
        };
        let (authority, path) = match rest.find('/') {
            Some(index) => (&rest[..index], Some(&rest[index..])),
            None => (rest, None),
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let Some((address, after)) = bracketed.split_once(']') else {
                return Err("has an unclosed '[' in its address".into());
            };
            let address: Ipv6Addr = address
                .parse()
                .map_err(|_| "has an invalid IPv6 address".to_string())?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or("has text after its IPv6 address")?,
                ),
            };
            (address.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port)),
                None => (authority.to_string(), None),
            }
        };
        let bracketed = authority.starts_with('[');
        if !bracketed && host.parse::<IpAddr>().is_err() {
            let name = ServerName::parse(&host).map_err(|reason| format!("host {reason}"))?;
            if name.is_wildcard() {
                return Err("host may not be a wildcard".into());
            }
        }
        let port = match port {
            None => None,
            Some(text) => match text.parse::<u16>() {
                Ok(port)
                    if port > 0 && text.chars().all(|character| character.is_ascii_digit()) =>
                {
                    Some(port)
                }
                _ => return Err("has an invalid port".into()),
            },
        };
        if let Some(path) = path {
            if let Some(bad) = path
                .chars()
                .find(|character| !is_safe_path_character(*character))
            {
                return Err(format!("path contains the character {bad:?}"));
            }
        }
        Ok(Upstream {
            scheme,
            host,
            port,
            path: path.map(str::to_string),
        })
    }

    /// The upstream as nginx's `proxy_pass` argument.
    pub fn to_url(&self) -> String {
        let scheme = match self.scheme {
            UpstreamScheme::Http => "http",
            UpstreamScheme::Https => "https",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let port = self.port.map(|port| format!(":{port}")).unwrap_or_default();
        format!(
            "{scheme}://{host}{port}{}",
            self.path.as_deref().unwrap_or("")
        )
    }
}

/// Characters allowed in paths that are written into the configuration.
pub fn is_safe_path_character(character: char) -> bool {
    character.is_ascii_alphanumeric()
        || matches!(
            character,
            '/' | '.' | '_' | '-' | '~' | '+' | '@' | '%' | ',' | '=' | ':'
        )
}

/// What a vhost serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Files from a document root, optionally through PHP-FPM.
    Files {
        /// The absolute document root.
        root: PathBuf,
        /// The PHP-FPM socket, if PHP is on.
        php_socket: Option<PathBuf>,
    },
    /// A reverse proxy.
    Proxy(Upstream),
}

/// A `www.` redirect between two names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRedirect {
    /// The name visitors arrive at.
    pub from: ServerName,
    /// The name they are sent to.
    pub to: ServerName,
}

/// A vhost that passed validation: every part is typed and safe to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidVhost {
    /// Names served by the main server block (redirected names excluded).
    pub names: Vec<ServerName>,
    /// Names answered only with a redirect.
    pub name_redirects: Vec<NameRedirect>,
    /// What the vhost serves.
    pub content: Content,
    /// Whether HTTP moves to HTTPS when a certificate is present.
    pub https_redirect: bool,
    /// Logging.
    pub logs: Logs,
    /// Limits.
    pub limits: Limits,
}

impl ValidVhost {
    /// Every name the vhost answers to, served or redirected.
    pub fn all_names(&self) -> Vec<ServerName> {
        let mut names = self.names.clone();
        names.extend(
            self.name_redirects
                .iter()
                .map(|redirect| redirect.from.clone()),
        );
        names
    }

    /// The host used to check the vhost answers.
    pub fn check_host(&self) -> String {
        self.names
            .first()
            .map(ServerName::sample_host)
            .unwrap_or_default()
    }
}

/// Parses a path that must be absolute and made of safe components.
fn parse_absolute_path(input: &str, max_length: usize) -> Result<PathBuf, String> {
    if !input.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    parse_path_components(input, max_length)?;
    Ok(PathBuf::from(input))
}

fn parse_path_components(input: &str, max_length: usize) -> Result<(), String> {
    if input.len() > max_length {
        return Err(format!("is longer than {max_length} characters"));
    }
    if let Some(bad) = input
        .chars()
        .find(|character| !is_safe_path_character(*character))
    {
        return Err(format!("contains the character {bad:?}"));
    }
    for component in Path::new(input).components() {
        match component {
            Component::Normal(_) | Component::RootDir => {}
            Component::ParentDir => return Err("may not contain '..'".into()),
            Component::CurDir | Component::Prefix(_) => {
                return Err("may not contain '.' components".into());
            }
        }
    }
    if input.split('/').any(|part| part == "." || part == "..") {
        return Err("may not contain '.' or '..' components".into());
    }
    Ok(())
}

/// The largest administrator's block accepted.
pub const MAX_EXTRA_BYTES: usize = 16 * 1024;

/// Checks the administrator's block: bounded, text, balanced braces (nginx checks the rest).
pub fn check_extra(extra: &str) -> Result<(), ValidationError> {
    let mut depth: i64 = 0;
    for character in extra.chars() {
        match character {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            break;
        }
    }
    let mut errors = ValidationError::default();
    if extra.len() > MAX_EXTRA_BYTES {
        errors.push("extra", format!("is larger than {MAX_EXTRA_BYTES} bytes"));
    }
    if extra
        .chars()
        .any(|character| character.is_control() && character != '\n' && character != '\t')
    {
        errors.push("extra", "contains control characters");
    }
    if depth != 0 {
        errors.push(
            "extra",
            "has unbalanced braces; it must stay inside the vhost's server block",
        );
    }
    errors.into_result(())
}

impl VhostSpec {
    /// Validates the spec; `web_root` is the directory every document root must be inside.
    pub fn validate(&self, web_root: &Path) -> Result<ValidVhost, ValidationError> {
        let mut errors = ValidationError::default();
        let mut names = Vec::new();
        if self.server_names.is_empty() {
            errors.push("server_names", "at least one server name is needed");
        }
        if self.server_names.len() > MAX_SERVER_NAMES {
            errors.push(
                "server_names",
                format!("at most {MAX_SERVER_NAMES} server names are allowed"),
            );
        }
        for (index, input) in self.server_names.iter().enumerate() {
            match ServerName::parse(input) {
                Ok(name) if names.contains(&name) => {
                    errors.push(format!("server_names[{index}]"), "is listed twice")
                }
                Ok(name) => names.push(name),
                Err(reason) => errors.push(format!("server_names[{index}]"), reason),
            }
        }

        let content = match (&self.root, &self.proxy_pass) {
            (Some(_), Some(_)) => {
                errors.push(
                    "proxy_pass",
                    "a vhost has either a root or a proxy_pass, not both",
                );
                None
            }
            (None, None) => {
                errors.push("root", "a vhost needs a root or a proxy_pass");
                None
            }
            (Some(root), None) => {
                let root = validate_root(root, web_root)
                    .map_err(|reason| errors.push("root", reason))
                    .ok();
                let php_socket = self.php.as_ref().and_then(|php| {
                    parse_absolute_path(&php.socket, 107)
                        .map_err(|reason| errors.push("php.socket", reason))
                        .ok()
                });
                root.map(|root| Content::Files { root, php_socket })
            }
            (None, Some(upstream)) => {
                if self.php.is_some() {
                    errors.push("php", "PHP needs a root, not a proxy_pass");
                }
                Upstream::parse(upstream)
                    .map_err(|reason| errors.push("proxy_pass", reason))
                    .ok()
                    .map(Content::Proxy)
            }
        };

        let mut served = names.clone();
        let mut name_redirects = Vec::new();
        match self.redirects.www {
            WwwRedirect::None => {}
            WwwRedirect::ToWww | WwwRedirect::FromWww => {
                let to_www = self.redirects.www == WwwRedirect::ToWww;
                for name in names.iter().filter(|name| !name.is_wildcard()) {
                    let is_www = name.as_str().starts_with("www.");
                    if is_www == to_www {
                        continue;
                    }
                    let target = if to_www {
                        format!("www.{}", name.as_str())
                    } else {
                        name.as_str()["www.".len()..].to_string()
                    };
                    match names.iter().find(|candidate| candidate.as_str() == target) {
                        Some(target) => {
                            name_redirects.push(NameRedirect {
                                from: name.clone(),
                                to: target.clone(),
                            });
                            served.retain(|candidate| candidate != name);
                        }
                        None => errors.push(
                            "redirects.www",
                            format!("redirecting {name} needs {target} in server_names too"),
                        ),
                    }
                }
            }
        }
        if !names.is_empty() && served.is_empty() {
            errors.push("server_names", "every name would only redirect");
        }

        if let Some(bytes) = self.limits.max_body_bytes {
            if bytes > MAX_BODY_BYTES {
                errors.push(
                    "limits.max_body_bytes",
                    format!("may be at most {MAX_BODY_BYTES}"),
                );
            }
        }
        if let Some(seconds) = self.limits.upstream_timeout_seconds {
            if seconds == 0 || seconds > MAX_UPSTREAM_TIMEOUT_SECONDS {
                errors.push(
                    "limits.upstream_timeout_seconds",
                    format!("must be between 1 and {MAX_UPSTREAM_TIMEOUT_SECONDS}"),
                );
            }
        }

        let Some(content) = content else {
            return Err(errors);
        };
        errors.into_result(ValidVhost {
            names: served,
            name_redirects,
            content,
            https_redirect: self.redirects.https,
            logs: self.logs.clone(),
            limits: self.limits.clone(),
        })
    }
}

fn validate_root(input: &str, web_root: &Path) -> Result<PathBuf, String> {
    if input.is_empty() {
        return Err("is empty".into());
    }
    parse_path_components(input, 1024)?;
    let path = Path::new(input);
    if path.is_absolute() {
        if path.starts_with(web_root) {
            Ok(path.to_path_buf())
        } else {
            Err(format!(
                "must be inside the web root {}",
                web_root.display()
            ))
        }
    } else {
        Ok(web_root.join(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(names: &[&str]) -> VhostSpec {
        VhostSpec {
            server_names: names.iter().map(|name| name.to_string()).collect(),
            root: Some("site".into()),
            proxy_pass: None,
            php: None,
            redirects: Redirects::default(),
            logs: Logs::default(),
            limits: Limits::default(),
        }
    }

    #[test]
    fn server_name_cases() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("example.com", Ok("example.com")),
            ("Example.COM", Ok("example.com")),
            ("*.example.com", Ok("*.example.com")),
            ("localhost", Ok("localhost")),
            ("xn--bcher-kva.example", Ok("xn--bcher-kva.example")),
            ("", Err("is empty")),
            ("a;b.com", Err("character ';'")),
            ("a.com;\nreturn 200", Err("character")),
            ("a.com\n", Err("character '\\n'")),
            ("a b.com", Err("character ' '")),
            ("{a}.com", Err("character '{'")),
            ("a}.com", Err("character '}'")),
            ("$host.com", Err("character '$'")),
            ("a\"b.com", Err("character '\"'")),
            ("..", Err("empty label")),
            ("a..b", Err("empty label")),
            (".a.com", Err("empty label")),
            ("a.com.", Err("empty label")),
            ("../etc", Err("empty label")),
            ("a/b.com", Err("character '/'")),
            ("www.*.com", Err("wildcard")),
            ("*example.com", Err("wildcard")),
            ("*.com", Err("two labels")),
            ("-a.com", Err("starts or ends with '-'")),
            ("generation.hostplane.invalid", Err("reserved")),
            ("~^(?<x>.+)$", Err("character")),
        ];
        for (input, expected) in cases {
            match (ServerName::parse(input), expected) {
                (Ok(name), Ok(expected)) => assert_eq!(name.as_str(), *expected, "{input:?}"),
                (Err(reason), Err(expected)) => {
                    assert!(reason.contains(expected), "{input:?}: {reason}")
                }
                (result, expected) => panic!("{input:?}: got {result:?}, expected {expected:?}"),
            }
        }
        assert!(ServerName::parse(&format!("{}.com", "a".repeat(64))).is_err());
        assert!(ServerName::parse(&"a.".repeat(127)).is_err());
    }

    #[test]
    fn spec_refusals_name_their_fields() {
        let web_root = Path::new("/srv/www");
        let cases: Vec<(&str, VhostSpec, &[&str])> = vec![
            (
                "hostile names",
                spec(&["ok.example", "a;b", "x\ny", "{}", ".."]),
                &[
                    "server_names[1]",
                    "server_names[2]",
                    "server_names[3]",
                    "server_names[4]",
                ],
            ),
            ("no names", spec(&[]), &["server_names"]),
            (
                "duplicate",
                spec(&["a.example", "A.example"]),
                &["server_names[1]"],
            ),
            (
                "root escapes",
                VhostSpec {
                    root: Some("../etc".into()),
                    ..spec(&["a.example"])
                },
                &["root"],
            ),
            (
                "root outside",
                VhostSpec {
                    root: Some("/etc/nginx".into()),
                    ..spec(&["a.example"])
                },
                &["root"],
            ),
            (
                "root with quote",
                VhostSpec {
                    root: Some("a\"; include /etc/x".into()),
                    ..spec(&["a.example"])
                },
                &["root"],
            ),
            (
                "root with variable",
                VhostSpec {
                    root: Some("$document_root".into()),
                    ..spec(&["a.example"])
                },
                &["root"],
            ),
            (
                "both root and proxy",
                VhostSpec {
                    proxy_pass: Some("http://127.0.0.1:1".into()),
                    ..spec(&["a.example"])
                },
                &["proxy_pass"],
            ),
            (
                "neither",
                VhostSpec {
                    root: None,
                    ..spec(&["a.example"])
                },
                &["root"],
            ),
            (
                "proxy scheme",
                VhostSpec {
                    root: None,
                    proxy_pass: Some("ftp://x".into()),
                    ..spec(&["a.example"])
                },
                &["proxy_pass"],
            ),
            (
                "proxy injection",
                VhostSpec {
                    root: None,
                    proxy_pass: Some("http://a.example; return 200".into()),
                    ..spec(&["a.example"])
                },
                &["proxy_pass"],
            ),
            (
                "proxy port",
                VhostSpec {
                    root: None,
                    proxy_pass: Some("http://a.example:99999".into()),
                    ..spec(&["a.example"])
                },
                &["proxy_pass"],
            ),
            (
                "proxy path",
                VhostSpec {
                    root: None,
                    proxy_pass: Some("http://a.example/x y".into()),
                    ..spec(&["a.example"])
                },
                &["proxy_pass"],
            ),
            (
                "php relative",
                VhostSpec {
                    php: Some(PhpSpec {
                        socket: "php.sock".into(),
                    }),
                    ..spec(&["a.example"])
                },
                &["php.socket"],
            ),
            (
                "php traversal",
                VhostSpec {
                    php: Some(PhpSpec {
                        socket: "/run/../etc/x".into(),
                    }),
                    ..spec(&["a.example"])
                },
                &["php.socket"],
            ),
            (
                "www without target",
                VhostSpec {
                    redirects: Redirects {
                        www: WwwRedirect::ToWww,
                        https: false,
                    },
                    ..spec(&["a.example"])
                },
                &["redirects.www"],
            ),
            (
                "timeout",
                VhostSpec {
                    limits: Limits {
                        max_body_bytes: None,
                        upstream_timeout_seconds: Some(0),
                    },
                    ..spec(&["a.example"])
                },
                &["limits.upstream_timeout_seconds"],
            ),
        ];
        for (name, spec, fields) in cases {
            let error = spec.validate(web_root).expect_err(name);
            for field in fields {
                assert!(error.has(field), "{name}: {field} not refused in {error}");
            }
        }
    }

    #[test]
    fn administrators_block_cases() {
        let cases = [
            ("add_header X-A b always;", true),
            ("location /x { return 204; }", true),
            ("}", false),
            ("} server { listen 1; ", false),
            ("location /x { return 204;", false),
            ("return 200 \"\u{7}\";", false),
        ];
        for (extra, valid) in cases {
            assert_eq!(check_extra(extra).is_ok(), valid, "{extra:?}");
        }
        assert!(check_extra(&"#".repeat(MAX_EXTRA_BYTES + 1)).is_err());
    }

    #[test]
    fn accepted_specs_normalise() {
        let web_root = Path::new("/srv/www");
        let valid = VhostSpec {
            redirects: Redirects {
                www: WwwRedirect::FromWww,
                https: true,
            },
            ..spec(&["a.example", "www.a.example"])
        }
        .validate(web_root)
        .unwrap();
        assert_eq!(valid.names, vec![ServerName::parse("a.example").unwrap()]);
        assert_eq!(valid.name_redirects.len(), 1);
        assert_eq!(
            valid.content,
            Content::Files {
                root: PathBuf::from("/srv/www/site"),
                php_socket: None
            }
        );
        let absolute = VhostSpec {
            root: Some("/srv/www/b/public".into()),
            ..spec(&["b.example"])
        }
        .validate(web_root)
        .unwrap();
        assert_eq!(
            absolute.content,
            Content::Files {
                root: PathBuf::from("/srv/www/b/public"),
                php_socket: None
            }
        );
        for (input, url) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            (
                "https://backend.internal/app/",
                "https://backend.internal/app/",
            ),
            ("http://[::1]:3000", "http://[::1]:3000"),
        ] {
            assert_eq!(Upstream::parse(input).unwrap().to_url(), url);
        }
        let json =
            r#"{"server_names":["a.example"],"proxy_pass":"http://127.0.0.1:1","unknown":1}"#;
        assert!(
            serde_json::from_str::<VhostSpec>(json).is_err(),
            "unknown fields are refused"
        );
    }
}
