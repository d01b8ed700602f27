//! De-duplication by event id, per input partition: pure state, no I/O.
//!
//! Ingest drops a repeated `event_id` it has seen itself, but a retry that reaches another
//! ingest instance, or arrives after a restart, reaches Kafka again. The enrich stage keeps
//! the identities of the calls of the last `window_secs` (by event time, 24 h by default) of
//! each partition — at most `max_ids_per_partition`, the oldest forgotten first — and drops a
//! call it has seen, so the spend windows, budgets, detectors and `llm_calls` count it once.
//! A call's identity is what `llm_calls FINAL` keys on: tenant, team, the UTC day of
//! `occurred_at` and `event_id` (a retried request keeps its event ids: derived ones too).
//! Calls are keyed `tenant/team/session`, so a call and its repeat share a partition.
//!
//! The state goes to the changelog as one record per transaction with the identities it added
//! (16-byte hash and event time each), keyed by the transaction's first input offset; once
//! every identity of a record has left the window, the record is deleted (a tombstone). A
//! restore reads the live records back in order.
use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use tally_contract::records::{LlmCall, Micros};
use xxhash_rust::xxh3::xxh3_128;

const MICROS_PER_SECOND: Micros = 1_000_000;
const DAY: Micros = 86_400 * MICROS_PER_SECOND;
/// Bytes of one identity in a changelog record: its hash and its event time.
const ENTRY: usize = 24;
/// Most identities in one changelog record (480 KB), below Kafka's default message size.
const CHUNK: usize = 20_000;

/// How long and how many event ids are remembered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupConfig {
    /// A repeat of a call within this long (by event time) of the partition's newest call is
    /// dropped, seconds. Later repeats count again (as in ClickHouse before FINAL).
    #[serde(default = "default_window_secs")]
    pub window_secs: i64,
    /// Most event ids remembered per input partition (about 50 bytes each); past it the
    /// oldest are forgotten first, and counted (`dedup_forgotten`).
    #[serde(default = "default_max_ids")]
    pub max_ids_per_partition: usize,
}

fn default_window_secs() -> i64 {
    86_400
}
fn default_max_ids() -> usize {
    1_000_000
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            window_secs: default_window_secs(),
            max_ids_per_partition: default_max_ids(),
        }
    }
}

/// A call's identity: a 128-bit hash of what `llm_calls FINAL` keys on.
pub fn identity(call: &LlmCall) -> u128 {
    let day = call.occurred_at.div_euclid(DAY);
    let text = format!(
        "{}\u{0}{}\u{0}{day}\u{0}{}",
        call.tenant, call.team, call.event_id
    );
    xxh3_128(text.as_bytes())
}

/// The identities one partition has seen.
#[derive(Debug, Default)]
pub struct Seen {
    ids: HashSet<u128>,
    /// Arrival order, with event times: the front is forgotten first.
    order: VecDeque<(Micros, u128)>,
    /// The newest event time seen: the window ends there.
    newest: Micros,
    /// Added since the last changelog write.
    pending: Vec<(Micros, u128)>,
    /// Changelog records still holding live identities: key → newest event time in it.
    records: BTreeMap<String, Micros>,
    /// Identities forgotten because of the cap (not the window).
    pub forgotten: u64,
}

/// What one transaction writes to the changelog: records to put, keys to delete.
#[derive(Debug, Default, PartialEq)]
pub struct ChangelogWrites {
    pub put: Vec<(String, Vec<u8>)>,
    pub delete: Vec<String>,
}

impl Seen {
    /// Whether this is the first time the call is seen (then it is remembered).
    pub fn first_time(&mut self, config: &DedupConfig, call: &LlmCall) -> bool {
        let id = identity(call);
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back((call.occurred_at, id));
        self.pending.push((call.occurred_at, id));
        self.newest = self.newest.max(call.occurred_at);
        self.forget(config);
        true
    }

    /// Identities remembered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Forgets what left the window, and the oldest beyond the cap.
    fn forget(&mut self, config: &DedupConfig) {
        let horizon = self.newest - config.window_secs * MICROS_PER_SECOND;
        while let Some(&(at, id)) = self.order.front() {
            let capped = self.order.len() > config.max_ids_per_partition;
            if at >= horizon && !capped {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&id);
            if capped && at >= horizon {
                self.forgotten += 1;
            }
        }
    }

