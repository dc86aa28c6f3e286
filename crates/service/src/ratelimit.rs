//! Rate limits with governor's GCRA (a smooth token bucket: a full burst is allowed, then one
//! more request each `period / count`): per key for requests and for job starts, and per client
//! address for the key-less legacy routes and for failed authentications (so that trying new
//! keys, each with a fresh budget of its own, soon stops working).
//!
//! Limits live in this process's memory: with several API processes each enforces its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::{ApiError, Code};
use crate::ids::KeyFingerprint;

/// `COUNT/PERIOD`, for example `1200/min`, `10/s`, `5000/h`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests allowed per period (also the burst).
    pub count: NonZeroU32,
    /// The period.
    pub period: Duration,
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("{s:?} is not a rate such as 1200/min, 10/s or 5000/h");
        let (count, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let count = NonZeroU32::new(count).ok_or_else(bad)?;
        let period = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(Rate { count, period })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

type Limiter = DefaultKeyedRateLimiter<String, StateInformationMiddleware>;

/// One limit for one kind of action.
struct Bucket {
    rate: Rate,
    limiter: Limiter,
}

impl Bucket {
    fn new(rate: Rate) -> Bucket {
        let quota =
            Quota::with_period(rate.period / rate.count.get()).expect("a positive period").allow_burst(rate.count);
        Bucket { rate, limiter: governor::RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>() }
    }

    /// Takes one cell for `key`, if there is one.
    fn check(&self, key: &str) -> Decision {
        let per_cell = self.rate.period / self.rate.count.get();
        let limit = self.rate.count.get();
        match self.limiter.check_key(&key.to_string()) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                // Time until the bucket is full again.
                let reset = per_cell * (limit - remaining);
                Decision { allowed: true, limit, remaining, reset, retry_after: Duration::ZERO }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision { allowed: false, limit, remaining: 0, reset: per_cell * limit, retry_after: wait }
            }
        }
    }
}

/// The outcome of a check, and the `X-RateLimit-*` headers that report it.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    /// Whether the action may go ahead.
    pub allowed: bool,
    limit: u32,
    remaining: u32,
    reset: Duration,
    retry_after: Duration,
}

impl Decision {
    /// Adds `X-RateLimit-Limit`, `-Remaining` and `-Reset` (seconds until the full burst is back).
    pub fn headers(&self, headers: &mut HeaderMap) {
        let mut set = |name: &'static str, value: u64| {
            headers.insert(name, HeaderValue::from(value));
        };
        set("x-ratelimit-limit", self.limit as u64);
        set("x-ratelimit-remaining", self.remaining as u64);
        set("x-ratelimit-reset", self.reset.as_secs_f64().ceil() as u64);
        if !self.allowed {
            set("retry-after", self.retry_after.as_secs_f64().ceil().max(1.0) as u64);
        }
    }

    /// The 429 for a refused action, with its headers.
    pub fn refusal(&self, what: &str) -> ApiError {
        let wait = self.retry_after.as_secs_f64().ceil().max(1.0);
        let mut error =
            ApiError::new(Code::RateLimited, format!("Too many {what} ({} allowed); retry after {wait} s", self.limit));
        self.headers(&mut error.headers);
        error
    }

    /// Refuses when the limit is spent.
    pub fn require(self, what: &str) -> Result<(), ApiError> {
        if self.allowed {
            Ok(())
        } else {
            Err(self.refusal(what))
        }
    }
}

/// The service's limits.
pub struct RateLimits {
    requests: Bucket,
    starts: Bucket,
    legacy: Bucket,
    auth_failures: Bucket,
    /// Client addresses that spent their budget of failed authentications, and until when.
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

/// The rates of [`RateLimits`].
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Requests per API key on `/v1`.
    pub requests: Rate,
    /// Job starts per API key.
    pub starts: Rate,
    /// Key-less legacy uploads and jobs per client address.
    pub legacy: Rate,
    /// Failed authentications per client address.
    pub auth_failures: Rate,
}

