//! What the create and destroy routes no longer ask Proxmox each time, and that skipping it
//! stays correct: a VMID taken outside the coordinator after nextid was read is refused by the
//! create call and the create moves on; a template that appears after the node's templates were
//! read is found; a running instance is stopped before it is destroyed.

use std::time::Duration;

use coordinator::proxmox::{
    Client, ClientSettings, CreateContainer, Endpoint, RetryPolicy, Trust, tls,
};
use pvesim::{SimConfig, Simulator};
use serde_json::{Value, json};
use testkit::coordinator::TestServer;

const TOKEN_ID: &str = "hostplane@pve!lookups";
const TOKEN_SECRET: &str = "3d9e0a61-7b2c-4f58-a1e4-c0b9d8f7e6a5";

async fn setup() -> (TestServer, Simulator) {
    coordinator::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = Simulator::start(
        SimConfig {
            nodes: 1,
            tokens: vec![format!("{TOKEN_ID}={TOKEN_SECRET}")],
            tls: true,
            task_duration: Duration::from_millis(20),
            ..SimConfig::default()
        },
        listener,
    )
    .await
    .unwrap();
    let server = TestServer::start().await;
    server.app().proxmox.set_settings(ClientSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        retry: RetryPolicy {
            attempts: 3,
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
        },
        poll_first: Duration::from_millis(10),
        poll_max: Duration::from_millis(100),
    });
    let answer = server
        .admin(
            "POST",
            "/api/v1/node",
            Some(json!({
                "name": "pve1", "address": "127.0.0.1", "port": sim.local_addr().port(),
                "token_id": TOKEN_ID, "token_secret": TOKEN_SECRET,
                "fingerprint": sim.fingerprint().unwrap()
            })),
        )
        .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    (server, sim)
}

fn bare_client(sim: &Simulator) -> Client {
    Client::new(&Endpoint {
        base_url: sim.base_url(),
        token_id: TOKEN_ID.into(),
        token_secret: TOKEN_SECRET.into(),
        trust: Trust::Fingerprint(tls::parse_fingerprint(&sim.fingerprint().unwrap()).unwrap()),
        settings: ClientSettings::default(),
    })
    .unwrap()
}

