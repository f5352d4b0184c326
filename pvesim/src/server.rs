//! The HTTP(S) layer: accepting connections, authentication, routing, parameter merging and
//! checking, answers shaped like pveproxy's, and the asynchronous task runner.

use shell::sync::MutexExt;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::auth::{Authenticator, Caller};
use crate::backend::Backend;
use crate::faults::{Faults, TaskEffect};
use crate::model::{Action, ApiError, Cluster, GuestKind, task_status_view};
use crate::schema::{Property, parse_boolean, verify};
use crate::upid::Upid;
use crate::{SimConfig, SimError, access, lxc, network, qemu, storage};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// The generated certificate.
pub(crate) struct Certificate {
    pub pem: String,
    pub fingerprint: String,
}

/// State shared by connections and tasks.
pub(crate) struct Shared {
    pub cluster: Arc<Mutex<Cluster>>,
    pub faults: Faults,
    auth: Authenticator,
    config: SimConfig,
    backend: Arc<dyn Backend>,
    cancels: Mutex<HashMap<String, Arc<Notify>>>,
    guest_locks: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
    tasks: Mutex<JoinSet<()>>,
    certificate_pem: Option<String>,
    fingerprint: Option<String>,
    tls: bool,
}

impl Shared {
    fn cluster(&self) -> std::sync::MutexGuard<'_, Cluster> {
        self.cluster.locked()
    }

    fn persist(&self) {
        let Some(path) = &self.config.state_file else {
            return;
        };
        let text = match serde_json::to_string_pretty(&*self.cluster()) {
            Ok(text) => text,
            Err(error) => {
                tracing::warn!("cannot serialise state: {error}");
                return;
            }
        };
        if let Err(error) = shell::write_atomically(path, text.as_bytes(), None) {
            tracing::warn!("cannot save state to {}: {error}", path.display());
        }
    }

    fn guest_lock(&self, vmid: u32) -> Arc<tokio::sync::Mutex<()>> {
        self.guest_locks.locked().entry(vmid).or_default().clone()
    }
}

fn load_state(path: &Path, nodes: usize, now: i64) -> Result<Cluster, SimError> {
    if !path.exists() {
        return Ok(Cluster::new(nodes, now));
    }
    let mut cluster: Cluster = serde_json::from_slice(&std::fs::read(path)?)?;
    for task in cluster
        .tasks
        .iter_mut()
        .filter(|task| task.endtime.is_none())
    {
        task.endtime = Some(now);
        task.exitstatus = Some("unexpected status".into());
        task.log.push("TASK ERROR: unexpected status".into());
    }
    cluster
        .guests
        .retain(|_, guest| guest.config.get("lock").is_none_or(|lock| lock != "create"));
    for node in &mut cluster.nodes {
        node.online = true;
    }
    Ok(cluster)
}

fn generate_certificate() -> Result<(rustls::ServerConfig, Certificate), SimError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "pve1".to_string(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|error| SimError::Tls(error.to_string()))?;
    let der = generated.cert.der().clone();
    let fingerprint = Sha256::digest(der.as_ref())
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    let mut server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .map_err(|error| SimError::Tls(error.to_string()))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((
        server,
        Certificate {
            pem: generated.cert.pem(),
            fingerprint,
        },
    ))
}

/// A started server.
pub(crate) struct Running {
    pub shared: Arc<Shared>,
    pub address: SocketAddr,
    pub certificate: Option<Certificate>,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn start(
        config: SimConfig,
        listener: tokio::net::TcpListener,
        backend: Arc<dyn Backend>,
    ) -> Result<Running, SimError> {
        let started = now();
        let cluster = match &config.state_file {
            Some(path) => load_state(path, config.nodes, started)?,
            None => Cluster::new(config.nodes, started),
        };
        let cluster = Arc::new(Mutex::new(cluster));
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        let auth = Authenticator::new(&config.tokens, &config.users, secret)?;
        let (tls, certificate) = if config.tls {
            let (server, certificate) = generate_certificate()?;
            (
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))),
                Some(certificate),
            )
        } else {
            (None, None)
        };
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            faults: Faults::new(config.seed, cluster.clone()),
            cluster,
            auth,
            backend,
            cancels: Mutex::new(HashMap::new()),
            guest_locks: Mutex::new(HashMap::new()),
            tasks: Mutex::new(JoinSet::new()),
            certificate_pem: certificate
                .as_ref()
                .map(|certificate| certificate.pem.clone()),
            fingerprint: certificate
                .as_ref()
                .map(|certificate| certificate.fingerprint.clone()),
            tls: config.tls,
            config,
        });
        shared.persist();
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, tls, shared.clone(), stopped));
        Ok(Running {
            shared,
            address,
            certificate,
            stop,
            accept,
        })
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.accept.await;
        let cancels: Vec<Arc<Notify>> = self.shared.cancels.locked().values().cloned().collect();
        for cancel in cancels {
            cancel.notify_one();
        }
        let mut tasks = std::mem::take(&mut *self.shared.tasks.locked());
        let deadline = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { break },
                () = &mut deadline => { tasks.abort_all(); break }
            }
        }
        self.shared.persist();
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(shared, request).await) }
                    });
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.abort_all();
}

// ----- answers -----

type Answer = Response<Full<Bytes>>;

