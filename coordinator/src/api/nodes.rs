//! Node, template, cluster and utility routes: the registry of Proxmox endpoints (secrets never
//! answered), node status, LXC templates, cluster resources, the next free VMID, a noVNC console
//! URL and an instance's RRD series.

use std::sync::Arc;

use http::Method;
use serde_json::{Map, Value, json};

use super::instances::registry_error;
use super::list::Page;
use super::tasks::respond_with_task;
use super::{Access, ApiError, ApiRequest, ApiResult, RouteTable, created, no_content, ok};
use crate::App;
use crate::auth::{parse_instance_id, require_instance};
use crate::instances::records::{instance, instances_per_node};
use crate::instances::{DownloadInput, kinds};
use crate::proxmox::registry::Registry;
use crate::proxmox::{ErrorClass, tls};
use crate::store::Table;
use crate::store::records::{InstanceRecord, ProxmoxNodeRecord};
use crate::tasks::NewTask;

fn report() -> Method {
    Method::from_bytes(b"REPORT").expect("REPORT is a valid method name")
}

pub fn routes(table: &mut RouteTable) {
    use Access::{Admin, Authenticated};
    table.add(
        Method::GET,
        "/api/v1/node",
        Authenticated,
        "nodes",
        "Registered Proxmox nodes with status",
        |a, r| Box::pin(list_nodes(a, r)),
    );
    table.add(
        report(),
        "/api/v1/node",
        Authenticated,
        "nodes",
        "The node report (same as GET /node)",
        |a, r| Box::pin(list_nodes(a, r)),
    );
    table.add(
        Method::POST,
        "/api/v1/node",
        Admin,
        "nodes",
        "Register a Proxmox endpoint {name, address, port, token_id, token_secret, fingerprint?, tags?}",
        |a, r| Box::pin(register_node(a, r)),
    );
    table.add(
        Method::GET,
        "/api/v1/node/{nodeid}",
        Authenticated,
        "nodes",
        "One node with status (cpu, memory, rootfs, swap, loadavg, uptime, pveversion)",
        |a, r| Box::pin(get_node(a, r)),
    );
    table.add(
        Method::DELETE,
        "/api/v1/node/{nodeid}",
        Admin,
        "nodes",
        "Unregister a node (409 while instances live there)",
        |a, r| Box::pin(delete_node(a, r)),
    );
    for path in ["/api/v1/template", "/api/v1/image"] {
        table.add(
            Method::GET,
            path,
            Authenticated,
            "templates",
            "LXC templates on each node's storage",
            |a, r| Box::pin(list_templates(a, r)),
        );
    }
    table.add(
        Method::POST,
        "/api/v1/template",
        Admin,
        "templates",
        "Download an appliance template {node, storage, template} (task)",
        |a, r| Box::pin(download_template(a, r)),
    );
    table.add(
        Method::GET,
        "/api/v1/cluster",
        Admin,
        "cluster",
        "Cluster resources of every registered endpoint (filter type)",
        |a, r| Box::pin(cluster_resources(a, r)),
    );
    table.add(
        report(),
        "/api/v1/cluster",
        Admin,
        "cluster",
        "The cluster report (same as GET /cluster)",
        |a, r| Box::pin(cluster_resources(a, r)),
    );
    table.add(
        Method::GET,
        "/api/v1/cluster/nextid",
        Authenticated,
        "cluster",
        "The next free VMID (nothing is reserved)",
        |a, r| Box::pin(next_id(a, r)),
    );
    table.add(
        Method::GET,
        "/api/v1/utils/vnc",
        Authenticated,
        "utils",
        "A noVNC console URL for an instance (id)",
        |a, r| Box::pin(vnc(a, r)),
    );
    table.add(
        Method::GET,
        "/api/v1/utils/graphic",
        Authenticated,
        "utils",
        "An instance's RRD series (id, timeframe hour|day|week|month|year)",
        |a, r| Box::pin(graphic(a, r)),
    );
}

