//! The limits that keep one client from taking the server from the others,
//! checked per request: requests a second per token and per client address,
//! failed authentications per address, and open watches per token. (The
//! connection caps and the timeouts are the server's: `server.rs`.)
//!
//! Rates are GCRA cells from `governor`, keyed by token id or address: a
//! check is one atomic compare-and-swap on the key's cell, and no lock is
//! held across requests. A rate of 0 in the settings leaves that limiter
//! out, so a limit that is off costs nothing.
//!
//! Failed authentication: a request that presents a credential the server
//! does not know takes one cell of its address's allowance; once the
//! allowance is spent, such requests get 429 instead of 401, and no PBKDF2
//! check of an imported key is made, until cells come back. Valid tokens
//! from the same address are not slowed (a client with a revoked token in a
//! loop does not lock its neighbours out), so this bounds the cost of
//! failures, not guessing as such: a `kvs_` secret has 256 random bits.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{StatusCode, header};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ApiError;
use crate::config::Limits;
use crate::domain::TokenId;

/// The per-request limiters of a server.
pub struct Limiter {
    per_token: Option<DefaultKeyedRateLimiter<TokenId>>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    auth_failures: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Open watches and blocking reads, by token.
    watchers: Places<TokenId>,
    /// Open connections, by address and in all.
    connections: Places<IpAddr>,
}

impl Limiter {
    pub fn new(limits: &Limits) -> Limiter {
        let per_second = |n: u32| NonZeroU32::new(n).map(Quota::per_second);
        Limiter {
            per_token: per_second(limits.requests_per_token).map(RateLimiter::keyed),
            per_ip: per_second(limits.requests_per_ip).map(RateLimiter::keyed),
            auth_failures: NonZeroU32::new(limits.auth_failures_per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            watchers: Places::new(limits.max_watchers_per_token, usize::MAX),
            connections: Places::new(limits.max_connections_per_ip, limits.max_connections),
        }
    }

    /// Admits one request from `ip`.
    pub fn admit_address(&self, ip: IpAddr) -> Result<(), ApiError> {
        match &self.per_ip {
            Some(limiter) => limiter.check_key(&ip).map_err(|not_until| {
                metrics::counter!("kvs_rate_limited_total", "limit" => "ip").increment(1);
                too_many("too many requests from this address", wait(&not_until))
            }),
            None => Ok(()),
        }
    }

    /// Admits one request of token `id`.
    pub fn admit_token(&self, id: &TokenId) -> Result<(), ApiError> {
        match &self.per_token {
            Some(limiter) => limiter.check_key(id).map_err(|not_until| {
                metrics::counter!("kvs_rate_limited_total", "limit" => "token").increment(1);
                too_many("too many requests with this token", wait(&not_until))
            }),
            None => Ok(()),
        }
    }

    /// Counts a credential from `ip` that matched no token; 429 once the
    /// address has spent its allowance.
    pub fn unknown_credential(&self, ip: IpAddr) -> Result<(), ApiError> {
        match &self.auth_failures {
            Some(limiter) => limiter.check_key(&ip).map_err(|not_until| {
                metrics::counter!("kvs_rate_limited_total", "limit" => "auth_failures")
                    .increment(1);
                too_many(
                    "too many failed authentications from this address",
                    wait(&not_until),
                )
            }),
            None => Ok(()),
        }
    }

    /// A place for one more open watch or blocking read of token `id`,
    /// held until the returned place is dropped.
    pub fn open_watch(&self, id: &TokenId) -> Result<Place<TokenId>, ApiError> {
        self.watchers.take(id).map_err(|_| {
            metrics::counter!("kvs_rate_limited_total", "limit" => "watchers").increment(1);
            too_many(
                format!(
                    "this token already has {} open watches and blocking reads",
                    self.watchers.max_per_key
                ),
                Duration::from_secs(1),
            )
        })
    }

    /// A place for one more connection from `peer`, or the refusal to
    /// answer it with: 503 when the server is full, 429 when the peer is.
    pub fn open_connection(&self, peer: IpAddr) -> Result<Place<IpAddr>, ApiError> {
        self.connections.take(&peer).map_err(|full| match full {
            Full::Total => {
                metrics::counter!("kvs_rate_limited_total", "limit" => "connections").increment(1);
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the server has as many connections open as it may (max_connections)",
                )
                .with_header(header::RETRY_AFTER, "1")
            }
            Full::Key => {
                metrics::counter!("kvs_rate_limited_total", "limit" => "connections_per_ip")
                    .increment(1);
                too_many(
                    "this address has as many connections open as it may \
                     (max_connections_per_ip)",
                    Duration::from_secs(1),
                )
            }
        })
    }

    /// The connections open now.
    pub fn open_connections(&self) -> usize {
        self.connections.total()
    }

    /// Forgets the keys whose cells are full again, so that the limiters'
    /// memory follows the clients seen lately, not every client ever seen.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_token {
            limiter.retain_recent();
        }
        for limiter in [&self.per_ip, &self.auth_failures].into_iter().flatten() {
            limiter.retain_recent();
        }
    }
}

