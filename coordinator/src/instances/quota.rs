//! Per-user quotas as a pure check: current usage, what is asked for and the limits in,
//! the exceeded limits out. Callers read the usage where they need it to hold, inside the
//! store transaction that acts on the answer.

use serde::Serialize;

use super::error::InstanceError;
use crate::store::records::{InstanceRecord, Quota, UserRecord};
use crate::store::{Store, StoreError, Table};

/// What a user's instances use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub instances: u32,
    pub cores: u64,
    /// MiB.
    pub memory: u64,
    /// GiB.
    pub disk: u64,
}

impl Usage {
    /// The usage of `user`'s instances among `records`, without the instance `except`.
    pub fn of<'a>(
        records: impl IntoIterator<Item = &'a InstanceRecord>,
        user: &str,
        except: Option<u32>,
    ) -> Usage {
        records
            .into_iter()
            .filter(|record| record.user == user && Some(record.id) != except)
            .fold(Usage::default(), |usage, record| Usage {
                instances: usage.instances + 1,
                cores: usage.cores + u64::from(record.cpu),
                memory: usage.memory + record.memory,
                disk: usage.disk + record.disk,
            })
    }
}

/// What an operation asks for: one more instance of a size, or an instance resized to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// The instance being resized; `None` for a new instance.
    pub resizes: Option<u32>,
    pub cores: u32,
    /// MiB.
    pub memory: u64,
    /// GiB.
    pub disk: u64,
}

/// The limits an operation would exceed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("quota exceeded: {}", .exceeded.join(", "))]
pub struct QuotaExceeded {
    /// The limits as they are.
    pub quota: Quota,
    /// One sentence per exceeded limit (`cores 9 > 8`).
    pub exceeded: Vec<String>,
}

/// Refuses when `usage` (which leaves out the resized instance) plus `demand` exceeds a limit.
pub fn check(usage: &Usage, demand: &Demand, limits: &Quota) -> Result<(), QuotaExceeded> {
    let mut exceeded = Vec::new();
    if demand.resizes.is_none()
        && let Some(max) = limits.max_instances
        && usage.instances + 1 > max
    {
        exceeded.push(format!("instances {} > {max}", usage.instances + 1));
    }
    let cores = usage.cores + u64::from(demand.cores);
    if let Some(max) = limits.max_cores
        && cores > u64::from(max)
    {
        exceeded.push(format!("cores {cores} > {max}"));
    }
    let memory = usage.memory + demand.memory;
    if let Some(max) = limits.max_memory
        && memory > max
    {
        exceeded.push(format!("memory {memory} MiB > {max} MiB"));
    }
    let disk = usage.disk + demand.disk;
    if let Some(max) = limits.max_disk
        && disk > max
    {
        exceeded.push(format!("disk {disk} GiB > {max} GiB"));
    }
    if exceeded.is_empty() {
        Ok(())
    } else {
        Err(QuotaExceeded {
            quota: limits.clone(),
            exceeded,
        })
    }
}

/// [`check`] for `owner` against `records`, as the error an operation returns.
pub fn check_owner<'a>(
    records: impl IntoIterator<Item = &'a InstanceRecord>,
    owner: &UserRecord,
    demand: &Demand,
) -> Result<(), InstanceError> {
    let usage = Usage::of(records, &owner.id, demand.resizes);
    check(&usage, demand, &owner.quota).map_err(|exceeded| InstanceError::Quota {
        user: owner.username.clone(),
        exceeded,
    })
}

/// What `user`'s instances use now, without the instance `except`.
pub fn usage(store: &Store, user: &str, except: Option<u32>) -> Result<Usage, StoreError> {
    let records: Vec<(String, InstanceRecord)> = store.list(Table::Instances)?;
    Ok(Usage::of(
        records.iter().map(|(_, record)| record),
        user,
        except,
    ))
}

/// Refuses when `owner` would exceed a limit with `demand`, by the records stored now.
pub fn check_stored(
    store: &Store,
    owner: &UserRecord,
    demand: &Demand,
) -> Result<(), InstanceError> {
    let records: Vec<(String, InstanceRecord)> = store.list(Table::Instances)?;
    check_owner(records.iter().map(|(_, record)| record), owner, demand)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Quota {
        Quota {
            max_instances: Some(2),
            max_cores: Some(4),
            max_memory: Some(2048),
            max_disk: Some(20),
        }
    }

    fn demand(resizes: Option<u32>, cores: u32, memory: u64, disk: u64) -> Demand {
        Demand {
            resizes,
            cores,
            memory,
            disk,
        }
    }

    #[test]
    fn checks_each_limit() {
        let used = Usage {
            instances: 1,
            cores: 2,
            memory: 1024,
            disk: 10,
        };
        let cases: &[(Demand, &[&str])] = &[
            (demand(None, 2, 1024, 10), &[]),
            (demand(None, 3, 1024, 10), &["cores 5 > 4"]),
            (
                demand(None, 1, 2048, 11),
                &["memory 3072 MiB > 2048 MiB", "disk 21 GiB > 20 GiB"],
            ),
            (demand(Some(100), 2, 1024, 10), &[]),
        ];
        for (demand, expected) in cases {
            let answer = check(&used, demand, &limits());
            match answer {
                Ok(()) => assert!(expected.is_empty(), "{demand:?}"),
                Err(error) => assert_eq!(error.exceeded, *expected, "{demand:?}"),
            }
        }
        let full = Usage {
            instances: 2,
            ..Usage::default()
        };
        let error = check(&full, &demand(None, 1, 16, 1), &limits()).unwrap_err();
        assert_eq!(error.exceeded, ["instances 3 > 2"]);
        assert!(check(&full, &demand(Some(100), 1, 16, 1), &limits()).is_ok());
        assert!(check(&full, &demand(None, 99, 99_999, 999), &Quota::default()).is_ok());
    }
}
