//! The task executors of the instance lifecycle (create, power actions, changes, destroy) and of
//! template downloads, registered in one loop over [`EXECUTORS`].
//!
//! Invariant: an instance record exists (state `creating`) before Proxmox is asked to create
//! the container, and after every outcome the record matches Proxmox: a create that certainly
//! failed leaves neither a container nor a record, a finished one leaves both, and one whose
//! outcome cannot be told leaves the record `failed` so that DELETE can settle it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::kinds;
use super::records::{
    ReserveError, instance, remove_instance, remove_instance_buffered, reserve_vmid, set_state,
    update_instance, update_instance_buffered,
};
use super::state::InstanceState;
use crate::App;
use crate::proxmox::client::{Client, CreateContainer, PowerAction, PowerOutcome};
use crate::proxmox::error::{ErrorClass, ProxmoxError};
use crate::proxmox::property;
use crate::proxmox::registry::RegistryError;
use crate::proxmox::types::TaskStatus;
use crate::proxmox::upid::Upid;
use crate::store::StoreError;
use crate::store::records::InstanceRecord;
use crate::tasks::{Executor, Phase, RestartPolicy, TaskContext, TaskFailure};

/// The input of an `instance.create` task (the root password is kept in memory only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreateInput {
    pub vmid: u32,
    pub node: String,
    /// The VMID was chosen by the coordinator, so another may be taken when it is lost to a race.
    pub auto_id: bool,
    pub ostemplate: String,
    pub hostname: String,
    pub storage: String,
    pub disk: u64,
    pub memory: u64,
    pub swap: u64,
    pub cores: u32,
    pub net0: Option<String>,
    pub ostype: Option<String>,
    pub ssh_public_keys: Option<String>,
    pub unprivileged: bool,
    pub start: bool,
}

/// The input of an `instance.update` task: only the fields to change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UpdateInput {
    pub cpu: Option<u32>,
    pub memory: Option<u64>,
    pub swap: Option<u64>,
    pub disk: Option<u64>,
    pub hostname: Option<String>,
}

fn failure_of(error: &ProxmoxError) -> TaskFailure {
    let code = match error.class() {
        _ if error.is_timeout() => "upstream_timeout",
        ErrorClass::Locked => "proxmox_locked",
        ErrorClass::Unreachable => "node_unreachable",
        _ => "proxmox_error",
    };
    TaskFailure::new(code, format!("Proxmox: {}", error.proxmox_message()))
}

fn registry_failure(error: RegistryError) -> TaskFailure {
    match error {
        RegistryError::UnknownNode(node) => {
            TaskFailure::new("unknown_node", format!("node {node} is not registered"))
        }
        RegistryError::Store(error) => store_failure(error),
        RegistryError::Proxmox(error) => failure_of(&error),
    }
}

fn store_failure(error: StoreError) -> TaskFailure {
    tracing::error!(%error, "store failure in a lifecycle task");
    TaskFailure::new(
        "internal",
        "the coordinator's store failed; the cause is in its log",
    )
}

fn app_of(app: &Weak<App>) -> Result<Arc<App>, TaskFailure> {
    app.upgrade()
        .ok_or_else(|| TaskFailure::new("stopping", "the coordinator is stopping"))
}

fn log(context: &TaskContext, line: impl AsRef<str>) {
    if let Err(error) = context.log(line) {
        tracing::debug!(%error, "cannot log to a task");
    }
}

/// How long a task may still wait for Proxmox: until shortly before its own deadline.
fn remaining(context: &TaskContext) -> Duration {
    match context.deadline {
        Some(deadline) => {
            let left = deadline - crate::clock::now();
            let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
            left.mul_f64(0.9).max(Duration::from_millis(200))
        }
        None => Duration::from_secs(600),
    }
}

/// Waits for a Proxmox task, ending early when the coordinator's task is cancelled or expires.
async fn wait_for(
    client: &Client,
    upid: &Upid,
    context: &TaskContext,
) -> Result<TaskStatus, ProxmoxError> {
    let deadline = remaining(context);
    tokio::select! {
        result = client.wait_task(upid, deadline) => result,
        () = context.cancelled().cancelled() => Err(ProxmoxError::TaskDeadline {
            upid: upid.to_string(),
            after: deadline,
        }),
    }
}

/// The work of one task kind.
type Run = fn(Arc<App>, TaskContext) -> BoxFuture<'static, Result<Value, TaskFailure>>;

