//! Authentication and authorization: the one path every route goes through.
//!
//! Credentials: `x-api-key: hpk_<id>_<secret>` (stored as the SHA-256 of the secret),
//! `Authorization: Bearer <ticket>`, or `userid` + `ticket` in the query or JSON body (the
//! original panel's form). Tickets are random 256-bit strings stored only as SHA-256 with their
//! expiry. Passwords are argon2id hashes.
//!
//! This module knows nothing of HTTP: the dispatcher takes the credentials out of a request
//! into [`PresentedCredentials`] and maps an [`AuthError`] to its answer.
//!
//! Invariant: a principal comes only from a verified credential; handlers never look at
//! credentials themselves.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::clock;
use crate::store::records::{ApiKeyRecord, InstanceRecord, Role, TicketRecord, UserRecord};
use crate::store::{Store, StoreError, Table};

/// Why a caller was refused, or an authentication step failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential, or one that is unknown, wrong or expired.
    #[error("the credentials are missing, invalid or expired")]
    Refused,
    /// A valid credential of a caller who is not an admin, where one is needed.
    #[error("this needs an admin")]
    AdminOnly,
    /// The instance does not exist, or the caller may not see it.
    #[error("instance {0} does not exist")]
    NoSuchInstance(u32),
    /// The text is not an instance id.
    #[error("instance {0:?} does not exist")]
    NotAnInstanceId(String),
    /// Too many failed logins; the seconds to wait.
    #[error("too many attempts; retry after {0} s")]
    RateLimited(u64),
    /// A password could not be hashed.
    #[error("the password could not be hashed: {0}")]
    Hashing(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The credentials a request carried, taken out of it before any handler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresentedCredentials {
    /// The `x-api-key` header.
    pub api_key: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `ticket` parameter (query or JSON body).
    pub ticket: Option<String>,
    /// The `userid` parameter (query or JSON body).
    pub userid: Option<String>,
}

/// Which credential authenticated the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Credential {
    /// The key id.
    ApiKey(String),
    /// The ticket's store key (its SHA-256) and its public id.
    Ticket { hash: String, id: String },
}

impl Credential {
    /// The credential's id, for the audit log (never the secret).
    pub fn id(&self) -> String {
        match self {
            Credential::ApiKey(id) => format!("apikey:{id}"),
            Credential::Ticket { id, .. } => format!("ticket:{id}"),
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    pub role: Role,
    pub credential: Credential,
    /// An API key limited to some instances carries their ids.
    pub instance_scope: Option<Vec<u32>>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Refuses a caller who is not an admin.
    pub fn require_admin(&self) -> Result<(), AuthError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(AuthError::AdminOnly)
        }
    }

    /// Admins may act on anyone; others only on themselves.
    pub fn may_act_for(&self, user_id: &str) -> bool {
        self.is_admin() || self.user_id == user_id
    }
}

/// Random bytes as URL-safe base64 without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer)
}

/// A short random hex id.
pub fn random_id() -> String {
    let mut buffer = [0u8; 8];
    rand::rng().fill_bytes(&mut buffer);
    hex::encode(buffer)
}

