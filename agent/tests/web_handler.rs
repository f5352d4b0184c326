//! The web operations as they arrive from the coordinator, through the agent's handler list, on a
//! real private nginx that the first change installs and starts: vhosts, the administrator's
//! block, refused and failing changes, caches, certificates made from a key the agent keeps, and
//! ACME HTTP-01 answers.

use std::time::{Duration, SystemTime};

use agent::{Handlers, TaskContext, TaskEvent};
use protocol::web::{
    CacheSettings, CertificateSource, Presence, PurgeRequest, ValidationError, VhostId, VhostInfo,
    VhostSpec,
};
use protocol::{ErrorCode, ErrorData, Operation, OperationOutput, TaskId, TaskOutcome};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, CertifiedIssuer, DnType,
    IsCa, KeyPair,
};
use testkit::net::free_port;
use testkit::vhosts::{HandlerSite, proxy_spec, static_spec, upstream};
use tokio::sync::mpsc;

fn id(text: &str) -> VhostId {
    VhostId::parse(text).unwrap()
}

/// Runs one operation through the handler list: its outcome and the log lines it reported.
async fn run(handlers: &Handlers, operation: Operation) -> (TaskOutcome, Vec<String>) {
    let (sender, mut receiver) = mpsc::channel(1024);
    let context = TaskContext::new(
        TaskId([7; 16]),
        SystemTime::now() + Duration::from_secs(60),
        1,
        sender,
    );
    let outcome = handlers.dispatch(operation, context).await;
    let mut lines = Vec::new();
    while let Ok(event) = receiver.try_recv() {
        if let TaskEvent::Log(line) = event {
            lines.push(line);
        }
    }
    (outcome, lines)
}

async fn ok(handlers: &Handlers, operation: Operation) -> OperationOutput {
    let description = format!("{operation:?}");
    match run(handlers, operation).await.0 {
        Ok(output) => output,
        Err(error) => panic!("{description} failed: {error}"),
    }
}

async fn refused(handlers: &Handlers, operation: Operation) -> ErrorData {
    let description = format!("{operation:?}");
    match run(handlers, operation).await.0 {
        Ok(output) => panic!("{description} succeeded: {output:?}"),
        Err(error) => error,
    }
}

fn vhost(output: OperationOutput) -> VhostInfo {
    match output {
        OperationOutput::Vhost(info) => *info,
        other => panic!("expected a vhost, got {other:?}"),
    }
}

fn put(name: &str, spec: VhostSpec, presence: Presence) -> Operation {
    Operation::VhostPut {
        id: id(name),
        spec,
        presence,
    }
}