/// The public form of a node record: never the token secret.
pub fn node_json(record: &ProxmoxNodeRecord) -> Value {
    json!({
        "id": record.name,
        "name": record.name,
        "address": record.address,
        "port": record.port,
        "scheme": record.scheme,
        "token_id": record.token_id,
        "fingerprint": record.fingerprint,
        "ca": record.ca_pem.is_some(),
        "insecure": record.insecure,
        "tags": record.tags,
        "created_at": record.created_at,
    })
}

fn pick(object: &Map<String, Value>, key: &str) -> Value {
    object.get(key).cloned().unwrap_or(Value::Null)
}

/// A node with its live status from Proxmox (or why it has none).
async fn node_with_status(app: &App, record: &ProxmoxNodeRecord, instances: u32) -> Value {
    let mut value = node_json(record);
    value["instances"] = json!(instances);
    let client = match app.proxmox.client(&app.store, &record.name) {
        Ok(client) => client,
        Err(error) => {
            value["status"] = json!("unknown");
            value["error"] = json!(error.to_string());
            return value;
        }
    };
    match client.node_status(&record.name).await {
        Ok(status) => {
            value["status"] = json!("online");
            for key in [
                "cpu",
                "cpuinfo",
                "memory",
                "rootfs",
                "swap",
                "loadavg",
                "uptime",
                "pveversion",
                "kversion",
                "ksm",
                "wait",
            ] {
                value[key] = pick(&status, key);
            }
        }
        Err(error) => {
            value["status"] = json!(match error.class() {
                ErrorClass::Unreachable | ErrorClass::Uncertain => "offline",
                _ => "unknown",
            });
            value["error"] = json!(error.proxmox_message());
        }
    }
    value
}

async fn list_nodes(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let page = Page::from_request(&request)?;
    let records = Registry::records(&app.store)?;
    let counts = instances_per_node(&app)?;
    let shown: Vec<&ProxmoxNodeRecord> =
        records.iter().skip(page.offset).take(page.limit).collect();
    let data = futures_util::future::join_all(shown.iter().map(|record| {
        node_with_status(&app, record, counts.get(&record.name).copied().unwrap_or(0))
    }))
    .await;
    ok(&page.body(&data, records.len()))
}

fn node_record(app: &App, name: &str) -> Result<ProxmoxNodeRecord, ApiError> {
    app.store
        .get(Table::ProxmoxNodes, name)?
        .ok_or_else(|| ApiError::not_found(format!("node {name:?} is not registered")))
}

async fn get_node(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let record = node_record(&app, request.param(0))?;
    let counts = instances_per_node(&app)?;
    let value = node_with_status(
        &app,
        &record,
        counts.get(&record.name).copied().unwrap_or(0),
    )
    .await;
    ok(&json!({ "node": value }))
}

fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// Checks a registration body; every bad field is named in one 422.
pub fn parse_node(body: &Value) -> Result<ProxmoxNodeRecord, ApiError> {
    let mut problems: Vec<(&str, String)> = Vec::new();
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::trim);
    let name = text("name").unwrap_or_default().to_string();
    if !valid_node_name(&name) {
        problems.push((
            "name",
            "must be the Proxmox node name (letters, digits, '-')".into(),
        ));
    }
    let address = text("address").unwrap_or_default().to_string();
    if address.is_empty() || address.len() > 253 || address.contains(['/', ' ', '?', '#', '@']) {
        problems.push(("address", "must be a host name or IP address".into()));
    }
    let port = match body.get("port") {
        None | Some(Value::Null) => Some(8006),
        Some(value) => crate::proxmox::types::lenient_u64(value)
            .and_then(|port| u16::try_from(port).ok())
            .filter(|port| *port > 0),
    };
    if port.is_none() {
        problems.push(("port", "must be a port number".into()));
    }
    let scheme = text("scheme").unwrap_or("https").to_string();
    if scheme != "https" && scheme != "http" {
        problems.push(("scheme", "must be https or http".into()));
    }
    let token_id = text("token_id").unwrap_or_default().to_string();
    if !token_id
        .split_once('!')
        .is_some_and(|(user, token)| user.contains('@') && !token.is_empty())
        || token_id.contains(['=', ' '])
    {
        problems.push(("token_id", "must look like USER@REALM!TOKENID".into()));
    }
    let token_secret = body
        .get("token_secret")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if token_secret.is_empty() || token_secret.chars().any(char::is_whitespace) {
        problems.push(("token_secret", "is required (the token's secret)".into()));
    }
    let fingerprint = text("fingerprint").filter(|text| !text.is_empty());
    let fingerprint = match fingerprint {
        Some(text) => match tls::parse_fingerprint(text) {
            Ok(pin) => Some(tls::format_fingerprint(&pin)),
            Err(reason) => {
                problems.push(("fingerprint", reason));
                None
            }
        },
        None => None,
    };
    let ca_pem = text("ca")
        .filter(|text| !text.is_empty())
        .map(str::to_string);
    if let Some(pem) = &ca_pem
        && tls::client_config(&tls::Trust::CaPem(pem.clone())).is_err()
    {
        problems.push(("ca", "must be PEM certificates".into()));
    }
    let insecure = body
        .get("insecure")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if scheme == "https" && fingerprint.is_none() && ca_pem.is_none() && !insecure {
        problems.push((
            "fingerprint",
            "is required for https (or give ca, or set insecure: true explicitly)".into(),
        ));
    }
    let tags: Vec<String> = match body.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => text
            .split([',', ';'])
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(_) => {
            problems.push(("tags", "must be a string or a list of strings".into()));
            Vec::new()
        }
    };
    if !problems.is_empty() {
        return Err(ApiError::invalid(&problems));
    }
    Ok(ProxmoxNodeRecord {
        name,
        address,
        port: port.unwrap_or(8006),
        scheme,
        token_id,
        token_secret,
        fingerprint,
        ca_pem,
        insecure,
        tags,
        created_at: crate::clock::now_rfc3339(),
    })
}

async fn register_node(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let body = request
        .json_body()?
        .cloned()
        .ok_or_else(|| ApiError::bad_request("a JSON body is required"))?;
    let record = parse_node(&body)?;
    if app
        .store
        .get::<ProxmoxNodeRecord>(Table::ProxmoxNodes, &record.name)?
        .is_some()
    {
        return Err(ApiError::conflict(format!(
            "node {} is already registered",
            record.name
        )));
    }
    // The endpoint must answer with this token and know a node of this name.
    let client = app.proxmox.client_for(&record)?;
    let nodes = client.nodes().await?;
    if !nodes.iter().any(|node| node.node == record.name) {
        let known: Vec<&str> = nodes.iter().map(|node| node.node.as_str()).collect();
        return Err(ApiError::invalid_field(
            "name",
            format!(
                "the endpoint has no node {:?} (it has: {})",
                record.name,
                known.join(", ")
            ),
        ));
    }
    let inserted = app.store.write(|write| {
        if write
            .get::<ProxmoxNodeRecord>(Table::ProxmoxNodes, &record.name)?
            .is_some()
        {
            return Ok::<bool, crate::store::StoreError>(false);
        }
        write.put(Table::ProxmoxNodes, &record.name, &record)?;
        Ok(true)
    })?;
    if !inserted {
        return Err(ApiError::conflict(format!(
            "node {} is already registered",
            record.name
        )));
    }
    app.proxmox.forget(&record.name);
    tracing::info!(node = %record.name, address = %record.address, "registered a Proxmox node");
    created(&json!({ "node": node_json(&record) }))
}

async fn delete_node(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let name = request.param(0).to_string();
    let outcome = app.store.write(|write| {
        if write
            .get::<ProxmoxNodeRecord>(Table::ProxmoxNodes, &name)?
            .is_none()
        {
            return Ok::<Result<(), ApiError>, crate::store::StoreError>(Err(ApiError::not_found(
                format!("node {name:?} is not registered"),
            )));
        }
        let living = write
            .list::<InstanceRecord>(Table::Instances)?
            .into_iter()
            .filter(|(_, record)| record.node == name)
            .count();
        if living > 0 {
            return Ok(Err(ApiError::conflict(format!(
                "{living} instance(s) live on node {name}; destroy or move them first"
            ))));
        }
        write.delete(Table::ProxmoxNodes, &name)?;
        Ok(Ok(()))
    })?;
    outcome?;
    app.proxmox.forget(&name);
    no_content()
}