/// A lifecycle executor: it moves its task to `running` before it calls Proxmox (and calls
/// nothing when that write fails), and resumes after a restart when `resume` is set. It holds
/// the application weakly.
struct Lifecycle {
    app: Weak<App>,
    run: Run,
    resume: bool,
}

impl Executor for Lifecycle {
    fn run(&self, context: TaskContext) -> BoxFuture<'static, Result<Value, TaskFailure>> {
        match app_of(&self.app) {
            Ok(app) => (self.run)(app, context),
            Err(failure) => Box::pin(std::future::ready(Err(failure))),
        }
    }

    fn on_restart(&self) -> RestartPolicy {
        if self.resume {
            RestartPolicy::Resume
        } else {
            RestartPolicy::Fail
        }
    }

    fn sets_state_first(&self) -> bool {
        true
    }
}

/// Every task kind of this module: its work, and whether it resumes after a restart (a
/// template download does not: it is started again by whoever wants the template).
const EXECUTORS: [(&str, Run, bool); 5] = [
    (
        kinds::CREATE,
        |app, context| Box::pin(create(app, context)),
        true,
    ),
    (
        kinds::POWER,
        |app, context| Box::pin(power(app, context)),
        true,
    ),
    (
        kinds::UPDATE,
        |app, context| Box::pin(update(app, context)),
        true,
    ),
    (
        kinds::DESTROY,
        |app, context| Box::pin(destroy(app, context)),
        true,
    ),
    (
        kinds::DOWNLOAD,
        |app, context| Box::pin(download(app, context)),
        false,
    ),
];

/// Registers every executor of this module.
pub fn register(app: &Arc<App>) {
    for (kind, run, resume) in EXECUTORS {
        app.tasks.register(
            kind,
            Lifecycle {
                app: Arc::downgrade(app),
                run,
                resume,
            },
        );
    }
}

/// Moves the task to `running`; the executor stops when that cannot be written (the task was
/// cancelled meanwhile, or the store failed), before anything is sent to Proxmox.
fn start_running(context: &TaskContext) -> Result<(), TaskFailure> {
    context
        .set_state(Phase::Running)
        .map(drop)
        .map_err(TaskFailure::from)
}

fn input_of<T: serde::de::DeserializeOwned>(context: &TaskContext) -> Result<T, TaskFailure> {
    serde_json::from_value(context.input.clone())
        .map_err(|error| TaskFailure::new("bad_task_input", error.to_string()))
}

fn since_of(record: &InstanceRecord) -> i64 {
    crate::clock::parse_rfc3339(&record.created_at).unwrap_or_else(crate::clock::unix_now)
}

async fn create(app: Arc<App>, context: TaskContext) -> Result<Value, TaskFailure> {
    let input: CreateInput = input_of(&context)?;
    let node = input.node.clone();
    let mut vmid = input.vmid;
    let Some(record) = instance(&app, vmid).map_err(store_failure)? else {
        return Err(TaskFailure::new(
            "instance_gone",
            format!("the record of instance {vmid} no longer exists"),
        ));
    };
    let client = app
        .proxmox
        .client(&app.store, &node)
        .map_err(registry_failure)?;
    start_running(&context)?;
    let password = app.proxmox.take_password(vmid);
    let since = since_of(&record);

    // After a restart, a create that already reached Proxmox is found and waited for.
    let mut upid = None;
    if context.attempt > 1 {
        if let Ok(Some(found)) = client.find_own_task(&node, vmid, "vzcreate", since).await {
            log(&context, format!("resuming: waiting for {found}"));
            upid = Some(found);
        } else if let Ok(true) = client.container_exists(&node, vmid).await {
            log(&context, "resuming: the container exists already");
            return finish_create(&app, &client, &node, vmid, &input, false).await;
        }
    }
    let upid = match upid {
        Some(upid) => upid,
        None => {
            let mut rounds = 0;
            loop {
                rounds += 1;
                let spec = CreateContainer {
                    vmid,
                    ostemplate: input.ostemplate.clone(),
                    hostname: input.hostname.clone(),
                    storage: input.storage.clone(),
                    disk_gib: input.disk,
                    memory: input.memory,
                    swap: input.swap,
                    cores: input.cores,
                    net0: input.net0.clone(),
                    password: password.clone(),
                    ssh_public_keys: input.ssh_public_keys.clone(),
                    ostype: input.ostype.clone(),
                    unprivileged: input.unprivileged,
                    start: input.start,
                    tags: Some("hostplane".into()),
                    description: None,
                };
                let result = client.create_container(&node, &spec).await;
                // Only a run before a restart can have sent this create already.
                if let Err(error) = &result
                    && error.class() == ErrorClass::AlreadyExists
                    && context.attempt > 1
                    && let Ok(Some(found)) =
                        client.find_own_task(&node, vmid, "vzcreate", since).await
                {
                    // Our own earlier create (before a restart) holds the id: wait for it.
                    log(
                        &context,
                        format!("the container is already being created by {found}"),
                    );
                    break found;
                }
                match result {
                    Ok(upid) => break upid,
                    Err(error)
                        if error.class() == ErrorClass::AlreadyExists
                            && input.auto_id
                            && rounds < 5 =>
                    {
                        let next = move_reservation(&app, &client, &node, vmid).await?;
                        log(
                            &context,
                            format!("VMID {vmid} was taken outside the coordinator; using {next}"),
                        );
                        vmid = next;
                    }
                    Err(error) => {
                        if error.outcome_unknown() {
                            let _ = set_state(&app, vmid, InstanceState::Failed);
                        } else {
                            let _ = remove_instance(&app, vmid);
                        }
                        return Err(failure_of(&error));
                    }
                }
            }
        }
    };
    log(&context, format!("Proxmox task {upid}"));
    let _ = context.progress(10, "creating the container");
    match wait_for(&client, &upid, &context).await {
        Ok(_) => finish_create(&app, &client, &node, vmid, &input, true).await,
        Err(error) => {
            log(&context, format!("the create failed: {error}"));
            settle_failed_create(&app, &client, &node, vmid, &upid, &context).await;
            Err(failure_of(&error))
        }
    }
}

