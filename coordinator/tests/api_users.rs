//! Route tests for users, tickets, API keys, errors, audit, metrics and OpenAPI: every role and
//! every way to be refused.

use serde_json::json;
use testkit::coordinator::TestServer;

#[tokio::test]
async fn every_protected_route_refuses_without_credentials() {
    let server = TestServer::start().await;
    let cases = [
        ("GET", "/api/v1/user"),
        ("POST", "/api/v1/user"),
        ("GET", "/api/v1/user/abc"),
        ("PUT", "/api/v1/user/abc"),
        ("DELETE", "/api/v1/user/abc"),
        ("DELETE", "/api/v1/ticket"),
        ("GET", "/api/v1/apikey"),
        ("POST", "/api/v1/apikey"),
        ("DELETE", "/api/v1/apikey/abc"),
        ("GET", "/api/v1/audit"),
    ];
    for (method, path) in cases {
        let answer = server.call(method, path, None, None).await;
        assert_eq!(answer.status, 401, "{method} {path}: {:?}", answer.body);
        assert_eq!(answer.body["error"]["code"], "unauthorized");
        let bad = server.call(method, path, Some("hpk_nope_nope"), None).await;
        assert_eq!(bad.status, 401, "{method} {path} with a bad key");
    }
}

#[tokio::test]
async fn customers_are_refused_admin_routes_and_see_only_themselves() {
    let server = TestServer::start().await;
    let (alice, alice_key) = server.customer("alice").await;
    let (bob, _) = server.customer("bob").await;
    for (method, path) in [
        ("GET", "/api/v1/user"),
        ("POST", "/api/v1/user"),
        ("GET", "/api/v1/audit"),
    ] {
        let answer = server
            .call(method, path, Some(&alice_key), Some(json!({})))
            .await;
        assert_eq!(answer.status, 403, "{method} {path}");
    }
    let own = server
        .call(
            "GET",
            &format!("/api/v1/user/{alice}"),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(own.status, 200);
    assert_eq!(own.body["user"]["username"], "alice");
    assert!(own.body["user"].get("password_hash").is_none());
    let other = server
        .call(
            "GET",
            &format!("/api/v1/user/{bob}"),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(other.status, 404);
    let promote = server
        .call(
            "PUT",
            &format!("/api/v1/user/{alice}"),
            Some(&alice_key),
            Some(json!({"admin": true})),
        )
        .await;
    assert_eq!(promote.status, 403);
    let delete = server
        .call(
            "DELETE",
            &format!("/api/v1/user/{bob}"),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(delete.status, 403);
}

#[tokio::test]
async fn user_validation_and_conflicts() {
    let server = TestServer::start().await;
    let cases = [
        (
            json!({"username": "x", "password": "secret1"}),
            422,
            "username",
        ),
        (
            json!({"username": "bad name", "password": "secret1"}),
            422,
            "username",
        ),
        (
            json!({"username": "carol", "password": "short"}),
            422,
            "password",
        ),
        (
            json!({"username": "carol", "password": "secret1", "email": "nope"}),
            422,
            "email",
        ),
        (json!({"username": "carol", "password": 12345678}), 400, ""),
        (
            json!({"username": "carol", "password": "secret1", "colour": "red"}),
            400,
            "",
        ),
    ];
    for (body, status, field) in cases {
        let answer = server
            .admin("POST", "/api/v1/user", Some(body.clone()))
            .await;
        assert_eq!(answer.status, status, "{body}: {:?}", answer.body);
        if !field.is_empty() {
            assert!(
                answer.body["error"]["details"]["fields"][field].is_string(),
                "{body}"
            );
        }
    }
    let users = server.admin("GET", "/api/v1/user", None).await;
    assert_eq!(users.body["total"], 1, "no failed create changed anything");
    let first = server
        .admin(
            "POST",
            "/api/v1/user",
            Some(json!({"username": "carol", "password": "secret1", "email": "c@example.org"})),
        )
        .await;
    assert_eq!(first.status, 201);
    let same_name = server
        .admin(
            "POST",
            "/api/v1/user",
            Some(json!({"username": "CAROL", "password": "secret1"})),
        )
        .await;
    assert_eq!(same_name.status, 409);
    let same_email = server
        .admin(
            "POST",
            "/api/v1/user",
            Some(json!({"username": "dave", "password": "secret1", "email": "C@example.org"})),
        )
        .await;
    assert_eq!(same_email.status, 409);
    let id = first.body["user"]["id"].as_str().unwrap();
    let rename = server
        .admin(
            "PUT",
            &format!("/api/v1/user/{id}"),
            Some(json!({"username": "carla"})),
        )
        .await;
    assert_eq!(rename.status, 422);
    let filtered = server
        .admin("GET", "/api/v1/user?username=carol", None)
        .await;
    assert_eq!(filtered.body["total"], 1);
    let by_email = server
        .admin(
            "GET",
            "/api/v1/user",
            Some(json!({"email": "c@example.org"})),
        )
        .await;
    assert_eq!(
        by_email.body["total"], 1,
        "GET parameters may come as a JSON body"
    );
}

#[tokio::test]
async fn tickets_work_as_bearer_and_as_parameters_and_end_on_logout() {
    let server = TestServer::start().await;
    let (alice, _) = server.customer("alice").await;
    let login = server
        .call(
            "POST",
            "/api/v1/ticket",
            None,
            Some(json!({"username": "alice", "password": "secret-password"})),
        )
        .await;
    assert_eq!(login.status, 201, "{:?}", login.body);
    let ticket = login.body["ticket"].as_str().unwrap().to_string();
    assert_eq!(login.body["userid"], alice.as_str());
    let client = &server.client;
    let bearer = client
        .get(format!("{}/api/v1/user/{alice}", server.url))
        .bearer_auth(&ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let query = client
        .get(format!(
            "{}/api/v1/user/{alice}?userid={alice}&ticket={ticket}",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 200);
    let body = client
        .get(format!("{}/api/v1/user/{alice}", server.url))
        .json(&json!({"userid": alice, "ticket": ticket}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        body.status(),
        200,
        "a GET with a JSON body carries the ticket"
    );
    let wrong_user = client
        .get(format!(
            "{}/api/v1/user/{alice}?userid=someone&ticket={ticket}",
            server.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_user.status(), 401);
    let logout = client
        .delete(format!("{}/api/v1/ticket", server.url))
        .bearer_auth(&ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let after = client
        .get(format!("{}/api/v1/user/{alice}", server.url))
        .bearer_auth(&ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
}

#[tokio::test]
async fn expired_tickets_are_refused() {
    // Long enough that a loaded machine still makes the first request in time.
    let ttl = std::time::Duration::from_secs(4);
    let server = TestServer::start_with(|config| config.ticket_ttl = ttl).await;
    server.customer("alice").await;
    let issued = std::time::Instant::now();
    let login = server
        .call(
            "POST",
            "/api/v1/ticket",
            None,
            Some(json!({"username": "alice", "password": "secret-password"})),
        )
        .await;
    let answered = std::time::Instant::now();
    let ticket = login.body["ticket"].as_str().unwrap().to_string();
    let fresh = server
        .client
        .get(format!("{}/api/v1/apikey", server.url))
        .bearer_auth(&ticket)
        .send()
        .await
        .unwrap();
    // The ticket expires between `issued + ttl` and `answered + ttl`.
    assert!(
        issued.elapsed() < ttl,
        "the machine is too slow to check a fresh ticket within its lifetime"
    );
    assert_eq!(fresh.status(), 200);
    tokio::time::sleep(
        (ttl + std::time::Duration::from_millis(600)).saturating_sub(answered.elapsed()),
    )
    .await;
    let stale = server
        .client
        .get(format!("{}/api/v1/apikey", server.url))
        .bearer_auth(&ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 401);
}

#[tokio::test]
async fn logins_are_rate_limited_with_retry_after() {
    let server = TestServer::start().await;
    server.customer("alice").await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let answer = server
            .call(
                "POST",
                "/api/v1/ticket",
                None,
                Some(json!({"username": "alice", "password": "wrong-password"})),
            )
            .await;
        statuses.push(answer.status);
        if answer.status == 429 {
            assert!(answer.headers.get("retry-after").is_some());
        }
    }
    // Three failures are free, the fourth is answered, then this user at this address waits.
    assert_eq!(statuses, vec![401, 401, 401, 401, 429, 429]);
    let right = server
        .call(
            "POST",
            "/api/v1/ticket",
            None,
            Some(json!({"username": "alice", "password": "secret-password"})),
        )
        .await;
    assert_eq!(
        right.status, 429,
        "even the right password waits once the user is throttled at this address"
    );
}

#[tokio::test]
async fn api_keys_are_shown_once_scoped_expiring_and_revocable() {
    let server = TestServer::start().await;
    let (alice, alice_key) = server.customer("alice").await;
    let (bob, bob_key) = server.customer("bob").await;
    let listed = server
        .call("GET", "/api/v1/apikey", Some(&alice_key), None)
        .await;
    assert_eq!(listed.body["total"], 1);
    assert!(
        listed.body["data"][0].get("key").is_none(),
        "the secret is never listed"
    );
    let admin_key = server
        .call(
            "POST",
            "/api/v1/apikey",
            Some(&alice_key),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(admin_key.status, 422, "a customer cannot mint an admin key");
    let for_bob = server
        .call(
            "POST",
            "/api/v1/apikey",
            Some(&alice_key),
            Some(json!({"user": bob})),
        )
        .await;
    assert_eq!(for_bob.status, 403);
    let past = server
        .call(
            "POST",
            "/api/v1/apikey",
            Some(&alice_key),
            Some(json!({"expires_at": "2001-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(past.status, 422);
    let scoped = server
        .call(
            "POST",
            "/api/v1/apikey",
            Some(&alice_key),
            Some(json!({"instances": [101]})),
        )
        .await;
    assert_eq!(scoped.status, 422, "alice owns no instance 101");
    let second = server
        .call(
            "POST",
            "/api/v1/apikey",
            Some(&alice_key),
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(second.status, 201);
    let second_key = second.body["key"].as_str().unwrap().to_string();
    let second_id = second.body["apikey"]["id"].as_str().unwrap().to_string();
    let used = server
        .call(
            "GET",
            &format!("/api/v1/user/{alice}"),
            Some(&second_key),
            None,
        )
        .await;
    assert_eq!(used.status, 200);
    let not_bobs = server
        .call(
            "DELETE",
            &format!("/api/v1/apikey/{second_id}"),
            Some(&bob_key),
            None,
        )
        .await;
    assert_eq!(not_bobs.status, 404);
    let revoked = server
        .call(
            "DELETE",
            &format!("/api/v1/apikey/{second_id}"),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(revoked.status, 204);
    let after = server
        .call(
            "GET",
            &format!("/api/v1/user/{alice}"),
            Some(&second_key),
            None,
        )
        .await;
    assert_eq!(after.status, 401);
    let listed = server
        .call("GET", "/api/v1/apikey", Some(&alice_key), None)
        .await;
    assert!(
        listed.body["data"][0]["last_used_at"].is_string(),
        "{:?}",
        listed.body
    );
}

#[tokio::test]
async fn deleting_users_ends_their_credentials_and_keeps_the_last_admin() {
    let server = TestServer::start().await;
    let (alice, alice_key) = server.customer("alice").await;
    let deleted = server
        .admin("DELETE", &format!("/api/v1/user/{alice}"), None)
        .await;
    assert_eq!(deleted.status, 204);
    let after = server
        .call(
            "GET",
            &format!("/api/v1/user/{alice}"),
            Some(&alice_key),
            None,
        )
        .await;
    assert_eq!(after.status, 401);
    let admins = server
        .admin("GET", "/api/v1/user?username=admin", None)
        .await;
    let admin_id = admins.body["data"][0]["id"].as_str().unwrap().to_string();
    let last = server
        .admin("DELETE", &format!("/api/v1/user/{admin_id}"), None)
        .await;
    assert_eq!(last.status, 409);
    let demote = server
        .admin(
            "PUT",
            &format!("/api/v1/user/{admin_id}"),
            Some(json!({"admin": false})),
        )
        .await;
    assert_eq!(demote.status, 409);
    let missing = server.admin("DELETE", "/api/v1/user/nobody", None).await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn bad_requests_get_their_status_and_change_nothing() {
    let server = TestServer::start().await;
    let client = &server.client;
    let key = server.admin_key.clone();
    let malformed = client
        .post(format!("{}/api/v1/user", server.url))
        .header("x-api-key", &key)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let body: serde_json::Value = malformed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_json");
    let huge = client
        .post(format!("{}/api/v1/user", server.url))
        .header("x-api-key", &key)
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let wrong_method = client
        .patch(format!("{}/api/v1/user", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    let allow = wrong_method
        .headers()
        .get("allow")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let unknown = client
        .get(format!("{}/api/v2/nothing", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let limit = server.admin("GET", "/api/v1/user?limit=0", None).await;
    assert_eq!(limit.status, 422);
    let limit = server.admin("GET", "/api/v1/user?limit=abc", None).await;
    assert_eq!(limit.status, 400);
    let users = server.admin("GET", "/api/v1/user", None).await;
    assert_eq!(users.body["total"], 1);
}

#[tokio::test]
async fn mutating_calls_are_audited_and_metrics_count_routes() {
    let server = TestServer::start().await;
    let (alice, _) = server.customer("alice").await;
    let refused = server
        .call("DELETE", &format!("/api/v1/user/{alice}"), None, None)
        .await;
    assert_eq!(refused.status, 401);
    let audit = server.admin("GET", "/api/v1/audit?limit=10", None).await;
    assert_eq!(audit.status, 200);
    let entries = audit.body["data"].as_array().unwrap();
    let newest = &entries[0];
    assert_eq!(newest["status"], 401);
    assert_eq!(newest["route"], "/api/v1/user/{userid}");
    assert_eq!(newest["actor"], serde_json::Value::Null);
    assert!(entries.iter().any(|entry| entry["status"] == 201
        && entry["route"] == "/api/v1/user"
        && entry["credential"].as_str().unwrap().starts_with("apikey:")));
    let metrics = server
        .client
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("route=\"/api/v1/user\""), "{metrics}");
    assert!(!metrics.contains(&alice), "metrics never name ids");
}

#[tokio::test]
async fn the_openapi_document_lists_every_route() {
    let server = TestServer::start().await;
    let document = server.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(document.status, 200);
    let paths = document.body["paths"].as_object().unwrap();
    for route in server.app().routes.all() {
        let item = paths
            .get(route.path)
            .unwrap_or_else(|| panic!("{} is missing", route.path));
        let method = route.method.as_str().to_ascii_lowercase();
        let listed = item.get(&method).is_some()
            || item["x-other-methods"].as_array().is_some_and(|others| {
                others
                    .iter()
                    .any(|other| other["method"] == route.method.as_str())
            });
        assert!(
            listed,
            "{} {} is missing from the document",
            route.method, route.path
        );
    }
}

#[tokio::test]
async fn the_admin_key_is_created_once_and_survives_a_restart() {
    let mut server = TestServer::start().await;
    let key_file = server.dir.path().join("admin.key");
    let written = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(written.trim(), server.admin_key);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    server.stop().await;
    let config = coordinator::config::Config::for_tests(server.dir.path().to_path_buf());
    let running = coordinator::server::start(config).await.unwrap();
    assert!(
        running.admin_key.is_none(),
        "a second start makes no new admin"
    );
    let answer = server
        .client
        .get(format!("{}/api/v1/user", running.http_url()))
        .header("x-api-key", &server.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    running.stop().await;
}

#[tokio::test]
async fn ticket_fields_in_a_body_reach_no_handler() {
    let server = TestServer::start().await;
    let (alice, _) = server.customer("alice").await;
    let login = server
        .call(
            "POST",
            "/api/v1/ticket",
            None,
            Some(json!({"username": "alice", "password": "secret-password"})),
        )
        .await;
    assert_eq!(login.status, 201, "{:?}", login.body);
    let ticket = login.body["ticket"].as_str().unwrap().to_string();
    let client = &server.client;
    let change = client
        .put(format!("{}/api/v1/user/{alice}", server.url))
        .json(&json!({"userid": alice, "ticket": ticket, "email": "alice@example.org"}))
        .send()
        .await
        .unwrap();
    let status = change.status();
    let body: serde_json::Value = change.json().await.unwrap();
    assert_eq!(status, 200, "PUT /user with ticket fields: {body}");
    assert_eq!(body["user"]["email"], "alice@example.org");
    let key = client
        .post(format!("{}/api/v1/apikey", server.url))
        .json(&json!({"userid": alice, "ticket": ticket, "name": "from the panel"}))
        .send()
        .await
        .unwrap();
    let status = key.status();
    let body: serde_json::Value = key.json().await.unwrap();
    assert_eq!(status, 201, "POST /apikey with ticket fields: {body}");
    assert_eq!(body["apikey"]["name"], "from the panel");
    assert_eq!(body["apikey"]["user"], alice.as_str());
}
