//! Services per vhost: TLS certificates (`/service/ssl/...`: uploaded, or issued and
//! renewed through ACME) and nginx caches (`/service/cache/...`). Status comes from the agent at
//! once; every change is a task.
//!
//! An upload is checked for shape here and, when the agent is connected, against the vhost's
//! names and the agent's clock before a task exists (422 with reasons per field); the agent
//! checks it again when it deploys. Cache settings are checked with the protocol's rules.

use std::sync::Arc;

use http::Method;
use protocol::web::{
    Bypass, CacheSettings, CertificateSource, CertificateUpload, MAX_SIZE_MEGABYTES, Presence,
    PurgeRequest, ServerName, ValidationError, VhostId,
};
use protocol::{Operation, OperationOutput, Secret};
use serde::Deserialize;
use serde_json::{Value, json};

use super::agent_tasks::submit;
use super::vhosts::{body_object, call, changeable, from_body, invalid, target};
use super::{Access, ApiError, ApiRequest, ApiResult, RouteTable, ok};
use crate::App;
use crate::acme::{AcmeInput, task::new_task};
use crate::agentwork::results::{cache_json, certificate_json};
use crate::clock::rfc3339_unix;
use crate::store::Table;
use crate::store::records::AcmeCertificateRecord;
use crate::tasks::kinds::{
    CACHE_CHANGE, CACHE_DISABLE, CACHE_ENABLE, CACHE_PURGE, SSL_DEPLOY, SSL_REMOVE,
};

pub fn routes(table: &mut RouteTable) {
    use Access::Authenticated;
    let ssl = "/api/v1/service/ssl/instance/{id}/vhost/{vhostid}";
    table.add(
        Method::GET,
        ssl,
        Authenticated,
        "ssl",
        "Certificate status: issuer, names, not_before, not_after, source, last attempt and its error, ACME renewal",
        |a, r| Box::pin(ssl_status(a, r)),
    );
    table.add(
        Method::POST,
        ssl,
        Authenticated,
        "ssl",
        "Deploy {certificate, private_key, chain?, redirect_http?} (PEM) or issue {acme: true, redirect_http?} (task)",
        |a, r| Box::pin(ssl_deploy(a, r)),
    );
    table.add(
        Method::PUT,
        ssl,
        Authenticated,
        "ssl",
        "Replace with an upload, or renew now through ACME ({acme: true}, or no body for an ACME certificate) (task)",
        |a, r| Box::pin(ssl_deploy(a, r)),
    );
    table.add(
        Method::DELETE,
        ssl,
        Authenticated,
        "ssl",
        "Remove TLS from the vhost and its certificate files; ACME renewal stops (task)",
        |a, r| Box::pin(ssl_remove(a, r)),
    );
    let cache = "/api/v1/service/cache/instance/{id}/vhost/{vhostid}";
    table.add(
        Method::GET,
        cache,
        Authenticated,
        "cache",
        "Cache status and settings, and the space its files take",
        |a, r| Box::pin(cache_status(a, r)),
    );
    table.add(
        Method::POST,
        cache,
        Authenticated,
        "cache",
        "Enable the vhost's cache {ttl, max_size, bypass?: {cookies, paths}} (task)",
        |a, r| Box::pin(cache_set(a, r, Presence::New)),
    );
    table.add(
        Method::PUT,
        cache,
        Authenticated,
        "cache",
        "Change the cache's settings {ttl, max_size, bypass?} (task)",
        |a, r| Box::pin(cache_set(a, r, Presence::Existing)),
    );
    table.add(
        Method::DELETE,
        cache,
        Authenticated,
        "cache",
        "Disable the cache and remove its files (task)",
        |a, r| Box::pin(cache_disable(a, r)),
    );
    table.add(
        Method::POST,
        "/api/v1/service/cache/instance/{id}/vhost/{vhostid}/purge",
        Authenticated,
        "cache",
        "Purge everything, or {paths: [...]} (request URIs), keeping the cache directory (task)",
        |a, r| Box::pin(cache_purge(a, r)),
    );
}

fn acme_key(instance: u32, vhost: &VhostId) -> String {
    AcmeCertificateRecord::key(instance, vhost.as_str())
}

async fn ssl_status(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, _, vhost) = target(&app, &request)?;
    let status = match call(
        &app,
        id,
        Operation::CertificateGet {
            vhost: vhost.clone(),
        },
    )
    .await?
    {
        OperationOutput::Certificate(status) => status,
        other => {
            return Err(ApiError::internal(format!(
                "the agent answered a certificate status with {other:?}"
            )));
        }
    };
    let mut body = certificate_json(&status);
    let record: Option<AcmeCertificateRecord> = app
        .store
        .get(Table::AcmeCertificates, &acme_key(id, &vhost))?;
    let renew_before = app.config.acme.renew_before.as_secs() as i64;
    body["acme"] = match record {
        None => Value::Null,
        Some(record) => json!({
            "directory": app.config.acme.directory,
            "renews_at": record.not_after.map(|at| rfc3339_unix(at - renew_before)),
            "last_attempt_at": record.last_attempt_at.map(rfc3339_unix),
            "last_error": record.last_error,
            "task": record.task,
        }),
    };
    ok(&body)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SslInput {
    #[serde(default)]
    acme: Option<bool>,
    #[serde(default)]
    certificate: Option<String>,
    #[serde(default)]
    private_key: Option<Secret>,
    #[serde(default)]
    chain: Option<String>,
    #[serde(default)]
    redirect_http: Option<bool>,
}

