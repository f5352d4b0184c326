//! proxmoxer, the Python client many Proxmox tools use, drives the simulator over HTTPS with an
//! API token: a QEMU VM through its lifecycle (create, start, status, reset, shutdown, stop,
//! delete) and a template upload (multipart, as proxmoxer sends it). The client is installed
//! with pip into a virtual environment cached under the build's temporary folder; when that
//! fails the test is skipped, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::pvesim::{TOKEN, config, start};

const SCRIPT: &str = r#"
import sys, time
from proxmoxer import ProxmoxAPI

host, port, user, token_name, token_value, upload_path, upload_name = sys.argv[1:8]
api = ProxmoxAPI(host, port=int(port), user=user, token_name=token_name,
                 token_value=token_value, verify_ssl=False, service="PVE")
node = api.nodes("pve1")

def finished(upid):
    for _ in range(1000):
        status = node.tasks(upid).status.get()
        if status["status"] == "stopped":
            assert status["exitstatus"] == "OK", status
            return status
        time.sleep(0.02)
    raise SystemExit("task did not stop: " + upid)

vmid = int(api.cluster.nextid.get())
finished(node.qemu.post(vmid=vmid, name="proxmoxer-vm", memory=1024, cores=2,
                        scsi0="local-lvm:4", net0="virtio,bridge=vmbr0"))
assert [vm["vmid"] for vm in node.qemu.get()] == [vmid]
assert node.qemu(vmid).config.get()["cores"] == 2
finished(node.qemu(vmid).status.start.post())
current = node.qemu(vmid).status.current.get()
assert current["status"] == "running" and current["qmpstatus"] == "running", current
finished(node.qemu(vmid).status.reset.post())
finished(node.qemu(vmid).status.shutdown.post(timeout=30))
assert node.qemu(vmid).status.current.get()["status"] == "stopped"
finished(node.qemu(vmid).status.start.post())
finished(node.qemu(vmid).status.stop.post())
finished(node.qemu(vmid).delete())
assert node.qemu.get() == []

with open(upload_path, "rb") as upload:
    finished(node.storage("local").upload.post(content="vztmpl", filename=upload))
volumes = [item["volid"] for item in node.storage("local").content.get(content="vztmpl")]
assert "local:vztmpl/" + upload_name in volumes, volumes
print("proxmoxer drove the simulator")
"#;

/// A virtual environment with proxmoxer, made once per build folder.
fn environment() -> Result<PathBuf, String> {
    let folder = Path::new(env!("CARGO_TARGET_TMPDIR")).join("proxmoxer-venv");
    let python = folder.join("bin/python");
    let has_client = |python: &Path| {
        Command::new(python)
            .args(["-c", "import proxmoxer, requests"])
            .output()
            .is_ok_and(|output| output.status.success())
    };
    if python.is_file() && has_client(&python) {
        return Ok(python);
    }
    let run = |program: &Path, arguments: &[&str]| -> Result<(), String> {
        let output = Command::new(program)
            .args(arguments)
            .output()
            .map_err(|error| format!("cannot run {}: {error}", program.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {arguments:?} failed: {}",
                program.display(),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    };
    let folder_text = folder.to_string_lossy().into_owned();
    run(Path::new("python3"), &["-m", "venv", &folder_text])?;
    run(
        &folder.join("bin/pip"),
        &[
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "proxmoxer",
            "requests",
        ],
    )?;
    if has_client(&python) {
        Ok(python)
    } else {
        Err("proxmoxer is not importable after pip install".into())
    }
}

#[tokio::test]
async fn proxmoxer_drives_a_vm_and_uploads_a_template() {
    let python = match environment() {
        Ok(python) => python,
        Err(reason) if std::env::var("CI").is_ok_and(|value| value == "true") => {
            panic!("proxmoxer cannot be installed: {reason}")
        }
        Err(reason) => {
            eprintln!("skipped: proxmoxer cannot be installed: {reason}");
            return;
        }
    };
    let harness = start(pvesim::SimConfig {
        tls: true,
        task_duration: Duration::from_millis(10),
        ..config()
    })
    .await;
    let folder = tempfile::tempdir().unwrap();
    let script = folder.path().join("drive.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let name = "proxmoxer-upload_1.0_amd64.tar.zst";
    let upload = folder.path().join(name);
    std::fs::write(&upload, b"not really zstd, but bytes to store".repeat(64)).unwrap();
    let (user_and_token, secret) = TOKEN.split_once('=').unwrap();
    let (user, token_name) = user_and_token.split_once('!').unwrap();
    let port = harness.sim.local_addr().port().to_string();
    let child = tokio::process::Command::new(&python)
        .arg(&script)
        .args(["127.0.0.1", &port, user, token_name, secret])
        .arg(&upload)
        .arg(name)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("the proxmoxer script finishes within two minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "proxmoxer script failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("proxmoxer drove the simulator"), "{stdout}");
    let tasks: Vec<String> = harness
        .sim
        .state()
        .snapshot()
        .tasks
        .iter()
        .map(|task| task.kind.clone())
        .collect();
    for kind in [
        "qmcreate",
        "qmstart",
        "qmreset",
        "qmshutdown",
        "qmstop",
        "qmdestroy",
        "imgcopy",
    ] {
        assert!(tasks.iter().any(|task| task == kind), "{kind}: {tasks:?}");
    }
    harness.sim.shutdown().await;
}
