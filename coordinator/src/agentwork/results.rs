//! What an agent reports, as the JSON a task's result keeps and the API answers with: times as
//! RFC 3339, sizes in bytes, the spec's fields at the top level of a vhost. One definition, so
//! a task's result and a direct read show the same shapes.

use protocol::OperationOutput;
use protocol::web::{CacheSettings, CacheStatus, CertificateStatus, VhostInfo};
use serde_json::{Value, json};

use crate::clock::rfc3339_unix;

/// The task result of an operation's output, in the API's JSON shapes.
pub fn output_json(output: &OperationOutput) -> Value {
    match output {
        OperationOutput::Pong { payload } => json!({ "payload": hex::encode(payload) }),
        OperationOutput::Packages(packages) => json!({ "packages": packages_json(packages) }),
        OperationOutput::Databases(databases) => {
            json!({ "databases": databases.iter().map(database_json).collect::<Vec<_>>() })
        }
        OperationOutput::Done => json!({}),
        OperationOutput::DumpFinished { bytes, sha256 } => {
            json!({ "bytes": bytes, "sha256": hex::encode(sha256) })
        }
        OperationOutput::Vhosts(vhosts) => json!({
            "vhosts": vhosts
                .iter()
                .map(|vhost| vhost_json(vhost, false))
                .collect::<Vec<_>>()
        }),
        OperationOutput::Vhost(vhost) => json!({ "vhost": vhost_json(vhost, false) }),
        OperationOutput::Certificate(status) => {
            json!({ "certificate": certificate_json(status) })
        }
        OperationOutput::CertificateSigningRequest { csr_der } => {
            json!({ "csr_bytes": csr_der.len() })
        }
        OperationOutput::Cache(status) => json!({ "cache": cache_json(status) }),
        OperationOutput::CachePurged(report) => json!({ "removed_files": report.removed_files }),
    }
}

/// Packages in the API's shape.
pub fn packages_json(packages: &[protocol::PackageInfo]) -> Vec<Value> {
    packages
        .iter()
        .map(|package| {
            json!({
                "name": package.name,
                "version": package.version,
                "architecture": package.architecture,
            })
        })
        .collect()
}

/// A database in the API's shape.
pub fn database_json(database: &protocol::DatabaseInfo) -> Value {
    json!({
        "name": database.name,
        "engine": database.engine,
        "size": database.size_bytes,
        "owner": database.owner,
    })
}

/// A vhost. The administrator's block itself is shown only when `show_extra` (administrators);
/// everyone sees whether there is one.
pub fn vhost_json(info: &VhostInfo, show_extra: bool) -> Value {
    let mut value = serde_json::to_value(&info.spec).unwrap_or_else(|_| json!({}));
    let fields = json!({
        "id": info.id.as_str(),
        "version": info.version,
        "hash": info.hash,
        "applied_at": rfc3339_unix(info.applied_at_unix),
        "tls": info.tls,
        "cache": info.cache.as_ref().map(cache_settings_json),
        "has_extra": info.extra.is_some(),
        "history": info.history.iter().map(|entry| json!({
            "version": entry.version,
            "hash": entry.hash,
            "applied_at": rfc3339_unix(entry.applied_at_unix),
        })).collect::<Vec<_>>(),
    });
    if let (Some(object), Value::Object(fields)) = (value.as_object_mut(), fields) {
        object.extend(fields);
        if show_extra {
            object.insert("extra".into(), json!(info.extra));
        }
    }
    value
}

/// A vhost's certificate status: the certificate's facts at the top level (null without one).
pub fn certificate_json(status: &CertificateStatus) -> Value {
    let certificate = status.certificate.as_ref();
    json!({
        "enabled": certificate.is_some(),
        "source": certificate.map(|info| info.source),
        "issuer": certificate.map(|info| info.issuer.clone()),
        "subject": certificate.map(|info| info.subject.clone()),
        "names": certificate.map(|info| info.names.clone()),
        "not_before": certificate.map(|info| rfc3339_unix(info.not_before_unix)),
        "not_after": certificate.map(|info| rfc3339_unix(info.not_after_unix)),
        "fingerprint_sha256": certificate.map(|info| info.fingerprint_sha256.clone()),
        "redirect_http": status.redirect_http,
        "last_attempt": status.last_attempt.as_ref().map(|attempt| json!({
            "at": rfc3339_unix(attempt.at_unix),
            "source": attempt.source,
            "succeeded": attempt.error.is_none(),
            "error": attempt.error,
        })),
    })
}

/// Cache settings: `ttl` in seconds, `max_size` in bytes.
pub fn cache_settings_json(settings: &CacheSettings) -> Value {
    json!({
        "ttl": settings.ttl_seconds,
        "max_size": u64::from(settings.max_size_megabytes) << 20,
        "bypass": {
            "cookies": settings.bypass.cookies,
            "paths": settings.bypass.paths,
        },
    })
}

/// A cache's status: whether it is on, its settings, and the space its files take.
pub fn cache_json(status: &CacheStatus) -> Value {
    let mut value = json!({
        "enabled": status.settings.is_some(),
        "size": status.size_bytes,
        "files": status.files,
    });
    if let (Some(object), Some(Value::Object(settings))) = (
        value.as_object_mut(),
        status.settings.as_ref().map(cache_settings_json),
    ) {
        object.extend(settings);
    }
    value
}
