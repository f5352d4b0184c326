//! Token-bucket rate limits for enrollment attempts, per source address and overall. A pure
//! core: the caller passes the clock in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A limit: `burst` attempts at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub burst: f64,
    pub per_second: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(limit: RateLimit, now: Instant) -> Bucket {
        Bucket {
            tokens: limit.burst,
            updated: now,
        }
    }

    fn refill(&mut self, limit: RateLimit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        self.updated = now;
    }

    fn wait(&self, limit: RateLimit) -> Duration {
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / limit.per_second.max(f64::MIN_POSITIVE))
    }
}

/// The most addresses remembered; beyond it, full buckets are forgotten first.
const MAX_ADDRESSES: usize = 65_536;

/// Enrollment limits per address and for the whole coordinator.
#[derive(Debug)]
pub struct EnrollmentLimiter {
    per_address: RateLimit,
    overall: RateLimit,
    addresses: HashMap<IpAddr, Bucket>,
    total: Option<Bucket>,
}

impl EnrollmentLimiter {
    pub fn new(per_address: RateLimit, overall: RateLimit) -> EnrollmentLimiter {
        EnrollmentLimiter {
            per_address,
            overall,
            addresses: HashMap::new(),
            total: None,
        }
    }

    /// Takes one attempt for `address`; `Err(wait)` says how long until one is allowed.
    pub fn attempt(&mut self, address: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.addresses.len() >= MAX_ADDRESSES {
            let (per_address, addresses) = (self.per_address, &mut self.addresses);
            addresses.retain(|_, bucket| {
                bucket.refill(per_address, now);
                bucket.tokens < per_address.burst
            });
            if addresses.len() >= MAX_ADDRESSES {
                return Err(Duration::from_secs(1));
            }
        }
        let total = self
            .total
            .get_or_insert_with(|| Bucket::full(self.overall, now));
        total.refill(self.overall, now);
        let bucket = self
            .addresses
            .entry(address)
            .or_insert_with(|| Bucket::full(self.per_address, now));
        bucket.refill(self.per_address, now);
        if bucket.tokens < 1.0 {
            return Err(bucket.wait(self.per_address));
        }
        if total.tokens < 1.0 {
            return Err(total.wait(self.overall));
        }
        bucket.tokens -= 1.0;
        total.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_are_allowed_then_refused_until_refilled() {
        let start = Instant::now();
        let mut limiter = EnrollmentLimiter::new(
            RateLimit {
                burst: 3.0,
                per_second: 0.5,
            },
            RateLimit {
                burst: 4.0,
                per_second: 100.0,
            },
        );
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        // (address, seconds after start, allowed?)
        let steps = [
            (one, 0.0, true),
            (one, 0.0, true),
            (one, 0.0, true),
            (one, 0.0, false),
            (two, 0.0, true),
            (two, 0.0, false), // the overall burst of 4 is used up
            (one, 2.0, true),  // one token back after 2 s at 0.5/s
            (one, 2.0, false),
        ];
        for (index, (address, seconds, allowed)) in steps.into_iter().enumerate() {
            let now = start + Duration::from_secs_f64(seconds);
            assert_eq!(
                limiter.attempt(address, now).is_ok(),
                allowed,
                "step {index}"
            );
        }
        let wait = limiter
            .attempt(one, start + Duration::from_secs(2))
            .unwrap_err();
        assert!(wait > Duration::from_millis(1500) && wait <= Duration::from_secs(2));
    }
}
