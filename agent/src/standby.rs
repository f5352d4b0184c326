//! Before the agent has an identity: `hostplane-agent run` waits for one instead of failing, so
//! the package can be installed (and its service started) before the container can reach the
//! coordinator.
//!
//! A token left in the state directory as [`TOKEN_FILE`] (the package puts
//! `HOSTPLANE_ENROLL_TOKEN` there at install time) is tried with backoff until the coordinator
//! answers; a token the coordinator refuses for good is set aside as [`REFUSED_TOKEN_FILE`].
//! Without a token the service waits for `hostplane-agent enroll` and picks the new identity up
//! by itself.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use protocol::ErrorCode;

use crate::backoff::Backoff;
use crate::enroll::{EnrollError, EnrollOptions, enroll};
use crate::state::{StateDir, StateError};

/// A one-time token waiting to be used, one line, in the state directory.
pub const TOKEN_FILE: &str = "enroll.token";
/// Where a token the coordinator refused is moved, so that it is not tried again.
pub const REFUSED_TOKEN_FILE: &str = "enroll.token.refused";

/// How the agent waits for its identity.
#[derive(Debug, Clone)]
pub struct StandbyOptions {
    pub state_dir: PathBuf,
    /// Dial this `host:port` instead of the token's address.
    pub coordinator: Option<String>,
    /// How often to look for an identity written by `hostplane-agent enroll`.
    pub poll: Duration,
    /// The first and the longest wait between enrollment attempts with a stored token.
    pub retry_initial: Duration,
    pub retry_maximum: Duration,
    /// How long one enrollment attempt may take.
    pub attempt_timeout: Duration,
    /// How often "still waiting" is repeated in the log.
    pub reminder: Duration,
}

impl StandbyOptions {
    pub fn new(state_dir: impl Into<PathBuf>) -> StandbyOptions {
        StandbyOptions {
            state_dir: state_dir.into(),
            coordinator: None,
            poll: Duration::from_secs(1),
            retry_initial: Duration::from_secs(1),
            retry_maximum: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(5),
            reminder: Duration::from_secs(600),
        }
    }
}

/// How the wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standby {
    /// The state directory was complete from the start.
    AlreadyEnrolled,
    /// `hostplane-agent enroll` (another process) wrote the identity while we waited.
    EnrolledElsewhere,
    /// The stored token was used: enrolled as this instance.
    EnrolledWithToken { instance_id: u32 },
}

/// Whether a failed enrollment is worth trying again with the same token: the coordinator was
/// unreachable, busy or failed inside; a refusal of the token itself is final.
pub fn is_transient(error: &EnrollError) -> bool {
    match error {
        EnrollError::Resolve { .. }
        | EnrollError::Connect { .. }
        | EnrollError::Timeout(_)
        | EnrollError::Exchange(_)
        | EnrollError::State(_) => true,
        EnrollError::Refused(refusal) => matches!(
            refusal.code,
            ErrorCode::ResourceExhausted
                | ErrorCode::Unavailable
                | ErrorCode::Internal
                | ErrorCode::Timeout
        ),
        EnrollError::Token(_) | EnrollError::WrongCoordinator(_) | EnrollError::Key(_) => false,
    }
}

