//! Which alerts a destination should see again: pure, no I/O, one instance per destination.
//!
//! An alert is identified by its `alert_id`, which the detectors keep stable per signal and
//! session (and budgets per budget and period), across `firing` and `resolved`:
//!
//! - the first `firing` is delivered;
//! - a repeated `firing` within the re-notify interval of the last delivery is suppressed,
//!   unless its severity rose (an escalation is delivered at once);
//! - a repeated `firing` after the interval is delivered again, as a reminder;
//! - a `resolved` is delivered once. A `resolved` for an alert this instance never saw is
//!   delivered too: after a restart the firing may have been delivered by the previous
//!   process, and a superfluous "resolved" is better than a page that never clears;
//! - a `firing` after a `resolved` (the condition came back) is delivered.
//!
//! Only deliveries are remembered ([`Dedup::delivered`]): an alert that was dead-lettered is
//! not, so its next firing is tried again. Memory is bounded: an entry older than the
//! interval changes no decision but one (a second `resolved` that late is delivered again),
//! so when the table is full those go first, then the oldest.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use tally_contract::records::{AlertState, Severity};

/// Whether to deliver an alert, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Deliver it.
    Deliver(Reason),
    /// Do not: this destination has it already.
    Suppress(Suppression),
}

/// Why an alert is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The first firing this destination sees.
    First,
    /// Still firing, and the re-notify interval has passed.
    Reminder,
    /// Still firing, more severe than what was delivered.
    Escalated,
    /// Firing again after it resolved.
    Refired,
    /// It resolved.
    Resolved,
}

/// Why an alert is not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppression {
    /// A repeat of a firing delivered less than the re-notify interval ago.
    Repeat,
    /// A repeat of a resolve that was delivered.
    AlreadyResolved,
}

/// What was last delivered for one alert.
#[derive(Debug, Clone, Copy)]
struct Entry {
    state: AlertState,
    severity: Severity,
    at: Instant,
}

/// The deduplication table of one destination.
#[derive(Debug)]
pub struct Dedup {
    interval: Duration,
    max_entries: usize,
    entries: HashMap<String, Entry>,
}

impl Dedup {
    /// An empty table: repeats are suppressed for `interval`; at most `max_entries` alerts.
    pub fn new(interval: Duration, max_entries: usize) -> Dedup {
        Dedup {
            interval,
            max_entries: max_entries.max(1),
            entries: HashMap::new(),
        }
    }

    /// Whether an alert in `state` with `severity` should be delivered at `now`.
    pub fn decide(
        &self,
        alert_id: &str,
        state: AlertState,
        severity: Severity,
        now: Instant,
    ) -> Decision {
        let last = self.entries.get(alert_id);
        match (state, last) {
            (AlertState::Firing, None) => Decision::Deliver(Reason::First),
            (AlertState::Firing, Some(last)) if last.state == AlertState::Resolved => {
                Decision::Deliver(Reason::Refired)
            }
            (AlertState::Firing, Some(last)) if rank(severity) > rank(last.severity) => {
                Decision::Deliver(Reason::Escalated)
            }
            (AlertState::Firing, Some(last)) if now.duration_since(last.at) >= self.interval => {
                Decision::Deliver(Reason::Reminder)
            }
            (AlertState::Firing, Some(_)) => Decision::Suppress(Suppression::Repeat),
            (AlertState::Resolved, Some(last)) if last.state == AlertState::Resolved => {
                Decision::Suppress(Suppression::AlreadyResolved)
            }
            (AlertState::Resolved, _) => Decision::Deliver(Reason::Resolved),
        }
    }

    /// Remembers that the alert was delivered in `state` with `severity` at `now`.
    pub fn delivered(
        &mut self,
        alert_id: &str,
        state: AlertState,
        severity: Severity,
        now: Instant,
    ) {
        let entry = Entry {
            state,
            severity,
            at: now,
        };
        match self.entries.get_mut(alert_id) {
            Some(existing) => *existing = entry,
            None => {
                if self.entries.len() >= self.max_entries {
                    self.evict(now);
                }
                self.entries.insert(alert_id.to_string(), entry);
            }
        }
    }

    /// Whether this destination was last sent the alert firing (so its resolve belongs here,
    /// whatever the resolve's severity).
    pub fn is_firing(&self, alert_id: &str) -> bool {
        self.entries
            .get(alert_id)
            .is_some_and(|e| e.state == AlertState::Firing)
    }

    /// Alerts remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes room for a tenth of the table: entries older than the interval first (they
    /// decide nothing any more), then the oldest.
    fn evict(&mut self, now: Instant) {
        let interval = self.interval;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.at) < interval);
        let target = self.max_entries - self.max_entries.div_ceil(10);
        if self.entries.len() > target {
            let mut ages: Vec<(Instant, String)> = self
                .entries
                .iter()
                .map(|(id, e)| (e.at, id.clone()))
                .collect();
            ages.sort();
            for (_, id) in ages.into_iter().take(self.entries.len() - target) {
                self.entries.remove(&id);
            }
        }
    }
}

