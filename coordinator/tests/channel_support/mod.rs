//! Helpers shared by the channel tests: a coordinator with instances, enrolled agents, raw
//! QUIC attempts.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use coordinator::config::Config;
use coordinator::server::Running;
use coordinator::store::Table;
use coordinator::store::records::InstanceRecord;

pub const WAIT: Duration = Duration::from_secs(20);

pub fn instance(id: u32) -> InstanceRecord {
    InstanceRecord {
        id,
        user: "customer-1".into(),
        node: "pve1".into(),
        hostname: format!("ct{id}"),
        template: "debian-12".into(),
        cpu: 1,
        memory: 512,
        swap: 0,
        disk: 4,
        state: "ready".into(),
        suspended: false,
        created_at: "2025-01-01T00:00:00Z".into(),
        updated_at: "2025-01-01T00:00:00Z".into(),
    }
}

pub async fn start(config: Config, instances: &[u32]) -> Running {
    let running = coordinator::server::start(config)
        .await
        .expect("the coordinator starts");
    for id in instances {
        running
            .app
            .store
            .put(Table::Instances, &InstanceRecord::key(*id), &instance(*id))
            .unwrap();
    }
    running
}

pub fn run_options(state_dir: &Path) -> agent::RunOptions {
    let mut options = agent::RunOptions::new(state_dir);
    options.backoff_initial = Duration::from_millis(50);
    options.backoff_maximum = Duration::from_millis(500);
    options.connect_timeout = Duration::from_secs(5);
    options
}

pub async fn enroll(running: &Running, instance: u32, state_dir: &Path) -> agent::Enrolled {
    let offer = running
        .app
        .channel
        .issue_enrollment(instance, "admin")
        .unwrap();
    assert!(
        offer
            .command
            .starts_with("hostplane-agent enroll --token hpe1_")
    );
    agent::enroll(agent::EnrollOptions::new(offer.token, state_dir))
        .await
        .expect("enrollment succeeds")
}

/// An agent that answers pings only: the channel tests are about the transport.
pub fn spawn_agent(state_dir: &Path) -> agent::AgentHandle {
    agent::spawn(
        run_options(state_dir),
        agent::Handlers::new().with(agent::PingHandler),
        Arc::new(agent::MemoryFinishedTasks::new(100)),
    )
    .expect("the agent starts")
}

pub async fn connected(handle: &agent::AgentHandle, connections: u64) -> agent::AgentState {
    handle
        .wait_until(WAIT, |state| {
            matches!(state.phase, agent::Phase::Connected { .. })
                && state.connections >= connections
        })
        .await
        .unwrap_or_else(|state| panic!("the agent did not connect: {state:?}"))
}

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
        if agent::wire::write_hello(&mut send, &hello).await.is_err() {
            return Err(connection.closed().await);
        }
        let mut reader = agent::wire::FrameReader::new(receive, 65536);
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

pub fn refused_in_handshake(result: Result<(), quinn::ConnectionError>) {
    match result {
        Err(quinn::ConnectionError::ConnectionClosed(close))
            if (0x100..0x200).contains(&u64::from(close.error_code)) => {}
        other => panic!("expected a TLS refusal, got {other:?}"),
    }
}

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
