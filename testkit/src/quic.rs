//! Raw QUIC clients of the coordinator's agent channel, for tests of what it refuses: a client
//! configuration with or without an agent identity, one handshake attempt, a connection that
//! was welcomed, and the check that a refusal happened in the TLS handshake.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::agent::WAIT;

/// Connects with `config` on the agent ALPN and tries the version handshake.
pub async fn attempt(
    quic: SocketAddr,
    config: quinn::ClientConfig,
) -> Result<(), quinn::ConnectionError> {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let outcome = tokio::time::timeout(WAIT, async {
        let connection = endpoint
            .connect_with(config, quic, protocol::COORDINATOR_SERVER_NAME)
            .unwrap()
            .await?;
        let (mut send, receive) = connection.open_bi().await?;
        let hello = protocol::Hello::new("test", protocol::Features::NONE);
        if shell::wire::write_hello(&mut send, &hello).await.is_err() {
            return Err(connection.closed().await);
        }
        let mut reader = shell::wire::FrameReader::new(receive, 65536);
        match reader.handshake::<protocol::HelloReply>().await {
            Ok(Some(protocol::HelloReply::Welcome(_))) => Ok(()),
            _ => Err(connection.closed().await),
        }
    })
    .await
    .expect("the attempt ends in time");
    endpoint.close(0u32.into(), b"");
    outcome
}

/// A connection the coordinator welcomed, with its hello stream: closing that stream would end
/// the session, so it lives as long as this does.
pub struct Welcomed {
    pub endpoint: quinn::Endpoint,
    pub connection: quinn::Connection,
    _hello: (
        quinn::SendStream,
        shell::wire::FrameReader<quinn::RecvStream>,
    ),
}

/// Connects with `config`, says hello and asserts the coordinator's welcome.
pub async fn welcomed(quic: SocketAddr, config: quinn::ClientConfig) -> Welcomed {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let connection = endpoint
        .connect_with(config, quic, protocol::COORDINATOR_SERVER_NAME)
        .unwrap()
        .await
        .expect("the coordinator accepts the connection");
    let (mut send, receive) = connection.open_bi().await.unwrap();
    let hello = protocol::Hello::new("test", protocol::Features::NONE);
    shell::wire::write_hello(&mut send, &hello).await.unwrap();
    let mut reader = shell::wire::FrameReader::new(receive, 65536);
    let welcome = reader.handshake::<protocol::HelloReply>().await;
    assert!(
        matches!(welcome, Ok(Some(protocol::HelloReply::Welcome(_)))),
        "{welcome:?}"
    );
    Welcomed {
        endpoint,
        connection,
        _hello: (send, reader),
    }
}

/// Asserts that the connection was refused with a TLS alert (QUIC crypto error codes).
pub fn refused_in_handshake(result: Result<(), quinn::ConnectionError>) {
    match result {
        Err(quinn::ConnectionError::ConnectionClosed(close))
            if (0x100..0x200).contains(&u64::from(close.error_code)) => {}
        other => panic!("expected a TLS refusal, got {other:?}"),
    }
}

/// A client configuration trusting `ca`, presenting `identity` if there is one.
pub fn client_config(
    ca: &rustls::pki_types::CertificateDer<'static>,
    identity: Option<&agent::state::Identity>,
) -> quinn::ClientConfig {
    match identity {
        Some(identity) => {
            agent::tls::agent_config(ca, identity, agent::Transport::default()).unwrap()
        }
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.clone()).unwrap();
            let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            tls.alpn_protocols = vec![protocol::ALPN.to_vec()];
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
            quinn::ClientConfig::new(Arc::new(crypto))
        }
    }
}
