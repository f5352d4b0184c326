//! The agent routes over HTTP with real API keys: enrollment tokens for owners and admins only,
//! the agent status shape, the admin ping (503 agent_offline while the agent is away) and
//! revocation; the audit log records the revocation, not the pings.

use std::time::Duration;
use testkit::agent_crate as agent;

use coordinator::store::Table;
use coordinator::store::records::InstanceRecord;
use serde_json::Value;

/// `hostplane_agents_connected` from `/metrics`.
async fn connected_gauge(server: &testkit::coordinator::TestServer) -> i64 {
    let text = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("hostplane_agents_connected "))
        .unwrap_or_else(|| panic!("no agents gauge in {text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn enrollment_status_ping_and_revocation_over_http() {
    let mut server = testkit::coordinator::TestServer::start().await;
    let (owner_id, owner_key) = server.customer("owner").await;
    let (_, stranger_key) = server.customer("stranger").await;
    let mut record = testkit::coordinator::instance(101);
    record.user = owner_id;
    server
        .app()
        .store
        .put(Table::Instances, &InstanceRecord::key(101), &record)
        .unwrap();

    let enrollment = "/api/v1/instance/101/enrollment";
    let agent = "/api/v1/instance/101/agent";
    let ping = "/api/v1/instance/101/agent/ping";

    // Who may do what: (key, method, path, expected status).
    let anonymous = None;
    let cases: Vec<(Option<&str>, &str, &str, u16)> = vec![
        (anonymous, "POST", enrollment, 401),
        (anonymous, "GET", agent, 401),
        (Some(&stranger_key), "POST", enrollment, 404),
        (Some(&stranger_key), "GET", agent, 404),
        (Some(&stranger_key), "DELETE", agent, 404),
        (Some(&owner_key), "POST", ping, 403),
        (Some(&owner_key), "GET", "/api/v1/instance/999/agent", 404),
    ];
    for (key, method, path, expected) in cases {
        let answer = server.call(method, path, key, None).await;
        assert_eq!(
            answer.status, expected,
            "{method} {path}: {:?}",
            answer.body
        );
    }

    let status = server.call("GET", agent, Some(&owner_key), None).await;
    assert_eq!(status.status, 200);
    assert_eq!(
        status.body,
        serde_json::json!({"connected": false, "state": "never"})
    );
    let offline = server.admin("POST", ping, None).await;
    assert_eq!(offline.status, 503, "{:?}", offline.body);
    assert_eq!(offline.body["error"]["code"], "agent_offline");

    let offer = server.admin("POST", enrollment, None).await;
    assert_eq!(offer.status, 201, "{:?}", offer.body);
    let offer = server
        .call("POST", enrollment, Some(&owner_key), None)
        .await;
    assert_eq!(offer.status, 201, "{:?}", offer.body);
    let token = offer.body["token"].as_str().unwrap().to_string();
    assert!(offer.body["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        offer.body["command"].as_str().unwrap(),
        format!("hostplane-agent enroll --token {token}")
    );

    let state_dir = server.dir.path().join("agent-state");
    agent::enroll(agent::EnrollOptions::new(token, &state_dir))
        .await
        .unwrap();
    let handle = testkit::agent::spawn_agent(&state_dir);
    testkit::agent::connected(&handle, 1).await;

    let status = server.call("GET", agent, Some(&owner_key), None).await;
    assert_eq!(status.body["connected"], true, "{:?}", status.body);
    assert_eq!(status.body["state"], "connected");
    assert_eq!(status.body["version"], agent::VERSION);
    for field in ["last_seen", "certificate_not_after"] {
        assert!(status.body[field].is_string(), "{field}: {:?}", status.body);
    }
    assert_eq!(connected_gauge(&server).await, 1);
    let pong = server.admin("POST", ping, None).await;
    assert_eq!(pong.status, 200, "{:?}", pong.body);
    let rtt = pong.body["rtt_ms"].as_f64().expect("rtt_ms is a number");
    assert!((0.0..5000.0).contains(&rtt), "{rtt}");

    let revoked = server.call("DELETE", agent, Some(&owner_key), None).await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    assert_eq!(revoked.body["state"], "revoked");
    assert_eq!(revoked.body["connected"], Value::Bool(false));
    handle
        .wait_until(Duration::from_secs(20), |state| {
            !matches!(state.phase, agent::ConnectionPhase::Connected { .. })
        })
        .await
        .expect("the agent is cut off");
    let offline = server.admin("POST", ping, None).await;
    assert_eq!(offline.status, 503);
    // The coordinator's side of the closed connection winds down on its own task.
    let started = std::time::Instant::now();
    while connected_gauge(&server).await != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the gauge still counts the revoked agent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The audit log has the revocation and the enrollments, never the pings, which change
    // nothing.
    let audit = server.admin("GET", "/api/v1/audit?limit=100", None).await;
    assert_eq!(audit.status, 200);
    let routes: Vec<&str> = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["route"].as_str().unwrap())
        .collect();
    assert!(
        routes.contains(&"/api/v1/instance/{id}/agent"),
        "{routes:?}"
    );
    assert!(
        routes.contains(&"/api/v1/instance/{id}/enrollment"),
        "{routes:?}"
    );
    assert!(
        !routes.iter().any(|route| route.ends_with("/ping")),
        "{routes:?}"
    );
    handle.stop().await;
    server.stop().await;
}
