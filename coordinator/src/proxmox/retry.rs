//! When to repeat a failed Proxmox call: a pure decision from the attempt count, the error's
//! class and whether the call may be repeated blindly.

use std::time::Duration;

use super::error::ErrorClass;

/// Whether repeating a call can do harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// Reads, and writes that set a value (config PUT): repeating them is harmless.
    Idempotent,
    /// Creates, destroys, power actions: repeated only when the first try certainly did nothing.
    NonIdempotent,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Return the error.
    GiveUp,
}

/// Bounded retries with exponential backoff.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The wait after the first failure; it doubles after each further one.
    pub first_delay: Duration,
    /// The longest wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(4),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn never() -> RetryPolicy {
        RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait after failed attempt number `attempt` (1-based). `jitter` in `0.0..1.0` adds up
    /// to half the delay again, so that callers refused together do not come back together.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(20);
        let base = self
            .first_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay);
        let extra = base.mul_f64(jitter.clamp(0.0, 1.0) / 2.0);
        (base + extra).min(self.max_delay)
    }

    /// Whether to retry after attempt number `attempt` (1-based) failed with `class`.
    pub fn decide(&self, attempt: u32, class: ErrorClass, kind: CallKind, jitter: f64) -> Decision {
        if attempt >= self.attempts {
            return Decision::GiveUp;
        }
        let retryable = match class {
            // The call was refused or never delivered: nothing happened, any call may be repeated.
            ErrorClass::Locked | ErrorClass::Unreachable => true,
            // The call may have happened: only a harmless call is repeated blindly.
            ErrorClass::Uncertain => kind == CallKind::Idempotent,
            _ => false,
        };
        if retryable {
            Decision::Retry(self.delay(attempt, jitter))
        } else {
            Decision::GiveUp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(300),
        }
    }

    #[test]
    fn decisions_follow_the_class_and_the_kind() {
        use CallKind::*;
        use ErrorClass::*;
        let ms = |value| Decision::Retry(Duration::from_millis(value));
        // (attempt, class, kind, expected)
        let cases: &[(u32, ErrorClass, CallKind, Decision)] = &[
            (1, Locked, NonIdempotent, ms(100)),
            (2, Locked, NonIdempotent, ms(200)),
            (3, Locked, Idempotent, ms(300)),
            (4, Locked, Idempotent, Decision::GiveUp),
            (1, Unreachable, NonIdempotent, ms(100)),
            (1, Uncertain, Idempotent, ms(100)),
            (1, Uncertain, NonIdempotent, Decision::GiveUp),
            (1, AlreadyExists, NonIdempotent, Decision::GiveUp),
            (1, AlreadyRunning, NonIdempotent, Decision::GiveUp),
            (1, NotFound, Idempotent, Decision::GiveUp),
            (1, Invalid, Idempotent, Decision::GiveUp),
            (1, Unauthorized, Idempotent, Decision::GiveUp),
            (1, Forbidden, Idempotent, Decision::GiveUp),
            (1, TaskFailed, Idempotent, Decision::GiveUp),
            (1, TaskDeadline, Idempotent, Decision::GiveUp),
            (1, Other, Idempotent, Decision::GiveUp),
        ];
        for (attempt, class, kind, expected) in cases {
            assert_eq!(
                policy().decide(*attempt, *class, *kind, 0.0),
                *expected,
                "attempt {attempt} {class:?} {kind:?}"
            );
        }
    }

    #[test]
    fn delays_grow_and_stay_bounded() {
        let policy = policy();
        let cases: &[(u32, f64, u64)] = &[
            (1, 0.0, 100),
            (1, 1.0, 150),
            (2, 0.5, 250),
            (3, 0.0, 300),
            (3, 1.0, 300),
            (40, 0.9, 300),
        ];
        for (attempt, jitter, expected) in cases {
            assert_eq!(
                policy.delay(*attempt, *jitter),
                Duration::from_millis(*expected),
                "attempt {attempt} jitter {jitter}"
            );
        }
        assert_eq!(
            RetryPolicy::never().decide(1, ErrorClass::Locked, CallKind::Idempotent, 0.0),
            Decision::GiveUp
        );
    }
}
