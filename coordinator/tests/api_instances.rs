//! Instance, node, template, cluster and utility routes against the Proxmox simulator on
//! loopback: each route and role, injected faults, concurrent creates and a restart during a
//! create, with the coordinator's records checked against the simulator's state.

use std::time::Duration;

use coordinator::proxmox::registry::Deadlines;
use coordinator::proxmox::{ClientSettings, RetryPolicy};
use pvesim::{SimConfig, Simulator, TaskEffect, TaskFault};
use serde_json::{Value, json};
use testkit::coordinator::TestServer;

const TOKEN_ID: &str = "hostplane@pve!coordinator";
const TOKEN_SECRET: &str = "0b8f6a52-9c1d-4e7a-b3f0-5d2c8e9a1f47";

async fn simulator(nodes: usize, task_duration: Duration) -> Simulator {
    coordinator::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(
        SimConfig {
            nodes,
            tokens: vec![format!("{TOKEN_ID}={TOKEN_SECRET}")],
            tls: true,
            auth_failure_delay: Duration::from_millis(10),
            task_duration,
            lock_timeout: Duration::from_millis(500),
            ..SimConfig::default()
        },
        listener,
    )
    .await
    .unwrap()
}

fn quick(server: &TestServer) {
    let app = server.app();
    app.proxmox.set_settings(ClientSettings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(3),
        retry: RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(200),
        },
        poll_first: Duration::from_millis(10),
        poll_max: Duration::from_millis(100),
    });
}

async fn register(server: &TestServer, sim: &Simulator, node: &str) {
    let answer = server
        .admin(
            "POST",
            "/api/v1/node",
            Some(json!({
                "name": node, "address": "127.0.0.1", "port": sim.local_addr().port(),
                "token_id": TOKEN_ID, "token_secret": TOKEN_SECRET,
                "fingerprint": sim.fingerprint().unwrap(), "tags": ["test"]
            })),
        )
        .await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert!(!answer.body.to_string().contains(TOKEN_SECRET));
}

async fn setup(nodes: usize) -> (TestServer, Simulator) {
    let sim = simulator(nodes, Duration::from_millis(30)).await;
    let server = TestServer::start().await;
    quick(&server);
    for index in 1..=nodes {
        register(&server, &sim, &format!("pve{index}")).await;
    }
    (server, sim)
}

fn create_body(hostname: &str) -> Value {
    json!({"template": "debian-12", "hostname": hostname, "cpu": 1, "memory": 256,
           "swap": 128, "disk": 2})
}

/// Runs a task route with `?wait=` and returns the final task.
async fn run(
    server: &TestServer,
    key: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    let separator = if path.contains('?') { '&' } else { '?' };
    let answer = server
        .call(
            method,
            &format!("{path}{separator}wait=30"),
            Some(key),
            body,
        )
        .await;
    assert_eq!(answer.status, 200, "{method} {path}: {:?}", answer.body);
    answer.body["task"].clone()
}

async fn record_ids(server: &TestServer) -> Vec<u64> {
    let list = server
        .admin("GET", "/api/v1/instance?limit=1000", None)
        .await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let mut ids: Vec<u64> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_u64().unwrap())
        .collect();
    ids.sort();
    ids
}

