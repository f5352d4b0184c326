//! The QUIC endpoint: transport limits sized for many agents, the TLS setup (server certificate
//! from the agent CA, client certificates checked by [`AgentCertVerifier`]), the accept loop, one
//! task per agent connection (handshake, heartbeats, renewal) and the batched store writer.

use shell::sync::MutexExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use protocol::{
    AgentMessage, CoordinatorMessage, ErrorCode, ErrorData, HeartbeatAck, HelloReply,
    RefusalReason, Refused, Welcome,
};
use quinn::VarInt;
use rustls::pki_types::CertificateDer;

use super::ca::AgentIdentity;
use super::registry::Live;
use super::verifier::AgentCertVerifier;
use super::{AgentEvent, ChannelError, Inner, close_code};
use crate::store::records::{AgentRecord, InstanceRecord};
use crate::store::{StoreError, Table};
use shell::wire::{FrameReader, WireError, write_handshake, write_message};

/// The most streams an agent may open to the coordinator at once (its control stream and a few
/// spare); the coordinator opens the request streams.
const MAX_AGENT_BIDI_STREAMS: u32 = 8;
/// The most data streams (dumps) an agent may have open at once.
const MAX_AGENT_DATA_STREAMS: u32 = 4;
/// Flow-control windows: bounded so that ten thousand agents cannot make the coordinator buffer
/// more than a few GiB even if every one of them fills its windows.
const STREAM_RECEIVE_WINDOW: u32 = 256 * 1024;
const CONNECTION_RECEIVE_WINDOW: u32 = 1024 * 1024;
const SEND_WINDOW: u64 = 1024 * 1024;
/// The least time between two certificate renewals on one connection.
const MIN_RENEWAL_INTERVAL: Duration = Duration::from_secs(1);
/// What the stateless-reset key and the connection-ID key are derived for (see
/// [`endpoint_config`]).
const RESET_KEY_PURPOSE: &str = "hostplane agent channel: QUIC stateless reset key v1";
const CID_KEY_PURPOSE: &str = "hostplane agent channel: QUIC connection ID key v1";
/// The least time between two stateless resets. quinn's default (20 ms) would let a restarted
/// coordinator reset only 50 of its former connections a second; the rest would wait for their
/// idle timeout. A reset is always smaller than the packet that caused it, so this is no
/// amplification.
const MIN_RESET_INTERVAL: Duration = Duration::from_millis(1);

fn transport(inner: &Inner) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_AGENT_BIDI_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_AGENT_DATA_STREAMS))
        .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW))
        .send_window(SEND_WINDOW)
        .datagram_receive_buffer_size(None)
        // Agents keep the connection alive (their heartbeats, a keep-alive only if those are
        // rarer than its interval); the coordinator only enforces the idle timeout.
        .keep_alive_interval(None)
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(inner.options.idle_timeout)
                .unwrap_or_else(|_| VarInt::from_u32(40_000).into()),
        ));
    transport
}

/// The default aws-lc-rs provider with TLS_AES_128_GCM_SHA256 first (the server's order decides,
/// see `ignore_client_order`). Its key schedule and transcript hash use SHA-256, which CPUs do in
/// hardware; TLS_AES_256_GCM_SHA384, rustls's first choice, needs SHA-384 in plain code, which
/// was about 7 % of the coordinator's CPU while 10,000 agents connected. AES-128 matches the
/// 128-bit strength of the P-256 certificates and the X25519 key exchange used here.
fn handshake_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    provider
}

fn server_config(inner: &Inner) -> Result<quinn::ServerConfig, ChannelError> {
    let tls_error = |error: &dyn std::fmt::Display| ChannelError::Tls(error.to_string());
    let provider = Arc::new(handshake_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(inner.ca.certificate_der().clone())
        .map_err(|error| tls_error(&error))?;
    let webpki = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|error| tls_error(&error))?;
    let verifier =
        AgentCertVerifier::new(webpki, inner.authorizations.clone(), inner.refusals.clone());
    let (certificate, key) = inner.ca.issue_server_certificate()?;
    let chain: Vec<CertificateDer<'static>> = vec![certificate, inner.ca.certificate_der().clone()];
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| tls_error(&error))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, key.into())
        .map_err(|error| tls_error(&error))?;
    tls.alpn_protocols = vec![protocol::ALPN.to_vec(), protocol::ENROLL_ALPN.to_vec()];
    tls.ignore_client_order = true;
    // Resumption would skip the client certificate check, and with it revocation.
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|error| tls_error(&error))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config
        .transport_config(Arc::new(transport(inner)))
        .max_incoming(16_384)
        .incoming_buffer_size(64 * 1024)
        .incoming_buffer_size_total(32 * 1024 * 1024);
    Ok(config)
}

