//! ACME end to end against pebble (a real RFC 8555 server): the test plays the coordinator's
//! ACME client (instant-acme), the agent answers HTTP-01 through its private nginx and deploys the
//! issued certificate, which an HTTPS client then verifies against pebble's root.

use std::time::Duration;

use agent::certs::{CertificateSource, CertificateUpload};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use testkit::pebble::{client_trusting, pebble_available, start_pebble};
use testkit::vhosts::{Site, static_spec};

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
    let root = pebble.issuing_root().await;
    let client = client_trusting(root.as_bytes(), Some((host, site.https_address())));
    let url = format!("https://{host}:{}/", site.https_address().port());
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "shop\n");
}
