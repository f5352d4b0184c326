//! The instance records in the store: reading and changing one, reserving a VMID, and whether
//! an instance may be changed now.

use std::collections::BTreeMap;

use super::error::InstanceError;
use super::quota::{self, Demand, QuotaExceeded};
use super::state::InstanceState;
use crate::App;
use crate::proxmox::{Client, ErrorClass, ProxmoxError};
use crate::store::records::{InstanceRecord, UserRecord};
use crate::store::{StoreError, Table, Write};

/// The instance record of `id`.
pub fn instance(app: &App, id: u32) -> Result<Option<InstanceRecord>, StoreError> {
    app.store.get(Table::Instances, &InstanceRecord::key(id))
}

/// Changes the record of `id` in one transaction; `None` when it does not exist.
pub fn update_instance(
    app: &App,
    id: u32,
    change: impl FnOnce(&mut InstanceRecord),
) -> Result<Option<InstanceRecord>, StoreError> {
    app.store
        .write_grouped(|write| change_record(write, id, change))
}

/// Like [`update_instance`], but durable only with the next durable commit: for a change that
/// a durable task state change follows at once, and that the task redoes when a crash loses it.
pub fn update_instance_buffered(
    app: &App,
    id: u32,
    change: impl FnOnce(&mut InstanceRecord),
) -> Result<Option<InstanceRecord>, StoreError> {
    app.store
        .write_buffered(|write| change_record(write, id, change))
}

/// Moves the record of `id` to `state`; `None` when it does not exist.
pub fn set_state(
    app: &App,
    id: u32,
    state: InstanceState,
) -> Result<Option<InstanceRecord>, StoreError> {
    update_instance(app, id, |record| state.set(record))
}

fn change_record(
    write: &mut Write<'_>,
    id: u32,
    change: impl FnOnce(&mut InstanceRecord),
) -> Result<Option<InstanceRecord>, StoreError> {
    let key = InstanceRecord::key(id);
    let Some(mut record) = write.get::<InstanceRecord>(Table::Instances, &key)? else {
        return Ok(None);
    };
    change(&mut record);
    record.updated_at = crate::clock::now_rfc3339();
    write.put(Table::Instances, &key, &record)?;
    Ok(Some(record))
}

/// Removes the record of `id`.
pub fn remove_instance(app: &App, id: u32) -> Result<(), StoreError> {
    app.store
        .write_grouped(|write| write.delete(Table::Instances, &InstanceRecord::key(id)))
        .map(drop)
}

/// Removes the record of `id` without a flush of its own (the task's end, written next, makes
/// it durable; a crash before that leaves the task to run again and remove it again).
pub fn remove_instance_buffered(app: &App, id: u32) -> Result<(), StoreError> {
    app.store
        .write_buffered(|write| write.delete(Table::Instances, &InstanceRecord::key(id)))
        .map(drop)
}

/// Drops the reservation of `vmid` when no task took it: the record goes if it is still
/// `creating`.
pub fn release_reservation(app: &App, vmid: u32) -> Result<(), StoreError> {
    app.store.write(|write| {
        let key = InstanceRecord::key(vmid);
        if let Some(record) = write.get::<InstanceRecord>(Table::Instances, &key)?
            && InstanceState::Creating.is_of(&record)
        {
            write.delete(Table::Instances, &key)?;
        }
        Ok::<(), StoreError>(())
    })
}

/// Refuses, inside the transaction `write`, a reservation that would take the owner of
/// `record` over their quota with `demand`: the usage and the limits are read in the same
/// transaction that writes the reservation, so parallel creates cannot all pass.
fn check_quota_in(
    write: &Write<'_>,
    record: &InstanceRecord,
    demand: Option<&Demand>,
) -> Result<(), ReserveError> {
    let Some(demand) = demand else {
        return Ok(());
    };
    let Some(owner) = write.get::<UserRecord>(Table::Users, &record.user)? else {
        return Ok(());
    };
    let records: Vec<(String, InstanceRecord)> = write.list(Table::Instances)?;
    let usage = quota::Usage::of(
        records.iter().map(|(_, record)| record),
        &owner.id,
        demand.resizes,
    );
    quota::check(&usage, demand, &owner.quota).map_err(|exceeded| ReserveError::Quota {
        user: owner.username.clone(),
        exceeded,
    })
}

/// Writes `record` under its id unless that id is taken (or `demand` exceeds the owner's
/// quota); true when written.
fn insert_instance(
    app: &App,
    record: &InstanceRecord,
    demand: Option<&Demand>,
) -> Result<bool, ReserveError> {
    app.store.write_grouped(|write| {
        let key = InstanceRecord::key(record.id);
        if write
            .get::<InstanceRecord>(Table::Instances, &key)?
            .is_some()
        {
            return Ok(false);
        }
        check_quota_in(write, record, demand)?;
        write.put(Table::Instances, &key, record)?;
        Ok(true)
    })
}