/// The endpoint's stateless-reset key and the key its connection IDs are checked with are
/// derived from the CA key instead of being random per process. After a crash, the restarted
/// coordinator then recognises the connection IDs it handed out before, answers an agent's next
/// packet on its old connection with a reset the agent can verify, and the agent reconnects at
/// once instead of after its idle timeout. Datagrams with IDs it never made are still dropped
/// without an answer.
fn endpoint_config(inner: &Inner) -> quinn::EndpointConfig {
    let reset_secret = inner.ca.derive_secret(RESET_KEY_PURPOSE);
    let reset_key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &reset_secret);
    let cid_secret = inner.ca.derive_secret(CID_KEY_PURPOSE);
    let cid_key = u64::from_le_bytes(cid_secret[..8].try_into().expect("8 of 32 bytes"));
    let mut config = quinn::EndpointConfig::new(Arc::new(reset_key));
    config
        .cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        })
        .min_reset_interval(MIN_RESET_INTERVAL);
    config
}

fn bind_socket(inner: &Inner) -> Result<std::net::UdpSocket, ChannelError> {
    let address = inner.options.listen;
    let bind_error = |source| ChannelError::Bind { address, source };
    let socket = std::net::UdpSocket::bind(address).map_err(bind_error)?;
    let wanted = inner.options.socket_buffer_bytes;
    match quinn::udp::UdpSocketState::new((&socket).into()) {
        Ok(state) => {
            let _ = state.set_recv_buffer_size((&socket).into(), wanted);
            let _ = state.set_send_buffer_size((&socket).into(), wanted);
            let receive = state.recv_buffer_size((&socket).into()).unwrap_or(0);
            let send = state.send_buffer_size((&socket).into()).unwrap_or(0);
            if receive < wanted || send < wanted {
                tracing::info!(
                    receive,
                    send,
                    wanted,
                    "the OS granted smaller UDP buffers than asked for (raise net.core.rmem_max \
                     and wmem_max for many agents)"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "cannot inspect the QUIC socket"),
    }
    Ok(socket)
}

pub(super) async fn start(inner: &Arc<Inner>) -> Result<SocketAddr, ChannelError> {
    if let Some(address) = inner.local_address.get() {
        return Ok(*address);
    }
    let config = server_config(inner)?;
    let socket = bind_socket(inner)?;
    let endpoint = quinn::Endpoint::new(
        endpoint_config(inner),
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| ChannelError::Bind {
        address: inner.options.listen,
        source,
    })?;
    let address = endpoint.local_addr().map_err(|source| ChannelError::Bind {
        address: inner.options.listen,
        source,
    })?;
    let _ = inner.local_address.set(address);
    *inner.endpoint.locked() = Some(endpoint.clone());
    inner.tracker.spawn(accept_loop(inner.clone(), endpoint));
    inner.tracker.spawn(flush_loop(inner.clone()));
    tracing::info!(%address, "listening for agents");
    Ok(address)
}

pub(super) async fn shutdown(inner: &Arc<Inner>) {
    inner.stop.cancel();
    let endpoint = inner.endpoint.locked().take();
    if let Some(endpoint) = endpoint {
        endpoint.close(VarInt::from_u32(close_code::SHUTDOWN), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
    }
    inner.tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), inner.tracker.wait()).await;
    flush(inner);
    // quinn's endpoint driver releases the UDP socket on its own task once the last handle is
    // gone; wait for that so a restart in the same process can bind the same port.
    if let Some(address) = inner.local_address.get().copied() {
        let deadline = Instant::now() + Duration::from_secs(3);
        while std::net::UdpSocket::bind(address).is_err() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn accept_loop(inner: Arc<Inner>, endpoint: quinn::Endpoint) {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = inner.stop.cancelled() => break,
        };
        let Some(incoming) = incoming else { break };
        // When handshakes pile up, a peer must first show that it receives at its source
        // address (one round trip, no state kept), so spoofed floods cost no handshakes.
        let pending = inner.handshaking.load(Ordering::Relaxed);
        if pending >= inner.options.retry_above_handshakes
            && !incoming.remote_address_validated()
            && incoming.may_retry()
        {
            inner.counters.retries.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = incoming.retry() {
                error.into_incoming().ignore();
            }
            continue;
        }
        inner.tracker.spawn(serve_incoming(inner.clone(), incoming));
    }
}

/// Counts a handshake in progress until it is dropped.
struct Handshaking<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Handshaking<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_incoming(inner: Arc<Inner>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    inner.handshaking.fetch_add(1, Ordering::Relaxed);
    let handshaking = Handshaking(&inner.handshaking);
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(error) => {
            tracing::debug!(%remote, %error, "refused an incoming connection");
            return;
        }
    };
    let connection = match tokio::time::timeout(inner.options.handshake_timeout, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            tracing::debug!(%remote, %error, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "QUIC handshake timed out");
            return;
        }
    };
    drop(handshaking);
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    match alpn.as_deref() {
        Some(protocol::ENROLL_ALPN) => super::enrollment::serve(inner, connection).await,
        Some(protocol::ALPN) => serve_agent(inner, connection).await,
        _ => connection.close(VarInt::from_u32(close_code::PROTOCOL), b"unknown ALPN"),
    }
}

