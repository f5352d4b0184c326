//! Golden wire bytes of every protocol enum: one value of each variant, encoded with the
//! protocol's bincode configuration and compared with bytes committed here.
//!
//! bincode writes a variant as its position, so inserting, removing or reordering a variant
//! changes these bytes and fails the test; so does any change to the layout of what a variant
//! carries. Appending a variant at the end fails the completeness check until its golden value is
//! added here. A failure lists every value whose bytes differ, with the bytes found.

use std::fmt::Debug;

use protocol::web::{
    Bypass, CacheSettings, CacheStatus, CertificateSource, CertificateStatus, CertificateUpload,
    ErrorLevel, Limits, Logs, Presence, PurgeReport, PurgeRequest, Redirects, VhostId, VhostInfo,
    VhostSpec, WwwRedirect,
};
use protocol::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The payload of a message frame (without its length prefix), in lowercase hex.
fn wire_hex<T: Serialize>(value: &T) -> String {
    let frame = encode_message(value).unwrap();
    frame[LENGTH_PREFIX..]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The number of variants of enum `T`, found from the wire: the first variant index whose
/// decoding fails for a reason other than the missing variant body.
fn variant_count<T: DeserializeOwned>() -> usize {
    for index in 0..=250u8 {
        match decode_payload::<T>(&[index]) {
            Ok(_)
            | Err(ProtocolError::Decode(bincode::error::DecodeError::UnexpectedEnd { .. })) => {}
            Err(_) => return usize::from(index),
        }
    }
    panic!("no unknown variant below 251");
}

/// Checks that `cases` hold one value of each variant of `T` in wire order, that each encodes to
/// its committed bytes, and that those bytes decode back to the value.
fn check<T>(cases: &[(T, &str)])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let name = std::any::type_name::<T>();
    let mut differences = Vec::new();
    for (index, (value, golden)) in cases.iter().enumerate() {
        let found = wire_hex(value);
        if found != *golden {
            differences.push(format!("  [{index}] {value:?}\n      found \"{found}\""));
            continue;
        }
        let frame = encode_message(value).unwrap();
        let decoded: T = decode_payload(&frame[LENGTH_PREFIX..]).unwrap();
        assert_eq!(&decoded, value, "{name}[{index}] does not decode back");
    }
    assert!(
        differences.is_empty(),
        "{name}: the wire bytes changed (variants are only ever appended at the end):\n{}",
        differences.join("\n")
    );
    let indexes: Vec<u8> = cases
        .iter()
        .map(|(value, _)| encode_message(value).unwrap()[LENGTH_PREFIX])
        .collect();
    let expected: Vec<u8> = (0..variant_count::<T>() as u8).collect();
    assert_eq!(
        indexes, expected,
        "{name}: one golden value per variant, in wire order"
    );
}

fn task() -> TaskId {
    TaskId([0x11; 16])
}

fn vhost() -> VhostId {
    VhostId::parse("site").unwrap()
}

fn spec() -> VhostSpec {
    VhostSpec {
        server_names: vec!["example.org".into()],
        root: None,
        proxy_pass: None,
        php: None,
        redirects: Redirects::default(),
        logs: Logs::default(),
        limits: Limits::default(),
    }
}

fn upload() -> CertificateUpload {
    CertificateUpload {
        certificate: "C".into(),
        private_key: Secret::new("K"),
        chain: None,
        redirect_http: None,
    }
}

fn cache_settings() -> CacheSettings {
    CacheSettings {
        ttl_seconds: 60,
        max_size_megabytes: 10,
        bypass: Bypass::default(),
    }
}

fn vhost_info() -> VhostInfo {
    VhostInfo {
        id: vhost(),
        spec: spec(),
        version: 1,
        hash: "h".into(),
        applied_at_unix: 2,
        tls: false,
        cache: None,
        extra: None,
        history: vec![],
    }
}

