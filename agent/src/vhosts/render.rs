//! Rendering nginx configuration text from validated, typed vhosts and the layout: pure functions
//! of their inputs, so every output is tested as data.
//!
//! Invariant: only validated values and the layout reach the text, each quoted where nginx takes a
//! string; the administrator's extra block is the single verbatim exception and is marked as such.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::vhosts::layout::WebLayout;
use crate::vhosts::spec::{Content, ValidVhost, VhostId};
use protocol::web::cache::CacheSettings;

/// The nginx cache key of every vhost cache; `cache::cache_file` computes the same key.
pub const CACHE_KEY: &str = "$scheme://$host$request_uri";

/// A bypass path prefix as an anchored PCRE pattern; the only characters of a valid path that
/// PCRE treats specially (`.` and `+`) are put in character classes, so no backslash is needed.
pub fn bypass_pattern(path: &str) -> String {
    let mut pattern = String::from("^");
    for character in path.chars() {
        if matches!(character, '.' | '+') {
            pattern.push('[');
            pattern.push(character);
            pattern.push(']');
        } else {
            pattern.push(character);
        }
    }
    pattern
}

/// The host name of the agent's own generation probe.
pub const PROBE_HOST: &str = "generation.hostplane.invalid";
/// The path of the agent's own generation probe.
pub const PROBE_PATH: &str = "/generation";
/// Where ACME HTTP-01 answers are served.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// Where every vhost answers the agent's check itself: the generation follows the prefix.
pub const VHOST_PROBE_PREFIX: &str = "/.well-known/hostplane-probe/";
/// The nginx variable the probe server's map sets: the generation for the agent's request of
/// the live generation's probe path, `refused` for any other request of a probe path.
const VHOST_PROBE_VARIABLE: &str = "$hostplane_probe";

/// Quotes a value for the nginx configuration parser.
pub fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for character in value.chars() {
        if matches!(character, '"' | '\\') {
            quoted.push('\\');
        }
        quoted.push(character);
    }
    quoted.push('"');
    quoted
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

/// Text with nginx-style indentation.
#[derive(Default)]
struct Text {
    text: String,
    depth: usize,
}

impl Text {
    fn line(&mut self, line: &str) {
        for _ in 0..self.depth {
            self.text.push_str("    ");
        }
        self.text.push_str(line);
        self.text.push('\n');
    }

    fn open(&mut self, head: &str) {
        self.line(&format!("{head} {{"));
        self.depth += 1;
    }

    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        self.line("}");
    }

    fn blank(&mut self) {
        self.text.push('\n');
    }
}

/// `listen` lines for an address; an unspecified IPv6 address listens on IPv4 too.
fn listen_lines(text: &mut Text, address: SocketAddr, parameters: &str) {
    let suffix = if parameters.is_empty() {
        String::new()
    } else {
        format!(" {parameters}")
    };
    match address.ip() {
        IpAddr::V6(ip) if ip.is_unspecified() => {
            text.line(&format!("listen {}{suffix};", address.port()));
            text.line(&format!("listen [::]:{}{suffix};", address.port()));
        }
        IpAddr::V4(ip) if ip.is_unspecified() => {
            text.line(&format!("listen {}{suffix};", address.port()))
        }
        _ => text.line(&format!("listen {address}{suffix};")),
    }
}

