//! A coordinator started in-process on `127.0.0.1:0` in its own temporary directory, with the
//! first admin's key and an HTTP client; instances written straight into its store; waits for
//! an agent's connection and a task's state.

use std::time::Duration;

use coordinator::config::Config;
use coordinator::server::{self, Running};
use coordinator::store::Table;
use coordinator::store::records::InstanceRecord;
use serde_json::{Value, json};

/// A ready instance `id` of `customer-1` on node `pve1`, as a create through Proxmox leaves it.
pub fn instance(id: u32) -> InstanceRecord {
    InstanceRecord {
        id,
        user: "customer-1".into(),
        node: "pve1".into(),
        hostname: format!("ct{id}"),
        template: "debian-12".into(),
        cpu: 1,
        memory: 512,
        swap: 0,
        disk: 4,
        state: "ready".into(),
        suspended: false,
        created_at: "2025-01-01T00:00:00Z".into(),
        updated_at: "2025-01-01T00:00:00Z".into(),
    }
}

/// Starts a coordinator with `config` and the ready instances `instances` (see [`instance`]).
pub async fn start(config: Config, instances: &[u32]) -> Running {
    let running = coordinator::server::start(config)
        .await
        .expect("the coordinator starts");
    for id in instances {
        running
            .app
            .store
            .put(Table::Instances, &InstanceRecord::key(*id), &instance(*id))
            .unwrap();
    }
    running
}

/// Waits (at most 30 s) until the coordinator sees the agent of `instance` connected, or
/// disconnected when `connected` is false.
pub async fn wait_connected(
    channel: &coordinator::channel::Channel,
    instance: u32,
    connected: bool,
) {
    crate::wait::until(
        &format!("the agent's connection becoming {connected}"),
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            if channel.is_connected(instance) == connected {
                Ok(())
            } else {
                Err(!connected)
            }
        },
    )
    .await
}

/// Waits (at most `timeout`) until task `id` is in one of `states`, reading the store directly.
pub async fn wait_task_state(
    app: &coordinator::App,
    id: &str,
    states: &[&str],
    timeout: Duration,
) -> coordinator::tasks::Task {
    crate::wait::until(
        &format!("task {id} reaching {states:?}"),
        timeout,
        Duration::from_millis(50),
        || async {
            let task = app.tasks.get(id).unwrap().unwrap();
            if states.contains(&task.state.as_str()) {
                Ok(task)
            } else {
                Err(task)
            }
        },
    )
    .await
}

/// A running coordinator and what a test needs to talk to it.
pub struct TestServer {
    pub running: Option<Running>,
    pub url: String,
    pub admin_key: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
}

/// An answer: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl TestServer {
    /// Starts a coordinator with the test configuration, changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = Config::for_tests(dir.path().to_path_buf());
        adjust(&mut config);
        let running = server::start(config).await.expect("coordinator starts");
        let admin_key = running
            .admin_key
            .clone()
            .expect("first start creates the admin key");
        TestServer {
            url: running.http_url(),
            running: Some(running),
            admin_key,
            client: reqwest::Client::new(),
            dir,
        }
    }

    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub fn app(&self) -> &std::sync::Arc<coordinator::App> {
        &self.running.as_ref().expect("running").app
    }

    /// Sends a request with an optional API key and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client.request(method, format!("{}{path}", self.url));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
        }
    }

    /// As the first admin.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.call(method, path, Some(&self.admin_key.clone()), body)
            .await
    }

    /// Creates a customer and an API key for them; returns (user id, key).
    pub async fn customer(&self, username: &str) -> (String, String) {
        let created = self
            .admin(
                "POST",
                "/api/v1/user",
                Some(json!({"username": username, "password": "secret-password"})),
            )
            .await;
        assert_eq!(created.status, 201, "{:?}", created.body);
        let id = created.body["user"]["id"]
            .as_str()
            .expect("user id")
            .to_string();
        let key = self
            .admin(
                "POST",
                "/api/v1/apikey",
                Some(json!({"user": id, "name": "test"})),
            )
            .await;
        assert_eq!(key.status, 201, "{:?}", key.body);
        (id, key.body["key"].as_str().expect("key").to_string())
    }

    /// Stops the coordinator and keeps the data directory (for restart tests).
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}