/// Moves a reservation to the next free VMID (the old one was taken outside the coordinator).
async fn move_reservation(
    app: &App,
    client: &Client,
    node: &str,
    from: u32,
) -> Result<u32, TaskFailure> {
    let Some(mut record) = instance(app, from).map_err(store_failure)? else {
        return Err(TaskFailure::new(
            "instance_gone",
            format!("the record of instance {from} no longer exists"),
        ));
    };
    InstanceState::Creating.set(&mut record);
    let next = match reserve_vmid(app, client, node, None, true, &mut record, None).await {
        Ok(next) => next,
        Err(ReserveError::Proxmox(error)) => return Err(failure_of(&error)),
        Err(error) => return Err(TaskFailure::new("no_vmid", error.to_string())),
    };
    app.proxmox.vmid_taken(node, from);
    remove_instance(app, from).map_err(store_failure)?;
    Ok(next)
}

/// Marks the record ready. `waited`: this run saw the create task succeed, so the container
/// is running when the create started it and stopped otherwise; else Proxmox is asked.
async fn finish_create(
    app: &App,
    client: &Client,
    node: &str,
    vmid: u32,
    input: &CreateInput,
    waited: bool,
) -> Result<Value, TaskFailure> {
    // The task's end, written next, makes this durable; a crash before it resumes the task,
    // which finds the container and marks the record again.
    let record = update_instance_buffered(app, vmid, |record| {
        InstanceState::Ready.set(record);
        record.node = node.to_string();
    })
    .map_err(store_failure)?;
    let status = if waited {
        if input.start { "running" } else { "stopped" }.to_string()
    } else {
        client
            .container_status(node, vmid)
            .await
            .map(|status| status.status)
            .unwrap_or_else(|_| "unknown".into())
    };
    Ok(json!({
        "id": vmid,
        "node": node,
        "hostname": input.hostname,
        "status": status,
        "state": record.map(|record| record.state),
    }))
}

/// After a create that failed, timed out or was cancelled: stop its task if it still runs,
/// destroy whatever container it left, and drop the record once Proxmox has no container.
async fn settle_failed_create(
    app: &App,
    client: &Client,
    node: &str,
    vmid: u32,
    upid: &Upid,
    context: &TaskContext,
) {
    let cleanup = Duration::from_secs(30);
    if let Ok(status) = client.task_status(upid).await
        && status.is_running()
    {
        log(context, "stopping the Proxmox task");
        let _ = client.stop_task(upid).await;
        let _ = client.wait_task(upid, cleanup).await;
    }
    let gone = match client.container_exists(node, vmid).await {
        Ok(false) => true,
        Ok(true) => match client.destroy_container(node, vmid).await {
            Ok(None) => true,
            Ok(Some(destroy)) => client.wait_task(&destroy, cleanup).await.is_ok(),
            Err(error) => {
                log(
                    context,
                    format!("cannot remove the partial container: {error}"),
                );
                false
            }
        },
        Err(_) => false,
    };
    if gone {
        let _ = remove_instance(app, vmid);
    } else {
        let _ = set_state(app, vmid, InstanceState::Failed);
    }
}

