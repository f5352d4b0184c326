//! Fault injection through the library handle and the `/_sim/faults` admin endpoint.

use std::time::{Duration, Instant};

use pvesim::{FailureRule, SimConfig, TaskEffect, TaskFault};
use serde_json::json;
use testkit::pvesim::{config, encode, start};

#[tokio::test]
async fn added_latency_slows_every_call() {
    let harness = start(config()).await;
    harness.sim.faults().set_latency(Duration::from_millis(200));
    let began = Instant::now();
    assert_eq!(harness.call("GET", "/version", &[]).await.status, 200);
    assert!(
        began.elapsed() >= Duration::from_millis(200),
        "{:?}",
        began.elapsed()
    );
    harness.sim.faults().clear();
    let began = Instant::now();
    assert_eq!(harness.call("GET", "/version", &[]).await.status, 200);
    assert!(began.elapsed() < Duration::from_millis(200));
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn failure_rules_answer_500_and_59x() {
    let harness = start(config()).await;
    let faults = harness.sim.faults();
    faults
        .add_rule(FailureRule {
            method: Some("GET".into()),
            path: "^/nodes$".into(),
            rate: 1.0,
            status: 595,
            message: None,
        })
        .unwrap();
    faults
        .add_rule(FailureRule {
            method: None,
            path: "^/cluster/nextid$".into(),
            rate: 1.0,
            status: 500,
            message: Some("got timeout".into()),
        })
        .unwrap();
    let nodes = harness.call("GET", "/nodes", &[]).await;
    assert_eq!(
        (nodes.status, nodes.reason.as_str(), nodes.raw.as_str()),
        (595, "No route to host", "")
    );
    let nextid = harness.call("GET", "/cluster/nextid", &[]).await;
    assert_eq!(
        (nextid.status, nextid.reason.as_str()),
        (500, "got timeout")
    );
    assert_eq!(nextid.body["message"], "got timeout\n");
    assert_eq!(harness.call("GET", "/version", &[]).await.status, 200);
    harness.sim.shutdown().await;
}

async fn failure_pattern(seed: u64) -> Vec<u16> {
    let harness = start(SimConfig { seed, ..config() }).await;
    harness
        .sim
        .faults()
        .add_rule(FailureRule {
            method: None,
            path: "^/version$".into(),
            rate: 0.5,
            status: 596,
            message: None,
        })
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..24 {
        statuses.push(harness.call("GET", "/version", &[]).await.status);
    }
    harness.sim.shutdown().await;
    statuses
}

#[tokio::test]
async fn random_failures_repeat_with_the_same_seed() {
    let first = failure_pattern(42).await;
    let second = failure_pattern(42).await;
    assert_eq!(first, second);
    assert!(first.contains(&596) && first.contains(&200), "{first:?}");
}

#[tokio::test]
async fn failing_tasks_end_with_task_error_and_undo_create() {
    let harness = start(config()).await;
    harness.sim.faults().add_task_fault(TaskFault {
        task_type: Some("vzcreate".into()),
        vmid: None,
        effect: TaskEffect::Fail("unable to create CT 140 - no space left on device".into()),
        count: Some(1),
    });
    let upid = harness.create(140, &[]).await;
    let status = harness.wait(&upid).await;
    assert_eq!(
        status["exitstatus"],
        "unable to create CT 140 - no space left on device"
    );
    let log = harness.log(&upid).await;
    assert_eq!(
        log.last().unwrap(),
        "TASK ERROR: unable to create CT 140 - no space left on device"
    );
    assert!(harness.sim.state().guest(140).is_none());
    harness.create_ok(140, &[]).await;
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn hanging_tasks_run_until_stopped() {
    let harness = start(config()).await;
    harness.create_ok(141, &[]).await;
    harness.sim.faults().add_task_fault(TaskFault {
        task_type: Some("vzstart".into()),
        vmid: Some(141),
        effect: TaskEffect::Hang,
        count: None,
    });
    let start = harness
        .call("POST", "/nodes/pve1/lxc/141/status/start", &[])
        .await;
    let upid = start.data().as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let running = harness
        .call(
            "GET",
            &format!("/nodes/pve1/tasks/{}/status", encode(&upid)),
            &[],
        )
        .await;
    assert_eq!(running.data()["status"], "running");
    let active = harness
        .call("GET", "/nodes/pve1/tasks", &[("source", "active")])
        .await;
    assert_eq!(active.body["total"], 1);
    let stop = harness
        .call(
            "DELETE",
            &format!("/nodes/pve1/tasks/{}", encode(&upid)),
            &[],
        )
        .await;
    assert_eq!(stop.status, 200);
    let status = harness.wait(&upid).await;
    assert_eq!(status["exitstatus"], "interrupted by signal");
    let current = harness
        .call("GET", "/nodes/pve1/lxc/141/status/current", &[])
        .await;
    assert_eq!(current.data()["status"], "stopped");

    let second = harness
        .call("POST", "/nodes/pve1/lxc/141/status/start", &[])
        .await;
    let upid = second.data().as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(100)).await;
    harness.sim.faults().clear();
    assert_eq!(
        harness.wait(&upid).await["exitstatus"],
        "OK",
        "clearing the hang lets the task finish"
    );
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn injected_locks_block_changes_until_they_expire() {
    let harness = start(config()).await;
    harness.create_ok(142, &[]).await;
    assert!(
        harness
            .sim
            .faults()
            .lock_guest(142, "backup", Duration::from_millis(300))
    );
    let start = harness
        .call("POST", "/nodes/pve1/lxc/142/status/start", &[])
        .await;
    assert_eq!(
        (start.status, start.reason.as_str()),
        (500, "CT is locked (backup)")
    );
    let config = harness.call("GET", "/nodes/pve1/lxc/142/config", &[]).await;
    assert_eq!(config.data()["lock"], "backup");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = harness
            .call("POST", "/nodes/pve1/lxc/142/status/start", &[])
            .await;
        if answer.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "lock never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn queued_tasks_time_out_on_the_config_lock() {
    let harness = start(SimConfig {
        lock_timeout: Duration::from_millis(100),
        ..config()
    })
    .await;
    harness.create_ok(143, &[]).await;
    harness.sim.faults().add_task_fault(TaskFault {
        task_type: Some("vzstart".into()),
        vmid: None,
        effect: TaskEffect::Hang,
        count: Some(1),
    });
    let first = harness
        .call("POST", "/nodes/pve1/lxc/143/status/start", &[])
        .await;
    let second = harness
        .call("POST", "/nodes/pve1/lxc/143/status/start", &[])
        .await;
    let status = harness.wait(second.data().as_str().unwrap()).await;
    assert_eq!(
        status["exitstatus"],
        "can't lock file '/run/lock/lxc/pve-config-143.lock' - got timeout"
    );
    harness
        .call(
            "DELETE",
            &format!(
                "/nodes/pve1/tasks/{}",
                encode(first.data().as_str().unwrap())
            ),
            &[],
        )
        .await;
    harness.sim.shutdown().await;
}

#[tokio::test]
async fn offline_nodes_through_the_admin_endpoint() {
    let harness = start(SimConfig {
        nodes: 2,
        ..config()
    })
    .await;
    let admin = format!("http://{}/_sim/faults", harness.sim.local_addr());
    let posted = harness
        .client
        .post(&admin)
        .json(&json!({"offline_nodes": {"pve2": 596}, "latency_ms": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let status = harness.call("GET", "/nodes/pve2/status", &[]).await;
    assert_eq!(
        (status.status, status.reason.as_str()),
        (596, "Connection timed out")
    );
    assert_eq!(
        harness.call("GET", "/nodes/pve1/status", &[]).await.status,
        200
    );
    let nodes = harness.call("GET", "/nodes", &[]).await;
    let pve2 = nodes
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["node"] == "pve2")
        .unwrap()
        .clone();
    assert_eq!(pve2["status"], "offline");
    let read: serde_json::Value = harness
        .client
        .get(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["data"]["offline_nodes"]["pve2"], 596);
    let cleared = harness.client.delete(&admin).send().await.unwrap();
    assert_eq!(cleared.status(), 200);
    assert_eq!(
        harness.call("GET", "/nodes/pve2/status", &[]).await.status,
        200
    );
    harness.sim.shutdown().await;
}
