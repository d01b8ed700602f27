//! Consume → transform → produce, exactly once, with Kafka transactions: the runner every
//! processor stage shares. A stage ([`Stage`]) only says what it reads and what one batch
//! becomes; this module owns the consumer, the transactional producer and the failure rules.
//!
//! One cycle: read up to `max_batch` records (or for `commit_interval_ms`), begin a
//! transaction, let the stage produce its outputs, add the consumed offsets to the transaction
//! (`send_offsets_to_transaction`, with the group's metadata, so a zombie is fenced), commit.
//! Readers use `isolation.level=read_committed`, so they see each output exactly once whatever
//! crashes in between: an aborted or unfinished transaction is never visible, and its input is
//! read again from the committed offsets.
//!
//! Any failure aborts the transaction and starts the session again from the committed offsets
//! (new consumer, same transactional id, which also fences a previous life of this instance),
//! and the stage restores its state. A rebalance drops the batch being read: every assigned
//! partition restarts from its committed offset, and the stage restores its state for them.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_contract::clock::now_micros;
use tally_contract::kafka::RebalanceFlag;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tally_contract::records::{DeadLetter, Micros};
use tally_contract::topics::Topic;
use tally_contract::wire::Framing;
use tally_contract::{encode_framed, AvroRecord};

use crate::{ProcessorConfig, ProcessorError};

const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters of the processor's stages, for logs and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub consumed: AtomicU64,
    pub enriched: AtomicU64,
    pub unpriced: AtomicU64,
    pub dead_letters: AtomicU64,
    pub windows_emitted: AtomicU64,
    pub alerts: AtomicU64,
    pub loop_signals: AtomicU64,
    pub late_events: AtomicU64,
    /// Calls later than [`crate::budgets::PERIOD_LATENESS`] after their budget period ended.
    pub late_for_budgets: AtomicU64,
    /// Calls dropped because their event id was seen before (within the dedup window).
    pub duplicates: AtomicU64,
    /// Event ids forgotten early because a partition hit `dedup.max_ids_per_partition`.
    pub dedup_forgotten: AtomicU64,
    pub transactions: AtomicU64,
    pub restarts: AtomicU64,
    /// Seconds from a transaction's begin to its commit, every stage.
    pub transaction_seconds: tally_contract::metrics::Histogram,
    /// The business metrics of the committed state ([`crate::business`]).
    pub business: std::sync::Mutex<crate::business::Snapshot>,
}

impl Stats {
    /// Prometheus text exposition of the counters.
    pub fn render(&self) -> String {
        let counters: [(&str, &str, &AtomicU64); 13] = [
            (
                "consumed",
                "Records consumed and committed, both stages.",
                &self.consumed,
            ),
            ("enriched", "Calls priced and carbon-rated.", &self.enriched),
            (
                "unpriced",
                "Calls whose model matched no catalogue entry (cost unknown, not 0).",
                &self.unpriced,
            ),
            (
                "dead_letters",
                "Records sent to the dead-letter topic.",
                &self.dead_letters,
            ),
            (
                "windows_emitted",
                "Spend window records emitted, revisions included.",
                &self.windows_emitted,
            ),
            (
                "alerts",
                "Budget, usage and loop alerts emitted.",
                &self.alerts,
            ),
            (
                "loop_signals",
                "Loop signal records emitted (open, update, resolved).",
                &self.loop_signals,
            ),
            (
                "late_events",
                "Calls later than the allowed lateness of a window (still enriched).",
                &self.late_events,
            ),
            (
                "late_for_budgets",
                "Calls that arrived more than 3 days after their budget period ended (in no budget).",
                &self.late_for_budgets,
            ),
            (
                "duplicates",
                "Calls dropped as repeats of an event id seen within the dedup window.",
                &self.duplicates,
            ),
            (
                "dedup_forgotten",
                "Event ids forgotten before the dedup window ended, at the per-partition cap.",
                &self.dedup_forgotten,
            ),
            (
                "transactions",
                "Transactions committed.",
                &self.transactions,
            ),
            (
                "restarts",
                "Stage sessions restarted after a failure.",
                &self.restarts,
            ),
        ];
        let mut text: String = counters
            .iter()
            .map(|(name, help, value)| {
                tally_contract::metrics::counter(
                    &format!("tally_processor_{name}_total"),
                    help,
                    value.load(Ordering::Relaxed),
                )
            })
            .collect();
        text.push_str(&self.transaction_seconds.render(
            "tally_processor_transaction_seconds",
            "Time from a transaction's begin to its commit (outputs, offsets, commit).",
        ));
        text.push_str(
            &self
                .business
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .render(),
        );
        text
    }
}