async fn ssl_deploy(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, record, vhost) = target(&app, &request)?;
    changeable(&request, &record)?;
    let input: SslInput = from_body(body_object(&request)?)?;
    let key = acme_key(id, &vhost);
    let existing: Option<AcmeCertificateRecord> = app.store.get(Table::AcmeCertificates, &key)?;
    let renew = request.method == Method::PUT
        && input.certificate.is_none()
        && input.private_key.is_none()
        && input.acme.is_none()
        && existing.is_some();
    if input.acme == Some(true) || renew {
        if input.certificate.is_some() || input.private_key.is_some() || input.chain.is_some() {
            return Err(ApiError::invalid_field(
                "acme",
                "either upload a certificate or ask for ACME, not both",
            ));
        }
        return acme_issue(
            &app,
            &request,
            id,
            &record.user,
            vhost,
            input.redirect_http,
            existing,
        )
        .await;
    }
    let mut errors = ValidationError::default();
    if input.certificate.is_none() {
        errors.push("certificate", "a PEM certificate is needed (or acme: true)");
    }
    if input.private_key.is_none() {
        errors.push("private_key", "the certificate's PEM private key is needed");
    }
    let (Some(certificate), Some(private_key)) = (input.certificate, input.private_key) else {
        return Err(invalid(&errors));
    };
    let upload = CertificateUpload {
        certificate,
        private_key,
        chain: input.chain,
        redirect_http: input.redirect_http,
    };
    upload.check_shape().map_err(|errors| invalid(&errors))?;
    if app.channel.is_connected(id) {
        // Refuse a bad certificate now rather than as a failed task.
        call(
            &app,
            id,
            Operation::CertificateCheck {
                vhost: vhost.clone(),
                upload: upload.clone(),
            },
        )
        .await?;
    }
    // An uploaded certificate replaces an ACME one: renewals would overwrite it.
    app.store.delete(Table::AcmeCertificates, &key)?;
    submit(
        &app,
        &request,
        id,
        SSL_DEPLOY,
        Operation::CertificateDeploy {
            vhost,
            upload,
            source: CertificateSource::Upload,
        },
    )
    .await
}

async fn acme_issue(
    app: &App,
    request: &ApiRequest,
    id: u32,
    owner: &str,
    vhost: VhostId,
    redirect_http: Option<bool>,
    existing: Option<AcmeCertificateRecord>,
) -> ApiResult {
    if let Some(task) = existing.as_ref().and_then(|record| record.task.as_ref())
        && app
            .tasks
            .get(task)?
            .is_some_and(|task| !task.state.is_ended())
    {
        return Err(ApiError::conflict(format!(
            "an ACME issuance for this vhost is under way (task {task})"
        ))
        .with_details(json!({ "task": task })));
    }
    if app.channel.is_connected(id) {
        // HTTP-01 validates each name through the vhost; wildcards cannot be.
        if let OperationOutput::Vhost(info) =
            call(app, id, Operation::VhostGet { id: vhost.clone() }).await?
        {
            let mut errors = ValidationError::default();
            for (index, name) in info.spec.server_names.iter().enumerate() {
                if ServerName::parse(name).is_ok_and(|name| name.is_wildcard()) {
                    errors.push(
                        format!("server_names[{index}]"),
                        "HTTP-01 cannot validate a wildcard name; upload a certificate instead",
                    );
                }
            }
            if !errors.fields.is_empty() {
                return Err(invalid(&errors));
            }
        }
    }
    let input = AcmeInput {
        vhost: vhost.to_string(),
        redirect_http,
        renewal: existing.is_some(),
    };
    let new = new_task(owner, id, &input);
    super::tasks::respond_with_task(app, request, new).await
}

async fn ssl_remove(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, record, vhost) = target(&app, &request)?;
    changeable(&request, &record)?;
    app.store
        .delete(Table::AcmeCertificates, &acme_key(id, &vhost))?;
    submit(
        &app,
        &request,
        id,
        SSL_REMOVE,
        Operation::CertificateRemove { vhost },
    )
    .await
}

async fn cache_status(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, _, vhost) = target(&app, &request)?;
    match call(&app, id, Operation::CacheGet { vhost }).await? {
        OperationOutput::Cache(status) => ok(&cache_json(&status)),
        other => Err(ApiError::internal(format!(
            "the agent answered a cache status with {other:?}"
        ))),
    }
}

