//! The simulator over HTTPS, its state file, and the `pvesim` binary's start-up line and exit.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pvesim::SimConfig;
use sha2::{Digest, Sha256};
use testkit::pvesim::{TOKEN, config, start};

#[tokio::test]
async fn https_serves_the_advertised_certificate() {
    let harness = start(SimConfig {
        tls: true,
        ..config()
    })
    .await;
    assert!(
        harness.base.starts_with("https://127.0.0.1:"),
        "{}",
        harness.base
    );
    let fingerprint = harness.sim.fingerprint().unwrap();
    assert!(
        regex::Regex::new("^([0-9A-F]{2}:){31}[0-9A-F]{2}$")
            .unwrap()
            .is_match(&fingerprint),
        "{fingerprint}"
    );
    assert!(
        harness
            .sim
            .certificate_pem()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let response = harness
        .client
        .get(format!("{}/version", harness.base))
        .header("Authorization", format!("PVEAPIToken={TOKEN}"))
        .send()
        .await
        .unwrap();
    let peer = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .unwrap()
        .to_vec();
    let seen = Sha256::digest(&peer)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    assert_eq!(seen, fingerprint);
    assert_eq!(response.status(), 200);
    let nodes = harness.call("GET", "/nodes", &[]).await;
    assert_eq!(nodes.data()[0]["ssl_fingerprint"], fingerprint.as_str());
    let admin = harness
        .client
        .get(format!("https://{}/_sim/faults", harness.sim.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        admin.status(),
        401,
        "the admin endpoint needs credentials over HTTPS"
    );
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn state_file_survives_a_restart() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("cluster.json");
    let harness = start(SimConfig {
        state_file: Some(file.clone()),
        ..config()
    })
    .await;
    harness.create_ok(150, &[("hostname", "kept")]).await;
    harness.sim.shutdown().await;
    let harness = start(SimConfig {
        state_file: Some(file),
        ..config()
    })
    .await;
    let config = harness.call("GET", "/nodes/pve1/lxc/150/config", &[]).await;
    assert_eq!(config.data()["hostname"], "kept");
    assert_eq!(
        harness.call("GET", "/cluster/nextid", &[]).await.data(),
        "100"
    );
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn binary_prints_its_url_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pvesim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--plain-http",
            "--token",
            TOKEN,
            "--auth-delay-ms",
            "0",
            "--task-ms",
            "5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let line = tokio::time::timeout(Duration::from_secs(30), line)
        .await
        .expect("no listening line")
        .unwrap();
    let pattern = regex::Regex::new(r"^listening (http://127\.0\.0\.1:\d+/api2/json)\n$").unwrap();
    let base = pattern
        .captures(&line)
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))[1]
        .to_string();
    testkit::pvesim::install_crypto();
    let client = reqwest::Client::new();
    let version = client
        .get(format!("{base}/version"))
        .header("Authorization", format!("PVEAPIToken={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(version.status(), 200);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "pvesim did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