/// SHA-256 of a secret, hex.
pub fn sha256_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn constant_time_equal(left: &str, right: &str) -> bool {
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

/// Hashes a password with argon2id.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt =
        SaltString::encode_b64(&salt).map_err(|error| AuthError::Hashing(error.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| AuthError::Hashing(error.to_string()))
}

/// Checks a password against its stored hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A new API key: the full text shown once, and the record to store.
pub fn new_api_key(
    user: &str,
    name: &str,
    role: Role,
    expires_at: Option<i64>,
    instances: Option<Vec<u32>>,
) -> (String, ApiKeyRecord) {
    let id = random_id();
    let secret = random_token(32);
    let text = format!("hpk_{id}_{secret}");
    let record = ApiKeyRecord {
        id,
        user: user.to_string(),
        name: name.to_string(),
        role,
        secret_sha256: sha256_hex(&secret),
        created_at: clock::now_rfc3339(),
        expires_at,
        instances,
        last_used_at: None,
    };
    (text, record)
}

/// A new login ticket: the text given to the caller and the record to store under its hash.
pub fn new_ticket(user: &str, ttl: Duration) -> (String, String, TicketRecord) {
    let text = format!("hpt_{}", random_token(32));
    let record = TicketRecord {
        id: random_id(),
        user: user.to_string(),
        created_at: clock::now_rfc3339(),
        expires_at: clock::unix_now() + ttl.as_secs() as i64,
    };
    (text.clone(), sha256_hex(&text), record)
}

/// Counts recent failures per key in a sliding window. Pure: the time is passed in.
#[derive(Debug)]
pub struct FailureWindow {
    window: Duration,
    limit: usize,
    failures: HashMap<String, VecDeque<Instant>>,
}

impl FailureWindow {
    pub fn new(window: Duration, limit: usize) -> FailureWindow {
        FailureWindow {
            window,
            limit,
            failures: HashMap::new(),
        }
    }

    fn prune(&mut self, key: &str, now: Instant) {
        if let Some(times) = self.failures.get_mut(key) {
            while times
                .front()
                .is_some_and(|first| now.duration_since(*first) >= self.window)
            {
                times.pop_front();
            }
            if times.is_empty() {
                self.failures.remove(key);
            }
        }
    }

    /// `Err(seconds)` to wait when the key has reached its limit.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), u64> {
        self.prune(key, now);
        match self.failures.get(key) {
            Some(times) if times.len() >= self.limit => {
                let oldest = times.front().copied().unwrap_or(now);
                let wait = self.window.saturating_sub(now.duration_since(oldest));
                Err(wait.as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn record_failure(&mut self, key: &str, now: Instant) {
        if self.failures.len() > 100_000 {
            let window = self.window;
            self.failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|last| now.duration_since(*last) < window)
            });
        }
        self.failures
            .entry(key.to_string())
            .or_default()
            .push_back(now);
    }

    pub fn clear(&mut self, key: &str) {
        self.failures.remove(key);
    }
}

/// Login throttling per user and per address.
#[derive(Debug)]
pub struct LoginLimiter {
    per_user: Mutex<FailureWindow>,
    per_address: Mutex<FailureWindow>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter {
            per_user: Mutex::new(FailureWindow::new(Duration::from_secs(300), 5)),
            per_address: Mutex::new(FailureWindow::new(Duration::from_secs(300), 20)),
        }
    }
}

impl LoginLimiter {
    /// Refuses when either the user or the address has failed too often.
    pub fn check(&self, username: &str, address: &str) -> Result<(), AuthError> {
        let now = Instant::now();
        let user = self.per_user.lock().map(|mut w| w.check(username, now));
        let address = self.per_address.lock().map(|mut w| w.check(address, now));
        match (user, address) {
            (Ok(Err(wait)), _) | (_, Ok(Err(wait))) => Err(AuthError::RateLimited(wait)),
            _ => Ok(()),
        }
    }

    pub fn failed(&self, username: &str, address: &str) {
        let now = Instant::now();
        if let Ok(mut window) = self.per_user.lock() {
            window.record_failure(username, now);
        }
        if let Ok(mut window) = self.per_address.lock() {
            window.record_failure(address, now);
        }
    }

    pub fn succeeded(&self, username: &str) {
        if let Ok(mut window) = self.per_user.lock() {
            window.clear(username);
        }
    }
}

/// Finds the principal for an API key text.
fn from_api_key(store: &Store, text: &str) -> Result<Principal, AuthError> {
    let (id, secret) = text
        .strip_prefix("hpk_")
        .and_then(|rest| rest.split_once('_'))
        .ok_or(AuthError::Refused)?;
    let (key, user) = store.read(|read| {
        let key: Option<ApiKeyRecord> = read.get(Table::ApiKeys, id)?;
        let user: Option<UserRecord> = match &key {
            Some(key) => read.get(Table::Users, &key.user)?,
            None => None,
        };
        Ok::<_, StoreError>((key, user))
    })?;
    let (Some(key), Some(user)) = (key, user) else {
        return Err(AuthError::Refused);
    };
    if !constant_time_equal(&key.secret_sha256, &sha256_hex(secret)) {
        return Err(AuthError::Refused);
    }
    let now = clock::unix_now();
    if key.expires_at.is_some_and(|expires| expires <= now) {
        return Err(AuthError::Refused);
    }
    let stale = key
        .last_used_at
        .as_deref()
        .and_then(clock::parse_rfc3339)
        .is_none_or(|last| now - last >= 60);
    if stale {
        // Written at most once a minute per key, so reads stay reads.
        let id = key.id.clone();
        store.write(|write| {
            if let Some(mut current) = write.get::<ApiKeyRecord>(Table::ApiKeys, &id)? {
                current.last_used_at = Some(clock::rfc3339_unix(now));
                write.put(Table::ApiKeys, &id, &current)?;
            }
            Ok::<_, StoreError>(())
        })?;
    }
    Ok(Principal {
        user_id: user.id,
        username: user.username,
        role: key.role.min(user.role),
        credential: Credential::ApiKey(key.id),
        instance_scope: key.instances,
    })
}