/// Runs a task route with `?wait=` and returns the final task.
async fn run(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> Value {
    let answer = server.admin(method, &format!("{path}?wait=30"), body).await;
    assert_eq!(answer.status, 200, "{method} {path}: {:?}", answer.body);
    answer.body["task"].clone()
}

fn create_body(hostname: &str, template: &str) -> Value {
    json!({"template": template, "hostname": hostname, "cpu": 1, "memory": 256, "swap": 0,
           "disk": 2, "node": "pve1"})
}

fn sim_ids(sim: &Simulator) -> Vec<u32> {
    let mut ids = sim.state().vmids();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmid_taken_outside_after_nextid_was_read_moves_the_create() {
    let (server, sim) = setup().await;
    let first = run(
        &server,
        "POST",
        "/api/v1/instance",
        Some(create_body("first", "debian-12")),
    )
    .await;
    assert_eq!(first["state"], "succeeded", "{first}");
    let first_id = first["result"]["id"].as_u64().unwrap() as u32;

    // Someone else takes the next id directly in Proxmox.
    let outside = bare_client(&sim);
    let taken = first_id + 1;
    let upid = outside
        .create_container(
            "pve1",
            &CreateContainer {
                vmid: taken,
                ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
                hostname: "outside".into(),
                storage: "local-lvm".into(),
                disk_gib: 1,
                memory: 128,
                cores: 1,
                ..CreateContainer::default()
            },
        )
        .await
        .unwrap();
    outside
        .wait_task(&upid, Duration::from_secs(10))
        .await
        .unwrap();

    let second = run(
        &server,
        "POST",
        "/api/v1/instance",
        Some(create_body("second", "debian-12")),
    )
    .await;
    assert_eq!(second["state"], "succeeded", "{second}");
    let second_id = second["result"]["id"].as_u64().unwrap() as u32;
    assert_ne!(second_id, taken);
    assert_eq!(sim_ids(&sim), vec![first_id, taken, second_id]);
    assert_eq!(
        sim.state()
            .guest(taken)
            .unwrap()
            .config
            .get("hostname")
            .map(String::as_str),
        Some("outside"),
        "the outside container is untouched"
    );
    assert_eq!(
        sim.state()
            .guest(second_id)
            .unwrap()
            .config
            .get("hostname")
            .map(String::as_str),
        Some("second")
    );
    let list = server.admin("GET", "/api/v1/instance", None).await;
    let mut ids: Vec<u64> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, vec![u64::from(first_id), u64::from(second_id)]);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_appears_later_is_found_and_an_unknown_one_refused() {
    let (server, sim) = setup().await;
    let first = run(
        &server,
        "POST",
        "/api/v1/instance",
        Some(create_body("first", "debian-12")),
    )
    .await;
    assert_eq!(first["state"], "succeeded", "{first}");

    sim.state().with(|cluster| {
        let local = cluster
            .storages
            .iter_mut()
            .find(|storage| storage.id == "local")
            .unwrap();
        let volumes = local.volumes.get_mut("pve1").unwrap();
        let mut added = volumes[0].clone();
        added.volid = "local:vztmpl/alpine-3.20-default_20240908_amd64.tar.xz".into();
        volumes.push(added);
    });
    let second = run(
        &server,
        "POST",
        "/api/v1/instance",
        Some(create_body("second", "alpine-3.20")),
    )
    .await;
    assert_eq!(second["state"], "succeeded", "{second}");
    let id = second["result"]["id"].as_u64().unwrap() as u32;
    assert_eq!(
        sim.state()
            .guest(id)
            .unwrap()
            .config
            .get("hostname")
            .map(String::as_str),
        Some("second")
    );
    let record = server
        .admin("GET", &format!("/api/v1/instance/{id}"), None)
        .await;
    assert!(
        record.body["instance"]["template"]
            .as_str()
            .unwrap()
            .contains("alpine-3.20"),
        "{:?}",
        record.body
    );

    let unknown = server
        .admin(
            "POST",
            "/api/v1/instance",
            Some(create_body("third", "nosuchtemplate")),
        )
        .await;
    assert_eq!(unknown.status, 422, "{:?}", unknown.body);
    let message = unknown.body["error"].to_string();
    assert!(message.contains("alpine-3.20"), "{message}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_instance_is_stopped_then_destroyed() {
    let (server, sim) = setup().await;
    let created = run(
        &server,
        "POST",
        "/api/v1/instance",
        Some(create_body("web", "debian-12")),
    )
    .await;
    assert_eq!(created["state"], "succeeded", "{created}");
    assert_eq!(created["result"]["status"], "stopped");
    let id = created["result"]["id"].as_u64().unwrap();
    let started = run(
        &server,
        "POST",
        &format!("/api/v1/instance/{id}/status/start"),
        None,
    )
    .await;
    assert_eq!(started["state"], "succeeded", "{started}");
    assert_eq!(started["result"]["status"], "running");
    assert!(sim.state().guest(id as u32).unwrap().running);

    let destroyed = run(&server, "DELETE", &format!("/api/v1/instance/{id}"), None).await;
    assert_eq!(destroyed["state"], "succeeded", "{destroyed}");
    assert!(sim_ids(&sim).is_empty());
    let logs = server
        .admin(
            "GET",
            &format!("/api/v1/task/{}", destroyed["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert!(
        logs.body.to_string().contains("stopping the container"),
        "{:?}",
        logs.body
    );
    let gone = server
        .admin("GET", &format!("/api/v1/instance/{id}"), None)
        .await;
    assert_eq!(gone.status, 404);
    sim.shutdown().await;
}
