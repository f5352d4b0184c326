//! Hostile input on the agent channel: a flood of garbage datagrams, oversized or malformed
//! frames from an authenticated peer, and the same from unauthenticated peers on the enrollment
//! ALPN. In its own test binary so that memory measurements see only this test.

use std::time::Duration;
use testkit::agent_crate as agent;

use coordinator::config::Config;
use testkit::agent::{WAIT, connected, enroll, spawn_agent};
use testkit::coordinator::start;
use testkit::quic::{client_config, welcomed};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test]
async fn garbage_datagrams_and_oversized_frames_do_not_hurt_the_coordinator() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(Config::for_tests(dir.path().join("data")), &[101, 102]).await;
    let channel = &running.app.channel;
    let quic = running.quic.unwrap();
    let good = dir.path().join("good");
    let bad = agent::StateDir::new(dir.path().join("bad"));
    enroll(&running, 101, &good).await;
    enroll(&running, 102, bad.path()).await;
    let handle = spawn_agent(&good);
    connected(&handle, 1).await;

    // Floods of random datagrams, half shaped like QUIC long-header packets. The first flood
    // may grow buffers to their working size; a second one must not grow memory further.
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut sizes = vec![resident_bytes()];
    for _round in 0..3 {
        for index in 0..20_000u32 {
            let mut datagram = vec![0u8; 1200];
            rand::fill(&mut datagram[..]);
            if index % 2 == 0 {
                datagram[0] = 0xc0 | (datagram[0] & 0x0f);
                datagram[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
            socket.send_to(&datagram, quic).await.unwrap();
        }
        channel.ping(101, Duration::from_secs(5)).await.unwrap();
        sizes.push(resident_bytes());
    }
    eprintln!("resident sizes: {sizes:?}");
    let late_growth = sizes[3].saturating_sub(sizes[1]);
    assert!(
        late_growth < 16 * 1024 * 1024,
        "resident memory kept growing: {sizes:?}"
    );

    // An authenticated peer that declares a huge frame on its control stream is cut off.
    let ca = rustls::pki_types::CertificateDer::from(channel.ca_certificate_der());
    let identity = bad.load_identity().unwrap();
    let config = client_config(&ca, Some(&identity));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connection = endpoint
        .connect_with(config, quic, protocol::COORDINATOR_SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, receive) = connection.open_bi().await.unwrap();
    let hello = protocol::Hello::new("test", protocol::Features::NONE);
    shell::wire::write_hello(&mut send, &hello).await.unwrap();
    let mut reader = shell::wire::FrameReader::new(receive, 65536);
    assert!(matches!(
        reader.handshake::<protocol::HelloReply>().await,
        Ok(Some(protocol::HelloReply::Welcome(_)))
    ));
    let violations = channel.stats().protocol_violations;
    send.write_all(&(100u32 << 20).to_be_bytes()).await.unwrap();
    send.write_all(&[0u8; 1024]).await.unwrap();
    let closed = tokio::time::timeout(WAIT, connection.closed())
        .await
        .unwrap();
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(close) if close.error_code == 4u32.into()),
        "{closed:?}"
    );
    assert_eq!(channel.stats().protocol_violations, violations + 1);

    // A hello that is not a hello.
    let connection = endpoint
        .connect_with(
            client_config(&ca, Some(&identity)),
            quic,
            protocol::COORDINATOR_SERVER_NAME,
        )
        .unwrap()
        .await
        .unwrap();
    let (mut send, _receive) = connection.open_bi().await.unwrap();
    send.write_all(&[0, 0, 0, 4, b'H', b'T', b'T', b'P'])
        .await
        .unwrap();
    let closed = tokio::time::timeout(WAIT, connection.closed())
        .await
        .unwrap();
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(close) if close.error_code == 4u32.into()),
        "{closed:?}"
    );

    // A hello declared larger than the 16 KiB allowed before the welcome.
    let connection = endpoint
        .connect_with(
            client_config(&ca, Some(&identity)),
            quic,
            protocol::COORDINATOR_SERVER_NAME,
        )
        .unwrap()
        .await
        .unwrap();
    let (mut send, _receive) = connection.open_bi().await.unwrap();
    let violations = channel.stats().protocol_violations;
    send.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
    send.write_all(&[0u8; 1024]).await.unwrap();
    let closed = tokio::time::timeout(WAIT, connection.closed())
        .await
        .unwrap();
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(close) if close.error_code == 4u32.into()),
        "{closed:?}"
    );
    assert_eq!(channel.stats().protocol_violations, violations + 1);
    assert!(!channel.is_connected(102));

    // Unauthenticated peers on the enrollment ALPN, the one thing open to anyone: a frame
    // declared far beyond the enrollment limit and bytes that are no handshake frame are cut off
    // without an answer, and nothing is enrolled.
    let mut oversized = (64u32 << 20).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0u8; 1024]);
    for (name, bytes) in [
        ("oversized", oversized),
        ("not a handshake frame", b"\0\0\0\x04HTTP".to_vec()),
    ] {
        let before = channel.stats();
        let (config, _) =
            agent::tls::enrollment_config(channel.ca_fingerprint(), agent::Transport::default())
                .unwrap();
        let connection = endpoint
            .connect_with(config, quic, protocol::COORDINATOR_SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut receive) = connection.open_bi().await.unwrap();
        send.write_all(&bytes).await.unwrap();
        let closed = tokio::time::timeout(WAIT, connection.closed())
            .await
            .unwrap();
        assert!(
            matches!(&closed, quinn::ConnectionError::ApplicationClosed(close) if close.error_code == 7u32.into()),
            "{name}: {closed:?}"
        );
        let answer = receive.read_to_end(1 << 20).await;
        assert!(
            !matches!(&answer, Ok(bytes) if !bytes.is_empty()),
            "{name}: {answer:?}"
        );
        let after = channel.stats();
        assert_eq!(
            after.protocol_violations,
            before.protocol_violations + 1,
            "{name}"
        );
        assert_eq!(after.enrollments, before.enrollments, "{name}");
    }

    channel.ping(101, Duration::from_secs(5)).await.unwrap();
    handle.stop().await;
    running.stop().await;
}

