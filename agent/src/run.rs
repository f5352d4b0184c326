//! `hostplane-agent run`: keep one mutually authenticated QUIC connection to the coordinator,
//! forever. Each connection does the version handshake, sends heartbeats on its control stream,
//! renews the certificate at two thirds of its lifetime, and serves one task per stream the
//! coordinator opens. When a connection ends the agent reconnects with backoff and jitter.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use protocol::{
    AgentMessage, CoordinatorMessage, ErrorCode, ErrorData, Features, Heartbeat, Hello, HelloReply,
    StateSummary, TaskDelivery,
};
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::handler::{DataChannel, Handlers, TaskContext, TaskEvent};
use crate::state::{Identity, StateDir, StateError};
use crate::tasks::{Admission, DiskFinishedTasks, FinishedTasks, TaskBook};
use crate::tls::{Transport, agent_config};
use shell::wire::{FrameReader, WireError, write_hello, write_message};

/// The folder of the state directory that holds finished tasks' results.
pub const TASKS_FOLDER: &str = "tasks";
/// How many finished tasks the agent remembers (the oldest are forgotten first).
pub const FINISHED_CAPACITY: usize = 10_000;
/// How many tasks run at once; more wait (acknowledged) for a place. Operations that must not
/// overlap at all (apt) also queue on their own lock.
pub const MAX_CONCURRENT_TASKS: usize = 16;

/// What `run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub state_dir: PathBuf,
    /// Dial this `host:port` instead of the address saved at enrollment.
    pub coordinator: Option<String>,
    pub transport: Transport,
    pub backoff_initial: Duration,
    pub backoff_maximum: Duration,
    /// How long one connection attempt (QUIC and version handshakes) may take.
    pub connect_timeout: Duration,
}

