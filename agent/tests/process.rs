//! The real `hostplane-agent` binary against a coordinator started in-process: `enroll` with a
//! token, `run` until pinged, and a coordinator restart the running agent heals by itself.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coordinator::config::Config;
use coordinator::store::Table;
use coordinator::store::records::InstanceRecord;

const BINARY: &str = env!("CARGO_BIN_EXE_hostplane-agent");

fn instance(id: u32) -> InstanceRecord {
    InstanceRecord {
        id,
        user: "customer-1".into(),
        node: "pve1".into(),
        hostname: format!("ct{id}"),
        template: "debian-12".into(),
        cpu: 1,
        memory: 512,
        swap: 0,
        disk: 4,
        state: "ready".into(),
        suspended: false,
        created_at: "2025-01-01T00:00:00Z".into(),
        updated_at: "2025-01-01T00:00:00Z".into(),
    }
}

/// Kills the child when the test ends, whichever way it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the instance's agent is connected.
async fn wait_connected(channel: &coordinator::channel::Channel, instance: u32) {
    let started = Instant::now();
    let mut events = channel.subscribe();
    while !channel.is_connected(instance) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the agent process did not connect"
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), events.recv()).await;
    }
}

#[tokio::test]
async fn the_agent_binary_enrolls_runs_answers_pings_and_survives_a_coordinator_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let state = dir.path().join("agent");
    let running = coordinator::server::start(Config::for_tests(data.clone()))
        .await
        .unwrap();
    running
        .app
        .store
        .put(Table::Instances, &InstanceRecord::key(101), &instance(101))
        .unwrap();
    let quic = running.quic.unwrap();
    let offer = running.app.channel.issue_enrollment(101, "admin").unwrap();

    // The command line the API hands out, run as it is.
    let mut words = offer.command.split_whitespace();
    assert_eq!(words.next(), Some("hostplane-agent"));
    let arguments: Vec<&str> = words.collect();
    let enroll = tokio::task::spawn_blocking({
        let state = state.clone();
        let arguments: Vec<String> = arguments.iter().map(|word| word.to_string()).collect();
        move || {
            Command::new(BINARY)
                .arg("--state-dir")
                .arg(&state)
                .args(&arguments)
                .env("HOSTPLANE_LOG", "warn")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&enroll.stdout);
    assert!(
        enroll.status.success(),
        "enroll failed: {stdout}{}",
        String::from_utf8_lossy(&enroll.stderr)
    );
    assert!(stdout.contains("instance=101 generation=1"), "{stdout}");

    // The same token a second time: a clear refusal and a failing exit status.
    let again = tokio::task::spawn_blocking({
        let state = dir.path().join("other");
        let arguments: Vec<String> = arguments.iter().map(|word| word.to_string()).collect();
        move || {
            Command::new(BINARY)
                .arg("--state-dir")
                .arg(&state)
                .args(&arguments)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already used"), "{stderr}");

    let _agent = Guard(
        Command::new(BINARY)
            .arg("--state-dir")
            .arg(&state)
            .args(["run", "--max-backoff-seconds", "1"])
            .env("HOSTPLANE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_connected(&running.app.channel, 101).await;
    running
        .app
        .channel
        .ping(101, Duration::from_secs(5))
        .await
        .unwrap();

    running.stop().await;
    let mut config = Config::for_tests(data);
    config.quic_listen = quic;
    let running = coordinator::server::start(config).await.unwrap();
    wait_connected(&running.app.channel, 101).await;
    let rtt = running
        .app
        .channel
        .ping(101, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(rtt < Duration::from_secs(5));
    running.stop().await;
}
