//! Certificates on a real, private nginx: an uploaded certificate is served and verified by an
//! HTTPS client that trusts only the test CA; bad certificates are refused and the working one
//! stays; ACME HTTP-01 answers are served; removal turns TLS off.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use agent::certs::{CertificateSource, CertificateUpload};
use agent::vhosts::WebError;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use testkit::vhosts::{Site, static_spec};
use time::OffsetDateTime;

struct Pki {
    root: CertifiedIssuer<'static, KeyPair>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
}

fn authority(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params
}

fn pki() -> Pki {
    let root = CertifiedIssuer::self_signed(
        authority("Hostplane Test Root"),
        KeyPair::generate().unwrap(),
    )
    .unwrap();
    let intermediate = CertifiedIssuer::signed_by(
        authority("Hostplane Test Intermediate"),
        KeyPair::generate().unwrap(),
        &root,
    )
    .unwrap();
    Pki { root, intermediate }
}

/// A leaf for the names, valid from `days_from` to `days_to` days around now: (certificate, key).
fn leaf(pki: &Pki, names: &[&str], days_from: i64, days_to: i64) -> (String, KeyPair) {
    let mut params = CertificateParams::new(
        names
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let now = OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(days_from);
    params.not_after = now + time::Duration::days(days_to);
    let key = KeyPair::generate().unwrap();
    let certificate = params.signed_by(&key, &pki.intermediate).unwrap();
    (certificate.pem(), key)
}

fn upload(
    certificate: &str,
    key: &KeyPair,
    chain: Option<String>,
    redirect_http: Option<bool>,
) -> CertificateUpload {
    CertificateUpload {
        certificate: certificate.to_string(),
        private_key: protocol::Secret::new(key.serialize_pem()),
        chain,
        redirect_http,
    }
}

fn https_client(pki: &Pki, site: &Site, hosts: &[&str]) -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let root = reqwest::Certificate::from_pem(pki.root.pem().as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([root])
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5));
    for host in hosts {
        builder = builder.resolve(host, site.https_address());
    }
    builder.build().unwrap()
}

async fn https_body(client: &reqwest::Client, site: &Site, host: &str) -> Result<String, String> {
    let url = format!("https://{host}:{}/", site.https_address().port());
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|error| format!("{error:?}"))?;
    let status = response.status();
    let body = response.text().await.map_err(|error| error.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("status {status}"))
    }
}

#[tokio::test]
async fn uploaded_certificate_is_served_redirected_and_removed() {
    let Some(site) = Site::start().await else {
        return;
    };
    let pki = pki();
    site.document_root("a", "site a\n");
    site.ops
        .put_vhost("a", static_spec(&["a.example", "www.a.example"], "a"))
        .await
        .unwrap();

    let (certificate, key) = leaf(&pki, &["a.example", "www.a.example"], -1, 30);
    let status = site
        .ops
        .deploy_certificate(
            "a",
            upload(&certificate, &key, Some(pki.intermediate.pem()), Some(true)),
            CertificateSource::Upload,
        )
        .await
        .unwrap();
    let info = status.certificate.clone().unwrap();
    assert_eq!(info.names, vec!["a.example", "www.a.example"]);
    assert!(
        info.issuer.contains("Hostplane Test Intermediate"),
        "{}",
        info.issuer
    );
    assert_eq!(info.source, CertificateSource::Upload);
    assert!(status.redirect_http);
    assert_eq!(
        status
            .last_attempt
            .as_ref()
            .map(|attempt| attempt.error.clone()),
        Some(None)
    );

    let key_files: Vec<_> = std::fs::read_dir(site.layout().tls_dir().join("a"))
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.path().join("privkey.pem"))
        .collect();
    assert_eq!(key_files.len(), 1);
    assert_eq!(
        std::fs::metadata(&key_files[0])
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    let client = https_client(&pki, &site, &["a.example", "www.a.example"]);
    assert_eq!(
        https_body(&client, &site, "a.example").await,
        Ok("site a\n".to_string())
    );
    assert_eq!(
        https_body(&client, &site, "www.a.example").await,
        Ok("site a\n".to_string())
    );

    let answer = site.get("a.example", "/page?x=1").await.unwrap();
    assert_eq!(answer.status, 301);
    let expected = format!("https://a.example:{}/page?x=1", site.https_address().port());
    assert_eq!(answer.header("location"), Some(expected.as_str()));

    // ACME HTTP-01 answers are served over plain HTTP even while HTTP redirects.
    let token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    let authorization = format!("{token}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI");
    site.ops.put_challenge("a", token, &authorization).unwrap();
    let path = format!("/.well-known/acme-challenge/{token}");
    let answer = site.get("a.example", &path).await.unwrap();
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, authorization.as_str())
    );
    site.ops.remove_challenge("a", token).unwrap();
    assert_eq!(site.get("a.example", &path).await.unwrap().status, 404);
    assert!(matches!(
        site.ops.put_challenge("a", "../x", "../x.y"),
        Err(WebError::Invalid(_))
    ));

    // Names the certificate does not cover are refused while it is deployed.
    let refused = site
        .ops
        .put_vhost("a", static_spec(&["a.example", "other.example"], "a"))
        .await;
    assert!(
        matches!(&refused, Err(WebError::Invalid(error)) if error.has("server_names")),
        "{refused:?}"
    );

    site.ops.remove_certificate("a").await.unwrap();
    assert_eq!(site.body("a.example").await, "site a\n");
    assert!(https_body(&client, &site, "a.example").await.is_err());
    assert!(!site.layout().tls_dir().join("a").exists());
    assert_eq!(site.ops.certificate_status("a").unwrap().certificate, None);
}