/// Renders the main configuration, including every `*.conf` file of `include_dir`.
pub fn render_main_config(layout: &WebLayout, include_dir: &Path) -> String {
    let mut text = Text::default();
    text.line("# Written by the hostplane agent from its layout; it is replaced on every change.");
    if let Some(user) = &layout.worker_user {
        text.line(&format!("user {};", quote(user)));
    }
    match layout.worker_processes {
        Some(count) => text.line(&format!("worker_processes {count};")),
        None => text.line("worker_processes auto;"),
    }
    text.line(&format!("pid {};", quote_path(&layout.pid_file())));
    text.line(&format!(
        "error_log {} warn;",
        quote_path(&layout.main_error_log())
    ));
    text.open("events");
    text.line("worker_connections 1024;");
    text.close();
    text.open("http");
    if let Some(mime_types) = &layout.mime_types {
        text.line(&format!("include {};", quote_path(mime_types)));
    }
    text.line("default_type application/octet-stream;");
    text.line("sendfile on;");
    // Headers and a file's first bytes leave in one segment rather than waiting on the client's
    // delayed acknowledgement (about 40 ms) when the connection is not kept alive.
    text.line("tcp_nopush on;");
    text.line("server_tokens off;");
    text.line("server_names_hash_bucket_size 128;");
    // Room for thousands of names without nginx warning on every test and reload.
    text.line("server_names_hash_max_size 16384;");
    for (directive, folder) in [
        ("client_body_temp_path", "client_body"),
        ("proxy_temp_path", "proxy"),
        ("fastcgi_temp_path", "fastcgi"),
        ("uwsgi_temp_path", "uwsgi"),
        ("scgi_temp_path", "scgi"),
    ] {
        text.line(&format!(
            "{directive} {};",
            quote_path(&layout.runtime_dir.join(folder))
        ));
    }
    text.line(&format!(
        "access_log {};",
        quote_path(&layout.log_dir.join("access.log"))
    ));
    text.open("server");
    listen_lines(&mut text, layout.http_listen, "default_server");
    text.line("server_name _;");
    text.line("access_log off;");
    text.line("return 444;");
    text.close();
    text.line(&format!(
        "include {};",
        quote_path(&include_dir.join("*.conf"))
    ));
    text.close();
    text.text
}

/// The path the agent requests from a vhost to check that `generation` serves it.
pub fn vhost_probe_path(generation: u64) -> String {
    format!("{VHOST_PROBE_PREFIX}{generation}")
}

/// What a vhost answers to the agent's probe request, with `generation` as nginx fills it in.
pub fn vhost_probe_answer(generation: &str, id: &VhostId) -> String {
    format!("hostplane-probe generation={generation} vhost={id}")
}

/// Renders the agent's probe server, which answers with the generation number so the agent can
/// tell when a reload has taken effect, and the map that lets each vhost answer the agent's
/// probe of this generation (see [`render_vhost_probe`]).
pub fn render_probe_server(layout: &WebLayout, generation: u64) -> String {
    let mut text = Text::default();
    text.line("# The hostplane agent's probe: tells which configuration generation is serving.");
    text.line("# A vhost answers its probe path of this generation only to the agent's address.");
    text.open(&format!("map \"$remote_addr $uri\" {VHOST_PROBE_VARIABLE}"));
    text.line("default \"\";");
    text.line(&format!(
        "{} {};",
        quote(&format!(
            "{} {}",
            layout.probe_source(),
            vhost_probe_path(generation)
        )),
        quote(&generation.to_string())
    ));
    text.line(&format!(
        "{} refused;",
        quote(&format!(
            "~^[^ ]+ {}",
            VHOST_PROBE_PREFIX.replace('.', "[.]")
        ))
    ));
    text.close();
    text.open("server");
    listen_lines(&mut text, layout.http_listen, "");
    text.line(&format!("server_name {PROBE_HOST};"));
    text.line("access_log off;");
    text.open(&format!("location = {PROBE_PATH}"));
    text.line("default_type text/plain;");
    text.line(&format!("return 200 \"{generation}\";"));
    text.close();
    text.open("location /");
    text.line("return 404;");
    text.close();
    text.close();
    text.text
}

/// The lines every server block of a vhost starts with: the agent's probe is answered by nginx
/// itself, before the vhost's content and the administrator's block (whose server-level
/// `return` or `rewrite` would otherwise hide it), so a change is checked without asking the
/// application behind the vhost.
fn render_vhost_probe(text: &mut Text, id: &VhostId) {
    text.open(&format!("if ({VHOST_PROBE_VARIABLE} = refused)"));
    text.line("return 403;");
    text.close();
    text.open(&format!("if ({VHOST_PROBE_VARIABLE})"));
    text.line(&format!(
        "return 200 {};",
        quote(&vhost_probe_answer(VHOST_PROBE_VARIABLE, id))
    ));
    text.close();
}

/// The certificate files nginx serves for a vhost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Leaf and chain.
    pub certificate: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// Everything one vhost file is rendered from.
