//! End-to-end checks of the simulator's HTTP API against the shapes Proxmox VE answers with.

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