fn reason_text(message: &str) -> String {
    let first = message.lines().next().unwrap_or("").trim_end();
    first
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn respond(status: u16, reason: &str, body: Option<Value>) -> Answer {
    let mut response = Response::new(Full::new(match &body {
        Some(body) => Bytes::from(body.to_string()),
        None => Bytes::new(),
    }));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(reason) = hyper::ext::ReasonPhrase::try_from(reason_text(reason).into_bytes()) {
        response.extensions_mut().insert(reason);
    }
    let headers = response.headers_mut();
    headers.insert(
        http::header::SERVER,
        http::HeaderValue::from_static("pve-api-daemon/3.0"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("max-age=0"),
    );
    headers.insert(
        http::header::PRAGMA,
        http::HeaderValue::from_static("no-cache"),
    );
    if body.is_some() {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json;charset=UTF-8"),
        );
    }
    response
}

fn success(data: Value, total: Option<usize>) -> Answer {
    let mut body = json!({ "data": data });
    if let (Some(total), Some(object)) = (total, body.as_object_mut()) {
        object.insert("total".into(), json!(total));
    }
    respond(200, "OK", Some(body))
}

fn error_answer(error: &ApiError) -> Answer {
    match error {
        ApiError::Parameters(errors) => respond(
            400,
            "Parameter verification failed.",
            Some(
                json!({"data": null, "errors": errors, "message": "Parameter verification failed.\n"}),
            ),
        ),
        ApiError::Failed(message) => {
            let full = format!("{}\n", message.trim_end_matches('\n'));
            respond(500, message, Some(json!({"data": null, "message": full})))
        }
        ApiError::Forbidden(message) => {
            let full = format!("{}\n", message.trim_end_matches('\n'));
            respond(403, message, Some(json!({"data": null, "message": full})))
        }
        ApiError::Status(status, message) => respond(*status, message, None),
    }
}

// ----- request parsing -----

fn json_to_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Bool(flag) => Some(if *flag { "1".into() } else { "0".into() }),
        Value::Number(number) => Some(number.to_string()),
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// The largest upload body accepted.
const UPLOAD_LIMIT: usize = 256 << 20;

/// Parameters and, for a multipart upload, the file's bytes.
type BodyParameters = (Vec<(String, String)>, Option<Vec<u8>>);

fn body_parameters(headers: &HeaderMap, body: &[u8]) -> Result<BodyParameters, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((Vec::new(), None));
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string();
    if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return crate::multipart::parse(&content_type, body)
            .map_err(|error| ApiError::Status(400, format!("unable to parse upload: {error}")));
    }
    let content_type = content_type.to_ascii_lowercase();
    let pairs = body_fields(&content_type, body)?;
    Ok((pairs, None))
}

fn body_fields(content_type: &str, body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    if content_type.starts_with("application/json") {
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| ApiError::Status(400, format!("malformed JSON string: {error}")))?;
        let Value::Object(object) = value else {
            return Err(ApiError::Status(400, "JSON body is not an object".into()));
        };
        Ok(object
            .iter()
            .filter_map(|(key, value)| json_to_text(value).map(|text| (key.clone(), text)))
            .collect())
    } else {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).map_err(|error| {
            ApiError::Status(400, format!("unable to parse request body: {error}"))
        })
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|cookies| {
            cookies.split(';').find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key == name).then(|| percent_decode_str(value).decode_utf8_lossy().into_owned())
            })
        })
}

// ----- routing -----

#[derive(Debug, Clone, PartialEq)]
enum Endpoint {
    Root,
    Version,
    AccessIndex,
    TicketGet,
    TicketPost,
    ClusterIndex,
    Resources,
    NextId,
    ClusterStatus,
    Nodes,
    NodeIndex,
    NodeStatus,
    GuestList,
    GuestCreate,
    GuestIndex,
    GuestDestroy,
    ConfigGet,
    ConfigPut,
    StatusIndex,
    StatusCurrent,
    Power(String),
    Resize,
    Console(bool),
    Rrd,
    SnapshotList,
    StorageList,
    StorageIndex,
    StorageStatus,
    StorageContent,
    ApplianceList,
    ApplianceDownload,
    TaskList,
    TaskIndex,
    TaskStop,
    TaskStatus,
    TaskLog,
    Netstat,
    VmList,
    VmCreate,
    VmIndex,
    VmDestroy,
    VmConfig,
    VmStatusIndex,
    VmStatusCurrent,
    VmPower(String),
    StorageConfig,
    StorageUpload,
    StorageAllocate,
    VolumeDelete,
    NetworkList,
    NetworkCreate,
    NetworkApply,
    NetworkRevert,
    InterfaceGet,
    InterfaceUpdate,
    InterfaceDelete,
    ClusterTasks,
    Users,
    UserCreate,
    Groups,
    GroupCreate,
    Roles,
    Domains,
}

