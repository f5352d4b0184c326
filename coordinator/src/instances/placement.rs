//! Where a new instance goes: the node (the named one, else the online node with the most
//! free memory), the template volume and the storage for its root disk.

use std::sync::Arc;

use super::error::InstanceError;
use crate::App;
use crate::proxmox::Client;
use crate::proxmox::registry::{Inventory, Registry};

/// The node for a new instance: the named one, else the online registered node with the most
/// free memory.
pub async fn choose_node(
    app: &App,
    wanted: Option<&str>,
) -> Result<(String, Client), InstanceError> {
    if let Some(node) = wanted {
        let client = app.proxmox.client(&app.store, node)?;
        return Ok((node.to_string(), client));
    }
    let records = Registry::records(&app.store)?;
    if records.is_empty() {
        return Err(InstanceError::NoNodes);
    }
    let mut best: Option<(u64, String, Client)> = None;
    let mut last_error = None;
    for record in records {
        let client = match app.proxmox.client(&app.store, &record.name) {
            Ok(client) => client,
            Err(error) => {
                last_error = Some(error.into());
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
        None => Err(last_error.unwrap_or(InstanceError::NoNodeOnline)),
    }
}

/// What `node` offers to new containers: as kept from a recent read, or read now (always
/// when `fresh`). One storage list, then the template storages' contents side by side.
async fn inventory(
    app: &App,
    client: &Client,
    node: &str,
    fresh: bool,
) -> Result<Arc<Inventory>, InstanceError> {
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
pub async fn resolve_placement(
    app: &App,
    client: &Client,
    node: &str,
    template: &str,
    storage: Option<&str>,
) -> Result<(String, String), InstanceError> {
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
fn resolve_template(
    inventory: &Inventory,
    node: &str,
    template: &str,
) -> Result<String, InstanceError> {
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
        InstanceError::invalid_field(
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
) -> Result<String, InstanceError> {
    let usable: Vec<&str> = inventory
        .storages
        .iter()
        .filter(|storage| storage.holds("rootdir"))
        .map(|storage| storage.storage.as_str())
        .collect();
    match wanted {
        Some(name) if usable.contains(&name) => Ok(name.to_string()),
        Some(name) => Err(InstanceError::invalid_field(
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
                InstanceError::invalid_field(
                    "storage",
                    format!("node {node} has no container storage"),
                )
            }),
    }
}
