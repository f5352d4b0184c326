//! The real `hostplane-agent` process killed with SIGKILL in the middle of a package install:
//! started again, it finds the task it had started and never finished in its store, and answers
//! the coordinator's repeated delivery with `interrupted` instead of starting the work a second
//! time; the task fails with that reason, and the package was installed at most once.
//!
//! It holds dpkg's lock and installs a package on this machine, so it runs in the `dpkg` group
//! of `.config/nextest.toml`, one at a time with the other tests that do.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::coordinator_crate as coordinator;

use coordinator::config::Config;
use coordinator::store::Table;
use coordinator::store::records::InstanceRecord;
use testkit::coordinator::{wait_connected, wait_task_state};
use testkit::dpkg;

const BINARY: &str = env!("CARGO_BIN_EXE_hostplane-agent");
const PACKAGE: &str = "sl";
const INSTANCE: u32 = 101;

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_agent(state: &std::path::Path) -> Guard {
    Guard(
        Command::new(BINARY)
            .arg("--state-dir")
            .arg(state)
            .args(["run", "--max-backoff-seconds", "1"])
            .env("HOSTPLANE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_task_answers_interrupted_and_does_not_start_it_again() {
    if !dpkg::root_and_apt(PACKAGE) {
        return;
    }
    dpkg::remove(PACKAGE);
    let dir = tempfile::tempdir().unwrap();
    let running = coordinator::server::start(Config::for_tests(dir.path().join("data")))
        .await
        .unwrap();
    let app = running.app.clone();
    let record = InstanceRecord {
        id: INSTANCE,
        user: "customer-1".into(),
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
    app.store
        .put(Table::Instances, &InstanceRecord::key(INSTANCE), &record)
        .unwrap();
    let offer = app.channel.issue_enrollment(INSTANCE, "admin").unwrap();
    let state = dir.path().join("agent");
    let enrolled = Command::new(BINARY)
        .arg("--state-dir")
        .arg(&state)
        .args(["enroll", "--token", &offer.token])
        .output()
        .unwrap();
    assert!(enrolled.status.success(), "{enrolled:?}");

    let agent = run_agent(&state);
    wait_connected(&app.channel, INSTANCE, true).await;
    let installs_before = dpkg::installs_logged(PACKAGE);
    let lock = dpkg::hold_lock();
    let operation = protocol::Operation::PackageInstall {
        names: vec![PACKAGE.to_string()],
    };
    let (task, _) = app
        .tasks
        .submit(coordinator::agentwork::new_task(
            "customer-1",
            INSTANCE,
            coordinator::tasks::kinds::PACKAGE_INSTALL,
            &operation,
        ))
        .unwrap();
    wait_task_state(&app, &task.id, &["running"], Duration::from_secs(90)).await;
    assert!(
        std::fs::read_dir(state.join("tasks"))
            .unwrap()
            .any(|entry| entry
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".started")),
        "the agent noted the start on disk before it acknowledged"
    );

    // SIGKILL: the agent gets no chance to record anything. (Its apt, waiting for the lock,
    // is left over as systemd would stop it.)
    drop(agent);
    drop(lock);
    let agent = run_agent(&state);
    let ended = wait_task_state(
        &app,
        &task.id,
        &["succeeded", "failed", "cancelled", "expired"],
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(ended.state.as_str(), "failed", "{ended:?}");
    let error = ended.error.clone().expect("a reason");
    assert_eq!(error.code, "interrupted", "{error:?}");
    assert!(error.message.contains("partly"), "{error:?}");

    // Whatever the killed run left behind, the package was not installed twice.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60)
        && Command::new("pgrep")
            .args(["-x", "apt-get"])
            .status()
            .is_ok_and(|status| status.success())
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(dpkg::installs_logged(PACKAGE) <= installs_before + 1);
    drop(agent);
    running.stop().await;
    dpkg::remove(PACKAGE);
}