    /// The changelog writes of a transaction whose first input offset is `first_offset`: the
    /// identities it added, and deletions of records whose identities all left the window.
    pub fn changelog(&mut self, config: &DedupConfig, first_offset: i64) -> ChangelogWrites {
        let mut writes = ChangelogWrites::default();
        let horizon = self.newest - config.window_secs * MICROS_PER_SECOND;
        for (i, chunk) in self.pending.chunks(CHUNK).enumerate() {
            let key = format!("dedup/{first_offset:020}/{i}");
            let mut bytes = Vec::with_capacity(chunk.len() * ENTRY);
            let mut newest = Micros::MIN;
            for (at, id) in chunk {
                bytes.extend_from_slice(&id.to_le_bytes());
                bytes.extend_from_slice(&at.to_le_bytes());
                newest = newest.max(*at);
            }
            self.records.insert(key.clone(), newest);
            writes.put.push((key, bytes));
        }
        self.pending.clear();
        let expired: Vec<String> = self
            .records
            .iter()
            .filter(|(_, newest)| **newest < horizon)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.records.remove(&key);
            writes.delete.push(key);
        }
        writes
    }

    /// Reads one changelog record back (records come in the order they were written); a
    /// deletion (`None`) forgets the record.
    pub fn restore(
        &mut self,
        config: &DedupConfig,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(), String> {
        let Some(bytes) = value else {
            self.records.remove(key);
            return Ok(());
        };
        if bytes.len() % ENTRY != 0 {
            return Err(format!(
                "{} bytes is not a whole number of {ENTRY}-byte entries",
                bytes.len()
            ));
        }
        let mut newest = Micros::MIN;
        for entry in bytes.chunks(ENTRY) {
            let id = u128::from_le_bytes(entry[..16].try_into().expect("16 bytes"));
            let at = Micros::from_le_bytes(entry[16..].try_into().expect("8 bytes"));
            newest = newest.max(at);
            if self.ids.insert(id) {
                self.order.push_back((at, id));
                self.newest = self.newest.max(at);
            }
        }
        self.records.insert(key.to_string(), newest);
        self.forget(config);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(event_id: &str, at_secs: i64) -> LlmCall {
        LlmCall::new(
            event_id,
            at_secs * MICROS_PER_SECOND,
            "acme",
            "t",
            "openai",
            "gpt-4o",
        )
    }

    fn small() -> DedupConfig {
        DedupConfig {
            window_secs: 100,
            max_ids_per_partition: 5,
        }
    }

    #[test]
    fn a_repeat_is_dropped_and_another_team_or_day_is_another_call() {
        let config = DedupConfig::default();
        let mut seen = Seen::default();
        assert!(seen.first_time(&config, &call("a", 10)));
        assert!(
            !seen.first_time(&config, &call("a", 10)),
            "the same call again"
        );
        let mut other_team = call("a", 10);
        other_team.team = "u".into();
        assert!(seen.first_time(&config, &other_team));
        assert!(seen.first_time(&config, &call("a", 86_410)), "another day");
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn the_window_and_the_cap_forget_the_oldest() {
        let config = small();
        let mut seen = Seen::default();
        for (i, at) in [0, 10, 20].into_iter().enumerate() {
            assert!(seen.first_time(&config, &call(&format!("c{i}"), at)));
        }
        // 150 s later the first two left the 100 s window.
        assert!(seen.first_time(&config, &call("late", 115)));
        assert!(
            seen.first_time(&config, &call("c0", 0)),
            "forgotten: counts again"
        );
        assert!(!seen.first_time(&config, &call("c2", 20)));
        for i in 0..6 {
            seen.first_time(&config, &call(&format!("n{i}"), 116));
        }
        assert_eq!(seen.len(), 5, "capped");
        assert!(seen.forgotten > 0);
    }

    #[test]
    fn the_changelog_restores_what_is_remembered_and_deletes_what_left_the_window() {
        let config = small();
        let mut seen = Seen::default();
        seen.first_time(&config, &call("a", 0));
        seen.first_time(&config, &call("b", 1));
        let first = seen.changelog(&config, 7);
        assert_eq!(first.put.len(), 1);
        assert_eq!(first.put[0].1.len(), 2 * ENTRY);
        assert!(first.delete.is_empty());
        seen.first_time(&config, &call("c", 200));
        let second = seen.changelog(&config, 9);
        assert_eq!(
            second.delete,
            vec![first.put[0].0.clone()],
            "a and b left the window"
        );

        let mut restored = Seen::default();
        for (key, bytes) in first.put.iter().chain(&second.put) {
            restored.restore(&config, key, Some(bytes)).unwrap();
        }
        for key in &second.delete {
            restored.restore(&config, key, None).unwrap();
        }
        assert!(
            !restored.first_time(&config, &call("c", 200)),
            "c is remembered"
        );
        assert!(restored.first_time(&config, &call("d", 200)));
        assert!(restored.restore(&config, "k", Some(&[0; 5])).is_err());
    }
}