/// Places counted by key, with a cap per key and one in all. A place is
/// held by its [`Place`] and freed when that is dropped.
struct Places<K: Hash + Eq> {
    max_per_key: usize,
    max_total: usize,
    open: Arc<Mutex<Open<K>>>,
}

/// The places taken: in all, and by key (keys with none are removed).
struct Open<K> {
    total: usize,
    by_key: HashMap<K, usize>,
}

/// Which cap a refused place hit.
enum Full {
    Total,
    Key,
}

impl<K: Hash + Eq + Clone> Places<K> {
    fn new(max_per_key: usize, max_total: usize) -> Places<K> {
        Places {
            max_per_key,
            max_total,
            open: Arc::new(Mutex::new(Open {
                total: 0,
                by_key: HashMap::new(),
            })),
        }
    }

    fn take(&self, key: &K) -> Result<Place<K>, Full> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.max_total {
            return Err(Full::Total);
        }
        let count = open.by_key.entry(key.clone()).or_insert(0);
        if *count >= self.max_per_key {
            return Err(Full::Key);
        }
        *count += 1;
        open.total += 1;
        Ok(Place {
            open: self.open.clone(),
            key: key.clone(),
        })
    }

    fn total(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

/// One place taken (an open watch, a connection); dropping it frees it.
pub struct Place<K: Hash + Eq> {
    open: Arc<Mutex<Open<K>>>,
    key: K,
}

impl<K: Hash + Eq> Drop for Place<K> {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.by_key.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.by_key.remove(&self.key);
            }
            open.total -= 1;
        }
    }
}

/// How long until the limiter admits again.
fn wait(not_until: &governor::NotUntil<<DefaultClock as Clock>::Instant>) -> Duration {
    not_until.wait_time_from(DefaultClock::default().now())
}

/// 429 with `Retry-After` in whole seconds (at least 1: 0 would invite an
/// immediate retry that fails again).
fn too_many(message: impl Into<String>, wait: Duration) -> ApiError {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message)
        .with_header(header::RETRY_AFTER, seconds.max(1).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            requests_per_token: 3,
            requests_per_ip: 2,
            auth_failures_per_minute: 2,
            max_watchers_per_token: 2,
            ..Limits::default()
        }
    }

    #[test]
    fn a_burst_beyond_the_rate_gets_429_with_retry_after() {
        let limiter = Limiter::new(&limits());
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert!(limiter.admit_address(ip).is_ok());
        assert!(limiter.admit_address(ip).is_ok());
        let refused = limiter.admit_address(ip).unwrap_err();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        // Another address has its own allowance.
        assert!(limiter.admit_address([10, 0, 0, 2].into()).is_ok());
        let token = TokenId::from_path("tok_1");
        for _ in 0..3 {
            assert!(limiter.admit_token(&token).is_ok());
        }
        assert!(limiter.admit_token(&token).is_err());
    }

    #[test]
    fn unknown_credentials_turn_into_429_once_the_allowance_is_spent() {
        let limiter = Limiter::new(&limits());
        let ip: IpAddr = [10, 0, 0, 1].into();
        assert!(limiter.unknown_credential(ip).is_ok());
        assert!(limiter.unknown_credential(ip).is_ok());
        let refused = limiter.unknown_credential(ip).unwrap_err();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(limiter.unknown_credential([10, 0, 0, 2].into()).is_ok());
    }

    #[test]
    fn watch_slots_are_counted_per_token_and_freed_on_drop() {
        let limiter = Limiter::new(&limits());
        let token = TokenId::from_path("tok_1");
        let first = limiter.open_watch(&token).unwrap();
        let _second = limiter.open_watch(&token).unwrap();
        assert!(limiter.open_watch(&token).is_err());
        assert!(limiter.open_watch(&TokenId::from_path("tok_2")).is_ok());
        drop(first);
        assert!(limiter.open_watch(&token).is_ok());
    }

    #[test]
    fn connections_are_capped_per_address_and_in_all() {
        let limiter = Limiter::new(&Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Limits::default()
        });
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let first = limiter.open_connection(a).unwrap();
        let _second = limiter.open_connection(a).unwrap();
        let refused = limiter.open_connection(a).err().unwrap();
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let _third = limiter.open_connection(b).unwrap();
        let full = limiter.open_connection(b).err().unwrap();
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(limiter.open_connections(), 3);
        drop(first);
        assert_eq!(limiter.open_connections(), 2);
        assert!(limiter.open_connection(a).is_ok());
    }

    #[test]
    fn limits_at_zero_are_off() {
        let limiter = Limiter::new(&Limits {
            auth_failures_per_minute: 0,
            ..Limits::default()
        });
        let ip: IpAddr = [10, 0, 0, 1].into();
        for _ in 0..10_000 {
            assert!(limiter.admit_address(ip).is_ok());
            assert!(limiter.admit_token(&TokenId::from_path("tok_1")).is_ok());
        }
        for _ in 0..10_000 {
            assert!(limiter.unknown_credential(ip).is_ok());
        }
    }
}
