//! Instance routes: LXC containers whose lifecycle runs through Proxmox as tasks. Ownership and
//! quotas are checked here, before Proxmox is called; the work itself is in
//! [`crate::proxmox::lifecycle`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::Method;
use serde_json::{Map, Value, json};

use super::list::Page;
use super::tasks::respond_with_task;
use super::{Access, ApiError, ApiRequest, ApiResult, RouteTable, ok};
use crate::App;
use crate::auth::{Principal, parse_instance_id, require_instance};
use crate::proxmox::lifecycle::{
    self, CreateInput, PowerInput, ReserveError, UpdateInput, power_action,
};
use crate::proxmox::registry::{Inventory, Registry, RegistryError};
use crate::proxmox::types::ContainerStatus;
use crate::proxmox::{Client, property};
use crate::store::Table;
use crate::store::records::{InstanceRecord, UserRecord};
use crate::tasks::NewTask;

pub fn routes(table: &mut RouteTable) {
    use Access::Authenticated;
    table.add(
        Method::GET,
        "/api/v1/instance",
        Authenticated,
        "instances",
        "List instances with live status (customer: own; admin: all, filter user)",
        |a, r| Box::pin(list_instances(a, r)),
    );
    table.add(
        Method::POST,
        "/api/v1/instance",
        Authenticated,
        "instances",
        "Create an instance; the VMID is allocated safely (task)",
        |a, r| Box::pin(create_instance(a, r, None)),
    );
    table.add(
        Method::GET,
        "/api/v1/instance/{id}",
        Authenticated,
        "instances",
        "One instance: record, Proxmox config, live status, agent status",
        |a, r| Box::pin(get_instance(a, r)),
    );
    table.add(
        Method::POST,
        "/api/v1/instance/{id}",
        Authenticated,
        "instances",
        "Create an instance with this VMID (task); 409 if taken",
        |a, r| {
            Box::pin(async move {
                let id = parse_instance_id(r.param(0))?;
                create_instance(a, r, Some(id)).await
            })
        },
    );
    table.add(
        Method::PUT,
        "/api/v1/instance/{id}",
        Authenticated,
        "instances",
        "Change cpu, memory, swap, disk (grow only) or hostname (task)",
        |a, r| Box::pin(change_instance(a, r)),
    );
    table.add(
        Method::DELETE,
        "/api/v1/instance/{id}",
        Authenticated,
        "instances",
        "Stop if running, destroy and purge the instance (task)",
        |a, r| Box::pin(delete_instance(a, r)),
    );
    table.add(
        Method::POST,
        "/api/v1/instance/{id}/status/{action}",
        Authenticated,
        "instances",
        "start, stop, shutdown, reboot, suspend or unsuspend (task)",
        |a, r| Box::pin(instance_action(a, r)),
    );
}

// --- Errors ----------------------------------------------------------------------------------

pub(crate) fn registry_error(error: RegistryError) -> ApiError {
    match error {
        RegistryError::UnknownNode(node) => {
            ApiError::invalid_field("node", format!("node {node:?} is not registered"))
        }
        RegistryError::Store(error) => error.into(),
        RegistryError::Proxmox(error) => error.into(),
    }
}

fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(http::StatusCode::CONFLICT, code, message)
}

// --- Input -----------------------------------------------------------------------------------

/// The request's input as a JSON object: the body, or the query string without a body.
fn input_object(request: &ApiRequest) -> Result<Map<String, Value>, ApiError> {
    match request.json_body()? {
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        None => Ok(request
            .query
            .iter()
            .filter(|(key, _)| key != "wait")
            .map(|(key, value)| (key.clone(), Value::String(value.clone())))
            .collect()),
    }
}

/// Reads fields by name or alias and collects one reason per bad field.
struct Fields {
    map: Map<String, Value>,
    problems: Vec<(String, String)>,
}

impl Fields {
    fn new(map: Map<String, Value>) -> Fields {
        Fields {
            map,
            problems: Vec::new(),
        }
    }

    /// The value under `name` or one of its aliases; the field is named as `name`.
    fn raw(&self, names: &[&str]) -> Option<&Value> {
        names
            .iter()
            .find_map(|name| self.map.get(*name).filter(|value| !value.is_null()))
    }

    fn bad(&mut self, name: &str, reason: impl Into<String>) {
        self.problems.push((name.to_string(), reason.into()));
    }

    fn text(&mut self, names: &[&str]) -> Option<String> {
        match self.raw(names)? {
            Value::String(text) => Some(text.trim().to_string()),
            Value::Number(number) => Some(number.to_string()),
            _ => {
                self.bad(names[0], "must be a string");
                None
            }
        }
    }

