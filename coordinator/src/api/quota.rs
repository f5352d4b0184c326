//! Per-user quota routes: an admin sets the limits, a user reads them with the usage. The
//! check itself is [`crate::instances::quota`].

use std::sync::Arc;

use http::Method;
use serde_json::{Value, json};

use super::{Access, ApiError, ApiRequest, ApiResult, RouteTable, ok};
use crate::App;
use crate::instances::quota::usage;
use crate::store::Table;
use crate::store::records::{Quota, UserRecord};

pub fn routes(table: &mut RouteTable) {
    table.add(
        Method::GET,
        "/api/v1/user/{userid}/quota",
        Access::Authenticated,
        "users",
        "A user's quota and usage (admin, or the user itself)",
        |a, r| Box::pin(get_quota(a, r)),
    );
    table.add(
        Method::PUT,
        "/api/v1/user/{userid}/quota",
        Access::Admin,
        "users",
        "Set a user's limits {max_instances, max_cores, max_memory (MiB), max_disk (GiB)}; null removes one",
        |a, r| Box::pin(set_quota(a, r)),
    );
}

fn quota_json(app: &App, user: &UserRecord) -> Result<Value, ApiError> {
    let usage = usage(&app.store, &user.id, None)?;
    Ok(json!({
        "user": user.id,
        "quota": user.quota,
        "usage": {
            "instances": usage.instances,
            "cores": usage.cores,
            "memory": usage.memory,
            "disk": usage.disk,
        },
    }))
}

async fn get_quota(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?;
    let id = request.param(0);
    let user: Option<UserRecord> = app.store.get(Table::Users, id)?;
    match user {
        Some(user) if principal.is_admin() || principal.user_id == user.id => {
            ok(&quota_json(&app, &user)?)
        }
        _ => Err(ApiError::not_found(format!("user {id} does not exist"))),
    }
}

/// Reads the limits of a body: each a whole number, or null to remove it; absent keeps it.
pub fn apply_quota(quota: &mut Quota, body: &Value) -> Result<(), ApiError> {
    let Some(map) = body.as_object() else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let mut problems: Vec<(&str, String)> = Vec::new();
    let known = ["max_instances", "max_cores", "max_memory", "max_disk"];
    for key in map.keys() {
        if !known.contains(&key.as_str()) {
            problems.push((key.as_str(), "is not a quota".into()));
        }
    }
    let mut read = |key: &'static str| -> Option<Option<u64>> {
        match map.get(key) {
            None => None,
            Some(Value::Null) => Some(None),
            Some(value) => match crate::proxmox::types::lenient_u64(value) {
                Some(number) if value.as_f64().is_none_or(|f| f.fract() == 0.0) => {
                    Some(Some(number))
                }
                _ => {
                    problems.push((key, "must be a whole number or null".into()));
                    None
                }
            },
        }
    };
    let instances = read("max_instances");
    let cores = read("max_cores");
    let memory = read("max_memory");
    let disk = read("max_disk");
    if !problems.is_empty() {
        return Err(ApiError::invalid(&problems));
    }
    if let Some(value) = instances {
        quota.max_instances = value.map(|value| value.min(u64::from(u32::MAX)) as u32);
    }
    if let Some(value) = cores {
        quota.max_cores = value.map(|value| value.min(u64::from(u32::MAX)) as u32);
    }
    if let Some(value) = memory {
        quota.max_memory = value;
    }
    if let Some(value) = disk {
        quota.max_disk = value;
    }
    Ok(())
}

async fn set_quota(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let id = request.param(0).to_string();
    let body = request.json_body()?.cloned().unwrap_or(Value::Null);
    let user = app.store.write(|write| {
        let Some(mut user) = write.get::<UserRecord>(Table::Users, &id)? else {
            return Ok::<Result<UserRecord, ApiError>, crate::store::StoreError>(Err(
                ApiError::not_found(format!("user {id} does not exist")),
            ));
        };
        if let Err(error) = apply_quota(&mut user.quota, &body) {
            return Ok(Err(error));
        }
        user.updated_at = crate::clock::now_rfc3339();
        write.put(Table::Users, &id, &user)?;
        Ok(Ok(user))
    })??;
    ok(&quota_json(&app, &user)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_bodies() {
        let mut quota = Quota {
            max_instances: Some(3),
            max_cores: Some(8),
            ..Quota::default()
        };
        apply_quota(
            &mut quota,
            &json!({"max_cores": null, "max_memory": "4096", "max_disk": 50}),
        )
        .unwrap();
        assert_eq!(
            quota,
            Quota {
                max_instances: Some(3),
                max_cores: None,
                max_memory: Some(4096),
                max_disk: Some(50)
            }
        );
        let error = apply_quota(
            &mut quota,
            &json!({"max_cores": -1, "colour": 1, "max_disk": 1.5}),
        )
        .unwrap_err();
        let fields = &error.details.unwrap()["fields"];
        for name in ["max_cores", "colour", "max_disk"] {
            assert!(fields.get(name).is_some(), "{name} in {fields}");
        }
    }
}
