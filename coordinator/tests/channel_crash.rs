//! A crash of the real `hostplane-coordinator serve` process (SIGKILL: no connection close goes
//! out) and a restart on the same QUIC port: the connected agent is told by the restarted process,
//! on its next packet, that its old connection is gone (a stateless reset the agent can verify),
//! reconnects by itself, and answers pings through the API again.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use testkit::agent_crate as agent;

use coordinator::store::records::InstanceRecord;
use coordinator::store::{Store, Table};
use testkit::process::Started;

const BINARY: &str = env!("CARGO_BIN_EXE_hostplane-coordinator");

/// A coordinator process, killed when dropped.
struct Coordinator {
    /// Killed (SIGKILL) when the coordinator is dropped.
    _process: Started,
    http: String,
    quic: String,
}

fn serve(data: &Path, quic_listen: &str) -> Coordinator {
    let config = data.with_extension("toml");
    std::fs::write(&config, "").unwrap();
    let mut command = Command::new(BINARY);
    command
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--http-listen", "127.0.0.1:0", "--quic-listen"])
        .arg(quic_listen)
        .env("HOSTPLANE_LOG", "warn")
        .env_remove("JOURNAL_STREAM")
        .stderr(Stdio::inherit());
    let started = Started::spawn(command);
    Coordinator {
        http: started.field("http="),
        quic: started.field("quic="),
        _process: started,
    }
}

async fn call(client: &reqwest::Client, key: &str, method: &str, url: String) -> serde_json::Value {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = client
        .request(method, &url)
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

#[tokio::test]
async fn after_a_crash_the_restarted_coordinator_resets_the_agent_which_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    {
        let store = Store::open(&data).unwrap();
        store
            .put(
                Table::Instances,
                &InstanceRecord::key(101),
                &testkit::coordinator::instance(101),
            )
            .unwrap();
    }
    let first = serve(&data, "127.0.0.1:0");
    let key = std::fs::read_to_string(data.join("admin.key")).unwrap();
    let key = key.trim();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let offer = call(
        &client,
        key,
        "POST",
        format!("{}/api/v1/instance/101/enrollment", first.http),
    )
    .await;
    let agent_dir = dir.path().join("agent");
    agent::enroll(agent::EnrollOptions::new(
        offer["token"].as_str().unwrap(),
        &agent_dir,
    ))
    .await
    .unwrap();
    let mut options = testkit::agent::run_options(&agent_dir);
    // The idle timeout stays long (the coordinator's 40 s applies), so only a reset explains a
    // quick reconnect; frequent keep-alives make the agent's next packet come soon.
    options.transport = agent::Transport {
        keep_alive: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(60),
    };
    // At least half a second between losing the connection and the next attempt, so the reason
    // stays readable in the agent's state meanwhile.
    options.backoff_initial = Duration::from_secs(1);
    options.backoff_maximum = Duration::from_secs(1);
    let handle = agent::spawn(
        options,
        agent::Handlers::standard(),
        Arc::new(agent::MemoryFinishedTasks::new(100)),
    )
    .unwrap();
    testkit::agent::connected(&handle, 1).await;
    let ping = |http: &str| format!("{http}/api/v1/instance/101/agent/ping");
    call(&client, key, "POST", ping(&first.http)).await;

    // A crash: no CONNECTION_CLOSE reaches the agent.
    let quic = first.quic.clone();
    drop(first);
    let second = serve(&data, &quic);
    assert_eq!(second.quic, quic);
    let lost = handle
        .wait_until(Duration::from_secs(60), |state| state.last_error.is_some())
        .await
        .unwrap_or_else(|state| panic!("the agent never noticed the crash: {state:?}"));
    assert_eq!(
        lost.last_error.as_deref(),
        Some("reset by peer"),
        "the restarted coordinator, not the idle timeout, ended the old connection: {lost:?}"
    );
    let state = testkit::agent::connected(&handle, 2).await;
    assert_eq!(
        state.phase,
        agent::ConnectionPhase::Connected {
            instance_id: 101,
            generation: 1
        }
    );
    let pong = call(&client, key, "POST", ping(&second.http)).await;
    assert!(pong["rtt_ms"].is_number(), "{pong}");
    handle.stop().await;
}
