//! ACME end to end against pebble (a real RFC 8555 server): the test plays the coordinator's
//! ACME client (instant-acme), the agent answers HTTP-01 through its private nginx and deploys the
//! issued certificate, which an HTTPS client then verifies against pebble's root.

mod vhosts_support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use agent::certs::{CertificateSource, CertificateUpload};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::process::{Child, Command};
use vhosts_support::{Site, free_port, static_spec};

/// Whether the pebble programs are here; on CI their absence is a failure, elsewhere a loud skip.
fn pebble_available() -> bool {
    let found = ["pebble", "pebble-challtestsrv"].iter().all(|program| {
        std::process::Command::new(program)
            .arg("-help")
            .output()
            .is_ok()
    });
    if !found {
        let message = "pebble is not installed (apt-get install -y pebble); this test needs the real ACME server";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{message}");
        }
        eprintln!("SKIPPED: {message}");
    }
    found
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

struct Pebble {
    _dns: Child,
    _server: Child,
    directory: String,
    management: String,
    listener_root: std::path::PathBuf,
}

async fn start_pebble(dir: &Path, http_port: u16) -> Pebble {
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
        _server: server,
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

fn client_trusting(
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

#[tokio::test]
async fn certificate_issued_by_pebble_over_http01_is_deployed_and_served() {
    if !pebble_available() {
        return;
    }
    let Some(site) = Site::start().await else {
        return;
    };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let work = tempfile::tempdir().unwrap();
    let pebble = start_pebble(work.path(), site.http_address().port()).await;
    let host = "shop.example.com";
    site.document_root("shop", "shop\n");
    site.ops
        .put_vhost("shop", static_spec(&[host], "shop"))
        .await
        .unwrap();

    // The coordinator's side: an account, an order, and the HTTP-01 answers handed to the agent.
    let (account, _credentials) = Account::builder_with_root(&pebble.listener_root)
        .unwrap()
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            pebble.directory.clone(),
            None,
        )
        .await
        .unwrap();
    let identifiers = [Identifier::Dns(host.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .unwrap();
    let mut tokens = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.unwrap();
        if authorization.status != AuthorizationStatus::Pending {
            continue;
        }
        let mut challenge = authorization
            .challenge(ChallengeType::Http01)
            .expect("pebble offers HTTP-01");
        let token = challenge.token.clone();
        site.ops
            .put_challenge("shop", &token, challenge.key_authorization().as_str())
            .unwrap();
        tokens.push(token);
        challenge.set_ready().await.unwrap();
    }
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(100))
        .timeout(Duration::from_secs(30));
    let status = order.poll_ready(&retries).await.unwrap();
    assert_eq!(
        status,
        OrderStatus::Ready,
        "pebble validated the challenge through nginx"
    );
    let private_key = order.finalize().await.unwrap();
    let chain = order.poll_certificate(&retries).await.unwrap();
    for token in &tokens {
        site.ops.remove_challenge("shop", token).unwrap();
    }

    // The agent's side: check and deploy the issued certificate.
    let upload = CertificateUpload {
        certificate: chain,
        private_key: protocol::Secret::new(private_key),
        chain: None,
        redirect_http: Some(true),
    };
    let status = site
        .ops
        .deploy_certificate("shop", upload, CertificateSource::Acme)
        .await
        .unwrap();
    let info = status.certificate.unwrap();
    assert_eq!(
        (info.source, info.names.clone()),
        (CertificateSource::Acme, vec![host.to_string()])
    );
    assert!(
        info.issuer.to_lowercase().contains("pebble"),
        "{}",
        info.issuer
    );

    // An HTTPS client that trusts only pebble's issuing root accepts what nginx serves.
    let management = client_trusting(&std::fs::read(&pebble.listener_root).unwrap(), None);
    let root = management
        .get(format!("{}/roots/0", pebble.management))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let client = client_trusting(root.as_bytes(), Some((host, site.https_address())));
    let url = format!("https://{host}:{}/", site.https_address().port());
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "shop\n");
}
