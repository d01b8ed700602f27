//! The ingest service's counters, served as Prometheus text on `GET /metrics`.
//!
//! Updated once per request (never per event above a counter add); labels are fixed sets
//! (endpoint, status code, record kind, rejection reason), so cardinality stays bounded.
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Why records or requests were refused, as the `reason` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejection {
    Invalid,
    Forbidden,
    Malformed,
    Unauthorized,
    RateLimited,
    TooLarge,
    KafkaUnavailable,
    /// More requests at once than `http.max_concurrent_requests`: 503.
    Overloaded,
    /// Not answered within `http.request_timeout_ms` (a slow body, say): 408.
    TimedOut,
}

impl Rejection {
    fn label(self) -> &'static str {
        match self {
            Rejection::Invalid => "invalid",
            Rejection::Forbidden => "forbidden",
            Rejection::Malformed => "malformed",
            Rejection::Unauthorized => "unauthorized",
            Rejection::RateLimited => "rate_limited",
            Rejection::TooLarge => "too_large",
            Rejection::KafkaUnavailable => "kafka_unavailable",
            Rejection::Overloaded => "overloaded",
            Rejection::TimedOut => "timed_out",
        }
    }
}

/// All counters of one ingest service.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    accepted: Mutex<BTreeMap<&'static str, u64>>,
    rejected: Mutex<BTreeMap<Rejection, u64>>,
    duplicates: AtomicU64,
    spans_skipped: AtomicU64,
    connections_refused: AtomicU64,
    produce_latency: tally_contract::metrics::Histogram,
}

impl Metrics {
    /// Counts a request answered with `status`.
    pub fn request(&self, endpoint: &'static str, status: u16) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((endpoint, status))
            .or_default() += 1;
    }

    /// Counts records of a kind acknowledged by Kafka.
    pub fn accepted(&self, kind: &'static str, count: usize) {
        if count > 0 {
            *self
                .accepted
                .lock()
                .expect("metrics lock")
                .entry(kind)
                .or_default() += count as u64;
        }
    }

    /// Counts refused records (or whole requests, as one).
    pub fn rejected(&self, reason: Rejection, count: usize) {
        if count > 0 {
            *self
                .rejected
                .lock()
                .expect("metrics lock")
                .entry(reason)
                .or_default() += count as u64;
        }
    }

    /// Counts records dropped as duplicates.
    pub fn duplicates(&self, count: usize) {
        self.duplicates.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Counts OTLP spans without GenAI usage.
    pub fn spans_skipped(&self, count: usize) {
        self.spans_skipped
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Counts a connection refused for `http.max_connections`.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Observes how long Kafka took to acknowledge a request's records.
    pub fn produce_latency(&self, elapsed: Duration) {
        self.produce_latency.observe(elapsed);
    }

    /// Prometheus text exposition of every counter, with the producer's queue depth.
    pub fn render(&self, queue_depth: usize, dedup_entries: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tally_ingest_requests_total HTTP requests by endpoint and status code."
        );
        let _ = writeln!(out, "# TYPE tally_ingest_requests_total counter");
        for ((endpoint, status), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "tally_ingest_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tally_ingest_events_accepted_total Records acknowledged by Kafka, by kind."
        );
        let _ = writeln!(out, "# TYPE tally_ingest_events_accepted_total counter");
        for (kind, n) in self.accepted.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "tally_ingest_events_accepted_total{{kind=\"{kind}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tally_ingest_events_rejected_total Records or requests refused, by reason."
        );
        let _ = writeln!(out, "# TYPE tally_ingest_events_rejected_total counter");
        for (reason, n) in self.rejected.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "tally_ingest_events_rejected_total{{reason=\"{}\"}} {n}",
                reason.label()
            );
        }
        let _ = writeln!(
            out,
            "# HELP tally_ingest_events_duplicate_total Records dropped as already accepted."
        );
        let _ = writeln!(out, "# TYPE tally_ingest_events_duplicate_total counter");
        let _ = writeln!(
            out,
            "tally_ingest_events_duplicate_total {}",
            self.duplicates.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tally_ingest_spans_skipped_total OTLP spans without GenAI usage."
        );
        let _ = writeln!(out, "# TYPE tally_ingest_spans_skipped_total counter");
        let _ = writeln!(
            out,
            "tally_ingest_spans_skipped_total {}",
            self.spans_skipped.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP tally_ingest_connections_refused_total Connections refused over http.max_connections."
        );
        let _ = writeln!(out, "# TYPE tally_ingest_connections_refused_total counter");
        let _ = writeln!(
            out,
            "tally_ingest_connections_refused_total {}",
            self.connections_refused.load(Ordering::Relaxed)
        );
        out.push_str(&self.produce_latency.render(
            "tally_ingest_produce_latency_seconds",
            "Time for Kafka to acknowledge a request's records.",
        ));
        let _ = writeln!(
            out,
            "# HELP tally_ingest_producer_queue_depth Records waiting for the broker."
        );
        let _ = writeln!(out, "# TYPE tally_ingest_producer_queue_depth gauge");
        let _ = writeln!(out, "tally_ingest_producer_queue_depth {queue_depth}");
        let _ = writeln!(
            out,
            "# HELP tally_ingest_dedup_entries Event ids remembered for deduplication."
        );
        let _ = writeln!(out, "# TYPE tally_ingest_dedup_entries gauge");
        let _ = writeln!(out, "tally_ingest_dedup_entries {dedup_entries}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let metrics = Metrics::default();
        metrics.request("llm_calls", 202);
        metrics.request("llm_calls", 202);
        metrics.accepted("llm_call", 5);
        metrics.rejected(Rejection::Invalid, 2);
        metrics.duplicates(1);
        metrics.produce_latency(Duration::from_millis(3));
        let text = metrics.render(7, 9);
        for line in [
            "tally_ingest_requests_total{endpoint=\"llm_calls\",status=\"202\"} 2",
            "tally_ingest_events_accepted_total{kind=\"llm_call\"} 5",
            "tally_ingest_events_rejected_total{reason=\"invalid\"} 2",
            "tally_ingest_events_duplicate_total 1",
            "tally_ingest_produce_latency_seconds_bucket{le=\"0.0025\"} 0",
            "tally_ingest_produce_latency_seconds_bucket{le=\"0.005\"} 1",
            "tally_ingest_produce_latency_seconds_count 1",
            "tally_ingest_producer_queue_depth 7",
            "tally_ingest_dedup_entries 9",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