/// One processor stage: what it reads, and what a batch of records becomes.
pub trait Stage: Send {
    /// Name for logs and the transactional id (`<group>-<name>-<instance>`).
    fn name(&self) -> &'static str;

    /// The topic it consumes.
    fn input(&self, config: &ProcessorConfig) -> String;

    /// Called when the assignment is known (at start and after every rebalance), before any
    /// record of it is processed: restore the state of these partitions from `changelogs`.
    /// Stateless by default.
    fn on_assignment(
        &mut self,
        _partitions: &[i32],
        _config: &ProcessorConfig,
        _changelogs: &dyn Changelogs,
    ) -> Result<(), ProcessorError> {
        Ok(())
    }

    /// Produces the outputs of one batch inside the open transaction.
    fn process(
        &mut self,
        batch: &[OwnedMessage],
        out: &Outputs<'_>,
        stats: &Stats,
    ) -> Result<(), ProcessorError>;

    /// Whether the stage has time-driven outputs to produce while no record arrives (a read
    /// found nothing). Nothing by default.
    fn wants_idle(&self) -> bool {
        false
    }

    /// Produces time-driven outputs inside a transaction of their own (no input offsets).
    fn on_idle(&mut self, _out: &Outputs<'_>, _stats: &Stats) -> Result<(), ProcessorError> {
        Ok(())
    }

    /// Called after each commit and each assignment: shows the committed state in the
    /// business metrics (`stats.business`). Nothing by default.
    fn publish(&mut self, _config: &ProcessorConfig, _stats: &Stats) {}
}

/// Where a transaction's records go: Kafka's transactional producer, or `tally up`'s local
/// journal (which writes a transaction's records and its input position as one frame).
pub trait OutputSink {
    /// Sends raw bytes (`None` is a tombstone) to a topic, optionally to one partition.
    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
    ) -> Result<(), ProcessorError>;
}

impl OutputSink for BaseProducer {
    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
    ) -> Result<(), ProcessorError> {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).key(key);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        loop {
            match BaseProducer::send(self, record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.poll(Duration::from_millis(10));
                }
                Err((error, _)) => return Err(kafka("produce")(error)),
            }
        }
    }
}

/// What a changelog reader does with each record: (partition, offset, key, value).
pub type ApplyRecord<'a> =
    dyn FnMut(i32, i64, &[u8], Option<&[u8]>) -> Result<(), ProcessorError> + 'a;

/// Where a stateful stage's changelog topics live and are read back from.
pub trait Changelogs {
    /// Creates the changelog topic `name` if missing, with a partition per partition of the
    /// stage's `input` topic.
    fn ensure(
        &self,
        config: &ProcessorConfig,
        name: &str,
        input: &str,
    ) -> Result<(), ProcessorError>;
    /// Hands every committed record of these partitions of `topic`, oldest first, to `apply`
    /// as (partition, offset, key, value).
    fn read(
        &self,
        config: &ProcessorConfig,
        topic: &str,
        partitions: &[i32],
        apply: &mut ApplyRecord<'_>,
    ) -> Result<(), ProcessorError>;
}

/// Changelogs in Kafka ([`crate::changelog`]).
pub struct KafkaChangelogs;

impl Changelogs for KafkaChangelogs {
    fn ensure(
        &self,
        config: &ProcessorConfig,
        name: &str,
        input: &str,
    ) -> Result<(), ProcessorError> {
        crate::changelog::ensure(config, name, input)
    }

    fn read(
        &self,
        config: &ProcessorConfig,
        topic: &str,
        partitions: &[i32],
        apply: &mut ApplyRecord<'_>,
    ) -> Result<(), ProcessorError> {
        crate::changelog::read(config, topic, partitions, apply)
    }
}

/// The open transaction's producer, as a stage sees it.
pub struct Outputs<'a> {
    producer: &'a dyn OutputSink,
    config: &'a ProcessorConfig,
    now: Micros,
    framing: &'a Framing,
}

/// Single-object framing, for outputs that are not given another.
static SINGLE_OBJECT: Framing = Framing::SingleObject;

impl<'a> Outputs<'a> {
    /// Outputs going to `producer`, stamped `now` (epoch microseconds), single-object encoded.
    pub fn new(producer: &'a dyn OutputSink, config: &'a ProcessorConfig, now: Micros) -> Self {
        Outputs {
            producer,
            config,
            now,
            framing: &SINGLE_OBJECT,
        }
    }

    /// The same outputs, framed as `framing` says (the Confluent wire format).
    pub fn framed(self, framing: &'a Framing) -> Self {
        Outputs { framing, ..self }
    }
}

