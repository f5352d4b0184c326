//! Benchmark (run on demand): create, start, stop and destroy 200 instances through the
//! coordinator against the simulator with 20 ms added per Proxmox call, and the same sequence
//! driven directly against the simulator with the bare client. Prints the total time, p50 and
//! p99 per operation on both sides, and, from one instance run alone first, the Proxmox calls
//! and store commits each operation costs. Run with
//! `cargo test -p hostplane-coordinator --release --test bench_lifecycle -- --ignored --nocapture`
//! (`BENCH_INSTANCES` and `BENCH_CONCURRENCY` change the size).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use coordinator::proxmox::{
    Client, ClientSettings, CreateContainer, Endpoint, PowerAction, PowerOutcome, Trust, tls,
};
use futures_util::StreamExt;
use pvesim::{SimConfig, Simulator};
use serde_json::json;
use testkit::coordinator::TestServer;

const TOKEN_ID: &str = "hostplane@pve!bench";
const TOKEN_SECRET: &str = "7c1e5b0a-4d2f-4a8e-9b3c-6f0d2e1a5c7b";
const LATENCY: Duration = Duration::from_millis(20);
const OPERATIONS: [&str; 4] = ["create", "start", "stop", "destroy"];

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

/// The latencies of each operation, in the order of [`OPERATIONS`].
#[derive(Default)]
struct Samples {
    operations: [Mutex<Vec<Duration>>; 4],
}

impl Samples {
    fn add(&self, operation: usize, took: Duration) {
        self.operations[operation].lock().unwrap().push(took);
    }

    /// (p50, p99) of one operation, by nearest rank.
    fn percentiles(&self, operation: usize) -> (Duration, Duration) {
        let mut values = self.operations[operation].lock().unwrap().clone();
        values.sort();
        let rank = |quantile: f64| {
            let index = ((quantile * values.len() as f64).ceil() as usize).max(1) - 1;
            values.get(index).copied().unwrap_or_default()
        };
        (rank(0.50), rank(0.99))
    }

    fn report(&self, name: &str, total: Duration, count: usize) {
        println!(
            "  {name:<12} {:>7.2} s total, {:>6.1} ms per instance",
            total.as_secs_f64(),
            total.as_secs_f64() * 1000.0 / count as f64
        );
        for (index, operation) in OPERATIONS.iter().enumerate() {
            let (p50, p99) = self.percentiles(index);
            println!(
                "    {operation:<8} p50 {:>6.1} ms   p99 {:>6.1} ms",
                p50.as_secs_f64() * 1000.0,
                p99.as_secs_f64() * 1000.0
            );
        }
    }
}

/// Something to observe between operations: the Proxmox calls sent and the store's commits.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    calls: u64,
    commits: u64,
    flushes: u64,
}