struct Route {
    endpoint: Endpoint,
    path: Vec<(&'static str, String)>,
}

const POWER_ACTIONS: &[&str] = &["start", "stop", "shutdown", "reboot", "suspend", "resume"];

fn route(method: &Method, segments: &[String]) -> Option<Route> {
    use Endpoint::*;
    let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = method.as_str();
    let mut path = Vec::new();
    let endpoint = match (method, parts.as_slice()) {
        ("GET", []) => Root,
        ("GET", ["version"]) => Version,
        ("GET", ["access"]) => AccessIndex,
        ("GET", ["access", "ticket"]) => TicketGet,
        ("POST", ["access", "ticket"]) => TicketPost,
        ("GET", ["cluster"]) => ClusterIndex,
        ("GET", ["cluster", "resources"]) => Resources,
        ("GET", ["cluster", "nextid"]) => NextId,
        ("GET", ["cluster", "status"]) => ClusterStatus,
        ("GET", ["cluster", "tasks"]) => ClusterTasks,
        ("GET", ["storage"]) => StorageConfig,
        ("GET", ["access", "users"]) => Users,
        ("POST", ["access", "users"]) => UserCreate,
        ("GET", ["access", "groups"]) => Groups,
        ("POST", ["access", "groups"]) => GroupCreate,
        ("GET", ["access", "roles"]) => Roles,
        ("GET", ["access", "domains"]) => Domains,
        ("GET", ["nodes"]) => Nodes,
        (_, ["nodes", node, rest @ ..]) => {
            path.push(("node", node.to_string()));
            match (method, rest) {
                ("GET", []) => NodeIndex,
                ("GET", ["status"]) => NodeStatus,
                ("GET", ["netstat"]) => Netstat,
                ("GET", ["qemu"]) => VmList,
                ("POST", ["qemu"]) => VmCreate,
                (_, ["qemu", vmid, rest @ ..]) => {
                    path.push(("vmid", vmid.to_string()));
                    match (method, rest) {
                        ("GET", []) => VmIndex,
                        ("DELETE", []) => VmDestroy,
                        ("GET", ["config"]) => VmConfig,
                        ("GET", ["status"]) => VmStatusIndex,
                        ("GET", ["status", "current"]) => VmStatusCurrent,
                        ("POST", ["status", action]) if qemu::POWER_ACTIONS.contains(action) => {
                            VmPower(action.to_string())
                        }
                        _ => return None,
                    }
                }
                ("GET", ["network"]) => NetworkList,
                ("POST", ["network"]) => NetworkCreate,
                ("PUT", ["network"]) => NetworkApply,
                ("DELETE", ["network"]) => NetworkRevert,
                (_, ["network", iface]) => {
                    path.push(("iface", iface.to_string()));
                    match method {
                        "GET" => InterfaceGet,
                        "PUT" => InterfaceUpdate,
                        "DELETE" => InterfaceDelete,
                        _ => return None,
                    }
                }
                ("GET", ["lxc"]) => GuestList,
                ("POST", ["lxc"]) => GuestCreate,
                (_, ["lxc", vmid, rest @ ..]) => {
                    path.push(("vmid", vmid.to_string()));
                    match (method, rest) {
                        ("GET", []) => GuestIndex,
                        ("DELETE", []) => GuestDestroy,
                        ("GET", ["config"]) => ConfigGet,
                        ("PUT", ["config"]) => ConfigPut,
                        ("GET", ["status"]) => StatusIndex,
                        ("GET", ["status", "current"]) => StatusCurrent,
                        ("POST", ["status", action]) if POWER_ACTIONS.contains(action) => {
                            Power(action.to_string())
                        }
                        ("PUT", ["resize"]) => Resize,
                        ("POST", ["vncproxy"]) => Console(true),
                        ("POST", ["termproxy"]) => Console(false),
                        ("GET", ["rrddata"]) => Rrd,
                        ("GET", ["snapshot"]) => SnapshotList,
                        _ => return None,
                    }
                }
                ("GET", ["storage"]) => StorageList,
                (_, ["storage", storage, rest @ ..]) => {
                    path.push(("storage", storage.to_string()));
                    match (method, rest) {
                        ("GET", []) => StorageIndex,
                        ("GET", ["status"]) => StorageStatus,
                        ("GET", ["content"]) => StorageContent,
                        ("POST", ["content"]) => StorageAllocate,
                        ("POST", ["upload"]) => StorageUpload,
                        ("DELETE", ["content", volume]) => {
                            path.push(("volume", volume.to_string()));
                            VolumeDelete
                        }
                        _ => return None,
                    }
                }
                ("GET", ["aplinfo"]) => ApplianceList,
                ("POST", ["aplinfo"]) => ApplianceDownload,
                ("GET", ["tasks"]) => TaskList,
                (_, ["tasks", upid, rest @ ..]) => {
                    path.push(("upid", upid.to_string()));
                    match (method, rest) {
                        ("GET", []) => TaskIndex,
                        ("DELETE", []) => TaskStop,
                        ("GET", ["status"]) => TaskStatus,
                        ("GET", ["log"]) => TaskLog,
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(Route { endpoint, path })
}

fn schema_of(endpoint: &Endpoint) -> Vec<Property> {
    use Endpoint::*;
    match endpoint {
        Root | Version | AccessIndex | TicketGet | ClusterIndex | ClusterStatus | Nodes => {
            lxc::no_parameters()
        }
        TicketPost => lxc::ticket_parameters(),
        Resources => lxc::resources_parameters(),
        NextId => lxc::nextid_parameters(),
        NodeIndex | NodeStatus | GuestList | ApplianceList => lxc::node_only(),
        GuestCreate => lxc::create_parameters(),
        GuestIndex | StatusIndex | StatusCurrent | SnapshotList => lxc::guest_only(),
        Console(false) => lxc::guest_only(),
        GuestDestroy => lxc::destroy_parameters(),
        ConfigGet => lxc::config_read_parameters(),
        ConfigPut => lxc::update_parameters(),
        Power(action) => lxc::action_parameters(action),
        Resize => lxc::resize_parameters(),
        Console(true) => lxc::vncproxy_parameters(),
        Rrd => lxc::rrddata_parameters(),
        StorageList => lxc::storage_list_parameters(),
        StorageIndex | StorageStatus => lxc::storage_parameters(),
        StorageContent => lxc::storage_content_parameters(),
        ApplianceDownload => lxc::download_parameters(),
        TaskList => lxc::task_list_parameters(),
        TaskIndex | TaskStop | TaskStatus => lxc::task_parameters(),
        TaskLog => lxc::task_log_parameters(),
        Netstat | NetworkApply | NetworkRevert => lxc::node_only(),
        VmList => qemu::list_parameters(),
        VmCreate => qemu::create_parameters(),
        VmIndex | VmStatusIndex | VmStatusCurrent => qemu::guest_only(),
        VmDestroy => qemu::destroy_parameters(),
        VmConfig => qemu::config_read_parameters(),
        VmPower(action) => qemu::action_parameters(action),
        StorageConfig => storage::config_list_parameters(),
        StorageUpload => storage::upload_parameters(),
        StorageAllocate => storage::allocate_parameters(),
        VolumeDelete => storage::delete_parameters(),
        NetworkList => network::list_parameters(),
        NetworkCreate => network::change_parameters(false),
        InterfaceUpdate => network::change_parameters(true),
        InterfaceGet | InterfaceDelete => network::interface_parameters(),
        ClusterTasks | Groups | Roles | Domains => lxc::no_parameters(),
        Users => access::user_list_parameters(),
        UserCreate => access::user_create_parameters(),
        GroupCreate => access::group_create_parameters(),
    }
}

// ----- the request pipeline -----

async fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Answer {
    let (parts, body) = request.into_parts();
    let limit = if parts.uri.path().ends_with("/upload") {
        UPLOAD_LIMIT
    } else {
        4 << 20
    };
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return respond(413, "Request Entity Too Large", None),
    };
    let path = parts.uri.path().to_string();
    if path == "/_sim" || path.starts_with("/_sim/") {
        return admin(&shared, &parts.method, &path, &parts.headers, &body).await;
    }
    let Some(relative) = path.strip_prefix("/api2/json") else {
        return respond(
            501,
            &format!("Method '{} {path}' not implemented", parts.method),
            None,
        );
    };
    if parts.method == Method::OPTIONS {
        return respond(501, "method 'OPTIONS' not available", None);
    }
    let latency = shared.config.latency + shared.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let segments: Vec<String> = relative
        .split('/')
        .filter(|segment| !segment.is_empty())
        .map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned())
        .collect();
    let relative_path = format!("/{}", segments.join("/"));
    let Some(route) = route(&parts.method, &segments) else {
        return respond(
            501,
            &format!("Method '{} {path}' not implemented", parts.method),
            None,
        );
    };
    let caller = match authenticate(
        &shared,
        &parts.method,
        &parts.headers,
        &route.endpoint,
        &relative_path,
    )
    .await
    {
        Ok(caller) => caller,
        Err(answer) => return answer,
    };
    if let Some((_, node)) = route.path.iter().find(|(name, _)| *name == "node")
        && let Some(status) = shared.faults.offline_status(node)
    {
        return respond(status, crate::faults::default_message(status), None);
    }
    if let Some(failure) = shared
        .faults
        .injected_failure(parts.method.as_str(), &relative_path)
    {
        return if failure.status == 500 {
            error_answer(&ApiError::failed(failure.message))
        } else {
            respond(failure.status, &failure.message, None)
        };
    }
    let mut parameters: BTreeMap<String, String> = BTreeMap::new();
    let query = parts.uri.query().unwrap_or("");
    match serde_urlencoded::from_str::<Vec<(String, String)>>(query) {
        Ok(pairs) => parameters.extend(pairs),
        Err(error) => {
            return error_answer(&ApiError::Status(
                400,
                format!("unable to parse query: {error}"),
            ));
        }
    }
    let upload = match body_parameters(&parts.headers, &body) {
        Ok((pairs, file)) => {
            parameters.extend(pairs);
            file
        }
        Err(error) => return error_answer(&error),
    };
    for (name, value) in &route.path {
        if let Some(given) = parameters.get(*name)
            && given != value
        {
            return error_answer(&ApiError::parameter(
                name,
                format!("value '{given}' differs from the URI parameter '{value}'"),
            ));
        }
        parameters.insert(name.to_string(), value.clone());
    }
    if let Err(errors) = verify(&schema_of(&route.endpoint), &parameters) {
        return error_answer(&ApiError::Parameters(errors));
    }
    let result = dispatch(
        &shared,
        &route.endpoint,
        &parameters,
        caller.as_ref(),
        upload.as_deref(),
    );
    match result {
        Ok((data, total)) if route.endpoint == Endpoint::NetworkList => {
            // Proxmox adds the pending change as the `changes` attribute next to `data`.
            let node = parameters.get("node").map(String::as_str).unwrap_or("");
            let changes = shared
                .cluster()
                .networks
                .get(node)
                .and_then(network::NodeNetwork::changes);
            let mut answer = json!({ "data": data });
            if let (Some(changes), Some(object)) = (changes, answer.as_object_mut()) {
                object.insert("changes".into(), json!(changes));
            }
            let _ = total;
            respond(200, "OK", Some(answer))
        }
        Ok((data, total)) => success(data, total),
        Err(error) => error_answer(&error),
    }
}

async fn refuse(shared: &Shared, reason: &str) -> Answer {
    let delay = shared.config.auth_failure_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    respond(401, reason, None)
}

async fn authenticate(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    endpoint: &Endpoint,
    relative_path: &str,
) -> Result<Option<Caller>, Answer> {
    let token_header = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .filter(|value| value.starts_with("PVEAPIToken"));
    if *endpoint == Endpoint::TicketPost {
        if token_header.is_some() {
            return Err(respond(
                403,
                &format!("URI '{relative_path}' not available with API token, need proper ticket."),
                None,
            ));
        }
        return Ok(None);
    }
    if *endpoint == Endpoint::TicketGet {
        return Ok(None);
    }
    if let Some(header) = token_header {
        return match shared.auth.check_token_header(header) {
            Some(caller) => Ok(Some(caller)),
            None => Err(refuse(shared, "Authentication failed!").await),
        };
    }
    let Some(ticket) = cookie(headers, "PVEAuthCookie") else {
        return Err(refuse(shared, "No ticket").await);
    };
    let moment = now();
    let Some(user) = shared.auth.check_ticket(&ticket, moment) else {
        return Err(refuse(shared, "Authentication failed!").await);
    };
    if *method != Method::GET {
        let csrf = headers
            .get("CSRFPreventionToken")
            .and_then(|value| value.to_str().ok());
        if !csrf.is_some_and(|token| shared.auth.check_csrf(&user, token, moment)) {
            return Err(refuse(shared, "Permission denied - invalid csrf token").await);
        }
    }
    Ok(Some(Caller { user, token: None }))
}

async fn admin(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    if shared.tls
        && let Err(answer) = authenticate(shared, method, headers, &Endpoint::Version, path).await
    {
        return answer;
    }
    match (method.as_str(), path) {
        ("GET", "/_sim/faults") => success(
            serde_json::to_value(shared.faults.spec()).unwrap_or(Value::Null),
            None,
        ),
        ("POST" | "PUT", "/_sim/faults") => {
            let spec: crate::FaultSpec = match serde_json::from_slice(if body.is_empty() {
                b"{}"
            } else {
                body
            }) {
                Ok(spec) => spec,
                Err(error) => {
                    return respond(400, &format!("invalid fault specification: {error}"), None);
                }
            };
            match shared.faults.set(spec) {
                Ok(()) => success(
                    serde_json::to_value(shared.faults.spec()).unwrap_or(Value::Null),
                    None,
                ),
                Err(error) => respond(400, &format!("invalid path pattern: {error}"), None),
            }
        }
        ("DELETE", "/_sim/faults") => {
            shared.faults.clear();
            success(Value::Null, None)
        }
        ("GET", "/_sim/state") => success(
            serde_json::to_value(&*shared.cluster()).unwrap_or(Value::Null),
            None,
        ),
        _ => respond(
            501,
            &format!("Method '{method} {path}' not implemented"),
            None,
        ),
    }
}

fn index(names: &[&str], key: &str) -> Value {
    Value::Array(names.iter().map(|name| json!({ key: name })).collect())
}

fn flag(parameters: &BTreeMap<String, String>, name: &str) -> bool {
    parameters
        .get(name)
        .and_then(|value| parse_boolean(value))
        .unwrap_or(false)
}

fn number<T: std::str::FromStr>(parameters: &BTreeMap<String, String>, name: &str) -> Option<T> {
    parameters
        .get(name)
        .and_then(|value| value.trim_start_matches('+').parse().ok())
}

type Outcome = Result<(Value, Option<usize>), ApiError>;

fn dispatch(
    shared: &Arc<Shared>,
    endpoint: &Endpoint,
    parameters: &BTreeMap<String, String>,
    caller: Option<&Caller>,
    upload: Option<&[u8]>,
) -> Outcome {
    use Endpoint::*;
    let moment = now();
    let node = parameters.get("node").map(String::as_str).unwrap_or("");
    let vmid: u32 = number(parameters, "vmid").unwrap_or(0);
    let user = caller
        .map(Caller::task_user)
        .unwrap_or_else(|| "root@pam".into());
    let plain = |value: Value| Ok((value, None));
    match endpoint {
        Root => plain(index(
            &["version", "cluster", "nodes", "storage", "access", "pools"],
            "subdir",
        )),
        Version => plain(
            json!({"version": "8.4.1", "release": "8.4", "repoid": "2a5fa54a8503f96d", "console": "html5"}),
        ),
        AccessIndex => plain(index(
            &["ticket", "users", "groups", "roles", "domains"],
            "subdir",
        )),
        TicketGet => plain(Value::Null),
        TicketPost => {
            let username = &parameters["username"];
            let password = &parameters["password"];
            let realm = parameters.get("realm").map(String::as_str);
            match shared.auth.login(username, password, realm, moment) {
                Some(user) => plain(json!({
                    "username": user,
                    "ticket": shared.auth.ticket(&user, moment),
                    "CSRFPreventionToken": shared.auth.csrf_token(&user, moment),
                    "clustername": if shared.cluster().nodes.len() > 1 { json!("pvesim") } else { Value::Null },
                    "cap": {
                        "vms": {"VM.Allocate": 1, "VM.Audit": 1, "VM.Config.CPU": 1, "VM.Config.Disk": 1, "VM.Config.Memory": 1, "VM.Config.Network": 1, "VM.Config.Options": 1, "VM.Console": 1, "VM.PowerMgmt": 1, "VM.Snapshot": 1},
                        "storage": {"Datastore.Allocate": 1, "Datastore.AllocateSpace": 1, "Datastore.AllocateTemplate": 1, "Datastore.Audit": 1},
                        "nodes": {"Sys.Audit": 1, "Sys.Modify": 1, "Sys.PowerMgmt": 1},
                        "access": {"User.Modify": 1}, "dc": {"Sys.Audit": 1}, "sdn": {}, "mapping": {},
                    },
                })),
                None => Err(ApiError::Status(401, "authentication failure".into())),
            }
        }
        ClusterIndex => plain(index(&["resources", "nextid", "status", "tasks"], "name")),

        Resources => plain(
            shared
                .cluster()
                .resources(parameters.get("type").map(String::as_str), moment),
        ),
        NextId => plain(json!(shared.cluster().next_id(number(parameters, "vmid"))?)),
        ClusterStatus => plain(shared.cluster().cluster_status()),
        Nodes => plain(
            shared
                .cluster()
                .node_list(shared.fingerprint.as_deref(), moment),
        ),
        NodeIndex => {
            shared.cluster().node(node)?;
            plain(index(
                &[
                    "aplinfo", "lxc", "netstat", "network", "qemu", "status", "storage", "tasks",
                ],
                "name",
            ))
        }
        NodeStatus => plain(shared.cluster().node_status(node, moment)?),
        GuestList => plain(shared.cluster().guest_list(node, moment)?),
        GuestCreate => {
            let (action, upid) = {
                let mut cluster = shared.cluster();
                let action = cluster.prepare_create(
                    node,
                    parameters,
                    caller.map_or("root@pam", |caller| caller_user(caller)),
                    moment,
                )?;
                let upid =
                    cluster.begin_task(node, action.task_type(), &action.task_id(), &user, moment);
                (action, upid)
            };
            shared.persist();
            plain(json!(spawn_task(shared, node, upid, action)))
        }
        GuestIndex => {
            shared.cluster().guest(node, vmid)?;
            plain(index(
                &[
                    "config",
                    "status",
                    "snapshot",
                    "resize",
                    "rrd",
                    "rrddata",
                    "vncproxy",
                    "termproxy",
                ],
                "subdir",
            ))
        }
        GuestDestroy => {
            let prepared = shared.cluster().prepare_destroy(node, vmid, parameters);
            start_task(shared, node, &user, prepared)
        }
        ConfigGet => plain(shared.cluster().config_view(node, vmid)?),
        ConfigPut => {
            let caller_name = caller.map_or("root@pam", caller_user);
            shared
                .cluster()
                .update_config(node, vmid, parameters, caller_name, moment)?;
            shared.persist();
            plain(Value::Null)
        }
        StatusIndex => {
            shared.cluster().guest(node, vmid)?;
            plain(index(
                &[
                    "current", "start", "stop", "shutdown", "reboot", "suspend", "resume",
                ],
                "subdir",
            ))
        }
        StatusCurrent => plain(shared.cluster().status_view(node, vmid, moment)?),
        Power(action) => {
            only_root_skips_locks(parameters, caller)?;
            let prepared = shared
                .cluster()
                .prepare_power(node, vmid, action, parameters);
            start_task(shared, node, &user, prepared)
        }
        Resize => {
            let prepared = shared.cluster().prepare_resize(node, vmid, parameters)?;
            match prepared {
                Some(action) => start_task(shared, node, &user, Ok(action)),
                None => plain(Value::Null),
            }
        }
        Console(vnc) => {
            let (upid, port) = {
                let mut cluster = shared.cluster();
                cluster.guest(node, vmid)?;
                let port = cluster.console_port();
                let upid = cluster.begin_task(node, "vncproxy", &vmid.to_string(), &user, moment);
                (upid, port)
            };
            let ticket = shared.auth.ticket(
                &format!("PVEVNC:{}", caller.map_or("root@pam", caller_user)),
                moment,
            );
            let text = spawn_task(shared, node, upid, Action::Console { vmid });
            let mut answer = json!({"user": user, "ticket": ticket, "port": port, "upid": text});
            if *vnc && let Some(object) = answer.as_object_mut() {
                object.insert(
                    "cert".into(),
                    json!(shared.certificate_pem.clone().unwrap_or_default()),
                );
            }
            plain(answer)
        }
        Rrd => plain(
            shared
                .cluster()
                .rrd_view(node, vmid, &parameters["timeframe"], moment)?,
        ),
        SnapshotList => {
            shared.cluster().guest(node, vmid)?;
            plain(
                json!([{"name": "current", "description": "You are here!", "running": 0, "digest": ""}]),
            )
        }
        StorageList => plain(shared.cluster().storage_list(
            node,
            parameters.get("content").map(String::as_str),
            parameters.get("storage").map(String::as_str),
        )?),
        StorageIndex => {
            storage_entry(shared, node, &parameters["storage"])?;
            plain(index(
                &[
                    "content",
                    "status",
                    "rrd",
                    "rrddata",
                    "upload",
                    "download-url",
                ],
                "subdir",
            ))
        }
        StorageStatus => plain(storage_entry(shared, node, &parameters["storage"])?),
        StorageContent => plain(shared.cluster().storage_content(
            node,
            &parameters["storage"],
            parameters.get("content").map(String::as_str),
            number(parameters, "vmid"),
        )?),
        ApplianceList => plain(shared.cluster().appliance_list(node)?),
        ApplianceDownload => {
            let prepared = shared.cluster().prepare_download(
                node,
                &parameters["storage"],
                &parameters["template"],
            );
            start_task(shared, node, &user, prepared)
        }
        TaskList => task_list(shared, node, parameters),
        Netstat => plain(shared.cluster().netstat(node, moment)?),
        VmList => plain(shared.cluster().vm_list(node, moment)?),
        VmCreate => {
            let (action, upid) = {
                let mut cluster = shared.cluster();
                let action = cluster.prepare_vm_create(node, parameters, moment)?;
                let upid =
                    cluster.begin_task(node, action.task_type(), &action.task_id(), &user, moment);
                (action, upid)
            };
            shared.persist();
            plain(json!(spawn_task(shared, node, upid, action)))
        }
        VmIndex => {
            shared.cluster().guest_of(GuestKind::Qemu, node, vmid)?;
            plain(index(&["config", "status", "rrddata"], "subdir"))
        }
        VmDestroy => {
            let prepared = shared.cluster().prepare_vm_destroy(node, vmid, parameters);
            start_task(shared, node, &user, prepared)
        }
        VmConfig => plain(shared.cluster().vm_config_view(node, vmid)?),
        VmStatusIndex => {
            shared.cluster().guest_of(GuestKind::Qemu, node, vmid)?;
            plain(index(
                &["current", "start", "stop", "reset", "shutdown"],
                "subdir",
            ))
        }
        VmStatusCurrent => plain(shared.cluster().vm_status_view(node, vmid, moment)?),
        VmPower(action) => {
            only_root_skips_locks(parameters, caller)?;
            let prepared = shared
                .cluster()
                .prepare_vm_power(node, vmid, action, parameters);
            start_task(shared, node, &user, prepared)
        }
        StorageConfig => plain(
            shared
                .cluster()
                .storage_config_list(parameters.get("type").map(String::as_str)),
        ),
        StorageUpload => {
            let Some(bytes) = upload else {
                return Err(ApiError::failed("upload failed - no file in the request"));
            };
            let prepared = shared.cluster().prepare_upload(node, parameters, bytes);
            start_task(shared, node, &user, prepared)
        }
        StorageAllocate => {
            let volid = shared.cluster().allocate(node, parameters, moment)?;
            shared.persist();
            plain(volid)
        }
        VolumeDelete => {
            let prepared = shared.cluster().prepare_volume_delete(
                node,
                &parameters["storage"],
                &parameters["volume"],
            );
            start_task(shared, node, &user, prepared)
        }
        NetworkList => {
            let mut cluster = shared.cluster();
            adopt_host_bridges(shared, &mut cluster, node)?;
            plain(Value::Array(
                cluster
                    .network_mut(node)?
                    .list(parameters.get("type").map(String::as_str)),
            ))
        }
        InterfaceGet => {
            let mut cluster = shared.cluster();
            adopt_host_bridges(shared, &mut cluster, node)?;
            plain(cluster.network_mut(node)?.get(&parameters["iface"])?)
        }
        NetworkCreate | InterfaceUpdate => {
            shared.cluster().network_mut(node)?.change(
                &parameters["iface"],
                parameters,
                *endpoint == InterfaceUpdate,
            )?;
            shared.persist();
            plain(Value::Null)
        }
        InterfaceDelete => {
            shared
                .cluster()
                .network_mut(node)?
                .remove(&parameters["iface"])?;
            shared.persist();
            plain(Value::Null)
        }
        NetworkRevert => {
            shared.cluster().network_mut(node)?.pending = None;
            shared.persist();
            plain(Value::Null)
        }
        NetworkApply => {
            shared.cluster().network_mut(node)?;
            start_task(shared, node, &user, Ok(Action::NetworkApply))
        }
        ClusterTasks => plain(shared.cluster().cluster_tasks()),
        Users => {
            let enabled = parameters
                .get("enabled")
                .and_then(|value| parse_boolean(value));
            plain(
                shared
                    .cluster()
                    .access
                    .user_list(enabled, flag(parameters, "full")),
            )
        }
        UserCreate => {
            shared.cluster().access.create_user(parameters)?;
            shared.persist();
            plain(Value::Null)
        }
        Groups => plain(shared.cluster().access.group_list()),
        GroupCreate => {
            shared.cluster().access.create_group(parameters)?;
            shared.persist();
            plain(Value::Null)
        }
        Roles => plain(access::Access::role_list()),
        Domains => plain(access::Access::domain_list()),
        TaskIndex => {
            find_task(shared, node, &parameters["upid"])?;
            plain(index(&["log", "status"], "name"))
        }
        TaskStop => {
            let upid = find_task(shared, node, &parameters["upid"])?;
            let cancel = shared.cancels.locked().get(&upid).cloned();
            if let Some(cancel) = cancel {
                cancel.notify_one();
            }
            plain(Value::Null)
        }
        TaskStatus => {
            let upid = find_task(shared, node, &parameters["upid"])?;
            let cluster = shared.cluster();
            let task = cluster
                .task(&upid)
                .ok_or_else(|| ApiError::parameter("upid", "no such task"))?;
            plain(task_status_view(task))
        }
        TaskLog => {
            let upid = find_task(shared, node, &parameters["upid"])?;
            let cluster = shared.cluster();
            let task = cluster
                .task(&upid)
                .ok_or_else(|| ApiError::parameter("upid", "no such task"))?;
            let start: usize = number(parameters, "start").unwrap_or(0);
            let limit: usize = number(parameters, "limit").unwrap_or(50);
            let total = task.log.len();
            if total == 0 {
                return Ok((json!([{"n": 0, "t": "no content"}]), Some(0)));
            }
            let lines: Vec<Value> = task
                .log
                .iter()
                .enumerate()
                .skip(start)
                .take(limit)
                .map(|(index, line)| json!({"n": index + 1, "t": line}))
                .collect();
            Ok((Value::Array(lines), Some(total)))
        }
    }
}

/// In the LXC-backed mode, the node's bridges are the host's.
fn adopt_host_bridges(shared: &Shared, cluster: &mut Cluster, node: &str) -> Result<(), ApiError> {
    if let Some(bridges) = shared.backend.host_bridges() {
        cluster.network_mut(node)?.adopt_host_bridges(&bridges);
    }
    Ok(())
}

/// `skiplock` is root's alone, as in Proxmox, for containers and VMs alike.
fn only_root_skips_locks(
    parameters: &BTreeMap<String, String>,
    caller: Option<&Caller>,
) -> Result<(), ApiError> {
    if flag(parameters, "skiplock")
        && caller.is_some_and(|caller| caller_user(caller) != "root@pam")
    {
        return Err(ApiError::parameter(
            "skiplock",
            "Only root may use this option.",
        ));
    }
    Ok(())
}

fn caller_user(caller: &Caller) -> &str {
    if caller.token.is_some() {
        "token"
    } else {
        caller.user.as_str()
    }
}

fn storage_entry(shared: &Shared, node: &str, storage: &str) -> Result<Value, ApiError> {
    let list = shared.cluster().storage_list(node, None, Some(storage))?;
    list.as_array()
        .and_then(|items| items.first().cloned())
        .ok_or_else(|| ApiError::failed(format!("storage '{storage}' does not exist")))
}

fn find_task(shared: &Shared, node: &str, text: &str) -> Result<String, ApiError> {
    let upid: Upid = text
        .parse()
        .map_err(|_| ApiError::parameter("upid", "unable to parse worker upid"))?;
    let cluster = shared.cluster();
    cluster.node(node)?;
    if upid.node != node || cluster.task(text).is_none() {
        return Err(ApiError::parameter("upid", "no such task"));
    }
    Ok(text.to_string())
}

fn task_list(shared: &Shared, node: &str, parameters: &BTreeMap<String, String>) -> Outcome {
    let cluster = shared.cluster();
    cluster.node(node)?;
    let source = parameters.get("source").map_or("archive", String::as_str);
    let vmid = parameters
        .get("vmid")
        .map(|vmid| vmid.trim_start_matches('+').to_string());
    let type_filter = parameters.get("typefilter");
    let user_filter = parameters.get("userfilter");
    let errors_only = flag(parameters, "errors");
    let since: Option<i64> = number(parameters, "since");
    let until: Option<i64> = number(parameters, "until");
    let statuses: Option<Vec<String>> = parameters.get("statusfilter").map(|list| {
        list.split([',', ';', ' '])
            .filter(|item| !item.is_empty())
            .map(str::to_lowercase)
            .collect()
    });
    let mut tasks: Vec<_> = cluster
        .tasks
        .iter()
        .filter(|task| task.node == node)
        .filter(|task| match source {
            "active" => task.endtime.is_none(),
            "all" => true,
            _ => task.endtime.is_some(),
        })
        .filter(|task| vmid.as_ref().is_none_or(|vmid| task.id == *vmid))
        .filter(|task| type_filter.is_none_or(|kind| task.kind == *kind))
        .filter(|task| user_filter.is_none_or(|user| task.user.contains(user.as_str())))
        .filter(|task| {
            !errors_only
                || task
                    .exitstatus
                    .as_deref()
                    .is_some_and(|status| status != "OK")
        })
        .filter(|task| since.is_none_or(|since| task.starttime >= since))
        .filter(|task| until.is_none_or(|until| task.starttime <= until))
        .filter(|task| {
            statuses.as_ref().is_none_or(|statuses| {
                let status = match task.exitstatus.as_deref() {
                    None => "running",
                    Some("OK") => "ok",
                    Some(status) if status.starts_with("WARNINGS") => "warning",
                    Some(_) => "error",
                };
                statuses.iter().any(|wanted| wanted == status)
            })
        })
        .collect();
    tasks.sort_by(|left, right| {
        right
            .starttime
            .cmp(&left.starttime)
            .then(right.pid.cmp(&left.pid))
    });
    let total = tasks.len();
    let start: usize = number(parameters, "start").unwrap_or(0);
    let limit: usize = number(parameters, "limit").unwrap_or(50);
    let list: Vec<Value> = tasks
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|task| {
            let mut object = json!({"upid": task.upid, "node": task.node, "pid": task.pid, "pstart": task.pstart,
                "starttime": task.starttime, "type": task.kind, "id": task.id, "user": task.user});
            if let (Some(endtime), Some(target)) = (task.endtime, object.as_object_mut()) {
                target.insert("endtime".into(), json!(endtime));
                target.insert("status".into(), json!(task.exitstatus.clone().unwrap_or_default()));
            }
            object
        })
        .collect();
    Ok((Value::Array(list), Some(total)))
}

fn start_task(
    shared: &Arc<Shared>,
    node: &str,
    user: &str,
    prepared: Result<Action, ApiError>,
) -> Outcome {
    let action = prepared?;
    let upid =
        shared
            .cluster()
            .begin_task(node, action.task_type(), &action.task_id(), user, now());
    Ok((json!(spawn_task(shared, node, upid, action)), None))
}

/// Runs a registered task in the background and returns its UPID text.
fn spawn_task(shared: &Arc<Shared>, node: &str, upid: Upid, action: Action) -> String {
    let text = upid.to_string();
    let cancel = Arc::new(Notify::new());
    shared.cancels.locked().insert(text.clone(), cancel.clone());
    let runner = run_task(
        shared.clone(),
        node.to_string(),
        text.clone(),
        action,
        cancel,
    );
    shared.tasks.locked().spawn(runner);
    text
}

const INTERRUPTED: &str = "interrupted by signal";

async fn run_task(
    shared: Arc<Shared>,
    node: String,
    upid: String,
    action: Action,
    cancel: Arc<Notify>,
) {
    let outcome = perform(&shared, &node, &action, &cancel).await;
    {
        let mut cluster = shared.cluster();
        let moment = now();
        let result = match outcome {
            Ok(mut lines) => match cluster.complete(&node, &action, moment) {
                Ok(more) => {
                    lines.extend(more);
                    Ok(lines)
                }
                Err(error) => {
                    cluster.abort(&action);
                    Err(error)
                }
            },
            Err(error) => {
                cluster.abort(&action);
                Err(error)
            }
        };
        cluster.end_task(&upid, &result, moment);
    }
    shared.cancels.locked().remove(&upid);
    shared.persist();
}

async fn perform(
    shared: &Arc<Shared>,
    node: &str,
    action: &Action,
    cancel: &Notify,
) -> Result<Vec<String>, String> {
    let _guard = match action
        .vmid()
        .filter(|_| !matches!(action, Action::Console { .. }))
    {
        Some(vmid) => {
            let lock = shared.guest_lock(vmid);
            tokio::select! {
                guard = tokio::time::timeout(shared.config.lock_timeout, lock.lock_owned()) => match guard {
                    Ok(guard) => Some(guard),
                    Err(_) => return Err(format!("can't lock file '/run/lock/lxc/pve-config-{vmid}.lock' - got timeout")),
                },
                () = cancel.notified() => return Err(INTERRUPTED.into()),
            }
        }
        None => None,
    };
    let kind = action.task_type();
    let vmid = action.vmid();
    match shared.faults.task_effect(kind, vmid) {
        Some((TaskEffect::Hang, _)) => {
            for _ in 0..u32::MAX {
                tokio::select! {
                    () = cancel.notified() => return Err(INTERRUPTED.into()),
                    () = shared.faults.changed() => {},
                    () = tokio::time::sleep(Duration::from_millis(100)) => {},
                }
                if !shared.faults.hang_still_applies(kind, vmid) {
                    break;
                }
            }
            run_backend(shared, node, action, cancel).await
        }
        Some((TaskEffect::Fail(message), _)) => {
            tokio::select! {
                _ = run_backend(shared, node, action, cancel) => Err(message),
                () = cancel.notified() => Err(INTERRUPTED.into()),
            }
        }
        None => run_backend(shared, node, action, cancel).await,
    }
}

async fn run_backend(
    shared: &Arc<Shared>,
    node: &str,
    action: &Action,
    cancel: &Notify,
) -> Result<Vec<String>, String> {
    tokio::select! {
        result = shared.backend.perform(node, action) => result,
        () = cancel.notified() => Err(INTERRUPTED.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(path: &str) -> Vec<String> {
        path.split('/')
            .filter(|part| !part.is_empty())
            .map(String::from)
            .collect()
    }

    #[test]
    fn routes_table() {
        let cases: &[(&str, &str, Option<Endpoint>)] = &[
            ("GET", "/nodes", Some(Endpoint::Nodes)),
            ("POST", "/nodes/pve1/lxc", Some(Endpoint::GuestCreate)),
            (
                "GET",
                "/nodes/pve1/lxc/101/status/current",
                Some(Endpoint::StatusCurrent),
            ),
            (
                "POST",
                "/nodes/pve1/lxc/101/status/start",
                Some(Endpoint::Power("start".into())),
            ),
            ("POST", "/nodes/pve1/lxc/101/status/explode", None),
            ("GET", "/nodes/pve1/lxc/101/status/start", None),
            (
                "PUT",
                "/nodes/pve1/lxc/101/config",
                Some(Endpoint::ConfigPut),
            ),
            ("POST", "/nodes/pve1/lxc/101/config", None),
            (
                "GET",
                "/nodes/pve1/tasks/UPID:x/log",
                Some(Endpoint::TaskLog),
            ),
            (
                "DELETE",
                "/nodes/pve1/tasks/UPID:x",
                Some(Endpoint::TaskStop),
            ),
            ("GET", "/cluster/nextid", Some(Endpoint::NextId)),
            ("GET", "/nope", None),
        ];
        for (method, path, expected) in cases {
            let method: Method = method.parse().unwrap();
            assert_eq!(
                route(&method, &segments(path)).map(|route| route.endpoint),
                *expected,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn reason_phrases_are_single_clean_lines() {
        assert_eq!(
            reason_text("CT 101 already running\n"),
            "CT 101 already running"
        );
        assert_eq!(
            reason_text("invalid format - x\nnext"),
            "invalid format - x"
        );
        assert_eq!(reason_text("tab\there"), "tab?here");
    }
}
