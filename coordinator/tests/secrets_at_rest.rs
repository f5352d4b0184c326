//! No secret at rest in the clear: after database work with a real agent and a real MariaDB,
//! a certificate upload with its private key through a real nginx, and a Proxmox node registered
//! with its token secret, no byte of the store file, nor of a copy of the data directory, holds
//! any of those secrets (raw, base64 or hex), and every task that carried one keeps only that it
//! did once it has ended.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use coordinator::tasks::secrets::{TaskSecretsRecord, record};
use pvesim::{SimConfig, Simulator};
use rcgen::{CertificateParams, DnType, KeyPair};
use serde_json::{Value, json};
use testkit::agent_crate as agent;
use testkit::agent_work::{INSTANCE, setup};
use testkit::databases::{MariaDbServer, available, settings};
use testkit::vhosts::HandlerSite;

const TOKEN_ID: &str = "hostplane@pve!coordinator";
const TOKEN_SECRET: &str = "7c3e9a14-52b8-4f0d-a6e1-d94b0c2f8e35";
const FIRST_PASSWORD: &str = "Sealed-First-Password-4711";
const SECOND_PASSWORD: &str = "Sealed-Second-Password-0815";
const CANCELLED_PASSWORD: &str = "Sealed-Cancelled-Password-2342";

/// A self-signed certificate for `name` and its private key, in PEM.
fn certificate(name: &str) -> (String, String) {
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let certificate = params.self_signed(&key).unwrap();
    (certificate.pem(), key.serialize_pem())
}

/// The forms of a secret searched for: the text, its base64 and its hex; for a PEM key, each
/// line of its body (a stored JSON string escapes the line breaks) and its DER in hex.
fn forms(secret: &str) -> Vec<Vec<u8>> {
    let mut found = vec![
        secret.as_bytes().to_vec(),
        base64::engine::general_purpose::STANDARD
            .encode(secret)
            .into_bytes(),
        hex::encode(secret).into_bytes(),
    ];
    if secret.starts_with("-----BEGIN") {
        let body: Vec<&str> = secret
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        found.extend(
            body.iter()
                .filter(|line| line.len() >= 32)
                .map(|line| line.as_bytes().to_vec()),
        );
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.concat())
            .unwrap();
        found.push(hex::encode(&der).into_bytes());
        found.push(der);
    }
    found
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Every file under `dir`, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

async fn simulator() -> Simulator {
    coordinator::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(
        SimConfig {
            nodes: 1,
            tokens: vec![format!("{TOKEN_ID}={TOKEN_SECRET}")],
            tls: true,
            auth_failure_delay: Duration::from_millis(10),
            task_duration: Duration::from_millis(30),
            ..SimConfig::default()
        },
        listener,
    )
    .await
    .unwrap()
}

