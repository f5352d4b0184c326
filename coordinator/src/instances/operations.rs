//! What each instance operation checks before its task exists, and the task that does the
//! work. The caller (the API) has found the owner and checked the caller's rights; these
//! functions check the instance's state, the quota and the placement, reserve the VMID of a
//! create, and build the [`NewTask`] that the caller submits.

use serde_json::{Map, Value};

use super::error::InstanceError;
use super::executors::{CreateInput, PowerInput};
use super::kinds;
use super::placement::{choose_node, resolve_placement};
use super::quota::{self, Demand};
use super::records::{self, check_changeable, reserve_vmid};
use super::request::{CreateRequest, parse_change};
use super::state::InstanceState;
use crate::App;
use crate::store::Table;
use crate::store::records::{IdempotencyRecord, InstanceRecord, UserRecord};
use crate::tasks::NewTask;
use crate::tasks::persist::IDEMPOTENCY_WINDOW;

/// A create whose VMID is reserved: submit `task`, and [`release`] the VMID when no task
/// takes it (the submission failed, or it answered an earlier task).
#[derive(Debug)]
pub struct ReservedCreate {
    pub vmid: u32,
    pub task: NewTask,
}

/// Checks a create for `owner` (requested by `requester`), chooses its node, template and
/// storage, and reserves its VMID (`wanted`, or the first free one).
pub async fn reserve_create(
    app: &App,
    requester: &str,
    owner: &UserRecord,
    create: CreateRequest,
    wanted: Option<u32>,
) -> Result<ReservedCreate, InstanceError> {
    if let Some(id) = wanted
        && records::instance(app, id)?.is_some()
    {
        return Err(InstanceError::Exists(id));
    }
    let demand = Demand {
        resizes: None,
        cores: create.cpu,
        memory: create.memory,
        disk: create.disk,
    };
    quota::check_stored(&app.store, owner, &demand)?;
    let (node, client) = choose_node(app, create.node.as_deref()).await?;
    let (ostemplate, storage) = resolve_placement(
        app,
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
        state: InstanceState::Creating.as_str().to_string(),
        suspended: false,
        created_at: now.clone(),
        updated_at: now,
    };
    let checked = !client.last_call_reached();
    // Checked again where it holds: in the transaction that writes the reservation.
    let vmid = reserve_vmid(
        app,
        &client,
        &node,
        wanted,
        checked,
        &mut record,
        Some(&demand),
    )
    .await?;
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
    let task = NewTask::new(kinds::CREATE, requester)
        .instance(vmid)
        .input(serde_json::to_value(&input)?)
        .deadline(app.proxmox.deadlines().create);
    Ok(ReservedCreate { vmid, task })
}

/// The create task that `requester`'s `Idempotency-Key` first started (for `wanted`, when a
/// VMID is named), as a task to submit again under the same key: the task system then answers
/// with that first task. Looked up before anything is checked or reserved, so a client that
/// retries after a timeout gets its first task back instead of a conflict with its own
/// instance. `None` when the key is new, expired or was used for something else (the
/// submission then decides as for any task).
pub fn replay_create(
    app: &App,
    requester: &str,
    key: &str,
    wanted: Option<u32>,
) -> Result<Option<NewTask>, InstanceError> {
    // The key layout of table `TaskIdempotency`: `<owner user id>/<Idempotency-Key>`.
    let index = format!("{requester}/{key}");
    let Some(earlier) = app
        .store
        .get::<IdempotencyRecord>(Table::TaskIdempotency, &index)?
    else {
        return Ok(None);
    };
    if crate::tasks::system::now() - earlier.created_at >= IDEMPOTENCY_WINDOW {
        return Ok(None);
    }
    let Some(first) = app.tasks.get(&earlier.task)? else {
        return Ok(None);
    };
    let Some(instance) = first.instance else {
        return Ok(None);
    };
    if first.kind != kinds::CREATE || wanted.is_some_and(|wanted| wanted != instance) {
        return Ok(None);
    }
    // No input: should the key expire before the submission, the new task fails at once
    // (`bad_task_input`) instead of acting on the first task's instance.
    Ok(Some(
        NewTask::new(kinds::CREATE, requester)
            .instance(instance)
            .idempotency_key(key),
    ))
}

/// Gives up a reservation no task took: forgets its password and drops its record.
pub fn release(app: &App, vmid: u32) -> Result<(), InstanceError> {
    app.proxmox.take_password(vmid);
    records::release_reservation(app, vmid)?;
    Ok(())
}

/// Checks a change of `record` (by an admin when `admin`) and builds its task.
pub fn change(
    app: &App,
    requester: &str,
    admin: bool,
    record: &InstanceRecord,
    fields: Map<String, Value>,
) -> Result<NewTask, InstanceError> {
    let change = parse_change(fields, record)?;
    check_changeable(admin, record)?;
    if let Some(owner) = app.store.get::<UserRecord>(Table::Users, &record.user)? {
        let demand = Demand {
            resizes: Some(record.id),
            cores: change.cpu.unwrap_or(record.cpu),
            memory: change.memory.unwrap_or(record.memory),
            disk: change.disk.unwrap_or(record.disk),
        };
        quota::check_stored(&app.store, &owner, &demand)?;
    }
    Ok(NewTask::new(kinds::UPDATE, requester)
        .instance(record.id)
        .input(serde_json::to_value(&change)?)
        .deadline(app.proxmox.deadlines().update))
}

/// How to put a record back in the state it had before a destroy was started, when the
/// destroy's task could not be submitted.
#[derive(Debug)]
pub struct Restore {
    id: u32,
    previous: String,
}

impl Restore {
    /// Puts the record back in the state it had before.
    pub fn undo(self, app: &App) -> Result<(), InstanceError> {
        records::update_instance(app, self.id, |record| record.state = self.previous)?;
        Ok(())
    }
}

/// Checks a destroy of `record` (by an admin when `admin`), marks the record `destroying`
/// and builds its task; [`Restore::undo`] when the task cannot be submitted.
pub fn start_destroy(
    app: &App,
    requester: &str,
    admin: bool,
    record: &InstanceRecord,
) -> Result<(NewTask, Restore), InstanceError> {
    if record.suspended && !admin {
        check_changeable(admin, record)?;
    }
    if InstanceState::Creating.is_of(record) || InstanceState::Destroying.is_of(record) {
        check_changeable(admin, record)?;
    }
    let previous = record.state.clone();
    // The task written next makes this durable; lost in a crash before it, nothing happened.
    records::update_instance_buffered(app, record.id, |record| {
        InstanceState::Destroying.set(record)
    })?;
    let task = NewTask::new(kinds::DESTROY, requester)
        .instance(record.id)
        .deadline(app.proxmox.deadlines().destroy);
    Ok((
        task,
        Restore {
            id: record.id,
            previous,
        },
    ))
}

/// Checks a power action (`start`, `stop`, `shutdown`, `reboot`, `suspend`, `unsuspend`) on
/// `record` (by an admin when `admin`) and builds its task. The action name is known.
pub fn power(
    app: &App,
    requester: &str,
    admin: bool,
    record: &InstanceRecord,
    action: String,
) -> Result<NewTask, InstanceError> {
    check_changeable(admin, record)?;
    if InstanceState::Failed.is_of(record) {
        return Err(InstanceError::Failed(record.id));
    }
    let input = PowerInput {
        action,
        requested_at: crate::clock::unix_now(),
    };
    Ok(NewTask::new(kinds::POWER, requester)
        .instance(record.id)
        .input(serde_json::to_value(&input)?)
        .deadline(app.proxmox.deadlines().power))
}