/// Instances per node.
pub fn instances_per_node(app: &App) -> Result<BTreeMap<String, u32>, StoreError> {
    let records: Vec<(String, InstanceRecord)> = app.store.list(Table::Instances)?;
    let mut counts = BTreeMap::new();
    for (_, record) in records {
        *counts.entry(record.node).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Refuses customers' changes to a suspended instance, and every change while it is being
/// created or destroyed. `admin`: the caller is an admin.
pub fn check_changeable(admin: bool, record: &InstanceRecord) -> Result<(), InstanceError> {
    if record.suspended && !admin {
        return Err(InstanceError::Suspended(record.id));
    }
    match InstanceState::of(record) {
        Some(InstanceState::Creating) => Err(InstanceError::Creating(record.id)),
        Some(InstanceState::Destroying) => Err(InstanceError::Destroying(record.id)),
        _ => Ok(()),
    }
}

/// Why a VMID could not be reserved.
#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error("VMID {0} is already taken")]
    Taken(u32),
    #[error("no free VMID found after {0} tries")]
    Exhausted(u32),
    /// The owner's quota would be exceeded by the reserved instance.
    #[error("the quota of user {user} would be exceeded: {}", .exceeded.exceeded.join(", "))]
    Quota {
        user: String,
        exceeded: QuotaExceeded,
    },
    #[error(transparent)]
    Proxmox(#[from] ProxmoxError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reserves a VMID by writing `record` (state `creating`) under it. With `wanted`, exactly
/// that id or [`ReserveError::Taken`] (taken in the store or, as nextid tells, in Proxmox).
/// Without, the first id free in the store from where `node`'s search starts (Proxmox's
/// nextid, kept for a while, see [`crate::proxmox::registry::Registry::vmid_hint`]); `fresh`
/// reads nextid again first. Proxmox's nextid reserves nothing, so the store's
/// insert-if-absent is what keeps two concurrent creates apart, and an id taken in Proxmox
/// meanwhile (outside the coordinator, or a stale start) is refused by the create call itself:
/// the create task then moves the reservation on.
///
/// With `demand`, the owner's quota is checked in the transaction that writes the
/// reservation ([`ReserveError::Quota`]); a reservation that moves an existing one passes
/// `None`.
pub async fn reserve_vmid(
    app: &App,
    client: &Client,
    node: &str,
    wanted: Option<u32>,
    fresh: bool,
    record: &mut InstanceRecord,
    demand: Option<&Demand>,
) -> Result<u32, ReserveError> {
    if let Some(id) = wanted {
        if instance(app, id)?.is_some() {
            return Err(ReserveError::Taken(id));
        }
        match client.next_id(Some(id)).await {
            Ok(_) => {}
            Err(error) if error.class() == ErrorClass::AlreadyExists => {
                return Err(ReserveError::Taken(id));
            }
            Err(error) => return Err(error.into()),
        }
        record.id = id;
        return if insert_instance(app, record, demand)? {
            Ok(id)
        } else {
            Err(ReserveError::Taken(id))
        };
    }
    let mut start = app.proxmox.vmid_hint(node, client, fresh).await?;
    if !fresh {
        return insert_at_first_free(app, record, start, demand)?
            .ok_or(ReserveError::Exhausted(SEARCH));
    }
    // After a refusal each candidate is also checked with Proxmox, so that a range of ids
    // taken outside the coordinator is crossed here rather than by refused creates.
    const CHECKS: u32 = 32;
    for _ in 0..CHECKS {
        let candidate = insert_at_first_free(app, record, start, demand)?
            .ok_or(ReserveError::Exhausted(SEARCH))?;
        match client.next_id(Some(candidate)).await {
            Ok(_) => return Ok(candidate),
            Err(error) => {
                remove_instance(app, candidate)?;
                if error.class() != ErrorClass::AlreadyExists {
                    return Err(error.into());
                }
                app.proxmox.vmid_taken(node, candidate);
                start = candidate.saturating_add(1);
            }
        }
    }
    Err(ReserveError::Exhausted(CHECKS))
}

/// How many ids the search for a free VMID looks at.
const SEARCH: u32 = 100_000;

/// Writes `record` under the first id from `start` on that no record has, in one transaction.
fn insert_at_first_free(
    app: &App,
    record: &mut InstanceRecord,
    start: u32,
    demand: Option<&Demand>,
) -> Result<Option<u32>, ReserveError> {
    // Buffered: the task written next makes the reservation durable, and a reservation lost
    // in a crash before it was never acted on.
    app.store.write_buffered(|write| {
        check_quota_in(write, record, demand)?;
        for candidate in (start..=999_999_999).take(SEARCH as usize) {
            let key = InstanceRecord::key(candidate);
            if write
                .get::<InstanceRecord>(Table::Instances, &key)?
                .is_none()
            {
                record.id = candidate;
                write.put(Table::Instances, &key, record)?;
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    })
}
