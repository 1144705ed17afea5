//! Limits that keep one client, or a flood of connections, from starving the others.
//!
//! Each request passes, in order: the client's token bucket (429 `rate-limited`), the
//! client's cap on requests in progress (429 `too-many-in-flight`), the node-wide cap on
//! requests in progress (503 `overloaded`, load shedding rather than queueing), then runs under
//! a timeout (503 `timeout`). Because the per-client cap is below the node-wide one, one client
//! cannot hold every slot. Connections are capped and must finish the TLS handshake and send
//! their request headers within their own timeouts, so slow peers cannot pin connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The server's limits. [`Limits::default`] suits a custody appliance serving a handful of
/// client programs.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Largest request body, in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Per-client token bucket; `None` turns rate limiting off.
    pub rate_limit: Option<RateLimit>,
    /// Requests in progress per client (429 above it).
    pub max_in_flight_per_client: usize,
    /// Requests in progress on the node (503 above it).
    pub max_in_flight: usize,
    /// Time a request may take from its headers to its response.
    pub request_timeout: Duration,
    /// Open connections; further connections are closed right after `accept`.
    pub max_connections: usize,
    /// Time a new connection has to complete its TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a connection has to send a request's headers once it starts one.
    pub header_read_timeout: Duration,
    /// On shutdown, time requests in progress get to finish.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            rate_limit: Some(RateLimit {
                per_second: 20.0,
                burst: 40,
            }),
            max_in_flight_per_client: 16,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed in a burst (bucket size).
    pub burst: u32,
}

/// Buckets beyond this many trigger a sweep of the idle (full) ones.
const SWEEP_THRESHOLD: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent at every await-free step, so a panic elsewhere while
    // holding the lock leaves nothing half-done: keep using them.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by client.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is available.
    pub(crate) fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(self.limit.burst.max(1));
        let rate = self.limit.per_second;
        let refill = |b: &mut Bucket| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens = (b.tokens + elapsed * rate).min(burst);
            b.updated = now;
        };
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= SWEEP_THRESHOLD && !buckets.contains_key(key) {
            buckets.retain(|_, b| {
                refill(b);
                b.tokens < burst
            });
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        refill(bucket);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else if rate > 0.0 {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        } else {
            Err(Duration::from_secs(60))
        }
    }
}

/// Requests in progress per client.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    counts: Mutex<HashMap<String, usize>>,
}

impl InFlight {
    /// Counts a request for `key` unless it already has `limit` in progress.
    pub(crate) fn enter(self: &Arc<Self>, key: &str, limit: usize) -> Option<InFlightGuard> {
        let mut counts = lock(&self.counts);
        let count = counts.entry(key.to_owned()).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(InFlightGuard {
            owner: Arc::clone(self),
            key: key.to_owned(),
        })
    }
}

/// Releases one request of a client when dropped.
#[derive(Debug)]
pub(crate) struct InFlightGuard {
    owner: Arc<InFlight>,
    key: String,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut counts = lock(&self.owner.counts);
        if let Some(count) = counts.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refills() {
        let rl = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check("a", t0).is_ok());
        }
        let wait = rl.check("a", t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Another client is unaffected.
        assert!(rl.check("b", t0).is_ok());
        assert!(rl.check("a", t0 + Duration::from_millis(500)).is_ok());
        assert!(rl.check("a", t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn sweep_drops_idle_buckets_only() {
        let rl = RateLimiter::new(RateLimit {
            per_second: 1.0,
            burst: 2,
        });
        let t0 = Instant::now();
        for i in 0..SWEEP_THRESHOLD {
            rl.check(&format!("c{i}"), t0).unwrap();
        }
        rl.check("busy", t0).unwrap();
        rl.check("busy", t0).unwrap();
        // Much later every bucket but the exhausted one is full again; a new key sweeps them.
        rl.check("new", t0 + Duration::from_secs(10)).unwrap();
        assert!(lock(&rl.buckets).len() <= 2);
    }

    #[test]
    fn in_flight_is_per_client_and_released_on_drop() {
        let f = Arc::new(InFlight::default());
        let g1 = f.enter("a", 2).unwrap();
        let _g2 = f.enter("a", 2).unwrap();
        assert!(f.enter("a", 2).is_none());
        assert!(f.enter("b", 2).is_some());
        drop(g1);
        assert!(f.enter("a", 2).is_some());
    }
}
