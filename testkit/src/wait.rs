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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn until_returns_the_first_value_check_gives() {
        let mut checks = 0;
        let value = until(
            "three checks",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                checks += 1;
                let seen = checks;
                async move { if seen == 3 { Ok(seen) } else { Err(seen) } }
            },
        )
        .await;
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn until_gives_up_after_its_timeout_naming_what_it_saw_last() {
        let checks = Arc::new(AtomicU32::new(0));
        let counted = checks.clone();
        let started = Instant::now();
        let waited = tokio::spawn(async move {
            until(
                "never",
                Duration::from_millis(100),
                Duration::from_millis(20),
                || {
                    let seen = counted.fetch_add(1, Ordering::SeqCst);
                    async move { Err::<(), _>(format!("check {seen}")) }
                },
            )
            .await
        })
        .await;
        let panic = waited.expect_err("it gives up").into_panic();
        let message = panic.downcast_ref::<String>().expect("a message");
        assert!(message.starts_with("never: not within 100ms"), "{message}");
        assert!(message.contains("\"check "), "{message}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(checks.load(Ordering::SeqCst) <= 7, "{checks:?}");
    }

    #[test]
    fn blocking_says_what_it_waited_for_and_the_last_error() {
        let mut checks = 0;
        let error = blocking(
            "the door",
            Duration::from_millis(50),
            Duration::from_millis(10),
            || {
                checks += 1;
                anyhow::bail!("locked {checks}")
            },
        )
        .expect_err("it gives up");
        let text = format!("{error:#}");
        assert!(
            text.starts_with("the door: not within 50ms (last error: locked "),
            "{text}"
        );
        assert!(checks <= 7, "{checks} checks");
    }
}