impl std::ops::Sub for Counters {
    type Output = Counters;
    fn sub(self, earlier: Counters) -> Counters {
        Counters {
            calls: self.calls - earlier.calls,
            commits: self.commits - earlier.commits,
            flushes: self.flushes - earlier.flushes,
        }
    }
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

/// The whole sequence for one instance with the bare client; `observe` is called before and
/// after every operation.
async fn direct_instance(
    client: &Client,
    vmid: u32,
    samples: &Samples,
    observe: &mut dyn FnMut(usize, bool),
) {
    let wait = Duration::from_secs(60);
    observe(0, false);
    let started = Instant::now();
    let spec = CreateContainer {
        vmid,
        ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
        hostname: format!("d{vmid}"),
        storage: "local-lvm".into(),
        disk_gib: 2,
        memory: 256,
        swap: 0,
        cores: 1,
        ..CreateContainer::default()
    };
    let upid = client.create_container("pve1", &spec).await.unwrap();
    client.wait_task(&upid, wait).await.unwrap();
    samples.add(0, started.elapsed());
    observe(0, true);
    for (index, action) in [(1, PowerAction::Start), (2, PowerAction::Stop)] {
        observe(index, false);
        let started = Instant::now();
        if let PowerOutcome::Task(upid) = client.power("pve1", vmid, action).await.unwrap() {
            client.wait_task(&upid, wait).await.unwrap();
        }
        samples.add(index, started.elapsed());
        observe(index, true);
    }
    observe(3, false);
    let started = Instant::now();
    let upid = client
        .destroy_container("pve1", vmid)
        .await
        .unwrap()
        .unwrap();
    client.wait_task(&upid, wait).await.unwrap();
    samples.add(3, started.elapsed());
    observe(3, true);
}

/// The whole sequence for one instance through the coordinator's API.
async fn coordinator_instance(
    server: &TestServer,
    name: &str,
    samples: &Samples,
    observe: &mut dyn FnMut(usize, bool),
) {
    observe(0, false);
    let started = Instant::now();
    let body = json!({"template": "debian-12", "hostname": name,
                      "cpu": 1, "memory": 256, "swap": 0, "disk": 2, "node": "pve1"});
    let task = server
        .admin("POST", "/api/v1/instance?wait=60", Some(body))
        .await;
    assert_eq!(task.body["task"]["state"], "succeeded", "{:?}", task.body);
    samples.add(0, started.elapsed());
    observe(0, true);
    let id = task.body["task"]["instance"].as_u64().unwrap();
    for (index, action) in [(1, "start"), (2, "stop")] {
        observe(index, false);
        let started = Instant::now();
        let task = server
            .admin(
                "POST",
                &format!("/api/v1/instance/{id}/status/{action}?wait=60"),
                None,
            )
            .await;
        assert_eq!(task.body["task"]["state"], "succeeded", "{:?}", task.body);
        samples.add(index, started.elapsed());
        observe(index, true);
    }
    observe(3, false);
    let started = Instant::now();
    let task = server
        .admin("DELETE", &format!("/api/v1/instance/{id}?wait=60"), None)
        .await;
    assert_eq!(task.body["task"]["state"], "succeeded", "{:?}", task.body);
    samples.add(3, started.elapsed());
    observe(3, true);
}

/// Runs `one` for `count` instances, `concurrency` at a time; the total time.
async fn run_all<F, Work>(count: usize, concurrency: usize, one: F) -> Duration
where
    F: Fn(usize) -> Work,
    Work: std::future::Future<Output = ()>,
{
    let started = Instant::now();
    futures_util::stream::iter(0..count)
        .for_each_concurrent(concurrency, one)
        .await;
    started.elapsed()
}

/// Per operation, what one instance run alone costs.
fn print_costs(name: &str, costs: &[Counters; 4]) {
    let text: Vec<String> = OPERATIONS
        .iter()
        .zip(costs)
        .map(|(operation, cost)| {
            format!(
                "{operation} {} calls {} commits {} flushes",
                cost.calls, cost.commits, cost.flushes
            )
        })
        .collect();
    println!("  {name:<12} {}", text.join("; "));
}

fn observer<'a>(
    read: impl Fn() -> Counters + 'a,
    costs: &'a mut [Counters; 4],
) -> impl FnMut(usize, bool) + 'a {
    let mut before = Counters::default();
    move |operation, done| {
        if done {
            costs[operation] = read() - before;
        } else {
            before = read();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark; run on demand with --ignored"]
async fn lifecycle_benchmark() {
    let count = setting("BENCH_INSTANCES", 200);
    let concurrency = setting("BENCH_CONCURRENCY", 20);

    let sim = simulator().await;
    let client = bare_client(&sim);
    let mut direct_costs = [Counters::default(); 4];
    {
        let counters = || Counters {
            calls: client.requests_sent(),
            ..Counters::default()
        };
        let mut observe = observer(counters, &mut direct_costs);
        direct_instance(&client, 999, &Samples::default(), &mut observe).await;
    }
    let direct_samples = Samples::default();
    let direct_time = run_all(count, concurrency, |index| {
        let client = client.clone();
        let samples = &direct_samples;
        async move {
            direct_instance(&client, 1000 + index as u32, samples, &mut |_, _| {}).await;
        }
    })
    .await;
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
    let app = server.app().clone();
    let node_client = app.proxmox.client(&app.store, "pve1").unwrap();
    let mut coordinator_costs = [Counters::default(); 4];
    {
        let counters = || {
            let commits = app.store.commit_stats();
            Counters {
                calls: node_client.requests_sent(),
                commits: commits.commits,
                flushes: commits.flushes,
            }
        };
        let mut observe = observer(counters, &mut coordinator_costs);
        coordinator_instance(&server, "warmup", &Samples::default(), &mut observe).await;
    }
    let coordinator_samples = Samples::default();
    let coordinator_time = run_all(count, concurrency, |index| {
        let server = &server;
        let samples = &coordinator_samples;
        async move {
            coordinator_instance(server, &format!("c{index}"), samples, &mut |_, _| {}).await;
        }
    })
    .await;
    assert!(sim.state().vmids().is_empty());

    println!(
        "{count} instances, {concurrency} at a time, {} ms per Proxmox call",
        LATENCY.as_millis()
    );
    println!("one instance alone, per operation:");
    print_costs("direct:", &direct_costs);
    print_costs("coordinator:", &coordinator_costs);
    println!("all instances:");
    direct_samples.report("direct:", direct_time, count);
    coordinator_samples.report("coordinator:", coordinator_time, count);
    println!(
        "  coordinator overhead: {:+.1} % of the total time",
        (coordinator_time.as_secs_f64() / direct_time.as_secs_f64() - 1.0) * 100.0
    );
}
