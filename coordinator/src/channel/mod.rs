//! The agents' channel: the coordinator's CA, enrollment, the QUIC server with mutual TLS, the
//! registry of live agent connections and the request path other parts use to reach an agent.
//!
//! Invariants: an agent's identity comes only from its verified certificate; a certificate of
//! an older enrollment generation or of a revoked instance is refused inside the TLS handshake;
//! a token is consumed in the same store transaction that records the certificate it paid for.

pub mod ca;
pub mod data;
pub mod enrollment;
pub mod rate;
pub mod registry;
pub mod request;
pub mod server;
pub mod verifier;

use shell::sync::MutexExt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use protocol::{ErrorData, Operation, OperationOutput, TaskDelivery, TaskId};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::store::records::AgentRecord;
use crate::store::{Store, StoreError, Table};
use ca::{CaError, CertificateAuthority};
use rate::{EnrollmentLimiter, RateLimit};
use registry::Registry;
use verifier::{Authorization, Authorizations, RefusalCounts};

pub use data::DataWaiter;
pub use enrollment::EnrollmentOffer;
pub use request::{Request, RequestEvent};

/// Application close codes of agent connections.
pub mod close_code {
    /// The coordinator is shutting down.
    pub const SHUTDOWN: u32 = 1;
    /// The instance's agent was revoked.
    pub const REVOKED: u32 = 2;
    /// A newer connection or enrollment of the same instance replaced this one.
    pub const REPLACED: u32 = 3;
    /// The peer broke the protocol (bad frame, oversized frame, wrong first message).
    pub const PROTOCOL: u32 = 4;
    /// The agent ALPN was used without a client certificate.
    pub const NO_CERTIFICATE: u32 = 5;
    /// The agent's protocol version is not supported.
    pub const VERSION: u32 = 6;
    /// Enrollment is finished or refused.
    pub const ENROLLMENT_DONE: u32 = 7;
    /// The agent's certificate expired while it was connected.
    pub const EXPIRED: u32 = 8;
}

/// A failure of the channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("the agent of instance {0} is not connected")]
    AgentOffline(u32),
    #[error("the request's deadline passed before the agent answered")]
    DeadlineExceeded,
    #[error("the connection to the agent was lost: {0}")]
    ConnectionLost(String),
    #[error("the agent broke the protocol: {0}")]
    Protocol(String),
    /// The agent ran the operation and it failed.
    #[error("the operation failed: {0}")]
    Operation(ErrorData),
    #[error(
        "the coordinator's QUIC address is not known to agents: set quic_advertise (the QUIC \
         listener is bound to {0})"
    )]
    NoAdvertisedAddress(String),
    #[error("the agent channel is not started")]
    NotStarted,
    #[error("cannot listen for agents on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the channel does, beyond the configuration file: tests and benchmarks tune these.
#[derive(Debug, Clone)]
pub struct ChannelOptions {
    pub data_dir: std::path::PathBuf,
    pub listen: SocketAddr,
    /// The `host:port` put in enrollment tokens; the bound address when unset.
    pub advertise: Option<String>,
    pub certificate_lifetime: Duration,
    pub enrollment_ttl: Duration,
    /// How often agents send heartbeats (told to them in the Welcome).
    pub heartbeat_interval: Duration,
    /// QUIC idle timeout; agents' heartbeats (or keep-alives) come well within it.
    pub idle_timeout: Duration,
    /// How long a peer has for its handshake frames after connecting.
    pub handshake_timeout: Duration,
    /// How often agents' last-seen times and versions are written to the store.
    pub flush_interval: Duration,
    pub enroll_per_address: RateLimit,
    /// Enrollment attempts per IPv6 /64, where one client holds many addresses.
    pub enroll_per_network: RateLimit,
    pub enroll_overall: RateLimit,
    /// Handshakes in progress above which a new peer must first prove its address (QUIC Retry).
    pub retry_above_handshakes: usize,
    /// The largest frame accepted from an agent on a control stream.
    pub max_control_frame: usize,
    /// UDP socket buffer sizes asked of the OS.
    pub socket_buffer_bytes: usize,
}

