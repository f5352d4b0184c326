//! Proptest strategies for every wire type, covering every enum variant.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use protocol::web::*;
use protocol::*;

pub fn text() -> impl Strategy<Value = String> {
    "\\PC{0,12}"
}

pub fn names() -> impl Strategy<Value = Vec<String>> {
    vec("[a-z0-9.+-]{1,12}", 0..4)
}

pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..40)
}

pub fn task_id() -> impl Strategy<Value = TaskId> {
    any::<[u8; 16]>().prop_map(TaskId::from_bytes)
}

pub fn secret() -> impl Strategy<Value = Secret> {
    text().prop_map(Secret::new)
}

pub fn database_engine() -> impl Strategy<Value = DatabaseEngine> {
    prop_oneof![
        Just(DatabaseEngine::MariaDb),
        Just(DatabaseEngine::PostgreSql)
    ]
}

pub fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        bytes().prop_map(|payload| Operation::Ping { payload }),
        names().prop_map(|names| Operation::PackageList { names }),
        names().prop_map(|names| Operation::PackageInstall { names }),
        names().prop_map(|names| Operation::PackageUpgrade { names }),
        names().prop_map(|names| Operation::PackageRemove { names }),
        database_engine().prop_map(|engine| Operation::DatabaseList { engine }),
        (database_engine(), text(), text(), secret()).prop_map(|(engine, name, user, password)| {
            Operation::DatabaseCreate {
                engine,
                name,
                user,
                password,
            }
        }),
        (database_engine(), text(), secret()).prop_map(|(engine, user, password)| {
            Operation::DatabaseChangePassword {
                engine,
                user,
                password,
            }
        }),
        (database_engine(), text())
            .prop_map(|(engine, name)| Operation::DatabaseDrop { engine, name }),
        (database_engine(), text(), any::<bool>()).prop_map(|(engine, name, compress_zstd)| {
            Operation::DatabaseDump {
                engine,
                name,
                compress_zstd,
            }
        }),
        Just(Operation::VhostList),
        vhost_id().prop_map(|id| Operation::VhostGet { id }),
        (vhost_id(), vhost_spec(), presence())
            .prop_map(|(id, spec, presence)| Operation::VhostPut { id, spec, presence }),
        vhost_id().prop_map(|id| Operation::VhostDelete { id }),
        (vhost_id(), option::of(text()))
            .prop_map(|(id, extra)| Operation::VhostSetExtra { id, extra }),
        vhost_id().prop_map(|vhost| Operation::CertificateGet { vhost }),
        (vhost_id(), certificate_upload(), certificate_source()).prop_map(
            |(vhost, upload, source)| Operation::CertificateDeploy {
                vhost,
                upload,
                source,
            }
        ),
        vhost_id().prop_map(|vhost| Operation::CertificateRemove { vhost }),
        (vhost_id(), certificate_source(), option::of(text())).prop_map(
            |(vhost, source, error)| Operation::CertificateRecordAttempt {
                vhost,
                source,
                error,
            }
        ),
        vhost_id().prop_map(|vhost| Operation::CertificateRequestKey { vhost }),
        (
            vhost_id(),
            text(),
            option::of(any::<bool>()),
            certificate_source()
        )
            .prop_map(|(vhost, certificate_chain, redirect_http, source)| {
                Operation::CertificateDeployIssued {
                    vhost,
                    certificate_chain,
                    redirect_http,
                    source,
                }
            }),
        (vhost_id(), text(), text()).prop_map(|(vhost, token, key_authorization)| {
            Operation::AcmeChallengePut {
                vhost,
                token,
                key_authorization,
            }
        }),
        (vhost_id(), text())
            .prop_map(|(vhost, token)| Operation::AcmeChallengeRemove { vhost, token }),
        vhost_id().prop_map(|vhost| Operation::CacheGet { vhost }),
        (vhost_id(), cache_settings(), presence()).prop_map(|(vhost, settings, presence)| {
            Operation::CacheSet {
                vhost,
                settings,
                presence,
            }
        }),
        vhost_id().prop_map(|vhost| Operation::CacheDisable { vhost }),
        (vhost_id(), purge_request())
            .prop_map(|(vhost, request)| Operation::CachePurge { vhost, request }),
        (vhost_id(), certificate_upload())
            .prop_map(|(vhost, upload)| Operation::CertificateCheck { vhost, upload }),
    ]
}

