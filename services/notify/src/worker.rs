//! One destination's task: its own queue of alerts, taken in the order they were read →
//! filter → dedup → deliver with retries → dead letter if that failed → report the alert
//! finished for this destination. A destination that is down only ever holds up its own
//! queue: the others have theirs.
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tally_contract::records::{Alert, AlertState};
use tokio::sync::mpsc;

use crate::consumer::Ticket;
use crate::dead_letter::{DeadLetters, Record};
use crate::dedup::{Decision, Dedup};
use crate::deliver::{Delivery, Destination};
use crate::payload;
use crate::retry::RetryPolicy;
use crate::stats::{DestinationStats, Stats};
use crate::Stop;
use tally_contract::clock::now_micros;

/// One alert for one destination.
#[derive(Debug, Clone)]
pub struct Job {
    /// The decoded alert.
    pub alert: Arc<Alert>,
    /// The record it came from, for a dead letter.
    pub record: Arc<Record>,
    /// Handed back when this destination is done with it.
    pub ticket: Ticket,
}

/// Whether a job is done with (delivered, suppressed, filtered or dead-lettered).
enum Outcome {
    Finished,
    /// Interrupted by the stop: the alert is read again after a restart.
    Unfinished,
}

/// The task of one destination.
pub struct Worker {
    pub destination: Destination,
    pub dedup: Dedup,
    pub policy: RetryPolicy,
    pub dead_letters: DeadLetters,
    pub stats: Arc<Stats>,
    /// The destination's position in the configuration (and in `stats.destinations`).
    pub index: usize,
    pub stop: Stop,
}

impl Worker {
    /// Works through the queue until it closes or the notifier stops; each finished job's
    /// ticket goes back on `done`.
    pub async fn run(mut self, mut jobs: mpsc::Receiver<Job>, done: mpsc::UnboundedSender<Ticket>) {
        loop {
            let job = tokio::select! {
                biased;
                _ = self.stop.wait() => break,
                job = jobs.recv() => job,
            };
            let Some(job) = job else { break };
            match self.handle(&job).await {
                Outcome::Finished => {
                    let _ = done.send(job.ticket);
                }
                Outcome::Unfinished => break,
            }
        }
    }

    fn stats(&self) -> &DestinationStats {
        &self.stats.destinations[self.index]
    }

    async fn handle(&mut self, job: &Job) -> Outcome {
        let alert = &job.alert;
        // A resolve goes wherever its firing went, even if it carries a lower severity.
        let resolves_here =
            alert.state == AlertState::Resolved && self.dedup.is_firing(&alert.alert_id);
        if !resolves_here && !self.destination.wants(alert) {
            self.stats().filtered.fetch_add(1, Ordering::Relaxed);
            return Outcome::Finished;
        }
        let reason = match self.dedup.decide(
            &alert.alert_id,
            alert.state,
            alert.severity,
            Instant::now(),
        ) {
            Decision::Suppress(why) => {
                tracing::debug!(destination = %self.destination.name(), alert_id = %alert.alert_id, ?why, "suppressed");
                self.stats().suppressed.fetch_add(1, Ordering::Relaxed);
                return Outcome::Finished;
            }
            Decision::Deliver(reason) => reason,
        };
        let body = payload::body(
            self.destination.kind(),
            alert,
            now_micros(),
            self.destination.config().hold(),
        );
        let delivery = self
            .destination
            .deliver(
                &body,
                &self.policy,
                &self.stats.destinations[self.index],
                &self.stop,
            )
            .await;
        match delivery {
            Delivery::Delivered { attempts } => {
                self.dedup
                    .delivered(&alert.alert_id, alert.state, alert.severity, Instant::now());
                self.stats().delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(destination = %self.destination.name(), alert_id = %alert.alert_id, ?reason, attempts, "delivered");
                Outcome::Finished
            }
            Delivery::Failed { reason } => self.dead_letter(job, reason).await,
            Delivery::Stopped => Outcome::Unfinished,
        }
    }

    async fn dead_letter(&self, job: &Job, reason: String) -> Outcome {
        tracing::warn!(
            alert_id = %job.alert.alert_id,
            partition = job.record.partition,
            offset = job.record.offset,
            %reason,
            "delivery failed; writing a dead letter"
        );
        match self
            .dead_letters
            .send(&job.record, "delivery", reason, &self.stop)
            .await
        {
            Ok(()) => {
                self.stats().dead_letters.fetch_add(1, Ordering::Relaxed);
                Outcome::Finished
            }
            Err(_) => Outcome::Unfinished,
        }
    }
}