/// The topics the processor's stages write Avro records to (their schemas are registered
/// when it writes the Confluent wire format).
pub const WRITES: [Topic; 5] = [
    Topic::LlmCallsEnriched,
    Topic::SpendWindows,
    Topic::LoopSignals,
    Topic::Alerts,
    Topic::DeadLetter,
];

impl Outputs<'_> {
    /// The processor's settings.
    pub fn config(&self) -> &ProcessorConfig {
        self.config
    }

    /// Wall-clock time of this transaction, epoch microseconds.
    pub fn now(&self) -> Micros {
        self.now
    }

    /// Produces an Avro record to one of tally's topics.
    pub fn record<T: AvroRecord>(
        &self,
        topic: Topic,
        key: &str,
        record: &T,
    ) -> Result<(), ProcessorError> {
        let bytes = encode_framed(record, self.framing)?;
        self.raw(
            &self.config.kafka.topic(topic),
            None,
            key.as_bytes(),
            Some(&bytes),
        )
    }

    /// Sends a record that failed, with the reason, to the dead-letter topic.
    pub fn dead_letter(
        &self,
        message: &OwnedMessage,
        kind: &str,
        reason: String,
    ) -> Result<(), ProcessorError> {
        let letter = DeadLetter {
            original: message.payload().unwrap_or_default().to_vec(),
            key: message.key().map(<[u8]>::to_vec),
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            stage: "processor".into(),
            error_kind: kind.into(),
            error: reason,
            failed_at: self.now,
        };
        let bytes = encode_framed(&letter, self.framing)?;
        let topic = self.config.kafka.topic(Topic::DeadLetter);
        self.raw(
            &topic,
            None,
            message.key().unwrap_or_default(),
            Some(&bytes),
        )
    }

    /// Produces raw bytes (`None` is a tombstone) to any topic, optionally to one partition.
    pub fn raw(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
    ) -> Result<(), ProcessorError> {
        self.producer.send(topic, partition, key, payload)
    }
}

pub(crate) fn kafka(operation: &'static str) -> impl Fn(KafkaError) -> ProcessorError {
    move |e| ProcessorError::Kafka {
        operation,
        reason: e.to_string(),
    }
}

