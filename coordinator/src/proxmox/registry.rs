//! The registered Proxmox nodes and one cached [`Client`] per node. Records live in the store
//! (table `ProxmoxNodes`); clients are built from them on first use and dropped when a node is
//! unregistered or the settings change.

use shell::sync::{MutexExt, RwLockExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::client::{Client, ClientSettings, Endpoint};
use super::error::ProxmoxError;
use super::tls::{self, Trust};
use super::types::StorageSummary;
use crate::store::records::ProxmoxNodeRecord;
use crate::store::{Store, StoreError, Table};

/// Why no client could be had for a node.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("node {0:?} is not registered")]
    UnknownNode(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Proxmox(#[from] ProxmoxError),
}

/// The node registry's live part.
pub struct Registry {
    clients: RwLock<HashMap<String, Client>>,
    settings: RwLock<ClientSettings>,
    /// Root passwords of creates not yet sent to Proxmox, by VMID; memory only, never stored.
    passwords: std::sync::Mutex<HashMap<u32, String>>,
    deadlines: RwLock<Deadlines>,
    /// The built-in simulator of development mode, kept alive while the coordinator runs.
    pub(crate) dev_simulator: tokio::sync::Mutex<Option<pvesim::Simulator>>,
    /// Per node: where the search for a free VMID starts (Proxmox's nextid as last read).
    vmid_hints: Mutex<HashMap<String, (u32, Instant)>>,
    /// Per node: its storages and templates as last read.
    inventories: Mutex<HashMap<String, (Arc<Inventory>, Instant)>>,
}

/// How long a node's nextid answer and its storages and templates are reused. Both are only
/// starting points: a VMID taken meanwhile is refused by the create call (the create moves to
/// another id), and a template or storage not found in a kept inventory is looked up again.
pub const LOOKUP_LIFETIME: Duration = Duration::from_secs(30);

/// How long each kind of Proxmox-backed task may take before it expires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deadlines {
    pub create: Duration,
    pub power: Duration,
    pub update: Duration,
    pub destroy: Duration,
    pub download: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            create: Duration::from_secs(15 * 60),
            power: Duration::from_secs(5 * 60),
            update: Duration::from_secs(5 * 60),
            destroy: Duration::from_secs(10 * 60),
            download: Duration::from_secs(30 * 60),
        }
    }
}

/// What a node offers to new containers.
#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    pub storages: Vec<StorageSummary>,
    /// The volume ids of every container template on the node's template storages, sorted.
    pub templates: Vec<String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Registry")
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(ClientSettings::default())
    }
}

/// The API base URL of a node record.
pub fn base_url(record: &ProxmoxNodeRecord) -> String {
    let host = if record.address.contains(':') && !record.address.starts_with('[') {
        format!("[{}]", record.address)
    } else {
        record.address.clone()
    };
    format!("{}://{}:{}/api2/json", record.scheme, host, record.port)
}