fn task_id(answer: &Value) -> String {
    answer["task"]["id"].as_str().expect("a task").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_in_the_store_file_or_the_data_directory() {
    if !available(&["mariadbd", "mariadb-install-db", "mariadb"]) {
        return;
    }
    let Some(site) = HandlerSite::new() else {
        return;
    };
    let server = MariaDbServer::start().expect("MariaDB starts");
    let handlers = || {
        agent::Handlers::new()
            .with(agent::PingHandler)
            .with(agent::databases::Databases::new(settings(
                Some(&server),
                None,
            )))
            .with(site.handler.clone())
    };
    let mut setup = setup(handlers()).await;
    let base = format!("/api/v1/instance/{INSTANCE}");
    let mut secret_tasks = Vec::new();

    // A Proxmox node registered with its token secret, and used afterwards.
    let sim = simulator().await;
    let registered = setup
        .server
        .admin(
            "POST",
            "/api/v1/node",
            Some(json!({
                "name": "pve1", "address": "127.0.0.1", "port": sim.local_addr().port(),
                "token_id": TOKEN_ID, "token_secret": TOKEN_SECRET,
                "fingerprint": sim.fingerprint().unwrap(),
            })),
        )
        .await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    let node = setup.server.admin("GET", "/api/v1/node/pve1", None).await;
    assert_eq!(
        node.status, 200,
        "the sealed token still works: {:?}",
        node.body
    );

    // Database work: a create and a password change that run, and a change cancelled while
    // it waits for the agent.
    let created = setup
        .task(
            "POST",
            &format!("{base}/database/shop"),
            Some(json!({"engine": "mariadb", "password": FIRST_PASSWORD})),
        )
        .await;
    assert_eq!(created["task"]["state"], "succeeded", "{created:?}");
    secret_tasks.push(task_id(&created));
    let changed = setup
        .task(
            "PUT",
            &format!("{base}/database/shop"),
            Some(json!({"engine": "mariadb", "user": "shop", "password": SECOND_PASSWORD})),
        )
        .await;
    assert_eq!(changed["task"]["state"], "succeeded", "{changed:?}");
    secret_tasks.push(task_id(&changed));
    setup.stop_agent().await;
    let queued = setup
        .customer(
            "PUT",
            &format!("{base}/database/shop"),
            Some(json!({"engine": "mariadb", "user": "shop", "password": CANCELLED_PASSWORD})),
        )
        .await;
    assert_eq!(queued.status, 202, "{:?}", queued.body);
    let queued = task_id(&queued.body);
    let cancelled = setup
        .customer("DELETE", &format!("/api/v1/task/{queued}"), None)
        .await;
    assert!(cancelled.status < 300, "{:?}", cancelled.body);
    assert_eq!(setup.ended(&queued).await["task"]["state"], "cancelled");
    secret_tasks.push(queued);
    setup.start_agent(handlers()).await;

    // A certificate uploaded with its private key.
    site.document_root("s", "secure\n");
    let vhost = setup
        .task(
            "POST",
            &format!("{base}/vhost/s"),
            Some(json!({"server_names": ["s.example"], "root": "s"})),
        )
        .await;
    assert_eq!(vhost["task"]["state"], "succeeded", "{vhost:?}");
    let (certificate, private_key) = certificate("s.example");
    let deployed = setup
        .task(
            "POST",
            &format!("/api/v1/service/ssl/instance/{INSTANCE}/vhost/s"),
            Some(json!({"certificate": certificate, "private_key": private_key})),
        )
        .await;
    assert_eq!(deployed["task"]["state"], "succeeded", "{deployed:?}");
    secret_tasks.push(task_id(&deployed));

    // Each of those tasks keeps only that it had a secret.
    let store = setup.server.app().store.clone();
    for id in &secret_tasks {
        assert!(
            matches!(
                record(&store, id).unwrap(),
                Some(TaskSecretsRecord::Erased { .. })
            ),
            "task {id}'s secrets are erased"
        );
    }
    drop(store);

    let data_dir = setup.server.dir.path().to_path_buf();
    setup.stop_agent().await;
    setup.server.stop().await;
    let copy = tempfile::tempdir().unwrap();
    copy_dir(&data_dir, copy.path());
    let store_file = std::fs::read(data_dir.join("hostplane.redb")).unwrap();
    let copied = files(copy.path());
    assert!(
        copied
            .iter()
            .any(|(path, _)| path.ends_with("hostplane.redb"))
    );
    let secrets = [
        ("the token secret", TOKEN_SECRET.to_string()),
        ("the first database password", FIRST_PASSWORD.to_string()),
        ("the changed database password", SECOND_PASSWORD.to_string()),
        (
            "a cancelled task's password",
            CANCELLED_PASSWORD.to_string(),
        ),
        ("the certificate's private key", private_key),
    ];
    let mut found = Vec::new();
    for (name, secret) in &secrets {
        for form in forms(secret) {
            if contains(&store_file, &form) {
                found.push(format!("{name} in the store file"));
            }
            for (path, bytes) in &copied {
                if contains(bytes, &form) {
                    found.push(format!("{name} in {path}"));
                }
            }
        }
    }
    found.dedup();
    assert!(found.is_empty(), "secrets at rest in the clear: {found:#?}");
}
