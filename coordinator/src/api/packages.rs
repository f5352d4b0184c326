//! Packages inside an instance: the list comes from the agent's dpkg at once; install,
//! upgrade and remove are agent tasks. Names are checked against Debian's rules here, before a
//! task exists, and the administrator's allow/deny list applies to customers.

use std::sync::Arc;

use http::{Method, StatusCode};
use protocol::names::package::parse_all;
use protocol::names::package_policy::Refusal;
use protocol::{Operation, OperationOutput};
use serde::Deserialize;

use super::agent_tasks::submit;
use super::list::Page;
use super::{Access, ApiError, ApiRequest, ApiResult, RouteTable, ok};
use crate::App;
use crate::agentwork;
use crate::auth::{parse_instance_id, require_instance};
use crate::tasks::kinds::{PACKAGE_INSTALL, PACKAGE_REMOVE, PACKAGE_UPGRADE};

/// The most packages one request may name.
pub const MAX_PACKAGES: usize = 256;
/// Packages nobody may remove through the API: the agent itself (removing it would cut the
/// instance off) and the package manager.
const PROTECTED: [&str; 3] = ["hostplane-agent", "apt", "dpkg"];

pub fn routes(table: &mut RouteTable) {
    use Access::Authenticated;
    for path in [
        "/api/v1/instance/{id}/package",
        "/api/v1/instance/{id}/packages",
    ] {
        table.add(
            Method::GET,
            path,
            Authenticated,
            "packages",
            "Installed packages (name, version, architecture) from the instance's dpkg; filter name",
            |a, r| Box::pin(list(a, r)),
        );
        table.add(
            Method::POST,
            path,
            Authenticated,
            "packages",
            "Install packages {packages: [...]} with apt (task)",
            |a, r| Box::pin(change(a, r, Change::Install)),
        );
        table.add(
            Method::DELETE,
            path,
            Authenticated,
            "packages",
            "Remove packages {packages: [...]} with apt (task)",
            |a, r| Box::pin(change(a, r, Change::Remove)),
        );
    }
    table.add(
        Method::PUT,
        "/api/v1/instance/{id}/packages",
        Authenticated,
        "packages",
        "Upgrade the named packages, or every package when none is named (task)",
        |a, r| Box::pin(change(a, r, Change::Upgrade)),
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Install,
    Upgrade,
    Remove,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeInput {
    #[serde(default)]
    packages: Option<Vec<String>>,
}

async fn list(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?;
    let id = parse_instance_id(request.param(0))?;
    require_instance(&app, principal, id)?;
    let page = Page::from_request(&request)?;
    let names: Vec<String> = request
        .field("name")?
        .map(|name| vec![name])
        .unwrap_or_default();
    if let Err(errors) = parse_all(&names) {
        return Err(ApiError::invalid_field("name", errors[0].to_string()));
    }
    match agentwork::call(&app, id, Operation::PackageList { names }).await? {
        OperationOutput::Packages(packages) => {
            ok(&page.slice(&agentwork::packages_json(&packages)))
        }
        other => Err(ApiError::internal(format!(
            "the agent answered a package list with {other:?}"
        ))),
    }
}

async fn change(app: Arc<App>, request: ApiRequest, change: Change) -> ApiResult {
    let principal = request.principal()?;
    let id = parse_instance_id(request.param(0))?;
    let record = require_instance(&app, principal, id)?;
    super::instances::check_changeable(principal, &record)?;
    let input: ChangeInput = request.input()?;
    let names = input.packages.unwrap_or_default();
    if names.is_empty() && change != Change::Upgrade {
        return Err(ApiError::invalid_field(
            "packages",
            "name at least one package",
        ));
    }
    if names.len() > MAX_PACKAGES {
        return Err(ApiError::invalid_field(
            "packages",
            format!("at most {MAX_PACKAGES} packages at once"),
        ));
    }
    if let Err(errors) = parse_all(&names) {
        let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(ApiError::invalid_field("packages", reasons.join("; ")));
    }
    if change == Change::Remove
        && let Some(name) = names.iter().find(|name| {
            let base = name.split([':', '=']).next().unwrap_or(name);
            PROTECTED.contains(&base)
        })
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "package_protected",
            format!("{name} cannot be removed through the API: the instance needs it"),
        ));
    }
    if !principal.is_admin()
        && let Err(refusals) = app.config.package_policy.check(&names)
    {
        let denied: Vec<String> = refusals
            .iter()
            .map(|refusal| match refusal {
                Refusal::Denied { name, .. } | Refusal::NotAllowed { name } => name.clone(),
                Refusal::InvalidName(error) => error.to_string(),
            })
            .collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "package_not_allowed",
            format!(
                "the provider does not allow customers to install or remove {}",
                denied.join(", ")
            ),
        )
        .with_details(serde_json::json!({ "packages": denied })));
    }
    let (kind, operation) = match change {
        Change::Install => (PACKAGE_INSTALL, Operation::PackageInstall { names }),
        Change::Upgrade => (PACKAGE_UPGRADE, Operation::PackageUpgrade { names }),
        Change::Remove => (PACKAGE_REMOVE, Operation::PackageRemove { names }),
    };
    submit(&app, &request, id, kind, operation).await
}
