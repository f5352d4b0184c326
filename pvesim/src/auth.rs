//! Authentication as Proxmox does it: API tokens, signed tickets (`PVEAuthCookie`) and CSRF
//! prevention tokens, with the lifetimes and formats of the real server.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};

/// How long a ticket or CSRF token is valid, in seconds.
pub const TICKET_LIFETIME: i64 = 7200;

/// Who made an authenticated call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `user@realm`.
    pub user: String,
    /// The token id when the call used an API token.
    pub token: Option<String>,
}

impl Caller {
    /// The name written into UPIDs: `user@realm` or `user@realm!token`.
    pub fn task_user(&self) -> String {
        match &self.token {
            Some(token) => format!("{}!{token}", self.user),
            None => self.user.clone(),
        }
    }
}

/// Why a token string from the configuration is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid API token '{0}': expected USER@REALM!TOKENID=SECRET")]
pub struct TokenFormatError(pub String);

/// Splits `USER@REALM!TOKENID=SECRET` into (`USER@REALM`, `TOKENID`, `SECRET`).
pub fn split_token(text: &str) -> Result<(String, String, String), TokenFormatError> {
    let error = || TokenFormatError(text.to_string());
    let (full_id, secret) = text.split_once('=').ok_or_else(error)?;
    let (user, token) = full_id.split_once('!').ok_or_else(error)?;
    if !user.contains('@') || token.is_empty() || secret.is_empty() {
        return Err(error());
    }
    Ok((user.to_string(), token.to_string(), secret.to_string()))
}

/// Known credentials and the server secret that signs tickets.
#[derive(Debug, Clone)]
pub struct Authenticator {
    tokens: HashMap<String, String>,
    users: HashMap<String, String>,
    secret: [u8; 32],
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner_key: Vec<u8> = block.iter().map(|byte| byte ^ 0x36).collect();
    let outer_key: Vec<u8> = block.iter().map(|byte| byte ^ 0x5c).collect();
    let inner = Sha256::new()
        .chain_update(&inner_key)
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&outer_key)
        .chain_update(inner)
        .finalize()
        .into()
}

fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

impl Authenticator {
    /// Builds from `USER@REALM!ID=SECRET` tokens and (`user@realm`, password) pairs.
    pub fn new(
        tokens: &[String],
        users: &[(String, String)],
        secret: [u8; 32],
    ) -> Result<Authenticator, TokenFormatError> {
        let mut map = HashMap::new();
        for token in tokens {
            let (user, id, secret) = split_token(token)?;
            map.insert(format!("{user}!{id}"), secret);
        }
        Ok(Authenticator {
            tokens: map,
            users: users.iter().cloned().collect(),
            secret,
        })
    }

    /// Checks an `Authorization` header value (`PVEAPIToken=USER@REALM!ID=SECRET`).
    pub fn check_token_header(&self, header: &str) -> Option<Caller> {
        let value = header.strip_prefix("PVEAPIToken")?.trim_start();
        let value = value
            .strip_prefix('=')
            .or_else(|| value.strip_prefix(':'))
            .unwrap_or(value)
            .trim();
        let (user, token, secret) = split_token(value).ok()?;
        let known = self.tokens.get(&format!("{user}!{token}"))?;
        constant_time_equal(known.as_bytes(), secret.as_bytes()).then_some(Caller {
            user,
            token: Some(token),
        })
    }

    fn sign(&self, text: &str) -> String {
        STANDARD.encode(hmac_sha256(&self.secret, text.as_bytes()))
    }

    /// Creates a ticket `PVE:<user>:<HEXTIME>::<signature>`.
    pub fn ticket(&self, user: &str, now: i64) -> String {
        let plain = format!("PVE:{user}:{now:08X}");
        format!("{plain}::{}", self.sign(&plain))
    }

    /// Checks a ticket and returns its user.
    pub fn check_ticket(&self, ticket: &str, now: i64) -> Option<String> {
        let (plain, signature) = ticket.split_once("::")?;
        let mut parts = plain.splitn(3, ':');
        let (prefix, user, time) = (parts.next()?, parts.next()?, parts.next()?);
        if prefix != "PVE" || time.len() != 8 {
            return None;
        }
        let issued = i64::from_str_radix(time, 16).ok()?;
        if now - issued > TICKET_LIFETIME || issued - now > 300 {
            return None;
        }
        constant_time_equal(self.sign(plain).as_bytes(), signature.as_bytes())
            .then(|| user.to_string())
    }