/// Finds the principal for a ticket; `userid`, when given, must be the ticket's user.
fn from_ticket(store: &Store, text: &str, userid: Option<&str>) -> Result<Principal, AuthError> {
    let hash = sha256_hex(text);
    let (ticket, user) = store.read(|read| {
        let ticket: Option<TicketRecord> = read.get(Table::Tickets, &hash)?;
        let user: Option<UserRecord> = match &ticket {
            Some(ticket) => read.get(Table::Users, &ticket.user)?,
            None => None,
        };
        Ok::<_, StoreError>((ticket, user))
    })?;
    let (Some(ticket), Some(user)) = (ticket, user) else {
        return Err(AuthError::Refused);
    };
    if ticket.expires_at <= clock::unix_now() {
        return Err(AuthError::Refused);
    }
    if let Some(userid) = userid
        && userid != user.id
        && !userid.eq_ignore_ascii_case(&user.username)
    {
        return Err(AuthError::Refused);
    }
    Ok(Principal {
        user_id: user.id,
        username: user.username,
        role: user.role,
        credential: Credential::Ticket {
            hash,
            id: ticket.id,
        },
        instance_scope: None,
    })
}

/// The principal of whichever credential was presented: an API key first, then a Bearer
/// ticket, then `userid` and `ticket` together.
pub fn identify(store: &Store, presented: &PresentedCredentials) -> Result<Principal, AuthError> {
    if let Some(key) = &presented.api_key {
        return from_api_key(store, key.trim());
    }
    if let Some(authorization) = &presented.authorization {
        let ticket = authorization
            .strip_prefix("Bearer ")
            .or_else(|| authorization.strip_prefix("bearer "))
            .ok_or(AuthError::Refused)?;
        return from_ticket(store, ticket.trim(), None);
    }
    match (&presented.ticket, &presented.userid) {
        (Some(ticket), Some(userid)) => from_ticket(store, ticket, Some(userid)),
        _ => Err(AuthError::Refused),
    }
}

/// The instance `id` if the principal may act on it: admins on every instance, a customer on
/// their own, an instance-scoped key on its instances. Everyone else is told it does not
/// exist.
pub fn require_instance(
    app: &crate::App,
    principal: &Principal,
    id: u32,
) -> Result<InstanceRecord, AuthError> {
    if let Some(scope) = &principal.instance_scope
        && !scope.contains(&id)
    {
        return Err(AuthError::NoSuchInstance(id));
    }
    let record: Option<InstanceRecord> =
        app.store.get(Table::Instances, &InstanceRecord::key(id))?;
    match record {
        Some(record) if principal.is_admin() || record.user == principal.user_id => Ok(record),
        _ => Err(AuthError::NoSuchInstance(id)),
    }
}

/// Parses an instance id (a VMID); anything else is an instance that does not exist.
pub fn parse_instance_id(text: &str) -> Result<u32, AuthError> {
    text.parse::<u32>()
        .ok()
        .filter(|id| (100..=999_999_999).contains(id))
        .ok_or_else(|| AuthError::NotAnInstanceId(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_window_limits_then_forgets() {
        let start = Instant::now();
        let mut window = FailureWindow::new(Duration::from_secs(60), 3);
        for _ in 0..3 {
            assert!(window.check("alice", start).is_ok());
            window.record_failure("alice", start);
        }
        let wait = window.check("alice", start).unwrap_err();
        assert_eq!(wait, 60);
        assert!(window.check("bob", start).is_ok());
        assert!(
            window
                .check("alice", start + Duration::from_secs(61))
                .is_ok()
        );
    }

    #[test]
    fn passwords_verify_only_with_the_right_text() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct hors", &hash));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn secrets_compare_in_constant_time_shape() {
        assert!(constant_time_equal("abc", "abc"));
        assert!(!constant_time_equal("abc", "abd"));
        assert!(!constant_time_equal("abc", "abcd"));
    }
}