fn error_data() -> ErrorData {
    ErrorData::new(ErrorCode::NotFound, "x")
}

fn inventory() -> TaskInventory {
    TaskInventory {
        running: vec![task()],
        finished: vec![],
    }
}

#[test]
fn engine() {
    check(&[
        (Engine::Nginx, "00"),
        (Engine::MariaDb, "01"),
        (Engine::PostgreSql, "02"),
    ]);
}

#[test]
fn database_engine() {
    check(&[
        (DatabaseEngine::MariaDb, "00"),
        (DatabaseEngine::PostgreSql, "01"),
    ]);
}

#[test]
fn error_code() {
    check(&[
        (ErrorCode::InvalidInput, "00"),
        (ErrorCode::NotFound, "01"),
        (ErrorCode::Conflict, "02"),
        (ErrorCode::Unavailable, "03"),
        (ErrorCode::Timeout, "04"),
        (ErrorCode::Internal, "05"),
        (ErrorCode::Unsupported, "06"),
        (ErrorCode::Cancelled, "07"),
        (ErrorCode::PermissionDenied, "08"),
        (ErrorCode::Unauthenticated, "09"),
        (ErrorCode::ResourceExhausted, "0a"),
        (ErrorCode::CommandFailed, "0b"),
        (ErrorCode::Interrupted, "0c"),
    ]);
}

#[test]
fn refusal_reason() {
    check(&[
        (RefusalReason::UnsupportedVersion { supported: 1 }, "0001"),
        (RefusalReason::UnknownInstance, "01"),
        (RefusalReason::Revoked, "02"),
        (RefusalReason::StaleGeneration, "03"),
        (RefusalReason::ShuttingDown, "04"),
        (RefusalReason::AlreadyConnected, "05"),
    ]);
}

#[test]
fn hello_reply() {
    check(&[
        (
            HelloReply::Welcome(Welcome {
                coordinator_version: "1".into(),
                instance_id: 7,
                generation: 2,
                features: Features::NONE,
                heartbeat_interval_ms: 1000,
            }),
            "000131070200fb03e8",
        ),
        (
            HelloReply::Refused(Refused {
                reason: RefusalReason::Revoked,
                message: "x".into(),
            }),
            "01020178",
        ),
    ]);
}

#[test]
fn enroll_response() {
    check(&[
        (
            EnrollResponse::Enrolled(Enrollment {
                certificate_der: vec![1],
                ca_certificate_der: vec![2],
                instance_id: 7,
                generation: 1,
            }),
            "00010101020701",
        ),
        (EnrollResponse::Refused(error_data()), "0101017800"),
    ]);
}

#[test]
fn agent_message() {
    check(&[
        (
            AgentMessage::Heartbeat(Heartbeat {
                sent_at_unix_ms: 1,
                summary: StateSummary {
                    uptime_seconds: 2,
                    load_average: [0.5, 0.25, 0.0],
                    running_tasks: 3,
                    finished_tasks: 4,
                    engines: vec![EngineStatus {
                        engine: Engine::Nginx,
                        version: "1".into(),
                        active: true,
                    }],
                },
            }),
            "0001023f0000003e8000000000000003040100013101",
        ),
        (
            AgentMessage::TaskAck {
                task_id: task(),
                duplicate: true,
            },
            "011111111111111111111111111111111101",
        ),
        (
            AgentMessage::TaskProgress {
                task_id: task(),
                percent: 50,
                message: "m".into(),
            },
            "021111111111111111111111111111111132016d",
        ),
        (
            AgentMessage::TaskLog {
                task_id: task(),
                line: "l".into(),
            },
            "0311111111111111111111111111111111016c",
        ),
        (
            AgentMessage::TaskResult {
                task_id: task(),
                outcome: Err(error_data()),
            },
            "04111111111111111111111111111111110101017800",
        ),
        (
            AgentMessage::Reconcile(inventory()),
            "05011111111111111111111111111111111100",
        ),
        (
            AgentMessage::RenewCertificate { csr_der: vec![3] },
            "060103",
        ),
    ]);
}

