//! The Kafka side: read alerts (consumer group, `read_committed`), hand each to every
//! destination's queue, and commit a partition's offset only past alerts that every
//! destination has finished — delivered, suppressed, filtered or dead-lettered.
//!
//! Destinations finish alerts out of order (a slow one lags, a fast one does not), so each
//! partition keeps the offsets it has read and not finished ([`Offsets`]); its commit position
//! is the first unfinished offset, or one past the last read when all are finished. Offsets
//! are committed every 250 ms when they moved, and once more, synchronously, at shutdown.
//!
//! Delivery is at least once: an alert delivered but not yet committed when the process
//! stops (or loses its partitions in a rebalance) is read again and — unless this process's
//! dedup remembers it — delivered again.
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tally_contract::kafka::RebalanceFlag;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tally_contract::decode;
use tally_contract::records::Alert;
use tally_contract::topics::Topic;
use tokio::sync::mpsc;

use crate::dead_letter::{DeadLetters, Record};
use crate::stats::Stats;
use crate::worker::Job;
use crate::{NotifyConfig, NotifyError, Stop};
use tally_contract::clock::now_micros;

/// How often moved offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(250);

/// Handed to each destination with an alert, and back when it is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub partition: i32,
    pub offset: i64,
    /// The assignment it was read in; tickets of an earlier one are ignored.
    pub epoch: u64,
}

/// What each partition has read and not finished: pure bookkeeping, no Kafka.
#[derive(Debug, Default)]
pub struct Offsets {
    epoch: u64,
    partitions: BTreeMap<i32, PartitionOffsets>,
}

#[derive(Debug)]
struct PartitionOffsets {
    /// Offset → destinations still working on it.
    pending: BTreeMap<i64, usize>,
    /// One past the last offset read.
    next: i64,
    /// The last position handed out for committing.
    committed: i64,
}

impl PartitionOffsets {
    fn position(&self) -> i64 {
        self.pending.keys().next().copied().unwrap_or(self.next)
    }
}

impl Offsets {
    /// Notes a record read at `offset`, which `destinations` destinations must finish (none:
    /// it is finished already).
    pub fn read(&mut self, partition: i32, offset: i64, destinations: usize) -> Ticket {
        let entry = self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionOffsets {
                pending: BTreeMap::new(),
                next: offset,
                committed: offset,
            });
        entry.next = entry.next.max(offset + 1);
        if destinations > 0 {
            entry.pending.insert(offset, destinations);
        }
        Ticket {
            partition,
            offset,
            epoch: self.epoch,
        }
    }

    /// One destination finished the ticket's record. False for a ticket of an earlier
    /// assignment, which changes nothing.
    pub fn finish(&mut self, ticket: Ticket) -> bool {
        if ticket.epoch != self.epoch {
            return false;
        }
        let Some(partition) = self.partitions.get_mut(&ticket.partition) else {
            return false;
        };
        match partition.pending.get_mut(&ticket.offset) {
            Some(1) => {
                partition.pending.remove(&ticket.offset);
                true
            }
            Some(remaining) => {
                *remaining -= 1;
                true
            }
            None => false,
        }
    }

    /// Positions that moved since they were last handed out, as (partition, offset to commit).
    pub fn to_commit(&mut self) -> Vec<(i32, i64)> {
        let mut moved = Vec::new();
        for (partition, offsets) in &mut self.partitions {
            let position = offsets.position();
            if position > offsets.committed {
                offsets.committed = position;
                moved.push((*partition, position));
            }
        }
        moved
    }

    /// Every partition's position, moved or not.
    pub fn positions(&self) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .map(|(partition, offsets)| (*partition, offsets.position()))
            .collect()
    }

    /// Forgets everything (after a rebalance, every partition restarts from its committed
    /// offset); tickets handed out before are ignored from now on.
    pub fn reset(&mut self) {
        self.epoch += 1;
        self.partitions.clear();
    }

    /// Records read and not finished.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.pending.len()).sum()
    }
}

/// The alert consumer and what it hands out.
pub struct AlertConsumer {
    consumer: StreamConsumer<RebalanceFlag>,
    topic: String,
    queues: Vec<mpsc::Sender<Job>>,
    done: mpsc::UnboundedReceiver<Ticket>,
    offsets: Offsets,
    dead_letters: DeadLetters,
    stats: Arc<Stats>,
    max_age_micros: Option<i64>,
}