    /// A whole number in `range`, sent as a number or a numeric string.
    fn number(&mut self, names: &[&str], range: std::ops::RangeInclusive<u64>) -> Option<u64> {
        let value = self.raw(names)?.clone();
        let number = crate::proxmox::types::lenient_u64(&value).filter(|_| match &value {
            Value::Number(number) => number.is_u64(),
            Value::String(text) => text.trim().parse::<u64>().is_ok(),
            _ => false,
        });
        match number {
            Some(number) if range.contains(&number) => Some(number),
            Some(_) => {
                self.bad(
                    names[0],
                    format!("must be between {} and {}", range.start(), range.end()),
                );
                None
            }
            None => {
                self.bad(names[0], "must be a whole number");
                None
            }
        }
    }

    fn boolean(&mut self, names: &[&str]) -> Option<bool> {
        match self.raw(names)? {
            Value::Bool(flag) => Some(*flag),
            Value::Number(number) if number.as_u64() == Some(0) => Some(false),
            Value::Number(number) if number.as_u64() == Some(1) => Some(true),
            Value::String(text) => match text.trim() {
                "1" | "true" | "yes" => Some(true),
                "0" | "false" | "no" => Some(false),
                _ => {
                    self.bad(names[0], "must be a boolean");
                    None
                }
            },
            _ => {
                self.bad(names[0], "must be a boolean");
                None
            }
        }
    }

    fn finish(self) -> Result<Map<String, Value>, ApiError> {
        if self.problems.is_empty() {
            Ok(self.map)
        } else {
            let fields: Vec<(&str, String)> = self
                .problems
                .iter()
                .map(|(name, reason)| (name.as_str(), reason.clone()))
                .collect();
            Err(ApiError::invalid(&fields))
        }
    }
}

/// A DNS host name as Proxmox accepts it.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

const OS_TYPES: &[&str] = &[
    "debian",
    "devuan",
    "ubuntu",
    "centos",
    "fedora",
    "opensuse",
    "archlinux",
    "alpine",
    "gentoo",
    "nixos",
    "unmanaged",
];

fn valid_storage_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
}

/// The checked fields of a create request.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    pub user: Option<String>,
    pub template: String,
    pub hostname: String,
    pub cpu: u32,
    pub memory: u64,
    pub swap: u64,
    pub disk: u64,
    pub node: Option<String>,
    pub storage: Option<String>,
    pub ostype: Option<String>,
    pub password: Option<String>,
    pub ssh_keys: Option<String>,
    pub net: Option<String>,
    pub start: bool,
}