impl RateLimits {
    /// Limits at `rates`.
    pub fn new(rates: Rates) -> RateLimits {
        RateLimits {
            requests: Bucket::new(rates.requests),
            starts: Bucket::new(rates.starts),
            legacy: Bucket::new(rates.legacy),
            auth_failures: Bucket::new(rates.auth_failures),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one key-less legacy upload or job from `client`.
    pub fn legacy(&self, client: IpAddr) -> Decision {
        self.legacy.check(&client.to_string())
    }

    /// Counts a failed authentication from `client` (a wrong key or admin token): past the
    /// budget, the address is refused for as long as the budget takes to refill a cell.
    pub fn auth_failed(&self, client: IpAddr) {
        let decision = self.auth_failures.check(&client.to_string());
        // The failure that spends the last cell blocks the address until a cell is back.
        let wait = if decision.allowed {
            (decision.remaining == 0).then(|| self.auth_failures.rate.period / self.auth_failures.rate.count.get())
        } else {
            Some(decision.retry_after)
        };
        if let Some(wait) = wait {
            self.blocked.lock().unwrap_or_else(|p| p.into_inner()).insert(client, Instant::now() + wait);
        }
    }

    /// The refusal for `client` while it is blocked for failed authentications.
    pub fn auth_blocked(&self, client: IpAddr) -> Option<ApiError> {
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        let until = *blocked.get(&client)?;
        let now = Instant::now();
        if until <= now {
            blocked.remove(&client);
            return None;
        }
        let wait = (until - now).as_secs_f64().ceil().max(1.0) as u64;
        let mut error = ApiError::new(
            Code::RateLimited,
            format!("Too many failed authentications from this address; retry after {wait} s"),
        );
        error.headers.insert("retry-after", HeaderValue::from(wait));
        Some(error)
    }

    /// Counts one request made with `api_key` (hashed: the limiter never holds keys).
    pub fn request(&self, api_key: &str) -> Decision {
        self.requests.check(&crate::store::hash_key(api_key))
    }

    /// Counts one job start by the key with this fingerprint.
    pub fn start(&self, fingerprint: &KeyFingerprint) -> Decision {
        self.starts.check(fingerprint.as_str())
    }

    /// Forgets keys whose buckets are full again, so memory does not grow with every key seen.
    pub fn shrink(&self) {
        self.requests.limiter.retain_recent();
        self.starts.limiter.retain_recent();
        self.legacy.limiter.retain_recent();
        self.auth_failures.limiter.retain_recent();
        let now = Instant::now();
        self.blocked.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!("10/s".parse::<Rate>().unwrap().period, Duration::from_secs(1));
        assert_eq!("1200/min".parse::<Rate>().unwrap().count.get(), 1200);
        assert!("0/s".parse::<Rate>().is_err());
        assert!("ten/min".parse::<Rate>().is_err());
        assert!("10/week".parse::<Rate>().is_err());
    }

    fn limits(requests: &str, starts: &str) -> RateLimits {
        RateLimits::new(Rates {
            requests: requests.parse().unwrap(),
            starts: starts.parse().unwrap(),
            legacy: "2/min".parse().unwrap(),
            auth_failures: "2/min".parse().unwrap(),
        })
    }

    #[test]
    fn failed_authentications_block_an_address_not_its_neighbours() {
        let limits = limits("3/min", "1/min");
        let (attacker, other): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        limits.auth_failed(attacker);
        assert!(limits.auth_blocked(attacker).is_none(), "within the budget");
        limits.auth_failed(attacker);
        let refusal = limits.auth_blocked(attacker).expect("blocked once the budget is spent");
        assert_eq!((refusal.status.as_u16(), refusal.code), (429, crate::error::Code::RateLimited));
        assert!(refusal.headers.contains_key("retry-after"));
        assert!(limits.auth_blocked(other).is_none());
    }

    #[test]
    fn legacy_calls_are_counted_per_address() {
        let limits = limits("3/min", "1/min");
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(limits.legacy(client).allowed && limits.legacy(client).allowed);
        assert!(!limits.legacy(client).allowed);
        assert!(limits.legacy("192.0.2.8".parse().unwrap()).allowed);
    }

    #[test]
    fn a_burst_then_refusals_per_key() {
        let limits = limits("3/min", "1/min");
        let remaining: Vec<u32> = (0..3).map(|_| limits.request("k1").remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limits.request("k1");
        assert!(!refused.allowed);
        assert!(refused.retry_after > Duration::from_secs(15) && refused.retry_after <= Duration::from_secs(20));
        assert!(limits.request("k2").allowed, "keys are counted apart");
        let fp = KeyFingerprint::from("kfp_1");
        assert!(limits.start(&fp).allowed && !limits.start(&fp).allowed, "starts are counted apart");
    }
}