pub fn vhost_id() -> impl Strategy<Value = VhostId> {
    "[a-z0-9][a-z0-9-]{0,20}".prop_map(|id| VhostId::parse(&id).unwrap())
}

pub fn presence() -> impl Strategy<Value = Presence> {
    prop_oneof![
        Just(Presence::New),
        Just(Presence::Existing),
        Just(Presence::Any)
    ]
}

pub fn www_redirect() -> impl Strategy<Value = WwwRedirect> {
    prop_oneof![
        Just(WwwRedirect::None),
        Just(WwwRedirect::ToWww),
        Just(WwwRedirect::FromWww)
    ]
}

pub fn error_level() -> impl Strategy<Value = ErrorLevel> {
    prop_oneof![
        Just(ErrorLevel::Warn),
        Just(ErrorLevel::Error),
        Just(ErrorLevel::Crit)
    ]
}

/// Any spec, valid or not: the wire carries what it is given.
pub fn vhost_spec() -> impl Strategy<Value = VhostSpec> {
    (
        vec(text(), 0..3),
        option::of(text()),
        option::of(text()),
        option::of(text()),
        (www_redirect(), any::<bool>()),
        (any::<bool>(), error_level()),
        (option::of(any::<u64>()), option::of(any::<u32>())),
    )
        .prop_map(
            |(server_names, root, proxy_pass, php, (www, https), (access, error_level), limits)| {
                VhostSpec {
                    server_names,
                    root,
                    proxy_pass,
                    php: php.map(|socket| PhpSpec { socket }),
                    redirects: Redirects { www, https },
                    logs: Logs {
                        access,
                        error_level,
                    },
                    limits: Limits {
                        max_body_bytes: limits.0,
                        upstream_timeout_seconds: limits.1,
                    },
                }
            },
        )
}

pub fn certificate_source() -> impl Strategy<Value = CertificateSource> {
    prop_oneof![
        Just(CertificateSource::Upload),
        Just(CertificateSource::Acme)
    ]
}

pub fn certificate_upload() -> impl Strategy<Value = CertificateUpload> {
    (
        text(),
        secret(),
        option::of(text()),
        option::of(any::<bool>()),
    )
        .prop_map(
            |(certificate, private_key, chain, redirect_http)| CertificateUpload {
                certificate,
                private_key,
                chain,
                redirect_http,
            },
        )
}

pub fn cache_settings() -> impl Strategy<Value = CacheSettings> {
    (any::<u32>(), any::<u32>(), names(), names()).prop_map(
        |(ttl_seconds, max_size_megabytes, cookies, paths)| CacheSettings {
            ttl_seconds,
            max_size_megabytes,
            bypass: Bypass { cookies, paths },
        },
    )
}

pub fn purge_request() -> impl Strategy<Value = PurgeRequest> {
    prop_oneof![
        Just(PurgeRequest::All),
        names().prop_map(PurgeRequest::Paths)
    ]
}

pub fn vhost_info() -> impl Strategy<Value = VhostInfo> {
    (
        vhost_id(),
        vhost_spec(),
        (any::<u64>(), text(), any::<i64>(), any::<bool>()),
        option::of(cache_settings()),
        option::of(text()),
        vec(
            (any::<u64>(), text(), any::<i64>()).prop_map(|(version, hash, applied_at_unix)| {
                VersionSummary {
                    version,
                    hash,
                    applied_at_unix,
                }
            }),
            0..3,
        ),
    )
        .prop_map(
            |(id, spec, (version, hash, applied_at_unix, tls), cache, extra, history)| VhostInfo {
                id,
                spec,
                version,
                hash,
                applied_at_unix,
                tls,
                cache,
                extra,
                history,
            },
        )
}

pub fn certificate_status() -> impl Strategy<Value = CertificateStatus> {
    let info = (
        certificate_source(),
        text(),
        text(),
        names(),
        any::<i64>(),
        any::<i64>(),
        text(),
    )
        .prop_map(
            |(source, issuer, subject, names, not_before_unix, not_after_unix, fingerprint)| {
                CertificateInfo {
                    source,
                    issuer,
                    subject,
                    names,
                    not_before_unix,
                    not_after_unix,
                    fingerprint_sha256: fingerprint,
                }
            },
        );
    let attempt = (any::<i64>(), certificate_source(), option::of(text())).prop_map(
        |(at_unix, source, error)| CertificateAttempt {
            at_unix,
            source,
            error,
        },
    );
    (option::of(info), any::<bool>(), option::of(attempt)).prop_map(
        |(certificate, redirect_http, last_attempt)| CertificateStatus {
            certificate,
            redirect_http,
            last_attempt,
        },
    )
}

