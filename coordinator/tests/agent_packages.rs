//! Packages through the whole path: API → coordinator → QUIC → agent → the real apt and dpkg of
//! this machine, with the small `sl` package; names and the provider's allow/deny list checked
//! before any task exists; and a connection cut in the middle of an install: the task is
//! delivered again when the agent is back, and the agent answers it from its store instead of
//! installing twice.
//!
//! These tests change the machine's packages and hold dpkg's lock, so they run one at a time
//! with every other test that does (the `dpkg` group in `.config/nextest.toml`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use testkit::agent_crate as agent;

use serde_json::json;
use testkit::agent_work::{INSTANCE, Setup, log_lines};
use testkit::dpkg;

const PACKAGE: &str = "sl";

/// The tests that install and remove `sl` take turns: a test binary runs its tests on parallel
/// threads, and two installs of one package at once would count each other's dpkg log lines.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
fn handlers() -> agent::Handlers {
    agent::Handlers::standard()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_list_upgrade_and_remove_through_the_api() {
    let _turn = TURN.lock().await;
    if !dpkg::root_and_apt(PACKAGE) {
        return;
    }
    dpkg::remove(PACKAGE);
    let setup = testkit::agent_work::setup(handlers()).await;
    let base = format!("/api/v1/instance/{INSTANCE}");

    let task = setup
        .task(
            "POST",
            &format!("{base}/packages"),
            Some(json!({"packages": [PACKAGE]})),
        )
        .await;
    assert_eq!(task["task"]["state"], "succeeded", "{task:?}");
    assert_eq!(task["task"]["kind"], "package.install");
    let reported = task["task"]["result"]["packages"].as_array().unwrap();
    assert_eq!(reported[0]["name"], PACKAGE, "{task:?}");
    assert!(
        !log_lines(&task).is_empty(),
        "apt's output is the task's log"
    );
    assert!(dpkg::installed(PACKAGE));

    // Seed 000 spells it both ways.
    for path in ["package", "packages"] {
        let listed = setup
            .customer("GET", &format!("{base}/{path}?name={PACKAGE}"), None)
            .await;
        assert_eq!(listed.status, 200, "{:?}", listed.body);
        assert_eq!(listed.body["total"], 1);
        assert_eq!(listed.body["data"][0]["name"], PACKAGE);
        assert!(
            listed.body["data"][0]["version"]
                .as_str()
                .unwrap()
                .contains('.')
        );
    }
    let all = setup
        .customer("GET", &format!("{base}/package?limit=5"), None)
        .await;
    assert_eq!(all.status, 200);
    assert_eq!(all.body["data"].as_array().unwrap().len(), 5);
    assert!(all.body["total"].as_u64().unwrap() > 50);

    let upgraded = setup
        .task(
            "PUT",
            &format!("{base}/packages"),
            Some(json!({"packages": [PACKAGE]})),
        )
        .await;
    assert_eq!(upgraded["task"]["state"], "succeeded", "{upgraded:?}");

    let removed = setup
        .task(
            "DELETE",
            &format!("{base}/package"),
            Some(json!({"packages": [PACKAGE]})),
        )
        .await;
    assert_eq!(removed["task"]["state"], "succeeded", "{removed:?}");
    assert!(!dpkg::installed(PACKAGE));
    let listed = setup
        .customer("GET", &format!("{base}/package?name={PACKAGE}"), None)
        .await;
    assert_eq!(listed.body["total"], 0, "{:?}", listed.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_the_providers_list_are_checked_before_any_task() {
    let setup = testkit::agent_work::setup_with(handlers(), |config| {
        config.package_policy =
            protocol::names::package_policy::PackagePolicy::new(["s*", "nginx*"], ["sl"]).unwrap();
    })
    .await;
    let base = format!("/api/v1/instance/{INSTANCE}");
    let before = setup.task_count().await;
    let refusals = [
        (
            "POST",
            json!({"packages": ["-oAPT::Get::Assume-Yes=1"]}),
            422,
            "validation_failed",
        ),
        (
            "POST",
            json!({"packages": ["bad;name"]}),
            422,
            "validation_failed",
        ),
        (
            "POST",
            json!({"packages": ["Upper"]}),
            422,
            "validation_failed",
        ),
        ("POST", json!({"packages": []}), 422, "validation_failed"),
        ("POST", json!({"packages": "sl"}), 400, "bad_input"),
        (
            "POST",
            json!({"packages": ["sl"], "force": true}),
            400,
            "bad_input",
        ),
        (
            "POST",
            json!({"packages": ["sl"]}),
            403,
            "package_not_allowed",
        ),
        (
            "POST",
            json!({"packages": ["htop"]}),
            403,
            "package_not_allowed",
        ),
        (
            "DELETE",
            json!({"packages": ["hostplane-agent"]}),
            403,
            "package_protected",
        ),
        (
            "PUT",
            json!({"packages": ["../x"]}),
            422,
            "validation_failed",
        ),
    ];
    for (method, body, status, code) in refusals {
        let answer = setup
            .customer(method, &format!("{base}/packages"), Some(body.clone()))
            .await;
        assert_eq!(answer.status, status, "{method} {body}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["code"], code, "{method} {body}");
    }
    let listed = setup
        .customer("GET", &format!("{base}/package?name=-x"), None)
        .await;
    assert_eq!(listed.status, 422);
    assert_eq!(
        setup.task_count().await,
        before,
        "a refused request made a task"
    );

    // The list limits customers, not the provider's admins: this one is accepted (its task
    // may then fail for any reason; only the acceptance matters here).
    let admin = setup
        .server
        .admin(
            "POST",
            &format!("{base}/packages"),
            Some(json!({"packages": ["hostplane-test-package-that-does-not-exist"]})),
        )
        .await;
    assert_eq!(admin.status, 202, "{:?}", admin.body);
    let task = setup
        .ended(admin.body["task"]["id"].as_str().unwrap())
        .await;
    assert_eq!(task["task"]["state"], "failed");
    assert_eq!(task["task"]["error"]["code"], "not_found", "{task:?}");
}

/// A UDP relay between the agent and the coordinator that a test can cut and mend.
struct Relay {
    address: SocketAddr,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(upstream).await.unwrap();
        let address = front.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let dropping = cut.clone();
        let task = tokio::spawn(async move {
            let mut peer: Option<SocketAddr> = None;
            let mut from_agent = vec![0u8; 65536];
            let mut from_coordinator = vec![0u8; 65536];
            loop {
                tokio::select! {
                    received = front.recv_from(&mut from_agent) => {
                        let Ok((length, sender)) = received else { return };
                        peer = Some(sender);
                        if !dropping.load(Ordering::Relaxed) {
                            let _ = back.send(&from_agent[..length]).await;
                        }
                    }
                    received = back.recv(&mut from_coordinator) => {
                        let Ok(length) = received else { continue };
                        if let (Some(peer), false) = (peer, dropping.load(Ordering::Relaxed)) {
                            let _ = front.send_to(&from_coordinator[..length], peer).await;
                        }
                    }
                }
            }
        });
        Relay { address, cut, task }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::Relaxed);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn task_state(setup: &Setup, id: &str) -> String {
    let answer = setup
        .server
        .admin("GET", &format!("/api/v1/task/{id}"), None)
        .await;
    answer.body["task"]["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_install_ends_with_one_install_and_a_succeeded_task() {
    let _turn = TURN.lock().await;
    if !dpkg::root_and_apt(PACKAGE) {
        return;
    }
    dpkg::remove(PACKAGE);
    let mut setup = testkit::agent_work::setup(handlers()).await;
    // The agent dials through a relay this test can cut, with a short idle timeout so that both
    // sides notice the cut in seconds.
    setup.stop_agent().await;
    let quic = setup.server.app().channel.local_address().unwrap();
    let relay = Relay::start(quic).await;
    let mut options = testkit::agent::run_options(setup.state_dir());
    options.coordinator = Some(relay.address.to_string());
    options.transport.idle_timeout = Duration::from_secs(2);
    options.transport.keep_alive = Duration::from_millis(400);
    let finished = agent::DiskFinishedTasks::open(setup.state_dir().join("tasks"), 100).unwrap();
    setup.agent =
        Some(agent::spawn(options, handlers(), Arc::new(finished)).expect("the agent starts"));
    setup.wait_connected(true).await;

    let installs_before = dpkg::installs_logged(PACKAGE);
    let lock = dpkg::hold_lock();
    let answer = setup
        .customer(
            "POST",
            &format!("/api/v1/instance/{INSTANCE}/packages"),
            Some(json!({"packages": [PACKAGE]})),
        )
        .await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let id = answer.body["task"]["id"].as_str().unwrap().to_string();
    // The agent took it and apt waits for the lock this test holds.
    wait_for("the task running", Duration::from_secs(30), async || {
        task_state(&setup, &id).await == "running"
    })
    .await;

    relay.set_cut(true);
    setup.wait_connected(false).await;
    wait_for(
        "the task queued again",
        Duration::from_secs(30),
        async || task_state(&setup, &id).await == "queued",
    )
    .await;
    // The agent goes on with the work while it is cut off.
    drop(lock);
    wait_for("the install", Duration::from_secs(120), async || {
        dpkg::installed(PACKAGE)
    })
    .await;

    relay.set_cut(false);
    let ended = setup.ended(&id).await;
    assert_eq!(ended["task"]["state"], "succeeded", "{ended:?}");
    let lines = log_lines(&ended).join("\n");
    assert!(
        lines.contains("connection to the agent was lost"),
        "{lines}"
    );
    assert!(lines.contains("already had this task"), "{lines}");
    assert_eq!(
        dpkg::installs_logged(PACKAGE),
        installs_before + 1,
        "installed once, not twice"
    );
    setup.stop_agent().await;
    dpkg::remove(PACKAGE);
}
