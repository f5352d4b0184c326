//! The agent channel end to end on loopback: a real coordinator (in-process) and the real agent
//! library, over real QUIC with mutual TLS.

use std::time::Duration;
use testkit::agent_crate as agent;

use coordinator::channel::ChannelError;
use coordinator::config::Config;
use coordinator::store::Table;
use coordinator::store::records::EnrollmentTokenRecord;
use protocol::{ErrorCode, Operation, OperationOutput};
use testkit::agent::{WAIT, connected, enroll, spawn_agent};
use testkit::coordinator::start;
use testkit::quic::{attempt, client_config, refused_in_handshake};

#[tokio::test]
async fn an_enrolled_agent_connects_answers_pings_and_shows_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let agent_dir = dir.path().join("agent");
    let running = start(Config::for_tests(dir.path().join("data")), &[101]).await;
    let channel = &running.app.channel;
    assert_eq!(channel.status(101).unwrap().state, "never");
    assert!(matches!(
        channel.ping(101, Duration::from_secs(1)).await,
        Err(ChannelError::AgentOffline(101))
    ));

    let enrolled = enroll(&running, 101, &agent_dir).await;
    assert_eq!((enrolled.instance_id, enrolled.generation), (101, 1));
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(agent_dir.join("identity.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);

    let handle = spawn_agent(&agent_dir);
    let state = connected(&handle, 1).await;
    assert_eq!(
        state.phase,
        agent::ConnectionPhase::Connected {
            instance_id: 101,
            generation: 1
        }
    );
    let rtt = channel.ping(101, Duration::from_secs(5)).await.unwrap();
    assert!(rtt < Duration::from_secs(5));

    let status = channel.status(101).unwrap();
    assert!(status.connected);
    assert_eq!(status.state, "connected");
    assert_eq!(status.version.as_deref(), Some(agent::VERSION));
    assert!(status.last_seen.is_some() && status.certificate_not_after.is_some());
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["connected"], true);

    // An operation no handler takes comes back as an error, the connection stays up.
    let error = channel
        .call(
            101,
            Operation::PackageList { names: vec![] },
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, ChannelError::Operation(data) if data.code == ErrorCode::Unsupported),
        "{error}"
    );
    let output = channel
        .call(
            101,
            Operation::Ping {
                payload: b"again".to_vec(),
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        output,
        OperationOutput::Pong {
            payload: b"again".to_vec()
        }
    );

    handle.stop().await;
    let mut events = channel.subscribe();
    let disconnected = tokio::time::timeout(WAIT, async {
        while channel.is_connected(101) {
            let _ = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
        }
    })
    .await;
    assert!(
        disconnected.is_ok(),
        "the coordinator noticed the agent leave"
    );
    let status = channel.status(101).unwrap();
    assert_eq!((status.connected, status.state), (false, "disconnected"));
    running.stop().await;
}