#[tokio::test]
async fn vhost_operations_install_nginx_serve_and_keep_the_administrators_block() {
    let Some(site) = HandlerSite::new() else {
        return;
    };
    let handlers = Handlers::new().with(site.handler.clone());
    site.document_root("a", "site a\n");
    site.document_root("b", "site b\n");

    // Reads work before anything is installed; the first change installs and starts nginx.
    assert_eq!(
        ok(&handlers, Operation::VhostList).await,
        OperationOutput::Vhosts(vec![])
    );
    let spec_a = static_spec(&["a.example"], "a");
    let first = vhost(ok(&handlers, put("a", spec_a.clone(), Presence::New)).await);
    assert_eq!((first.version, first.spec.clone()), (1, spec_a.clone()));
    assert_eq!(site.body("a.example").await, "site a\n");

    // A repeated create with the same spec succeeds without a new version (a redelivery); a
    // create of an existing vhost with another spec is a conflict, a change of a missing one 404.
    let again = vhost(ok(&handlers, put("a", spec_a.clone(), Presence::New)).await);
    assert_eq!(again, first);
    let conflict = refused(
        &handlers,
        put("a", static_spec(&["a2.example"], "a"), Presence::New),
    )
    .await;
    assert_eq!(conflict.code, ErrorCode::Conflict, "{conflict}");
    let missing = refused(
        &handlers,
        put("b", static_spec(&["b.example"], "b"), Presence::Existing),
    )
    .await;
    assert_eq!(missing.code, ErrorCode::NotFound, "{missing}");

    ok(
        &handlers,
        put("b", static_spec(&["b.example"], "b"), Presence::Any),
    )
    .await;
    let with_extra = vhost(
        ok(
            &handlers,
            Operation::VhostSetExtra {
                id: id("a"),
                extra: Some("add_header X-Admin kept always;".into()),
            },
        )
        .await,
    );
    assert_eq!(
        with_extra.extra.as_deref(),
        Some("add_header X-Admin kept always;")
    );
    let changed = vhost(
        ok(
            &handlers,
            put(
                "a",
                static_spec(&["a.example", "www.a.example"], "a"),
                Presence::Existing,
            ),
        )
        .await,
    );
    assert_eq!(changed.version, 3);
    assert_eq!(
        changed.extra, with_extra.extra,
        "a customer change keeps the block"
    );
    assert_eq!(
        changed
            .history
            .iter()
            .map(|entry| entry.version)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let answer = site.get("www.a.example", "/").await.unwrap();
    assert_eq!(
        (
            answer.status,
            answer.header("x-admin"),
            answer.body.as_str()
        ),
        (200, Some("kept"), "site a\n")
    );
    assert_eq!(
        vhost(ok(&handlers, Operation::VhostGet { id: id("a") }).await),
        changed
    );
    let OperationOutput::Vhosts(list) = ok(&handlers, Operation::VhostList).await else {
        panic!("no list");
    };
    assert_eq!(
        list.iter()
            .map(|info| info.id.as_str().to_string())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );

    assert_eq!(
        ok(&handlers, Operation::VhostDelete { id: id("a") }).await,
        OperationOutput::Done
    );
    assert!(site.get("a.example", "/").await.is_err(), "a is gone");
    assert_eq!(site.body("b.example").await, "site b\n");
    let gone = refused(&handlers, Operation::VhostGet { id: id("a") }).await;
    assert_eq!(gone.code, ErrorCode::NotFound);
}

#[tokio::test]
async fn refused_and_failing_changes_report_fields_or_nginx_output_and_change_nothing() {
    let Some(site) = HandlerSite::new() else {
        return;
    };
    let handlers = Handlers::new().with(site.handler.clone());
    site.document_root("a", "site a\n");
    site.document_root("b", "site b\n");
    ok(
        &handlers,
        put("a", static_spec(&["a.example"], "a"), Presence::New),
    )
    .await;
    ok(
        &handlers,
        put("b", static_spec(&["b.example"], "b"), Presence::New),
    )
    .await;
    let before = vhost(ok(&handlers, Operation::VhostGet { id: id("a") }).await);

    let hostile = refused(
        &handlers,
        put(
            "a",
            static_spec(&["a.example;", "x\n}", "{y", ".."], "../etc"),
            Presence::Existing,
        ),
    )
    .await;
    let fields = ValidationError::from_error_data(&hostile).expect("per-field reasons");
    for field in [
        "server_names[0]",
        "server_names[1]",
        "server_names[2]",
        "server_names[3]",
        "root",
    ] {
        assert!(fields.has(field), "{field} not refused: {fields}");
    }
    let taken = refused(
        &handlers,
        put("c", static_spec(&["b.example"], "b"), Presence::New),
    )
    .await;
    assert!(
        ValidationError::from_error_data(&taken).is_some_and(|fields| fields.has("server_names")),
        "{taken}"
    );

    let (outcome, lines) = run(
        &handlers,
        Operation::VhostSetExtra {
            id: id("a"),
            extra: Some("no_such_directive on;".into()),
        },
    )
    .await;
    let failure = outcome.unwrap_err();
    assert_eq!(failure.code, ErrorCode::CommandFailed, "{failure}");
    let detail = |key: &str| {
        failure
            .details
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.clone())
    };
    assert_eq!(detail("stage").as_deref(), Some("config_test"));
    assert_eq!(detail("restored").as_deref(), Some("true"));
    assert!(
        detail("output").is_some_and(|output| output.contains("no_such_directive")),
        "{failure:?}"
    );
    assert!(
        lines.iter().any(|line| line.contains("no_such_directive")),
        "the task log carries nginx's output: {lines:?}"
    );

    // An application that is not running yet is no reason to refuse its vhost: nginx's 502 is
    // reported in the task's log.
    let closed = free_port();
    let (outcome, lines) = run(
        &handlers,
        put(
            "c",
            proxy_spec(&["c.example"], &format!("http://127.0.0.1:{closed}")),
            Presence::New,
        ),
    )
    .await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert!(
        lines
            .iter()
            .any(|line| line.contains("status 502") && line.contains("Connection refused")),
        "the task log reports the application's answer: {lines:?}"
    );
    assert_eq!(site.body("c.example").await, "status 502");

    assert_eq!(
        vhost(ok(&handlers, Operation::VhostGet { id: id("a") }).await),
        before,
        "nothing changed"
    );
    assert_eq!(site.body("a.example").await, "site a\n");
    assert_eq!(site.body("b.example").await, "site b\n");
}