/// The verified identity of an agent connection, or `None` without a client certificate.
fn peer_identity(connection: &quinn::Connection) -> Option<(AgentIdentity, SystemTime)> {
    let certificates = connection
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    AgentIdentity::from_certificate(certificates.first()?)
}

fn violation(inner: &Inner, connection: &quinn::Connection, reason: &str) {
    inner
        .counters
        .protocol_violations
        .fetch_add(1, Ordering::Relaxed);
    tracing::debug!(
        reason,
        "closing an agent connection that broke the protocol"
    );
    connection.close(VarInt::from_u32(close_code::PROTOCOL), reason.as_bytes());
}

async fn serve_agent(inner: Arc<Inner>, connection: quinn::Connection) {
    let Some((identity, not_after)) = peer_identity(&connection) else {
        inner
            .counters
            .refused_without_certificate
            .fetch_add(1, Ordering::Relaxed);
        connection.close(
            VarInt::from_u32(close_code::NO_CERTIFICATE),
            b"a client certificate is required; enroll the agent first",
        );
        return;
    };
    // The handshake checked the identity; an enrollment or revocation may have happened since.
    if inner.authorizations.check(identity).is_err() {
        connection.close(
            VarInt::from_u32(close_code::REVOKED),
            b"this certificate is no longer valid; enroll the agent again",
        );
        return;
    }
    let handshake = tokio::time::timeout(inner.options.handshake_timeout, async {
        let (send, receive) = connection
            .accept_bi()
            .await
            .map_err(|error| error.to_string())?;
        let mut reader = FrameReader::new(receive, 16 * 1024);
        let hello = reader.hello().await;
        Ok::<_, String>((send, reader, hello))
    })
    .await;
    let (mut send, mut reader, hello) = match handshake {
        Ok(Ok(parts)) => parts,
        Ok(Err(error)) => {
            tracing::debug!(%error, "an agent connection ended before its hello");
            return;
        }
        Err(_) => {
            violation(&inner, &connection, "no hello in time");
            return;
        }
    };
    let hello = match hello {
        Ok(Some(hello)) => hello,
        Err(WireError::Protocol(protocol::ProtocolError::VersionMismatch { theirs, .. })) => {
            let reply = HelloReply::Refused(Refused {
                reason: RefusalReason::UnsupportedVersion {
                    supported: protocol::PROTOCOL_VERSION,
                },
                message: format!(
                    "this coordinator speaks protocol version {}, the agent speaks {theirs}; \
                     install a matching agent",
                    protocol::PROTOCOL_VERSION
                ),
            });
            let _ = write_handshake(&mut send, &reply).await;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(2), connection.closed()).await;
            connection.close(
                VarInt::from_u32(close_code::VERSION),
                b"unsupported version",
            );
            return;
        }
        Ok(None) => {
            violation(&inner, &connection, "the stream ended before the hello");
            return;
        }
        Err(error) => {
            violation(&inner, &connection, &error.to_string());
            return;
        }
    };
    let serial = inner.next_connection.fetch_add(1, Ordering::Relaxed);
    let features = hello
        .features
        .intersection(protocol::Features::CERTIFICATE_RENEWAL);
    let welcome = HelloReply::Welcome(Welcome {
        coordinator_version: env!("CARGO_PKG_VERSION").to_string(),
        instance_id: identity.instance,
        generation: identity.generation,
        features,
        heartbeat_interval_ms: inner.options.heartbeat_interval.as_millis() as u64,
    });
    // Registered before the welcome goes out, so a request right after the agent sees its
    // welcome finds the connection.
    let replaced = inner.registry.insert(
        identity.instance,
        Live {
            serial,
            connection: connection.clone(),
            generation: identity.generation,
            version: hello.agent_version.chars().take(64).collect(),
            last_seen: crate::clock::system_now(),
            not_after,
        },
    );
    if let Some(replaced) = replaced {
        replaced.connection.close(
            VarInt::from_u32(close_code::REPLACED),
            b"a newer connection of this agent replaced this one",
        );
    }
    if write_handshake(&mut send, &welcome).await.is_err() {
        inner.registry.remove(identity.instance, serial);
        return;
    }
    // A revocation between the check above and the registration must still close us.
    if inner.authorizations.check(identity).is_err() {
        connection.close(VarInt::from_u32(close_code::REVOKED), b"revoked");
    }
    let _ = inner.events.send(AgentEvent::Connected {
        instance: identity.instance,
        generation: identity.generation,
    });
    tracing::debug!(instance = identity.instance, generation = identity.generation, version = %hello.agent_version, "agent connected");
    reader.set_limit(inner.options.max_control_frame);
    let mut last_renewal: Option<Instant> = None;
    // The connection lives only as long as the certificate it was made with, or the one
    // renewed on it.
    let mut not_after = not_after;
    loop {
        let expires_in = not_after
            .duration_since(crate::clock::system_now())
            .unwrap_or(Duration::ZERO);
        let message = tokio::select! {
            message = reader.message::<AgentMessage>() => message,
            _ = connection.closed() => break,
            _ = tokio::time::sleep(expires_in) => {
                if crate::clock::system_now() < not_after {
                    continue;
                }
                inner.counters.expired_disconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(instance = identity.instance, "closing the connection of an agent whose certificate expired");
                connection.close(
                    VarInt::from_u32(close_code::EXPIRED),
                    b"the agent certificate expired; enroll the agent again",
                );
                break;
            }
            data = connection.accept_uni() => {
                match data {
                    Ok(stream) => {
                        let waiters = inner.data.clone();
                        let instance = identity.instance;
                        inner.tracker.spawn(async move { waiters.accept(instance, stream).await });
                        continue;
                    }
                    Err(_) => break,
                }
            }
            unexpected = connection.accept_bi() => {
                // Agents open no other streams yet; refuse them without serving.
                if let Ok((mut send, mut receive)) = unexpected {
                    let _ = send.reset(VarInt::from_u32(close_code::PROTOCOL));
                    let _ = receive.stop(VarInt::from_u32(close_code::PROTOCOL));
                    continue;
                }
                break;
            }
        };
        let reply = match message {
            Ok(Some(AgentMessage::Heartbeat(heartbeat))) => {
                inner.registry.update(identity.instance, serial, None);
                CoordinatorMessage::HeartbeatAck(HeartbeatAck {
                    heartbeat_sent_at_unix_ms: heartbeat.sent_at_unix_ms,
                    coordinator_time_unix_ms: super::unix_ms(crate::clock::system_now()),
                })
            }
            Ok(Some(AgentMessage::RenewCertificate { csr_der })) => {
                let too_soon = last_renewal.is_some_and(|at| at.elapsed() < MIN_RENEWAL_INTERVAL);
                if too_soon {
                    CoordinatorMessage::Error(ErrorData::new(
                        ErrorCode::ResourceExhausted,
                        "certificate renewals are limited to one per second",
                    ))
                } else {
                    last_renewal = Some(Instant::now());
                    let (reply, renewed) = renew(&inner, identity, serial, not_after, &csr_der);
                    not_after = renewed.unwrap_or(not_after);
                    reply
                }
            }
            Ok(Some(_)) => CoordinatorMessage::Error(ErrorData::new(
                ErrorCode::Unsupported,
                "this coordinator does not handle that message on the control stream yet",
            )),
            Ok(None) => break,
            Err(WireError::Read(_)) => break,
            Err(error) => {
                violation(&inner, &connection, &error.to_string());
                break;
            }
        };
        if write_message(&mut send, &reply).await.is_err() {
            break;
        }
    }
    if inner.registry.remove(identity.instance, serial) {
        let _ = inner.events.send(AgentEvent::Disconnected {
            instance: identity.instance,
        });
    }
    tracing::debug!(instance = identity.instance, "agent disconnected");
}