/// How a record's certificate is trusted: the fingerprint, else the CA, else (explicitly)
/// anything.
pub fn trust_of(record: &ProxmoxNodeRecord) -> Result<Trust, ProxmoxError> {
    if let Some(fingerprint) = &record.fingerprint {
        let pin = tls::parse_fingerprint(fingerprint)
            .map_err(|message| ProxmoxError::Config { message })?;
        return Ok(Trust::Fingerprint(pin));
    }
    if let Some(pem) = &record.ca_pem {
        return Ok(Trust::CaPem(pem.clone()));
    }
    if record.insecure || record.scheme == "http" {
        return Ok(Trust::Insecure);
    }
    Err(ProxmoxError::Config {
        message: "neither a certificate fingerprint nor a CA is set".into(),
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.locked()
}

impl Registry {
    pub fn new(settings: ClientSettings) -> Registry {
        Registry {
            clients: RwLock::new(HashMap::new()),
            settings: RwLock::new(settings),
            passwords: std::sync::Mutex::new(HashMap::new()),
            deadlines: RwLock::new(Deadlines::default()),
            dev_simulator: tokio::sync::Mutex::new(None),
            vmid_hints: Mutex::new(HashMap::new()),
            inventories: Mutex::new(HashMap::new()),
        }
    }

    /// The settings new clients get.
    pub fn settings(&self) -> ClientSettings {
        self.settings.read_recovered().clone()
    }

    /// Changes the settings (timeouts, retries) and drops every cached client.
    pub fn set_settings(&self, settings: ClientSettings) {
        *self.settings.write_recovered() = settings;
        self.clients.write_recovered().clear();
    }

    /// The endpoint of a record with the current settings.
    pub fn endpoint(&self, record: &ProxmoxNodeRecord) -> Result<Endpoint, ProxmoxError> {
        Ok(Endpoint {
            base_url: base_url(record),
            token_id: record.token_id.clone(),
            token_secret: record.token_secret.clone(),
            trust: trust_of(record)?,
            settings: self.settings(),
        })
    }

    /// A client for a record, not cached (used to check a node before it is registered).
    pub fn client_for(&self, record: &ProxmoxNodeRecord) -> Result<Client, ProxmoxError> {
        Client::new(&self.endpoint(record)?)
    }

    /// The client of a registered node.
    pub fn client(&self, store: &Store, node: &str) -> Result<Client, RegistryError> {
        if let Some(client) = self.clients.read_recovered().get(node) {
            return Ok(client.clone());
        }
        let record: ProxmoxNodeRecord = store
            .get(Table::ProxmoxNodes, node)?
            .ok_or_else(|| RegistryError::UnknownNode(node.to_string()))?;
        let client = self.client_for(&record)?;
        self.clients
            .write_recovered()
            .insert(node.to_string(), client.clone());
        Ok(client)
    }

    /// Keeps a root password until the create task of `vmid` sends it.
    pub fn set_password(&self, vmid: u32, password: String) {
        self.passwords.locked().insert(vmid, password);
    }

    /// Takes the root password of `vmid`'s create, if one is kept.
    pub fn take_password(&self, vmid: u32) -> Option<String> {
        self.passwords.locked().remove(&vmid)
    }

    /// How long each kind of lifecycle task may take.
    pub fn deadlines(&self) -> Deadlines {
        *self.deadlines.read_recovered()
    }

    /// Changes the lifecycle deadlines (tests shorten them).
    pub fn set_deadlines(&self, deadlines: Deadlines) {
        *self.deadlines.write_recovered() = deadlines;
    }

    /// Drops the cached client of a node (after it was unregistered) and what was read from it.
    pub fn forget(&self, node: &str) {
        self.clients.write_recovered().remove(node);
        lock(&self.vmid_hints).remove(node);
        lock(&self.inventories).remove(node);
    }

    /// Where the search for a free VMID on `node` starts: Proxmox's nextid, read again once
    /// it is older than [`LOOKUP_LIFETIME`] or when `fresh`. Nothing is reserved by it.
    pub async fn vmid_hint(
        &self,
        node: &str,
        client: &Client,
        fresh: bool,
    ) -> Result<u32, ProxmoxError> {
        if !fresh
            && let Some((hint, read_at)) = lock(&self.vmid_hints).get(node)
            && read_at.elapsed() < LOOKUP_LIFETIME
        {
            return Ok(*hint);
        }
        let next = client.next_id(None).await?;
        lock(&self.vmid_hints).insert(node.to_string(), (next, Instant::now()));
        Ok(next)
    }

    /// Moves the start of the VMID search on `node` past `taken`, which Proxmox refused.
    pub fn vmid_taken(&self, node: &str, taken: u32) {
        if let Some((hint, _)) = lock(&self.vmid_hints).get_mut(node) {
            *hint = (*hint).max(taken.saturating_add(1));
        }
    }

    /// The inventory of `node` read less than [`LOOKUP_LIFETIME`] ago, if any.
    pub fn inventory(&self, node: &str) -> Option<Arc<Inventory>> {
        lock(&self.inventories)
            .get(node)
            .filter(|(_, read_at)| read_at.elapsed() < LOOKUP_LIFETIME)
            .map(|(inventory, _)| inventory.clone())
    }

    /// Keeps what was just read from `node`.
    pub fn keep_inventory(&self, node: &str, inventory: Inventory) -> Arc<Inventory> {
        let inventory = Arc::new(inventory);
        lock(&self.inventories).insert(node.to_string(), (inventory.clone(), Instant::now()));
        inventory
    }

    /// Every registered node.
    pub fn records(store: &Store) -> Result<Vec<ProxmoxNodeRecord>, StoreError> {
        Ok(store
            .list::<ProxmoxNodeRecord>(Table::ProxmoxNodes)?
            .into_iter()
            .map(|(_, record)| record)
            .collect())
    }

    /// Stops the development simulator, if one runs.
    pub async fn shutdown(&self) {
        if let Some(simulator) = self.dev_simulator.lock().await.take() {
            simulator.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ProxmoxNodeRecord {
        ProxmoxNodeRecord {
            name: "pve1".into(),
            address: "10.0.0.5".into(),
            port: 8006,
            scheme: "https".into(),
            token_id: "api@pve!ci".into(),
            token_secret: "secret".into(),
            fingerprint: None,
            ca_pem: None,
            insecure: false,
            tags: vec![],
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn urls_and_trust_follow_the_record() {
        let mut node = record();
        assert_eq!(base_url(&node), "https://10.0.0.5:8006/api2/json");
        assert!(trust_of(&node).is_err(), "https needs a pin or a CA");
        node.fingerprint = Some("AB:".repeat(31) + "CD");
        assert!(matches!(trust_of(&node), Ok(Trust::Fingerprint(_))));
        node.address = "fd00::5".into();
        assert_eq!(base_url(&node), "https://[fd00::5]:8006/api2/json");
        node.fingerprint = Some("nonsense".into());
        assert!(trust_of(&node).is_err());
        node.fingerprint = None;
        node.insecure = true;
        assert_eq!(trust_of(&node).unwrap(), Trust::Insecure);
        assert!(!format!("{node:?}").contains("secret\""));
    }
}
