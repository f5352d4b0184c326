//! Agent work through the API: a coordinator in-process, one instance owned by a customer, and
//! a real agent (in-process, over real QUIC on loopback) enrolled for it with a durable task
//! store and the handlers a test chooses.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use coordinator::store::Table;
use coordinator::store::records::InstanceRecord;
use serde_json::Value;

use crate::coordinator::{Answer, TestServer};

pub const INSTANCE: u32 = 101;

pub struct Setup {
    pub server: TestServer,
    pub user: String,
    pub key: String,
    pub state: tempfile::TempDir,
    pub agent: Option<agent::AgentHandle>,
}

/// Starts the coordinator, creates a customer owning instance 101, enrolls an agent for it and
/// starts the agent with `handlers`.
pub async fn setup(handlers: agent::Handlers) -> Setup {
    setup_with(handlers, |_| {}).await
}

pub async fn setup_with(
    handlers: agent::Handlers,
    adjust: impl FnOnce(&mut coordinator::config::Config),
) -> Setup {
    let server = TestServer::start_with(adjust).await;
    let (user, key) = server.customer("carol").await;
    let mut record = crate::coordinator::instance(INSTANCE);
    record.user = user.clone();
    server
        .app()
        .store
        .put(Table::Instances, &InstanceRecord::key(INSTANCE), &record)
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let offer = server
        .app()
        .channel
        .issue_enrollment(INSTANCE, "admin")
        .unwrap();
    agent::enroll(agent::EnrollOptions::new(offer.token, state.path()))
        .await
        .expect("enrollment succeeds");
    let mut setup = Setup {
        server,
        user,
        key,
        state,
        agent: None,
    };
    setup.start_agent(handlers).await;
    setup
}

impl Setup {
    /// Starts the agent (again) on the same state directory and waits until the coordinator
    /// sees it connected.
    pub async fn start_agent(&mut self, handlers: agent::Handlers) {
        let finished = agent::DiskFinishedTasks::open(self.state.path().join("tasks"), 100)
            .expect("the task store opens");
        let mut options = crate::agent::run_options(self.state.path());
        // A connection whose close packet is lost (UDP under load) is noticed in seconds.
        options.transport.idle_timeout = Duration::from_secs(3);
        options.transport.keep_alive = Duration::from_millis(500);
        let handle = agent::spawn(options, handlers, Arc::new(finished)).expect("the agent starts");
        self.agent = Some(handle);
        self.wait_connected(true).await;
    }

    pub async fn stop_agent(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.stop().await;
        }
        self.wait_connected(false).await;
    }

    /// Waits until the coordinator sees the agent connected (or not, when `connected` is false).
    pub async fn wait_connected(&self, connected: bool) {
        crate::coordinator::wait_connected(&self.server.app().channel, INSTANCE, connected).await;
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// A call as the customer.
    pub async fn customer(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.server.call(method, path, Some(&self.key), body).await
    }

    /// Waits until task `id` ends and returns it with its log lines.
    pub async fn ended(&self, id: &str) -> Value {
        crate::wait::until(
            &format!("task {id} ending"),
            Duration::from_secs(120),
            Duration::from_millis(50),
            || async {
                let answer = self
                    .server
                    .admin("GET", &format!("/api/v1/task/{id}"), None)
                    .await;
                assert_eq!(answer.status, 200, "{:?}", answer.body);
                let state = answer.body["task"]["state"].as_str().unwrap_or("");
                if ["succeeded", "failed", "cancelled", "expired"].contains(&state) {
                    Ok(answer.body)
                } else {
                    Err(answer.body)
                }
            },
        )
        .await
    }

    /// Submits through the API as the customer and waits for the task's end.
    pub async fn task(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let answer = self.customer(method, path, body).await;
        assert!(
            answer.status == 202 || answer.status == 200,
            "{method} {path}: {} {:?}",
            answer.status,
            answer.body
        );
        let id = answer.body["task"]["id"]
            .as_str()
            .expect("a task")
            .to_string();
        self.ended(&id).await
    }

    /// How many tasks exist.
    pub async fn task_count(&self) -> u64 {
        let answer = self.server.admin("GET", "/api/v1/task?limit=1", None).await;
        answer.body["total"].as_u64().expect("a total")
    }
}

/// The log lines of a task body from [`Setup::ended`].
pub fn log_lines(task: &Value) -> Vec<String> {
    task["log"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|line| {
                    line.get("line")
                        .and_then(Value::as_str)
                        .or_else(|| line.as_str())
                        .unwrap_or("")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}