/// Whether the state directory holds a finished enrollment (`agent.json` is written last).
fn is_enrolled(state: &StateDir) -> Result<bool, StateError> {
    match state.load_facts() {
        Ok(_) => Ok(true),
        Err(StateError::NotEnrolled { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}

fn read_token(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// Removes a token that is no longer needed (a secret, even when used).
fn discard_token(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!("cannot remove the token {}: {error}", path.display()),
    }
}

/// Waits until the state directory holds an identity, enrolling with a stored token when there
/// is one. Returns at once when the agent is enrolled already; fails only when the state
/// directory cannot be read. Cancel it by dropping the future (it holds nothing half-written).
pub async fn until_enrolled(options: &StandbyOptions) -> Result<Standby, StateError> {
    let state = StateDir::new(&options.state_dir);
    let token_path = options.state_dir.join(TOKEN_FILE);
    if is_enrolled(&state)? {
        discard_token(&token_path);
        return Ok(Standby::AlreadyEnrolled);
    }
    let mut backoff = Backoff::new(options.retry_initial, options.retry_maximum);
    let mut next_attempt = Instant::now();
    let mut last_reminder: Option<Instant> = None;
    loop {
        if is_enrolled(&state)? {
            tracing::info!("enrolled by `hostplane-agent enroll`: connecting");
            discard_token(&token_path);
            return Ok(Standby::EnrolledElsewhere);
        }
        match read_token(&token_path) {
            Some(token) if Instant::now() >= next_attempt => {
                let mut attempt = EnrollOptions::new(token, &options.state_dir);
                attempt.coordinator = options.coordinator.clone();
                attempt.timeout = options.attempt_timeout;
                match enroll(attempt).await {
                    Ok(enrolled) => {
                        discard_token(&token_path);
                        tracing::info!(
                            "enrolled with the token given at install time as instance {} \
                             (generation {}) of the coordinator at {}: connecting",
                            enrolled.instance_id,
                            enrolled.generation,
                            enrolled.coordinator
                        );
                        return Ok(Standby::EnrolledWithToken {
                            instance_id: enrolled.instance_id,
                        });
                    }
                    Err(error) if is_transient(&error) => {
                        let delay = backoff.next_delay(rand::random::<f64>());
                        // The journal shows the message alone: everything needed goes in it.
                        tracing::warn!(
                            "enrollment with the token given at install time failed ({error}); \
                             retrying in {:.1} s",
                            delay.as_secs_f64()
                        );
                        next_attempt = Instant::now() + delay;
                    }
                    Err(error) => {
                        let refused = options.state_dir.join(REFUSED_TOKEN_FILE);
                        if let Err(rename) = std::fs::rename(&token_path, &refused) {
                            tracing::warn!("cannot set the refused token aside: {rename}");
                            discard_token(&token_path);
                        }
                        tracing::error!(
                            "the token given at install time cannot enroll this agent ({error}); \
                             it was moved to {}; waiting for `hostplane-agent enroll --token ...` \
                             with a new one",
                            refused.display()
                        );
                        last_reminder = Some(Instant::now());
                    }
                }
            }
            Some(_) => {}
            None => {
                if last_reminder.is_none_or(|at| at.elapsed() >= options.reminder) {
                    tracing::info!(
                        "not enrolled yet ({} has no identity): waiting for `hostplane-agent \
                         enroll --token ...`",
                        options.state_dir.display()
                    );
                    last_reminder = Some(Instant::now());
                }
            }
        }
        let pause = next_attempt
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(10), options.poll);
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ErrorData;

    #[test]
    fn unreachable_and_busy_coordinators_are_retried_and_refused_tokens_are_not() {
        let connect = EnrollError::Connect {
            address: "10.0.0.1:4433".into(),
            message: "timed out".into(),
        };
        assert!(is_transient(&connect));
        assert!(is_transient(&EnrollError::Timeout(Duration::from_secs(1))));
        let busy = EnrollError::Refused(ErrorData::new(ErrorCode::ResourceExhausted, "slow down"));
        assert!(is_transient(&busy));
        let used = EnrollError::Refused(ErrorData::new(ErrorCode::Conflict, "already used"));
        assert!(!is_transient(&used));
        let expired = EnrollError::Refused(ErrorData::new(ErrorCode::PermissionDenied, "expired"));
        assert!(!is_transient(&expired));
        assert!(!is_transient(&EnrollError::WrongCoordinator("pin".into())));
    }

    #[tokio::test]
    async fn a_complete_state_directory_returns_at_once_and_drops_a_stale_token() {
        let dir = tempfile::tempdir().unwrap();
        let facts = crate::state::EnrollmentFacts {
            coordinator: "127.0.0.1:1".into(),
            instance_id: 7,
            generation: 1,
            ca_fingerprint: "00".repeat(32),
        };
        std::fs::write(
            dir.path().join(crate::state::ENROLLMENT_FILE),
            serde_json::to_vec(&facts).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.path().join(TOKEN_FILE), "left over\n").unwrap();
        let outcome = until_enrolled(&StandbyOptions::new(dir.path()))
            .await
            .unwrap();
        assert_eq!(outcome, Standby::AlreadyEnrolled);
        assert!(!dir.path().join(TOKEN_FILE).exists());
    }

    #[tokio::test]
    async fn a_malformed_token_is_set_aside_and_the_wait_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN_FILE), "not-a-token\n").unwrap();
        let mut options = StandbyOptions::new(dir.path());
        options.poll = Duration::from_millis(20);
        let waited =
            tokio::time::timeout(Duration::from_millis(500), until_enrolled(&options)).await;
        assert!(waited.is_err(), "it keeps waiting without an identity");
        assert!(!dir.path().join(TOKEN_FILE).exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join(REFUSED_TOKEN_FILE)).unwrap(),
            "not-a-token\n"
        );
    }
}