/// Issues a renewed certificate; the reply and, when renewed, the new certificate's expiry.
fn renew(
    inner: &Inner,
    identity: AgentIdentity,
    serial: u64,
    not_after: SystemTime,
    csr_der: &[u8],
) -> (CoordinatorMessage, Option<SystemTime>) {
    let refused = |message: &str| {
        (
            CoordinatorMessage::Error(ErrorData::new(ErrorCode::Unauthenticated, message)),
            None,
        )
    };
    if inner.authorizations.check(identity).is_err() {
        return refused("this agent's certificate is no longer valid; enroll it again");
    }
    // An expired certificate is not renewed, even on a connection made while it was valid.
    if crate::clock::system_now() >= not_after {
        return refused("this agent's certificate expired; enroll it again");
    }
    match inner
        .ca
        .issue_agent_certificate(csr_der, identity, inner.options.certificate_lifetime)
    {
        Ok(issued) => {
            inner
                .registry
                .update(identity.instance, serial, Some(issued.not_after));
            inner.counters.renewals.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(instance = identity.instance, "renewed an agent certificate");
            let renewed = issued.not_after;
            (
                CoordinatorMessage::CertificateRenewed {
                    certificate_der: issued.certificate_der,
                },
                Some(renewed),
            )
        }
        Err(error) => (
            CoordinatorMessage::Error(ErrorData::new(
                ErrorCode::InvalidInput,
                format!("cannot renew the certificate: {error}"),
            )),
            None,
        ),
    }
}