async fn list_templates(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let page = Page::from_request(&request)?;
    let wanted_node = request.field("node")?;
    let mut templates = Vec::new();
    for record in Registry::records(&app.store)? {
        if wanted_node
            .as_ref()
            .is_some_and(|node| *node != record.name)
        {
            continue;
        }
        let client = app
            .proxmox
            .client(&app.store, &record.name)
            .map_err(registry_error)?;
        let storages = match client.storages(&record.name, Some("vztmpl")).await {
            Ok(storages) => storages,
            Err(error) => {
                tracing::warn!(node = %record.name, %error, "cannot list templates");
                continue;
            }
        };
        for storage in storages.iter().filter(|storage| storage.holds("vztmpl")) {
            let volumes = client
                .storage_content(&record.name, &storage.storage, Some("vztmpl"))
                .await?;
            for volume in volumes {
                let name = volume
                    .volid
                    .rsplit_once('/')
                    .map(|(_, name)| name.to_string())
                    .unwrap_or_else(|| volume.volid.clone());
                templates.push(json!({
                    "node": record.name,
                    "storage": storage.storage,
                    "volid": volume.volid,
                    "name": name,
                    "format": volume.format,
                    "size": volume.size,
                    "content": "vztmpl",
                }));
            }
        }
    }
    ok(&page.slice(&templates))
}

async fn download_template(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?.clone();
    let body = request.json_body()?.cloned().unwrap_or(Value::Null);
    let text = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(str::to_string)
    };
    let mut problems: Vec<(&str, String)> = Vec::new();
    let node = text("node");
    let storage = text("storage").unwrap_or_else(|| "local".into());
    let template = text("template");
    if node.is_none() {
        problems.push(("node", "is required".into()));
    }
    match &template {
        None => problems.push(("template", "is required".into())),
        Some(name) if name.contains('/') || name.len() > 255 => {
            problems.push(("template", "must be an appliance file name".into()));
        }
        _ => {}
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(&problems));
    }
    let node = node.unwrap_or_default();
    node_record(&app, &node)
        .map_err(|_| ApiError::invalid_field("node", format!("node {node:?} is not registered")))?;
    let input = DownloadInput {
        node,
        storage,
        template: template.unwrap_or_default(),
    };
    let task = NewTask::new(kinds::DOWNLOAD, principal.user_id.clone())
        .input(serde_json::to_value(&input).map_err(ApiError::internal)?)
        .deadline(app.proxmox.deadlines().download);
    respond_with_task(&app, &request, task).await
}

async fn cluster_resources(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let page = Page::from_request(&request)?;
    let kind = request.field("type")?;
    if let Some(kind) = &kind
        && !["vm", "storage", "node", "sdn"].contains(&kind.as_str())
    {
        return Err(ApiError::invalid_field(
            "type",
            "must be vm, storage, node or sdn",
        ));
    }
    // Several registered nodes may share one endpoint: ask each endpoint once.
    let mut seen_endpoints = Vec::new();
    let mut resources: Vec<Value> = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for record in Registry::records(&app.store)? {
        let endpoint = crate::proxmox::registry::base_url(&record);
        if seen_endpoints.contains(&endpoint) {
            continue;
        }
        seen_endpoints.push(endpoint);
        let client = app
            .proxmox
            .client(&app.store, &record.name)
            .map_err(registry_error)?;
        for resource in client.cluster_resources(kind.as_deref()).await? {
            let id = resource
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if ids.insert(id) {
                resources.push(Value::Object(resource));
            }
        }
    }
    ok(&page.slice(&resources))
}

async fn next_id(app: Arc<App>, _request: ApiRequest) -> ApiResult {
    let records = Registry::records(&app.store)?;
    let Some(record) = records.first() else {
        return Err(ApiError::unavailable(
            "no_nodes",
            "no Proxmox node is registered",
        ));
    };
    let client = app
        .proxmox
        .client(&app.store, &record.name)
        .map_err(registry_error)?;
    let mut candidate = client.next_id(None).await?;
    // Skip ids the coordinator has reserved for creates that Proxmox has not seen yet.
    for _ in 0..1000 {
        if instance(&app, candidate)?.is_none() {
            break;
        }
        candidate += 1;
    }
    ok(&json!({ "data": candidate, "id": candidate }))
}

