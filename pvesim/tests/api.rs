//! End-to-end checks of the simulator's HTTP API against the shapes Proxmox VE answers with, and
//! the conformance of every endpoint Hostplane builds on (the seed list of Proxmox VE calls): each
//! answers, and refuses each parameter's wrong type, enumeration value, range, length, missing
//! companion and absence the way Proxmox's schema does, and refuses parameters it does not know.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::pvesim::{Harness, PASSWORD, TEMPLATE, USER, config, encode, start};

const UPID_PATTERN: &str = r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$";

async fn ticket(harness: &Harness) -> (String, String) {
    let answer = harness
        .call_with(
            "POST",
            "/access/ticket",
            &[("username", USER), ("password", PASSWORD)],
            &[],
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let data = answer.data();
    assert_eq!(data["username"], USER);
    (
        data["ticket"].as_str().unwrap().to_string(),
        data["CSRFPreventionToken"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn auth_refusals_match_proxmox() {
    let harness = start(config()).await;
    let none = harness.call_with("GET", "/nodes", &[], &[]).await;
    assert_eq!(
        (none.status, none.reason.as_str(), none.raw.as_str()),
        (401, "No ticket", "")
    );

    let bad = harness
        .call_with(
            "GET",
            "/nodes",
            &[],
            &[("Authorization", "PVEAPIToken=root@pam!hostplane=wrong")],
        )
        .await;
    assert_eq!(
        (bad.status, bad.reason.as_str()),
        (401, "Authentication failed!")
    );

    let good = harness.call("GET", "/nodes", &[]).await;
    assert_eq!(good.status, 200);

    let token_login = harness
        .call(
            "POST",
            "/access/ticket",
            &[("username", USER), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(token_login.status, 403);
    assert_eq!(
        token_login.reason,
        "URI '/access/ticket' not available with API token, need proper ticket."
    );

    let wrong_password = harness
        .call_with(
            "POST",
            "/access/ticket",
            &[("username", USER), ("password", "nope!")],
            &[],
        )
        .await;
    assert_eq!(wrong_password.status, 401);

    let (ticket, csrf) = ticket(&harness).await;
    assert!(ticket.starts_with("PVE:root@pam:"), "{ticket}");
    let cookie = format!("PVEAuthCookie={}", encode(&ticket));
    let read = harness
        .call_with("GET", "/cluster/nextid", &[], &[("Cookie", &cookie)])
        .await;
    assert_eq!(read.status, 200);
    let no_csrf = harness
        .call_with(
            "POST",
            "/nodes/pve1/lxc",
            &[("vmid", "100"), ("ostemplate", TEMPLATE)],
            &[("Cookie", &cookie)],
        )
        .await;
    assert_eq!(
        (no_csrf.status, no_csrf.reason.as_str()),
        (401, "Permission denied - invalid csrf token")
    );
    let with_csrf = harness
        .call_with(
            "POST",
            "/nodes/pve1/lxc",
            &[
                ("vmid", "100"),
                ("ostemplate", TEMPLATE),
                ("rootfs", "local-lvm:4"),
            ],
            &[("Cookie", &cookie), ("CSRFPreventionToken", &csrf)],
        )
        .await;
    assert_eq!(with_csrf.status, 200, "{with_csrf:?}");
    assert!(
        with_csrf
            .data()
            .as_str()
            .unwrap()
            .ends_with(":vzcreate:100:root@pam:")
    );

    let renewed = harness
        .call_with(
            "POST",
            "/access/ticket",
            &[("username", USER), ("password", &ticket)],
            &[],
        )
        .await;
    assert_eq!(renewed.status, 200, "{renewed:?}");
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn refusals_wait_the_configured_delay() {
    let harness = start(pvesim::SimConfig {
        auth_failure_delay: Duration::from_millis(300),
        ..config()
    })
    .await;
    let began = Instant::now();
    let answer = harness.call_with("GET", "/version", &[], &[]).await;
    assert_eq!(answer.status, 401);
    assert!(
        began.elapsed() >= Duration::from_millis(300),
        "{:?}",
        began.elapsed()
    );
    let began = Instant::now();
    assert_eq!(harness.call("GET", "/version", &[]).await.status, 200);
    assert!(began.elapsed() < Duration::from_millis(300));
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn parameter_errors_match_proxmox() {
    let harness = start(config()).await;
    type Parameters = Vec<(&'static str, &'static str)>;
    let cases: Vec<(Parameters, &str, &str)> = vec![
        (
            vec![("vmid", "101")],
            "ostemplate",
            "property is missing and it is not optional",
        ),
        (
            vec![("vmid", "99"), ("ostemplate", TEMPLATE)],
            "vmid",
            "value must have a minimum value of 100",
        ),
        (
            vec![("vmid", "abc"), ("ostemplate", TEMPLATE)],
            "vmid",
            "type check ('integer') failed - got 'abc'",
        ),
        (
            vec![
                ("vmid", "101"),
                ("ostemplate", TEMPLATE),
                ("ostype", "windows"),
            ],
            "ostype",
            "value 'windows' does not have a value in the enumeration 'debian, devuan, ubuntu, centos, fedora, opensuse, archlinux, alpine, gentoo, nixos, unmanaged'",
        ),
        (
            vec![("vmid", "101"), ("ostemplate", TEMPLATE), ("flavour", "x")],
            "flavour",
            "property is not defined in schema and the schema does not allow additional properties",
        ),
        (
            vec![
                ("vmid", "101"),
                ("ostemplate", TEMPLATE),
                ("net0", "bridge=vmbr0"),
            ],
            "net0",
            "invalid format - format error\nnet0.name: property is missing and it is not optional\n",
        ),
        (
            vec![
                ("vmid", "101"),
                ("ostemplate", TEMPLATE),
                ("unprivileged", "perhaps"),
            ],
            "unprivileged",
            "type check ('boolean') failed - got 'perhaps'",
        ),
    ];
    for (parameters, key, message) in cases {
        let answer = harness.call("POST", "/nodes/pve1/lxc", &parameters).await;
        assert_eq!(answer.status, 400, "{parameters:?}");
        assert_eq!(answer.reason, "Parameter verification failed.");
        assert_eq!(answer.body["data"], Value::Null);
        assert_eq!(
            answer.body["errors"][key], message,
            "{parameters:?}: {}",
            answer.raw
        );
        assert_eq!(answer.body["message"], "Parameter verification failed.\n");
    }
    let timeframe = harness
        .call("GET", "/nodes/pve1/lxc/100/rrddata", &[])
        .await;
    assert_eq!(
        timeframe.body["errors"]["timeframe"],
        "property is missing and it is not optional"
    );
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn json_bodies_and_loose_types_are_accepted() {
    let harness = start(config()).await;
    let answer = harness
        .call_json(
            "POST",
            "/nodes/pve1/lxc",
            json!({"vmid": 120, "ostemplate": TEMPLATE, "rootfs": "local-lvm:2", "unprivileged": true, "memory": "1024", "start": 1}),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let status = harness.wait(answer.data().as_str().unwrap()).await;
    assert_eq!(status["exitstatus"], "OK");
    let config = harness.call("GET", "/nodes/pve1/lxc/120/config", &[]).await;
    assert_eq!(config.data()["memory"], 1024);
    assert_eq!(config.data()["unprivileged"], 1);
    assert_eq!(config.data()["rootfs"], "local-lvm:vm-120-disk-0,size=2G");
    assert_eq!(config.data()["digest"].as_str().unwrap().len(), 40);
    let current = harness
        .call("GET", "/nodes/pve1/lxc/120/status/current", &[])
        .await;
    assert_eq!(
        current.data()["status"],
        "running",
        "start=1 starts after create"
    );
    assert_eq!(current.data()["vmid"], 120);
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn create_runs_as_a_task_with_a_lock() {
    let harness = start(pvesim::SimConfig {
        task_duration: Duration::from_millis(300),
        ..config()
    })
    .await;
    let upid = harness
        .create(
            101,
            &[
                ("hostname", "web1"),
                ("net0", "name=eth0,bridge=vmbr0,ip=dhcp"),
            ],
        )
        .await;
    assert!(
        regex::Regex::new(UPID_PATTERN).unwrap().is_match(&upid),
        "{upid}"
    );
    assert!(
        upid.starts_with("UPID:pve1:") && upid.ends_with(":vzcreate:101:root@pam!hostplane:"),
        "{upid}"
    );

    let running = harness
        .call(
            "GET",
            &format!("/nodes/pve1/tasks/{}/status", encode(&upid)),
            &[],
        )
        .await;
    assert_eq!(running.data()["status"], "running");
    assert_eq!(running.data()["user"], "root@pam");
    assert_eq!(running.data()["tokenid"], "hostplane");
    assert_eq!(running.data()["type"], "vzcreate");
    assert!(running.data().get("exitstatus").is_none());

    let locked = harness.call("GET", "/nodes/pve1/lxc/101/config", &[]).await;
    assert_eq!(locked.data()["lock"], "create");
    let start = harness
        .call("POST", "/nodes/pve1/lxc/101/status/start", &[])
        .await;
    assert_eq!(
        (start.status, start.reason.as_str()),
        (500, "CT is locked (create)")
    );
    assert_eq!(start.body["message"], "CT is locked (create)\n");
    let again = harness
        .call(
            "POST",
            "/nodes/pve1/lxc",
            &[("vmid", "101"), ("ostemplate", TEMPLATE)],
        )
        .await;
    assert_eq!(
        (again.status, again.reason.as_str()),
        (
            500,
            "unable to create CT 101 - CT 101 already exists on node 'pve1'"
        )
    );

    let status = harness.wait(&upid).await;
    assert_eq!(status["exitstatus"], "OK");
    let log = harness.log(&upid).await;
    assert_eq!(log.last().map(String::as_str), Some("TASK OK"));
    assert!(
        log.iter()
            .any(|line| line.starts_with("extracting archive")),
        "{log:?}"
    );

    let config = harness.call("GET", "/nodes/pve1/lxc/101/config", &[]).await;
    let data = config.data();
    assert!(data.get("lock").is_none(), "{data}");
    assert_eq!(data["hostname"], "web1");
    assert_eq!(data["ostype"], "debian");
    let net0 = data["net0"].as_str().unwrap();
    assert!(regex::Regex::new(r"^name=eth0,bridge=vmbr0,hwaddr=BC:24:11:[0-9A-F]{2}:[0-9A-F]{2}:[0-9A-F]{2},ip=dhcp,type=veth$").unwrap().is_match(net0), "{net0}");
    let current = harness
        .call("GET", "/nodes/pve1/lxc/101/status/current", &[])
        .await;
    assert_eq!(current.data()["status"], "stopped");
    assert_eq!(current.data()["ha"]["managed"], 0);
    let guest = harness.sim.state().guest(101).unwrap();
    assert_eq!(guest.config["hostname"], "web1");
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn power_state_errors() {
    let harness = start(config()).await;
    harness.create_ok(102, &[]).await;
    let path = |action: &str| format!("/nodes/pve1/lxc/102/status/{action}");
    for (action, message) in [
        ("stop", "CT 102 not running"),
        ("shutdown", "CT 102 not running"),
        ("reboot", "VM 102 not running"),
        ("suspend", "CT 102 not running"),
    ] {
        let answer = harness.call("POST", &path(action), &[]).await;
        assert_eq!(
            (answer.status, answer.reason.as_str()),
            (500, message),
            "{action}"
        );
    }
    let skiplock = harness
        .call("POST", &path("start"), &[("skiplock", "1")])
        .await;
    assert_eq!(skiplock.status, 400);
    assert_eq!(
        skiplock.body["errors"]["skiplock"],
        "Only root may use this option."
    );
    harness.power_ok(102, "start").await;
    let twice = harness.call("POST", &path("start"), &[]).await;
    assert_eq!(
        (twice.status, twice.reason.as_str()),
        (500, "CT 102 already running")
    );
    let destroy = harness.call("DELETE", "/nodes/pve1/lxc/102", &[]).await;
    assert_eq!(
        (destroy.status, destroy.reason.as_str()),
        (500, "unable to destroy CT 102 - container is running")
    );
    harness.power_ok(102, "suspend").await;
    harness.power_ok(102, "resume").await;
    harness.power_ok(102, "reboot").await;
    harness.power_ok(102, "shutdown").await;
    let current = harness
        .call("GET", "/nodes/pve1/lxc/102/status/current", &[])
        .await;
    assert_eq!(current.data()["status"], "stopped");
    harness.power_ok(102, "start").await;
    harness.power_ok(102, "stop").await;

    let destroy = harness
        .call("DELETE", "/nodes/pve1/lxc/102", &[("purge", "1")])
        .await;
    assert_eq!(destroy.status, 200);
    let status = harness.wait(destroy.data().as_str().unwrap()).await;
    assert_eq!(status["exitstatus"], "OK");
    let gone = harness.call("GET", "/nodes/pve1/lxc/102/config", &[]).await;
    assert_eq!(
        (gone.status, gone.reason.as_str()),
        (
            500,
            "Configuration file 'nodes/pve1/lxc/102.conf' does not exist"
        )
    );
    let disks = harness
        .call(
            "GET",
            "/nodes/pve1/storage/local-lvm/content",
            &[("vmid", "102")],
        )
        .await;
    assert_eq!(disks.data(), &json!([]));
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn nextid_is_a_string_and_refuses_used_ids() {
    let harness = start(config()).await;
    let first = harness.call("GET", "/cluster/nextid", &[]).await;
    assert_eq!(first.data(), &json!("100"));
    harness.create_ok(100, &[]).await;
    let next = harness.call("GET", "/cluster/nextid", &[]).await;
    assert_eq!(next.data(), &json!("101"));
    let used = harness
        .call("GET", "/cluster/nextid", &[("vmid", "100")])
        .await;
    assert_eq!(used.status, 400);
    assert_eq!(used.body["errors"]["vmid"], "VM 100 already exists");
    let free = harness
        .call("GET", "/cluster/nextid", &[("vmid", "555")])
        .await;
    assert_eq!(free.data(), &json!("555"));
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_501() {
    let harness = start(config()).await;
    let path = harness.call("GET", "/nodes/pve1/qemu-nope", &[]).await;
    assert_eq!(
        (path.status, path.reason.as_str()),
        (
            501,
            "Method 'GET /api2/json/nodes/pve1/qemu-nope' not implemented"
        )
    );
    let method = harness.call("PATCH", "/nodes", &[]).await;
    assert_eq!(method.status, 501);
    let options = harness.call("OPTIONS", "/nodes", &[]).await;
    assert_eq!(
        (options.status, options.reason.as_str()),
        (501, "method 'OPTIONS' not available")
    );
    let task = harness
        .call("GET", "/nodes/pve1/tasks/garbage/status", &[])
        .await;
    assert_eq!(task.status, 400);
    assert_eq!(task.body["errors"]["upid"], "unable to parse worker upid");
    let missing = harness
        .call(
            "GET",
            &format!(
                "/nodes/pve1/tasks/{}/status",
                encode("UPID:pve1:00001234:10000000:65000000:vzstart:101:root@pam:")
            ),
            &[],
        )
        .await;
    assert_eq!(missing.body["errors"]["upid"], "no such task");
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn config_update_resize_and_reads() {
    let harness = start(config()).await;
    harness
        .create_ok(103, &[("unprivileged", "1"), ("memory", "256")])
        .await;
    let digest = harness
        .call("GET", "/nodes/pve1/lxc/103/config", &[])
        .await
        .data()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let update = harness
        .call(
            "PUT",
            "/nodes/pve1/lxc/103/config",
            &[
                ("memory", "2048"),
                ("cores", "2"),
                ("features", "nesting=1"),
                ("digest", &digest),
            ],
        )
        .await;
    assert_eq!(update.status, 200, "{update:?}");
    assert_eq!(update.data(), &Value::Null);
    let stale = harness
        .call(
            "PUT",
            "/nodes/pve1/lxc/103/config",
            &[("memory", "512"), ("digest", &digest)],
        )
        .await;
    assert_eq!(stale.status, 500);
    let delete = harness
        .call("PUT", "/nodes/pve1/lxc/103/config", &[("delete", "cores")])
        .await;
    assert_eq!(delete.status, 200);
    let config = harness.call("GET", "/nodes/pve1/lxc/103/config", &[]).await;
    assert_eq!(config.data()["memory"], 2048);
    assert_eq!(config.data()["features"], "nesting=1");
    assert!(config.data().get("cores").is_none());

    let resize = harness
        .call(
            "PUT",
            "/nodes/pve1/lxc/103/resize",
            &[("disk", "rootfs"), ("size", "+2G")],
        )
        .await;
    assert_eq!(resize.status, 200, "{resize:?}");
    assert!(resize.data().as_str().unwrap().contains(":resize:103:"));
    harness.wait(resize.data().as_str().unwrap()).await;
    let config = harness.call("GET", "/nodes/pve1/lxc/103/config", &[]).await;
    assert_eq!(config.data()["rootfs"], "local-lvm:vm-103-disk-0,size=10G");
    let shrink = harness
        .call(
            "PUT",
            "/nodes/pve1/lxc/103/resize",
            &[("disk", "rootfs"), ("size", "1G")],
        )
        .await;
    assert_eq!(
        (shrink.status, shrink.reason.as_str()),
        (500, "unable to shrink disk size")
    );

    harness.create_ok(104, &[]).await;
    let privileged = harness
        .call(
            "PUT",
            "/nodes/pve1/lxc/104/config",
            &[("features", "nesting=1")],
        )
        .await;
    assert_eq!(privileged.status, 403);
    assert_eq!(
        privileged.reason,
        "Permission check failed (changing feature flags for privileged container is only allowed for root@pam)"
    );

    let rrd = harness
        .call(
            "GET",
            "/nodes/pve1/lxc/103/rrddata",
            &[("timeframe", "hour")],
        )
        .await;
    assert_eq!(rrd.data().as_array().unwrap().len(), 70);
    let vnc = harness
        .call(
            "POST",
            "/nodes/pve1/lxc/103/vncproxy",
            &[("websocket", "1")],
        )
        .await;
    let port = vnc.data()["port"].as_u64().unwrap();
    assert!((5900..=5999).contains(&port));
    assert!(
        vnc.data()["upid"]
            .as_str()
            .unwrap()
            .contains(":vncproxy:103:")
    );
    assert!(vnc.data()["ticket"].as_str().unwrap().starts_with("PVE:"));

    let resources = harness
        .call("GET", "/cluster/resources", &[("type", "vm")])
        .await;
    let ids: Vec<&str> = resources
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["lxc/103", "lxc/104"]);
    let list = harness.call("GET", "/nodes/pve1/lxc", &[]).await;
    assert_eq!(list.data().as_array().unwrap().len(), 2);
    assert_eq!(list.data()[0]["vmid"], 103);
    let node = harness.call("GET", "/nodes/pve1/status", &[]).await;
    assert!(node.data()["memory"]["total"].as_u64().unwrap() > 0);
    assert_eq!(node.data()["loadavg"].as_array().unwrap().len(), 3);
    let tasks = harness
        .call(
            "GET",
            "/nodes/pve1/tasks",
            &[("vmid", "103"), ("typefilter", "vzcreate")],
        )
        .await;
    assert_eq!(tasks.body["total"], 1);
    assert_eq!(tasks.data()[0]["status"], "OK");
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn templates_storage_and_download() {
    let harness = start(config()).await;
    let storages = harness
        .call("GET", "/nodes/pve1/storage", &[("content", "rootdir")])
        .await;
    let names: Vec<&str> = storages
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["storage"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["local-lvm"]);
    let templates = harness
        .call(
            "GET",
            "/nodes/pve1/storage/local/content",
            &[("content", "vztmpl")],
        )
        .await;
    assert_eq!(templates.data()[0]["volid"], TEMPLATE);
    assert_eq!(templates.data()[0]["format"], "tzst");
    let catalogue = harness.call("GET", "/nodes/pve1/aplinfo", &[]).await;
    let wanted = "ubuntu-24.04-standard_24.04-2_amd64.tar.zst";
    assert!(
        catalogue
            .data()
            .as_array()
            .unwrap()
            .iter()
            .any(|item| item["template"] == wanted && item["type"] == "lxc")
    );
    let download = harness
        .call(
            "POST",
            "/nodes/pve1/aplinfo",
            &[("storage", "local"), ("template", wanted)],
        )
        .await;
    let upid = download.data().as_str().unwrap().to_string();
    assert!(upid.contains(&format!(":download:{wanted}:")), "{upid}");
    assert_eq!(harness.wait(&upid).await["exitstatus"], "OK");
    let templates = harness
        .call(
            "GET",
            "/nodes/pve1/storage/local/content",
            &[("content", "vztmpl")],
        )
        .await;
    assert!(
        templates
            .data()
            .as_array()
            .unwrap()
            .iter()
            .any(|item| item["volid"] == format!("local:vztmpl/{wanted}"))
    );
    let missing = harness
        .call(
            "POST",
            "/nodes/pve1/lxc",
            &[
                ("vmid", "130"),
                ("ostemplate", "local:vztmpl/nothing.tar.zst"),
            ],
        )
        .await;
    assert_eq!(
        (missing.status, missing.reason.as_str()),
        (500, "volume 'local:vztmpl/nothing.tar.zst' does not exist")
    );
    harness.sim.shutdown().await;
}

// ----- the seed's endpoints -----

const NOT_IN_SCHEMA: &str =
    "property is not defined in schema and the schema does not allow additional properties";
const MISSING: &str = "property is missing and it is not optional";

/// One endpoint: a call the schema accepts, the status it answers with, refusals of single
/// parameters (name, value, Proxmox's message) and the parameters it requires.
struct Endpoint {
    method: &'static str,
    path: &'static str,
    valid: &'static [(&'static str, &'static str)],
    status: u16,
    refusals: Vec<(&'static str, &'static str, String)>,
    required: &'static [&'static str],
}

fn endpoint(method: &'static str, path: &'static str) -> Endpoint {
    Endpoint {
        method,
        path,
        valid: &[],
        status: 200,
        refusals: Vec::new(),
        required: &[],
    }
}

impl Endpoint {
    fn valid(mut self, valid: &'static [(&'static str, &'static str)]) -> Endpoint {
        self.valid = valid;
        self
    }
    fn status(mut self, status: u16) -> Endpoint {
        self.status = status;
        self
    }
    fn refuse(mut self, name: &'static str, value: &'static str, message: &str) -> Endpoint {
        self.refusals.push((name, value, message.to_string()));
        self
    }
    fn required(mut self, required: &'static [&'static str]) -> Endpoint {
        self.required = required;
        self
    }
}

fn integer(value: &str) -> String {
    format!("type check ('integer') failed - got '{value}'")
}
fn boolean(value: &str) -> String {
    format!("type check ('boolean') failed - got '{value}'")
}
fn minimum(value: i64) -> String {
    format!("value must have a minimum value of {value}")
}
fn maximum(value: i64) -> String {
    format!("value must have a maximum value of {value}")
}
fn enumeration(value: &str, values: &[&str]) -> String {
    format!(
        "value '{value}' does not have a value in the enumeration '{}'",
        values.join(", ")
    )
}
fn requires(by: &str) -> String {
    format!("missing property - '{by}' requires this property")
}

const QEMU_OS: &[&str] = &[
    "other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24",
    "l26", "solaris",
];
const STORAGE_TYPES: &[&str] = &[
    "btrfs",
    "cephfs",
    "cifs",
    "dir",
    "esxi",
    "glusterfs",
    "iscsi",
    "iscsidirect",
    "lvm",
    "lvmthin",
    "nfs",
    "pbs",
    "rbd",
    "zfs",
    "zfspool",
];
const INTERFACE_TYPES: &[&str] = &[
    "bridge",
    "bond",
    "eth",
    "alias",
    "vlan",
    "OVSBridge",
    "OVSBond",
    "OVSPort",
    "OVSIntPort",
    "vnet",
];

/// The seed's endpoints (and the upload endpoint behind its "upload content"), in an order
/// whose valid calls leave the fixtures in the state the next one needs.
fn seed_endpoints() -> Vec<Endpoint> {
    let mut list_types = INTERFACE_TYPES.to_vec();
    list_types.extend(["any_bridge", "any_local_bridge"]);
    let mut change_types = INTERFACE_TYPES.to_vec();
    change_types.push("unknown");
    vec![
        endpoint("GET", "/nodes"),
        endpoint("GET", "/nodes/pve1"),
        endpoint("GET", "/nodes/pve1/status"),
        endpoint("GET", "/nodes/pve1/netstat"),
        endpoint("GET", "/nodes/pve1/tasks")
            .refuse("limit", "-1", &minimum(0))
            .refuse("source", "old", &enumeration("old", &["archive", "active", "all"]))
            .refuse("errors", "maybe", &boolean("maybe"))
            .refuse("vmid", "99", &minimum(100)),
        endpoint("GET", "/nodes/pve1/qemu").refuse("full", "x", &boolean("x")),
        endpoint("POST", "/nodes/pve1/qemu")
            .valid(&[
                ("vmid", "300"),
                ("scsi0", "local-lvm:4"),
                ("net0", "virtio,bridge=vmbr0"),
                ("memory", "1024"),
                ("name", "vm300"),
            ])
            .refuse("vmid", "abc", &integer("abc"))
            .refuse("vmid", "99", &minimum(100))
            .refuse("vmid", "1000000000", &maximum(999_999_999))
            .refuse("cores", "0", &minimum(1))
            .refuse("cpulimit", "200", &maximum(128))
            .refuse("ostype", "linux", &enumeration("linux", QEMU_OS))
            .refuse("onboot", "sometimes", &boolean("sometimes"))
            .refuse(
                "memory",
                "current=8",
                "invalid format - format error\nmemory.current: value must have a minimum value of 16\n",
            )
            .refuse(
                "net0",
                "virtio,tag=5000",
                "invalid format - format error\nnet0.tag: value must have a maximum value of 4094\n",
            )
            .refuse(
                "name",
                "bad_name",
                "invalid format - value 'bad_name' does not look like a valid DNS name\n",
            )
            .refuse("scsi99", "local-lvm:4", NOT_IN_SCHEMA)
            .refuse("archive", "local:backup/x.vma.zst", "")
            .required(&["vmid"]),
        endpoint("GET", "/nodes/pve1/qemu/200/status/current"),
        endpoint("POST", "/nodes/pve1/qemu/200/status/start")
            .refuse("timeout", "-1", &minimum(0))
            .refuse(
                "migration_type",
                "fast",
                &enumeration("fast", &["secure", "insecure"]),
            )
            .refuse("skiplock", "x", &boolean("x")),
        endpoint("POST", "/nodes/pve1/qemu/200/status/reset").refuse("skiplock", "2", &boolean("2")),
        endpoint("POST", "/nodes/pve1/qemu/200/status/shutdown")
            .refuse("forceStop", "x", &boolean("x"))
            .refuse("timeout", "-5", &minimum(0)),
        endpoint("POST", "/nodes/pve1/qemu/200/status/stop")
            .refuse("timeout", "x", &integer("x"))
            .refuse("keepActive", "x", &boolean("x")),
        endpoint("GET", "/nodes/pve1/lxc"),
        endpoint("POST", "/nodes/pve1/lxc")
            .valid(&[
                ("vmid", "301"),
                ("ostemplate", TEMPLATE),
                ("rootfs", "local-lvm:4"),
            ])
            .refuse("vmid", "99", &minimum(100))
            .refuse("memory", "8", &minimum(16))
            .refuse("cores", "9000", &maximum(8192))
            .required(&["vmid", "ostemplate"]),
        endpoint("GET", "/nodes/pve1/lxc/100/status/current"),
        endpoint("POST", "/nodes/pve1/lxc/100/status/start").refuse("skiplock", "x", &boolean("x")),
        endpoint("POST", "/nodes/pve1/lxc/100/status/shutdown")
            .refuse("timeout", "-1", &minimum(0))
            .refuse("forceStop", "x", &boolean("x")),
        endpoint("POST", "/nodes/pve1/lxc/100/status/stop")
            .status(500)
            .refuse("overrule-shutdown", "x", &boolean("x")),
        endpoint("GET", "/storage").refuse("type", "zfsx", &enumeration("zfsx", STORAGE_TYPES)),
        endpoint("GET", "/nodes/pve1/storage")
            .refuse("enabled", "x", &boolean("x"))
            .refuse(
                "content",
                "nonsense",
                "invalid format - invalid content type 'nonsense'\n",
            ),
        endpoint("GET", "/nodes/pve1/storage/local"),
        endpoint("GET", "/nodes/pve1/storage/local/content")
            .refuse("vmid", "99", &minimum(100))
            .refuse("content", "x", "invalid format - invalid content type 'x'\n"),
        endpoint("POST", "/nodes/pve1/storage/local-lvm/content")
            .valid(&[("vmid", "100"), ("filename", "vm-100-disk-5"), ("size", "1G")])
            .refuse("size", "1T", "value does not match the regex pattern")
            .refuse(
                "format",
                "vhd",
                &enumeration("vhd", &["raw", "qcow2", "subvol", "vmdk"]),
            )
            .refuse("vmid", "abc", &integer("abc"))
            .required(&["filename", "size", "vmid"]),
        endpoint("POST", "/nodes/pve1/storage/local/upload")
            .valid(&[("content", "vztmpl"), ("filename", "x.tar.zst")])
            .status(500)
            .refuse(
                "checksum-algorithm",
                "crc32",
                &enumeration(
                    "crc32",
                    &["md5", "sha1", "sha224", "sha256", "sha384", "sha512"],
                ),
            )
            .refuse("checksum", "abc", "")
            .refuse("tmpfilename", "/tmp/x", "value does not match the regex pattern")
            .required(&["content", "filename"]),
        endpoint("DELETE", "/nodes/pve1/storage/local/content/vztmpl%2Fnothing.tar.zst")
            .status(500)
            .refuse("delay", "31", &maximum(30)),
        endpoint("GET", "/nodes/pve1/network").refuse("type", "wifi", &enumeration("wifi", &list_types)),
        endpoint("GET", "/nodes/pve1/network/vmbr0"),
        endpoint("PUT", "/nodes/pve1/network/vmbr0")
            .valid(&[("type", "bridge"), ("comments", "uplink")])
            .refuse("type", "wifi", &enumeration("wifi", &change_types))
            .refuse("mtu", "100", &minimum(1280))
            .refuse("bridge_vlan_aware", "x", &boolean("x"))
            .refuse("address", "10.0.0.9", "")
            .refuse(
                "cidr",
                "10.0.0.9",
                "invalid format - value '10.0.0.9' does not look like a valid IPv4 CIDR network\n",
            )
            .required(&["type"]),
        endpoint("GET", "/cluster/resources")
            .refuse("type", "x", &enumeration("x", &["vm", "storage", "node", "sdn"])),
        endpoint("GET", "/cluster/tasks"),
        endpoint("GET", "/cluster/status"),
        endpoint("GET", "/cluster/nextid").refuse("vmid", "99", &minimum(100)),
        endpoint("GET", "/access/users")
            .refuse("full", "x", &boolean("x"))
            .refuse("enabled", "x", &boolean("x")),
        endpoint("POST", "/access/users")
            .valid(&[("userid", "alice@pve"), ("password", "long-enough")])
            .refuse(
                "userid",
                "alice",
                "invalid format - value 'alice' does not look like a valid user name\n",
            )
            .refuse("password", "short", "value must be at least 8 characters long")
            .refuse("expire", "-1", &minimum(0))
            .refuse(
                "email",
                "nope",
                "invalid format - value 'nope' does not look like a valid email address\n",
            )
            .required(&["userid"]),
        endpoint("GET", "/access/groups"),
        endpoint("GET", "/access/roles"),
        endpoint("GET", "/access/domains"),
    ]
}

/// The refusal a parameter with a missing companion gets, keyed by the companion.
fn companion(name: &str) -> Option<(&'static str, String)> {
    match name {
        "archive" => None,
        "checksum" => Some(("checksum-algorithm", requires("checksum"))),
        "address" => Some(("netmask", requires("address"))),
        _ => None,
    }
}

async fn expect_refusal(
    harness: &Harness,
    endpoint: &Endpoint,
    parameters: &[(&str, &str)],
    key: &str,
    message: &str,
) {
    let answer = harness
        .call(endpoint.method, endpoint.path, parameters)
        .await;
    let context = format!(
        "{} {} {parameters:?}: {}",
        endpoint.method, endpoint.path, answer.raw
    );
    assert_eq!(answer.status, 400, "{context}");
    assert_eq!(answer.reason, "Parameter verification failed.", "{context}");
    assert_eq!(answer.body["errors"][key], message, "{context}");
}

#[tokio::test]
async fn every_seed_endpoint_answers_and_refuses_as_the_schema_does() {
    let harness = start(config()).await;
    harness
        .create_ok(100, &[("net0", "name=eth0,bridge=vmbr0")])
        .await;
    let vm = harness
        .call(
            "POST",
            "/nodes/pve1/qemu",
            &[
                ("vmid", "200"),
                ("scsi0", "local-lvm:8"),
                ("net0", "virtio,bridge=vmbr0"),
            ],
        )
        .await;
    assert_eq!(vm.status, 200, "{vm:?}");
    assert_eq!(
        harness.wait(vm.data().as_str().unwrap()).await["exitstatus"],
        "OK"
    );
    let endpoints = seed_endpoints();
    for endpoint in &endpoints {
        let valid: Vec<(&str, &str)> = endpoint.valid.to_vec();
        let mut unknown = valid.clone();
        unknown.push(("bogus", "1"));
        expect_refusal(&harness, endpoint, &unknown, "bogus", NOT_IN_SCHEMA).await;
        for (name, value, message) in &endpoint.refusals {
            let mut parameters: Vec<(&str, &str)> = valid
                .iter()
                .copied()
                .filter(|(key, _)| key != name)
                .collect();
            parameters.push((name, value));
            match companion(name) {
                Some((key, message)) => {
                    expect_refusal(&harness, endpoint, &parameters, key, &message).await
                }
                None if *name == "archive" => {
                    // `force` and `unique` require `archive`: refused when it is absent.
                    let mut parameters = valid.clone();
                    parameters.push(("force", "1"));
                    expect_refusal(
                        &harness,
                        endpoint,
                        &parameters,
                        "archive",
                        &requires("force"),
                    )
                    .await;
                }
                None => expect_refusal(&harness, endpoint, &parameters, name, message).await,
            }
        }
        for name in endpoint.required {
            let parameters: Vec<(&str, &str)> = valid
                .iter()
                .copied()
                .filter(|(key, _)| key != name)
                .collect();
            expect_refusal(&harness, endpoint, &parameters, name, MISSING).await;
        }
        let answer = harness.call(endpoint.method, endpoint.path, &valid).await;
        assert_eq!(
            answer.status, endpoint.status,
            "{} {}: {answer:?}",
            endpoint.method, endpoint.path
        );
        if let Some(upid) = answer
            .data()
            .as_str()
            .filter(|text| text.starts_with("UPID:"))
        {
            harness.wait(upid).await;
        }
    }
    // Path parameters are checked by the same schema.
    let path = harness
        .call("GET", "/nodes/pve1/qemu/abc/status/current", &[])
        .await;
    assert_eq!(path.body["errors"]["vmid"], integer("abc"));
    let iface = harness.call("GET", "/nodes/pve1/network/x", &[]).await;
    assert_eq!(
        iface.body["errors"]["iface"], "invalid format - invalid network interface name 'x'\n",
        "the format is checked before the length, as Proxmox does"
    );
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn uploads_verify_checksums_and_appear_in_the_content() {
    let harness = start(config()).await;
    let bytes = b"a template's bytes".repeat(100);
    let sha256 = "3f2c9a4bb8b0a1c4b2d1fbb8b4b0c7e8f37d6e0f1a2b3c4d5e6f708192a3b4c5";
    let wrong = harness
        .upload(
            "local",
            &[
                ("content", "vztmpl"),
                ("checksum-algorithm", "sha256"),
                ("checksum", sha256),
            ],
            "custom-12.tar.zst",
            &bytes,
        )
        .await;
    assert_eq!(wrong.status, 200, "{wrong:?}");
    let upid = wrong.data().as_str().unwrap().to_string();
    assert!(upid.contains(":imgcopy::"), "{upid}");
    let status = harness.wait(&upid).await;
    let exit = status["exitstatus"].as_str().unwrap();
    assert!(exit.starts_with("checksum mismatch: got '"), "{status}");
    assert!(
        exit.ends_with(&format!("' != expect '{sha256}'")),
        "{status}"
    );
    let content = harness
        .call(
            "GET",
            "/nodes/pve1/storage/local/content",
            &[("content", "vztmpl")],
        )
        .await;
    assert!(!content.raw.contains("custom-12"), "{}", content.raw);

    let right = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    };
    let good = harness
        .upload(
            "local",
            &[
                ("content", "vztmpl"),
                ("checksum-algorithm", "sha256"),
                ("checksum", &right.to_uppercase()),
            ],
            "custom 12.tar.zst",
            &bytes,
        )
        .await;
    let upid = good.data().as_str().unwrap().to_string();
    assert_eq!(harness.wait(&upid).await["exitstatus"], "OK");
    let log = harness.log(&upid).await;
    assert!(
        log.iter().any(|line| line.contains("checksum verified")),
        "{log:?}"
    );
    let content = harness
        .call(
            "GET",
            "/nodes/pve1/storage/local/content",
            &[("content", "vztmpl")],
        )
        .await;
    let uploaded = content
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["volid"] == "local:vztmpl/custom_12.tar.zst")
        .unwrap_or_else(|| panic!("{}", content.raw))
        .clone();
    assert_eq!(uploaded["size"], bytes.len());
    assert_eq!(uploaded["format"], "tzst");
    // The uploaded template makes containers.
    harness
        .create_ok(110, &[("ostemplate", "local:vztmpl/custom_12.tar.zst")])
        .await;
    let extension = harness
        .upload("local", &[("content", "iso")], "installer.exe", b"x")
        .await;
    assert_eq!(extension.body["errors"]["filename"], "wrong file extension");
    let unsupported = harness
        .upload("local-lvm", &[("content", "iso")], "installer.iso", b"x")
        .await;
    assert_eq!(unsupported.status, 400, "{unsupported:?}");
    let delete = harness
        .call(
            "DELETE",
            &format!(
                "/nodes/pve1/storage/local/content/{}",
                encode("local:vztmpl/custom_12.tar.zst")
            ),
            &[],
        )
        .await;
    assert_eq!(
        harness.wait(delete.data().as_str().unwrap()).await["exitstatus"],
        "OK"
    );
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn network_changes_wait_for_the_reload() {
    let harness = start(config()).await;
    let bridges = harness
        .call("GET", "/nodes/pve1/network", &[("type", "any_bridge")])
        .await;
    assert_eq!(bridges.data()[0]["iface"], "vmbr0");
    assert_eq!(bridges.data()[0]["active"], 1);
    assert_eq!(bridges.data()[0]["autostart"], 1);
    assert!(bridges.body.get("changes").is_none(), "{}", bridges.raw);
    let create = harness
        .call(
            "POST",
            "/nodes/pve1/network",
            &[
                ("iface", "vmbr1"),
                ("type", "bridge"),
                ("cidr", "192.168.50.1/24"),
                ("autostart", "1"),
            ],
        )
        .await;
    assert_eq!(create.status, 200, "{create:?}");
    let update = harness
        .call(
            "PUT",
            "/nodes/pve1/network/vmbr0",
            &[
                ("type", "bridge"),
                ("address", "10.9.0.2"),
                ("netmask", "255.255.0.0"),
            ],
        )
        .await;
    assert_eq!(update.status, 200, "{update:?}");
    let pending = harness.call("GET", "/nodes/pve1/network", &[]).await;
    let changes = pending.body["changes"].as_str().unwrap();
    assert!(changes.contains("vmbr1"), "{changes}");
    let vmbr1 = harness.call("GET", "/nodes/pve1/network/vmbr1", &[]).await;
    assert_eq!(vmbr1.data()["address"], "192.168.50.1");
    assert_eq!(vmbr1.data()["netmask"], "255.255.255.0");
    assert!(
        vmbr1.data().get("active").is_none(),
        "not active before the reload"
    );
    let apply = harness.call("PUT", "/nodes/pve1/network", &[]).await;
    let upid = apply.data().as_str().unwrap().to_string();
    assert!(
        upid.ends_with(":srvreload:networking:root@pam!hostplane:"),
        "{upid}"
    );
    assert_eq!(harness.wait(&upid).await["exitstatus"], "OK");
    let applied = harness.call("GET", "/nodes/pve1/network", &[]).await;
    assert!(applied.body.get("changes").is_none(), "{}", applied.raw);
    let vmbr0 = harness.call("GET", "/nodes/pve1/network/vmbr0", &[]).await;
    assert_eq!(vmbr0.data()["cidr"], "10.9.0.2/16");
    assert_eq!(vmbr0.data()["active"], 1);
    let missing = harness.call("GET", "/nodes/pve1/network/vmbr7", &[]).await;
    assert_eq!(missing.body["errors"]["iface"], "interface does not exist");
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn vms_share_the_id_space_and_report_traffic_consistently() {
    let harness = start(pvesim::SimConfig {
        task_duration: Duration::from_millis(200),
        ..config()
    })
    .await;
    let create = harness
        .call(
            "POST",
            "/nodes/pve1/qemu",
            &[
                ("vmid", "150"),
                ("scsi0", "local-lvm:8"),
                ("net0", "virtio,bridge=vmbr0"),
                ("net1", "e1000,bridge=vmbr0"),
                ("start", "1"),
            ],
        )
        .await;
    let upid = create.data().as_str().unwrap().to_string();
    assert!(upid.contains(":qmcreate:150:"), "{upid}");
    let locked = harness
        .call("GET", "/nodes/pve1/qemu/150/config", &[])
        .await;
    assert_eq!(locked.data()["lock"], "create");
    let clash = harness
        .call(
            "POST",
            "/nodes/pve1/lxc",
            &[("vmid", "150"), ("ostemplate", TEMPLATE)],
        )
        .await;
    assert_eq!(
        (clash.status, clash.reason.as_str()),
        (
            500,
            "unable to create CT 150 - VM 150 already exists on node 'pve1'"
        )
    );
    let next = harness
        .call("GET", "/cluster/nextid", &[("vmid", "150")])
        .await;
    assert_eq!(next.body["errors"]["vmid"], "VM 150 already exists");
    assert_eq!(harness.wait(&upid).await["exitstatus"], "OK");
    let config = harness
        .call("GET", "/nodes/pve1/qemu/150/config", &[])
        .await;
    assert_eq!(config.data()["scsi0"], "local-lvm:vm-150-disk-0,size=8G");
    let not_lxc = harness
        .call("GET", "/nodes/pve1/lxc/150/status/current", &[])
        .await;
    assert_eq!(
        not_lxc.reason,
        "Configuration file 'nodes/pve1/lxc/150.conf' does not exist"
    );
    let resources = harness
        .call("GET", "/cluster/resources", &[("type", "vm")])
        .await;
    assert_eq!(resources.data()[0]["id"], "qemu/150");
    let netstat = harness.call("GET", "/nodes/pve1/netstat", &[]).await;
    let entries = netstat.data().as_array().unwrap();
    assert_eq!(entries.len(), 2, "{}", netstat.raw);
    assert_eq!(entries[0]["vmid"], json!("150"), "vmid is sent as a string");
    assert_eq!(entries[0]["dev"], "net0");
    let status = harness
        .call("GET", "/nodes/pve1/qemu/150/status/current", &[])
        .await;
    let sent: u64 = entries
        .iter()
        .map(|entry| entry["in"].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    let uptime = status.data()["uptime"].as_u64().unwrap();
    assert_eq!(
        status.data()["netin"].as_u64().unwrap() / uptime.max(1),
        sent / uptime.max(1)
    );
    let tasks = harness.call("GET", "/cluster/tasks", &[]).await;
    assert_eq!(tasks.data()[0]["type"], "qmcreate");
    assert_eq!(tasks.data()[0]["status"], "OK");
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn access_control_and_networks_are_persisted() {
    let folder = tempfile::tempdir().unwrap();
    let state = folder.path().join("state.json");
    let settings = || pvesim::SimConfig {
        state_file: Some(state.clone()),
        ..config()
    };
    let harness = start(settings()).await;
    let group = harness
        .call("POST", "/access/groups", &[("groupid", "customers")])
        .await;
    assert_eq!(group.status, 200, "{group:?}");
    let user = harness
        .call(
            "POST",
            "/access/users",
            &[
                ("userid", "bob@pve"),
                ("groups", "customers"),
                ("email", "bob@example.com"),
            ],
        )
        .await;
    assert_eq!(user.status, 200, "{user:?}");
    let again = harness
        .call("POST", "/access/users", &[("userid", "bob@pve")])
        .await;
    assert_eq!(
        again.reason,
        "create user failed: user 'bob@pve' already exists"
    );
    let realm = harness
        .call("POST", "/access/users", &[("userid", "eve@ldap")])
        .await;
    assert_eq!(
        realm.reason,
        "create user failed: domain 'ldap' does not exist"
    );
    harness
        .call(
            "PUT",
            "/nodes/pve1/network/vmbr0",
            &[("type", "bridge"), ("comments", "kept")],
        )
        .await;
    harness.sim.shutdown().await;

    let harness = start(settings()).await;
    let users = harness.call("GET", "/access/users", &[]).await;
    let bob = users
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|user| user["userid"] == "bob@pve")
        .unwrap_or_else(|| panic!("{}", users.raw))
        .clone();
    assert_eq!(bob["groups"], "customers");
    assert_eq!(bob["enable"], 1);
    let groups = harness.call("GET", "/access/groups", &[]).await;
    assert_eq!(
        groups.data(),
        &json!([{"groupid": "customers", "users": "bob@pve"}])
    );
    let roles = harness.call("GET", "/access/roles", &[]).await;
    assert!(
        roles
            .data()
            .as_array()
            .unwrap()
            .iter()
            .any(|role| role["roleid"] == "PVEVMAdmin")
    );
    let domains = harness.call("GET", "/access/domains", &[]).await;
    let realms: Vec<&Value> = domains
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["realm"])
        .collect();
    assert_eq!(realms, [&json!("pam"), &json!("pve")]);
    let vmbr0 = harness.call("GET", "/nodes/pve1/network/vmbr0", &[]).await;
    assert_eq!(vmbr0.data()["comments"], "kept");
    harness.sim.shutdown().await;
}
