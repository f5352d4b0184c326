//! Token-bucket rate limits for enrollment attempts, per source address, per IPv6 /64 and
//! overall. A pure core: the caller passes the clock in.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
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

/// The /64 an IPv6 address belongs to; `None` for IPv4, whose addresses are scarce enough to
/// be limited one by one. An IPv4-mapped IPv6 address counts as its IPv4 address.
fn network_of(address: IpAddr) -> Option<IpAddr> {
    match address {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            Some(IpAddr::V6(Ipv6Addr::from(prefix)))
        }
        _ => None,
    }
}

/// Forgets full buckets when a map reaches [`MAX_ADDRESSES`]; false when it is still full.
fn make_room(buckets: &mut HashMap<IpAddr, Bucket>, limit: RateLimit, now: Instant) -> bool {
    if buckets.len() < MAX_ADDRESSES {
        return true;
    }
    buckets.retain(|_, bucket| {
        bucket.refill(limit, now);
        bucket.tokens < limit.burst
    });
    buckets.len() < MAX_ADDRESSES
}

/// Enrollment limits per address, per IPv6 /64 and for the whole coordinator.
#[derive(Debug)]
pub struct EnrollmentLimiter {
    per_address: RateLimit,
    per_network: RateLimit,
    overall: RateLimit,
    addresses: HashMap<IpAddr, Bucket>,
    networks: HashMap<IpAddr, Bucket>,
    total: Option<Bucket>,
}

impl EnrollmentLimiter {
    pub fn new(
        per_address: RateLimit,
        per_network: RateLimit,
        overall: RateLimit,
    ) -> EnrollmentLimiter {
        EnrollmentLimiter {
            per_address,
            per_network,
            overall,
            addresses: HashMap::new(),
            networks: HashMap::new(),
            total: None,
        }
    }

    /// Takes one attempt for `address`; `Err(wait)` says how long until one is allowed.
    pub fn attempt(&mut self, address: IpAddr, now: Instant) -> Result<(), Duration> {
        if !make_room(&mut self.addresses, self.per_address, now)
            || !make_room(&mut self.networks, self.per_network, now)
        {
            return Err(Duration::from_secs(1));
        }
        let mut network = match network_of(address) {
            Some(network) => {
                let bucket = self
                    .networks
                    .entry(network)
                    .or_insert_with(|| Bucket::full(self.per_network, now));
                bucket.refill(self.per_network, now);
                if bucket.tokens < 1.0 {
                    return Err(bucket.wait(self.per_network));
                }
                Some(network)
            }
            None => None,
        };
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
        if let Some(bucket) = network.take().and_then(|key| self.networks.get_mut(&key)) {
            bucket.tokens -= 1.0;
        }
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
                burst: 100.0,
                per_second: 100.0,
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

    #[test]
    fn addresses_of_one_ipv6_64_share_a_limit() {
        let start = Instant::now();
        let mut limiter = EnrollmentLimiter::new(
            RateLimit {
                burst: 2.0,
                per_second: 0.1,
            },
            RateLimit {
                burst: 5.0,
                per_second: 0.1,
            },
            RateLimit {
                burst: 1000.0,
                per_second: 100.0,
            },
        );
        // Every attempt from a fresh address of 2001:db8:1::/64: only the /64 limit applies.
        let allowed = (1..=20u16)
            .filter(|host| {
                let address = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, *host));
                limiter.attempt(address, start).is_ok()
            })
            .count();
        assert_eq!(allowed, 5);
        let neighbour = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1));
        assert!(limiter.attempt(neighbour, start).is_ok(), "another /64");
        // IPv4 addresses are limited one by one.
        for host in 1..=20u8 {
            let address = IpAddr::from([192, 0, 2, host]);
            assert!(limiter.attempt(address, start).is_ok());
        }
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(network_of(mapped), None);
    }
}
