//! Benchmark (run on demand): the time of one vhost change end to end — `PUT` of a vhost with
//! `?wait=60`, from the API call to the answer with the task succeeded, through the coordinator,
//! QUIC, the agent and a real private nginx — with 1, 100 and 1,000 vhosts on the instance, next
//! to the floor of the same nginx: `nginx -t` on the whole configuration, then a reload and the
//! wait until every old worker process has exited. Run with
//! `cargo test -p hostplane-coordinator --release --test bench_vhosts -- --ignored --nocapture`
//! (`BENCH_SIZES`, comma-separated, and `BENCH_SAMPLES` change the sizes and the sample count).

use std::process::Command;
use std::time::{Duration, Instant};
use testkit::agent_crate as agent;

use serde_json::json;
use testkit::agent_work::{INSTANCE, setup};
use testkit::vhosts::{HandlerSite, static_spec};

fn sizes() -> Vec<usize> {
    std::env::var("BENCH_SIZES")
        .ok()
        .map(|text| {
            text.split(',')
                .filter_map(|size| size.trim().parse().ok())
                .collect()
        })
        .unwrap_or_else(|| vec![1, 100, 1000])
}

fn samples() -> usize {
    std::env::var("BENCH_SAMPLES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(20)
}

/// p50, p90 and the smallest, in milliseconds, by nearest rank.
fn summary(mut times: Vec<Duration>) -> (f64, f64, f64) {
    times.sort();
    let rank = |fraction: f64| {
        let index = ((times.len() as f64 * fraction).ceil() as usize).clamp(1, times.len()) - 1;
        times[index].as_secs_f64() * 1000.0
    };
    (rank(0.5), rank(0.9), times[0].as_secs_f64() * 1000.0)
}

/// The worker processes of an nginx master (any state).
fn workers(master: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|field| field.parse::<u32>().ok());
        if parent == Some(master) {
            found.push(pid);
        }
    }
    found
}

/// The floor: `nginx -t` of the whole configuration, a reload, and the wait until the old
/// workers are gone, with the same nginx and configuration the agent uses.
fn floor_once(site: &HandlerSite) -> Duration {
    let layout = site.layout();
    let nginx = |arguments: &[&str]| {
        let output = Command::new(&layout.nginx_binary)
            .arg("-e")
            .arg(layout.main_error_log())
            .arg("-c")
            .arg(&layout.main_config)
            .args(arguments)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
    };
    let master: u32 = std::fs::read_to_string(layout.pid_file())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let old = workers(master);
    let started = Instant::now();
    nginx(&["-t", "-q"]);
    nginx(&["-s", "reload"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while workers(master).iter().any(|pid| old.contains(pid)) {
        assert!(Instant::now() < deadline, "the old workers did not exit");
        std::thread::sleep(Duration::from_millis(2));
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --ignored --nocapture"]
async fn vhost_change_end_to_end_against_the_nginx_floor() {
    let Some(site) = HandlerSite::new() else {
        panic!("nginx is needed for this benchmark");
    };
    let setup = setup(
        agent::Handlers::new()
            .with(agent::PingHandler)
            .with(site.handler.clone()),
    )
    .await;
    site.document_root("site", "bench\n");
    let path = format!("/api/v1/instance/{INSTANCE}/vhost/v0");
    // The first vhost goes through the API, which also installs nginx's configuration.
    let created = setup
        .task(
            "POST",
            &path,
            Some(json!({"server_names": ["v0.bench.example"], "root": "site"})),
        )
        .await;
    assert_eq!(created["task"]["state"], "succeeded", "{created:?}");
    let samples = samples();
    let mut present = 1usize;
    let mut rows = Vec::new();
    for size in sizes() {
        // Grow the site to `size` vhosts in one change, so populating does not dominate.
        let batch: Vec<_> = (present..size)
            .map(|index| {
                (
                    format!("v{index}"),
                    static_spec(&[&format!("v{index}.bench.example")], "site"),
                )
            })
            .collect();
        if !batch.is_empty() {
            site.handler.ops().put_vhosts(batch).await.unwrap();
            present = size;
        }
        assert_eq!(site.body("v0.bench.example").await, "bench\n");

        let mut changes = Vec::new();
        for sample in 0..samples + 1 {
            let body = json!({
                "server_names": ["v0.bench.example"],
                "root": "site",
                "limits": {"max_body_bytes": 1_000_000 + sample},
            });
            let started = Instant::now();
            let answer = setup
                .customer("PUT", &format!("{path}?wait=60"), Some(body))
                .await;
            let took = started.elapsed();
            assert_eq!(answer.status, 200, "{:?}", answer.body);
            assert_eq!(
                answer.body["task"]["state"], "succeeded",
                "{:?}",
                answer.body
            );
            // The first change after growing warms caches; it is not counted.
            if sample > 0 {
                changes.push(took);
            }
        }
        // The agent's transaction alone, without the API, the task system and QUIC.
        let mut transactions = Vec::new();
        for sample in 0..samples {
            let mut spec = static_spec(&["v0.bench.example"], "site");
            spec.limits.max_body_bytes = Some(2_000_000 + sample as u64);
            let started = Instant::now();
            site.handler.ops().put_vhost("v0", spec).await.unwrap();
            transactions.push(started.elapsed());
        }
        let mut floors = Vec::new();
        for _ in 0..samples {
            let site = &site;
            floors.push(tokio::task::block_in_place(|| floor_once(site)));
        }
        let change = summary(changes);
        let transaction = summary(transactions);
        let floor = summary(floors);
        println!(
            "{size} vhosts: change p50 {:.1} ms p90 {:.1} ms min {:.1} ms; agent transaction p50 {:.1} ms; floor p50 {:.1} ms p90 {:.1} ms min {:.1} ms; p50 over the floor {:.1} ms",
            change.0,
            change.1,
            change.2,
            transaction.0,
            floor.0,
            floor.1,
            floor.2,
            change.0 - floor.0
        );
        rows.push((size, change, transaction, floor));
    }
    println!(
        "| vhosts | change p50 / p90 | agent transaction p50 / p90 | floor p50 / p90 | change p50 over the floor |"
    );
    println!("|---|---|---|---|---|");
    for (size, change, transaction, floor) in rows {
        println!(
            "| {size} | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:+.1} ms |",
            change.0,
            change.1,
            transaction.0,
            transaction.1,
            floor.0,
            floor.1,
            change.0 - floor.0
        );
    }
}
