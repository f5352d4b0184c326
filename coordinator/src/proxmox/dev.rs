//! Development mode: the Proxmox simulator runs inside the coordinator with one node (`pve1`),
//! its storages and a Debian template, and is registered as a node, so instances can be created,
//! started and destroyed through the API at once. Its state is kept next to the store.

use std::sync::Arc;

use crate::App;
use crate::store::Table;
use crate::store::records::ProxmoxNodeRecord;

/// Starts the simulator and (re-)registers it as node `pve1`.
pub async fn start(app: &Arc<App>) -> Result<(), String> {
    crate::install_crypto_provider();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| format!("cannot bind the simulator: {error}"))?;
    let token_id = "hostplane@pve!dev".to_string();
    let token_secret = crate::auth::random_token(24);
    let config = pvesim::SimConfig {
        nodes: 1,
        tokens: vec![format!("{token_id}={token_secret}")],
        tls: true,
        state_file: Some(app.config.data_dir.join("pvesim-state.json")),
        ..pvesim::SimConfig::default()
    };
    let simulator = pvesim::Simulator::start(config, listener)
        .await
        .map_err(|error| format!("cannot start the simulator: {error}"))?;
    let record = ProxmoxNodeRecord {
        name: "pve1".into(),
        address: "127.0.0.1".into(),
        port: simulator.local_addr().port(),
        scheme: "https".into(),
        token_id,
        token_secret,
        fingerprint: simulator.fingerprint(),
        ca_pem: None,
        insecure: false,
        tags: vec!["simulator".into()],
        created_at: crate::clock::now_rfc3339(),
    };
    app.store
        .put(Table::ProxmoxNodes, &record.name, &record)
        .map_err(|error| error.to_string())?;
    app.proxmox.forget(&record.name);
    tracing::info!(url = %simulator.base_url(), "development mode: Proxmox simulator registered as node pve1");
    *app.proxmox.dev_simulator.lock().await = Some(simulator);
    Ok(())
}
