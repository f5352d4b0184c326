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

use shell::sync::MutexExt;
use std::collections::HashMap;
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
    /// Too many password checks are running or waiting; retry shortly.
    #[error("too many password checks at once; retry shortly")]
    Busy,
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

/// Compares two secrets without stopping at the first difference.
pub fn constant_time_equal(left: &str, right: &str) -> bool {
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

/// Growing delays after failed logins, per key. Pure: the time is passed in.
///
/// The first `free` failures cost nothing; each one after doubles the wait before the next
/// attempt (1 s, 2 s, 4 s, ...) up to `max_delay`. A key quiet for twice `max_delay` starts over.
#[derive(Debug)]
pub struct LoginDelays {
    free: u32,
    max_delay: Duration,
    failures: HashMap<String, (u32, Instant)>,
}

/// The most keys remembered; beyond it, those no longer delayed are forgotten first.
const MAX_LOGIN_KEYS: usize = 100_000;

impl LoginDelays {
    pub fn new(free: u32, max_delay: Duration) -> LoginDelays {
        LoginDelays {
            free,
            max_delay,
            failures: HashMap::new(),
        }
    }

    fn delay(&self, count: u32) -> Duration {
        if count <= self.free {
            return Duration::ZERO;
        }
        let doublings = (count - self.free - 1).min(30);
        Duration::from_secs(1u64 << doublings).min(self.max_delay)
    }

    fn forgotten(&self, last: Instant, now: Instant) -> bool {
        now.saturating_duration_since(last) >= self.max_delay * 2
    }

    /// `Err(seconds)` to wait when the key's delay has not passed yet.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), u64> {
        let Some(&(count, last)) = self.failures.get(key) else {
            return Ok(());
        };
        if self.forgotten(last, now) {
            return Ok(());
        }
        let ready = last + self.delay(count);
        if now >= ready {
            return Ok(());
        }
        Err(ready.duration_since(now).as_secs_f64().ceil().max(1.0) as u64)
    }

    pub fn record_failure(&mut self, key: &str, now: Instant) {
        if self.failures.len() >= MAX_LOGIN_KEYS {
            let max_delay = self.max_delay;
            self.failures
                .retain(|_, (_, last)| now.saturating_duration_since(*last) < max_delay * 2);
        }
        let forgotten = self
            .failures
            .get(key)
            .is_some_and(|&(_, last)| self.forgotten(last, now));
        let entry = self.failures.entry(key.to_string()).or_insert((0, now));
        if forgotten {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
    }

    pub fn clear(&mut self, key: &str) {
        self.failures.remove(key);
    }
}

/// Login throttling by user and address together, plus a looser limit per address: wrong
/// passwords from one address delay only that address, so they never lock the owner out from
/// another one.
#[derive(Debug)]
pub struct LoginLimiter {
    per_user_and_address: Mutex<LoginDelays>,
    per_address: Mutex<LoginDelays>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::new(3, 50, Duration::from_secs(300))
    }
}

fn pair_key(username: &str, address: &str) -> String {
    format!("{address} {username}")
}

impl LoginLimiter {
    pub fn new(free: u32, address_free: u32, max_delay: Duration) -> LoginLimiter {
        LoginLimiter {
            per_user_and_address: Mutex::new(LoginDelays::new(free, max_delay)),
            per_address: Mutex::new(LoginDelays::new(address_free, max_delay)),
        }
    }

    /// Refuses with 429 while the user at this address, or the address, must wait.
    pub fn check(&self, username: &str, address: &str) -> Result<(), AuthError> {
        let now = Instant::now();
        let lock = |delays: &Mutex<LoginDelays>, key: &str| delays.locked().check(key, now);
        lock(&self.per_user_and_address, &pair_key(username, address))
            .and_then(|()| lock(&self.per_address, address))
            .map_err(AuthError::RateLimited)
    }

    pub fn failed(&self, username: &str, address: &str) {
        let now = Instant::now();
        self.per_user_and_address
            .locked()
            .record_failure(&pair_key(username, address), now);
        self.per_address.locked().record_failure(address, now);
    }

    pub fn succeeded(&self, username: &str, address: &str) {
        self.per_user_and_address
            .locked()
            .clear(&pair_key(username, address));
    }
}

/// Password hashing off the async workers: at most `concurrency` hashes at once on the blocking
/// pool, at most `queue` more waiting; beyond that a caller is told to come back (503).
#[derive(Debug)]
pub struct PasswordWork {
    permits: tokio::sync::Semaphore,
    admitted: std::sync::atomic::AtomicUsize,
    most: usize,
}

/// Gives a place in the password queue back when dropped.
struct Admitted<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl PasswordWork {
    pub fn new(concurrency: usize, queue: usize) -> PasswordWork {
        PasswordWork {
            permits: tokio::sync::Semaphore::new(concurrency.max(1)),
            admitted: std::sync::atomic::AtomicUsize::new(0),
            most: concurrency.max(1) + queue,
        }
    }

    async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, AuthError> {
        use std::sync::atomic::Ordering;
        let busy = || AuthError::Busy;
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.most {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(busy());
        }
        let _admitted = Admitted(&self.admitted);
        let _permit = self.permits.acquire().await.map_err(|_| busy())?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|error| AuthError::Hashing(error.to_string()))
    }

    /// Hashes a password on the blocking pool.
    pub async fn hash(&self, password: &str) -> Result<String, AuthError> {
        let password = password.to_string();
        self.run(move || hash_password(&password)).await?
    }

    /// Checks a password against its stored hash on the blocking pool.
    pub async fn verify(&self, password: &str, hash: &str) -> Result<bool, AuthError> {
        let (password, hash) = (password.to_string(), hash.to_string());
        self.run(move || verify_password(&password, &hash)).await
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
    fn login_delays_grow_then_forget() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut delays = LoginDelays::new(2, Duration::from_secs(8));
        // (seconds after start, failures recorded before, wait expected)
        let steps: &[(u64, u32, Option<u64>)] = &[
            (0, 0, None),
            (0, 2, None),    // two free failures
            (0, 1, Some(1)), // the third waits 1 s
            (1, 0, None),
            (1, 1, Some(2)), // the fourth 2 s
            (3, 1, Some(4)),
            (7, 1, Some(8)),
            (15, 1, Some(8)), // capped at the maximum
            (23, 0, None),
            (40, 0, None), // quiet for twice the maximum: forgotten
            (40, 1, None),
        ];
        for (index, &(seconds, failures, wait)) in steps.iter().enumerate() {
            for _ in 0..failures {
                delays.record_failure("alice", at(seconds));
            }
            assert_eq!(
                delays.check("alice", at(seconds)).err(),
                wait,
                "step {index}"
            );
        }
        assert!(delays.check("bob", at(40)).is_ok());
    }

    #[test]
    fn wrong_passwords_from_one_address_do_not_delay_another() {
        let limiter = LoginLimiter::new(1, 100, Duration::from_secs(60));
        for _ in 0..5 {
            limiter.failed("admin", "192.0.2.1");
        }
        assert!(limiter.check("admin", "192.0.2.1").is_err());
        assert!(limiter.check("admin", "192.0.2.2").is_ok());
        assert!(limiter.check("alice", "192.0.2.1").is_ok());
        limiter.succeeded("admin", "192.0.2.1");
        assert!(limiter.check("admin", "192.0.2.1").is_ok());
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
