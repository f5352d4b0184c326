//! The live agent connections, one per instance, and what agents reported that is not yet in
//! the store (written in batches, so heartbeats of thousands of agents cost one transaction).

use shell::sync::MutexExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::store::records::AgentRecord;

/// One live connection.
#[derive(Debug, Clone)]
pub struct Live {
    /// Tells connections of the same instance apart (a replaced one must not remove its successor).
    pub serial: u64,
    pub connection: quinn::Connection,
    pub generation: u64,
    pub version: String,
    pub last_seen: SystemTime,
    pub not_after: SystemTime,
}

/// What the status of a connected agent shows.
#[derive(Debug, Clone)]
pub struct LiveStatus {
    pub last_seen: SystemTime,
    pub version: String,
    pub not_after: SystemTime,
}

/// Reported facts waiting to be written to the store.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub last_seen: Option<SystemTime>,
    pub version: Option<String>,
    pub not_after: Option<SystemTime>,
}

impl Seen {
    /// Lays these facts over a stored record.
    pub fn apply(&self, record: &mut AgentRecord) {
        if let Some(last_seen) = self.last_seen {
            record.last_seen = Some(super::rfc3339(last_seen));
        }
        if let Some(version) = &self.version {
            record.version = Some(version.clone());
        }
        if let Some(not_after) = self.not_after {
            record.certificate_not_after = Some(super::rfc3339(not_after));
        }
    }
}

#[derive(Debug, Default)]
pub struct Registry {
    live: Mutex<HashMap<u32, Live>>,
    unflushed: Mutex<HashMap<u32, Seen>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.locked()
}

impl Registry {
    fn note(&self, instance: u32, live: &Live) {
        lock(&self.unflushed).insert(
            instance,
            Seen {
                last_seen: Some(live.last_seen),
                version: Some(live.version.clone()),
                not_after: Some(live.not_after),
            },
        );
    }

    /// Registers a new connection; returns the one it replaces.
    pub fn insert(&self, instance: u32, live: Live) -> Option<Live> {
        self.note(instance, &live);
        lock(&self.live).insert(instance, live)
    }

    /// Removes the connection `serial` of `instance` if it is still the registered one.
    pub fn remove(&self, instance: u32, serial: u64) -> bool {
        let mut live = lock(&self.live);
        match live.get(&instance) {
            Some(current) if current.serial == serial => {
                let mut removed = live.remove(&instance).expect("present");
                drop(live);
                removed.last_seen = crate::clock::system_now();
                self.note(instance, &removed);
                true
            }
            _ => false,
        }
    }

    /// Records a heartbeat or a renewal of connection `serial`.
    pub fn update(&self, instance: u32, serial: u64, not_after: Option<SystemTime>) {
        let mut live = lock(&self.live);
        if let Some(current) = live.get_mut(&instance)
            && current.serial == serial
        {
            current.last_seen = crate::clock::system_now();
            if let Some(not_after) = not_after {
                current.not_after = not_after;
            }
            let current = current.clone();
            drop(live);
            self.note(instance, &current);
        }
    }

    pub fn connection(&self, instance: u32) -> Option<quinn::Connection> {
        lock(&self.live)
            .get(&instance)
            .map(|live| live.connection.clone())
    }

    pub fn live_status(&self, instance: u32) -> Option<LiveStatus> {
        lock(&self.live).get(&instance).map(|live| LiveStatus {
            last_seen: live.last_seen,
            version: live.version.clone(),
            not_after: live.not_after,
        })
    }

    pub fn connected_count(&self) -> usize {
        lock(&self.live).len()
    }

    /// Every live connection (for shutdown).
    pub fn connections(&self) -> Vec<quinn::Connection> {
        lock(&self.live)
            .values()
            .map(|live| live.connection.clone())
            .collect()
    }

    /// Lays facts not yet written over a stored record.
    pub fn overlay_unflushed(&self, record: &mut AgentRecord) {
        if let Some(seen) = lock(&self.unflushed).get(&record.instance) {
            seen.apply(record);
        }
    }

    /// Takes every fact waiting to be written.
    pub fn take_unflushed(&self) -> HashMap<u32, Seen> {
        std::mem::take(&mut *lock(&self.unflushed))
    }

    /// Puts facts back after a failed write, unless newer ones arrived meanwhile.
    pub fn restore_unflushed(&self, facts: HashMap<u32, Seen>) {
        let mut unflushed = lock(&self.unflushed);
        for (instance, seen) in facts {
            unflushed.entry(instance).or_insert(seen);
        }
    }
}
