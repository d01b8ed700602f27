//! Who is sending: API keys (as SHA-256 hashes), their tenant and team rights, and a per-key
//! rate limit in events per second.
//!
//! A missing or unknown key gets 401 with no hint of which keys exist. GitHub webhooks, which
//! cannot send a bearer token, authenticate with `X-Hub-Signature-256` (HMAC-SHA256 of the
//! body with the key's `github_webhook_secret`).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::config::ApiKeyConfig;

/// An authenticated sender.
#[derive(Debug)]
pub struct Principal {
    /// The key's name, for logs and metrics.
    pub name: String,
    /// Tenant of every event it sends.
    pub tenant: String,
    /// Team of its events when they name none.
    pub team: Option<String>,
    /// Whether its events may name any team.
    pub any_team: bool,
    limiter: Mutex<RateLimiter>,
    github_secret: Option<Vec<u8>>,
}

/// Why a record's team is not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeamError {
    /// The record names no team and the key has none.
    Missing,
    /// The record names a team the key may not send for.
    Forbidden { requested: String },
}

impl Principal {
    /// The team a record belongs to, given the team it names (if any).
    pub fn resolve_team(&self, requested: Option<&str>) -> Result<String, TeamError> {
        match (requested, &self.team) {
            (Some(team), _) if self.any_team => Ok(team.to_string()),
            (Some(team), Some(own)) if team == own => Ok(team.to_string()),
            (Some(team), _) => Err(TeamError::Forbidden {
                requested: team.to_string(),
            }),
            (None, Some(own)) => Ok(own.clone()),
            (None, None) => Err(TeamError::Missing),
        }
    }

    /// Takes `events` from the key's budget, or says how long to wait before retrying.
    pub fn admit(&self, events: usize, now: Instant) -> Result<(), Duration> {
        self.limiter
            .lock()
            .expect("rate limiter lock")
            .admit(events as f64, now)
    }
}

/// All configured keys, by the SHA-256 of the key.
#[derive(Debug, Default)]
pub struct Authenticator {
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
}

impl Authenticator {
    /// Builds the table from validated configuration.
    pub fn new(keys: &[ApiKeyConfig]) -> Authenticator {
        let by_hash = keys
            .iter()
            .map(|key| {
                let hash = decode_hex32(&key.sha256).expect("validated: 64 hex digits");
                let principal = Principal {
                    name: key.name.clone(),
                    tenant: key.tenant.clone(),
                    team: key.team.clone(),
                    any_team: key.any_team,
                    limiter: Mutex::new(RateLimiter::new(key.rate_limit_per_sec as f64)),
                    github_secret: key
                        .github_webhook_secret
                        .as_ref()
                        .map(|s| s.as_bytes().to_vec()),
                };
                (hash, Arc::new(principal))
            })
            .collect();
        Authenticator { by_hash }
    }

    /// The sender of a bearer token (`Authorization: Bearer <key>`), if it is a known key.
    pub fn bearer(&self, authorization: Option<&str>) -> Option<Arc<Principal>> {
        let key = authorization?.strip_prefix("Bearer ")?.trim();
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_hash.get(&hash).cloned()
    }

    /// The sender of a GitHub webhook whose `X-Hub-Signature-256` matches a key's secret.
    pub fn github_signature(&self, signature: Option<&str>, body: &[u8]) -> Option<Arc<Principal>> {
        let expected = decode_hex32(signature?.strip_prefix("sha256=")?)?;
        self.by_hash
            .values()
            .find(|principal| {
                principal.github_secret.as_ref().is_some_and(|secret| {
                    let mut mac =
                        Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
                    mac.update(body);
                    mac.verify_slice(&expected).is_ok()
                })
            })
            .cloned()
    }
}

/// Hex SHA-256 of a key, as the configuration stores it.
pub fn hash_key(key: &str) -> String {
    to_hex(&Sha256::digest(key.as_bytes()))
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    // Every fingerprint and derived id is printed here: a table, not a `format!` per byte.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        hex.push(DIGITS[usize::from(byte >> 4)] as char);
        hex.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    hex
}

/// Whether `key` hashes (SHA-256) to `expected`.
pub fn key_matches(key: &str, expected: &[u8; 32]) -> bool {
    let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    hash == *expected
}

/// 32 bytes from 64 hex digits.
pub fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// A token bucket that may go into debt: a request larger than the bucket is admitted when
/// the bucket is not empty, and the next requests wait until the debt is paid. So any request
/// size makes progress, and the long-run rate is the configured one.
#[derive(Debug)]
struct RateLimiter {
    per_sec: f64,
    tokens: f64,
    updated: Option<Instant>,
}

