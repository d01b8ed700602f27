//! The notifier's counters: for the progress log, the Prometheus endpoint and tests. Every
//! delivery attempt is counted by outcome, per destination.
use std::sync::atomic::{AtomicU64, Ordering};

use crate::NotifyConfig;

/// Counters of the whole notifier.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records read from the alert topic.
    pub consumed: AtomicU64,
    /// Alerts older than `max_alert_age_secs`, skipped.
    pub stale: AtomicU64,
    /// Records that did not decode as an `Alert` (dead-lettered).
    pub undecodable: AtomicU64,
    /// Alerts read but not yet finished by every destination.
    pub in_flight: AtomicU64,
    /// Offset commits requested.
    pub commits: AtomicU64,
    /// Per destination, in configuration order.
    pub destinations: Vec<DestinationStats>,
}

/// Counters of one destination.
#[derive(Debug, Default)]
pub struct DestinationStats {
    /// The destination's name.
    pub name: String,
    /// Alerts delivered (a 2xx answer).
    pub delivered: AtomicU64,
    /// Alerts not delivered because the destination already has them (dedup).
    pub suppressed: AtomicU64,
    /// Alerts not for this destination (severity or kind filter).
    pub filtered: AtomicU64,
    /// Attempts answered 2xx.
    pub attempts_ok: AtomicU64,
    /// Attempts that failed in a way worth retrying (408, 429, 5xx, timeout, connection).
    pub attempts_retryable: AtomicU64,
    /// Attempts answered with a final refusal (other 4xx, 3xx).
    pub attempts_rejected: AtomicU64,
    /// Attempts that were retried (a failed attempt followed by another).
    pub retries: AtomicU64,
    /// Alerts sent to the dead-letter topic after the retry budget or a refusal.
    pub dead_letters: AtomicU64,
}

impl Stats {
    /// Zeroed counters for the configured destinations.
    pub fn new(config: &NotifyConfig) -> Stats {
        Stats {
            destinations: config
                .destinations
                .iter()
                .map(|d| DestinationStats {
                    name: d.name.clone(),
                    ..DestinationStats::default()
                })
                .collect(),
            ..Stats::default()
        }
    }

    /// The counters of the destination called `name`.
    pub fn destination(&self, name: &str) -> Option<&DestinationStats> {
        self.destinations.iter().find(|d| d.name == name)
    }

    /// A counter summed over destinations.
    pub fn total(&self, counter: impl Fn(&DestinationStats) -> &AtomicU64) -> u64 {
        self.destinations
            .iter()
            .map(|d| counter(d).load(Ordering::Relaxed))
            .sum()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let totals = [
            ("consumed", "Alert records read.", &self.consumed),
            (
                "stale",
                "Alerts skipped as older than max_alert_age_secs.",
                &self.stale,
            ),
            (
                "undecodable",
                "Records that were not Alerts, dead-lettered.",
                &self.undecodable,
            ),
            ("commits", "Offset commits requested.", &self.commits),
        ];
        for (name, help, value) in totals {
            out.push_str(&tally_contract::metrics::counter(
                &format!("tally_notify_{name}_total"),
                help,
                value.load(Ordering::Relaxed),
            ));
        }
        out.push_str(&format!(
            "# HELP tally_notify_in_flight Alerts read and not yet finished by every destination.\n\
             # TYPE tally_notify_in_flight gauge\ntally_notify_in_flight {}\n",
            self.in_flight.load(Ordering::Relaxed)
        ));
        self.render_destinations(&mut out);
        out
    }

    fn render_destinations(&self, out: &mut String) {
        type Counter = fn(&DestinationStats) -> &AtomicU64;
        let families: [(&str, &str, Counter); 5] = [
            ("delivered", "Alerts delivered.", |d| &d.delivered),
            ("suppressed", "Alerts suppressed as duplicates.", |d| {
                &d.suppressed
            }),
            ("filtered", "Alerts not routed to the destination.", |d| {
                &d.filtered
            }),
            ("retries", "Failed attempts that were retried.", |d| {
                &d.retries
            }),
            (
                "dead_letters",
                "Alerts dead-lettered after the retry budget or a refusal.",
                |d| &d.dead_letters,
            ),
        ];
        for (name, help, counter) in families {
            let metric = format!("tally_notify_{name}_total");
            out.push_str(&format!(
                "# HELP {metric} {help}\n# TYPE {metric} counter\n"
            ));
            for d in &self.destinations {
                out.push_str(&format!(
                    "{metric}{{destination=\"{}\"}} {}\n",
                    d.name,
                    counter(d).load(Ordering::Relaxed)
                ));
            }
        }
        let metric = "tally_notify_attempts_total";
        out.push_str(&format!(
            "# HELP {metric} Delivery attempts by outcome.\n# TYPE {metric} counter\n"
        ));
        for d in &self.destinations {
            for (outcome, value) in [
                ("ok", &d.attempts_ok),
                ("retryable", &d.attempts_retryable),
                ("rejected", &d.attempts_rejected),
            ] {
                out.push_str(&format!(
                    "{metric}{{destination=\"{}\",outcome=\"{outcome}\"}} {}\n",
                    d.name,
                    value.load(Ordering::Relaxed)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DestinationConfig, DestinationKind};

    #[test]
    fn render_labels_each_destination() {
        let mut config = NotifyConfig::default();
        for name in ["ops", "pager"] {
            config.destinations.push(DestinationConfig {
                name: name.into(),
                kind: DestinationKind::Webhook,
                url: None,
                url_env: None,
                token_env: None,
                min_severity: tally_contract::records::Severity::Info,
                kinds: vec![],
                renotify_interval_secs: None,
                hold_secs: None,
            });
        }
        let stats = Stats::new(&config);
        stats.destinations[1].delivered.store(3, Ordering::Relaxed);
        stats.destinations[0]
            .attempts_retryable
            .store(2, Ordering::Relaxed);
        let text = stats.render();
        assert!(text.contains("tally_notify_delivered_total{destination=\"pager\"} 3\n"));
        assert!(text.contains(
            "tally_notify_attempts_total{destination=\"ops\",outcome=\"retryable\"} 2\n"
        ));
        assert!(text.contains("# TYPE tally_notify_in_flight gauge\ntally_notify_in_flight 0\n"));
        assert_eq!(stats.total(|d| &d.delivered), 3);
    }
}