async fn flush_loop(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(inner.options.flush_interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            // A blocking store write (10,000 records and a flush with 10,000 agents): off the
            // async workers, so pings and heartbeats are not held up behind it.
            _ = ticker.tick() => {
                let inner = inner.clone();
                if tokio::task::spawn_blocking(move || flush(&inner)).await.is_err() {
                    tracing::error!("the last-seen flush panicked");
                }
            }
            _ = inner.stop.cancelled() => break,
        }
    }
}

/// Writes every unflushed agent fact in one transaction.
fn flush(inner: &Inner) {
    let facts = inner.registry.take_unflushed();
    if facts.is_empty() {
        return;
    }
    let result = inner.store.write(|write| {
        for (instance, seen) in &facts {
            let key = InstanceRecord::key(*instance);
            if let Some(mut record) = write.get::<AgentRecord>(Table::Agents, &key)? {
                seen.apply(&mut record);
                write.put(Table::Agents, &key, &record)?;
            }
        }
        Ok::<(), StoreError>(())
    });
    if let Err(error) = result {
        tracing::warn!(%error, "cannot record the agents' last-seen times; retrying later");
        inner.registry.restore_unflushed(facts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_prefers_aes_128_and_keeps_every_default_suite() {
        let ours: Vec<_> = handshake_provider()
            .cipher_suites
            .iter()
            .map(|suite| suite.suite())
            .collect();
        assert_eq!(ours[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let mut defaults: Vec<_> = rustls::crypto::aws_lc_rs::default_provider()
            .cipher_suites
            .iter()
            .map(|suite| suite.suite())
            .collect();
        let mut sorted = ours.clone();
        defaults.sort_by_key(|suite| u16::from(*suite));
        sorted.sort_by_key(|suite| u16::from(*suite));
        assert_eq!(sorted, defaults);
    }
}