/// Severity as a number, for "did it rise".
pub fn rank(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Critical => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AlertState::{Firing, Resolved};
    use Severity::{Critical, Info, Warning};

    const HOUR: Duration = Duration::from_secs(3_600);

    fn deliver_if_due(
        dedup: &mut Dedup,
        id: &str,
        state: AlertState,
        severity: Severity,
        now: Instant,
    ) -> Decision {
        let decision = dedup.decide(id, state, severity, now);
        if matches!(decision, Decision::Deliver(_)) {
            dedup.delivered(id, state, severity, now);
        }
        decision
    }

    #[test]
    fn first_firing_is_delivered_a_repeat_within_the_interval_is_not() {
        let mut dedup = Dedup::new(4 * HOUR, 100);
        let t0 = Instant::now();
        let mut at = |minutes: u64, state, severity| {
            deliver_if_due(
                &mut dedup,
                "loop/s1",
                state,
                severity,
                t0 + Duration::from_secs(60 * minutes),
            )
        };
        assert_eq!(at(0, Firing, Warning), Decision::Deliver(Reason::First));
        assert_eq!(
            at(1, Firing, Warning),
            Decision::Suppress(Suppression::Repeat)
        );
        assert_eq!(
            at(239, Firing, Info),
            Decision::Suppress(Suppression::Repeat),
            "a lower severity is no news either"
        );
        assert_eq!(
            at(240, Firing, Warning),
            Decision::Deliver(Reason::Reminder)
        );
        assert_eq!(
            at(241, Firing, Warning),
            Decision::Suppress(Suppression::Repeat),
            "the interval restarts at the reminder"
        );
    }

    #[test]
    fn an_escalation_is_delivered_at_once_and_raises_the_bar() {
        let mut dedup = Dedup::new(4 * HOUR, 100);
        let t0 = Instant::now();
        assert_eq!(
            deliver_if_due(&mut dedup, "a", Firing, Warning, t0),
            Decision::Deliver(Reason::First)
        );
        assert_eq!(
            deliver_if_due(&mut dedup, "a", Firing, Critical, t0 + HOUR / 60),
            Decision::Deliver(Reason::Escalated)
        );
        assert_eq!(
            deliver_if_due(&mut dedup, "a", Firing, Critical, t0 + HOUR / 30),
            Decision::Suppress(Suppression::Repeat)
        );
    }

    #[test]
    fn resolved_is_delivered_once_and_a_new_firing_after_it_again() {
        let mut dedup = Dedup::new(4 * HOUR, 100);
        let t0 = Instant::now();
        deliver_if_due(&mut dedup, "a", Firing, Warning, t0);
        assert!(dedup.is_firing("a"));
        assert_eq!(
            deliver_if_due(&mut dedup, "a", Resolved, Warning, t0 + HOUR),
            Decision::Deliver(Reason::Resolved)
        );
        assert!(!dedup.is_firing("a"));
        assert_eq!(
            deliver_if_due(&mut dedup, "a", Resolved, Warning, t0 + HOUR),
            Decision::Suppress(Suppression::AlreadyResolved)
        );
        assert_eq!(
            deliver_if_due(&mut dedup, "a", Firing, Info, t0 + HOUR),
            Decision::Deliver(Reason::Refired)
        );
    }

    #[test]
    fn a_resolve_for_an_unknown_alert_is_delivered() {
        let dedup = Dedup::new(4 * HOUR, 100);
        assert_eq!(
            dedup.decide("from-before-a-restart", Resolved, Info, Instant::now()),
            Decision::Deliver(Reason::Resolved)
        );
    }

    #[test]
    fn only_deliveries_are_remembered() {
        let dedup = Dedup::new(4 * HOUR, 100);
        let t0 = Instant::now();
        // Decided but dead-lettered: nothing recorded, so the next firing is tried again.
        assert_eq!(
            dedup.decide("a", Firing, Warning, t0),
            Decision::Deliver(Reason::First)
        );
        assert_eq!(
            dedup.decide("a", Firing, Warning, t0),
            Decision::Deliver(Reason::First)
        );
        assert!(dedup.is_empty());
    }

    #[test]
    fn a_full_table_forgets_expired_entries_then_the_oldest() {
        let mut dedup = Dedup::new(HOUR, 10);
        let t0 = Instant::now();
        for i in 0..5 {
            dedup.delivered(&format!("old-{i}"), Firing, Info, t0);
        }
        for i in 0..5 {
            dedup.delivered(
                &format!("new-{i}"),
                Firing,
                Info,
                t0 + 2 * HOUR + Duration::from_secs(i),
            );
        }
        assert_eq!(dedup.len(), 10);
        let later = t0 + 2 * HOUR + Duration::from_secs(10);
        dedup.delivered("newest", Firing, Info, later);
        assert_eq!(dedup.len(), 6, "the five expired ones went");
        assert!(dedup.is_firing("new-0") && dedup.is_firing("newest"));

        for i in 0..4 {
            dedup.delivered(&format!("more-{i}"), Firing, Info, later);
        }
        dedup.delivered("one-too-many", Firing, Info, later);
        assert_eq!(dedup.len(), 10, "down to 9, plus the new one");
        assert!(!dedup.is_firing("new-0"), "the oldest went first");
        assert!(dedup.is_firing("new-1") && dedup.is_firing("one-too-many"));
    }
}
