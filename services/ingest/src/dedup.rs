//! Drops records whose `event_id` this instance accepted within the window (default 24 h).
//!
//! In memory, per instance: a retried request that reaches the same instance is not counted
//! twice. Across instances (or after a restart) a duplicate can reach Kafka; the ClickHouse
//! sink deduplicates on `event_id` as well, so totals stay exact. Ids are remembered only once
//! Kafka acknowledged them, so a request answered 503 can be retried in full.
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// 128 bits of SHA-256 of (tenant, event id): collisions are out of reach at any volume, and
/// an entry costs a fixed few dozen bytes whatever the id's length.
type IdHash = [u8; 16];

/// The window of accepted ids.
#[derive(Debug)]
pub struct DedupWindow {
    window: Duration,
    max_entries: usize,
    seen: HashMap<IdHash, Instant>,
    order: VecDeque<(Instant, IdHash)>,
}

impl DedupWindow {
    /// A window of `window` length holding at most `max_entries` ids.
    pub fn new(window: Duration, max_entries: usize) -> DedupWindow {
        DedupWindow {
            window,
            max_entries,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The key of an event id within a tenant.
    pub fn key(tenant: &str, event_id: &str) -> IdHash {
        let mut hasher = Sha256::new();
        hasher.update(tenant.as_bytes());
        hasher.update([0]);
        hasher.update(event_id.as_bytes());
        hasher.finalize()[..16].try_into().expect("16 of 32 bytes")
    }

    /// Whether the id was accepted within the window.
    pub fn contains(&mut self, key: &IdHash, now: Instant) -> bool {
        self.expire(now);
        self.seen.contains_key(key)
    }

    /// Remembers ids Kafka acknowledged.
    pub fn insert(&mut self, key: IdHash, now: Instant) {
        self.expire(now);
        if self.seen.insert(key, now).is_none() {
            self.order.push_back((now, key));
        }
        while self.seen.len() > self.max_entries {
            let Some((_, oldest)) = self.order.pop_front() else {
                break;
            };
            self.seen.remove(&oldest);
        }
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front().copied() {
            if now.saturating_duration_since(at) < self.window {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_remembered_for_the_window_per_tenant() {
        let start = Instant::now();
        let mut window = DedupWindow::new(Duration::from_secs(60), 100);
        let a = DedupWindow::key("acme", "e1");
        window.insert(a, start);
        assert!(window.contains(&a, start + Duration::from_secs(59)));
        assert!(!window.contains(&DedupWindow::key("globex", "e1"), start));
        assert!(!window.contains(&a, start + Duration::from_secs(60)));
        assert!(window.is_empty());
    }

    #[test]
    fn the_oldest_ids_go_first_when_full() {
        let now = Instant::now();
        let mut window = DedupWindow::new(Duration::from_secs(60), 2);
        let keys: Vec<_> = (0..3)
            .map(|i| DedupWindow::key("t", &format!("e{i}")))
            .collect();
        for key in &keys {
            window.insert(*key, now);
        }
        assert_eq!(window.len(), 2);
        assert!(!window.contains(&keys[0], now));
        assert!(window.contains(&keys[2], now));
    }
}
