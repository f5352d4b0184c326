//! The user, login ticket and API key routes; the rules for accounts are in `crate::users`.

use std::sync::Arc;

use http::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::list::Page;
use super::{Access, ApiError, ApiRequest, ApiResult, RouteTable, created, no_content, ok};
use crate::App;
use crate::auth::{self, Credential};
use crate::clock;
use crate::store::Table;
use crate::store::records::{ApiKeyRecord, InstanceRecord, Role, UserRecord};
use crate::users::{
    count_admins, insert_user, remove_tickets_of, validate_email, validate_password,
    validate_username,
};

pub fn routes(table: &mut RouteTable) {
    use Access::{Admin, Authenticated, Public};
    table.add(
        Method::GET,
        "/api/v1/user",
        Admin,
        "users",
        "List users (filters: username, email)",
        |a, r| Box::pin(list_users(a, r)),
    );
    table.add(
        Method::POST,
        "/api/v1/user",
        Admin,
        "users",
        "Create a user",
        |a, r| Box::pin(create_user(a, r)),
    );
    table.add(
        Method::GET,
        "/api/v1/user/{userid}",
        Authenticated,
        "users",
        "One user (admin, or the user itself)",
        |a, r| Box::pin(get_user(a, r)),
    );
    table.add(
        Method::PUT,
        "/api/v1/user/{userid}",
        Authenticated,
        "users",
        "Change password, email or admin flag",
        |a, r| Box::pin(change_user(a, r)),
    );
    table.add(
        Method::DELETE,
        "/api/v1/user/{userid}",
        Admin,
        "users",
        "Delete a user (409 while they own instances, unless force)",
        |a, r| Box::pin(delete_user(a, r)),
    );
    table.add(
        Method::POST,
        "/api/v1/ticket",
        Public,
        "users",
        "Log in: username and password give a ticket",
        |a, r| Box::pin(create_ticket(a, r)),
    );
    table.add(
        Method::DELETE,
        "/api/v1/ticket",
        Authenticated,
        "users",
        "Log out: end the ticket of this request",
        |a, r| Box::pin(delete_ticket(a, r)),
    );
    table.add(
        Method::GET,
        "/api/v1/apikey",
        Authenticated,
        "users",
        "The caller's API keys (admin: anyone's, filter user)",
        |a, r| Box::pin(list_keys(a, r)),
    );
    table.add(
        Method::POST,
        "/api/v1/apikey",
        Authenticated,
        "users",
        "Create an API key; the key is shown once",
        |a, r| Box::pin(create_key(a, r)),
    );
    table.add(
        Method::DELETE,
        "/api/v1/apikey/{keyid}",
        Authenticated,
        "users",
        "Revoke an API key",
        |a, r| Box::pin(delete_key(a, r)),
    );
}

/// The public form of a user: never the password hash.
pub fn user_json(user: &UserRecord) -> Value {
    json!({
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "admin": user.role == Role::Admin,
        "role": user.role,
        "quota": user.quota,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    })
}

fn key_json(key: &ApiKeyRecord) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "user": key.user,
        "role": key.role,
        "created_at": key.created_at,
        "expires_at": key.expires_at.map(clock::rfc3339_unix),
        "instances": key.instances,
        "last_used_at": key.last_used_at,
    })
}

async fn list_users(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let page = Page::from_request(&request)?;
    let username = request.field("username")?;
    let email = request.field("email")?;
    let users: Vec<(String, UserRecord)> = app.store.list(Table::Users)?;
    let matching: Vec<Value> = users
        .iter()
        .map(|(_, user)| user)
        .filter(|user| {
            username
                .as_deref()
                .is_none_or(|name| user.username.eq_ignore_ascii_case(name))
        })
        .filter(|user| {
            email.as_deref().is_none_or(|email| {
                user.email
                    .as_deref()
                    .is_some_and(|own| own.eq_ignore_ascii_case(email))
            })
        })
        .map(user_json)
        .collect();
    ok(&page.slice(&matching))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    admin: bool,
}

async fn create_user(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let input: NewUser = request.input()?;
    let mut problems = Vec::new();
    if let Err(reason) = validate_username(&input.username) {
        problems.push(("username", reason));
    }
    if let Err(reason) = validate_password(&input.password) {
        problems.push(("password", reason));
    }
    if let Some(email) = &input.email
        && let Err(reason) = validate_email(email)
    {
        problems.push(("email", reason));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(&problems));
    }
    let hash = app.passwords.hash(&input.password).await?;
    let role = if input.admin {
        Role::Admin
    } else {
        Role::Customer
    };
    let user = app.store.write(|write| {
        insert_user(write, &input.username, hash, input.email.clone(), role).map_err(ApiError::from)
    })?;
    created(&json!({ "user": user_json(&user) }))
}

