//! pvesim in LXC mode, through its Proxmox HTTP API only: a create clones a real container with
//! the asked hostname and limits, and start, suspend, resume, reboot, shutdown, stop and destroy
//! act on it; a container stopped behind the API's back shows as stopped. The `pvesim --lxc`
//! binary does the same.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use hostplane_tests::binaries::binary;
use hostplane_tests::command::run_checked;
use hostplane_tests::lxc::{Testbed, host};
use pvesim::{LxcConfig, SimConfig, Simulator};
use serde_json::Value;

const TOKEN: &str = "root@pam!e2e=6a0c7e7e-2222-4333-8444-000000000042";
const TEMPLATE: &str = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst";

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: String) -> anyhow::Result<Api> {
        Ok(Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base,
        })
    }

    async fn call(&self, method: &str, path: &str, form: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.client.get(&url),
            "POST" => self.client.post(&url).form(form),
            "DELETE" => self.client.delete(&url).query(form),
            other => bail!("no method {other}"),
        };
        let response = request
            .header("Authorization", format!("PVEAPIToken={TOKEN}"))
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        ensure!(status.is_success(), "{method} {path}: {status} {body}");
        Ok(body["data"].clone())
    }

    /// Calls an endpoint that starts a task and waits (bounded) until the task ended OK.
    async fn task(&self, method: &str, path: &str, form: &[(&str, &str)]) -> anyhow::Result<()> {
        let upid = self.call(method, path, form).await?;
        let upid = upid.as_str().context("no UPID")?.to_string();
        let encoded: String = upid
            .replace(':', "%3A")
            .replace('@', "%40")
            .replace('!', "%21");
        let started = Instant::now();
        for _attempt in 0..3_000 {
            let status = self
                .call("GET", &format!("/nodes/pve1/tasks/{encoded}/status"), &[])
                .await?;
            if status["status"] == "stopped" {
                ensure!(status["exitstatus"] == "OK", "{path}: {status}");
                return Ok(());
            }
            ensure!(
                started.elapsed() < Duration::from_secs(180),
                "{path}: task {upid} still running"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("{path}: task {upid} did not end")
    }

    async fn status(&self, vmid: u32) -> anyhow::Result<String> {
        let data = self
            .call(
                "GET",
                &format!("/nodes/pve1/lxc/{vmid}/status/current"),
                &[],
            )
            .await?;
        Ok(data["status"].as_str().unwrap_or("").to_string())
    }
}

fn lxc_state(name: &str) -> anyhow::Result<String> {
    Ok(run_checked(
        "lxc-info",
        &["-n", name, "-s", "-H"],
        Duration::from_secs(30),
    )?
    .trim()
    .to_string())
}

/// The memory limit LXC applied to the running container, in bytes.
fn memory_limit(name: &str) -> anyhow::Result<u64> {
    let key = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let value = run_checked("lxc-cgroup", &["-n", name, key], Duration::from_secs(30))?;
    value.trim().parse().context("memory limit is not a number")
}

async fn wait_for<F>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: AsyncFnMut() -> anyhow::Result<bool>,
{
    let started = Instant::now();
    for _attempt in 0..10_000 {
        if check().await? {
            return Ok(());
        }
        ensure!(
            started.elapsed() < timeout,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what}: gave up")
}

fn lxc_config(testbed: &Testbed, kind: &str) -> LxcConfig {
    LxcConfig {
        // Named like the harness's own clones, so a killed run's leftovers are removed next time.
        name_prefix: format!("{}-", Testbed::container_name(kind)),
        apt_proxy: Some(testbed.apt_proxy_url()),
        addresses: hostplane_tests::lxc::SIMULATOR_ADDRESSES,
        lock_file: host::lock_path(),
        watch_interval: Duration::from_millis(300),
        ..LxcConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxmox_api_drives_real_containers() -> anyhow::Result<()> {
    let Some(testbed) = tokio::task::spawn_blocking(Testbed::ensure).await?? else {
        return Ok(());
    };
    let started = Instant::now();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let config = SimConfig {
        tokens: vec![TOKEN.into()],
        auth_failure_delay: Duration::ZERO,
        ..SimConfig::default()
    };
    let lxc = lxc_config(&testbed, "sim");
    let simulator = Simulator::start_lxc(config, listener, lxc.clone()).await?;
    let api = Api::new(simulator.base_url())?;
    let vmid = 120;
    let name = format!("{}{vmid}", lxc.name_prefix);

    api.task(
        "POST",
        "/nodes/pve1/lxc",
        &[
            ("vmid", "120"),
            ("ostemplate", TEMPLATE),
            ("rootfs", "local-lvm:4"),
            ("hostname", "web1"),
            ("memory", "256"),
            ("cores", "1"),
            ("net0", "name=eth0,bridge=vmbr0,ip=dhcp"),
        ],
    )
    .await?;
    // From here a failure still removes the container.
    let container = testbed.adopt(&name)?;
    ensure!(host::container_names()?.contains(&name));
    ensure!(lxc_state(&name)? == "STOPPED");
    let last = container.ip().octets()[3];
    ensure!(
        hostplane_tests::lxc::SIMULATOR_ADDRESSES.contains(&last),
        "{} is outside the simulator's range",
        container.ip()
    );
    eprintln!(
        "[pvesim_lxc] create: {name} at {} in {:.1?}",
        container.ip(),
        started.elapsed()
    );

    let step = Instant::now();
    api.task("POST", "/nodes/pve1/lxc/120/status/start", &[])
        .await?;
    ensure!(lxc_state(&name)? == "RUNNING");
    ensure!(api.status(vmid).await? == "running");
    ensure!(
        container
            .exec_checked(&["cat", "/proc/sys/kernel/hostname"])?
            .trim()
            == "web1"
    );
    ensure!(memory_limit(&name)? == 256 << 20);
    container.wait_until_up()?;
    let proxy = container.exec_checked(&["cat", "/etc/apt/apt.conf.d/01hostplane-proxy"])?;
    ensure!(proxy.contains(&testbed.apt_proxy_url()), "{proxy}");
    eprintln!(
        "[pvesim_lxc] start until systemd is up: {:.1?}",
        step.elapsed()
    );

    let step = Instant::now();
    api.task("POST", "/nodes/pve1/lxc/120/status/suspend", &[])
        .await?;
    ensure!(lxc_state(&name)? == "FROZEN");
    api.task("POST", "/nodes/pve1/lxc/120/status/resume", &[])
        .await?;
    ensure!(lxc_state(&name)? == "RUNNING");
    eprintln!("[pvesim_lxc] suspend and resume: {:.1?}", step.elapsed());

    let step = Instant::now();
    let before = container.init_pid();
    api.task("POST", "/nodes/pve1/lxc/120/status/reboot", &[])
        .await?;
    ensure!(lxc_state(&name)? == "RUNNING");
    ensure!(container.init_pid() != before, "reboot kept the same init");
    eprintln!("[pvesim_lxc] reboot: {:.1?}", step.elapsed());

    // Stopped behind the API's back: the model follows the real state.
    let step = Instant::now();
    run_checked("lxc-stop", &["-n", &name, "-k"], Duration::from_secs(30))?;
    wait_for(
        "status stopped after lxc-stop",
        Duration::from_secs(20),
        async || Ok(api.status(vmid).await? == "stopped"),
    )
    .await?;
    eprintln!(
        "[pvesim_lxc] status follows an outside stop: {:.1?}",
        step.elapsed()
    );

    let step = Instant::now();
    api.task("POST", "/nodes/pve1/lxc/120/status/start", &[])
        .await?;
    container.wait_until_up()?;
    api.task("POST", "/nodes/pve1/lxc/120/status/shutdown", &[])
        .await?;
    ensure!(lxc_state(&name)? == "STOPPED");
    ensure!(api.status(vmid).await? == "stopped");
    api.task("POST", "/nodes/pve1/lxc/120/status/start", &[])
        .await?;
    api.task("POST", "/nodes/pve1/lxc/120/status/stop", &[])
        .await?;
    ensure!(lxc_state(&name)? == "STOPPED");
    eprintln!(
        "[pvesim_lxc] start, shutdown, start, stop: {:.1?}",
        step.elapsed()
    );

    let step = Instant::now();
    api.task("DELETE", "/nodes/pve1/lxc/120", &[]).await?;
    ensure!(
        !host::container_names()?.contains(&name),
        "{name} still exists"
    );
    ensure!(
        api.status(vmid).await.is_err(),
        "the API still knows CT {vmid}"
    );
    eprintln!("[pvesim_lxc] destroy: {:.1?}", step.elapsed());
    drop(container);
    simulator.shutdown().await;
    eprintln!("[pvesim_lxc] total: {:.1?}", started.elapsed());
    tokio::task::spawn_blocking(move || testbed.shutdown()).await??;
    Ok(())
}

/// Kills the child process on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pvesim_binary_has_an_lxc_mode() -> anyhow::Result<()> {
    let Some(testbed) = tokio::task::spawn_blocking(Testbed::ensure).await?? else {
        return Ok(());
    };
    let started = Instant::now();
    let program = tokio::task::spawn_blocking(|| binary("pvesim", "pvesim")).await??;
    let lxc = lxc_config(&testbed, "bin");
    let mut child = ChildGuard(
        Command::new(program)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--plain-http",
                "--auth-delay-ms",
                "0",
                "--token",
                TOKEN,
                "--lxc",
                "--lxc-name-prefix",
                &lxc.name_prefix,
                "--lxc-apt-proxy",
                &testbed.apt_proxy_url(),
                "--lxc-addresses",
                "200-209",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let stdout = child.0.stdout.take().context("no stdout")?;
    // The first line is printed once the listener is up (or the process exits on an error).
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), line).await???;
    let base = line
        .trim()
        .strip_prefix("listening ")
        .with_context(|| format!("unexpected first line '{line}'"))?
        .to_string();
    let api = Api::new(base)?;
    api.task(
        "POST",
        "/nodes/pve1/lxc",
        &[
            ("vmid", "130"),
            ("ostemplate", TEMPLATE),
            ("rootfs", "local-lvm:4"),
            ("hostname", "bin1"),
            ("start", "1"),
        ],
    )
    .await?;
    let name = format!("{}130", lxc.name_prefix);
    let container = testbed.adopt(&name)?;
    ensure!(lxc_state(&name)? == "RUNNING");
    ensure!(
        (200..=209).contains(&container.ip().octets()[3]),
        "{}",
        container.ip()
    );
    api.task("DELETE", "/nodes/pve1/lxc/130", &[("force", "1")])
        .await?;
    ensure!(
        !host::container_names()?.contains(&name),
        "{name} still exists"
    );
    drop(container);
    drop(child);
    eprintln!(
        "[pvesim_lxc] binary: create+start, destroy in {:.1?}",
        started.elapsed()
    );
    tokio::task::spawn_blocking(move || testbed.shutdown()).await??;
    Ok(())
}