pub fn cache_status() -> impl Strategy<Value = CacheStatus> {
    (option::of(cache_settings()), any::<u64>(), any::<u64>()).prop_map(
        |(settings, size_bytes, files)| CacheStatus {
            settings,
            size_bytes,
            files,
        },
    )
}

pub fn package_info() -> impl Strategy<Value = PackageInfo> {
    (text(), text(), text()).prop_map(|(name, version, architecture)| PackageInfo {
        name,
        version,
        architecture,
    })
}

pub fn database_info() -> impl Strategy<Value = DatabaseInfo> {
    (text(), database_engine(), any::<u64>(), text()).prop_map(
        |(name, engine, size_bytes, owner)| DatabaseInfo {
            name,
            engine,
            size_bytes,
            owner,
        },
    )
}

pub fn operation_output() -> impl Strategy<Value = OperationOutput> {
    prop_oneof![
        bytes().prop_map(|payload| OperationOutput::Pong { payload }),
        vec(package_info(), 0..3).prop_map(OperationOutput::Packages),
        vec(database_info(), 0..3).prop_map(OperationOutput::Databases),
        Just(OperationOutput::Done),
        (any::<u64>(), any::<[u8; 32]>())
            .prop_map(|(bytes, sha256)| OperationOutput::DumpFinished { bytes, sha256 }),
        vec(vhost_info(), 0..3).prop_map(OperationOutput::Vhosts),
        vhost_info().prop_map(|info| OperationOutput::Vhost(Box::new(info))),
        certificate_status().prop_map(OperationOutput::Certificate),
        bytes().prop_map(|csr_der| OperationOutput::CertificateSigningRequest { csr_der }),
        cache_status().prop_map(OperationOutput::Cache),
        any::<u64>()
            .prop_map(|removed_files| OperationOutput::CachePurged(PurgeReport { removed_files })),
    ]
}

pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(ErrorCode::ALL.to_vec())
}

pub fn error_data() -> impl Strategy<Value = ErrorData> {
    (error_code(), text(), vec((text(), text()), 0..3)).prop_map(|(code, message, details)| {
        ErrorData {
            code,
            message,
            details,
        }
    })
}

pub fn outcome() -> impl Strategy<Value = TaskOutcome> {
    prop_oneof![operation_output().prop_map(Ok), error_data().prop_map(Err)]
}

pub fn task_delivery() -> impl Strategy<Value = TaskDelivery> {
    (task_id(), operation(), any::<u64>(), any::<u32>()).prop_map(
        |(task_id, operation, deadline_unix_ms, attempt)| TaskDelivery {
            task_id,
            operation,
            deadline_unix_ms,
            attempt,
        },
    )
}

pub fn engine() -> impl Strategy<Value = Engine> {
    prop_oneof![
        Just(Engine::Nginx),
        Just(Engine::MariaDb),
        Just(Engine::PostgreSql)
    ]
}

pub fn engine_status() -> impl Strategy<Value = EngineStatus> {
    (engine(), text(), any::<bool>()).prop_map(|(engine, version, active)| EngineStatus {
        engine,
        version,
        active,
    })
}

pub fn state_summary() -> impl Strategy<Value = StateSummary> {
    let load = -1.0e6f32..1.0e6f32;
    (
        any::<u64>(),
        [load.clone(), load.clone(), load],
        any::<u32>(),
        any::<u64>(),
        vec(engine_status(), 0..4),
    )
        .prop_map(
            |(uptime_seconds, load_average, running_tasks, finished_tasks, engines)| StateSummary {
                uptime_seconds,
                load_average,
                running_tasks,
                finished_tasks,
                engines,
            },
        )
}

pub fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (any::<u64>(), state_summary()).prop_map(|(sent_at_unix_ms, summary)| Heartbeat {
        sent_at_unix_ms,
        summary,
    })
}

pub fn heartbeat_ack() -> impl Strategy<Value = HeartbeatAck> {
    (any::<u64>(), any::<u64>()).prop_map(
        |(heartbeat_sent_at_unix_ms, coordinator_time_unix_ms)| HeartbeatAck {
            heartbeat_sent_at_unix_ms,
            coordinator_time_unix_ms,
        },
    )
}