impl RunOptions {
    pub fn new(state_dir: impl Into<PathBuf>) -> RunOptions {
        RunOptions {
            state_dir: state_dir.into(),
            coordinator: None,
            transport: Transport::default(),
            backoff_initial: Duration::from_millis(500),
            backoff_maximum: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the agent's connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionPhase {
    Connecting,
    Connected {
        instance_id: u32,
        generation: u64,
    },
    /// Waiting before the next attempt.
    Waiting {
        retry_in: Duration,
    },
    Stopped,
}

/// The agent's observable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentState {
    pub phase: ConnectionPhase,
    /// Connections established so far (a reconnect increases it).
    pub connections: u64,
    /// Certificates renewed so far.
    pub renewals: u64,
    /// Why the last connection attempt or connection ended.
    pub last_error: Option<String>,
    pub certificate_not_after: Option<SystemTime>,
}

/// A running agent.
#[derive(Debug)]
pub struct AgentHandle {
    state: watch::Receiver<AgentState>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AgentHandle {
    pub fn state(&self) -> AgentState {
        self.state.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<AgentState> {
        self.state.clone()
    }

    /// Waits until `predicate` holds, at most `timeout`; returns the last state either way.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        predicate: impl Fn(&AgentState) -> bool,
    ) -> Result<AgentState, AgentState> {
        let mut state = self.state.clone();
        let reached = tokio::time::timeout(timeout, state.wait_for(|value| predicate(value))).await;
        match reached {
            Ok(Ok(value)) => Ok(value.clone()),
            _ => Err(self.state()),
        }
    }

    /// Closes the connection and stops.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Starts the agent in the background. Fails at once if the state directory is not enrolled.
pub fn spawn(
    options: RunOptions,
    handlers: Handlers,
    finished: Arc<dyn FinishedTasks>,
) -> Result<AgentHandle, StateError> {
    crate::install_crypto_provider();
    let state_dir = StateDir::new(&options.state_dir);
    state_dir.load_facts()?;
    let identity = state_dir.load_identity()?;
    state_dir.load_ca()?;
    let (publisher, state) = watch::channel(AgentState {
        phase: ConnectionPhase::Connecting,
        connections: 0,
        renewals: 0,
        last_error: None,
        certificate_not_after: Some(identity.not_after),
    });
    let stop = CancellationToken::new();
    let runner = Runner {
        options,
        state_dir,
        handlers,
        book: TaskBook::new(finished),
        places: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_TASKS)),
        publisher,
        stop: stop.clone(),
    };
    let task = tokio::spawn(runner.run());
    Ok(AgentHandle { state, stop, task })
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    options: RunOptions,
    handlers: Handlers,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StateError> {
    let folder = options.state_dir.join(TASKS_FOLDER);
    let finished = DiskFinishedTasks::open(&folder, FINISHED_CAPACITY).map_err(|source| {
        StateError::Write {
            path: folder.clone(),
            source,
        }
    })?;
    let handle = spawn(options, handlers, Arc::new(finished))?;
    shutdown.await;
    handle.stop().await;
    Ok(())
}

struct Runner {
    options: RunOptions,
    state_dir: StateDir,
    handlers: Handlers,
    book: TaskBook,
    /// Places for running tasks.
    places: Arc<tokio::sync::Semaphore>,
    publisher: watch::Sender<AgentState>,
    stop: CancellationToken,
}

enum SessionEnd {
    Stopped,
    Lost { error: String, was_connected: bool },
}

/// A clear sentence for a connection failure.
fn explain(error: &quinn::ConnectionError, identity: Option<&Identity>) -> String {
    if let Some(identity) = identity
        && identity.not_after <= SystemTime::now()
    {
        return format!(
            "this agent's certificate expired at {}; it cannot reconnect by itself: enroll it \
             again with a new token (hostplane-agent enroll --token ...)",
            time::OffsetDateTime::from(identity.not_after)
        );
    }
    let refused_certificate = match error {
        quinn::ConnectionError::ConnectionClosed(close) => {
            (0x100..0x200).contains(&u64::from(close.error_code))
        }
        quinn::ConnectionError::ApplicationClosed(close) => {
            matches!(u64::from(close.error_code), 2 | 5)
        }
        _ => false,
    };
    if refused_certificate {
        format!(
            "the coordinator refused this agent's certificate ({error}): it was revoked or \
             replaced by a newer enrollment; enroll the agent again with a new token"
        )
    } else {
        error.to_string()
    }
}

fn summary(book: &TaskBook) -> StateSummary {
    let uptime_seconds = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |seconds| seconds as u64);
    let mut load_average = [0.0f32; 3];
    if let Ok(text) = std::fs::read_to_string("/proc/loadavg") {
        for (slot, value) in load_average.iter_mut().zip(text.split_whitespace()) {
            *slot = value.parse().unwrap_or(0.0);
        }
    }
    StateSummary {
        uptime_seconds,
        load_average,
        running_tasks: book.running_count(),
        finished_tasks: book.finished_count(),
        engines: Vec::new(),
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

fn instant_at(time: SystemTime) -> tokio::time::Instant {
    tokio::time::Instant::now() + time.duration_since(SystemTime::now()).unwrap_or_default()
}

impl Runner {
    fn publish(&self, change: impl FnOnce(&mut AgentState)) {
        self.publisher.send_modify(change);
    }

    async fn run(self) {
        let mut backoff = Backoff::new(self.options.backoff_initial, self.options.backoff_maximum);
        let mut endpoint: Option<(quinn::Endpoint, bool)> = None;
        loop {
            if self.stop.is_cancelled() {
                break;
            }
            self.publish(|state| state.phase = ConnectionPhase::Connecting);
            match self.session(&mut endpoint).await {
                SessionEnd::Stopped => break,
                SessionEnd::Lost {
                    error,
                    was_connected,
                } => {
                    if was_connected {
                        backoff.reset();
                        tracing::warn!(%error, "the connection to the coordinator ended");
                    } else {
                        tracing::warn!(%error, "cannot connect to the coordinator");
                    }
                    self.publish(|state| state.last_error = Some(error));
                }
            }
            let delay = backoff.next_delay(rand::random::<f64>());
            self.publish(|state| state.phase = ConnectionPhase::Waiting { retry_in: delay });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => break,
            }
        }
        if let Some((endpoint, _)) = endpoint {
            endpoint.close(quinn::VarInt::from_u32(0), b"stopping");
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        }
        self.publish(|state| state.phase = ConnectionPhase::Stopped);
    }

    async fn session(&self, endpoint: &mut Option<(quinn::Endpoint, bool)>) -> SessionEnd {
        let lost = |error: String| SessionEnd::Lost {
            error,
            was_connected: false,
        };
        // Read the state every time: `enroll` may have replaced it while we run.
        let loaded = self.state_dir.load_facts().and_then(|facts| {
            Ok((
                facts,
                self.state_dir.load_identity()?,
                self.state_dir.load_ca()?,
            ))
        });
        let (facts, identity, ca) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => return lost(error.to_string()),
        };
        let address = self
            .options
            .coordinator
            .clone()
            .unwrap_or(facts.coordinator);
        let remote: SocketAddr = match crate::enroll::resolve(&address).await {
            Ok(remote) => remote,
            Err(error) => return lost(error.to_string()),
        };
        if endpoint
            .as_ref()
            .is_none_or(|(_, ipv4)| *ipv4 != remote.is_ipv4())
        {
            match crate::enroll::client_endpoint(remote) {
                Ok(created) => *endpoint = Some((created, remote.is_ipv4())),
                Err(error) => return lost(format!("cannot open a UDP socket: {error}")),
            }
        }
        let (endpoint, _) = endpoint.as_ref().expect("set above");
        let config = match agent_config(&ca, &identity, self.options.transport) {
            Ok(config) => config,
            Err(error) => return lost(format!("the agent's certificate is unusable: {error}")),
        };
        let connecting =
            match endpoint.connect_with(config, remote, protocol::COORDINATOR_SERVER_NAME) {
                Ok(connecting) => connecting,
                Err(error) => return lost(error.to_string()),
            };
        let handshake = tokio::time::timeout(self.options.connect_timeout, async {
            let connection = connecting.await?;
            let (mut send, receive) = connection.open_bi().await?;
            let hello = Hello::new(crate::VERSION, Features::CERTIFICATE_RENEWAL);
            write_hello(&mut send, &hello)
                .await
                .map_err(|error| wire_to_connection(&connection, error))?;
            let mut reader = FrameReader::new(receive, 64 * 1024);
            let reply = reader
                .handshake::<HelloReply>()
                .await
                .map_err(|error| wire_to_connection(&connection, error))?;
            Ok::<_, quinn::ConnectionError>((connection, send, reader, reply))
        });
        let (connection, send, reader, reply) = tokio::select! {
            result = handshake => match result {
                Ok(Ok(parts)) => parts,
                Ok(Err(error)) => return lost(explain(&error, Some(&identity))),
                Err(_) => return lost(format!(
                    "no answer from {address} within {:?}",
                    self.options.connect_timeout
                )),
            },
            _ = self.stop.cancelled() => return SessionEnd::Stopped,
        };
        let welcome = match reply {
            Some(HelloReply::Welcome(welcome)) => welcome,
            Some(HelloReply::Refused(refused)) => {
                connection.close(quinn::VarInt::from_u32(0), b"refused");
                tracing::error!(reason = ?refused.reason, message = %refused.message, "the coordinator refused this agent");
                return lost(format!(
                    "the coordinator refused this agent: {}",
                    refused.message
                ));
            }
            None => return lost("the coordinator closed the stream before answering".into()),
        };
        tracing::info!(
            instance = welcome.instance_id,
            generation = welcome.generation,
            %address,
            "connected to the coordinator"
        );
        self.publish(|state| {
            state.phase = ConnectionPhase::Connected {
                instance_id: welcome.instance_id,
                generation: welcome.generation,
            };
            state.connections += 1;
            state.last_error = None;
            state.certificate_not_after = Some(identity.not_after);
        });
        let renewal = welcome.features.contains(Features::CERTIFICATE_RENEWAL);
        let heartbeat = Duration::from_millis(welcome.heartbeat_interval_ms.clamp(500, 600_000));
        let error = self
            .connected(&connection, send, reader, identity, heartbeat, renewal)
            .await;
        match error {
            None => {
                connection.close(quinn::VarInt::from_u32(0), b"stopping");
                SessionEnd::Stopped
            }
            Some(error) => SessionEnd::Lost {
                error,
                was_connected: true,
            },
        }
    }