#[derive(Debug, Clone)]
pub struct VhostInput<'a> {
    /// The vhost's identifier.
    pub id: &'a VhostId,
    /// The validated vhost.
    pub vhost: &'a ValidVhost,
    /// The certificate, when TLS is on.
    pub tls: Option<TlsFiles>,
    /// The validated cache settings, when the cache is on.
    pub cache: Option<&'a CacheSettings>,
    /// The administrator's verbatim block, inserted at the end of the main server block.
    pub extra: Option<&'a str>,
}

/// The nginx cache zone of a vhost.
pub fn cache_zone(id: &VhostId) -> String {
    format!("hp_{}", id.as_symbol())
}

/// The directory of a vhost's cache.
pub fn cache_path(layout: &WebLayout, id: &VhostId) -> PathBuf {
    layout.cache_dir.join(id.as_str())
}

/// The directory nginx serves a vhost's ACME answers from (as its `root`).
pub fn challenge_root(layout: &WebLayout, id: &VhostId) -> PathBuf {
    layout.challenges_dir().join(id.as_str())
}

fn port_suffix(layout: &WebLayout) -> &'static str {
    if layout.http_listen.port() == 80 && layout.https_listen.port() == 443 {
        ""
    } else {
        ":$server_port"
    }
}

/// Renders one vhost's file: its cache path, redirect servers and main server.
pub fn render_vhost(input: &VhostInput<'_>, layout: &WebLayout) -> String {
    let id = input.id;
    let vhost = input.vhost;
    let mut text = Text::default();
    text.line(&format!("# Vhost {id}: written by the hostplane agent from typed settings; change it through the agent."));

    let cache_kind = match vhost.content {
        Content::Proxy(_) => "proxy",
        Content::Files { .. } => "fastcgi",
    };
    let bypass_variable = format!("$hp_{}_bypass", id.as_symbol());
    if let Some(cache) = input.cache {
        text.line(&format!(
            "{cache_kind}_cache_path {} levels=1:2 keys_zone={}:10m max_size={}m inactive={}s use_temp_path=off;",
            quote_path(&cache_path(layout, id)),
            cache_zone(id),
            cache.max_size_megabytes,
            cache.inactive_seconds(),
        ));
        if !cache.bypass.paths.is_empty() {
            text.open(&format!("map $request_uri {bypass_variable}"));
            text.line("default 0;");
            for path in &cache.bypass.paths {
                text.line(&format!(
                    "{} 1;",
                    quote(&format!("~{}", bypass_pattern(path)))
                ));
            }
            text.close();
        }
    }

    let tls_redirect = input.tls.is_some() && vhost.https_redirect;
    let preamble = |text: &mut Text| {
        render_vhost_probe(text, id);
        if vhost.logs.access {
            text.line(&format!(
                "access_log {};",
                quote_path(&layout.log_dir.join(format!("{id}.access.log")))
            ));
        } else {
            text.line("access_log off;");
        }
        text.line(&format!(
            "error_log {} {};",
            quote_path(&layout.log_dir.join(format!("{id}.error.log"))),
            vhost.logs.error_level.as_nginx()
        ));
    };
    let challenge = |text: &mut Text| {
        text.open(&format!("location ^~ {CHALLENGE_PREFIX}"));
        text.line(&format!(
            "root {};",
            quote_path(&challenge_root(layout, id))
        ));
        text.line("default_type text/plain;");
        text.close();
    };
    let listens = |text: &mut Text| {
        if !tls_redirect {
            listen_lines(text, layout.http_listen, "");
        }
        if let Some(tls) = &input.tls {
            listen_lines(text, layout.https_listen, "ssl");
            text.line(&format!(
                "ssl_certificate {};",
                quote_path(&tls.certificate)
            ));
            text.line(&format!("ssl_certificate_key {};", quote_path(&tls.key)));
            text.line("ssl_protocols TLSv1.2 TLSv1.3;");
        }
    };
    let names_line = |names: &mut dyn Iterator<Item = String>| {
        format!("server_name {};", names.collect::<Vec<_>>().join(" "))
    };

    if tls_redirect {
        text.blank();
        text.open("server");
        listen_lines(&mut text, layout.http_listen, "");
        text.line(&names_line(
            &mut vhost.all_names().iter().map(ToString::to_string),
        ));
        preamble(&mut text);
        challenge(&mut text);
        text.open("location /");
        let https_port = if layout.https_listen.port() == 443 {
            String::new()
        } else {
            format!(":{}", layout.https_listen.port())
        };
        text.line(&format!(
            "return 301 https://$host{https_port}$request_uri;"
        ));
        text.close();
        text.close();
    }

    for redirect in &vhost.name_redirects {
        text.blank();
        text.open("server");
        listens(&mut text);
        text.line(&format!("server_name {};", redirect.from));
        preamble(&mut text);
        challenge(&mut text);
        text.open("location /");
        text.line(&format!(
            "return 301 $scheme://{}{}$request_uri;",
            redirect.to,
            port_suffix(layout)
        ));
        text.close();
        text.close();
    }

    text.blank();
    text.open("server");
    listens(&mut text);
    text.line(&names_line(
        &mut vhost.names.iter().map(ToString::to_string),
    ));
    preamble(&mut text);
    if let Some(bytes) = vhost.limits.max_body_bytes {
        text.line(&format!("client_max_body_size {bytes};"));
    }
    challenge(&mut text);

    let cache_lines = |text: &mut Text| {
        let Some(cache) = input.cache else {
            return;
        };
        text.line(&format!("{cache_kind}_cache {};", cache_zone(id)));
        text.line(&format!("{cache_kind}_cache_key {};", quote(CACHE_KEY)));
        text.line(&format!(
            "{cache_kind}_cache_valid 200 301 302 {}s;",
            cache.ttl_seconds
        ));
        let mut conditions = Vec::new();
        if !cache.bypass.paths.is_empty() {
            conditions.push(bypass_variable.clone());
        }
        conditions.extend(
            cache
                .bypass
                .cookies
                .iter()
                .map(|cookie| format!("$cookie_{cookie}")),
        );
        if !conditions.is_empty() {
            text.line(&format!(
                "{cache_kind}_cache_bypass {};",
                conditions.join(" ")
            ));
            text.line(&format!("{cache_kind}_no_cache {};", conditions.join(" ")));
        }
        text.line("add_header X-Cache-Status $upstream_cache_status always;");
    };

    match &vhost.content {
        Content::Files { root, php_socket } => {
            text.line(&format!("root {};", quote_path(root)));
            match php_socket {
                None => {
                    text.line("index index.html index.htm;");
                    text.open("location /");
                    text.line("try_files $uri $uri/ =404;");
                    text.close();
                }
                Some(socket) => {
                    text.line("index index.php index.html index.htm;");
                    text.open("location /");
                    text.line("try_files $uri $uri/ /index.php$is_args$args;");
                    text.close();
                    text.open("location ~ \\.php$");
                    text.line("try_files $uri =404;");
                    text.line(&format!("include {};", quote_path(&layout.fastcgi_params)));
                    text.line("fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;");
                    text.line(&format!(
                        "fastcgi_pass {};",
                        quote(&format!("unix:{}", socket.display()))
                    ));
                    if let Some(seconds) = vhost.limits.upstream_timeout_seconds {
                        text.line(&format!("fastcgi_read_timeout {seconds}s;"));
                    }
                    cache_lines(&mut text);
                    text.close();
                }
            }
        }
        Content::Proxy(upstream) => {
            text.open("location /");
            text.line(&format!("proxy_pass {};", quote(&upstream.to_url())));
            text.line("proxy_http_version 1.1;");
            text.line("proxy_set_header Host $host;");
            text.line("proxy_set_header X-Real-IP $remote_addr;");
            text.line("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;");
            text.line("proxy_set_header X-Forwarded-Proto $scheme;");
            if let Some(seconds) = vhost.limits.upstream_timeout_seconds {
                text.line(&format!("proxy_read_timeout {seconds}s;"));
            }
            cache_lines(&mut text);
            text.close();
        }
    }

    if let Some(extra) = input.extra {
        text.line("# Administrator's block: kept verbatim across changes.");
        for line in extra.lines() {
            text.line(line);
        }
        text.line("# End of the administrator's block.");
    }
    text.close();
    text.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vhosts::spec::{PhpSpec, VhostSpec, WwwRedirect};
    use protocol::web::cache::Bypass;

    fn layout() -> WebLayout {
        WebLayout::private(Path::new("/t"), 8080, 8443)
    }

    fn spec(names: &[&str]) -> VhostSpec {
        VhostSpec {
            server_names: names.iter().map(|name| name.to_string()).collect(),
            root: Some("site".into()),
            proxy_pass: None,
            php: None,
            redirects: Default::default(),
            logs: Default::default(),
            limits: Default::default(),
        }
    }

    struct Case {
        name: &'static str,
        spec: VhostSpec,
        tls: bool,
        cache: Option<CacheSettings>,
        extra: Option<&'static str>,
        present: Vec<&'static str>,
        absent: Vec<&'static str>,
    }

    #[test]
    fn vhost_snippets() {
        let cache = CacheSettings {
            ttl_seconds: 120,
            max_size_megabytes: 50,
            bypass: Bypass {
                cookies: vec!["session".into()],
                paths: vec!["/wp-admin/".into()],
            },
        };
        let cases = vec![
            Case {
                name: "static root",
                spec: spec(&["example.com"]),
                tls: false,
                cache: None,
                extra: None,
                present: vec![
                    "    listen 127.0.0.1:8080;\n",
                    "    server_name example.com;\n",
                    "    root \"/t/www/site\";\n",
                    "        try_files $uri $uri/ =404;\n",
                    "    access_log \"/t/log/site-one.access.log\";\n",
                    "    error_log \"/t/log/site-one.error.log\" error;\n",
                    "    location ^~ /.well-known/acme-challenge/ {\n        root \"/t/hostplane/acme-challenge/site-one\";\n",
                    // nginx answers the agent's probe before anything of the vhost's own.
                    "    server_name example.com;\n    if ($hostplane_probe = refused) {\n        return 403;\n    }\n    if ($hostplane_probe) {\n        return 200 \"hostplane-probe generation=$hostplane_probe vhost=site-one\";\n    }\n",
                ],
                absent: vec!["ssl", "cache", "fastcgi", "proxy_pass"],
            },
            Case {
                name: "php",
                spec: VhostSpec {
                    php: Some(PhpSpec {
                        socket: "/run/php/fpm.sock".into(),
                    }),
                    ..spec(&["example.com"])
                },
                tls: false,
                cache: Some(cache.clone()),
                extra: None,
                present: vec![
                    "fastcgi_pass \"unix:/run/php/fpm.sock\";",
                    "fastcgi_cache_path \"/t/cache/site-one\" levels=1:2 keys_zone=hp_site_one:10m max_size=50m inactive=120s use_temp_path=off;",
                    "fastcgi_cache hp_site_one;",
                    "fastcgi_cache_key \"$scheme://$host$request_uri\";",
                    "fastcgi_cache_bypass $hp_site_one_bypass $cookie_session;",
                    "\"~^/wp-admin/\" 1;",
                    "add_header X-Cache-Status $upstream_cache_status always;",
                ],
                absent: vec!["proxy_"],
            },
            Case {
                name: "proxy with cache and limits",
                spec: VhostSpec {
                    root: None,
                    proxy_pass: Some("http://[::1]:3000/app".into()),
                    limits: crate::vhosts::spec::Limits {
                        max_body_bytes: Some(1000),
                        upstream_timeout_seconds: Some(9),
                    },
                    ..spec(&["example.com"])
                },
                tls: false,
                cache: Some(CacheSettings {
                    bypass: Bypass::default(),
                    ..cache.clone()
                }),
                extra: None,
                present: vec![
                    "proxy_pass \"http://[::1]:3000/app\";",
                    "proxy_cache hp_site_one;",
                    "proxy_read_timeout 9s;",
                    "client_max_body_size 1000;",
                ],
                absent: vec!["map ", "_cache_bypass", "\n    root \""],
            },
            Case {
                name: "tls with https redirect and www",
                spec: VhostSpec {
                    redirects: crate::vhosts::spec::Redirects {
                        www: WwwRedirect::ToWww,
                        https: true,
                    },
                    ..spec(&["example.com", "www.example.com"])
                },
                tls: true,
                cache: None,
                extra: None,
                present: vec![
                    "    listen 127.0.0.1:8443 ssl;\n",
                    "ssl_certificate \"/t/tls/fullchain.pem\";",
                    "ssl_certificate_key \"/t/tls/privkey.pem\";",
                    "return 301 https://$host:8443$request_uri;",
                    "server_name www.example.com example.com;",
                    "server_name example.com;\n",
                    "return 301 $scheme://www.example.com:$server_port$request_uri;",
                    "server_name www.example.com;\n",
                ],
                absent: vec![],
            },
            Case {
                name: "tls without redirect keeps http",
                spec: spec(&["example.com"]),
                tls: true,
                cache: None,
                extra: None,
                present: vec![
                    "    listen 127.0.0.1:8080;\n",
                    "    listen 127.0.0.1:8443 ssl;\n",
                ],
                absent: vec!["return 301"],
            },
            Case {
                name: "administrator's block",
                spec: spec(&["example.com"]),
                tls: false,
                cache: None,
                extra: Some("add_header X-Admin yes;"),
                present: vec![
                    "    add_header X-Admin yes;\n    # End of the administrator's block.\n}\n",
                ],
                absent: vec![],
            },
        ];
        let layout = layout();
        let id = VhostId::parse("site-one").unwrap();
        for case in cases {
            let vhost = case.spec.validate(&layout.web_root).unwrap();
            let input = VhostInput {
                id: &id,
                vhost: &vhost,
                tls: case.tls.then(|| TlsFiles {
                    certificate: PathBuf::from("/t/tls/fullchain.pem"),
                    key: PathBuf::from("/t/tls/privkey.pem"),
                }),
                cache: case.cache.as_ref(),
                extra: case.extra,
            };
            let text = render_vhost(&input, &layout);
            for snippet in case.present {
                assert!(
                    text.contains(snippet),
                    "{}: missing {snippet:?} in\n{text}",
                    case.name
                );
            }
            for snippet in case.absent {
                assert!(
                    !text.contains(snippet),
                    "{}: unexpected {snippet:?} in\n{text}",
                    case.name
                );
            }
            assert_eq!(
                text.matches('{').count(),
                text.matches('}').count(),
                "{}: braces",
                case.name
            );
            assert_eq!(
                text.matches("if ($hostplane_probe = refused)").count(),
                text.matches("\n    server_name ").count(),
                "{}: every server block answers the probe",
                case.name
            );
        }
    }

    #[test]
    fn quoting_cases() {
        for (input, expected) in [
            ("a", "\"a\""),
            ("a\"b", "\"a\\\"b\""),
            ("a\\b", "\"a\\\\b\""),
            ("", "\"\""),
        ] {
            assert_eq!(quote(input), expected);
        }
    }

    #[test]
    fn main_config_includes_the_given_directory_and_listens_everywhere_for_unspecified() {
        let mut layout = WebLayout::debian();
        layout.mime_types = None;
        let text = render_main_config(&layout, Path::new("/x/generations/7"));
        for snippet in [
            "include \"/x/generations/7/*.conf\";",
            "listen 80 default_server;",
            "listen [::]:80 default_server;",
            "user \"www-data\";",
            // The pid file Debian's nginx.service waits for, temporary files on disk.
            "pid \"/run/nginx.pid\";",
            "client_body_temp_path \"/var/lib/nginx/hostplane/client_body\";",
        ] {
            assert!(text.contains(snippet), "missing {snippet:?} in\n{text}");
        }
        let probe = render_probe_server(&layout, 42);
        for snippet in [
            "return 200 \"42\";",
            // The probe of this generation, from the agent's address only; any other is refused.
            "map \"$remote_addr $uri\" $hostplane_probe {\n    default \"\";\n    \"127.0.0.1 /.well-known/hostplane-probe/42\" \"42\";\n    \"~^[^ ]+ /[.]well-known/hostplane-probe/\" refused;\n}\n",
        ] {
            assert!(probe.contains(snippet), "missing {snippet:?} in\n{probe}");
        }
        let mut specific = WebLayout::private(Path::new("/t"), 8080, 8443);
        specific.http_listen = "127.0.0.2:8080".parse().unwrap();
        assert!(
            render_probe_server(&specific, 7)
                .contains("\"127.0.0.2 /.well-known/hostplane-probe/7\" \"7\";"),
            "the probe is answered to the address the agent binds"
        );
    }
}