#[test]
fn coordinator_message() {
    check(&[
        (
            CoordinatorMessage::HeartbeatAck(HeartbeatAck {
                heartbeat_sent_at_unix_ms: 1,
                coordinator_time_unix_ms: 2,
            }),
            "000102",
        ),
        (
            CoordinatorMessage::Task(TaskDelivery {
                task_id: task(),
                operation: Operation::VhostList,
                deadline_unix_ms: 1000,
                attempt: 1,
            }),
            "01111111111111111111111111111111110afb03e801",
        ),
        (
            CoordinatorMessage::CancelTask { task_id: task() },
            "0211111111111111111111111111111111",
        ),
        (
            CoordinatorMessage::ResultRecorded { task_id: task() },
            "0311111111111111111111111111111111",
        ),
        (
            CoordinatorMessage::Reconcile(inventory()),
            "04011111111111111111111111111111111100",
        ),
        (
            CoordinatorMessage::CertificateRenewed {
                certificate_der: vec![4],
            },
            "050104",
        ),
        (CoordinatorMessage::Error(error_data()), "0601017800"),
    ]);
}

#[test]
fn operation() {
    let names = || vec!["nginx".to_string()];
    check(&[
        (Operation::Ping { payload: vec![9] }, "000109"),
        (
            Operation::PackageList { names: names() },
            "0101056e67696e78",
        ),
        (
            Operation::PackageInstall { names: names() },
            "0201056e67696e78",
        ),
        (
            Operation::PackageUpgrade { names: names() },
            "0301056e67696e78",
        ),
        (
            Operation::PackageRemove { names: names() },
            "0401056e67696e78",
        ),
        (
            Operation::DatabaseList {
                engine: DatabaseEngine::PostgreSql,
            },
            "0501",
        ),
        (
            Operation::DatabaseCreate {
                engine: DatabaseEngine::MariaDb,
                name: "d".into(),
                user: "u".into(),
                password: Secret::new("p"),
            },
            "0600016401750170",
        ),
        (
            Operation::DatabaseChangePassword {
                engine: DatabaseEngine::MariaDb,
                user: "u".into(),
                password: Secret::new("p"),
            },
            "070001750170",
        ),
        (
            Operation::DatabaseDrop {
                engine: DatabaseEngine::MariaDb,
                name: "d".into(),
            },
            "08000164",
        ),
        (
            Operation::DatabaseDump {
                engine: DatabaseEngine::PostgreSql,
                name: "d".into(),
                compress_zstd: true,
            },
            "0901016401",
        ),
        (Operation::VhostList, "0a"),
        (Operation::VhostGet { id: vhost() }, "0b0473697465"),
        (
            Operation::VhostPut {
                id: vhost(),
                spec: spec(),
                presence: Presence::Any,
            },
            "0c0473697465010b6578616d706c652e6f726700000000000101000002",
        ),
        (Operation::VhostDelete { id: vhost() }, "0d0473697465"),
        (
            Operation::VhostSetExtra {
                id: vhost(),
                extra: Some("e".into()),
            },
            "0e0473697465010165",
        ),
        (Operation::CertificateGet { vhost: vhost() }, "0f0473697465"),
        (
            Operation::CertificateDeploy {
                vhost: vhost(),
                upload: upload(),
                source: CertificateSource::Upload,
            },
            "1004736974650143014b000000",
        ),
        (
            Operation::CertificateRemove { vhost: vhost() },
            "110473697465",
        ),
        (
            Operation::CertificateRecordAttempt {
                vhost: vhost(),
                source: CertificateSource::Acme,
                error: Some("r".into()),
            },
            "12047369746501010172",
        ),
        (
            Operation::CertificateRequestKey { vhost: vhost() },
            "130473697465",
        ),
        (
            Operation::CertificateDeployIssued {
                vhost: vhost(),
                certificate_chain: "C".into(),
                redirect_http: Some(true),
                source: CertificateSource::Acme,
            },
            "1404736974650143010101",
        ),
        (
            Operation::AcmeChallengePut {
                vhost: vhost(),
                token: "t".into(),
                key_authorization: "t.k".into(),
            },
            "150473697465017403742e6b",
        ),
        (
            Operation::AcmeChallengeRemove {
                vhost: vhost(),
                token: "t".into(),
            },
            "1604736974650174",
        ),
        (Operation::CacheGet { vhost: vhost() }, "170473697465"),
        (
            Operation::CacheSet {
                vhost: vhost(),
                settings: cache_settings(),
                presence: Presence::New,
            },
            "1804736974653c0a000000",
        ),
        (Operation::CacheDisable { vhost: vhost() }, "190473697465"),
        (
            Operation::CachePurge {
                vhost: vhost(),
                request: PurgeRequest::All,
            },
            "1a047369746500",
        ),
        (
            Operation::CertificateCheck {
                vhost: vhost(),
                upload: upload(),
            },
            "1b04736974650143014b0000",
        ),
    ]);
}