/// Checks a create body (seed 001's fields; seed 004's `image`, `name`, `nodeId`, `variables`
/// as aliases). Every bad field is named in one 422.
pub fn parse_create(map: Map<String, Value>) -> Result<CreateRequest, ApiError> {
    let mut fields = Fields::new(map);
    let user = fields.text(&["user", "username", "userId"]);
    let template = fields.text(&["template", "image", "ostemplate"]);
    match &template {
        None if !fields.problems.iter().any(|(name, _)| name == "template") => {
            fields.bad("template", "is required");
        }
        Some(text) if text.is_empty() || text.len() > 255 => {
            fields.bad("template", "must be 1 to 255 characters");
        }
        _ => {}
    }
    let hostname = fields.text(&["hostname", "name"]);
    match &hostname {
        None if !fields.problems.iter().any(|(name, _)| name == "hostname") => {
            fields.bad("hostname", "is required");
        }
        Some(name) if !valid_hostname(name) => {
            fields.bad(
                "hostname",
                "must be a DNS name (letters, digits, '-' and '.')",
            );
        }
        _ => {}
    }
    let cpu = fields.number(&["cpu", "cores"], 1..=8192).unwrap_or(1) as u32;
    let memory = fields
        .number(&["memory"], 16..=4 * 1024 * 1024)
        .unwrap_or(512);
    let swap = fields.number(&["swap"], 0..=4 * 1024 * 1024).unwrap_or(512);
    let disk = fields.number(&["disk"], 1..=128 * 1024).unwrap_or(8);
    let node = fields.text(&["node", "nodeId"]);
    let storage = fields.text(&["storage"]);
    if let Some(storage) = &storage
        && !valid_storage_name(storage)
    {
        fields.bad("storage", "must be a storage name");
    }
    let ostype = fields.text(&["ostype"]);
    if let Some(ostype) = &ostype
        && !OS_TYPES.contains(&ostype.as_str())
    {
        fields.bad("ostype", format!("must be one of {}", OS_TYPES.join(", ")));
    }
    let password = match fields.raw(&["password"]) {
        Some(Value::String(password)) if password.chars().count() >= 5 => Some(password.clone()),
        Some(Value::String(_)) => {
            fields.bad("password", "must be at least 5 characters");
            None
        }
        Some(_) => {
            fields.bad("password", "must be a string");
            None
        }
        None => None,
    };
    let ssh_keys = match fields.raw(&["ssh_keys", "ssh-public-keys"]).cloned() {
        None => None,
        Some(value) => {
            let keys: Option<Vec<String>> = match value {
                Value::String(text) => Some(
                    text.lines()
                        .map(str::trim)
                        .filter(|line| !line.is_empty())
                        .map(str::to_string)
                        .collect(),
                ),
                Value::Array(items) => items
                    .iter()
                    .map(|item| item.as_str().map(|text| text.trim().to_string()))
                    .collect(),
                _ => None,
            };
            match keys {
                Some(keys)
                    if !keys.is_empty()
                        && keys.iter().all(|key| {
                            key.split_whitespace().count() >= 2
                                && ["ssh-", "ecdsa-", "sk-"]
                                    .iter()
                                    .any(|prefix| key.starts_with(prefix))
                        }) =>
                {
                    Some(keys.join("\n"))
                }
                _ => {
                    fields.bad(
                        "ssh_keys",
                        "must be OpenSSH public keys (a string of lines or a list)",
                    );
                    None
                }
            }
        }
    };
    let net = match fields.raw(&["net"]).cloned() {
        None => None,
        Some(value) => match property::network(&value) {
            Ok(net) => Some(net),
            Err(reason) => {
                fields.bad("net", reason);
                None
            }
        },
    };
    let start = fields.boolean(&["start"]).unwrap_or(false);
    if let Some(variables) = fields.raw(&["variables"])
        && !variables.is_object()
    {
        fields.bad("variables", "must be an object");
    }
    fields.finish()?;
    Ok(CreateRequest {
        user,
        template: template.unwrap_or_default(),
        hostname: hostname.unwrap_or_default(),
        cpu,
        memory,
        swap,
        disk,
        node,
        storage,
        ostype,
        password,
        ssh_keys,
        net,
        start,
    })
}

// --- Placement -------------------------------------------------------------------------------

/// The node for a new instance: the named one, else the online registered node with the most
/// free memory.
async fn choose_node(app: &App, wanted: Option<&str>) -> Result<(String, Client), ApiError> {
    if let Some(node) = wanted {
        let client = app
            .proxmox
            .client(&app.store, node)
            .map_err(registry_error)?;
        return Ok((node.to_string(), client));
    }
    let records = Registry::records(&app.store)?;
    if records.is_empty() {
        return Err(ApiError::unavailable(
            "no_nodes",
            "no Proxmox node is registered; an admin registers one with POST /api/v1/node",
        ));
    }
    let mut best: Option<(u64, String, Client)> = None;
    let mut last_error = None;
    for record in records {
        let client = match app.proxmox.client(&app.store, &record.name) {
            Ok(client) => client,
            Err(error) => {
                last_error = Some(registry_error(error));
                continue;
            }
        };
        match client.nodes().await {
            Ok(nodes) => {
                if let Some(summary) = nodes
                    .iter()
                    .find(|summary| summary.node == record.name && summary.status == "online")
                {
                    let free = summary
                        .maxmem
                        .unwrap_or(0)
                        .saturating_sub(summary.mem.unwrap_or(0));
                    if best.as_ref().is_none_or(|(most, _, _)| free > *most) {
                        best = Some((free, record.name.clone(), client));
                    }
                }
            }
            Err(error) => last_error = Some(error.into()),
        }
    }
    match best {
        Some((_, node, client)) => Ok((node, client)),
        None => Err(last_error.unwrap_or_else(|| {
            ApiError::unavailable("no_nodes", "no registered Proxmox node is online")
        })),
    }
}

/// What `node` offers to new containers: as kept from a recent read, or read now (always
/// when `fresh`). One storage list, then the template storages' contents side by side.
async fn inventory(
    app: &App,
    client: &Client,
    node: &str,
    fresh: bool,
) -> Result<Arc<Inventory>, ApiError> {
    if !fresh && let Some(inventory) = app.proxmox.inventory(node) {
        return Ok(inventory);
    }
    let storages = client.storages(node, None).await?;
    let contents = storages
        .iter()
        .filter(|storage| storage.holds("vztmpl"))
        .map(|storage| client.storage_content(node, &storage.storage, Some("vztmpl")));
    let mut templates = Vec::new();
    for content in futures_util::future::join_all(contents).await {
        templates.extend(content?.into_iter().map(|volume| volume.volid));
    }
    templates.sort();
    Ok(app.proxmox.keep_inventory(
        node,
        Inventory {
            storages,
            templates,
        },
    ))
}

