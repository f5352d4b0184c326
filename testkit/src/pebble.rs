//! pebble, a real RFC 8555 server, on loopback for a test: its own TLS certificate (pebble ships
//! none), its DNS test server answering 127.0.0.1 for every name, and HTTP-01 validation against
//! the port the test's nginx listens on. Killed when the guard is dropped.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::process::{Child, Command};

use crate::net::free_port;

/// Whether the pebble programs are here; if not, [`crate::gate::skip`] says so.
pub fn pebble_available() -> bool {
    let found = ["pebble", "pebble-challtestsrv"].iter().all(|program| {
        std::process::Command::new(program)
            .arg("-help")
            .output()
            .is_ok()
    });
    found
        || crate::gate::skip(
            "pebble is not installed (apt-get install -y pebble); this test needs the real ACME server",
        )
}

/// pebble's own TLS certificate (pebble ships none): a root and a leaf for 127.0.0.1.
fn pebble_tls(dir: &Path) -> std::path::PathBuf {
    let mut root_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params
        .distinguished_name
        .push(DnType::CommonName, "pebble listener test root");
    let root = CertifiedIssuer::self_signed(root_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &root)
        .unwrap();
    std::fs::write(dir.join("pebble.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("listener-root.pem"), root.pem()).unwrap();
    dir.join("listener-root.pem")
}

pub struct Pebble {
    _dns: Child,
    server: Child,
    /// The ACME directory URL.
    pub directory: String,
    /// The management interface (issuing roots at `/roots/0`).
    pub management: String,
    /// The root of pebble's own TLS certificate, for ACME clients.
    pub listener_root: std::path::PathBuf,
}

pub async fn start_pebble(dir: &Path, http_port: u16) -> Pebble {
    let listener_root = pebble_tls(dir);
    let (acme_port, management_port, dns_port, challenge_management_port) =
        (free_port(), free_port(), free_port(), free_port());
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": dir.join("pebble.pem"),
            "privateKey": dir.join("pebble.key"),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }
    });
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let dns = Command::new("pebble-challtestsrv")
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
        .args([
            "-management",
            &format!("127.0.0.1:{challenge_management_port}"),
        ])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let server = Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pebble = Pebble {
        _dns: dns,
        server,
        directory: format!("https://127.0.0.1:{acme_port}/dir"),
        management: format!("https://127.0.0.1:{management_port}"),
        listener_root,
    };
    // Ready when the directory answers over TLS (bounded).
    let client = client_trusting(&std::fs::read(&pebble.listener_root).unwrap(), None);
    for attempt in 0..100 {
        if client
            .get(&pebble.directory)
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
        {
            break;
        }
        assert!(attempt < 99, "pebble did not come up within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pebble
}

pub fn client_trusting(
    root_pem: &[u8],
    resolve: Option<(&str, std::net::SocketAddr)>,
) -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(root_pem).unwrap()])
        .no_proxy()
        .timeout(Duration::from_secs(5));
    if let Some((host, address)) = resolve {
        builder = builder.resolve(host, address);
    }
    builder.build().unwrap()
}

impl Pebble {
    /// Stops the ACME server (its DNS server stays), so that what follows cannot reach it.
    pub async fn stop(&mut self) {
        let _ = self.server.kill().await;
    }

    /// The root that signs the certificates pebble issues (it changes with every start).
    pub async fn issuing_root(&self) -> String {
        let client = client_trusting(&std::fs::read(&self.listener_root).unwrap(), None);
        client
            .get(format!("{}/roots/0", self.management))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}