impl ChannelOptions {
    pub fn from_config(config: &Config) -> ChannelOptions {
        ChannelOptions {
            data_dir: config.data_dir.clone(),
            listen: config.quic_listen,
            advertise: config.quic_advertise.clone(),
            certificate_lifetime: config.agent_cert_lifetime,
            enrollment_ttl: config.enrollment_ttl,
            heartbeat_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(40),
            handshake_timeout: Duration::from_secs(10),
            flush_interval: Duration::from_secs(30),
            enroll_per_address: RateLimit {
                burst: 20.0,
                per_second: 1.0,
            },
            enroll_per_network: RateLimit {
                burst: 40.0,
                per_second: 2.0,
            },
            enroll_overall: RateLimit {
                burst: 200.0,
                per_second: 50.0,
            },
            retry_above_handshakes: config.limits.quic_retry_above_handshakes,
            max_control_frame: 64 * 1024,
            socket_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A live agent's connection came or went. Task delivery listens to these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentEvent {
    Connected { instance: u32, generation: u64 },
    Disconnected { instance: u32 },
}

/// The agent status shape of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentStatus {
    pub connected: bool,
    /// `connected`, `disconnected`, `never` or `revoked`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate_not_after: Option<String>,
}

/// Counters of the channel, for tests, metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelStats {
    pub connected: usize,
    pub handshakes_refused_chain: u64,
    pub handshakes_refused_identity: u64,
    pub refused_without_certificate: u64,
    pub protocol_violations: u64,
    pub enrollments: u64,
    pub enrollments_refused: u64,
    pub renewals: u64,
    /// Connections closed because their certificate expired.
    pub expired_disconnects: u64,
    /// Incoming connections asked to prove their address first.
    pub retries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    refused_without_certificate: AtomicU64,
    protocol_violations: AtomicU64,
    enrollments: AtomicU64,
    enrollments_refused: AtomicU64,
    renewals: AtomicU64,
    expired_disconnects: AtomicU64,
    retries: AtomicU64,
}

pub(crate) struct Inner {
    store: Store,
    ca: CertificateAuthority,
    options: ChannelOptions,
    authorizations: Arc<Authorizations>,
    refusals: Arc<RefusalCounts>,
    registry: Registry,
    limiter: Mutex<EnrollmentLimiter>,
    /// Serializes enrollments and revocations so the store and [`Authorizations`] move together.
    identity_lock: Mutex<()>,
    endpoint: Mutex<Option<quinn::Endpoint>>,
    local_address: OnceLock<SocketAddr>,
    events: broadcast::Sender<AgentEvent>,
    tracker: TaskTracker,
    stop: CancellationToken,
    counters: Counters,
    next_connection: AtomicU64,
    /// QUIC handshakes in progress, for the Retry threshold.
    handshaking: std::sync::atomic::AtomicUsize,
    /// Tasks that expect a data stream from their agent.
    data: data::DataWaiters,
}

/// The agents' channel. Cheap to clone.
#[derive(Clone)]
pub struct Channel {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "Channel({:?})", self.inner.local_address.get())
    }
}

/// Now as RFC 3339 in UTC.
pub(crate) fn now_rfc3339() -> String {
    rfc3339(crate::clock::system_now())
}

/// A time as RFC 3339 in UTC, to the second.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let time = time::OffsetDateTime::from(time);
    let time = time.replace_nanosecond(0).unwrap_or(time);
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Parses an RFC 3339 time.
pub(crate) fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

impl Channel {
    /// Loads (or on the first start creates) the CA and the agents' authorizations.
    pub fn open(config: &Config, store: &Store) -> Result<Channel, ChannelError> {
        Channel::with_options(ChannelOptions::from_config(config), store)
    }