/// The template volume and the root disk storage of a create on `node`. A kept inventory is
/// used when it has both; otherwise the node is asked again before the request is refused.
async fn resolve_placement(
    app: &App,
    client: &Client,
    node: &str,
    template: &str,
    storage: Option<&str>,
) -> Result<(String, String), ApiError> {
    // What was read a moment ago is trusted only while the node answers; otherwise the node
    // is asked now, so a create on an unreachable node is refused at once.
    let kept = inventory(app, client, node, !client.last_call_reached()).await?;
    if let (Ok(volid), Ok(storage)) = (
        resolve_template(&kept, node, template),
        resolve_storage(&kept, node, storage),
    ) {
        return Ok((volid, storage));
    }
    let current = inventory(app, client, node, true).await?;
    Ok((
        resolve_template(&current, node, template)?,
        resolve_storage(&current, node, storage)?,
    ))
}

/// Resolves a template name to a volume id on the node: a full volid must exist there; a short
/// name matches the file name or its beginning (`debian-12`).
fn resolve_template(inventory: &Inventory, node: &str, template: &str) -> Result<String, ApiError> {
    let volumes = &inventory.templates;
    let file_name = |volid: &str| {
        volid
            .rsplit_once('/')
            .map(|(_, name)| name.to_string())
            .unwrap_or_else(|| volid.to_string())
    };
    let found = if template.contains(':') {
        volumes.iter().find(|volid| *volid == template)
    } else {
        volumes
            .iter()
            .find(|volid| file_name(volid) == template)
            .or_else(|| {
                volumes
                    .iter()
                    .find(|volid| file_name(volid).starts_with(template))
            })
    };
    found.cloned().ok_or_else(|| {
        let known: Vec<String> = volumes.iter().map(|volid| file_name(volid)).collect();
        ApiError::invalid_field(
            "template",
            format!(
                "no template {template:?} on node {node} (available: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ),
        )
    })
}

/// The storage for root disks: the named one if it holds `rootdir`, else the first that does
/// (`local-lvm` preferred).
fn resolve_storage(
    inventory: &Inventory,
    node: &str,
    wanted: Option<&str>,
) -> Result<String, ApiError> {
    let usable: Vec<&str> = inventory
        .storages
        .iter()
        .filter(|storage| storage.holds("rootdir"))
        .map(|storage| storage.storage.as_str())
        .collect();
    match wanted {
        Some(name) if usable.contains(&name) => Ok(name.to_string()),
        Some(name) => Err(ApiError::invalid_field(
            "storage",
            format!(
                "storage {name:?} on node {node} cannot hold containers (usable: {})",
                usable.join(", ")
            ),
        )),
        None => usable
            .iter()
            .find(|name| **name == "local-lvm")
            .or(usable.first())
            .map(|name| name.to_string())
            .ok_or_else(|| {
                ApiError::invalid_field("storage", format!("node {node} has no container storage"))
            }),
    }
}

// --- Ownership and quotas --------------------------------------------------------------------

fn user_record(app: &App, id: &str) -> Result<Option<UserRecord>, ApiError> {
    if let Some(user) = app.store.get::<UserRecord>(Table::Users, id)? {
        return Ok(Some(user));
    }
    // A username is accepted too (seed 001 names users by username).
    let id: Option<String> = app.store.get(Table::UsernameIndex, &id.to_lowercase())?;
    match id {
        Some(id) => Ok(app.store.get(Table::Users, &id)?),
        None => Ok(None),
    }
}

/// The owner of a new instance: the caller, or for an admin the named user.
fn owner_of(app: &App, principal: &Principal, named: Option<&str>) -> Result<UserRecord, ApiError> {
    let Some(named) = named else {
        return user_record(app, &principal.user_id)?
            .ok_or_else(|| ApiError::unauthorized("the caller's account no longer exists"));
    };
    let user = user_record(app, named)?;
    match user {
        Some(user) if principal.is_admin() || user.id == principal.user_id => Ok(user),
        Some(_) => Err(ApiError::forbidden(
            "customers create instances for themselves only",
        )),
        None if principal.is_admin() => Err(ApiError::invalid_field(
            "user",
            format!("no user {named:?}"),
        )),
        None => Err(ApiError::forbidden(
            "customers create instances for themselves only",
        )),
    }
}

/// What a user's instances use: (instances, cores, memory MiB, disk GiB).
pub fn usage(app: &App, user: &str, except: Option<u32>) -> Result<(u32, u64, u64, u64), ApiError> {
    let records: Vec<(String, InstanceRecord)> = app.store.list(Table::Instances)?;
    Ok(records
        .iter()
        .map(|(_, record)| record)
        .filter(|record| record.user == user && Some(record.id) != except)
        .fold((0, 0, 0, 0), |(count, cores, memory, disk), record| {
            (
                count + 1,
                cores + u64::from(record.cpu),
                memory + record.memory,
                disk + record.disk,
            )
        }))
}

/// Refuses (409 `quota_exceeded`) when `user` would exceed a limit with one more instance of
/// this size (or, with `except`, with that instance resized to it).
pub fn check_quota(
    app: &App,
    user: &UserRecord,
    except: Option<u32>,
    cpu: u32,
    memory: u64,
    disk: u64,
) -> Result<(), ApiError> {
    let (count, cores, used_memory, used_disk) = usage(app, &user.id, except)?;
    let quota = &user.quota;
    let mut exceeded = Vec::new();
    if except.is_none()
        && let Some(max) = quota.max_instances
        && count + 1 > max
    {
        exceeded.push(format!("instances {} > {max}", count + 1));
    }
    if let Some(max) = quota.max_cores
        && cores + u64::from(cpu) > u64::from(max)
    {
        exceeded.push(format!("cores {} > {max}", cores + u64::from(cpu)));
    }
    if let Some(max) = quota.max_memory
        && used_memory + memory > max
    {
        exceeded.push(format!("memory {} MiB > {max} MiB", used_memory + memory));
    }
    if let Some(max) = quota.max_disk
        && used_disk + disk > max
    {
        exceeded.push(format!("disk {} GiB > {max} GiB", used_disk + disk));
    }
    if exceeded.is_empty() {
        Ok(())
    } else {
        Err(conflict(
            "quota_exceeded",
            format!(
                "the quota of user {} would be exceeded: {}",
                user.username,
                exceeded.join(", ")
            ),
        )
        .with_details(json!({ "quota": quota, "exceeded": exceeded })))
    }
}

/// Refuses customers' changes to a suspended instance, and every change while it is being
/// created or destroyed.
pub(crate) fn check_changeable(
    principal: &Principal,
    record: &InstanceRecord,
) -> Result<(), ApiError> {
    if record.suspended && !principal.is_admin() {
        return Err(conflict(
            "instance_suspended",
            format!(
                "instance {} is suspended; only an admin can change it until it is unsuspended",
                record.id
            ),
        ));
    }
    match record.state.as_str() {
        "creating" => Err(conflict(
            "instance_busy",
            format!("instance {} is still being created", record.id),
        )),
        "destroying" => Err(conflict(
            "instance_busy",
            format!("instance {} is being destroyed", record.id),
        )),
        _ => Ok(()),
    }
}

// --- Views -----------------------------------------------------------------------------------

/// The API form of an instance, with live facts when they are known.
pub fn instance_json(record: &InstanceRecord, live: Option<&ContainerStatus>) -> Value {
    let status = match (record.state.as_str(), live) {
        (_, Some(live)) => live.status.clone(),
        ("creating", None) => "creating".into(),
        _ => "unknown".into(),
    };
    let status = if record.suspended && status == "running" {
        "suspended".to_string()
    } else {
        status
    };
    let mut value = json!({
        "id": record.id,
        "hostname": record.hostname,
        "user": record.user,
        "node": record.node,
        "status": status,
        "state": record.state,
        "suspended": record.suspended,
        "cpu": record.cpu,
        "memory": record.memory,
        "swap": record.swap,
        "disk": record.disk,
        "template": record.template,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    });
    if let Some(live) = live {
        value["live"] = json!({
            "status": live.status,
            "lock": live.lock,
            "cpu": live.cpu,
            "cpus": live.cpus,
            "mem": live.mem,
            "maxmem": live.maxmem,
            "swap": live.swap,
            "maxswap": live.maxswap,
            "disk": live.disk,
            "maxdisk": live.maxdisk,
            "netin": live.netin,
            "netout": live.netout,
            "uptime": live.uptime,
        });
    }
    value
}

/// The agent's status for `GET /instance/<id>`. The agent channel plugs in here; until it
/// exists every instance reports `never`.
pub fn agent_status_hook(app: &App, id: u32) -> Value {
    let _ = (app, id);
    json!({ "connected": false, "state": "never" })
}

async fn list_instances(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?;
    let page = Page::from_request(&request)?;
    let filter_user = request.field("user")?;
    let records: Vec<(String, InstanceRecord)> = app.store.list(Table::Instances)?;
    let wanted_user = match (&filter_user, principal.is_admin()) {
        (Some(named), true) => Some(
            user_record(&app, named)?
                .map(|user| user.id)
                .unwrap_or_else(|| named.clone()),
        ),
        (_, true) => None,
        (_, false) => Some(principal.user_id.clone()),
    };
    let visible: Vec<InstanceRecord> = records
        .into_iter()
        .map(|(_, record)| record)
        .filter(|record| wanted_user.as_ref().is_none_or(|user| &record.user == user))
        .filter(|record| {
            principal
                .instance_scope
                .as_ref()
                .is_none_or(|scope| scope.contains(&record.id))
        })
        .collect();
    let total = visible.len();
    let shown: Vec<InstanceRecord> = visible
        .into_iter()
        .skip(page.offset)
        .take(page.limit)
        .collect();
    // One list call per node gives the live status of every instance shown.
    let nodes: Vec<String> = {
        let mut nodes: Vec<String> = shown.iter().map(|record| record.node.clone()).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    };
    let lookups = nodes.iter().map(|node| {
        let app = app.clone();
        async move {
            let client = app.proxmox.client(&app.store, node).ok()?;
            client.containers(node).await.ok()
        }
    });
    let answers = futures_util::future::join_all(lookups).await;
    let mut live: HashMap<(String, u32), ContainerStatus> = HashMap::new();
    for (node, answer) in nodes.iter().zip(answers) {
        for status in answer.unwrap_or_default() {
            live.insert((node.clone(), status.vmid), status);
        }
    }
    let data: Vec<Value> = shown
        .iter()
        .map(|record| instance_json(record, live.get(&(record.node.clone(), record.id))))
        .collect();
    ok(&page.body(&data, total))
}

async fn get_instance(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?;
    let id = parse_instance_id(request.param(0))?;
    let record = require_instance(&app, principal, id)?;
    let mut live = None;
    let mut config = Value::Null;
    let mut proxmox_error = Value::Null;
    match app.proxmox.client(&app.store, &record.node) {
        Ok(client) => {
            let (status, configuration) = tokio::join!(
                client.container_status(&record.node, id),
                client.container_config(&record.node, id)
            );
            match status {
                Ok(status) => live = Some(status),
                Err(error) => proxmox_error = json!(error.proxmox_message()),
            }
            if let Ok(configuration) = configuration {
                config = Value::Object(configuration);
            }
        }
        Err(error) => proxmox_error = json!(error.to_string()),
    }
    let mut value = instance_json(&record, live.as_ref());
    value["config"] = config;
    value["agent"] = agent_status_hook(&app, id);
    if !proxmox_error.is_null() {
        value["proxmox_error"] = proxmox_error;
    }
    ok(&json!({ "instance": value }))
}

async fn create_instance(app: Arc<App>, request: ApiRequest, wanted: Option<u32>) -> ApiResult {
    let principal = request.principal()?.clone();
    let create = parse_create(input_object(&request)?)?;
    let owner = owner_of(&app, &principal, create.user.as_deref())?;
    if let Some(id) = wanted
        && lifecycle::instance(&app, id)?.is_some()
    {
        return Err(conflict(
            "instance_exists",
            format!("instance {id} already exists"),
        ));
    }
    check_quota(&app, &owner, None, create.cpu, create.memory, create.disk)?;
    let (node, client) = choose_node(&app, create.node.as_deref()).await?;
    let (ostemplate, storage) = resolve_placement(
        &app,
        &client,
        &node,
        &create.template,
        create.storage.as_deref(),
    )
    .await?;
    let now = crate::clock::now_rfc3339();
    let mut record = InstanceRecord {
        id: 0,
        user: owner.id.clone(),
        node: node.clone(),
        hostname: create.hostname.clone(),
        template: ostemplate.clone(),
        cpu: create.cpu,
        memory: create.memory,
        swap: create.swap,
        disk: create.disk,
        state: "creating".into(),
        suspended: false,
        created_at: now.clone(),
        updated_at: now,
    };
    let checked = !client.last_call_reached();
    let vmid =
        match lifecycle::reserve_vmid(&app, &client, &node, wanted, checked, &mut record).await {
            Ok(vmid) => vmid,
            Err(ReserveError::Taken(id)) => {
                return Err(conflict(
                    "instance_exists",
                    format!("VMID {id} is already taken"),
                ));
            }
            Err(ReserveError::Exhausted(tries)) => {
                return Err(ApiError::unavailable(
                    "no_vmid",
                    format!("no free VMID found after {tries} tries"),
                ));
            }
            Err(ReserveError::Proxmox(error)) => return Err(error.into()),
            Err(ReserveError::Store(error)) => return Err(error.into()),
        };
    if let Some(password) = create.password.clone() {
        app.proxmox.set_password(vmid, password);
    }
    let input = CreateInput {
        vmid,
        node,
        auto_id: wanted.is_none(),
        ostemplate,
        hostname: create.hostname,
        storage,
        disk: create.disk,
        memory: create.memory,
        swap: create.swap,
        cores: create.cpu,
        net0: Some(
            create
                .net
                .unwrap_or_else(|| "name=eth0,bridge=vmbr0,ip=dhcp".into()),
        ),
        ostype: create.ostype,
        ssh_public_keys: create.ssh_keys,
        unprivileged: true,
        start: create.start,
    };
    let task = NewTask::new(lifecycle::CREATE, principal.user_id.clone())
        .instance(vmid)
        .input(serde_json::to_value(&input).map_err(ApiError::internal)?)
        .deadline(app.proxmox.deadlines().create);
    let answer = respond_with_task(&app, &request, task).await;
    let replayed = answer
        .as_ref()
        .is_ok_and(|response| response.headers().contains_key("idempotent-replayed"));
    if answer.is_err() || replayed {
        // No task took this reservation: release it.
        app.proxmox.take_password(vmid);
        app.store.write(|write| {
            let key = InstanceRecord::key(vmid);
            if let Some(record) = write.get::<InstanceRecord>(Table::Instances, &key)?
                && record.state == "creating"
            {
                write.delete(Table::Instances, &key)?;
            }
            Ok::<(), crate::store::StoreError>(())
        })?;
    }
    answer
}

async fn change_instance(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?.clone();
    let id = parse_instance_id(request.param(0))?;
    let record = require_instance(&app, &principal, id)?;
    let mut fields = Fields::new(input_object(&request)?);
    let cpu = fields
        .number(&["cpu", "cores"], 1..=8192)
        .map(|cpu| cpu as u32);
    let memory = fields.number(&["memory"], 16..=4 * 1024 * 1024);
    let swap = fields.number(&["swap"], 0..=4 * 1024 * 1024);
    let disk = fields.number(&["disk"], 1..=128 * 1024);
    let hostname = fields.text(&["hostname", "name"]);
    if let Some(name) = &hostname
        && !valid_hostname(name)
    {
        fields.bad(
            "hostname",
            "must be a DNS name (letters, digits, '-' and '.')",
        );
    }
    if let Some(disk) = disk
        && disk < record.disk
    {
        fields.bad("disk", format!("can only grow (now {} GiB)", record.disk));
    }
    let known = [
        "cpu", "cores", "memory", "swap", "disk", "hostname", "name", "userid", "ticket",
    ];
    let unknown: Vec<String> = fields
        .map
        .keys()
        .filter(|key| !known.contains(&key.as_str()))
        .cloned()
        .collect();
    for key in unknown {
        fields.bad(&key, "cannot be changed here");
    }
    fields.finish()?;
    let change = UpdateInput {
        cpu: cpu.filter(|cpu| *cpu != record.cpu),
        memory: memory.filter(|memory| *memory != record.memory),
        swap: swap.filter(|swap| *swap != record.swap),
        disk: disk.filter(|disk| *disk != record.disk),
        hostname: hostname.filter(|name| *name != record.hostname),
    };
    if change == UpdateInput::default() {
        return Err(ApiError::invalid_field(
            "body",
            "nothing to change: give cpu, memory, swap, disk or hostname with a new value",
        ));
    }
    check_changeable(&principal, &record)?;
    if let Some(owner) = app.store.get::<UserRecord>(Table::Users, &record.user)? {
        check_quota(
            &app,
            &owner,
            Some(id),
            change.cpu.unwrap_or(record.cpu),
            change.memory.unwrap_or(record.memory),
            change.disk.unwrap_or(record.disk),
        )?;
    }
    let task = NewTask::new(lifecycle::UPDATE, principal.user_id.clone())
        .instance(id)
        .input(serde_json::to_value(&change).map_err(ApiError::internal)?)
        .deadline(app.proxmox.deadlines().update);
    respond_with_task(&app, &request, task).await
}

async fn delete_instance(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?.clone();
    let id = parse_instance_id(request.param(0))?;
    let record = require_instance(&app, &principal, id)?;
    if record.suspended && !principal.is_admin() {
        check_changeable(&principal, &record)?;
    }
    if record.state == "creating" || record.state == "destroying" {
        check_changeable(&principal, &record)?;
    }
    let previous = record.state.clone();
    // The task written next makes this durable; lost in a crash before it, nothing happened.
    lifecycle::update_instance_buffered(&app, id, |record| record.state = "destroying".into())?;
    let task = NewTask::new(lifecycle::DESTROY, principal.user_id.clone())
        .instance(id)
        .deadline(app.proxmox.deadlines().destroy);
    let answer = respond_with_task(&app, &request, task).await;
    if answer.is_err() {
        lifecycle::update_instance(&app, id, |record| record.state = previous)?;
    }
    answer
}

async fn instance_action(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?.clone();
    let id = parse_instance_id(request.param(0))?;
    let record = require_instance(&app, &principal, id)?;
    let name = request.param(1).to_string();
    if power_action(&name).is_none() {
        return Err(ApiError::not_found(format!(
            "no action {name:?}; actions are start, stop, shutdown, reboot, suspend, unsuspend"
        )));
    }
    if matches!(name.as_str(), "suspend" | "unsuspend" | "resume") && !principal.is_admin() {
        return Err(ApiError::forbidden(
            "only an admin suspends or unsuspends an instance",
        ));
    }
    check_changeable(&principal, &record)?;
    if record.state == "failed" {
        return Err(conflict(
            "instance_failed",
            format!("instance {id} failed to be created; delete it"),
        ));
    }
    let input = PowerInput {
        action: name,
        requested_at: crate::clock::unix_now(),
    };
    let task = NewTask::new(lifecycle::POWER, principal.user_id.clone())
        .instance(id)
        .input(serde_json::to_value(&input).map_err(ApiError::internal)?)
        .deadline(app.proxmox.deadlines().power);
    respond_with_task(&app, &request, task).await
}

/// Instances per node, for the node routes.
pub fn instances_per_node(app: &App) -> Result<BTreeMap<String, u32>, ApiError> {
    let records: Vec<(String, InstanceRecord)> = app.store.list(Table::Instances)?;
    let mut counts = BTreeMap::new();
    for (_, record) in records {
        *counts.entry(record.node).or_insert(0) += 1;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> Result<CreateRequest, ApiError> {
        match value {
            Value::Object(map) => parse_create(map),
            _ => unreachable!(),
        }
    }

    #[test]
    fn create_bodies_with_aliases_and_defaults() {
        let request = parse(json!({
            "image": "debian-12", "name": "web1", "cpu": "2", "memory": "1024",
            "nodeId": "pve1", "variables": {"a": 1}, "ssh_keys": ["ssh-ed25519 AAAA x"],
            "start": 1
        }))
        .unwrap();
        assert_eq!(request.template, "debian-12");
        assert_eq!(request.hostname, "web1");
        assert_eq!(
            (request.cpu, request.memory, request.swap, request.disk),
            (2, 1024, 512, 8)
        );
        assert_eq!(request.node.as_deref(), Some("pve1"));
        assert_eq!(request.ssh_keys.as_deref(), Some("ssh-ed25519 AAAA x"));
        assert!(request.start);
    }

    #[test]
    fn bad_create_bodies_name_every_field() {
        let cases: &[(Value, &[&str])] = &[
            (json!({}), &["template", "hostname"]),
            (json!({"template": "t", "hostname": "-bad"}), &["hostname"]),
            (
                json!({"template": "t", "hostname": "h", "cpu": 0, "memory": 8, "disk": "x", "swap": -1}),
                &["cpu", "memory", "disk", "swap"],
            ),
            (
                json!({"template": "t", "hostname": "h", "ostype": "windows", "password": "abc"}),
                &["ostype", "password"],
            ),
            (
                json!({"template": "t", "hostname": "h", "ssh_keys": "not a key", "net": {"ip": "x"}}),
                &["ssh_keys", "net"],
            ),
            (
                json!({"template": "t", "hostname": "h", "start": "maybe", "variables": 3, "storage": "a b"}),
                &["start", "variables", "storage"],
            ),
            (
                json!({"template": 5.5, "hostname": "h", "cpu": 1.5}),
                &["cpu"],
            ),
        ];
        for (body, names) in cases {
            let error = parse(body.clone()).expect_err(&body.to_string());
            assert_eq!(error.status.as_u16(), 422, "{body}");
            let fields = &error.details.as_ref().unwrap()["fields"];
            for name in *names {
                assert!(
                    fields.get(*name).is_some(),
                    "{body}: {name} missing in {fields}"
                );
            }
        }
    }

    #[test]
    fn host_names() {
        let cases = [
            ("web1", true),
            ("web-1.example.com", true),
            ("", false),
            ("-web", false),
            ("web_1", false),
            ("a..b", false),
        ];
        for (name, valid) in cases {
            assert_eq!(valid_hostname(name), valid, "{name}");
        }
        assert!(!valid_hostname(&"a".repeat(64)));
    }
}