/// The input of an `instance.power` task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PowerInput {
    /// `start`, `stop`, `shutdown`, `reboot`, `suspend` or `unsuspend`.
    pub action: String,
    /// Unix time of the request, to find this task's Proxmox task after a restart.
    pub requested_at: i64,
}

/// The Proxmox action of an API action name.
pub fn power_action(name: &str) -> Option<PowerAction> {
    Some(match name {
        "start" => PowerAction::Start,
        "stop" => PowerAction::Stop,
        "shutdown" => PowerAction::Shutdown,
        "reboot" => PowerAction::Reboot,
        "suspend" => PowerAction::Suspend,
        "unsuspend" | "resume" => PowerAction::Resume,
        _ => return None,
    })
}

fn record_for_task(app: &App, context: &TaskContext) -> Result<InstanceRecord, TaskFailure> {
    let id = context
        .instance
        .ok_or_else(|| TaskFailure::new("bad_task_input", "the task names no instance"))?;
    instance(app, id)
        .map_err(store_failure)?
        .ok_or_else(|| TaskFailure::new("instance_gone", format!("instance {id} no longer exists")))
}

async fn power(app: Arc<App>, context: TaskContext) -> Result<Value, TaskFailure> {
    let input: PowerInput = input_of(&context)?;
    let action = power_action(&input.action).ok_or_else(|| {
        TaskFailure::new("bad_task_input", format!("unknown action {}", input.action))
    })?;
    let record = record_for_task(&app, &context)?;
    let client = app
        .proxmox
        .client(&app.store, &record.node)
        .map_err(registry_failure)?;
    start_running(&context)?;
    let mut outcome = None;
    if context.attempt > 1
        && let Ok(Some(found)) = client
            .find_own_task(
                &record.node,
                record.id,
                action.task_type(),
                input.requested_at,
            )
            .await
    {
        outcome = Some(PowerOutcome::Task(found));
    }
    let outcome = match outcome {
        Some(outcome) => outcome,
        None => client
            .power(&record.node, record.id, action)
            .await
            .map_err(|error| failure_of(&error))?,
    };
    if let PowerOutcome::Task(upid) = &outcome {
        log(&context, format!("Proxmox task {upid}"));
        wait_for(&client, upid, &context)
            .await
            .map_err(|error| failure_of(&error))?;
    }
    match action {
        PowerAction::Suspend => {
            update_instance(&app, record.id, |record| record.suspended = true)
                .map_err(store_failure)?;
        }
        PowerAction::Resume => {
            update_instance(&app, record.id, |record| record.suspended = false)
                .map_err(store_failure)?;
        }
        _ => {}
    }
    // Once the action's task succeeded (or Proxmox said it was done already), a start or stop
    // leaves the container in its goal state; the other actions' outcome is read.
    let status = match action.goal() {
        Some(goal) => goal.to_string(),
        None => client
            .container_status(&record.node, record.id)
            .await
            .map(|status| status.status)
            .unwrap_or_else(|_| "unknown".into()),
    };
    Ok(json!({
        "id": record.id,
        "action": input.action,
        "status": status,
        "already_done": outcome == PowerOutcome::AlreadyDone,
    }))
}