fn instance_from_query(app: &App, request: &ApiRequest) -> Result<InstanceRecord, ApiError> {
    let principal = request.principal()?;
    let id = request
        .field("id")?
        .ok_or_else(|| ApiError::invalid_field("id", "is required"))?;
    let id = parse_instance_id(&id)?;
    Ok(require_instance(app, principal, id)?)
}

fn query_escape(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|encoded| encoded.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

async fn vnc(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let record = instance_from_query(&app, &request)?;
    let node = node_record(&app, &record.node)?;
    let client = app
        .proxmox
        .client(&app.store, &record.node)
        .map_err(registry_error)?;
    let ticket = client.vnc_proxy(&record.node, record.id).await?;
    let host = if node.address.contains(':') {
        format!("[{}]", node.address)
    } else {
        node.address.clone()
    };
    let websocket_path = format!(
        "api2/json/nodes/{}/lxc/{}/vncwebsocket?port={}&vncticket={}",
        record.node,
        record.id,
        ticket.port,
        query_escape(&ticket.ticket)
    );
    let url = format!(
        "{}://{host}:{}/novnc/vnc.html?autoconnect=1&resize=scale&host={}&port={}&encrypt={}&path={}&password={}",
        node.scheme,
        node.port,
        query_escape(&node.address),
        node.port,
        u8::from(node.scheme == "https"),
        query_escape(&websocket_path),
        query_escape(&ticket.ticket),
    );
    ok(&json!({
        "url": url,
        "node": record.node,
        "id": record.id,
        "port": ticket.port,
    }))
}

async fn graphic(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let record = instance_from_query(&app, &request)?;
    let timeframe = request.field("timeframe")?.unwrap_or_else(|| "hour".into());
    if !["hour", "day", "week", "month", "year"].contains(&timeframe.as_str()) {
        return Err(ApiError::invalid_field(
            "timeframe",
            "must be hour, day, week, month or year",
        ));
    }
    let client = app
        .proxmox
        .client(&app.store, &record.node)
        .map_err(registry_error)?;
    let points = client.rrd_data(&record.node, record.id, &timeframe).await?;
    ok(&json!({
        "id": record.id,
        "node": record.node,
        "timeframe": timeframe,
        "data": points,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_checked() {
        let good = json!({
            "name": "pve1", "address": "10.0.0.5", "port": "8006",
            "token_id": "hostplane@pve!coordinator", "token_secret": "s3cr3t",
            "fingerprint": "ab".repeat(32), "tags": "eu, ssd"
        });
        let record = parse_node(&good).unwrap();
        assert_eq!(record.port, 8006);
        assert_eq!(record.tags, vec!["eu", "ssd"]);
        assert_eq!(
            record.fingerprint.as_deref(),
            Some(&*("AB:".repeat(31) + "AB"))
        );
        assert!(!node_json(&record).to_string().contains("s3cr3t"));

        let cases: &[(Value, &[&str])] = &[
            (
                json!({}),
                &["name", "address", "token_id", "token_secret", "fingerprint"],
            ),
            (
                json!({"name": "pve 1", "address": "a/b", "port": 70000, "token_id": "x",
                       "token_secret": "s", "fingerprint": "zz"}),
                &["name", "address", "port", "token_id", "fingerprint"],
            ),
            (
                json!({"name": "pve1", "address": "h", "token_id": "a@b!c", "token_secret": "s",
                       "scheme": "ftp", "insecure": true, "tags": 5}),
                &["scheme", "tags"],
            ),
        ];
        for (body, names) in cases {
            let error = parse_node(body).expect_err(&body.to_string());
            let fields = &error.details.as_ref().unwrap()["fields"];
            for name in *names {
                assert!(
                    fields.get(*name).is_some(),
                    "{body}: {name} missing in {fields}"
                );
            }
        }
        let plain = json!({"name": "pve1", "address": "127.0.0.1", "scheme": "http",
                           "token_id": "a@b!c", "token_secret": "s"});
        assert!(parse_node(&plain).is_ok());
    }
}
