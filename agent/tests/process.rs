//! The real `hostplane-agent` binary against a coordinator started in-process: `enroll` with a
//! token, `run` until pinged, and a coordinator restart the running agent heals by itself.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::coordinator_crate as coordinator;

use coordinator::config::Config;
use coordinator::store::Table;
use coordinator::store::records::InstanceRecord;
use testkit::coordinator::{instance, wait_connected};

const BINARY: &str = env!("CARGO_BIN_EXE_hostplane-agent");

/// Kills the child when the test ends, whichever way it ends.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
    wait_connected(&running.app.channel, 101, true).await;
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
    wait_connected(&running.app.channel, 101, true).await;
    let rtt = running
        .app
        .channel
        .ping(101, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(rtt < Duration::from_secs(5));
    running.stop().await;
}

/// Collects a child's standard error lines in the background.
fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::BufRead;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Waits (bounded) until `count` collected lines contain `needle`.
async fn wait_for_lines(
    lines: &std::sync::Mutex<Vec<String>>,
    needle: &str,
    count: usize,
    timeout: Duration,
) {
    let started = Instant::now();
    loop {
        let seen = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(needle))
            .count();
        if seen >= count {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "not {count} lines with '{needle}' within {timeout:?}: {:#?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn before_enrollment_run_waits_retries_a_stored_token_until_the_coordinator_answers_and_connects()
 {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let state = dir.path().join("agent");
    let running = coordinator::server::start(Config::for_tests(data.clone()))
        .await
        .unwrap();
    running
        .app
        .store
        .put(Table::Instances, &InstanceRecord::key(102), &instance(102))
        .unwrap();
    let quic = running.quic.unwrap();
    let offer = running.app.channel.issue_enrollment(102, "admin").unwrap();
    // The coordinator goes away before the agent starts: nobody answers at the token's address.
    running.stop().await;
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join(agent::standby::TOKEN_FILE),
        format!("{}\n", offer.token),
    )
    .unwrap();

    let mut child = Command::new(BINARY)
        .arg("--state-dir")
        .arg(&state)
        .args(["run", "--max-backoff-seconds", "1"])
        .env("HOSTPLANE_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = collect_lines(child.stderr.take().unwrap());
    let _agent = Guard(child);
    wait_for_lines(&lines, "failed (", 2, Duration::from_secs(40)).await;
    assert!(
        state.join(agent::standby::TOKEN_FILE).exists(),
        "kept for the next attempt"
    );

    let mut config = Config::for_tests(data);
    config.quic_listen = quic;
    let running = coordinator::server::start(config).await.unwrap();
    wait_connected(&running.app.channel, 102, true).await;
    running
        .app
        .channel
        .ping(102, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        !state.join(agent::standby::TOKEN_FILE).exists(),
        "the used token is removed"
    );
    wait_for_lines(&lines, "enrolled with the token", 1, Duration::from_secs(5)).await;
    running.stop().await;
}

#[tokio::test]
async fn without_a_token_run_waits_for_a_separate_enroll_and_then_connects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let state = dir.path().join("agent");
    let running = coordinator::server::start(Config::for_tests(data))
        .await
        .unwrap();
    running
        .app
        .store
        .put(Table::Instances, &InstanceRecord::key(103), &instance(103))
        .unwrap();
    // A bad token left behind is set aside, and the service keeps waiting.
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join(agent::standby::TOKEN_FILE), "not-a-token\n").unwrap();
    let mut child = Command::new(BINARY)
        .arg("--state-dir")
        .arg(&state)
        .args(["run", "--max-backoff-seconds", "1"])
        .env("HOSTPLANE_LOG", "info")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = collect_lines(child.stderr.take().unwrap());
    let mut agent = Guard(child);
    wait_for_lines(
        &lines,
        "cannot enroll this agent",
        1,
        Duration::from_secs(10),
    )
    .await;
    assert!(state.join(agent::standby::REFUSED_TOKEN_FILE).exists());
    assert!(
        agent.0.try_wait().unwrap().is_none(),
        "the service keeps waiting"
    );

    let offer = running.app.channel.issue_enrollment(103, "admin").unwrap();
    let arguments: Vec<String> = offer
        .command
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect();
    let enroll = tokio::task::spawn_blocking({
        let state = state.clone();
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
    assert!(
        enroll.status.success(),
        "{}",
        String::from_utf8_lossy(&enroll.stderr)
    );
    wait_connected(&running.app.channel, 103, true).await;
    wait_for_lines(
        &lines,
        "enrolled by `hostplane-agent enroll`",
        1,
        Duration::from_secs(5),
    )
    .await;
    running.stop().await;
}
