//! The HTTP client of one Proxmox endpoint: API-token authentication, verified TLS, a timeout on
//! every call, bounded retries of calls that are safe to repeat, task polling with a deadline,
//! and the checks that make a non-idempotent call safe to repeat when its outcome is unknown.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{ErrorClass, ProxmoxError, error_from_answer};
use super::retry::{CallKind, Decision, RetryPolicy};
use super::tls::{self, Trust};
use super::types::{
    ContainerStatus, NodeSummary, Object, StorageSummary, StorageVolume, TaskStatus, Version,
    VncTicket, lenient_u64,
};
use super::upid::Upid;

/// Timeouts and retry settings of a client.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    /// Opening a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// One whole request, answer included.
    pub request_timeout: Duration,
    /// Retries of refused or undelivered calls.
    pub retry: RetryPolicy,
    /// The first wait between two polls of a task; it doubles up to `poll_max`.
    pub poll_first: Duration,
    pub poll_max: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            poll_first: Duration::from_millis(50),
            poll_max: Duration::from_secs(1),
        }
    }
}

/// Where and how to reach a Proxmox API.
#[derive(Clone)]
pub struct Endpoint {
    /// E.g. `https://pve1.example:8006/api2/json`.
    pub base_url: String,
    /// `USER@REALM!TOKENID`.
    pub token_id: String,
    /// The token's secret (a UUID); never logged.
    pub token_secret: String,
    /// How the certificate is trusted (ignored for `http://` URLs).
    pub trust: Trust,
    pub settings: ClientSettings,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Endpoint")
            .field("base_url", &self.base_url)
            .field("token_id", &self.token_id)
            .field("token_secret", &"<redacted>")
            .field("trust", &self.trust)
            .finish()
    }
}

/// A container power action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Start,
    Stop,
    Shutdown,
    Reboot,
    Suspend,
    Resume,
}

impl PowerAction {
    /// The path segment under `status/`.
    pub fn path(self) -> &'static str {
        match self {
            PowerAction::Start => "start",
            PowerAction::Stop => "stop",
            PowerAction::Shutdown => "shutdown",
            PowerAction::Reboot => "reboot",
            PowerAction::Suspend => "suspend",
            PowerAction::Resume => "resume",
        }
    }

    /// The task type Proxmox starts for it.
    pub fn task_type(self) -> &'static str {
        match self {
            PowerAction::Start => "vzstart",
            PowerAction::Stop => "vzstop",
            PowerAction::Shutdown => "vzshutdown",
            PowerAction::Reboot => "vzreboot",
            PowerAction::Suspend => "vzsuspend",
            PowerAction::Resume => "vzresume",
        }
    }

    /// The `status` the container has once the action is done, when the action has one.
    pub fn goal(self) -> Option<&'static str> {
        match self {
            PowerAction::Start => Some("running"),
            PowerAction::Stop | PowerAction::Shutdown => Some("stopped"),
            _ => None,
        }
    }
}

/// The outcome of a power action.
#[derive(Debug, Clone, PartialEq)]
pub enum PowerOutcome {
    /// Proxmox started this task.
    Task(Upid),
    /// The container was already in the action's goal state; nothing to wait for.
    AlreadyDone,
}

/// The parameters of a new container.
#[derive(Clone, Default, PartialEq)]
pub struct CreateContainer {
    pub vmid: u32,
    /// A template volume id, e.g. `local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst`.
    pub ostemplate: String,
    pub hostname: String,
    /// Storage of the root volume.
    pub storage: String,
    /// Root volume size in GiB.
    pub disk_gib: u64,
    /// MiB.
    pub memory: u64,
    /// MiB.
    pub swap: u64,
    pub cores: u32,
    /// `net0` property string.
    pub net0: Option<String>,
    /// Root password; never logged.
    pub password: Option<String>,
    /// Newline-separated OpenSSH public keys.
    pub ssh_public_keys: Option<String>,
    pub ostype: Option<String>,
    pub unprivileged: bool,
    pub start: bool,
    /// `a;b` tags.
    pub tags: Option<String>,
    pub description: Option<String>,
}