    /// Serves one established connection; `None` when asked to stop, else why it ended.
    async fn connected(
        &self,
        connection: &quinn::Connection,
        mut send: quinn::SendStream,
        mut reader: FrameReader<quinn::RecvStream>,
        mut identity: Identity,
        heartbeat_interval: Duration,
        renewal: bool,
    ) -> Option<String> {
        let mut heartbeat = tokio::time::interval(heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let renew_sleep = tokio::time::sleep_until(instant_at(identity.renew_at()));
        tokio::pin!(renew_sleep);
        let mut pending_key: Option<KeyPair> = None;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return None,
                _ = heartbeat.tick() => {
                    let message = AgentMessage::Heartbeat(Heartbeat {
                        sent_at_unix_ms: unix_ms(SystemTime::now()),
                        summary: summary(&self.book),
                    });
                    if let Err(error) = write_message(&mut send, &message).await {
                        return Some(wire_to_connection(connection, error).to_string());
                    }
                }
                _ = &mut renew_sleep, if renewal && pending_key.is_none() => {
                    // Retry in a tenth of the lifetime if no answer comes.
                    let lifetime = identity.not_after.duration_since(identity.not_before).unwrap_or_default();
                    renew_sleep.as_mut().reset(tokio::time::Instant::now() + (lifetime / 10).max(Duration::from_secs(1)));
                    match renewal_request() {
                        Ok((key, csr_der)) => {
                            pending_key = Some(key);
                            let message = AgentMessage::RenewCertificate { csr_der };
                            if let Err(error) = write_message(&mut send, &message).await {
                                return Some(wire_to_connection(connection, error).to_string());
                            }
                        }
                        Err(error) => tracing::error!(%error, "cannot make a key for renewal"),
                    }
                }
                message = reader.message::<CoordinatorMessage>() => match message {
                    Ok(Some(CoordinatorMessage::HeartbeatAck(_))) => {}
                    Ok(Some(CoordinatorMessage::CertificateRenewed { certificate_der })) => {
                        let Some(key) = pending_key.take() else { continue };
                        match self.install_renewal(&key, certificate_der) {
                            Ok(renewed) => {
                                identity = renewed;
                                renew_sleep.as_mut().reset(instant_at(identity.renew_at()));
                                self.publish(|state| {
                                    state.renewals += 1;
                                    state.certificate_not_after = Some(identity.not_after);
                                });
                                tracing::info!(not_after = ?identity.not_after, "renewed the agent certificate");
                            }
                            Err(error) => tracing::error!(%error, "cannot use the renewed certificate"),
                        }
                    }
                    Ok(Some(CoordinatorMessage::Error(error))) => {
                        tracing::warn!(%error, "the coordinator answered with an error");
                        pending_key = None;
                    }
                    Ok(Some(other)) => {
                        tracing::warn!(message = ?other, "unexpected message on the control stream");
                    }
                    Ok(None) => return Some("the coordinator ended the control stream".into()),
                    Err(error) => return Some(wire_to_connection(connection, error).to_string()),
                },
                incoming = connection.accept_bi() => match incoming {
                    Ok((send, receive)) => {
                        let served = ServedTask {
                            book: self.book.clone(),
                            handlers: self.handlers.clone(),
                            places: self.places.clone(),
                            data: DataChannel::new(connection.clone()),
                        };
                        tokio::spawn(serve_task(send, receive, served));
                    }
                    Err(error) => return Some(explain(&error, Some(&identity))),
                },
            }
        }
    }

