//! Benchmark (run on demand): create, start, stop and destroy 200 instances through the
//! coordinator against the simulator with 20 ms added per Proxmox call, and the same sequence
//! driven directly against the simulator with the bare client. Run with
//! `cargo test -p hostplane-coordinator --release --test bench_lifecycle -- --ignored --nocapture`
//! (`BENCH_INSTANCES` and `BENCH_CONCURRENCY` change the size).

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use coordinator::proxmox::{
    Client, ClientSettings, CreateContainer, Endpoint, PowerAction, PowerOutcome, Trust, tls,
};
use futures_util::StreamExt;
use pvesim::{SimConfig, Simulator};
use serde_json::json;

const TOKEN_ID: &str = "hostplane@pve!bench";
const TOKEN_SECRET: &str = "7c1e5b0a-4d2f-4a8e-9b3c-6f0d2e1a5c7b";
const LATENCY: Duration = Duration::from_millis(20);

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

async fn simulator() -> Simulator {
    coordinator::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(
        SimConfig {
            nodes: 1,
            tokens: vec![format!("{TOKEN_ID}={TOKEN_SECRET}")],
            tls: true,
            task_duration: Duration::from_millis(20),
            latency: LATENCY,
            ..SimConfig::default()
        },
        listener,
    )
    .await
    .unwrap()
}

async fn direct(sim: &Simulator, count: usize, concurrency: usize) -> Duration {
    let client = Client::new(&Endpoint {
        base_url: sim.base_url(),
        token_id: TOKEN_ID.into(),
        token_secret: TOKEN_SECRET.into(),
        trust: Trust::Fingerprint(tls::parse_fingerprint(&sim.fingerprint().unwrap()).unwrap()),
        settings: ClientSettings::default(),
    })
    .unwrap();
    let started = Instant::now();
    let wait = Duration::from_secs(60);
    futures_util::stream::iter(0..count)
        .for_each_concurrent(concurrency, |index| {
            let client = client.clone();
            async move {
                let vmid = 1000 + index as u32;
                let spec = CreateContainer {
                    vmid,
                    ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
                    hostname: format!("d{index}"),
                    storage: "local-lvm".into(),
                    disk_gib: 2,
                    memory: 256,
                    swap: 0,
                    cores: 1,
                    ..CreateContainer::default()
                };
                let upid = client.create_container("pve1", &spec).await.unwrap();
                client.wait_task(&upid, wait).await.unwrap();
                for action in [PowerAction::Start, PowerAction::Stop] {
                    if let PowerOutcome::Task(upid) =
                        client.power("pve1", vmid, action).await.unwrap()
                    {
                        client.wait_task(&upid, wait).await.unwrap();
                    }
                }
                let upid = client
                    .destroy_container("pve1", vmid)
                    .await
                    .unwrap()
                    .unwrap();
                client.wait_task(&upid, wait).await.unwrap();
            }
        })
        .await;
    started.elapsed()
}

async fn through_coordinator(server: &TestServer, count: usize, concurrency: usize) -> Duration {
    let started = Instant::now();
    futures_util::stream::iter(0..count)
        .for_each_concurrent(concurrency, |index| async move {
            let body = json!({"template": "debian-12", "hostname": format!("c{index}"),
                              "cpu": 1, "memory": 256, "swap": 0, "disk": 2, "node": "pve1"});
            let task = server
                .admin("POST", "/api/v1/instance?wait=60", Some(body))
                .await;
            assert_eq!(task.body["task"]["state"], "succeeded", "{:?}", task.body);
            let id = task.body["task"]["instance"].as_u64().unwrap();
            for action in ["start", "stop"] {
                let task = server
                    .admin(
                        "POST",
                        &format!("/api/v1/instance/{id}/status/{action}?wait=60"),
                        None,
                    )
                    .await;
                assert_eq!(task.body["task"]["state"], "succeeded", "{:?}", task.body);
            }
            let task = server
                .admin("DELETE", &format!("/api/v1/instance/{id}?wait=60"), None)
                .await;
            assert_eq!(task.body["task"]["state"], "succeeded", "{:?}", task.body);
        })
        .await;
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark; run on demand with --ignored"]
async fn lifecycle_benchmark() {
    let count = setting("BENCH_INSTANCES", 200);
    let concurrency = setting("BENCH_CONCURRENCY", 20);

    let sim = simulator().await;
    let direct_time = direct(&sim, count, concurrency).await;
    assert!(sim.state().vmids().is_empty());

    let server = TestServer::start().await;
    let answer = server
        .admin(
            "POST",
            "/api/v1/node",
            Some(
                json!({"name": "pve1", "address": "127.0.0.1", "port": sim.local_addr().port(),
                        "token_id": TOKEN_ID, "token_secret": TOKEN_SECRET,
                        "fingerprint": sim.fingerprint().unwrap()}),
            ),
        )
        .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    let coordinator_time = through_coordinator(&server, count, concurrency).await;
    assert!(sim.state().vmids().is_empty());

    println!(
        "{count} instances, {concurrency} at a time, {} ms per Proxmox call:\n  direct client: {:.2} s ({:.1} ms per instance)\n  coordinator:   {:.2} s ({:.1} ms per instance)",
        LATENCY.as_millis(),
        direct_time.as_secs_f64(),
        direct_time.as_secs_f64() * 1000.0 / count as f64,
        coordinator_time.as_secs_f64(),
        coordinator_time.as_secs_f64() * 1000.0 / count as f64,
    );
}