pub fn task_inventory() -> impl Strategy<Value = TaskInventory> {
    (vec(task_id(), 0..4), vec(task_id(), 0..4))
        .prop_map(|(running, finished)| TaskInventory { running, finished })
}

pub fn data_stream_header() -> impl Strategy<Value = DataStreamHeader> {
    task_id().prop_map(|task_id| DataStreamHeader { task_id })
}

pub fn agent_message() -> impl Strategy<Value = AgentMessage> {
    prop_oneof![
        heartbeat().prop_map(AgentMessage::Heartbeat),
        (task_id(), any::<bool>())
            .prop_map(|(task_id, duplicate)| AgentMessage::TaskAck { task_id, duplicate }),
        (task_id(), any::<u8>(), text()).prop_map(|(task_id, percent, message)| {
            AgentMessage::TaskProgress {
                task_id,
                percent,
                message,
            }
        }),
        (task_id(), text()).prop_map(|(task_id, line)| AgentMessage::TaskLog { task_id, line }),
        (task_id(), outcome())
            .prop_map(|(task_id, outcome)| AgentMessage::TaskResult { task_id, outcome }),
        task_inventory().prop_map(AgentMessage::Reconcile),
        bytes().prop_map(|csr_der| AgentMessage::RenewCertificate { csr_der }),
    ]
}

pub fn coordinator_message() -> impl Strategy<Value = CoordinatorMessage> {
    prop_oneof![
        heartbeat_ack().prop_map(CoordinatorMessage::HeartbeatAck),
        task_delivery().prop_map(CoordinatorMessage::Task),
        task_id().prop_map(|task_id| CoordinatorMessage::CancelTask { task_id }),
        task_id().prop_map(|task_id| CoordinatorMessage::ResultRecorded { task_id }),
        task_inventory().prop_map(CoordinatorMessage::Reconcile),
        bytes()
            .prop_map(|certificate_der| CoordinatorMessage::CertificateRenewed { certificate_der }),
        error_data().prop_map(CoordinatorMessage::Error),
    ]
}

pub fn features() -> impl Strategy<Value = Features> {
    any::<u64>().prop_map(Features::from_bits)
}

pub fn hello() -> impl Strategy<Value = Hello> {
    (text(), features()).prop_map(|(agent_version, features)| Hello::new(agent_version, features))
}

pub fn welcome() -> impl Strategy<Value = Welcome> {
    (text(), any::<u32>(), any::<u64>(), features(), any::<u64>()).prop_map(
        |(coordinator_version, instance_id, generation, features, heartbeat_interval_ms)| Welcome {
            coordinator_version,
            instance_id,
            generation,
            features,
            heartbeat_interval_ms,
        },
    )
}

pub fn refusal_reason() -> impl Strategy<Value = RefusalReason> {
    prop_oneof![
        any::<u32>().prop_map(|supported| RefusalReason::UnsupportedVersion { supported }),
        Just(RefusalReason::UnknownInstance),
        Just(RefusalReason::Revoked),
        Just(RefusalReason::StaleGeneration),
        Just(RefusalReason::ShuttingDown),
        Just(RefusalReason::AlreadyConnected),
    ]
}

pub fn hello_reply() -> impl Strategy<Value = HelloReply> {
    prop_oneof![
        welcome().prop_map(HelloReply::Welcome),
        (refusal_reason(), text())
            .prop_map(|(reason, message)| HelloReply::Refused(Refused { reason, message })),
    ]
}

pub fn enroll_request() -> impl Strategy<Value = EnrollRequest> {
    (secret(), bytes(), text()).prop_map(|(token, csr_der, agent_version)| EnrollRequest {
        token,
        csr_der,
        agent_version,
    })
}

pub fn enroll_response() -> impl Strategy<Value = EnrollResponse> {
    prop_oneof![
        (bytes(), bytes(), any::<u32>(), any::<u64>()).prop_map(
            |(certificate_der, ca_certificate_der, instance_id, generation)| {
                EnrollResponse::Enrolled(Enrollment {
                    certificate_der,
                    ca_certificate_der,
                    instance_id,
                    generation,
                })
            }
        ),
        error_data().prop_map(EnrollResponse::Refused),
    ]
}