    fn install_renewal(&self, key: &KeyPair, certificate_der: Vec<u8>) -> Result<Identity, String> {
        let issued_key = x509_parser::parse_x509_certificate(&certificate_der)
            .map(|(_, certificate)| certificate.public_key().raw.to_vec())
            .map_err(|error| format!("unreadable certificate: {error}"))?;
        if issued_key != key.subject_public_key_info() {
            return Err("the renewed certificate is not for the key sent".into());
        }
        let identity =
            Identity::new(certificate_der, key.serialize_der()).ok_or("unreadable certificate")?;
        self.state_dir
            .save_identity(&identity)
            .map_err(|error| error.to_string())?;
        Ok(identity)
    }
}

fn renewal_request() -> Result<(KeyPair, Vec<u8>), rcgen::Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "hostplane-agent");
    let csr = params.serialize_request(&key)?;
    Ok((key, csr.der().to_vec()))
}

/// A wire failure as the connection error behind it, when there is one.
fn wire_to_connection(connection: &quinn::Connection, error: WireError) -> quinn::ConnectionError {
    connection.close_reason().unwrap_or_else(|| {
        tracing::debug!(%error, "closing the connection after a wire error");
        connection.close(quinn::VarInt::from_u32(4), error.to_string().as_bytes());
        quinn::ConnectionError::LocallyClosed
    })
}

/// What serving a task stream needs from the runner.
struct ServedTask {
    book: TaskBook,
    handlers: Handlers,
    places: Arc<tokio::sync::Semaphore>,
    data: DataChannel,
}