#[test]
fn operation_output() {
    check(&[
        (OperationOutput::Pong { payload: vec![9] }, "000109"),
        (
            OperationOutput::Packages(vec![PackageInfo {
                name: "nginx".into(),
                version: "1".into(),
                architecture: "all".into(),
            }]),
            "0101056e67696e78013103616c6c",
        ),
        (
            OperationOutput::Databases(vec![DatabaseInfo {
                name: "d".into(),
                engine: DatabaseEngine::MariaDb,
                size_bytes: 5,
                owner: "u".into(),
            }]),
            "0201016400050175",
        ),
        (OperationOutput::Done, "03"),
        (
            OperationOutput::DumpFinished {
                bytes: 6,
                sha256: [0xab; 32],
            },
            "0406abababababababababababababababababababababababababababababababab",
        ),
        (
            OperationOutput::Vhosts(vec![vhost_info()]),
            "05010473697465010b6578616d706c652e6f72670000000000010100000101680400000000",
        ),
        (
            OperationOutput::Vhost(Box::new(vhost_info())),
            "060473697465010b6578616d706c652e6f72670000000000010100000101680400000000",
        ),
        (
            OperationOutput::Certificate(CertificateStatus {
                certificate: None,
                redirect_http: true,
                last_attempt: None,
            }),
            "07000100",
        ),
        (
            OperationOutput::CertificateSigningRequest { csr_der: vec![7] },
            "080107",
        ),
        (
            OperationOutput::Cache(CacheStatus {
                settings: Some(cache_settings()),
                size_bytes: 8,
                files: 1,
            }),
            "09013c0a00000801",
        ),
        (
            OperationOutput::CachePurged(PurgeReport { removed_files: 2 }),
            "0a02",
        ),
    ]);
}

#[test]
fn presence() {
    check(&[
        (Presence::New, "00"),
        (Presence::Existing, "01"),
        (Presence::Any, "02"),
    ]);
}

#[test]
fn www_redirect() {
    check(&[
        (WwwRedirect::None, "00"),
        (WwwRedirect::ToWww, "01"),
        (WwwRedirect::FromWww, "02"),
    ]);
}

#[test]
fn error_level() {
    check(&[
        (ErrorLevel::Warn, "00"),
        (ErrorLevel::Error, "01"),
        (ErrorLevel::Crit, "02"),
    ]);
}

#[test]
fn certificate_source() {
    check(&[
        (CertificateSource::Upload, "00"),
        (CertificateSource::Acme, "01"),
    ]);
}

#[test]
fn purge_request() {
    check(&[
        (PurgeRequest::All, "00"),
        (PurgeRequest::Paths(vec!["/a".into()]), "0101022f61"),
    ]);
}