#[tokio::test]
async fn a_change_whose_task_is_stopped_still_ends_consistently() {
    let Some(site) = HandlerSite::new() else {
        return;
    };
    let handlers = Handlers::new().with(site.handler.clone());
    site.document_root("a", "site a\n");
    site.document_root("b", "site b\n");
    ok(
        &handlers,
        put("a", static_spec(&["a.example"], "a"), Presence::New),
    )
    .await;

    // The transport aborts a task at its deadline or on cancellation; abort one mid-change.
    let dispatched = {
        let handlers = handlers.clone();
        tokio::spawn(async move {
            run(
                &handlers,
                put("b", static_spec(&["b.example"], "b"), Presence::New),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    dispatched.abort();

    // The change runs to its end anyway: b appears (bounded wait), and the next change works.
    let mut served = String::new();
    for _ in 0..100 {
        served = site.body("b.example").await;
        if served == "site b\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served, "site b\n");
    ok(
        &handlers,
        put("c", static_spec(&["c.example"], "a"), Presence::New),
    )
    .await;
    assert_eq!(site.body("a.example").await, "site a\n");
    assert_eq!(site.body("c.example").await, "site a\n");
}

#[tokio::test]
async fn cache_operations_enable_hit_purge_and_disable() {
    let Some(site) = HandlerSite::new() else {
        return;
    };
    let handlers = Handlers::new().with(site.handler.clone());
    let (address, _count) = upstream().await;
    ok(
        &handlers,
        put(
            "c",
            proxy_spec(&["c.example"], &format!("http://{address}")),
            Presence::New,
        ),
    )
    .await;
    let settings = CacheSettings {
        ttl_seconds: 300,
        max_size_megabytes: 8,
        bypass: Default::default(),
    };
    let off = refused(
        &handlers,
        Operation::CacheSet {
            vhost: id("c"),
            settings: settings.clone(),
            presence: Presence::Existing,
        },
    )
    .await;
    assert_eq!(off.code, ErrorCode::Conflict, "{off}");
    let OperationOutput::Cache(status) = ok(
        &handlers,
        Operation::CacheSet {
            vhost: id("c"),
            settings: settings.clone(),
            presence: Presence::New,
        },
    )
    .await
    else {
        panic!("no cache status");
    };
    assert_eq!(status.settings, Some(settings.clone()));

    let cache_status = |path: &'static str| {
        let site = &site;
        async move {
            site.get("c.example", path)
                .await
                .unwrap()
                .header("x-cache-status")
                .map(str::to_string)
        }
    };
    assert_eq!(cache_status("/p").await.as_deref(), Some("MISS"));
    assert_eq!(cache_status("/p").await.as_deref(), Some("HIT"));
    let OperationOutput::Cache(status) =
        ok(&handlers, Operation::CacheGet { vhost: id("c") }).await
    else {
        panic!("no cache status");
    };
    assert!(status.files >= 1 && status.size_bytes > 0, "{status:?}");

    let purged = ok(
        &handlers,
        Operation::CachePurge {
            vhost: id("c"),
            request: PurgeRequest::Paths(vec!["/p".into()]),
        },
    )
    .await;
    assert!(
        matches!(&purged, OperationOutput::CachePurged(report) if report.removed_files == 1),
        "{purged:?}"
    );
    assert_eq!(cache_status("/p").await.as_deref(), Some("MISS"));

    let bigger = CacheSettings {
        max_size_megabytes: 16,
        ..settings
    };
    ok(
        &handlers,
        Operation::CacheSet {
            vhost: id("c"),
            settings: bigger.clone(),
            presence: Presence::Existing,
        },
    )
    .await;
    assert_eq!(
        vhost(ok(&handlers, Operation::VhostGet { id: id("c") }).await).cache,
        Some(bigger)
    );
    ok(&handlers, Operation::CacheDisable { vhost: id("c") }).await;
    assert_eq!(cache_status("/p").await, None);
}

fn test_root() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Hostplane Handler Test Root");
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

#[tokio::test]
async fn certificates_from_a_key_the_agent_keeps_are_served_and_removed() {
    let Some(site) = HandlerSite::new() else {
        return;
    };
    let handlers = Handlers::new().with(site.handler.clone());
    site.document_root("s", "secure\n");
    ok(
        &handlers,
        put(
            "s",
            static_spec(&["s.example", "www.s.example"], "s"),
            Presence::New,
        ),
    )
    .await;

    // Deploying an issued certificate before any key was requested is refused.
    let root = test_root();
    let early = refused(
        &handlers,
        Operation::CertificateDeployIssued {
            vhost: id("s"),
            certificate_chain: root.pem(),
            redirect_http: None,
            source: CertificateSource::Acme,
        },
    )
    .await;
    assert_eq!(early.code, ErrorCode::Conflict, "{early}");

    // A check refuses a certificate for other names, naming the field, and deploys nothing.
    let key = KeyPair::generate().unwrap();
    let wrong = CertificateParams::new(vec!["other.example".to_string()])
        .unwrap()
        .signed_by(&key, &root)
        .unwrap();
    let checked = refused(
        &handlers,
        Operation::CertificateCheck {
            vhost: id("s"),
            upload: protocol::web::CertificateUpload {
                certificate: wrong.pem(),
                private_key: protocol::Secret::new(key.serialize_pem()),
                chain: None,
                redirect_http: None,
            },
        },
    )
    .await;
    assert!(
        ValidationError::from_error_data(&checked).is_some_and(|fields| fields.has("certificate")),
        "{checked}"
    );

    // The agent makes the key and a request for every name; the test CA signs the request.
    let OperationOutput::CertificateSigningRequest { csr_der } = ok(
        &handlers,
        Operation::CertificateRequestKey { vhost: id("s") },
    )
    .await
    else {
        panic!("no signing request");
    };
    let request = CertificateSigningRequestParams::from_der(&csr_der.clone().into()).unwrap();
    let names: Vec<String> = request
        .params
        .subject_alt_names
        .iter()
        .map(|name| format!("{name:?}"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let issued = request.signed_by(&root).unwrap();
    let key_file = site.layout().tls_dir().join("s").join("pending-key.pem");
    assert!(key_file.exists());
    let OperationOutput::Certificate(status) = ok(
        &handlers,
        Operation::CertificateDeployIssued {
            vhost: id("s"),
            certificate_chain: issued.pem(),
            redirect_http: Some(true),
            source: CertificateSource::Acme,
        },
    )
    .await
    else {
        panic!("no certificate status");
    };
    let info = status.certificate.clone().unwrap();
    assert_eq!(info.source, CertificateSource::Acme);
    assert_eq!(info.names, vec!["s.example", "www.s.example"]);
    assert!(info.not_after_unix > info.not_before_unix);
    assert!(status.redirect_http);
    assert!(!key_file.exists(), "the waiting key is used up");

    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(root.pem().as_bytes()).unwrap()])
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .resolve("www.s.example", site.layout().https_listen)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let url = format!(
        "https://www.s.example:{}/",
        site.layout().https_listen.port()
    );
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "secure\n");
    assert_eq!(
        site.get("s.example", "/").await.unwrap().status,
        301,
        "HTTP moves to HTTPS"
    );

    // A failed renewal that never reached the agent is recorded; the certificate stays.
    ok(
        &handlers,
        Operation::CertificateRecordAttempt {
            vhost: id("s"),
            source: CertificateSource::Acme,
            error: Some("the CA refused the order".into()),
        },
    )
    .await;
    let OperationOutput::Certificate(after) =
        ok(&handlers, Operation::CertificateGet { vhost: id("s") }).await
    else {
        panic!("no certificate status");
    };
    assert_eq!(after.certificate, status.certificate);
    assert_eq!(
        after.last_attempt.and_then(|attempt| attempt.error),
        Some("the CA refused the order".to_string())
    );

    ok(&handlers, Operation::CertificateRemove { vhost: id("s") }).await;
    let OperationOutput::Certificate(removed) =
        ok(&handlers, Operation::CertificateGet { vhost: id("s") }).await
    else {
        panic!("no certificate status");
    };
    assert_eq!(removed.certificate, None);
    assert_eq!(site.body("s.example").await, "secure\n");
    assert!(client.get(&url).send().await.is_err(), "HTTPS is off");
}

#[tokio::test]
async fn acme_challenge_answers_are_served_and_withdrawn() {
    let Some(site) = HandlerSite::new() else {
        return;
    };
    let handlers = Handlers::new().with(site.handler.clone());
    site.document_root("a", "site a\n");
    ok(
        &handlers,
        put("a", static_spec(&["a.example"], "a"), Presence::New),
    )
    .await;
    let path = "/.well-known/acme-challenge/tok-EN_1";
    ok(
        &handlers,
        Operation::AcmeChallengePut {
            vhost: id("a"),
            token: "tok-EN_1".into(),
            key_authorization: "tok-EN_1.thumb".into(),
        },
    )
    .await;
    let answer = site.get("a.example", path).await.unwrap();
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "tok-EN_1.thumb")
    );
    let hostile = refused(
        &handlers,
        Operation::AcmeChallengePut {
            vhost: id("a"),
            token: "../../x".into(),
            key_authorization: "../../x.t".into(),
        },
    )
    .await;
    assert!(
        ValidationError::from_error_data(&hostile).is_some_and(|fields| fields.has("token")),
        "{hostile}"
    );
    ok(
        &handlers,
        Operation::AcmeChallengeRemove {
            vhost: id("a"),
            token: "tok-EN_1".into(),
        },
    )
    .await;
    assert_eq!(site.get("a.example", path).await.unwrap().status, 404);
}