/// Serves one task stream opened by the coordinator.
async fn serve_task(mut send: quinn::SendStream, receive: quinn::RecvStream, served: ServedTask) {
    let ServedTask {
        book,
        handlers,
        places,
        data,
    } = served;
    let mut reader = FrameReader::new(receive, protocol::MAX_FRAME);
    let first = tokio::time::timeout(
        Duration::from_secs(10),
        reader.message::<CoordinatorMessage>(),
    )
    .await;
    let delivery = match first {
        Ok(Ok(Some(CoordinatorMessage::Task(delivery)))) => delivery,
        Ok(Err(WireError::Protocol(error))) => {
            // A message this agent cannot decode (for example a newer operation): say so.
            let _ = write_message(
                &mut send,
                &AgentMessage::TaskResult {
                    task_id: protocol::TaskId([0; 16]),
                    outcome: Err(ErrorData::new(
                        ErrorCode::Unsupported,
                        format!("this agent cannot read the request: {error}"),
                    )),
                },
            )
            .await;
            let _ = send.finish();
            return;
        }
        _ => {
            let _ = send.reset(quinn::VarInt::from_u32(4));
            return;
        }
    };
    let task_id = delivery.task_id;
    let outcome = match book.admit(task_id) {
        Admission::Finished(outcome) => {
            let _ = write_message(
                &mut send,
                &AgentMessage::TaskAck {
                    task_id,
                    duplicate: true,
                },
            )
            .await;
            outcome
        }
        Admission::Running(mut waiting) => {
            let _ = write_message(
                &mut send,
                &AgentMessage::TaskAck {
                    task_id,
                    duplicate: true,
                },
            )
            .await;
            match waiting.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone().expect("waited for Some"),
                Err(_) => Err(ErrorData::new(
                    ErrorCode::Internal,
                    "the running copy of this task vanished",
                )),
            }
        }
        Admission::Run => {
            // Durably noted before the acknowledgement, so a delivery repeated after this agent
            // restarted finds the task interrupted rather than new.
            let remember = delivery.operation.changes_state();
            if remember {
                book.mark_started(task_id);
            }
            let _ = write_message(
                &mut send,
                &AgentMessage::TaskAck {
                    task_id,
                    duplicate: false,
                },
            )
            .await;
            let outcome = match places.acquire_owned().await {
                Ok(_place) => perform(&mut send, &mut reader, delivery, handlers, data).await,
                Err(_) => Err(ErrorData::new(ErrorCode::Internal, "the agent is stopping")),
            };
            book.finish_with(task_id, &outcome, remember);
            outcome
        }
    };
    let _ = write_message(&mut send, &AgentMessage::TaskResult { task_id, outcome }).await;
    let _ = send.finish();
}

/// Runs a task's handler, forwarding its reports, until it ends, is cancelled or times out.
async fn perform(
    send: &mut quinn::SendStream,
    reader: &mut FrameReader<quinn::RecvStream>,
    delivery: TaskDelivery,
    handlers: Handlers,
    data: DataChannel,
) -> protocol::TaskOutcome {
    let task_id = delivery.task_id;
    let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(delivery.deadline_unix_ms);
    let (events, mut reports) = mpsc::channel(64);
    let context =
        TaskContext::new(task_id, deadline, delivery.attempt, events).with_data_channel(data);
    let mut work = tokio::spawn(handlers.dispatch(delivery.operation, context));
    let timeout = tokio::time::sleep_until(instant_at(deadline));
    tokio::pin!(timeout);
    let mut reading = true;
    let forward = async |send: &mut quinn::SendStream, event: TaskEvent| {
        let message = match event {
            TaskEvent::Progress { percent, message } => AgentMessage::TaskProgress {
                task_id,
                percent,
                message,
            },
            TaskEvent::Log(line) => AgentMessage::TaskLog { task_id, line },
        };
        let _ = write_message(send, &message).await;
    };
    let outcome = loop {
        tokio::select! {
            Some(event) = reports.recv() => forward(send, event).await,
            joined = &mut work => break joined.unwrap_or_else(|error| Err(ErrorData::new(
                ErrorCode::Internal,
                format!("the operation's handler failed: {error}"),
            ))),
            message = reader.message::<CoordinatorMessage>(), if reading => match message {
                Ok(Some(CoordinatorMessage::CancelTask { task_id: cancelled })) if cancelled == task_id => {
                    work.abort();
                    break Err(ErrorData::new(ErrorCode::Cancelled, "the coordinator cancelled the task"));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => reading = false,
            },
            _ = &mut timeout => {
                work.abort();
                break Err(ErrorData::new(ErrorCode::Timeout, "the task's deadline passed before it finished"));
            }
        }
    };
    while let Ok(event) = reports.try_recv() {
        forward(send, event).await;
    }
    outcome
}