#[tokio::test]
async fn bad_certificates_are_refused_and_the_working_one_stays() {
    let Some(site) = Site::start().await else {
        return;
    };
    let pki = pki();
    site.document_root("a", "site a\n");
    site.ops
        .put_vhost("a", static_spec(&["a.example"], "a"))
        .await
        .unwrap();
    let (good, good_key) = leaf(&pki, &["a.example"], -1, 30);
    let working = site
        .ops
        .deploy_certificate(
            "a",
            upload(&good, &good_key, Some(pki.intermediate.pem()), None),
            CertificateSource::Upload,
        )
        .await
        .unwrap()
        .certificate
        .unwrap();
    let client = https_client(&pki, &site, &["a.example"]);
    assert_eq!(
        https_body(&client, &site, "a.example").await,
        Ok("site a\n".to_string())
    );

    let (expired, expired_key) = leaf(&pki, &["a.example"], -30, -1);
    let (future, future_key) = leaf(&pki, &["a.example"], 2, 30);
    let (wrong_name, wrong_name_key) = leaf(&pki, &["b.example"], -1, 30);
    let (wildcard, wildcard_key) = leaf(&pki, &["*.a.example"], -1, 30);
    let other_key = KeyPair::generate().unwrap();
    let out_of_order = format!("{}{}", pki.root.pem(), pki.intermediate.pem());
    let cases: Vec<(&str, CertificateUpload, &str, &str)> = vec![
        (
            "key of another certificate",
            upload(&good, &other_key, None, None),
            "private_key",
            "does not match",
        ),
        (
            "expired",
            upload(&expired, &expired_key, None, None),
            "certificate",
            "expired",
        ),
        (
            "not yet valid",
            upload(&future, &future_key, None, None),
            "certificate",
            "not valid before",
        ),
        (
            "wrong name",
            upload(&wrong_name, &wrong_name_key, None, None),
            "certificate",
            "does not cover the server name a.example",
        ),
        (
            "wildcard one level too deep",
            upload(&wildcard, &wildcard_key, None, None),
            "certificate",
            "does not cover",
        ),
        (
            "chain out of order",
            upload(&good, &good_key, Some(out_of_order), None),
            "chain[0]",
            "not the issuer",
        ),
        (
            "key in the certificate field",
            upload(&good_key.serialize_pem(), &good_key, None, None),
            "certificate",
            "PRIVATE KEY",
        ),
        (
            "not PEM",
            upload("hello", &good_key, None, None),
            "certificate",
            "no certificate",
        ),
    ];
    for (name, bad, field, reason) in cases {
        let result = site
            .ops
            .deploy_certificate("a", bad, CertificateSource::Upload)
            .await;
        let error = match result {
            Err(WebError::Invalid(error)) => error,
            other => panic!("{name}: not refused: {other:?}"),
        };
        assert!(
            error
                .fields
                .iter()
                .any(|found| found.field == field && found.reason.contains(reason)),
            "{name}: expected {field}: {reason}, got {error}"
        );
        let status = site.ops.certificate_status("a").unwrap();
        assert_eq!(
            status.certificate.as_ref(),
            Some(&working),
            "{name}: the working certificate stays"
        );
        let attempt = status.last_attempt.unwrap();
        assert!(
            attempt
                .error
                .as_deref()
                .is_some_and(|text| text.contains(reason)),
            "{name}: {attempt:?}"
        );
        assert_eq!(
            https_body(&client, &site, "a.example").await,
            Ok("site a\n".to_string()),
            "{name}"
        );
    }
    let remaining: Vec<_> = std::fs::read_dir(site.layout().tls_dir().join("a"))
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .collect();
    assert_eq!(remaining.len(), 1, "refused certificates leave no files");
}
