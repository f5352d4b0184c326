//! Operational routes: `/metrics`, the OpenAPI document, and the audit log.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::Value;

use super::list::Page;
use super::{Access, ApiRequest, ApiResult, RouteTable, ok};
use crate::App;
use crate::store::Table;
use crate::store::records::AuditRecord;

pub fn routes(table: &mut RouteTable) {
    table.add(
        Method::GET,
        "/metrics",
        Access::MetricsToken,
        "operations",
        "Prometheus metrics in text format",
        |a, r| Box::pin(metrics(a, r)),
    );
    table.add(
        Method::GET,
        "/api/v1/openapi.json",
        Access::Public,
        "operations",
        "This API's OpenAPI document",
        |a, r| Box::pin(openapi(a, r)),
    );
    table.add(
        Method::GET,
        "/api/v1/audit",
        Access::Admin,
        "operations",
        "The audit log of mutating calls, newest first (filters: actor, route)",
        |a, r| Box::pin(audit(a, r)),
    );
}

async fn metrics(app: Arc<App>, _request: ApiRequest) -> ApiResult {
    // Read at scrape time: the registry of live connections is the one source of the count.
    app.metrics
        .agents_connected
        .set(app.channel.stats().connected as i64);
    let mut response = super::Reply::new(app.metrics.render().into());
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    Ok(response)
}

async fn openapi(app: Arc<App>, _request: ApiRequest) -> ApiResult {
    ok(&super::openapi::document(&app.routes))
}

async fn audit(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let page = Page::from_request(&request)?;
    let actor = request.field("actor")?;
    let route = request.field("route")?;
    let records: Vec<(String, AuditRecord)> = app.store.list(Table::Audit)?;
    let matching: Vec<Value> = records
        .iter()
        .rev()
        .map(|(_, record)| record)
        .filter(|record| {
            actor
                .as_deref()
                .is_none_or(|actor| record.actor.as_deref() == Some(actor))
        })
        .filter(|record| route.as_deref().is_none_or(|route| record.route == route))
        .map(|record| serde_json::to_value(record).unwrap_or(Value::Null))
        .collect();
    ok(&page.slice(&matching))
}

/// Appends one audit record for a mutating call. Failures are logged, never hidden from the
/// operator, but do not change the answer already computed.
pub fn record(app: &App, entry: AuditRecord) {
    let result = app.store.write(|write| {
        let sequence = write.next_sequence(Table::Audit)?;
        let entry = AuditRecord { sequence, ..entry };
        write.put(Table::Audit, &format!("{sequence:020}"), &entry)
    });
    if let Err(error) = result {
        tracing::error!(%error, "cannot append to the audit log");
    }
}
