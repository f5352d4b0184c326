//! The real `hostplane-coordinator` process killed with SIGKILL while an agent task is under
//! way: started again on the same data directory, it resumes the task, delivers it again, and
//! the agent (which finished the work meanwhile) answers from its store, so the task ends
//! succeeded and the package is installed once.
//!
//! It holds dpkg's lock and installs a package on this machine, so it runs in the `dpkg` group
//! of `.config/nextest.toml`, one at a time with the other tests that do.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::agent_crate as agent;

use coordinator::store::records::InstanceRecord;
use coordinator::store::{Store, Table};
use serde_json::{Value, json};
use testkit::dpkg;
use testkit::net::free_udp_port;
use testkit::process::Started;

const BINARY: &str = env!("CARGO_BIN_EXE_hostplane-coordinator");
const PACKAGE: &str = "sl";
const INSTANCE: u32 = 101;

struct Coordinator {
    /// Killed (SIGKILL) when the coordinator is dropped.
    _process: Started,
    url: String,
}

fn start(data: &std::path::Path, quic_port: u16) -> Coordinator {
    let mut command = Command::new(BINARY);
    command
        .args(["serve", "--http-listen", "127.0.0.1:0"])
        .arg("--quic-listen")
        .arg(format!("127.0.0.1:{quic_port}"))
        .arg("--data-dir")
        .arg(data)
        .arg("--config")
        .arg(data.join("coordinator.toml"))
        .env("HOSTPLANE_LOG", "warn")
        .stderr(Stdio::null());
    let started = Started::spawn(command);
    let url = started.field("http=");
    Coordinator {
        _process: started,
        url,
    }
}

async fn call(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = client
        .request(method, format!("{url}{path}"))
        .header("x-api-key", key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn wait_state(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    id: &str,
    states: &[&str],
    timeout: Duration,
) -> Value {
    testkit::wait::until(
        &format!("task {id} reaching {states:?}"),
        timeout,
        Duration::from_millis(100),
        || async {
            let (_, body) =
                call(client, url, key, "GET", &format!("/api/v1/task/{id}"), None).await;
            if states.contains(&body["task"]["state"].as_str().unwrap_or("")) {
                Ok(body)
            } else {
                Err(body)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_mid_task_resumes_it_and_the_work_is_done_once() {
    if !dpkg::root_and_apt(PACKAGE) {
        return;
    }
    dpkg::remove(PACKAGE);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("coordinator.toml"), "").unwrap();
    {
        // The instance exists before the coordinator starts (as after a create through Proxmox).
        let store = Store::open(&data).unwrap();
        let record = InstanceRecord {
            id: INSTANCE,
            user: "nobody-yet".into(),
            node: "pve1".into(),
            hostname: "ct101".into(),
            template: "debian-12".into(),
            cpu: 1,
            memory: 512,
            swap: 0,
            disk: 4,
            state: "ready".into(),
            suspended: false,
            created_at: "2025-01-01T00:00:00Z".into(),
            updated_at: "2025-01-01T00:00:00Z".into(),
        };
        store
            .put(Table::Instances, &InstanceRecord::key(INSTANCE), &record)
            .unwrap();
    }
    let quic_port = free_udp_port();
    let coordinator = start(&data, quic_port);
    let key = std::fs::read_to_string(data.join("admin.key"))
        .unwrap()
        .trim()
        .to_string();
    let client = reqwest::Client::new();

    let (status, offer) = call(
        &client,
        &coordinator.url,
        &key,
        "POST",
        &format!("/api/v1/instance/{INSTANCE}/enrollment"),
        None,
    )
    .await;
    assert_eq!(status, 201, "{offer}");
    let state = dir.path().join("agent");
    agent::enroll(agent::EnrollOptions::new(
        offer["token"].as_str().unwrap(),
        &state,
    ))
    .await
    .expect("enrollment succeeds");
    let mut options = agent::RunOptions::new(&state);
    options.backoff_initial = Duration::from_millis(100);
    options.backoff_maximum = Duration::from_millis(500);
    // The killed coordinator sends no close: the agent notices through the idle timeout.
    options.transport.idle_timeout = Duration::from_secs(3);
    options.transport.keep_alive = Duration::from_millis(500);
    let finished = agent::DiskFinishedTasks::open(state.join("tasks"), 100).unwrap();
    let agent = agent::spawn(options, agent::Handlers::standard(), Arc::new(finished)).unwrap();
    agent
        .wait_until(Duration::from_secs(30), |state| {
            matches!(state.phase, agent::ConnectionPhase::Connected { .. })
        })
        .await
        .expect("the agent connects");

    let installs_before = dpkg::installs_logged(PACKAGE);
    let lock = dpkg::hold_lock();
    let (status, body) = call(
        &client,
        &coordinator.url,
        &key,
        "POST",
        &format!("/api/v1/instance/{INSTANCE}/packages"),
        Some(json!({"packages": [PACKAGE]})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["task"]["id"].as_str().unwrap().to_string();
    wait_state(
        &client,
        &coordinator.url,
        &key,
        &id,
        &["running"],
        Duration::from_secs(30),
    )
    .await;

    // SIGKILL: nothing is written on the way out.
    drop(coordinator);
    drop(lock);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !dpkg::installed(PACKAGE) {
        assert!(
            Instant::now() < deadline,
            "the agent did not finish the install"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let coordinator = start(&data, quic_port);
    let ended = wait_state(
        &client,
        &coordinator.url,
        &key,
        &id,
        &["succeeded", "failed", "cancelled", "expired"],
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(ended["task"]["state"], "succeeded", "{ended}");
    let lines: Vec<&str> = ended["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|line| line["line"].as_str())
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line.contains("already had this task")),
        "{lines:?}"
    );
    assert_eq!(
        dpkg::installs_logged(PACKAGE),
        installs_before + 1,
        "installed once, not twice"
    );
    agent.stop().await;
    drop(coordinator);
    dpkg::remove(PACKAGE);
}