#[tokio::test]
async fn an_agent_is_disconnected_when_its_certificate_expires() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path().join("data"));
    // Short-lived certificates: the connection below outlives its certificate.
    config.agent_cert_lifetime = Duration::from_secs(3);
    let running = start(config, &[101]).await;
    let channel = &running.app.channel;
    let quic = running.quic.unwrap();
    let ca = rustls::pki_types::CertificateDer::from(channel.ca_certificate_der());
    let state = agent::StateDir::new(dir.path().join("agent"));
    enroll(&running, 101, state.path()).await;
    let identity = state.load_identity().unwrap();
    // A client that never renews: connect, say hello, then wait to be closed.
    let session = welcomed(quic, client_config(&ca, Some(&identity))).await;
    assert!(channel.is_connected(101));
    let closed = tokio::time::timeout(Duration::from_secs(30), session.connection.closed())
        .await
        .expect("the connection is closed within 30 s");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => assert_eq!(
            u64::from(close.error_code),
            u64::from(coordinator::channel::close_code::EXPIRED),
            "{close:?}"
        ),
        other => panic!("expected the coordinator to close the connection, got {other:?}"),
    }
    assert_eq!(channel.stats().expired_disconnects, 1);
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while channel.is_connected(101) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "the expired connection is no longer registered"
    );
    session.endpoint.close(0u32.into(), b"");
}

#[tokio::test]
async fn with_handshakes_piled_up_a_new_peer_is_asked_to_prove_its_address_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path().join("data"));
    // Every handshake counts as "piled up": each unvalidated peer gets a QUIC Retry first.
    config.limits.quic_retry_above_handshakes = 0;
    let running = start(config, &[101]).await;
    let channel = &running.app.channel;
    let quic = running.quic.unwrap();
    let ca = rustls::pki_types::CertificateDer::from(channel.ca_certificate_der());
    let state = agent::StateDir::new(dir.path().join("agent"));
    let before = channel.stats().retries;
    // Enrollment is a handshake too; it goes through the Retry round trip and still works.
    enroll(&running, 101, state.path()).await;
    let identity = state.load_identity().unwrap();
    let session = welcomed(quic, client_config(&ca, Some(&identity))).await;
    let retries = channel.stats().retries - before;
    assert!(
        retries >= 2,
        "the enrollment and the agent connection were each sent a Retry, counted {retries}"
    );
    session.endpoint.close(0u32.into(), b"");
}