#[tokio::test]
async fn reused_expired_and_tampered_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(Config::for_tests(dir.path().join("data")), &[101]).await;
    let channel = &running.app.channel;
    let state = |name: &str| dir.path().join(name);

    // Reuse.
    let offer = channel.issue_enrollment(101, "admin").unwrap();
    agent::enroll(agent::EnrollOptions::new(offer.token.clone(), state("a")))
        .await
        .unwrap();
    let error = agent::enroll(agent::EnrollOptions::new(offer.token, state("b")))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, agent::EnrollError::Refused(data) if data.code == ErrorCode::Unauthenticated
            && data.message.contains("already used")),
        "{error}"
    );
    assert!(!state("b").join("agent.json").exists());

    // Expiry: the stored expiry is moved into the past.
    let offer = channel.issue_enrollment(101, "admin").unwrap();
    let tokens: Vec<(String, EnrollmentTokenRecord)> =
        running.app.store.list(Table::EnrollmentTokens).unwrap();
    assert_eq!(
        tokens.len(),
        1,
        "only the hash of the unused token is stored"
    );
    assert!(!offer.token.contains(&tokens[0].0));
    let mut record = tokens[0].1.clone();
    record.expires_at = "2000-01-01T00:00:00Z".into();
    running
        .app
        .store
        .put(Table::EnrollmentTokens, &tokens[0].0, &record)
        .unwrap();
    let error = agent::enroll(agent::EnrollOptions::new(offer.token, state("c")))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("expired"), "{error}");

    // Tampering with the secret: an unknown token.
    let offer = channel.issue_enrollment(101, "admin").unwrap();
    let mut token = protocol::EnrollmentToken::decode(&offer.token).unwrap();
    token.secret[0] ^= 1;
    let error = agent::enroll(agent::EnrollOptions::new(token.encode(), state("d")))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("unknown"), "{error}");

    // Tampering with the fingerprint: the agent refuses the coordinator itself.
    let mut token = protocol::EnrollmentToken::decode(&offer.token).unwrap();
    token.ca_fingerprint[0] ^= 1;
    let error = agent::enroll(agent::EnrollOptions::new(token.encode(), state("e")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, agent::EnrollError::WrongCoordinator(_)),
        "{error}"
    );
    assert!(error.to_string().contains("another coordinator"), "{error}");

    // Damaged text.
    let error = agent::enroll(agent::EnrollOptions::new("hpe1_%%%", state("f")))
        .await
        .unwrap_err();
    assert!(matches!(error, agent::EnrollError::Token(_)), "{error}");

    // The untouched token still works once, the failures above did not spend it.
    agent::enroll(agent::EnrollOptions::new(offer.token, state("g")))
        .await
        .unwrap();
    let stats = channel.stats();
    assert_eq!(stats.enrollments, 2);
    assert!(stats.enrollments_refused >= 3);
    running.stop().await;
}

/// A certificate for `instance`, generation 1, from a CA the coordinator never saw.
fn foreign_identity(instance: u32) -> agent::state::Identity {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(
        format!("hostplane://instance/{instance}/generation/1")
            .try_into()
            .unwrap(),
    )];
    let certificate = params.signed_by(&key, &issuer).unwrap();
    agent::state::Identity::new(certificate.der().to_vec(), key.serialize_der()).unwrap()
}

#[tokio::test]
async fn strangers_revoked_and_replaced_certificates_are_refused_at_the_handshake() {
    agent::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let running = start(Config::for_tests(dir.path().join("data")), &[101, 102]).await;
    let channel = &running.app.channel;
    let quic = running.quic.unwrap();
    let ca = rustls::pki_types::CertificateDer::from(channel.ca_certificate_der());

    let first = agent::StateDir::new(dir.path().join("first"));
    enroll(&running, 101, first.path()).await;
    let first_identity = first.load_identity().unwrap();
    attempt(quic, client_config(&ca, Some(&first_identity)))
        .await
        .expect("the enrolled certificate is accepted");

    // No certificate: closed right after the handshake, before any stream is served.
    let result = attempt(quic, client_config(&ca, None)).await;
    assert!(
        matches!(&result, Err(quinn::ConnectionError::ApplicationClosed(close))
            if close.error_code == 5u32.into()),
        "{result:?}"
    );
    assert_eq!(channel.stats().refused_without_certificate, 1);

    // A certificate of another CA naming an enrolled instance.
    let before = channel.stats();
    refused_in_handshake(attempt(quic, client_config(&ca, Some(&foreign_identity(101)))).await);
    assert_eq!(
        channel.stats().handshakes_refused_chain,
        before.handshakes_refused_chain + 1
    );

    // Re-enrolling bumps the generation: the first certificate is refused, the new one works.
    let second = agent::StateDir::new(dir.path().join("second"));
    let enrolled = enroll(&running, 101, second.path()).await;
    assert_eq!(enrolled.generation, 2);
    refused_in_handshake(attempt(quic, client_config(&ca, Some(&first_identity))).await);
    let second_identity = second.load_identity().unwrap();
    attempt(quic, client_config(&ca, Some(&second_identity)))
        .await
        .expect("the newest generation is accepted");

    // Revocation closes the live connection at once and refuses the certificate afterwards.
    let handle = spawn_agent(second.path());
    connected(&handle, 1).await;
    assert!(channel.is_connected(101));
    assert!(channel.revoke(101).unwrap());
    handle
        .wait_until(WAIT, |state| {
            !matches!(state.phase, agent::ConnectionPhase::Connected { .. })
        })
        .await
        .expect("the revoked agent is cut off");
    assert!(!channel.is_connected(101));
    assert_eq!(channel.status(101).unwrap().state, "revoked");
    let before = channel.stats();
    refused_in_handshake(attempt(quic, client_config(&ca, Some(&second_identity))).await);
    assert_eq!(
        channel.stats().handshakes_refused_identity,
        before.handshakes_refused_identity + 1
    );
    let state = handle
        .wait_until(WAIT, |state| {
            state
                .last_error
                .as_deref()
                .is_some_and(|error| error.contains("enroll the agent again"))
        })
        .await
        .expect("the agent says what to do");
    assert_eq!(state.connections, 1);
    handle.stop().await;

    // An instance that was never enrolled: a stolen-looking certificate of our CA is impossible
    // to make, so the remaining check is that 102 has no authorization at all.
    assert!(!channel.revoke(102).unwrap());
    running.stop().await;
}