    /// Creates a CSRF prevention token `<HEXTIME>:<signature>` bound to a user.
    pub fn csrf_token(&self, user: &str, now: i64) -> String {
        let time = format!("{now:08X}");
        let signature = STANDARD_NO_PAD.encode(hmac_sha256(
            &self.secret,
            format!("{time}:{user}").as_bytes(),
        ));
        format!("{time}:{signature}")
    }

    /// Checks a CSRF prevention token for a user.
    pub fn check_csrf(&self, user: &str, token: &str, now: i64) -> bool {
        let Some((time, _)) = token.split_once(':') else {
            return false;
        };
        let Ok(issued) = i64::from_str_radix(time, 16) else {
            return false;
        };
        if time.len() != 8 || now - issued > TICKET_LIFETIME || issued - now > 300 {
            return false;
        }
        let signature = STANDARD_NO_PAD.encode(hmac_sha256(
            &self.secret,
            format!("{time}:{user}").as_bytes(),
        ));
        constant_time_equal(format!("{time}:{signature}").as_bytes(), token.as_bytes())
    }

    /// Checks a username/password pair (or a still-valid ticket given as password, to renew it).
    /// `realm` completes a username without `@realm`.
    pub fn login(
        &self,
        username: &str,
        password: &str,
        realm: Option<&str>,
        now: i64,
    ) -> Option<String> {
        let user = match (username.contains('@'), realm) {
            (true, _) => username.to_string(),
            (false, Some(realm)) => format!("{username}@{realm}"),
            (false, None) => return None,
        };
        if password.starts_with("PVE:") {
            return self
                .check_ticket(password, now)
                .filter(|owner| *owner == user);
        }
        let known = self.users.get(&user)?;
        constant_time_equal(known.as_bytes(), password.as_bytes()).then_some(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        Authenticator::new(
            &["root@pam!hostplane=0f1e2d3c-aaaa-bbbb-cccc-000000000001".to_string()],
            &[("root@pam".into(), "secret-password".into())],
            [7; 32],
        )
        .unwrap()
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|byte| format!("{byte:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tokens_table() {
        let auth = authenticator();
        let cases: &[(&str, bool)] = &[
            (
                "PVEAPIToken=root@pam!hostplane=0f1e2d3c-aaaa-bbbb-cccc-000000000001",
                true,
            ),
            (
                "PVEAPIToken root@pam!hostplane=0f1e2d3c-aaaa-bbbb-cccc-000000000001",
                true,
            ),
            ("PVEAPIToken=root@pam!hostplane=wrong", false),
            (
                "PVEAPIToken=root@pam!other=0f1e2d3c-aaaa-bbbb-cccc-000000000001",
                false,
            ),
            ("Bearer x", false),
            ("PVEAPIToken=garbage", false),
        ];
        for (header, ok) in cases {
            assert_eq!(auth.check_token_header(header).is_some(), *ok, "{header}");
        }
    }

    #[test]
    fn tickets_and_csrf() {
        let auth = authenticator();
        let now = 1_700_000_000;
        let ticket = auth.ticket("root@pam", now);
        assert!(ticket.starts_with("PVE:root@pam:6553F100::"), "{ticket}");
        assert_eq!(
            auth.check_ticket(&ticket, now + 60).as_deref(),
            Some("root@pam")
        );
        assert_eq!(auth.check_ticket(&ticket, now + TICKET_LIFETIME + 1), None);
        assert_eq!(
            auth.check_ticket(&ticket.replace("root@pam", "admin@pam"), now),
            None
        );
        let csrf = auth.csrf_token("root@pam", now);
        assert!(auth.check_csrf("root@pam", &csrf, now));
        assert!(!auth.check_csrf("other@pam", &csrf, now));
        assert_eq!(
            auth.login("root", "secret-password", Some("pam"), now)
                .as_deref(),
            Some("root@pam")
        );
        assert_eq!(auth.login("root@pam", "nope", None, now), None);
        assert_eq!(
            auth.login("root@pam", &ticket, None, now + 10).as_deref(),
            Some("root@pam")
        );
    }
}
