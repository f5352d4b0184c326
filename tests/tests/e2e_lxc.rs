//! The whole system through its public REST API: API → coordinator (a process on the host) →
//! Proxmox API (pvesim backed by real LXC containers) → a real container → the agent installed
//! there from its Debian package → apt, nginx and MariaDB inside.
//!
//! Through the API only: register the Proxmox node, create and start an instance (a real
//! unprivileged container on the test bridge, root inside mapped to an ordinary user outside, as
//! Proxmox makes them by default), get an enrollment token; the agent package is installed in the
//! container with that token, the way a provider's template would. Then, still through the API:
//! install nginx and fetch a page from the container, create a vhost and fetch its page, deploy a
//! certificate and fetch the page over HTTPS, install MariaDB, create a database and dump it; restart the coordinator and reboot the container (through the API), and the agent
//! comes back by itself each time and keeps working; destroy the instance, which removes the
//! container. Everything is torn down also when the test fails.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, ensure};
use hostplane_tests::coordinator::{Api, CoordinatorOptions, HostCoordinator};
use hostplane_tests::lxc::{Container, ID_OFFSET, Testbed, host};
use hostplane_tests::packages;
use pvesim::{LxcConfig, SimConfig, Simulator};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::clock::StepClock;
use testkit::wait::blocking as wait_until;

const TOKEN_ID: &str = "hostplane@pve!e2e";
const TOKEN_SECRET: &str = "5e0c9c6a-1f2b-4c3d-8e4f-000000000e2e";
/// Apt work in a fresh container (downloads through the host's proxy) may take minutes.
const APT_TIMEOUT: Duration = Duration::from_secs(600);

/// The panel's side: the coordinator's base URL and key, and a client.
struct Panel<'a> {
    api: &'a Api,
    coordinator: &'a HostCoordinator,
}

impl Panel<'_> {
    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.api.ok(
            method,
            &self.coordinator.http,
            path,
            &self.coordinator.admin_key,
            body,
        )
    }

    /// Runs a task route to its end and checks that it succeeded.
    fn task(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let task = self.api.task(
            method,
            &self.coordinator.http,
            path,
            &self.coordinator.admin_key,
            body,
            timeout,
        )?;
        if task["state"] != "succeeded" {
            // The log lines say why.
            let id = task["id"].as_str().unwrap_or_default();
            let full = self.ok("GET", &format!("/api/v1/task/{id}"), None)?;
            anyhow::bail!("{method} {path} ended {}: {full}", task["state"]);
        }
        Ok(task)
    }

    /// Waits until the agent is connected and a ping goes through it.
    fn wait_agent(&self, instance: u64, timeout: Duration) -> anyhow::Result<Duration> {
        wait_until(
            &format!("the agent of instance {instance} connected and answering"),
            timeout,
            Duration::from_millis(250),
            || {
                let status = self.ok("GET", &format!("/api/v1/instance/{instance}/agent"), None)?;
                if status["connected"] != true {
                    return Ok(false);
                }
                let ping = self.api.call(
                    "POST",
                    &self.coordinator.http,
                    &format!("/api/v1/instance/{instance}/agent/ping"),
                    &self.coordinator.admin_key,
                    None,
                )?;
                Ok(ping.status == 200)
            },
        )
        .with_context(|| self.coordinator.log_tail())
    }

    /// The names of the packages the agent reports installed.
    fn installed_packages(&self, instance: u64) -> anyhow::Result<Vec<String>> {
        let listed = self.ok(
            "GET",
            &format!("/api/v1/instance/{instance}/packages?limit=1000"),
            None,
        )?;
        let list = listed["data"]
            .as_array()
            .or_else(|| listed.as_array())
            .with_context(|| format!("no package list in {listed}"))?;
        Ok(list
            .iter()
            .filter_map(|package| package["name"].as_str().map(str::to_string))
            .collect())
    }

    /// A dump of `database` through the API, checked against its task's SHA-256 and length.
    fn dump(&self, instance: u64, database: &str) -> anyhow::Result<String> {
        let (status, headers, body) = self.api.get_bytes(
            &self.coordinator.http,
            &format!("/api/v1/instance/{instance}/database/{database}?action=dump"),
            &self.coordinator.admin_key,
        )?;
        ensure!(
            status == 200,
            "dump: {status} {}",
            String::from_utf8_lossy(&body)
        );
        let task_id = headers
            .get("x-task-id")
            .and_then(|value| value.to_str().ok())
            .context("the dump has no x-task-id")?
            .to_string();
        let mut task = Value::Null;
        wait_until(
            "the dump task ended",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                task = self.ok("GET", &format!("/api/v1/task/{task_id}"), None)?["task"].clone();
                Ok(task["state"] != "queued"
                    && task["state"] != "sent"
                    && task["state"] != "running")
            },
        )?;
        ensure!(task["state"] == "succeeded", "{task}");
        ensure!(
            task["result"]["sha256"] == hex::encode(Sha256::digest(&body)),
            "the dump's bytes are not the ones the agent hashed: {task}"
        );
        ensure!(task["result"]["bytes"] == body.len() as u64, "{task}");
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// Fetches `http://ADDRESS/` from the host; the status.
fn fetch(api: &Api, address: Ipv4Addr) -> anyhow::Result<u16> {
    api.get_status(&format!("http://{address}/"))
}