/// A duration in seconds: a number, or text with an `s`, `m`, `h` or `d` suffix.
fn parse_seconds(value: &Value) -> Result<u64, String> {
    parse_with_units(value, &[("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]).ok_or_else(|| {
        "must be a number of seconds, or text such as \"10m\", \"2h\" or \"1d\"".into()
    })
}

/// A size in bytes: a number, or text with a `k`, `m` or `g` suffix (powers of 1024).
fn parse_bytes(value: &Value) -> Result<u64, String> {
    parse_with_units(value, &[("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30)])
        .ok_or_else(|| "must be a number of bytes, or text such as \"512m\" or \"2g\"".into())
}

fn parse_with_units(value: &Value, units: &[(&str, u64)]) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => {
            let text = text.trim().to_ascii_lowercase();
            let (digits, factor) = units
                .iter()
                .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|rest| (rest, *factor)))
                .unwrap_or((text.as_str(), 1));
            digits.trim().parse::<u64>().ok()?.checked_mul(factor)
        }
        _ => None,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheInput {
    #[serde(default, alias = "ttl_seconds")]
    ttl: Option<Value>,
    #[serde(default)]
    max_size: Option<Value>,
    #[serde(default)]
    max_size_megabytes: Option<u64>,
    #[serde(default)]
    bypass: Option<Bypass>,
}

/// Cache settings from the body: `ttl` in seconds, `max_size` in bytes (rounded up to whole
/// megabytes, as nginx is told) or `max_size_megabytes`.
fn cache_settings(request: &ApiRequest) -> Result<CacheSettings, ApiError> {
    let input: CacheInput = from_body(body_object(request)?)?;
    let mut errors = ValidationError::default();
    let ttl = match &input.ttl {
        None => {
            errors.push("ttl", "is required (seconds)");
            0
        }
        Some(value) => parse_seconds(value)
            .map_err(|reason| errors.push("ttl", reason))
            .unwrap_or(0),
    };
    let megabytes = match (&input.max_size, input.max_size_megabytes) {
        (Some(_), Some(_)) => {
            errors.push("max_size", "give max_size or max_size_megabytes, not both");
            0
        }
        (Some(value), None) => parse_bytes(value)
            .map_err(|reason| errors.push("max_size", reason))
            .map(|bytes| bytes.div_ceil(1 << 20))
            .unwrap_or(0),
        (None, Some(megabytes)) => megabytes,
        (None, None) => {
            errors.push("max_size", "is required (bytes)");
            0
        }
    };
    if !errors.fields.is_empty() {
        return Err(invalid(&errors));
    }
    let settings = CacheSettings {
        ttl_seconds: u32::try_from(ttl).unwrap_or(u32::MAX),
        max_size_megabytes: u32::try_from(megabytes).unwrap_or(MAX_SIZE_MEGABYTES + 1),
        bypass: input.bypass.unwrap_or_default(),
    };
    settings.validate().map_err(|mut errors| {
        // Name the fields as the caller sent them.
        for error in &mut errors.fields {
            if error.field == "ttl_seconds" {
                error.field = "ttl".into();
            } else if error.field == "max_size_megabytes" && input.max_size.is_some() {
                error.field = "max_size".into();
            }
        }
        invalid(&errors)
    })?;
    Ok(settings)
}

async fn cache_set(app: Arc<App>, request: ApiRequest, presence: Presence) -> ApiResult {
    let (id, record, vhost) = target(&app, &request)?;
    changeable(&request, &record)?;
    let settings = cache_settings(&request)?;
    let kind = match presence {
        Presence::New => CACHE_ENABLE,
        _ => CACHE_CHANGE,
    };
    submit(
        &app,
        &request,
        id,
        kind,
        Operation::CacheSet {
            vhost,
            settings,
            presence,
        },
    )
    .await
}

async fn cache_disable(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, record, vhost) = target(&app, &request)?;
    changeable(&request, &record)?;
    submit(
        &app,
        &request,
        id,
        CACHE_DISABLE,
        Operation::CacheDisable { vhost },
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeInput {
    #[serde(default)]
    paths: Option<Vec<String>>,
}

async fn cache_purge(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let (id, record, vhost) = target(&app, &request)?;
    changeable(&request, &record)?;
    let input: PurgeInput = from_body(body_object(&request)?)?;
    let purge = match input.paths {
        None => PurgeRequest::All,
        Some(paths) => PurgeRequest::Paths(paths),
    };
    purge.validate().map_err(|errors| invalid(&errors))?;
    submit(
        &app,
        &request,
        id,
        CACHE_PURGE,
        Operation::CachePurge {
            vhost,
            request: purge,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_numbers_and_units() {
        let cases = [
            (json!(300), Some(300)),
            (json!("300"), Some(300)),
            (json!("10m"), Some(600)),
            (json!("2h"), Some(7200)),
            (json!("1d"), Some(86400)),
            (json!("-1"), None),
            (json!("ten"), None),
            (json!(true), None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_seconds(&value).ok(), expected, "{value}");
        }
        let cases = [
            (json!(1048576), Some(1048576)),
            (json!("512m"), Some(512 << 20)),
            (json!("2G"), Some(2 << 30)),
            (json!("1x"), None),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_bytes(&value).ok(), expected, "{value}");
        }
    }
}