impl fmt::Debug for CreateContainer {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CreateContainer")
            .field("vmid", &self.vmid)
            .field("ostemplate", &self.ostemplate)
            .field("hostname", &self.hostname)
            .field("storage", &self.storage)
            .field("disk_gib", &self.disk_gib)
            .field("memory", &self.memory)
            .field("swap", &self.swap)
            .field("cores", &self.cores)
            .field("net0", &self.net0)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl CreateContainer {
    fn parameters(&self) -> Vec<(&'static str, String)> {
        let mut parameters = vec![
            ("vmid", self.vmid.to_string()),
            ("ostemplate", self.ostemplate.clone()),
            ("hostname", self.hostname.clone()),
            ("storage", self.storage.clone()),
            (
                "rootfs",
                super::property::new_rootfs(&self.storage, self.disk_gib),
            ),
            ("memory", self.memory.to_string()),
            ("swap", self.swap.to_string()),
            ("cores", self.cores.to_string()),
            ("unprivileged", bool_text(self.unprivileged)),
            ("start", bool_text(self.start)),
        ];
        let optional = [
            ("net0", &self.net0),
            ("password", &self.password),
            ("ssh-public-keys", &self.ssh_public_keys),
            ("ostype", &self.ostype),
            ("tags", &self.tags),
            ("description", &self.description),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                parameters.push((name, value.clone()));
            }
        }
        parameters
    }
}

fn bool_text(value: bool) -> String {
    if value { "1" } else { "0" }.to_string()
}

/// Reads a UPID that Proxmox sent; an unreadable one is an answer that cannot be decoded.
fn parse_upid(text: &str) -> Result<Upid, ProxmoxError> {
    Upid::parse(text).map_err(|error| ProxmoxError::Decode {
        message: error.to_string(),
    })
}

/// Percent-encodes one path segment (UPIDs, storage names, template names).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@!".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn unix_now() -> i64 {
    crate::clock::system_now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

/// How far apart the clocks of the coordinator and of Proxmox may be when matching tasks.
const CLOCK_SLACK_SECONDS: i64 = 120;

/// A client of one Proxmox endpoint. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    token_id: String,
    authorization: http::HeaderValue,
    settings: ClientSettings,
    /// Requests sent by this client and its clones (each retry counts).
    requests: Arc<AtomicU64>,
    /// Whether the last request got an answer from the node.
    reached: Arc<AtomicBool>,
}

impl fmt::Debug for Client {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("token_id", &self.token_id)
            .finish_non_exhaustive()
    }
}

fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn is_tls_failure(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        source = cause.source();
    }
    // The TLS error may be boxed in a way that hides its type; its text still names it.
    let text = describe(error);
    text.contains("invalid peer certificate") || text.contains("certificate verify failed")
}

impl Client {
    /// Builds a client; checks the URL, the token's shape and the trust setting, not the network.
    pub fn new(endpoint: &Endpoint) -> Result<Client, ProxmoxError> {
        let config_error = |message: String| ProxmoxError::Config { message };
        let base_url = endpoint.base_url.trim_end_matches('/').to_string();
        let https = if base_url.starts_with("https://") {
            true
        } else if base_url.starts_with("http://") {
            false
        } else {
            return Err(config_error(format!(
                "the URL {base_url:?} is neither http:// nor https://"
            )));
        };
        let token_valid = endpoint
            .token_id
            .split_once('!')
            .is_some_and(|(user, token)| user.contains('@') && !token.is_empty())
            && !endpoint.token_id.contains(['=', ' ', '\n']);
        if !token_valid {
            return Err(config_error(
                "the token id must look like USER@REALM!TOKENID".into(),
            ));
        }
        if endpoint.token_secret.is_empty()
            || endpoint
                .token_secret
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(config_error(
                "the token secret is empty or has blanks".into(),
            ));
        }
        let mut authorization = http::HeaderValue::from_str(&format!(
            "PVEAPIToken={}={}",
            endpoint.token_id, endpoint.token_secret
        ))
        .map_err(|_| config_error("the token has characters a header cannot carry".into()))?;
        authorization.set_sensitive(true);
        let mut builder = reqwest::Client::builder()
            .connect_timeout(endpoint.settings.connect_timeout)
            .timeout(endpoint.settings.request_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if https {
            builder = builder.tls_backend_preconfigured(tls::client_config(&endpoint.trust)?);
        }
        let http = builder
            .build()
            .map_err(|error| config_error(describe(&error)))?;
        Ok(Client {
            http,
            base_url,
            token_id: endpoint.token_id.clone(),
            authorization,
            settings: endpoint.settings.clone(),
            requests: Arc::new(AtomicU64::new(0)),
            reached: Arc::new(AtomicBool::new(true)),
        })
    }