    /// As [`Channel::open`], with explicit options.
    pub fn with_options(options: ChannelOptions, store: &Store) -> Result<Channel, ChannelError> {
        crate::install_crypto_provider();
        let ca = CertificateAuthority::load_or_create(&options.data_dir, store)?;
        let authorizations = Arc::new(Authorizations::default());
        for (_, record) in store.list::<AgentRecord>(Table::Agents)? {
            authorizations.set(
                record.instance,
                Authorization {
                    generation: record.generation,
                    revoked: record.revoked,
                },
            );
        }
        let (events, _) = broadcast::channel(1024);
        let limiter = EnrollmentLimiter::new(
            options.enroll_per_address,
            options.enroll_per_network,
            options.enroll_overall,
        );
        Ok(Channel {
            inner: Arc::new(Inner {
                store: store.clone(),
                ca,
                options,
                authorizations,
                refusals: Arc::new(RefusalCounts::default()),
                registry: Registry::default(),
                limiter: Mutex::new(limiter),
                identity_lock: Mutex::new(()),
                endpoint: Mutex::new(None),
                local_address: OnceLock::new(),
                events,
                tracker: TaskTracker::new(),
                stop: CancellationToken::new(),
                counters: Counters::default(),
                next_connection: AtomicU64::new(1),
                handshaking: std::sync::atomic::AtomicUsize::new(0),
                data: data::DataWaiters::default(),
            }),
        })
    }

    /// Binds the QUIC endpoint and starts accepting agents; returns the bound address.
    pub async fn start(&self) -> Result<SocketAddr, ChannelError> {
        server::start(&self.inner).await
    }

    /// Closes every agent connection, writes what agents last reported and stops the tasks.
    pub async fn shutdown(&self) {
        server::shutdown(&self.inner).await;
    }

    /// The bound QUIC address, once started.
    pub fn local_address(&self) -> Option<SocketAddr> {
        self.inner.local_address.get().copied()
    }

    /// SHA-256 of the CA certificate (what tokens carry).
    pub fn ca_fingerprint(&self) -> [u8; 32] {
        self.inner.ca.fingerprint()
    }

    /// The CA certificate in DER.
    pub fn ca_certificate_der(&self) -> Vec<u8> {
        self.inner.ca.certificate_der().to_vec()
    }

    /// A one-time enrollment token for `instance` (which the caller has checked exists and may be
    /// enrolled by `created_by`).
    pub fn issue_enrollment(
        &self,
        instance: u32,
        created_by: &str,
    ) -> Result<EnrollmentOffer, ChannelError> {
        enrollment::issue(&self.inner, instance, created_by)
    }

    /// The agent status of an instance.
    pub fn status(&self, instance: u32) -> Result<AgentStatus, ChannelError> {
        self.inner.status(instance)
    }

    /// Whether the instance's agent is connected now.
    pub fn is_connected(&self, instance: u32) -> bool {
        self.inner.registry.connection(instance).is_some()
    }

    /// Revokes the instance's agent: its live connection closes at once and its certificates are
    /// refused until it is enrolled again. Pending tokens for it are dropped. `false` when the
    /// instance never had an agent.
    pub fn revoke(&self, instance: u32) -> Result<bool, ChannelError> {
        self.inner.revoke(instance)
    }

    /// Sends one task to the instance's agent on its own stream and returns the handle that
    /// receives the acknowledgement, progress, log lines and result.
    pub async fn deliver(
        &self,
        instance: u32,
        delivery: TaskDelivery,
        deadline: Duration,
    ) -> Result<Request, ChannelError> {
        request::open(&self.inner, instance, delivery, deadline).await
    }

    /// Expects the data stream of task `task_id` from the agent of `instance`; register it
    /// before the task is delivered.
    pub fn expect_data(&self, instance: u32, task_id: TaskId) -> DataWaiter {
        self.inner.data.expect(instance, task_id)
    }

    /// Sends `operation` as a new task (fresh id, first attempt) with `deadline` from now.
    pub async fn request(
        &self,
        instance: u32,
        operation: Operation,
        deadline: Duration,
    ) -> Result<Request, ChannelError> {
        let delivery = TaskDelivery {
            task_id: TaskId::from_bytes(rand::random()),
            operation,
            deadline_unix_ms: unix_ms(crate::clock::system_now() + deadline),
            attempt: 1,
        };
        self.deliver(instance, delivery, deadline).await
    }

    /// Sends `operation` and waits for its output.
    pub async fn call(
        &self,
        instance: u32,
        operation: Operation,
        deadline: Duration,
    ) -> Result<OperationOutput, ChannelError> {
        self.request(instance, operation, deadline)
            .await?
            .outcome()
            .await
    }