/// The vhost's name, resolved to the container by the client (there is no DNS here).
const SITE: &str = "e2e.example";
/// A page Debian's nginx package puts under the web root's `html` folder.
const PAGE: &str = "/index.nginx-debian.html";

/// A client for the vhost: `SITE` resolves to `address`, and `ca` (PEM) is trusted for HTTPS.
fn site_client(address: Ipv4Addr, ca: &str) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        // Port 0: the URL's port (80 or 443) is used.
        .resolve(SITE, SocketAddr::from((address, 0)))
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// GET `url` with `client`: the status and the body.
fn get_page(
    runtime: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<(u16, String)> {
    runtime.block_on(async {
        let response = client.get(url).send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    })
}

/// Waits until `url` answers 200 with a body containing `needle`.
fn wait_for_page(
    runtime: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    container: &Container,
    url: &str,
    needle: &str,
) -> anyhow::Result<Duration> {
    let mut last = String::new();
    wait_until(
        &format!("{url} serves a page with '{needle}'"),
        Duration::from_secs(60),
        Duration::from_millis(250),
        || {
            let (status, body) = get_page(runtime, client, url)?;
            last = format!("{status}: {}", &body[..body.len().min(300)]);
            Ok(status == 200 && body.contains(needle))
        },
    )
    .with_context(|| format!("last answer {last}\n{}", web_diagnosis(container)))
}

/// What the web server inside looks like, for a failure message.
fn web_diagnosis(container: &Container) -> String {
    let script = "systemctl status nginx --no-pager -l 2>&1 | tail -20; \
                  journalctl -u nginx -u hostplane-agent -b --no-pager -o cat | tail -30; \
                  ss -ltnp; ls -l /run/nginx.pid; cat /run/nginx.pid; ps -ef | grep [n]ginx";
    match container.exec(&["sh", "-c", script]) {
        Ok(output) => format!("{}{}", output.stdout_text(), output.stderr_text()),
        Err(error) => format!("(no diagnosis: {error:#})"),
    }
}

/// A test certificate authority and a certificate for [`SITE`] it signed: (CA PEM, certificate
/// PEM, key PEM).
fn site_certificate() -> anyhow::Result<(String, String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "Hostplane e2e test CA");
    let authority = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let certificate =
        CertificateParams::new(vec![SITE.to_string()])?.signed_by(&key, &authority)?;
    Ok((authority.pem(), certificate.pem(), key.serialize_pem()))
}

