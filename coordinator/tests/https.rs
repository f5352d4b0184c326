//! The API over HTTPS when the coordinator is given a certificate and key.

use testkit::coordinator::TestServer;

#[tokio::test]
async fn the_api_answers_over_https_with_the_given_certificate() {
    coordinator::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let certificate = params.self_signed(&key).unwrap();
    let certificate_path = dir.path().join("api.crt");
    let key_path = dir.path().join("api.key");
    std::fs::write(&certificate_path, certificate.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let server = TestServer::start_with(|config| {
        config.tls = Some(coordinator::config::TlsFiles {
            certificate: certificate_path.clone(),
            key: key_path.clone(),
        });
    })
    .await;
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let trusted = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certificate.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let answer = trusted
        .get(format!("{}/api/v1/user", server.url))
        .header("x-api-key", &server.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let untrusted = reqwest::Client::new()
        .get(format!("{}/healthz", server.url))
        .send()
        .await;
    assert!(
        untrusted.is_err(),
        "a client that does not trust the certificate is refused"
    );
    let plain = reqwest::Client::new()
        .get(format!(
            "{}/healthz",
            server.url.replace("https://", "http://")
        ))
        .send()
        .await;
    assert!(
        plain
            .map(|response| !response.status().is_success())
            .unwrap_or(true)
    );
}

#[tokio::test]
async fn a_bad_certificate_file_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = coordinator::config::Config::for_tests(dir.path().join("data"));
    std::fs::write(dir.path().join("bad.crt"), "not a certificate").unwrap();
    config.tls = Some(coordinator::config::TlsFiles {
        certificate: dir.path().join("bad.crt"),
        key: dir.path().join("missing.key"),
    });
    let error = coordinator::server::start(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("bad.crt"), "{error}");
}