#[tokio::test]
async fn the_agent_reconnects_by_itself_after_a_coordinator_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let agent_dir = dir.path().join("agent");
    let running = start(Config::for_tests(data.clone()), &[101]).await;
    let quic = running.quic.unwrap();
    enroll(&running, 101, &agent_dir).await;
    let handle = spawn_agent(&agent_dir);
    connected(&handle, 1).await;
    running
        .app
        .channel
        .ping(101, Duration::from_secs(5))
        .await
        .unwrap();
    running.stop().await;
    handle
        .wait_until(WAIT, |state| {
            !matches!(state.phase, agent::ConnectionPhase::Connected { .. })
        })
        .await
        .expect("the agent notices the coordinator left");

    let mut config = Config::for_tests(data);
    config.quic_listen = quic;
    let running = start(config, &[]).await;
    assert_eq!(running.quic, Some(quic));
    connected(&handle, 2).await;
    running
        .app
        .channel
        .ping(101, Duration::from_secs(5))
        .await
        .expect("ping works after the restart");
    assert_eq!(running.app.channel.status(101).unwrap().state, "connected");
    handle.stop().await;
    running.stop().await;
}

#[tokio::test]
async fn short_lived_certificates_are_renewed_over_the_live_connection() {
    let dir = tempfile::tempdir().unwrap();
    let agent_dir = dir.path().join("agent");
    let mut config = Config::for_tests(dir.path().join("data"));
    config.agent_cert_lifetime = Duration::from_secs(6);
    let running = start(config, &[101]).await;
    let channel = &running.app.channel;
    let quic = running.quic.unwrap();
    enroll(&running, 101, &agent_dir).await;
    let enrolled = agent::StateDir::new(&agent_dir).load_identity().unwrap();
    let handle = spawn_agent(&agent_dir);
    let first = connected(&handle, 1).await;
    // Each renewal replaces the certificate under the live connection; requests keep working
    // after every one of them.
    let mut previous = first.certificate_not_after;
    for renewals in 1..=3 {
        let state = handle
            .wait_until(Duration::from_secs(30), |state| state.renewals >= renewals)
            .await
            .unwrap_or_else(|state| panic!("renewal {renewals} did not happen: {state:?}"));
        assert_eq!(state.connections, 1, "the connection stayed up");
        assert!(state.certificate_not_after > previous);
        previous = state.certificate_not_after;
        channel.ping(101, Duration::from_secs(5)).await.unwrap();
    }
    assert!(channel.stats().renewals >= 3);
    handle.stop().await;

    // Renewal keeps the generation, so the certificate from enrollment is still one of ours
    // with the current identity: only its expiry refuses it, inside the handshake.
    assert!(enrolled.not_after < std::time::SystemTime::now());
    let before = channel.stats();
    let ca = rustls::pki_types::CertificateDer::from(channel.ca_certificate_der());
    refused_in_handshake(attempt(quic, client_config(&ca, Some(&enrolled))).await);
    assert_eq!(
        channel.stats().handshakes_refused_chain,
        before.handshakes_refused_chain + 1
    );

    // The enrolled certificate has expired by now; the saved renewed one connects.
    let restarted = spawn_agent(&agent_dir);
    connected(&restarted, 1).await;
    channel.ping(101, Duration::from_secs(5)).await.unwrap();
    restarted.stop().await;
    running.stop().await;
}