#[test]
fn the_public_api_drives_a_real_container_through_its_agent() -> anyhow::Result<()> {
    let Some(testbed) = Testbed::ensure()? else {
        return Ok(());
    };
    let mut clock = StepClock::new("e2e");
    packages::build_programs()?;
    let work = tempfile::tempdir()?;
    let debs = packages::build_debs(&work.path().join("debs"), None)?;
    clock.step("programs and packages built");

    // The simulated Proxmox VE node, its containers real ones on the test bridge.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The coordinator creates unprivileged containers, as Proxmox does by default; pvesim
    // clones those from the unprivileged base (made once, then cached like the base).
    let unprivileged_base = testbed.unprivileged_base()?;
    clock.step("unprivileged base ready");
    let lxc = LxcConfig {
        unprivileged_base: Some(unprivileged_base.to_string()),
        // Named like the harness's clones, so a killed run's leftovers are removed next time.
        name_prefix: format!("{}-", Testbed::container_name("e2e")),
        apt_proxy: Some(testbed.apt_proxy_url()),
        addresses: hostplane_tests::lxc::SIMULATOR_ADDRESSES,
        lock_file: host::lock_path(),
        watch_interval: Duration::from_millis(300),
        ..LxcConfig::default()
    };
    let simulator = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let config = SimConfig {
            tokens: vec![format!("{TOKEN_ID}={TOKEN_SECRET}")],
            tls: true,
            auth_failure_delay: Duration::ZERO,
            ..SimConfig::default()
        };
        anyhow::Ok(Simulator::start_lxc(config, listener, lxc.clone()).await?)
    })?;

    let api = Api::new()?;
    let options = CoordinatorOptions {
        binary: packages::built_program("hostplane-coordinator")?,
        data_dir: work.path().join("coordinator"),
        quic_listen: UdpSocket::bind((testbed.host_address(), 0))?.local_addr()?,
        serve_arguments: Vec::new(),
    };
    let coordinator = HostCoordinator::start(&options)?;
    let panel = Panel {
        api: &api,
        coordinator: &coordinator,
    };
    panel.ok(
        "POST",
        "/api/v1/node",
        Some(json!({
            "name": "pve1", "address": "127.0.0.1", "port": simulator.local_addr().port(),
            "token_id": TOKEN_ID, "token_secret": TOKEN_SECRET,
            "fingerprint": simulator.fingerprint().context("pvesim serves HTTPS")?,
        })),
    )?;
    clock.step("pvesim (LXC) and the coordinator up, node registered");

    let created = panel.task(
        "POST",
        "/api/v1/instance",
        Some(
            json!({"template": "debian-12", "hostname": "e2e-web", "cpu": 1,
                    "memory": 1024, "swap": 0, "disk": 4, "start": true}),
        ),
        Duration::from_secs(180),
    )?;
    let instance = created["instance"]
        .as_u64()
        .with_context(|| format!("no instance in {created}"))?;
    // From here a failure still destroys the container.
    let container: Container = testbed.adopt(&format!("{}{instance}", lxc.name_prefix))?;
    container.wait_until_up()?;
    let shown = panel.ok("GET", &format!("/api/v1/instance/{instance}"), None)?;
    ensure!(shown["instance"]["status"] == "running", "{shown}");
    // Root inside is an ordinary user outside: everything below runs unprivileged.
    let uid_map = container.exec_checked(&["cat", "/proc/self/uid_map"])?;
    let mapping: Vec<&str> = uid_map.split_whitespace().collect();
    ensure!(
        mapping
            == [
                "0",
                &ID_OFFSET.to_string(),
                &hostplane_tests::lxc::ID_COUNT.to_string()
            ],
        "the container is not unprivileged: uid_map {uid_map:?}"
    );
    clock.step("instance created and started through the API: a real, unprivileged container");

    let offer = panel.ok(
        "POST",
        &format!("/api/v1/instance/{instance}/enrollment"),
        None,
    )?;
    let token = offer["token"].as_str().context("no token")?;
    container.push_file(&debs.agent, "/root/hostplane-agent.deb")?;
    container.exec_checked(&[
        "env",
        &format!("HOSTPLANE_ENROLL_TOKEN={token}"),
        "apt-get",
        "install",
        "-y",
        "-q",
        "/root/hostplane-agent.deb",
    ])?;
    let connected = panel.wait_agent(instance, Duration::from_secs(90))?;
    eprintln!("[e2e] the agent connected {connected:.1?} after its install");
    clock.step("agent package installed with the token: enrolled and connected");

    let base = format!("/api/v1/instance/{instance}");
    panel.task(
        "POST",
        &format!("{base}/packages"),
        Some(json!({"packages": ["nginx-light"]})),
        APT_TIMEOUT,
    )?;
    let installed = panel.installed_packages(instance)?;
    ensure!(
        installed.iter().any(|name| name == "nginx-light"),
        "{installed:?}"
    );
    let page = wait_until(
        "nginx in the container answers",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || Ok(fetch(&api, container.ip()).ok() == Some(200)),
    )?;
    eprintln!("[e2e] nginx answered {page:.1?} after its install");
    clock.step("nginx installed through the API, a page fetched from the container");

    // A vhost, then a certificate for it, through the API; the page over HTTP and HTTPS.
    let (ca, certificate, key) = site_certificate()?;
    let site = site_client(container.ip(), &ca)?;
    // The site's page over `scheme`, waited for until it answers.
    let site_page = |scheme: &str| {
        wait_for_page(
            &runtime,
            &site,
            &container,
            &format!("{scheme}://{SITE}{PAGE}"),
            "Welcome to nginx",
        )
    };
    panel.task(
        "POST",
        &format!("{base}/vhost/site"),
        Some(json!({"server_names": [SITE], "root": "html"})),
        Duration::from_secs(120),
    )?;
    let vhost = panel.ok("GET", &format!("{base}/vhost/site"), None)?;
    ensure!(vhost.to_string().contains(SITE), "{vhost}");
    site_page("http")?;
    clock.step("vhost created through the API, its page fetched");
    panel.task(
        "POST",
        &format!("/api/v1/service/ssl/instance/{instance}/vhost/site"),
        Some(json!({"certificate": certificate, "private_key": key})),
        Duration::from_secs(120),
    )?;
    let status = panel.ok(
        "GET",
        &format!("/api/v1/service/ssl/instance/{instance}/vhost/site"),
        None,
    )?;
    ensure!(status.to_string().contains(SITE), "{status}");
    ensure!(
        !status.to_string().contains("PRIVATE KEY"),
        "the key shows: {status}"
    );
    site_page("https")?;
    clock.step("certificate deployed through the API, the page over HTTPS");

    // nginx stopped behind the agent's back: the next change starts it through its systemd
    // unit, so it is systemd's (and comes back at boot), not a child of the agent's service.
    container.exec_checked(&["systemctl", "stop", "nginx.service"])?;
    panel.task(
        "PUT",
        &format!("{base}/vhost/site"),
        Some(json!({"server_names": [SITE], "root": "html",
                    "limits": {"max_body_bytes": 4_194_304}})),
        Duration::from_secs(120),
    )?;
    let active = container.exec_checked(&["systemctl", "is-active", "nginx.service"])?;
    ensure!(active.trim() == "active", "nginx.service is {active}");
    let cgroup = container.exec_checked(&["sh", "-c", "cat /proc/$(cat /run/nginx.pid)/cgroup"])?;
    ensure!(
        cgroup.contains("/nginx.service"),
        "the nginx master is not in nginx.service: {cgroup}"
    );
    site_page("https")?;
    clock.step("nginx stopped: a vhost change starts it again through systemd");

    panel.task(
        "POST",
        &format!("{base}/packages"),
        Some(json!({"packages": ["mariadb-server"]})),
        APT_TIMEOUT,
    )?;
    clock.step("MariaDB installed through the API");
    let created = panel.task(
        "POST",
        &format!("{base}/database/shop"),
        Some(json!({"engine": "mariadb", "password": "e2e-Password-1"})),
        Duration::from_secs(120),
    )?;
    ensure!(
        !created.to_string().contains("e2e-Password-1"),
        "the password shows in the task"
    );
    let listed = panel.ok("GET", &format!("{base}/database"), None)?;
    ensure!(
        listed["data"]
            .as_array()
            .is_some_and(|list| list.iter().any(|database| database["name"] == "shop")),
        "{listed}"
    );
    let dump = panel.dump(instance, "shop")?;
    ensure!(
        dump.contains("MariaDB dump") && dump.contains("Database: shop"),
        "{}",
        &dump[..dump.len().min(400)]
    );
    clock.step("database created and dumped through the API");

    // The coordinator restarts: the agent reconnects by itself and work goes on.
    coordinator.stop()?;
    let coordinator = HostCoordinator::start(&options)?;
    let panel = Panel {
        api: &api,
        coordinator: &coordinator,
    };
    let back = panel.wait_agent(instance, Duration::from_secs(120))?;
    eprintln!("[e2e] the agent reconnected {back:.1?} after the coordinator restarted");
    ensure!(panel.dump(instance, "shop")?.contains("Database: shop"));
    clock.step("coordinator restarted: the agent reconnected, a dump again");

    // A reboot through the API: systemd brings the agent, nginx and MariaDB back.
    let init = container.init_pid();
    panel.task(
        "POST",
        &format!("{base}/status/reboot"),
        None,
        Duration::from_secs(180),
    )?;
    container.wait_until_up()?;
    ensure!(container.init_pid() != init, "the container did not reboot");
    let back = panel.wait_agent(instance, Duration::from_secs(120))?;
    eprintln!("[e2e] the agent was back {back:.1?} after the container was up");
    // (The agent's nginx configuration answers only the vhosts' names, so ask for the site.)
    ensure!(panel.dump(instance, "shop")?.contains("Database: shop"));
    site_page("http")?;
    site_page("https")?;
    ensure!(
        panel
            .installed_packages(instance)?
            .iter()
            .any(|name| name == "mariadb-server")
    );
    clock.step(
        "container rebooted through the API: agent, the site over HTTP and HTTPS, MariaDB back",
    );

    let name = container.name().to_string();
    panel.task("DELETE", &base, None, Duration::from_secs(180))?;
    ensure!(
        !host::container_names()?.contains(&name),
        "{name} still exists after the instance was destroyed"
    );
    drop(container);
    clock.step("instance destroyed through the API: the container is gone");

    coordinator.stop()?;
    runtime.block_on(simulator.shutdown());
    drop(runtime);
    clock.print_report();
    testbed.shutdown()?;
    Ok(())
}