fn sim_ids(sim: &Simulator) -> Vec<u64> {
    let mut ids: Vec<u64> = sim.state().vmids().into_iter().map(u64::from).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_customer_runs_the_whole_lifecycle() {
    let (server, sim) = setup(1).await;
    let (alice, alice_key) = server.customer("alice").await;

    let task = run(
        &server,
        &alice_key,
        "POST",
        "/api/v1/instance",
        Some(create_body("web1")),
    )
    .await;
    assert_eq!(task["state"], "succeeded", "{task}");
    let id = task["instance"].as_u64().unwrap();
    assert_eq!(task["result"]["id"], id);
    let guest = sim.state().guest(id as u32).unwrap();
    assert_eq!(guest.config["hostname"], "web1");
    assert_eq!(guest.config["memory"], "256");

    let list = server
        .call("GET", "/api/v1/instance", Some(&alice_key), None)
        .await;
    assert_eq!(list.body["total"], 1, "{:?}", list.body);
    let item = &list.body["data"][0];
    assert_eq!(
        (item["user"].as_str(), item["status"].as_str()),
        (Some(alice.as_str()), Some("stopped"))
    );

    for action in ["start", "reboot"] {
        let task = run(
            &server,
            &alice_key,
            "POST",
            &format!("/api/v1/instance/{id}/status/{action}"),
            None,
        )
        .await;
        assert_eq!(task["state"], "succeeded", "{action}: {task}");
    }
    assert!(sim.state().guest(id as u32).unwrap().running);
    let one = server
        .call(
            "GET",
            &format!("/api/v1/instance/{id}"),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(one.status, 200);
    let instance = &one.body["instance"];
    assert_eq!(instance["status"], "running");
    assert_eq!(instance["config"]["hostname"], "web1");
    assert_eq!(instance["agent"]["state"], "never");

    let task = run(
        &server,
        &alice_key,
        "PUT",
        &format!("/api/v1/instance/{id}"),
        Some(json!({"memory": "512", "disk": 3, "hostname": "web2"})),
    )
    .await;
    assert_eq!(task["state"], "succeeded", "{task}");
    let guest = sim.state().guest(id as u32).unwrap();
    assert_eq!(guest.config["memory"], "512");
    assert_eq!(guest.config["hostname"], "web2");
    assert!(
        guest.config["rootfs"].contains("size=3G"),
        "{}",
        guest.config["rootfs"]
    );
    let shrink = server
        .call(
            "PUT",
            &format!("/api/v1/instance/{id}"),
            Some(&alice_key),
            Some(json!({"disk": 1})),
        )
        .await;
    assert_eq!(shrink.status, 422);
    assert!(shrink.body["error"]["details"]["fields"]["disk"].is_string());

    let graphic = server
        .call(
            "GET",
            &format!("/api/v1/utils/graphic?id={id}&timeframe=day"),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(graphic.status, 200, "{:?}", graphic.body);
    assert!(!graphic.body["data"].as_array().unwrap().is_empty());
    let vnc = server
        .call(
            "GET",
            &format!("/api/v1/utils/vnc?id={id}"),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(vnc.status, 200, "{:?}", vnc.body);
    assert!(vnc.body["url"].as_str().unwrap().contains("vncwebsocket"));

    let task = run(
        &server,
        &alice_key,
        "DELETE",
        &format!("/api/v1/instance/{id}"),
        None,
    )
    .await;
    assert_eq!(task["state"], "succeeded", "{task}");
    assert!(sim.state().guest(id as u32).is_none());
    assert!(record_ids(&server).await.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn roles_ownership_quotas_and_suspension() {
    let (server, sim) = setup(1).await;
    let (alice, alice_key) = server.customer("alice").await;
    let (_bob, bob_key) = server.customer("bob").await;

    let task = run(
        &server,
        &alice_key,
        "POST",
        "/api/v1/instance/150",
        Some(create_body("a1")),
    )
    .await;
    assert_eq!(
        (task["state"].as_str(), task["instance"].as_u64()),
        (Some("succeeded"), Some(150))
    );
    // The id is taken now.
    let again = server
        .call(
            "POST",
            "/api/v1/instance/150",
            Some(&alice_key),
            Some(create_body("a2")),
        )
        .await;
    assert_eq!(again.status, 409, "{:?}", again.body);

    // Bob sees nothing of Alice's.
    for (method, path) in [
        ("GET", "/api/v1/instance/150"),
        ("DELETE", "/api/v1/instance/150"),
        ("POST", "/api/v1/instance/150/status/start"),
        ("GET", "/api/v1/utils/vnc?id=150"),
    ] {
        let answer = server.call(method, path, Some(&bob_key), None).await;
        assert_eq!(answer.status, 404, "{method} {path}: {:?}", answer.body);
    }
    let listed = server
        .call("GET", "/api/v1/instance", Some(&bob_key), None)
        .await;
    assert_eq!(listed.body["total"], 0);
    let filtered = server
        .admin("GET", &format!("/api/v1/instance?user={alice}"), None)
        .await;
    assert_eq!(filtered.body["total"], 1);

    // Customers neither manage nodes nor create for others.
    let node = server
        .call("POST", "/api/v1/node", Some(&bob_key), Some(json!({})))
        .await;
    assert_eq!(node.status, 403);
    let mut body = create_body("b1");
    body["user"] = json!(alice);
    let other = server
        .call("POST", "/api/v1/instance", Some(&bob_key), Some(body))
        .await;
    assert_eq!(other.status, 403, "{:?}", other.body);

    // Validation names the fields.
    let invalid = server
        .call(
            "POST",
            "/api/v1/instance",
            Some(&bob_key),
            Some(json!({"hostname": "-x", "cpu": 0})),
        )
        .await;
    assert_eq!(invalid.status, 422);
    let fields = &invalid.body["error"]["details"]["fields"];
    for name in ["template", "hostname", "cpu"] {
        assert!(fields[name].is_string(), "{fields}");
    }
    let unknown_template = server
        .call(
            "POST",
            "/api/v1/instance",
            Some(&bob_key),
            Some(json!({"template": "windows", "hostname": "w"})),
        )
        .await;
    assert_eq!(unknown_template.status, 422);

    // Quotas are enforced before Proxmox is called.
    let quota = server
        .admin(
            "PUT",
            &format!("/api/v1/user/{alice}/quota"),
            Some(json!({"max_instances": 1, "max_memory": 1024})),
        )
        .await;
    assert_eq!(quota.status, 200, "{:?}", quota.body);
    assert_eq!(quota.body["usage"]["instances"], 1);
    let over = server
        .call(
            "POST",
            "/api/v1/instance",
            Some(&alice_key),
            Some(create_body("a3")),
        )
        .await;
    assert_eq!(
        (over.status, over.body["error"]["code"].as_str()),
        (409, Some("quota_exceeded"))
    );
    let grow = server
        .call(
            "PUT",
            "/api/v1/instance/150",
            Some(&alice_key),
            Some(json!({"memory": 2048})),
        )
        .await;
    assert_eq!(grow.status, 409, "{:?}", grow.body);
    assert_eq!(sim.state().vmids(), vec![150]);

    // Suspension: only admins suspend; a suspended instance refuses the customer.
    let refused = server
        .call(
            "POST",
            "/api/v1/instance/150/status/suspend",
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(refused.status, 403);
    let start = run(
        &server,
        &server.admin_key.clone(),
        "POST",
        "/api/v1/instance/150/status/start",
        None,
    )
    .await;
    assert_eq!(start["state"], "succeeded");
    let suspend = run(
        &server,
        &server.admin_key.clone(),
        "POST",
        "/api/v1/instance/150/status/suspend",
        None,
    )
    .await;
    assert_eq!(suspend["state"], "succeeded", "{suspend}");
    for (method, path, body) in [
        ("POST", "/api/v1/instance/150/status/stop", None),
        ("PUT", "/api/v1/instance/150", Some(json!({"cpu": 2}))),
        ("DELETE", "/api/v1/instance/150", None),
    ] {
        let answer = server.call(method, path, Some(&alice_key), body).await;
        assert_eq!(
            (answer.status, answer.body["error"]["code"].as_str()),
            (409, Some("instance_suspended")),
            "{method} {path}"
        );
    }
    let unsuspend = run(
        &server,
        &server.admin_key.clone(),
        "POST",
        "/api/v1/instance/150/status/unsuspend",
        None,
    )
    .await;
    assert_eq!(unsuspend["state"], "succeeded", "{unsuspend}");
    let stop = run(
        &server,
        &alice_key,
        "POST",
        "/api/v1/instance/150/status/stop",
        None,
    )
    .await;
    assert_eq!(stop["state"], "succeeded", "{stop}");
    sim.shutdown().await;
}

#[tokio::test]
async fn concurrent_creates_never_collide() {
    let (server, sim) = setup(2).await;
    let (_alice, key) = server.customer("alice").await;
    let creates = (0..12).map(|index| {
        let server = &server;
        let key = key.clone();
        async move {
            run(
                server,
                &key,
                "POST",
                "/api/v1/instance",
                Some(create_body(&format!("c{index}"))),
            )
            .await
        }
    });
    let tasks = futures_util::future::join_all(creates).await;
    let mut ids: Vec<u64> = tasks
        .iter()
        .map(|task| {
            assert_eq!(task["state"], "succeeded", "{task}");
            task["result"]["id"].as_u64().unwrap()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12);
    assert_eq!(record_ids(&server).await, ids);
    assert_eq!(sim_ids(&sim), ids);
    sim.shutdown().await;
}

#[tokio::test]
async fn parallel_creates_stay_within_the_quota() {
    let (server, sim) = setup(1).await;
    let (alice, key) = server.customer("alice").await;
    let quota = server
        .admin(
            "PUT",
            &format!("/api/v1/user/{alice}/quota"),
            Some(json!({"max_instances": 3})),
        )
        .await;
    assert_eq!(quota.status, 200, "{:?}", quota.body);
    let creates = (0..10).map(|index| {
        let server = &server;
        let key = key.clone();
        async move {
            server
                .call(
                    "POST",
                    "/api/v1/instance?wait=30",
                    Some(&key),
                    Some(create_body(&format!("q{index}"))),
                )
                .await
        }
    });
    let answers = futures_util::future::join_all(creates).await;
    let mut accepted = 0;
    for answer in &answers {
        match answer.status {
            200 => {
                assert_eq!(
                    answer.body["task"]["state"], "succeeded",
                    "{:?}",
                    answer.body
                );
                accepted += 1;
            }
            409 => assert_eq!(
                answer.body["error"]["code"], "quota_exceeded",
                "{:?}",
                answer.body
            ),
            status => panic!("{status}: {:?}", answer.body),
        }
    }
    assert_eq!(accepted, 3);
    assert_eq!(record_ids(&server).await.len(), 3);
    assert_eq!(sim_ids(&sim).len(), 3);
    sim.shutdown().await;
}

/// A create sent with an `Idempotency-Key` header.
async fn create_once(
    server: &TestServer,
    key: &str,
    path: &str,
    idempotency: &str,
) -> (u16, Value, bool) {
    let response = server
        .client
        .post(format!("{}{path}", server.url))
        .header("x-api-key", key)
        .header("idempotency-key", idempotency)
        .json(&create_body("retried"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        replayed,
    )
}

#[tokio::test]
async fn a_retried_create_gets_its_first_task_back() {
    let (server, sim) = setup(1).await;
    let (_alice, key) = server.customer("alice").await;
    for (path, idempotency) in [
        ("/api/v1/instance?wait=30", "retry-any"),
        ("/api/v1/instance/170?wait=30", "retry-170"),
    ] {
        let (status, first, replayed) = create_once(&server, &key, path, idempotency).await;
        assert_eq!((status, replayed), (200, false), "{first}");
        assert_eq!(first["task"]["state"], "succeeded", "{first}");
        let (status, again, replayed) = create_once(&server, &key, path, idempotency).await;
        assert_eq!((status, replayed), (200, true), "{path}: {again}");
        assert_eq!(again["task"]["id"], first["task"]["id"], "{again}");
    }
    // Each key made one instance.
    assert_eq!(record_ids(&server).await.len(), 2);
    assert_eq!(sim_ids(&sim).len(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn failed_and_hanging_creates_leave_nothing_behind() {
    let (server, sim) = setup(1).await;
    let admin = server.admin_key.clone();
    sim.faults().add_task_fault(TaskFault {
        task_type: Some("vzcreate".into()),
        vmid: None,
        effect: TaskEffect::Fail("unable to create CT - no space left on device".into()),
        count: Some(1),
    });
    let task = run(
        &server,
        &admin,
        "POST",
        "/api/v1/instance",
        Some(create_body("f1")),
    )
    .await;
    assert_eq!(task["state"], "failed", "{task}");
    assert_eq!(task["error"]["code"], "proxmox_error");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no space left"),
        "{task}"
    );
    assert!(record_ids(&server).await.is_empty());
    assert!(sim_ids(&sim).is_empty());

    server.app().proxmox.set_deadlines(Deadlines {
        create: Duration::from_secs(2),
        ..Deadlines::default()
    });
    sim.faults().add_task_fault(TaskFault {
        task_type: Some("vzcreate".into()),
        vmid: None,
        effect: TaskEffect::Hang,
        count: Some(1),
    });
    let task = run(
        &server,
        &admin,
        "POST",
        "/api/v1/instance",
        Some(create_body("h1")),
    )
    .await;
    assert_ne!(task["state"], "succeeded", "{task}");
    // The executor stops the hanging task and removes what it left, shortly after.
    let mut settled = false;
    for _ in 0..100 {
        if record_ids(&server).await.is_empty() && sim_ids(&sim).is_empty() {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        settled,
        "records {:?} simulator {:?}",
        record_ids(&server).await,
        sim_ids(&sim)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn locks_and_offline_nodes_give_clear_outcomes() {
    let (server, sim) = setup(2).await;
    let admin = server.admin_key.clone();
    let mut body = create_body("l1");
    body["node"] = json!("pve2");
    let task = run(&server, &admin, "POST", "/api/v1/instance", Some(body)).await;
    let id = task["instance"].as_u64().unwrap() as u32;

    // A short lock is waited out.
    assert!(
        sim.faults()
            .lock_guest(id, "backup", Duration::from_millis(200))
    );
    let task = run(
        &server,
        &admin,
        "POST",
        &format!("/api/v1/instance/{id}/status/start"),
        None,
    )
    .await;
    assert_eq!(task["state"], "succeeded", "{task}");
    // A long one fails with Proxmox's reason.
    assert!(
        sim.faults()
            .lock_guest(id, "backup", Duration::from_secs(60))
    );
    let task = run(
        &server,
        &admin,
        "POST",
        &format!("/api/v1/instance/{id}/status/stop"),
        None,
    )
    .await;
    assert_eq!(task["state"], "failed");
    assert_eq!(task["error"]["code"], "proxmox_locked");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CT is locked"),
        "{task}"
    );
    assert!(sim.state().guest(id).unwrap().running);

    // An offline node: lists show it, direct calls answer 502 with the reason.
    sim.faults().set_node_offline("pve2", Some(595));
    let node = server.admin("GET", "/api/v1/node/pve2", None).await;
    assert_eq!(node.body["node"]["status"], "offline", "{:?}", node.body);
    let list = server.admin("GET", "/api/v1/instance", None).await;
    assert_eq!(list.body["data"][0]["status"], "unknown");
    let graphic = server
        .admin("GET", &format!("/api/v1/utils/graphic?id={id}"), None)
        .await;
    assert_eq!(
        (graphic.status, graphic.body["error"]["code"].as_str()),
        (502, Some("proxmox_error"))
    );
    assert!(
        graphic.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("No route to host")
    );
    let mut body = create_body("l2");
    body["node"] = json!("pve2");
    let create = server.admin("POST", "/api/v1/instance", Some(body)).await;
    assert_eq!(create.status, 502, "{:?}", create.body);
    // Without a node named, creates go to the node that answers.
    let task = run(
        &server,
        &admin,
        "POST",
        "/api/v1/instance",
        Some(create_body("l3")),
    )
    .await;
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["result"]["node"], "pve1");
    sim.faults().set_node_offline("pve2", None);
    assert_eq!(record_ids(&server).await, sim_ids(&sim));
    sim.shutdown().await;
}

#[tokio::test]
async fn nodes_templates_and_cluster() {
    let (server, sim) = setup(1).await;
    let (_, customer) = server.customer("carol").await;
    let nodes = server
        .call("GET", "/api/v1/node", Some(&customer), None)
        .await;
    assert_eq!(nodes.body["total"], 1);
    let node = &nodes.body["data"][0];
    assert_eq!(node["status"], "online");
    for key in [
        "cpu",
        "memory",
        "rootfs",
        "swap",
        "loadavg",
        "uptime",
        "pveversion",
    ] {
        assert!(!node[key].is_null(), "{key} in {node}");
    }
    assert!(!nodes.body.to_string().contains(TOKEN_SECRET));
    let report = server.admin("REPORT", "/api/v1/node", None).await;
    assert_eq!(report.status, 200);
    assert_eq!(report.body["data"][0]["name"], "pve1");
    let duplicate = server
        .admin(
            "POST",
            "/api/v1/node",
            Some(json!({"name": "pve1", "address": "127.0.0.1",
            "port": sim.local_addr().port(), "token_id": TOKEN_ID, "token_secret": TOKEN_SECRET,
            "fingerprint": sim.fingerprint().unwrap()})),
        )
        .await;
    assert_eq!(duplicate.status, 409);
    let wrong_name = server
        .admin(
            "POST",
            "/api/v1/node",
            Some(json!({"name": "pve9", "address": "127.0.0.1",
            "port": sim.local_addr().port(), "token_id": TOKEN_ID, "token_secret": TOKEN_SECRET,
            "fingerprint": sim.fingerprint().unwrap()})),
        )
        .await;
    assert_eq!(wrong_name.status, 422, "{:?}", wrong_name.body);

    for path in ["/api/v1/template", "/api/v1/image"] {
        let templates = server.call("GET", path, Some(&customer), None).await;
        assert_eq!(templates.status, 200);
        assert!(
            templates.body["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"].as_str().unwrap().starts_with("debian-12"))
        );
    }
    let admin = server.admin_key.clone();
    let appliances = sim.state().snapshot();
    drop(appliances);
    let download = run(&server, &admin, "POST", "/api/v1/template",
        Some(json!({"node": "pve1", "storage": "local", "template": "alpine-3.20-default_20240908_amd64.tar.xz"}))).await;
    // The simulator knows a fixed appliance list; either way the task ends with Proxmox's word.
    assert!(
        matches!(download["state"].as_str(), Some("succeeded" | "failed")),
        "{download}"
    );

    let nextid = server
        .call("GET", "/api/v1/cluster/nextid", Some(&customer), None)
        .await;
    assert_eq!(nextid.body["data"], 100);
    let task = run(
        &server,
        &admin,
        "POST",
        "/api/v1/instance",
        Some(create_body("n1")),
    )
    .await;
    let id = task["instance"].as_u64().unwrap();
    let cluster = server.admin("GET", "/api/v1/cluster", None).await;
    assert_eq!(cluster.status, 200);
    assert!(
        cluster.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == format!("lxc/{id}"))
    );
    assert_eq!(
        server
            .admin("REPORT", "/api/v1/cluster?type=node", None)
            .await
            .body["total"],
        1
    );
    assert_eq!(
        server
            .call("GET", "/api/v1/cluster", Some(&customer), None)
            .await
            .status,
        403
    );

    let busy = server.admin("DELETE", "/api/v1/node/pve1", None).await;
    assert_eq!(busy.status, 409);
    run(
        &server,
        &admin,
        "DELETE",
        &format!("/api/v1/instance/{id}"),
        None,
    )
    .await;
    let gone = server.admin("DELETE", "/api/v1/node/pve1", None).await;
    assert_eq!(gone.status, 204);
    assert_eq!(
        server.admin("GET", "/api/v1/node/pve1", None).await.status,
        404
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_restart_during_a_create_ends_the_task() {
    let sim = simulator(1, Duration::from_millis(1500)).await;
    let mut server = TestServer::start().await;
    quick(&server);
    register(&server, &sim, "pve1").await;
    let admin = server.admin_key.clone();
    let answer = server
        .admin("POST", "/api/v1/instance", Some(create_body("r1")))
        .await;
    assert_eq!(answer.status, 202, "{:?}", answer.body);
    let task_id = answer.body["task"]["id"].as_str().unwrap().to_string();
    let id = answer.body["task"]["instance"].as_u64().unwrap() as u32;
    // Wait until Proxmox has the create under way, then stop the coordinator.
    for _ in 0..100 {
        if sim.state().guest(id).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        sim.state().guest(id).is_some(),
        "the create reached the simulator"
    );
    server.stop().await;

    let running = coordinator::server::start(coordinator::config::Config::for_tests(
        server.dir.path().to_path_buf(),
    ))
    .await
    .unwrap();
    server.url = running.http_url();
    server.running = Some(running);
    quick(&server);
    let mut state = Value::Null;
    for _ in 0..300 {
        let task = server
            .call(
                "GET",
                &format!("/api/v1/task/{task_id}"),
                Some(&admin),
                None,
            )
            .await;
        state = task.body["task"]["state"].clone();
        if state != "running" && state != "queued" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "succeeded");
    let start = run(
        &server,
        &admin,
        "POST",
        &format!("/api/v1/instance/{id}/status/start"),
        None,
    )
    .await;
    assert_eq!(start["state"], "succeeded", "{start}");
    let creates = sim
        .state()
        .snapshot()
        .tasks
        .iter()
        .filter(|task| task.kind == "vzcreate")
        .count();
    assert_eq!(creates, 1, "the create was not repeated");
    assert_eq!(record_ids(&server).await, vec![u64::from(id)]);
    sim.shutdown().await;
}

#[tokio::test]
async fn dev_mode_brings_a_simulated_node() {
    let server = TestServer::start_with(|config| config.dev = true).await;
    quick(&server);
    let nodes = server.admin("GET", "/api/v1/node", None).await;
    assert_eq!(nodes.body["data"][0]["name"], "pve1", "{:?}", nodes.body);
    let admin = server.admin_key.clone();
    let task = run(
        &server,
        &admin,
        "POST",
        "/api/v1/instance",
        Some(json!({"template": "debian-12", "hostname": "dev1", "start": true})),
    )
    .await;
    assert_eq!(task["state"], "succeeded", "{task}");
    let id = task["instance"].as_u64().unwrap();
    let one = server
        .admin("GET", &format!("/api/v1/instance/{id}"), None)
        .await;
    assert_eq!(one.body["instance"]["status"], "running", "{:?}", one.body);
    let task = run(
        &server,
        &admin,
        "DELETE",
        &format!("/api/v1/instance/{id}"),
        None,
    )
    .await;
    assert_eq!(task["state"], "succeeded", "{task}");
}