impl AlertConsumer {
    /// Joins the group and subscribes to the alert topic. `queues` are the destinations'
    /// (in configuration order); their workers send tickets back on `done`.
    pub fn new(
        config: &NotifyConfig,
        queues: Vec<mpsc::Sender<Job>>,
        done: mpsc::UnboundedReceiver<Ticket>,
        dead_letters: DeadLetters,
        stats: Arc<Stats>,
    ) -> Result<AlertConsumer, NotifyError> {
        let topic = config.kafka.topic(Topic::Alerts);
        let consumer: StreamConsumer<RebalanceFlag> = config
            .kafka
            .client_config()
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", config.auto_offset_reset.as_str())
            .set("isolation.level", "read_committed")
            .create_with_context(RebalanceFlag::new(
                "alerts not finished by every destination will be read again",
            ))
            .map_err(|e| NotifyError::kafka("create consumer", e))?;
        consumer
            .subscribe(&[&topic])
            .map_err(|e| NotifyError::kafka("subscribe", e))?;
        Ok(AlertConsumer {
            consumer,
            topic,
            queues,
            done,
            offsets: Offsets::default(),
            dead_letters,
            stats,
            max_age_micros: (config.max_alert_age_secs > 0)
                .then(|| (config.max_alert_age_secs as i64).saturating_mul(1_000_000)),
        })
    }

    /// The topic it reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Reads and hands out alerts, and commits what is finished, until an error (a worker
    /// that died). Stopping is the caller's: it drops this future, then calls [`Self::finish`].
    pub async fn run(&mut self, stop: &Stop) -> Result<(), NotifyError> {
        let mut tick = tokio::time::interval(COMMIT_INTERVAL);
        loop {
            tokio::select! {
                Some(ticket) = self.done.recv() => {
                    self.offsets.finish(ticket);
                    self.note_in_flight();
                }
                message = self.consumer.recv() => {
                    let message = message.map(|m| m.detach());
                    self.note_rebalance();
                    match message {
                        Ok(message) => self.dispatch(message, stop).await?,
                        Err(error) => tracing::warn!(%error, "consumer error"),
                    }
                }
                _ = tick.tick() => {
                    self.note_rebalance();
                    let moved = self.offsets.to_commit();
                    self.commit(moved, CommitMode::Async);
                }
            }
        }
    }

    /// After the workers ended: takes their last tickets and commits every position,
    /// synchronously.
    pub async fn finish(&mut self) {
        self.note_rebalance();
        while let Some(ticket) = self.done.recv().await {
            self.offsets.finish(ticket);
        }
        self.note_in_flight();
        let positions = self.offsets.positions();
        self.commit(positions, CommitMode::Sync);
    }

