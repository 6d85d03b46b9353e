//! Abuse limits on the worker port: a cap on connections per address that have not said hello,
//! a hello deadline, and a message rate per connection (a token bucket). Each refusal is counted
//! by cause (for `/metrics`) and logged once per address or worker and cause, so a flood costs
//! log lines no more than it costs anything else.
//!
//! Shared by the connection tasks and the driver (which adds its own refusals: outputs over the
//! pool's limit). Nothing here decides anything about tasks.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

/// Defaults: far above what a worker sends (a heartbeat a second, a result per task; 100
/// results a second per worker in the 20,000 tasks/s swarm bench), far below a flood.
pub const DEFAULT_MAX_MSGS_PER_S: u32 = 1000;
pub const DEFAULT_MAX_PENDING_PER_IP: usize = 64;
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Pairs (address or worker, cause) logged; beyond, refusals are only counted.
const MAX_LOGGED: usize = 10_000;

/// The configurable limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Messages a second one connection may send, sustained; twice as many in a burst.
    pub max_msgs_per_s: u32,
    /// Connections from one address that have not said hello yet.
    pub max_pending_per_ip: usize,
    /// How long a connection may take to say hello.
    pub hello_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_msgs_per_s: DEFAULT_MAX_MSGS_PER_S,
            max_pending_per_ip: DEFAULT_MAX_PENDING_PER_IP,
            hello_timeout: DEFAULT_HELLO_TIMEOUT,
        }
    }
}

/// Why a connection or a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Too many connections from one address without a hello.
    PendingPerIp,
    /// No hello within the deadline.
    HelloTimeout,
    /// Messages faster than the rate limit.
    RateLimit,
    /// A result larger than the pool's output limit.
    OutputTooLarge,
}

impl Cause {
    pub const ALL: [Cause; 4] = [
        Cause::PendingPerIp,
        Cause::HelloTimeout,
        Cause::RateLimit,
        Cause::OutputTooLarge,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Cause::PendingPerIp => "pending_per_ip",
            Cause::HelloTimeout => "hello_timeout",
            Cause::RateLimit => "rate_limit",
            Cause::OutputTooLarge => "output_too_large",
        }
    }

    fn index(self) -> usize {
        match self {
            Cause::PendingPerIp => 0,
            Cause::HelloTimeout => 1,
            Cause::RateLimit => 2,
            Cause::OutputTooLarge => 3,
        }
    }
}

/// The limits, what they refused, and the connections waiting for a hello.
pub struct Guard {
    pub limits: Limits,
    counts: [AtomicU64; 4],
    logged: Mutex<HashSet<(String, Cause)>>,
    pending: Mutex<HashMap<IpAddr, usize>>,
}

impl Guard {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Default::default(),
            logged: Mutex::default(),
            pending: Mutex::default(),
        })
    }

    /// Counts a refusal of `who` (an address or a worker id) and logs it the first time for
    /// that `who` and cause.
    pub fn refuse(&self, who: &str, cause: Cause, what: &str) {
        self.counts[cause.index()].fetch_add(1, Ordering::Relaxed);
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.len() < MAX_LOGGED && logged.insert((who.to_owned(), cause)) {
            warn!(
                who,
                cause = cause.label(),
                "refused: {what} (further refusals of this kind from here are counted, not logged)"
            );
        }
    }

    /// Refusals so far, by cause.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        Cause::ALL
            .iter()
            .map(|c| (c.label(), self.counts[c.index()].load(Ordering::Relaxed)))
            .collect()
    }

    /// Admits a connection from `ip` that has not said hello yet, or refuses it (counted and
    /// logged) when that address already has as many as the limit. The returned ticket holds
    /// its place until it is dropped (at the hello, or when the connection ends).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Pending, String> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let n = pending.entry(ip).or_default();
        if *n >= self.limits.max_pending_per_ip {
            let what = format!(
                "{ip} already has {} connections that have not said hello (the limit)",
                self.limits.max_pending_per_ip
            );
            drop(pending);
            self.refuse(&ip.to_string(), Cause::PendingPerIp, &what);
            return Err(what);
        }
        *n += 1;
        Ok(Pending {
            guard: self.clone(),
            ip,
        })
    }
}

/// A connection's place among those of its address waiting for a hello.
pub struct Pending {
    guard: Arc<Guard>,
    ip: IpAddr,
}

impl Pending {
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut pending = self.guard.pending.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pending.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.remove(&self.ip);
            }
        }
    }
}

/// A token bucket: `rate` messages a second, up to `2 × rate` at once.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub fn new(rate_per_s: u32, now: Instant) -> Self {
        let rate = f64::from(rate_per_s.max(1));
        Self {
            rate,
            burst: 2.0 * rate,
            tokens: 2.0 * rate,
            last: now,
        }
    }

    /// Whether one more message fits at `now`.
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_lets_a_burst_through_then_the_sustained_rate_and_refills() {
        let t0 = Instant::now();
        let mut b = RateLimiter::new(10, t0);
        // A burst of twice the rate, then nothing more in the same instant.
        assert_eq!((0..25).filter(|_| b.allow(t0)).count(), 20);
        // A tenth of a second later: one more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.allow(t1));
        assert!(!b.allow(t1));
        // Ten messages a second, evenly spaced, are always let through.
        let mut t = t1;
        for _ in 0..100 {
            t += Duration::from_millis(100);
            assert!(b.allow(t));
        }
        // A long pause refills to the burst, no further.
        let later = t + Duration::from_secs(60);
        assert_eq!((0..50).filter(|_| b.allow(later)).count(), 20);
    }

    #[test]
    fn connections_without_hello_are_capped_per_address_and_a_dropped_ticket_frees_its_place() {
        let guard = Guard::new(Limits {
            max_pending_per_ip: 2,
            ..Limits::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = guard.admit(a).unwrap();
        let _second = guard.admit(a).unwrap();
        let e = guard.admit(a).err().unwrap();
        assert!(e.contains("10.0.0.1") && e.contains("2 connections"), "{e}");
        // Another address is not affected.
        let _other = guard.admit(b).unwrap();
        drop(first);
        let _again = guard.admit(a).unwrap();
        assert!(guard.admit(a).is_err());
        let counts: HashMap<_, _> = guard.counts().into_iter().collect();
        assert_eq!(counts["pending_per_ip"], 2);
        assert_eq!(counts["rate_limit"], 0);
    }
}