fn load_user(app: &App, request: &ApiRequest) -> Result<UserRecord, ApiError> {
    let principal = request.principal()?;
    let id = request.param(0);
    let not_found = || ApiError::not_found(format!("user {id:?} does not exist"));
    // Customers may only see themselves; anyone else is "not found" to them.
    if !principal.may_act_for(id) {
        return Err(not_found());
    }
    app.store.get(Table::Users, id)?.ok_or_else(not_found)
}

async fn get_user(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let user = load_user(&app, &request)?;
    ok(&json!({ "user": user_json(&user) }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserChange {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    admin: Option<bool>,
    #[serde(default)]
    username: Option<String>,
}

async fn change_user(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?.clone();
    let user = load_user(&app, &request)?;
    let change: UserChange = request.input()?;
    let mut problems = Vec::new();
    if change
        .username
        .as_deref()
        .is_some_and(|name| name != user.username)
    {
        problems.push(("username", "cannot be changed".to_string()));
    }
    if let Some(password) = &change.password
        && let Err(reason) = validate_password(password)
    {
        problems.push(("password", reason));
    }
    if let Some(email) = &change.email
        && let Err(reason) = validate_email(email)
    {
        problems.push(("email", reason));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(&problems));
    }
    if change.admin.is_some() && !principal.is_admin() {
        return Err(ApiError::forbidden(
            "only an admin can change the admin flag",
        ));
    }
    let hash = match &change.password {
        Some(password) => Some(app.passwords.hash(password).await?),
        None => None,
    };
    let updated = app.store.write(|write| {
        let mut current: UserRecord = write
            .get(Table::Users, &user.id)?
            .ok_or_else(|| ApiError::not_found("the user no longer exists"))?;
        let mut shown_email = None;
        if let Some(email) = &change.email {
            let new_key = email.to_ascii_lowercase();
            if let Some(owner) = write.get::<String>(Table::EmailIndex, &new_key)?
                && owner != current.id
            {
                // Only an admin learns that another account has the address; anyone else gets
                // the answer a successful change gets, and the stored address stays as it was.
                if principal.is_admin() {
                    return Err(ApiError::conflict(format!("the email {email:?} is in use")));
                }
                shown_email = Some(email.clone());
            } else {
                if let Some(old) = &current.email {
                    write.delete(Table::EmailIndex, &old.to_ascii_lowercase())?;
                }
                write.put(Table::EmailIndex, &new_key, &current.id)?;
                current.email = Some(email.clone());
            }
        }
        if let Some(admin) = change.admin {
            let role = if admin { Role::Admin } else { Role::Customer };
            if current.role == Role::Admin && role != Role::Admin && count_admins(write)? <= 1 {
                return Err(ApiError::conflict(
                    "the last admin cannot stop being an admin",
                ));
            }
            current.role = role;
        }
        if let Some(hash) = hash {
            current.password_hash = hash;
            // A new password ends every ticket of the user.
            remove_tickets_of(write, &current.id)?;
        }
        current.updated_at = clock::now_rfc3339();
        write.put(Table::Users, &current.id, &current)?;
        Ok::<_, ApiError>((current, shown_email))
    })?;
    let (mut updated, shown_email) = updated;
    if shown_email.is_some() {
        updated.email = shown_email;
    }
    ok(&json!({ "user": user_json(&updated) }))
}

async fn delete_user(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let id = request.param(0).to_string();
    let force = request
        .field("force")?
        .is_some_and(|value| matches!(value.as_str(), "true" | "1" | "yes"));
    app.store.write(|write| {
        let user: UserRecord = write
            .get(Table::Users, &id)?
            .ok_or_else(|| ApiError::not_found(format!("user {id:?} does not exist")))?;
        let instances: Vec<(String, InstanceRecord)> = write.list(Table::Instances)?;
        let owned = instances
            .iter()
            .filter(|(_, instance)| instance.user == id)
            .count();
        if owned > 0 && !force {
            return Err(ApiError::conflict(format!(
                "the user owns {owned} instance(s); destroy them first or pass force"
            )));
        }
        if user.role == Role::Admin && count_admins(write)? <= 1 {
            return Err(ApiError::conflict("the last admin cannot be deleted"));
        }
        write.delete(Table::Users, &id)?;
        write.delete(Table::UsernameIndex, &user.username.to_ascii_lowercase())?;
        if let Some(email) = &user.email {
            write.delete(Table::EmailIndex, &email.to_ascii_lowercase())?;
        }
        remove_tickets_of(write, &id)?;
        let keys: Vec<(String, ApiKeyRecord)> = write.list(Table::ApiKeys)?;
        for (key_id, key) in keys {
            if key.user == id {
                write.delete(Table::ApiKeys, &key_id)?;
            }
        }
        Ok::<_, ApiError>(())
    })?;
    no_content()
}

#[derive(Debug, Deserialize)]
struct Login {
    username: String,
    password: String,
}

async fn create_ticket(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let login: Login = request.input()?;
    let address = request
        .client_address(&app.config.limits.trusted_proxies)
        .map(|address| address.to_string())
        .unwrap_or_default();
    let username = login.username.to_ascii_lowercase();
    app.login_limiter.check(&username, &address)?;
    let user: Option<UserRecord> =
        app.store.read(
            |read| match read.get::<String>(Table::UsernameIndex, &username)? {
                Some(id) => read.get(Table::Users, &id),
                None => Ok(None),
            },
        )?;
    // Verify against a fixed hash when the user is unknown, so timing does not tell.
    let valid = match &user {
        Some(user) => {
            app.passwords
                .verify(&login.password, &user.password_hash)
                .await?
        }
        None => {
            app.passwords
                .verify(&login.password, &app.unknown_user_hash)
                .await?;
            false
        }
    };
    let Some(user) = user.filter(|_| valid) else {
        app.login_limiter.failed(&username, &address);
        return Err(ApiError::unauthorized("wrong username or password"));
    };
    app.login_limiter.succeeded(&username, &address);
    let (text, hash, record) = auth::new_ticket(&user.id, app.config.ticket_ttl);
    app.store
        .write(|write| crate::store::tickets::insert(write, &hash, &record))?;
    created(&json!({
        "ticket": text,
        "userid": user.id,
        "username": user.username,
        "expires_at": clock::rfc3339_unix(record.expires_at),
    }))
}

async fn delete_ticket(app: Arc<App>, request: ApiRequest) -> ApiResult {
    match &request.principal()?.credential {
        Credential::Ticket { hash, .. } => {
            app.store
                .write(|write| crate::store::tickets::remove(write, hash))?;
            no_content()
        }
        Credential::ApiKey(_) => Err(ApiError::invalid_field(
            "ticket",
            "this request was authenticated with an API key, not a ticket",
        )),
    }
}

async fn list_keys(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?;
    let page = Page::from_request(&request)?;
    let user_filter = request.field("user")?;
    let keys: Vec<(String, ApiKeyRecord)> = app.store.list(Table::ApiKeys)?;
    let visible: Vec<Value> = keys
        .iter()
        .map(|(_, key)| key)
        .filter(|key| principal.is_admin() || key.user == principal.user_id)
        .filter(|key| user_filter.as_deref().is_none_or(|user| key.user == user))
        .map(key_json)
        .collect();
    ok(&page.slice(&visible))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    role: Option<Role>,
    /// RFC 3339.
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    instances: Option<Vec<u32>>,
}

async fn create_key(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?.clone();
    let input: NewKey = request.input()?;
    let owner_id = input
        .user
        .clone()
        .unwrap_or_else(|| principal.user_id.clone());
    if !principal.may_act_for(&owner_id) {
        return Err(ApiError::forbidden(
            "only an admin can create keys for another user",
        ));
    }
    let owner: UserRecord = app
        .store
        .get(Table::Users, &owner_id)?
        .ok_or_else(|| ApiError::invalid_field("user", "no such user"))?;
    let mut problems = Vec::new();
    let role = input.role.unwrap_or(owner.role);
    if role > owner.role || role > principal.role {
        problems.push((
            "role",
            "cannot exceed the owner's or the caller's role".to_string(),
        ));
    }
    let name = input.name.clone().unwrap_or_default();
    if name.len() > 128 || name.chars().any(char::is_control) {
        problems.push((
            "name",
            "must be at most 128 printable characters".to_string(),
        ));
    }
    let expires_at = match &input.expires_at {
        Some(text) => match clock::parse_rfc3339(text) {
            Some(at) if at > clock::unix_now() => Some(at),
            Some(_) => {
                problems.push(("expires_at", "is in the past".to_string()));
                None
            }
            None => {
                problems.push(("expires_at", "is not an RFC 3339 time".to_string()));
                None
            }
        },
        None => None,
    };
    // A customer may only scope a key to instances they own.
    let mut scope = input.instances.clone();
    if let Some(ids) = &mut scope {
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() || ids.len() > 1000 {
            problems.push(("instances", "must list 1 to 1000 instance ids".to_string()));
        } else if !principal.is_admin() {
            for id in ids.iter() {
                if crate::auth::require_instance(&app, &principal, *id).is_err() {
                    problems.push(("instances", format!("instance {id} is not yours")));
                    break;
                }
            }
        }
    }
    if principal.instance_scope.is_some() {
        return Err(ApiError::forbidden(
            "an instance-scoped key cannot create keys",
        ));
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(&problems));
    }
    let (text, record) = auth::new_api_key(&owner.id, &name, role, expires_at, scope);
    app.store.put(Table::ApiKeys, &record.id, &record)?;
    created(&json!({ "key": text, "apikey": key_json(&record) }))
}

async fn delete_key(app: Arc<App>, request: ApiRequest) -> ApiResult {
    let principal = request.principal()?;
    let id = request.param(0);
    let not_found = || ApiError::not_found(format!("API key {id:?} does not exist"));
    let key: ApiKeyRecord = app.store.get(Table::ApiKeys, id)?.ok_or_else(not_found)?;
    if !principal.may_act_for(&key.user) {
        return Err(not_found());
    }
    app.store.delete(Table::ApiKeys, id)?;
    no_content()
}