    /// Hands one record to every destination (or dead-letters it if it is no alert).
    async fn dispatch(&mut self, message: OwnedMessage, stop: &Stop) -> Result<(), NotifyError> {
        self.stats.consumed.fetch_add(1, Ordering::Relaxed);
        let record = Record {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
        };
        let mut wait = Duration::from_secs(1);
        let decoded = loop {
            match decode::<Alert>(&record.payload) {
                // The schema registry did not answer: the alert waits, never dead-lettered.
                Err(error) if error.is_transient() && !stop.is_set() => {
                    tracing::warn!(%error, retry_in = ?wait, "schema registry unavailable; holding the alert and retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                decoded => break decoded,
            }
        };
        let alert = match decoded {
            Ok(alert) => alert,
            Err(error) if error.is_transient() => return Err(error.into()),
            // A newer tally wrote it: stop before it rather than skip an alert.
            Err(error) if error.is_unknown_version() => {
                return Err(NotifyError::NewerRecord {
                    topic: record.topic,
                    partition: record.partition,
                    offset: record.offset,
                    reason: error.to_string(),
                })
            }
            Err(error) => return self.undecodable(record, error.to_string(), stop).await,
        };
        if self.is_stale(&alert) {
            self.stats.stale.fetch_add(1, Ordering::Relaxed);
            self.offsets.read(record.partition, record.offset, 0);
            return Ok(());
        }
        let ticket = self
            .offsets
            .read(record.partition, record.offset, self.queues.len());
        self.note_in_flight();
        let job = Job {
            alert: Arc::new(alert),
            record: Arc::new(record),
            ticket,
        };
        for queue in &self.queues {
            // Waits only when this destination's queue is full: memory stays bounded.
            if queue.send(job.clone()).await.is_err() && !stop.is_set() {
                return Err(NotifyError::Panicked("a destination's worker".into()));
            }
        }
        Ok(())
    }

    async fn undecodable(
        &mut self,
        record: Record,
        error: String,
        stop: &Stop,
    ) -> Result<(), NotifyError> {
        tracing::warn!(partition = record.partition, offset = record.offset, %error, "not an alert; writing a dead letter");
        if self
            .dead_letters
            .send(&record, "decode", error, stop)
            .await
            .is_ok()
        {
            self.stats.undecodable.fetch_add(1, Ordering::Relaxed);
            self.offsets.read(record.partition, record.offset, 0);
        }
        Ok(())
    }

    /// After a rebalance every partition restarts from its committed offset: forget the
    /// rest, and never commit for a partition that may now be another consumer's.
    fn note_rebalance(&mut self) {
        if self.consumer.context().take() {
            self.offsets.reset();
            self.note_in_flight();
        }
    }

    fn is_stale(&self, alert: &Alert) -> bool {
        self.max_age_micros
            .is_some_and(|max| now_micros().saturating_sub(alert.emitted_at) > max)
    }

    fn note_in_flight(&self) {
        self.stats
            .in_flight
            .store(self.offsets.in_flight() as u64, Ordering::Relaxed);
    }

    fn commit(&self, positions: Vec<(i32, i64)>, mode: CommitMode) {
        if positions.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in &positions {
            if let Err(error) =
                list.add_partition_offset(&self.topic, *partition, Offset::Offset(*offset))
            {
                tracing::warn!(%error, partition, "cannot list an offset to commit");
            }
        }
        match self.consumer.commit(&list, mode) {
            Ok(()) => {
                self.stats.commits.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(?positions, "offsets committed");
            }
            // Harmless: the alerts are read again and dedup or the receivers absorb them.
            Err(error) => tracing::warn!(%error, ?positions, "offset commit failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_commits_up_to_its_first_unfinished_offset() {
        let mut offsets = Offsets::default();
        let a = offsets.read(0, 10, 2);
        let b = offsets.read(0, 11, 2);
        let c = offsets.read(0, 13, 2); // 12 was a transaction marker: offsets have gaps
        assert_eq!(offsets.to_commit(), [], "nothing finished yet");
        assert_eq!(offsets.in_flight(), 3);

        assert!(offsets.finish(b) && offsets.finish(b));
        assert!(offsets.finish(c));
        assert_eq!(offsets.to_commit(), [], "10 holds the partition back");
        assert!(offsets.finish(a));
        assert_eq!(offsets.to_commit(), [], "one destination is still on 10");
        assert!(offsets.finish(a));
        assert_eq!(offsets.to_commit(), [(0, 13)], "up to the unfinished 13");
        assert!(offsets.finish(c));
        assert_eq!(
            offsets.to_commit(),
            [(0, 14)],
            "all finished: one past the last read"
        );
        assert_eq!(offsets.to_commit(), [], "handed out once");
        assert_eq!(offsets.positions(), [(0, 14)]);
        assert_eq!(offsets.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent_and_finished_records_commit_at_once() {
        let mut offsets = Offsets::default();
        let slow = offsets.read(0, 5, 1);
        offsets.read(1, 7, 0); // stale or undecodable: finished when read
        assert_eq!(offsets.to_commit(), [(1, 8)]);
        assert!(offsets.finish(slow));
        assert_eq!(offsets.to_commit(), [(0, 6)]);
    }

    #[test]
    fn tickets_from_before_a_rebalance_are_ignored() {
        let mut offsets = Offsets::default();
        let old = offsets.read(0, 5, 1);
        offsets.reset();
        let new = offsets.read(0, 5, 1);
        assert!(!offsets.finish(old), "an earlier assignment's ticket");
        assert_eq!(offsets.to_commit(), []);
        assert!(offsets.finish(new));
        assert_eq!(offsets.to_commit(), [(0, 6)]);
        assert!(!offsets.finish(new), "a ticket counts once");
    }
}
