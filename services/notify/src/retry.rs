//! When to retry a delivery and how long to wait: pure, no I/O.
//!
//! Which answers are worth another attempt ([`classify`]): 408, 429 and 5xx (the receiver is
//! busy or broken for now), and timeouts and connection errors; any other answer is final,
//! since sending the same body again would get the same answer.
//!
//! How long to wait ([`RetryPolicy::delay`]): exponential backoff, `initial × 2^retry` capped
//! at `max`, with "equal jitter": a random delay between half that ceiling and the ceiling, so
//! many notifiers retrying after the same outage spread out, yet none retries at once.
use std::time::Duration;

use rand::Rng;

/// How one delivery is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Ceiling of the wait before the second attempt.
    pub initial: Duration,
    /// Largest wait.
    pub max: Duration,
}

/// What an HTTP status means for the delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx: delivered.
    Success,
    /// 408, 429, 5xx: try again later.
    Retryable,
    /// Anything else (4xx, an unfollowed 3xx): final.
    Rejected,
}

/// Classifies an HTTP status code.
pub fn classify(status: u16) -> Class {
    match status {
        200..=299 => Class::Success,
        408 | 429 | 500..=599 => Class::Retryable,
        _ => Class::Rejected,
    }
}

impl RetryPolicy {
    /// Whether another attempt may follow attempt number `attempt` (1 for the first).
    pub fn may_retry(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// The longest wait before retry number `retry` (0 before the second attempt):
    /// `initial × 2^retry`, at most `max`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The wait before retry number `retry`: uniformly between half the ceiling and the
    /// ceiling. A `Retry-After` the receiver sent is honoured up to `max`.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry).as_micros() as u64;
        let jittered = Duration::from_micros(rng.random_range(ceiling / 2..=ceiling));
        match retry_after {
            Some(asked) => jittered.max(asked.min(self.max)),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_ceiling_doubles_then_stays_at_the_cap() {
        let ceilings: Vec<u64> = (0..9)
            .map(|retry| policy().ceiling(retry).as_millis() as u64)
            .collect();
        assert_eq!(
            ceilings,
            [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
        );
        assert_eq!(policy().ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_between_half_the_ceiling_and_the_ceiling_and_varies() {
        let mut rng = StdRng::seed_from_u64(7);
        for retry in 0..10 {
            let ceiling = policy().ceiling(retry);
            let delays: Vec<Duration> = (0..200)
                .map(|_| policy().delay(retry, None, &mut rng))
                .collect();
            assert!(
                delays.iter().all(|d| *d >= ceiling / 2 && *d <= ceiling),
                "retry {retry}: {delays:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
            let (low, high) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
            assert!(
                *high - *low > ceiling / 4,
                "retry {retry}: jitter spreads the delays, {low:?}..{high:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let mut rng = StdRng::seed_from_u64(1);
        let asked = policy().delay(0, Some(Duration::from_secs(5)), &mut rng);
        assert_eq!(asked, Duration::from_secs(5), "longer than the backoff");
        let capped = policy().delay(0, Some(Duration::from_secs(3_600)), &mut rng);
        assert_eq!(capped, Duration::from_secs(30), "never longer than max");
        let shorter = policy().delay(3, Some(Duration::from_millis(1)), &mut rng);
        assert!(
            shorter >= Duration::from_secs(2),
            "the backoff still applies"
        );
    }

    #[test]
    fn attempts_are_counted_from_one() {
        let policy = policy();
        assert!(policy.may_retry(1) && policy.may_retry(5));
        assert!(!policy.may_retry(6));
    }

    #[test]
    fn busy_and_broken_receivers_are_retried_refusals_are_not() {
        let classes: Vec<(u16, Class)> = [200, 202, 204, 301, 400, 401, 403, 404, 408, 413, 429]
            .into_iter()
            .chain([500, 502, 503, 504, 599])
            .map(|s| (s, classify(s)))
            .collect();
        use Class::*;
        assert_eq!(
            classes,
            [
                (200, Success),
                (202, Success),
                (204, Success),
                (301, Rejected),
                (400, Rejected),
                (401, Rejected),
                (403, Rejected),
                (404, Rejected),
                (408, Retryable),
                (413, Rejected),
                (429, Retryable),
                (500, Retryable),
                (502, Retryable),
                (503, Retryable),
                (504, Retryable),
                (599, Retryable),
            ]
        );
    }
}