async fn update(app: Arc<App>, context: TaskContext) -> Result<Value, TaskFailure> {
    let input: UpdateInput = input_of(&context)?;
    let record = record_for_task(&app, &context)?;
    let client = app
        .proxmox
        .client(&app.store, &record.node)
        .map_err(registry_failure)?;
    start_running(&context)?;
    let mut changes: Vec<(&str, String)> = Vec::new();
    if let Some(cpu) = input.cpu {
        changes.push(("cores", cpu.to_string()));
    }
    if let Some(memory) = input.memory {
        changes.push(("memory", memory.to_string()));
    }
    if let Some(swap) = input.swap {
        changes.push(("swap", swap.to_string()));
    }
    if let Some(hostname) = &input.hostname {
        changes.push(("hostname", hostname.clone()));
    }
    if !changes.is_empty() {
        client
            .update_config(&record.node, record.id, &changes, &[])
            .await
            .map_err(|error| failure_of(&error))?;
        log(&context, "configuration changed");
    }
    if let Some(disk) = input.disk {
        let current = client
            .container_config(&record.node, record.id)
            .await
            .ok()
            .and_then(|config| {
                config
                    .get("rootfs")
                    .and_then(Value::as_str)
                    .and_then(property::rootfs_size_gib)
            });
        if current.is_none_or(|current| disk > current) {
            if let Some(upid) = client
                .resize_disk(&record.node, record.id, "rootfs", disk)
                .await
                .map_err(|error| failure_of(&error))?
            {
                log(&context, format!("Proxmox task {upid}"));
                wait_for(&client, &upid, &context)
                    .await
                    .map_err(|error| failure_of(&error))?;
            }
            log(&context, format!("root disk grown to {disk} GiB"));
        }
    }
    let record = update_instance(&app, record.id, |record| {
        if let Some(cpu) = input.cpu {
            record.cpu = cpu;
        }
        if let Some(memory) = input.memory {
            record.memory = memory;
        }
        if let Some(swap) = input.swap {
            record.swap = swap;
        }
        if let Some(disk) = input.disk {
            record.disk = record.disk.max(disk);
        }
        if let Some(hostname) = &input.hostname {
            record.hostname = hostname.clone();
        }
    })
    .map_err(store_failure)?;
    Ok(json!({ "instance": record }))
}

/// Called once an instance is destroyed, to revoke its agent's credentials. The agent channel
/// plugs in here; until it exists there is nothing to revoke.
pub fn revoke_agent_hook(app: &App, id: u32) {
    let _ = app;
    tracing::debug!(instance = id, "no agent channel to revoke credentials in");
}

async fn destroy(app: Arc<App>, context: TaskContext) -> Result<Value, TaskFailure> {
    let record = record_for_task(&app, &context)?;
    let client = app
        .proxmox
        .client(&app.store, &record.node)
        .map_err(registry_failure)?;
    start_running(&context)?;
    let restore = |app: &App| {
        let _ = set_state(app, record.id, InstanceState::Ready);
    };
    // The destroy is sent straight away: Proxmox refuses it for a running container without
    // changing anything, and only then is the container stopped and the destroy sent again.
    let mut stopped = false;
    let destroyed = loop {
        let error = match client.destroy_container(&record.node, record.id).await {
            Ok(destroyed) => break destroyed,
            Err(error) => error,
        };
        let running = !stopped
            && error.class() == ErrorClass::Other
            && matches!(
                client.container_status(&record.node, record.id).await,
                Ok(status) if status.is_running()
            );
        if !running {
            restore(&app);
            return Err(failure_of(&error));
        }
        log(&context, "stopping the container");
        let outcome = client
            .power(&record.node, record.id, PowerAction::Stop)
            .await;
        let waited = match outcome {
            Ok(PowerOutcome::Task(upid)) => wait_for(&client, &upid, &context).await.map(drop),
            Ok(PowerOutcome::AlreadyDone) => Ok(()),
            Err(error) => Err(error),
        };
        if let Err(error) = waited {
            restore(&app);
            return Err(failure_of(&error));
        }
        stopped = true;
    };
    match destroyed {
        Some(upid) => {
            log(&context, format!("Proxmox task {upid}"));
            if let Err(error) = wait_for(&client, &upid, &context).await {
                restore(&app);
                return Err(failure_of(&error));
            }
        }
        None => log(&context, "the container did not exist in Proxmox"),
    }
    revoke_agent_hook(&app, record.id);
    remove_instance_buffered(&app, record.id).map_err(store_failure)?;
    Ok(json!({ "id": record.id, "destroyed": true }))
}

/// The input of a `template.download` task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DownloadInput {
    pub node: String,
    pub storage: String,
    pub template: String,
}

async fn download(app: Arc<App>, context: TaskContext) -> Result<Value, TaskFailure> {
    let input: DownloadInput = input_of(&context)?;
    let client = app
        .proxmox
        .client(&app.store, &input.node)
        .map_err(registry_failure)?;
    start_running(&context)?;
    let upid = client
        .download_appliance(&input.node, &input.storage, &input.template)
        .await
        .map_err(|error| failure_of(&error))?;
    log(&context, format!("Proxmox task {upid}"));
    wait_for(&client, &upid, &context)
        .await
        .map_err(|error| failure_of(&error))?;
    Ok(json!({
        "node": input.node,
        "storage": input.storage,
        "template": input.template,
        "volid": format!("{}:vztmpl/{}", input.storage, input.template),
    }))
}
