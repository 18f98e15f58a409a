//! How often one client address may use the routes anyone can reach
//! without a signature — share and upload links, form uploads, CORS
//! preflights: a token bucket per address, so that one client cannot keep
//! the index busy for everyone; past it, S3's `503 SlowDown`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderValue, Response, StatusCode};
use s3s::Body;
use tenfold_common::s3_errors::{error_response, with_status};

/// Addresses not seen for this long are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// A token bucket per client address.
#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens added per second, and the most a bucket holds (the burst).
    per_second: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    by_address: HashMap<IpAddr, (f64, Instant)>,
    swept: Option<Instant>,
}

impl RateLimiter {
    /// `per_second` requests a second on average per address, bursts of up
    /// to `burst`; 0 turns the limit off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(Buckets::default()),
        }
    }

    /// Whether `address` may make one more request now (and takes it).
    pub fn allow(&self, address: IpAddr) -> bool {
        self.allow_at(address, Instant::now())
    }

    fn allow_at(&self, address: IpAddr, now: Instant) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets
            .swept
            .is_none_or(|t| now.saturating_duration_since(t) >= FORGET_AFTER)
        {
            buckets
                .by_address
                .retain(|_, (_, seen)| now.saturating_duration_since(*seen) < FORGET_AFTER);
            buckets.swept = Some(now);
        }
        let (tokens, seen) = buckets
            .by_address
            .entry(address)
            .or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*seen).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *seen = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// S3's answer to a client over its rate.
pub fn slow_down() -> Response<Body> {
    let mut resp = error_response(with_status(
        "SlowDown",
        StatusCode::SERVICE_UNAVAILABLE,
        "Please reduce your request rate.".to_owned(),
    ));
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_the_rate_per_address() {
        let limiter = RateLimiter::new(10, 5);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert!((0..5).all(|_| limiter.allow_at(a, t0)));
        assert!(!limiter.allow_at(a, t0), "past the burst");
        assert!(
            limiter.allow_at(b, t0),
            "another address has its own bucket"
        );
        // A tenth of a second brings one token back.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limiter.allow_at(a, t1));
        assert!(!limiter.allow_at(a, t1));
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| limiter.allow_at(a, t2)).count(), 5);
        assert!(RateLimiter::new(0, 0).allow_at(a, t2), "0 is no limit");
    }
}