impl RateLimiter {
    fn new(per_sec: f64) -> RateLimiter {
        RateLimiter {
            per_sec,
            tokens: per_sec,
            updated: None,
        }
    }

    fn admit(&mut self, events: f64, now: Instant) -> Result<(), Duration> {
        if let Some(updated) = self.updated {
            let refill = now.saturating_duration_since(updated).as_secs_f64() * self.per_sec;
            self.tokens = (self.tokens + refill).min(self.per_sec);
        }
        self.updated = Some(now);
        if self.tokens <= 0.0 {
            return Err(Duration::from_secs_f64(
                -self.tokens / self.per_sec + 1.0 / self.per_sec,
            ));
        }
        self.tokens -= events;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(team: Option<&str>, any_team: bool, secret: Option<&str>) -> ApiKeyConfig {
        ApiKeyConfig {
            name: "k".into(),
            sha256: hash_key("secret-key"),
            tenant: "acme".into(),
            team: team.map(String::from),
            any_team,
            rate_limit_per_sec: 100,
            github_webhook_secret: secret.map(String::from),
        }
    }

    #[test]
    fn only_the_exact_bearer_key_authenticates() {
        let auth = Authenticator::new(&[key(Some("payments"), false, None)]);
        assert_eq!(
            auth.bearer(Some("Bearer secret-key")).unwrap().tenant,
            "acme"
        );
        assert!(auth.bearer(Some("Bearer secret-kez")).is_none());
        assert!(auth.bearer(Some("secret-key")).is_none());
        assert!(auth.bearer(None).is_none());
    }

    #[test]
    fn teams_follow_the_key() {
        let auth = Authenticator::new(&[key(Some("payments"), false, None)]);
        let p = auth.bearer(Some("Bearer secret-key")).unwrap();
        assert_eq!(p.resolve_team(None).unwrap(), "payments");
        assert_eq!(p.resolve_team(Some("payments")).unwrap(), "payments");
        assert_eq!(
            p.resolve_team(Some("search")),
            Err(TeamError::Forbidden {
                requested: "search".into()
            })
        );
        let any = Authenticator::new(&[key(None, true, None)]);
        let p = any.bearer(Some("Bearer secret-key")).unwrap();
        assert_eq!(p.resolve_team(Some("search")).unwrap(), "search");
        assert_eq!(p.resolve_team(None), Err(TeamError::Missing));
    }

    /// SECURITY.md's rotation: the old and the new key side by side send as the same tenant
    /// and team; once the old entry is gone, only the new key does.
    #[test]
    fn during_a_rotation_both_keys_send_as_the_same_team() {
        let old = key(Some("payments"), false, None);
        let new = ApiKeyConfig {
            name: "k-2026-12".into(),
            sha256: hash_key("new-secret-key"),
            ..old.clone()
        };
        let both = Authenticator::new(&[old, new.clone()]);
        for bearer in ["Bearer secret-key", "Bearer new-secret-key"] {
            let p = both.bearer(Some(bearer)).unwrap();
            assert_eq!(
                (p.tenant.as_str(), p.resolve_team(None).unwrap().as_str()),
                ("acme", "payments")
            );
        }
        let after = Authenticator::new(&[new]);
        assert!(after.bearer(Some("Bearer secret-key")).is_none());
        assert_eq!(
            after.bearer(Some("Bearer new-secret-key")).unwrap().name,
            "k-2026-12"
        );
    }

    #[test]
    fn github_signatures_are_checked_against_the_body() {
        let auth = Authenticator::new(&[key(
            Some("payments"),
            false,
            Some("It's a Secret to Everybody"),
        )]);
        // The example from GitHub's documentation on validating webhook deliveries.
        let body = b"Hello, World!";
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(
            auth.github_signature(Some(signature), body)
                .unwrap()
                .team
                .as_deref(),
            Some("payments")
        );
        assert!(auth
            .github_signature(Some(signature), b"Hello, World?")
            .is_none());
        assert!(auth.github_signature(None, body).is_none());
    }

    #[test]
    fn the_rate_limit_admits_a_second_of_events_then_asks_to_wait() {
        let mut limiter = RateLimiter::new(100.0);
        let start = Instant::now();
        assert!(limiter.admit(60.0, start).is_ok());
        assert!(
            limiter.admit(60.0, start).is_ok(),
            "debt is allowed while tokens remain"
        );
        let wait = limiter.admit(1.0, start).unwrap_err();
        assert!((wait.as_secs_f64() - 0.21).abs() < 1e-9, "{wait:?}");
        assert!(limiter
            .admit(1.0, start + Duration::from_millis(300))
            .is_ok());
    }
}
