//! Operational routes: `/healthz` (alive) and `/readyz` (store open, listeners up).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Method, StatusCode};
use serde_json::json;

use super::{Access, ApiRequest, ApiResult, RouteTable, json_response};
use crate::App;

pub fn routes(table: &mut RouteTable) {
    table.add(
        Method::GET,
        "/healthz",
        Access::Public,
        "operations",
        "Liveness: the process answers",
        |app, request| Box::pin(healthz(app, request)),
    );
    table.add(
        Method::GET,
        "/readyz",
        Access::Public,
        "operations",
        "Readiness: the store is open and the listeners are up",
        |app, request| Box::pin(readyz(app, request)),
    );
}

async fn healthz(_app: Arc<App>, _request: ApiRequest) -> ApiResult {
    super::ok(&json!({ "status": "ok" }))
}

async fn readyz(app: Arc<App>, _request: ApiRequest) -> ApiResult {
    let store = app.store.is_healthy();
    let listening = app.ready.load(Ordering::Acquire);
    let ready = store && listening;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(json_response(
        status,
        &json!({ "status": if ready { "ready" } else { "not_ready" }, "store": store, "listening": listening }),
    ))
}
