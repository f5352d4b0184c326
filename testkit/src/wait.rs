//! Waiting for a condition, always bounded both in time and in the number of checks.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How many checks fit into `timeout` at one per `interval`, with one at each end.
fn attempts(timeout: Duration, interval: Duration) -> u128 {
    timeout.as_millis() / interval.as_millis().max(1) + 2
}

/// Checks every `interval` until `check` gives a value, for at most `timeout`; then panics with
/// `what` and the last thing `check` saw (its `Err`).
pub async fn until<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let mut last = None;
    for _attempt in 0..attempts(timeout, interval) {
        match check().await {
            Ok(value) => return value,
            Err(seen) => last = Some(seen),
        }
        if started.elapsed() >= timeout {
            break;
        }
        tokio::time::sleep(interval).await;
    }
    panic!("{what}: not within {timeout:?}; last seen: {last:?}")
}

/// Polls `check` every `interval` until it says yes, for at most `timeout`, blocking the
/// thread; returns how long it took, or an error naming `what` and the last error seen.
pub fn blocking(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut last_error = None;
    for _attempt in 0..attempts(timeout, interval) {
        match check() {
            Ok(true) => return Ok(started.elapsed()),
            Ok(false) => {}
            Err(error) => last_error = Some(error),
        }
        if started.elapsed() >= timeout {
            break;
        }
        std::thread::sleep(interval);
    }
    match last_error {
        Some(error) => anyhow::bail!("{what}: not within {timeout:?} (last error: {error:#})"),
        None => anyhow::bail!("{what}: not within {timeout:?}"),
    }
}
