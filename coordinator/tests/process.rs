//! The real `hostplane-coordinator` binary: the ready line, endpoints.json, /healthz,
//! a clean stop on SIGTERM, and one clear line for a bad configuration value.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_hostplane-coordinator");

#[tokio::test]
async fn serve_dev_prints_where_it_listens_answers_healthz_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(BINARY)
        .args([
            "serve",
            "--dev",
            "--http-listen",
            "127.0.0.1:0",
            "--quic-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("HOSTPLANE_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let started = Instant::now();
    let listening = loop {
        let line = receiver
            .recv_timeout(Duration::from_secs(60).saturating_sub(started.elapsed()))
            .expect("the coordinator says where it listens within a minute");
        lines.push(line.clone());
        if line.starts_with("listening ") {
            break line;
        }
    };
    assert!(
        lines.iter().any(|line| line.starts_with("admin api key")),
        "{lines:?}"
    );
    let http = listening
        .split_whitespace()
        .find_map(|part| part.strip_prefix("http="))
        .expect("http= in the ready line")
        .to_string();
    let endpoints: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("endpoints.json")).unwrap())
            .unwrap();
    assert_eq!(endpoints["http"], http.as_str());
    let health = reqwest::get(format!("{http}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{http}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let key = std::fs::read_to_string(data.join("admin.key")).unwrap();
    assert!(
        lines.iter().any(|line| line.ends_with(key.trim())),
        "the printed key is the stored one"
    );

    assert!(send_sigterm(child.id()), "SIGTERM sent");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the coordinator stops within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "a clean stop exits 0, got {status}");
}

/// Sends SIGTERM with the `kill` command (the coordinator crate does not link a signal library).
fn send_sigterm(pid: u32) -> bool {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

#[test]
fn a_bad_configuration_value_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("coordinator.toml");
    std::fs::write(&config, "http_listen = \"not-an-address\"\n").unwrap();
    let output = Command::new(BINARY)
        .arg("--config")
        .arg(&config)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("http_listen"), "{stderr}");
    assert!(!stderr.contains("panicked"));

    let output = Command::new(BINARY)
        .args(["serve", "--http-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("HOSTPLANE_QUIC_LISTEN", "nowhere")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("quic_listen"),
        "environment values are checked too: {stderr}"
    );

    let output = Command::new(BINARY)
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .args(["serve"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("missing.toml"), "{stderr}");
}