    /// How many requests this client and its clones have sent, retries included.
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The API base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The settings the client runs with.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    fn transport_error(&self, error: reqwest::Error) -> ProxmoxError {
        if is_tls_failure(&error) {
            ProxmoxError::Config {
                message: format!("TLS verification failed: {}", describe(&error)),
            }
        } else if error.is_timeout() {
            ProxmoxError::Timeout {
                after: self.settings.request_timeout,
            }
        } else if error.is_connect() {
            ProxmoxError::Connect {
                message: describe(&error),
            }
        } else {
            ProxmoxError::Transport {
                message: describe(&error),
            }
        }
    }

    /// One request, no retries. Returns the `data` of the answer, and notes whether the node
    /// was reached.
    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        parameters: &[(&str, String)],
    ) -> Result<Value, ProxmoxError> {
        let result = self.send_unrecorded(method, path, parameters).await;
        let reached = match &result {
            Ok(_) => true,
            Err(error) => !matches!(
                error.class(),
                ErrorClass::Unreachable | ErrorClass::Uncertain
            ),
        };
        self.reached.store(reached, Ordering::Relaxed);
        result
    }

    /// False when the last request did not get an answer from the node itself (it could not be
    /// reached, or the outcome is unknown); true before the first request. Lets callers trust
    /// what they read from a node a moment ago only while it answers.
    pub fn last_call_reached(&self) -> bool {
        self.reached.load(Ordering::Relaxed)
    }

    async fn send_unrecorded(
        &self,
        method: &Method,
        path: &str,
        parameters: &[(&str, String)],
    ) -> Result<Value, ProxmoxError> {
        let mut url = format!("{}{}", self.base_url, path);
        let encoded =
            serde_urlencoded::to_string(parameters).map_err(|error| ProxmoxError::Decode {
                message: error.to_string(),
            })?;
        let in_query = *method == Method::GET || *method == Method::DELETE;
        if in_query && !encoded.is_empty() {
            url.push('?');
            url.push_str(&encoded);
        }
        let mut request = self
            .http
            .request(method.clone(), &url)
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(http::header::ACCEPT, "application/json");
        if !in_query {
            request = request
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(encoded);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = request
            .send()
            .await
            .map_err(|error| self.transport_error(error))?;
        let status = response.status().as_u16();
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .and_then(|reason| std::str::from_utf8(reason.as_bytes()).ok())
            .map(str::to_string);
        let body = response
            .bytes()
            .await
            .map_err(|error| self.transport_error(error))?;
        if !(200..300).contains(&status) {
            return Err(error_from_answer(status, reason.as_deref(), &body));
        }
        let value: Value = serde_json::from_slice(&body).map_err(|error| ProxmoxError::Decode {
            message: format!("{method} {path}: {error}"),
        })?;
        Ok(value.get("data").cloned().unwrap_or(Value::Null))
    }

    /// A request with the retry policy applied according to `kind`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        parameters: &[(&str, String)],
        kind: CallKind,
    ) -> Result<Value, ProxmoxError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send_once(&method, path, parameters).await {
                Ok(value) => return Ok(value),
                Err(error) => {
                    let decision = self.settings.retry.decide(
                        attempt,
                        error.class(),
                        kind,
                        rand::random::<f64>(),
                    );
                    match decision {
                        Decision::Retry(delay) => {
                            tracing::debug!(%method, path, attempt, %error, ?delay, "retrying a Proxmox call");
                            tokio::time::sleep(delay).await;
                        }
                        Decision::GiveUp => return Err(error),
                    }
                }
            }
        }
    }

    /// A GET decoded into `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        parameters: &[(&str, String)],
    ) -> Result<T, ProxmoxError> {
        let value = self
            .call(Method::GET, path, parameters, CallKind::Idempotent)
            .await?;
        serde_json::from_value(value).map_err(|error| ProxmoxError::Decode {
            message: format!("GET {path}: {error}"),
        })
    }

    fn upid_of(value: Value, what: &str) -> Result<Upid, ProxmoxError> {
        let text = value.as_str().ok_or_else(|| ProxmoxError::Decode {
            message: format!("{what} answered {value} instead of a task id"),
        })?;
        parse_upid(text)
    }

    // --- Reads -------------------------------------------------------------------------------

    /// `GET /version`.
    pub async fn version(&self) -> Result<Version, ProxmoxError> {
        self.get("/version", &[]).await
    }

    /// `GET /nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeSummary>, ProxmoxError> {
        self.get("/nodes", &[]).await
    }

    /// `GET /nodes/{node}/status`, as sent.
    pub async fn node_status(&self, node: &str) -> Result<Object, ProxmoxError> {
        self.get(&format!("/nodes/{}/status", segment(node)), &[])
            .await
    }

    /// `GET /nodes/{node}/lxc`.
    pub async fn containers(&self, node: &str) -> Result<Vec<ContainerStatus>, ProxmoxError> {
        self.get(&format!("/nodes/{}/lxc", segment(node)), &[])
            .await
    }

    /// `GET /nodes/{node}/lxc/{vmid}/status/current`.
    pub async fn container_status(
        &self,
        node: &str,
        vmid: u32,
    ) -> Result<ContainerStatus, ProxmoxError> {
        self.get(
            &format!("/nodes/{}/lxc/{vmid}/status/current", segment(node)),
            &[],
        )
        .await
    }

    /// `GET /nodes/{node}/lxc/{vmid}/config`.
    pub async fn container_config(&self, node: &str, vmid: u32) -> Result<Object, ProxmoxError> {
        self.get(&format!("/nodes/{}/lxc/{vmid}/config", segment(node)), &[])
            .await
    }

    /// Whether the container exists on the node (`Ok(false)` only when Proxmox says so).
    pub async fn container_exists(&self, node: &str, vmid: u32) -> Result<bool, ProxmoxError> {
        Ok(self
            .containers(node)
            .await?
            .iter()
            .any(|container| container.vmid == vmid))
    }

    /// `GET /cluster/nextid` (optionally asserting that `wanted` is free). Proxmox sends the id
    /// as a string; both forms are accepted. Nothing is reserved.
    pub async fn next_id(&self, wanted: Option<u32>) -> Result<u32, ProxmoxError> {
        let parameters: Vec<(&str, String)> = wanted
            .map(|vmid| vec![("vmid", vmid.to_string())])
            .unwrap_or_default();
        let value = self
            .call(
                Method::GET,
                "/cluster/nextid",
                &parameters,
                CallKind::Idempotent,
            )
            .await?;
        lenient_u64(&value)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| ProxmoxError::Decode {
                message: format!("nextid answered {value}"),
            })
    }

    /// `GET /cluster/resources`, optionally of one type (`vm`, `storage`, `node`).
    pub async fn cluster_resources(&self, kind: Option<&str>) -> Result<Vec<Object>, ProxmoxError> {
        let parameters: Vec<(&str, String)> = kind
            .map(|kind| vec![("type", kind.to_string())])
            .unwrap_or_default();
        self.get("/cluster/resources", &parameters).await
    }

    /// `GET /nodes/{node}/storage`, optionally only those holding `content`.
    pub async fn storages(
        &self,
        node: &str,
        content: Option<&str>,
    ) -> Result<Vec<StorageSummary>, ProxmoxError> {
        let parameters: Vec<(&str, String)> = content
            .map(|content| vec![("content", content.to_string())])
            .unwrap_or_default();
        self.get(&format!("/nodes/{}/storage", segment(node)), &parameters)
            .await
    }

    /// `GET /nodes/{node}/storage/{storage}/content`, optionally of one content type.
    pub async fn storage_content(
        &self,
        node: &str,
        storage: &str,
        content: Option<&str>,
    ) -> Result<Vec<StorageVolume>, ProxmoxError> {
        let parameters: Vec<(&str, String)> = content
            .map(|content| vec![("content", content.to_string())])
            .unwrap_or_default();
        self.get(
            &format!(
                "/nodes/{}/storage/{}/content",
                segment(node),
                segment(storage)
            ),
            &parameters,
        )
        .await
    }

    /// `GET /nodes/{node}/aplinfo`: the templates Proxmox can download.
    pub async fn appliances(&self, node: &str) -> Result<Vec<Object>, ProxmoxError> {
        self.get(&format!("/nodes/{}/aplinfo", segment(node)), &[])
            .await
    }

    /// `GET .../{vmid}/rrddata` for `hour|day|week|month|year`.
    pub async fn rrd_data(
        &self,
        node: &str,
        vmid: u32,
        timeframe: &str,
    ) -> Result<Vec<Object>, ProxmoxError> {
        self.get(
            &format!("/nodes/{}/lxc/{vmid}/rrddata", segment(node)),
            &[
                ("timeframe", timeframe.to_string()),
                ("cf", "AVERAGE".into()),
            ],
        )
        .await
    }

    /// `POST .../{vmid}/vncproxy` with `websocket=1` (for noVNC).
    pub async fn vnc_proxy(&self, node: &str, vmid: u32) -> Result<VncTicket, ProxmoxError> {
        let value = self
            .call(
                Method::POST,
                &format!("/nodes/{}/lxc/{vmid}/vncproxy", segment(node)),
                &[("websocket", "1".into())],
                CallKind::Idempotent,
            )
            .await?;
        serde_json::from_value(value).map_err(|error| ProxmoxError::Decode {
            message: format!("vncproxy: {error}"),
        })
    }

    // --- Tasks -------------------------------------------------------------------------------

    /// `GET /nodes/{node}/tasks/{upid}/status`.
    pub async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, ProxmoxError> {
        self.get(
            &format!(
                "/nodes/{}/tasks/{}/status",
                segment(&upid.node),
                segment(upid.as_str())
            ),
            &[],
        )
        .await
    }

    /// `GET /nodes/{node}/tasks` for one container and task type, newest first. Each entry is
    /// known by its UPID; an entry whose UPID is unreadable is left out.
    pub async fn tasks(
        &self,
        node: &str,
        vmid: u32,
        kind: &str,
    ) -> Result<Vec<Upid>, ProxmoxError> {
        let listed: Vec<TaskStatus> = self
            .get(
                &format!("/nodes/{}/tasks", segment(node)),
                &[
                    ("vmid", vmid.to_string()),
                    ("typefilter", kind.to_string()),
                    ("source", "all".into()),
                    ("limit", "50".into()),
                ],
            )
            .await?;
        let mut tasks: Vec<Upid> = listed
            .iter()
            .filter_map(|task| match parse_upid(&task.upid) {
                Ok(upid) => Some(upid),
                Err(error) => {
                    tracing::warn!(%error, "a Proxmox task list entry is left out");
                    None
                }
            })
            .filter(|upid| upid.kind == kind && upid.id == vmid.to_string())
            .collect();
        tasks.sort_by_key(|upid| std::cmp::Reverse(upid.starttime));
        Ok(tasks)
    }

    /// The newest task of this type on this container that this token started since `since`
    /// (unix time, Proxmox's clock, with slack for clock differences).
    pub async fn find_own_task(
        &self,
        node: &str,
        vmid: u32,
        kind: &str,
        since: i64,
    ) -> Result<Option<Upid>, ProxmoxError> {
        let tasks = self.tasks(node, vmid, kind).await?;
        Ok(tasks.into_iter().find(|upid| {
            upid.user == self.token_id && upid.starttime >= since - CLOCK_SLACK_SECONDS
        }))
    }

    /// `DELETE /nodes/{node}/tasks/{upid}`: stops a running task.
    pub async fn stop_task(&self, upid: &Upid) -> Result<(), ProxmoxError> {
        self.call(
            Method::DELETE,
            &format!(
                "/nodes/{}/tasks/{}",
                segment(&upid.node),
                segment(upid.as_str())
            ),
            &[],
            CallKind::Idempotent,
        )
        .await
        .map(|_| ())
    }

    /// Polls the task until it stops or `deadline` passes. `Ok` only when it succeeded (`OK`
    /// or `WARNINGS: n`); a failed task gives [`ProxmoxError::Task`] with its exit status, a
    /// task still running at the deadline [`ProxmoxError::TaskDeadline`] (it may still run).
    /// Polls that fail for a passing reason are repeated until the deadline.
    pub async fn wait_task(
        &self,
        upid: &Upid,
        deadline: Duration,
    ) -> Result<TaskStatus, ProxmoxError> {
        let until = Instant::now() + deadline;
        let mut interval = self.settings.poll_first;
        loop {
            let last_error = match self.task_status(upid).await {
                Ok(status) => match status.succeeded() {
                    Some(true) => return Ok(status),
                    Some(false) => {
                        return Err(ProxmoxError::Task {
                            upid: upid.to_string(),
                            exitstatus: status
                                .exitstatus
                                .unwrap_or_else(|| "no exit status".into()),
                        });
                    }
                    None => None,
                },
                Err(error)
                    if matches!(
                        error.class(),
                        ErrorClass::Unreachable | ErrorClass::Uncertain
                    ) =>
                {
                    Some(error)
                }
                Err(error) => return Err(error),
            };
            let now = Instant::now();
            if now >= until {
                return Err(last_error.unwrap_or(ProxmoxError::TaskDeadline {
                    upid: upid.to_string(),
                    after: deadline,
                }));
            }
            tokio::time::sleep(interval.min(until - now)).await;
            interval = (interval * 2).min(self.settings.poll_max);
        }
    }

    // --- Container lifecycle -----------------------------------------------------------------

    /// `POST /nodes/{node}/lxc`: creates a container and returns its `vzcreate` task.
    ///
    /// Proxmox reserves the VMID synchronously, so a taken id fails at once with a 500 of class
    /// [`ErrorClass::AlreadyExists`]. When the outcome is unknown (timeout, broken connection),
    /// the node's task list tells whether this token's create went through before it is tried
    /// again; a container that exists without such a task belongs to someone else.
    pub async fn create_container(
        &self,
        node: &str,
        spec: &CreateContainer,
    ) -> Result<Upid, ProxmoxError> {
        let path = format!("/nodes/{}/lxc", segment(node));
        let parameters = spec.parameters();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = unix_now();
            let error = match self
                .call(Method::POST, &path, &parameters, CallKind::NonIdempotent)
                .await
            {
                Ok(value) => return Self::upid_of(value, "create"),
                Err(error) if error.outcome_unknown() => error,
                Err(error) => return Err(error),
            };
            tracing::warn!(node, vmid = spec.vmid, %error, "a create may or may not have reached Proxmox; checking");
            match self
                .reconcile_create(node, spec.vmid, started, &error)
                .await?
            {
                Some(upid) => return Ok(upid),
                None if attempt < self.settings.retry.attempts => {
                    tokio::time::sleep(self.settings.retry.delay(attempt, rand::random())).await;
                }
                None => return Err(error),
            }
        }
    }

    /// After a create with an unknown outcome: `Some(task)` if it went through, `None` if it
    /// certainly did not, the original error if that cannot be told now.
    async fn reconcile_create(
        &self,
        node: &str,
        vmid: u32,
        started: i64,
        original: &ProxmoxError,
    ) -> Result<Option<Upid>, ProxmoxError> {
        for check in 0..2 {
            let task = self
                .find_own_task(node, vmid, "vzcreate", started)
                .await
                .map_err(|_| original.clone())?;
            if task.is_some() {
                return Ok(task);
            }
            let exists = self
                .container_exists(node, vmid)
                .await
                .map_err(|_| original.clone())?;
            if !exists {
                return Ok(None);
            }
            if check == 0 {
                // The config is written just before the task starts: look once more.
                tokio::time::sleep(self.settings.poll_first).await;
            }
        }
        Err(ProxmoxError::Api {
            status: 500,
            message: format!(
                "unable to create CT {vmid} - CT {vmid} already exists on node '{node}'"
            ),
            errors: Default::default(),
        })
    }

    /// `PUT /nodes/{node}/lxc/{vmid}/config` (synchronous). `delete` lists keys to remove.
    pub async fn update_config(
        &self,
        node: &str,
        vmid: u32,
        changes: &[(&str, String)],
        delete: &[&str],
    ) -> Result<(), ProxmoxError> {
        let mut parameters: Vec<(&str, String)> = changes.to_vec();
        if !delete.is_empty() {
            parameters.push(("delete", delete.join(",")));
        }
        self.call(
            Method::PUT,
            &format!("/nodes/{}/lxc/{vmid}/config", segment(node)),
            &parameters,
            CallKind::Idempotent,
        )
        .await
        .map(|_| ())
    }

    /// `PUT .../{vmid}/resize` to an absolute size in GiB. Returns the task when Proxmox
    /// starts one (newer releases), `None` when it resized synchronously.
    pub async fn resize_disk(
        &self,
        node: &str,
        vmid: u32,
        disk: &str,
        gib: u64,
    ) -> Result<Option<Upid>, ProxmoxError> {
        let value = self
            .call(
                Method::PUT,
                &format!("/nodes/{}/lxc/{vmid}/resize", segment(node)),
                &[("disk", disk.to_string()), ("size", format!("{gib}G"))],
                CallKind::Idempotent,
            )
            .await?;
        match value {
            Value::Null => Ok(None),
            other => Self::upid_of(other, "resize").map(Some),
        }
    }

    /// `POST .../{vmid}/status/{action}`. An action whose goal state already holds (`start`
    /// of a running container, `stop`/`shutdown` of a stopped one) is [`PowerOutcome::AlreadyDone`].
    /// An unknown outcome is settled through the task list and the container's status.
    pub async fn power(
        &self,
        node: &str,
        vmid: u32,
        action: PowerAction,
    ) -> Result<PowerOutcome, ProxmoxError> {
        let path = format!(
            "/nodes/{}/lxc/{vmid}/status/{}",
            segment(node),
            action.path()
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = unix_now();
            let error = match self
                .call(Method::POST, &path, &[], CallKind::NonIdempotent)
                .await
            {
                Ok(value) => return Self::upid_of(value, action.path()).map(PowerOutcome::Task),
                Err(error) => error,
            };
            match (error.class(), action) {
                (ErrorClass::AlreadyRunning, PowerAction::Start)
                | (ErrorClass::NotRunning, PowerAction::Stop | PowerAction::Shutdown) => {
                    return Ok(PowerOutcome::AlreadyDone);
                }
                (ErrorClass::Uncertain, _) => {}
                _ => return Err(error),
            }
            if let Ok(Some(upid)) = self
                .find_own_task(node, vmid, action.task_type(), started)
                .await
            {
                return Ok(PowerOutcome::Task(upid));
            }
            if let Some(goal) = action.goal()
                && let Ok(status) = self.container_status(node, vmid).await
                && status.status == goal
            {
                return Ok(PowerOutcome::AlreadyDone);
            }
            if attempt >= self.settings.retry.attempts {
                return Err(error);
            }
            tokio::time::sleep(self.settings.retry.delay(attempt, rand::random())).await;
        }
    }

    /// `DELETE /nodes/{node}/lxc/{vmid}` with `purge` and `destroy-unreferenced-disks`.
    /// `Ok(None)` when the container does not exist (any more).
    pub async fn destroy_container(
        &self,
        node: &str,
        vmid: u32,
    ) -> Result<Option<Upid>, ProxmoxError> {
        let path = format!("/nodes/{}/lxc/{vmid}", segment(node));
        let parameters = [
            ("purge", "1".to_string()),
            ("destroy-unreferenced-disks", "1".to_string()),
        ];
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = unix_now();
            let error = match self
                .call(Method::DELETE, &path, &parameters, CallKind::NonIdempotent)
                .await
            {
                Ok(value) => return Self::upid_of(value, "destroy").map(Some),
                Err(error) if error.class() == ErrorClass::NotFound => return Ok(None),
                Err(error) if error.outcome_unknown() => error,
                Err(error) => return Err(error),
            };
            if let Ok(Some(upid)) = self.find_own_task(node, vmid, "vzdestroy", started).await {
                return Ok(Some(upid));
            }
            if let Ok(false) = self.container_exists(node, vmid).await {
                return Ok(None);
            }
            if attempt >= self.settings.retry.attempts {
                return Err(error);
            }
            tokio::time::sleep(self.settings.retry.delay(attempt, rand::random())).await;
        }
    }

    /// `POST /nodes/{node}/aplinfo`: downloads an appliance template to `storage`.
    pub async fn download_appliance(
        &self,
        node: &str,
        storage: &str,
        template: &str,
    ) -> Result<Upid, ProxmoxError> {
        let value = self
            .call(
                Method::POST,
                &format!("/nodes/{}/aplinfo", segment(node)),
                &[
                    ("storage", storage.to_string()),
                    ("template", template.to_string()),
                ],
                CallKind::NonIdempotent,
            )
            .await?;
        Self::upid_of(value, "download")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(base_url: &str, token_id: &str, secret: &str) -> Endpoint {
        Endpoint {
            base_url: base_url.into(),
            token_id: token_id.into(),
            token_secret: secret.into(),
            trust: Trust::Insecure,
            settings: ClientSettings::default(),
        }
    }

    #[test]
    fn endpoint_settings_are_checked() {
        let cases: &[(&str, &str, &str, Option<&str>)] = &[
            (
                "http://127.0.0.1:8006/api2/json",
                "api@pve!ci",
                "secret",
                None,
            ),
            (
                "https://pve:8006/api2/json/",
                "root@pam!x",
                "0000-1111",
                None,
            ),
            (
                "ftp://pve/api2/json",
                "api@pve!ci",
                "secret",
                Some("neither"),
            ),
            (
                "http://pve/api2/json",
                "api@pve",
                "secret",
                Some("USER@REALM!TOKENID"),
            ),
            (
                "http://pve/api2/json",
                "apipve!ci",
                "secret",
                Some("USER@REALM!TOKENID"),
            ),
            (
                "http://pve/api2/json",
                "api@pve!ci=x",
                "secret",
                Some("USER@REALM!TOKENID"),
            ),
            ("http://pve/api2/json", "api@pve!ci", "", Some("secret")),
            ("http://pve/api2/json", "api@pve!ci", "a b", Some("secret")),
        ];
        for (url, token, secret, problem) in cases {
            let result = Client::new(&endpoint(url, token, secret));
            match problem {
                None => {
                    let client = result.unwrap_or_else(|error| panic!("{url}: {error}"));
                    assert!(!client.base_url().ends_with('/'));
                    assert!(!format!("{client:?}").contains(secret));
                }
                Some(problem) => {
                    let error = result.expect_err(url).to_string();
                    assert!(error.contains(problem), "{url} {token}: {error}");
                }
            }
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let endpoint = endpoint("http://pve/api2/json", "api@pve!ci", "very-secret-value");
        assert!(!format!("{endpoint:?}").contains("very-secret-value"));
        let spec = CreateContainer {
            password: Some("hunter2-password".into()),
            ..CreateContainer::default()
        };
        assert!(!format!("{spec:?}").contains("hunter2-password"));
    }

    #[test]
    fn path_segments_are_encoded() {
        let cases: &[(&str, &str)] = &[
            ("pve1", "pve1"),
            (
                "UPID:pve1:0009E9B0:103F1191:660069E7:vzcreate:101:root@pam!ci:",
                "UPID:pve1:0009E9B0:103F1191:660069E7:vzcreate:101:root@pam!ci:",
            ),
            ("a b/c", "a%20b%2Fc"),
            ("x?y#z", "x%3Fy%23z"),
        ];
        for (text, expected) in cases {
            assert_eq!(segment(text), *expected);
        }
    }

    #[test]
    fn create_parameters_follow_the_api() {
        let spec = CreateContainer {
            vmid: 105,
            ostemplate: "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".into(),
            hostname: "web1".into(),
            storage: "local-lvm".into(),
            disk_gib: 8,
            memory: 1024,
            swap: 512,
            cores: 2,
            net0: Some("name=eth0,bridge=vmbr0,ip=dhcp".into()),
            ssh_public_keys: Some("ssh-ed25519 AAAA a\nssh-ed25519 BBBB b".into()),
            unprivileged: true,
            ..CreateContainer::default()
        };
        let parameters = spec.parameters();
        let get = |name: &str| {
            parameters
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.as_str())
        };
        assert_eq!(get("vmid"), Some("105"));
        assert_eq!(get("rootfs"), Some("local-lvm:8"));
        assert_eq!(get("unprivileged"), Some("1"));
        assert_eq!(get("start"), Some("0"));
        assert_eq!(
            get("ssh-public-keys"),
            Some("ssh-ed25519 AAAA a\nssh-ed25519 BBBB b")
        );
        assert_eq!(get("password"), None);
        let encoded = serde_urlencoded::to_string(&parameters).unwrap();
        assert!(encoded.contains("ssh-public-keys=ssh-ed25519+AAAA+a%0Assh-ed25519"));
    }

    #[test]
    fn power_actions_know_their_tasks_and_goals() {
        let cases = [
            (PowerAction::Start, "start", "vzstart", Some("running")),
            (PowerAction::Stop, "stop", "vzstop", Some("stopped")),
            (
                PowerAction::Shutdown,
                "shutdown",
                "vzshutdown",
                Some("stopped"),
            ),
            (PowerAction::Reboot, "reboot", "vzreboot", None),
            (PowerAction::Suspend, "suspend", "vzsuspend", None),
            (PowerAction::Resume, "resume", "vzresume", None),
        ];
        for (action, path, task, goal) in cases {
            assert_eq!(action.path(), path);
            assert_eq!(action.task_type(), task);
            assert_eq!(action.goal(), goal);
        }
    }
}