    /// Round trip of a ping through the agent's operation path.
    pub async fn ping(&self, instance: u32, deadline: Duration) -> Result<Duration, ChannelError> {
        let payload: [u8; 16] = rand::random();
        let started = std::time::Instant::now();
        let output = self
            .call(
                instance,
                Operation::Ping {
                    payload: payload.to_vec(),
                },
                deadline,
            )
            .await?;
        match output {
            OperationOutput::Pong { payload: echoed } if echoed == payload => Ok(started.elapsed()),
            other => Err(ChannelError::Protocol(format!(
                "a ping was answered with {other:?}"
            ))),
        }
    }

    /// Connection events (connected, disconnected) from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<AgentEvent> {
        self.inner.events.subscribe()
    }

    /// Current counters.
    pub fn stats(&self) -> ChannelStats {
        let counters = &self.inner.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ChannelStats {
            connected: self.inner.registry.connected_count(),
            handshakes_refused_chain: load(&self.inner.refusals.chain),
            handshakes_refused_identity: load(&self.inner.refusals.identity),
            refused_without_certificate: load(&counters.refused_without_certificate),
            protocol_violations: load(&counters.protocol_violations),
            enrollments: load(&counters.enrollments),
            enrollments_refused: load(&counters.enrollments_refused),
            renewals: load(&counters.renewals),
            expired_disconnects: load(&counters.expired_disconnects),
            retries: load(&counters.retries),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

impl Inner {
    fn status(&self, instance: u32) -> Result<AgentStatus, ChannelError> {
        // A revoked agent's connection may take a moment to wind down; it is not shown as
        // connected meanwhile.
        let revoked = self
            .authorizations
            .get(instance)
            .is_some_and(|authorization| authorization.revoked);
        if let Some(live) = self.registry.live_status(instance).filter(|_| !revoked) {
            return Ok(AgentStatus {
                connected: true,
                state: "connected",
                last_seen: Some(rfc3339(live.last_seen)),
                version: Some(live.version),
                certificate_not_after: Some(rfc3339(live.not_after)),
            });
        }
        let record: Option<AgentRecord> = self.store.get(
            Table::Agents,
            &crate::store::records::InstanceRecord::key(instance),
        )?;
        let Some(mut record) = record else {
            return Ok(AgentStatus {
                connected: false,
                state: "never",
                last_seen: None,
                version: None,
                certificate_not_after: None,
            });
        };
        self.registry.overlay_unflushed(&mut record);
        let state = if record.revoked {
            "revoked"
        } else if record.last_seen.is_some() {
            "disconnected"
        } else {
            "never"
        };
        Ok(AgentStatus {
            connected: false,
            state,
            last_seen: record.last_seen,
            version: record.version,
            certificate_not_after: record.certificate_not_after,
        })
    }

    fn revoke(&self, instance: u32) -> Result<bool, ChannelError> {
        let key = crate::store::records::InstanceRecord::key(instance);
        let _guard = self.identity_lock.locked();
        let revoked = self.store.write(|write| {
            let tokens: Vec<(String, crate::store::records::EnrollmentTokenRecord)> =
                write.list(Table::EnrollmentTokens)?;
            for (hash, token) in tokens {
                if token.instance == instance {
                    write.delete(Table::EnrollmentTokens, &hash)?;
                }
            }
            let Some(mut record) = write.get::<AgentRecord>(Table::Agents, &key)? else {
                return Ok::<_, StoreError>(None);
            };
            record.revoked = true;
            record.revoked_at = Some(now_rfc3339());
            write.put(Table::Agents, &key, &record)?;
            Ok(Some(record.generation))
        })?;
        let Some(generation) = revoked else {
            return Ok(false);
        };
        self.authorizations.set(
            instance,
            Authorization {
                generation,
                revoked: true,
            },
        );
        drop(_guard);
        if let Some(connection) = self.registry.connection(instance) {
            connection.close(
                quinn::VarInt::from_u32(close_code::REVOKED),
                b"the agent was revoked",
            );
        }
        tracing::info!(instance, "revoked the agent");
        Ok(true)
    }
}
