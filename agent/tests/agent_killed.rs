//! The real `hostplane-agent` process killed with SIGKILL in the middle of a package install:
//! started again, it finds the task it had started and never finished in its store, and answers
//! the coordinator's repeated delivery with `interrupted` instead of starting the work a second
//! time; the task fails with that reason, and the package was installed at most once.
//!
//! It holds dpkg's lock and installs a package on this machine, so it runs in the `dpkg` group
//! of `.config/nextest.toml`, one at a time with the other tests that do.

use std::fs::{File, OpenOptions};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coordinator::config::Config;
use coordinator::store::Table;
use coordinator::store::records::InstanceRecord;
use nix::fcntl::{FcntlArg, fcntl};

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

fn root_and_apt() -> bool {
    let reason = if !nix::unistd::Uid::effective().is_root() {
        Some("this test needs root".to_string())
    } else {
        let output = Command::new("apt-cache").args(["policy", PACKAGE]).output();
        match output {
            Ok(output)
                if String::from_utf8_lossy(&output.stdout).contains("Candidate: ")
                    && !String::from_utf8_lossy(&output.stdout).contains("Candidate: (none)") =>
            {
                None
            }
            _ => Some(format!(
                "apt has no candidate for {PACKAGE}; run `apt-get update`"
            )),
        }
    };
    match reason {
        None => true,
        Some(reason) => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("cannot run: {reason}");
            }
            eprintln!("SKIPPED, and this would fail under CI=true: {reason}");
            false
        }
    }
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PACKAGE])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn installs_logged() -> usize {
    std::fs::read_to_string("/var/log/dpkg.log")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(" install ") && line.contains(&format!(" {PACKAGE}:")))
        .count()
}

fn remove_package() {
    if installed() {
        let status = Command::new("apt-get")
            .args(["remove", "-y", "-qq", PACKAGE])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn hold_dpkg_lock() -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open("/var/lib/dpkg/lock-frontend")
        .unwrap();
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while fcntl(&file, FcntlArg::F_SETLK(&lock)).is_err() {
        assert!(Instant::now() < deadline, "dpkg's lock stayed busy");
        std::thread::sleep(Duration::from_millis(200));
    }
    file
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

async fn wait_connected(channel: &coordinator::channel::Channel) {
    let started = Instant::now();
    while !channel.is_connected(INSTANCE) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the agent process did not connect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_state(app: &coordinator::App, id: &str, states: &[&str]) -> coordinator::tasks::Task {
    let started = Instant::now();
    loop {
        let task = app.tasks.get(id).unwrap().unwrap();
        if states.contains(&task.state.as_str()) {
            return task;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "task {id} did not reach {states:?}: {task:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_task_answers_interrupted_and_does_not_start_it_again() {
    if !root_and_apt() {
        return;
    }
    remove_package();
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
    wait_connected(&app.channel).await;
    let installs_before = installs_logged();
    let lock = hold_dpkg_lock();
    let operation = protocol::Operation::PackageInstall {
        names: vec![PACKAGE.to_string()],
    };
    let (task, _) = app
        .tasks
        .submit(coordinator::agentwork::new_task(
            "customer-1",
            INSTANCE,
            coordinator::agentwork::PACKAGE_INSTALL,
            &operation,
        ))
        .unwrap();
    wait_state(&app, &task.id, &["running"]).await;
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
    let ended = wait_state(
        &app,
        &task.id,
        &["succeeded", "failed", "cancelled", "expired"],
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
    assert!(installs_logged() <= installs_before + 1);
    drop(agent);
    running.stop().await;
    remove_package();
}