/// Runs a stage until `stop` is set, restarting a failed session from the committed offsets.
pub fn run_stage(
    config: &ProcessorConfig,
    stage: &mut dyn Stage,
    stop: &AtomicBool,
    stats: &Stats,
) -> Result<(), ProcessorError> {
    loop {
        match session(config, stage, stop, stats) {
            Ok(()) => return Ok(()),
            Err(error) if stop.load(Ordering::SeqCst) || !error.is_retryable() => {
                return Err(error)
            }
            Err(error) => {
                stats.restarts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(stage = stage.name(), %error, "session failed; starting again from the committed offsets");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn session(
    config: &ProcessorConfig,
    stage: &mut dyn Stage,
    stop: &AtomicBool,
    stats: &Stats,
) -> Result<(), ProcessorError> {
    let input = stage.input(config);
    let framing = tally_contract::registry::writer(&config.kafka, &WRITES)?;
    let group = format!("{}-{}", config.group_id, stage.name());
    let transactional_id = format!("{}-{}", group, config.instance_id);
    let consumer: BaseConsumer<RebalanceFlag> = config
        .kafka
        .client_config()
        .set("group.id", &group)
        .set(
            "client.id",
            format!("tally-{}-{}", stage.name(), config.instance_id),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (config.session_timeout_ms / 6).max(100).to_string(),
        )
        .create_with_context(RebalanceFlag::new("dropping the batch being read"))
        .map_err(kafka("create consumer"))?;
    consumer.subscribe(&[&input]).map_err(kafka("subscribe"))?;
    let producer: BaseProducer = config
        .kafka
        .client_config()
        .set("transactional.id", &transactional_id)
        .set(
            "transaction.timeout.ms",
            config.transaction_timeout_ms.to_string(),
        )
        .set("enable.idempotence", "true")
        .set("compression.type", &config.compression)
        .set("linger.ms", "5")
        .set("message.max.bytes", (64 * 1024 * 1024).to_string())
        .create()
        .map_err(kafka("create producer"))?;
    producer
        .init_transactions(TRANSACTION_TIMEOUT)
        .map_err(kafka("init transactions"))?;
    tracing::info!(stage = stage.name(), %transactional_id, %input, "stage running");
    let mut assigned: Option<Vec<i32>> = None;

    while !stop.load(Ordering::SeqCst) {
        let batch = read_batch(&consumer, config)?;
        let assignment = current_assignment(&consumer, &input)?;
        if assigned.as_ref() != Some(&assignment) {
            // Records of this batch were read under the new assignment only if no rebalance
            // happened while reading (read_batch drops the batch when one did).
            stage.on_assignment(&assignment, config, &KafkaChangelogs)?;
            stage.publish(config, stats);
            assigned = Some(assignment);
        }
        if batch.is_empty() {
            if stage.wants_idle() {
                idle_transaction(&producer, config, &framing, stage, stats)?;
            }
            continue;
        }
        let began = Instant::now();
        producer
            .begin_transaction()
            .map_err(kafka("begin transaction"))?;
        let outputs = Outputs::new(&producer, config, now_micros()).framed(&framing);
        let outcome = stage.process(&batch, &outputs, stats).and_then(|()| {
            let metadata = consumer
                .group_metadata()
                .ok_or_else(|| ProcessorError::Kafka {
                    operation: "group metadata",
                    reason: "the consumer has no group metadata".into(),
                })?;
            producer
                .send_offsets_to_transaction(&next_offsets(&batch)?, &metadata, TRANSACTION_TIMEOUT)
                .map_err(kafka("send offsets to transaction"))?;
            producer
                .commit_transaction(TRANSACTION_TIMEOUT)
                .map_err(kafka("commit transaction"))
        });
        if let Err(error) = outcome {
            let _ = producer.abort_transaction(TRANSACTION_TIMEOUT);
            return Err(error);
        }
        stats.transaction_seconds.observe(began.elapsed());
        stage.publish(config, stats);
        stats
            .consumed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.transactions.fetch_add(1, Ordering::Relaxed);
    }
    tracing::info!(
        stage = stage.name(),
        "stopped after the last committed transaction"
    );
    Ok(())
}

/// A transaction of outputs that no input caused (see [`Stage::on_idle`]).
fn idle_transaction(
    producer: &BaseProducer,
    config: &ProcessorConfig,
    framing: &Framing,
    stage: &mut dyn Stage,
    stats: &Stats,
) -> Result<(), ProcessorError> {
    let began = Instant::now();
    producer
        .begin_transaction()
        .map_err(kafka("begin transaction"))?;
    let outputs = Outputs::new(producer, config, now_micros()).framed(framing);
    let outcome = stage.on_idle(&outputs, stats).and_then(|()| {
        producer
            .commit_transaction(TRANSACTION_TIMEOUT)
            .map_err(kafka("commit transaction"))
    });
    if let Err(error) = outcome {
        let _ = producer.abort_transaction(TRANSACTION_TIMEOUT);
        return Err(error);
    }
    stats.transaction_seconds.observe(began.elapsed());
    stage.publish(config, stats);
    stats.transactions.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn current_assignment(
    consumer: &BaseConsumer<RebalanceFlag>,
    topic: &str,
) -> Result<Vec<i32>, ProcessorError> {
    let list = consumer.assignment().map_err(kafka("assignment"))?;
    let mut partitions: Vec<i32> = list
        .elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect();
    partitions.sort_unstable();
    Ok(partitions)
}

/// Reads until the batch is full or the commit interval is over; a rebalance drops it.
fn read_batch(
    consumer: &BaseConsumer<RebalanceFlag>,
    config: &ProcessorConfig,
) -> Result<Vec<OwnedMessage>, ProcessorError> {
    let deadline = Instant::now() + Duration::from_millis(config.commit_interval_ms);
    let mut batch = Vec::new();
    while batch.len() < config.max_batch {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let polled = consumer.poll(deadline - now);
        // A rebalance runs inside poll: what was read before it is dropped (its partitions
        // restart from their committed offsets), but a message this poll returns is already
        // from the new assignment, past its committed offset, and is kept.
        if consumer.context().take() {
            batch.clear();
        }
        match polled {
            Some(Ok(message)) => batch.push(message.detach()),
            Some(Err(error)) => tracing::warn!(%error, "consumer error"),
            None => {}
        }
    }
    Ok(batch)
}

/// The offset after the last message of each partition in the batch.
fn next_offsets(batch: &[OwnedMessage]) -> Result<TopicPartitionList, ProcessorError> {
    let mut last: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for message in batch {
        let entry = last
            .entry((message.topic().to_string(), message.partition()))
            .or_insert(message.offset());
        *entry = (*entry).max(message.offset());
    }
    let mut list = TopicPartitionList::new();
    for ((topic, partition), offset) in last {
        list.add_partition_offset(&topic, partition, Offset::Offset(offset + 1))
            .map_err(kafka("offsets"))?;
    }
    Ok(list)
}

/// Starts a stage on a thread of its own.
pub fn spawn(
    config: ProcessorConfig,
    mut stage: Box<dyn Stage>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
) -> std::thread::JoinHandle<Result<(), ProcessorError>> {
    std::thread::Builder::new()
        .name(stage.name().into())
        .spawn(move || run_stage(&config, stage.as_mut(), &stop, &stats))
        .expect("a thread can be spawned")
}
