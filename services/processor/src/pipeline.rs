//! Consume → enrich → produce, exactly once, with Kafka transactions.
//!
//! One cycle: read up to `max_batch` `LlmCall`s (or for `commit_interval_ms`), begin a
//! transaction, produce one `EnrichedLlmCall` per call to `tally.llm_calls_enriched.v1` (or a
//! `DeadLetter` with the reason to `tally.dead_letter.v1`), add the consumed offsets to the
//! transaction (`send_offsets_to_transaction`, with the group's metadata so a zombie is
//! fenced), commit. Readers use `isolation.level=read_committed`, so they see each record
//! exactly once whatever crashes in between: an aborted or unfinished transaction is never
//! visible, and its input is read again from the committed offsets.
//!
//! Any failure aborts the transaction and starts the session again from the committed
//! offsets (new consumer, same transactional id, which also fences a previous life of this
//! instance). A rebalance drops the batch being read: the partitions restart from their
//! committed offsets wherever they are assigned. Enriched calls are keyed `tenant/team`, so a
//! team's calls (and each of its sessions, in order) are on one partition for the stages after.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tally_contract::records::{DeadLetter, LlmCall, Micros};
use tally_contract::topics::Topic;
use tally_contract::{decode, encode};

use crate::enrich::Enricher;
use crate::{ProcessorConfig, ProcessorError};

const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Counters of the enrich stage, for logs and tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub consumed: AtomicU64,
    pub enriched: AtomicU64,
    pub unpriced: AtomicU64,
    pub dead_letters: AtomicU64,
    pub transactions: AtomicU64,
    pub restarts: AtomicU64,
}

/// Notes that a rebalance happened while a batch was being read.
#[derive(Default)]
struct RebalanceFlag {
    happened: AtomicBool,
}

impl ClientContext for RebalanceFlag {}

impl ConsumerContext for RebalanceFlag {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        tracing::info!(?rebalance, "rebalance: dropping the batch being read");
        self.happened.store(true, Ordering::SeqCst);
    }
}

fn kafka(operation: &'static str) -> impl Fn(KafkaError) -> ProcessorError {
    move |e| ProcessorError::Kafka {
        operation,
        reason: e.to_string(),
    }
}

/// Runs the enrich stage until `stop` is set, restarting a failed session from the committed
/// offsets.
pub fn run_enrich_stage(
    config: &ProcessorConfig,
    enricher: &Enricher,
    stop: &AtomicBool,
    stats: &Stats,
) -> Result<(), ProcessorError> {
    loop {
        match enrich_session(config, enricher, stop, stats) {
            Ok(()) => return Ok(()),
            Err(error) if stop.load(Ordering::SeqCst) => return Err(error),
            Err(error) => {
                stats.restarts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "enrich session failed; starting again from the committed offsets");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn enrich_session(
    config: &ProcessorConfig,
    enricher: &Enricher,
    stop: &AtomicBool,
    stats: &Stats,
) -> Result<(), ProcessorError> {
    let input = config.kafka.topic(Topic::LlmCalls);
    let output = config.kafka.topic(Topic::LlmCallsEnriched);
    let dead_letter = config.kafka.topic(Topic::DeadLetter);
    let consumer: BaseConsumer<RebalanceFlag> = config
        .kafka
        .client_config()
        .set("group.id", &config.group_id)
        .set(
            "client.id",
            format!("tally-processor-{}", config.instance_id),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            (config.session_timeout_ms / 6).max(100).to_string(),
        )
        .create_with_context(RebalanceFlag::default())
        .map_err(kafka("create consumer"))?;
    consumer.subscribe(&[&input]).map_err(kafka("subscribe"))?;
    let producer: BaseProducer = config
        .kafka
        .client_config()
        .set("transactional.id", config.transactional_id())
        .set(
            "transaction.timeout.ms",
            config.transaction_timeout_ms.to_string(),
        )
        .set("enable.idempotence", "true")
        .set("compression.type", "zstd")
        .set("linger.ms", "5")
        .create()
        .map_err(kafka("create producer"))?;
    producer
        .init_transactions(TRANSACTION_TIMEOUT)
        .map_err(kafka("init transactions"))?;
    tracing::info!(transactional_id = %config.transactional_id(), %input, %output, "enrich stage running");

    while !stop.load(Ordering::SeqCst) {
        let batch = read_batch(&consumer, config)?;
        if batch.is_empty() {
            continue;
        }
        producer
            .begin_transaction()
            .map_err(kafka("begin transaction"))?;
        let outcome = produce_batch(&producer, enricher, &batch, &output, &dead_letter, stats)
            .and_then(|()| {
                let metadata = consumer
                    .group_metadata()
                    .ok_or_else(|| ProcessorError::Kafka {
                        operation: "group metadata",
                        reason: "the consumer has no group metadata".into(),
                    })?;
                producer
                    .send_offsets_to_transaction(
                        &next_offsets(&batch)?,
                        &metadata,
                        TRANSACTION_TIMEOUT,
                    )
                    .map_err(kafka("send offsets to transaction"))?;
                producer
                    .commit_transaction(TRANSACTION_TIMEOUT)
                    .map_err(kafka("commit transaction"))
            });
        if let Err(error) = outcome {
            let _ = producer.abort_transaction(TRANSACTION_TIMEOUT);
            return Err(error);
        }
        stats
            .consumed
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        stats.transactions.fetch_add(1, Ordering::Relaxed);
    }
    tracing::info!("enrich stage stopped after its last committed transaction");
    Ok(())
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
        match consumer.poll(deadline - now) {
            Some(Ok(message)) => batch.push(message.detach()),
            Some(Err(error)) => tracing::warn!(%error, "consumer error"),
            None => {}
        }
        if consumer.context().happened.swap(false, Ordering::SeqCst) {
            batch.clear();
        }
    }
    Ok(batch)
}

fn produce_batch(
    producer: &BaseProducer,
    enricher: &Enricher,
    batch: &[OwnedMessage],
    output: &str,
    dead_letter: &str,
    stats: &Stats,
) -> Result<(), ProcessorError> {
    let now = now_micros();
    for message in batch {
        let payload = message.payload().unwrap_or_default();
        let enriched = decode::<LlmCall>(payload)
            .map_err(|e| ("decode", e.to_string()))
            .and_then(|call| enricher.enrich(call, now).map_err(|e| ("invalid", e.0)));
        match enriched {
            Ok(enriched) => {
                let key = format!("{}/{}", enriched.call.tenant, enriched.call.team);
                let bytes = encode(&enriched).map_err(ProcessorError::Contract)?;
                send(producer, output, key.as_bytes(), &bytes)?;
                stats.enriched.fetch_add(1, Ordering::Relaxed);
                if enriched.unpriced {
                    stats.unpriced.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(model = %enriched.call.model, "unpriced call");
                }
            }
            Err((kind, reason)) => {
                let letter = DeadLetter {
                    original: payload.to_vec(),
                    key: message.key().map(<[u8]>::to_vec),
                    topic: message.topic().to_string(),
                    partition: message.partition(),
                    offset: message.offset(),
                    stage: "processor".into(),
                    error_kind: kind.into(),
                    error: reason,
                    failed_at: now,
                };
                let bytes = encode(&letter).map_err(ProcessorError::Contract)?;
                send(
                    producer,
                    dead_letter,
                    message.key().unwrap_or_default(),
                    &bytes,
                )?;
                stats.dead_letters.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

fn send(
    producer: &BaseProducer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
) -> Result<(), ProcessorError> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((error, _)) => return Err(kafka("produce")(error)),
        }
    }
}

/// The offset after the last message of each partition in the batch.
fn next_offsets(batch: &[OwnedMessage]) -> Result<TopicPartitionList, ProcessorError> {
    let mut last: std::collections::BTreeMap<(String, i32), i64> =
        std::collections::BTreeMap::new();
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

fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

/// Starts the stage on a thread of its own; returns the stop switch, the counters and the
/// thread to join.
pub fn spawn(
    config: ProcessorConfig,
    enricher: Enricher,
) -> (
    Arc<AtomicBool>,
    Arc<Stats>,
    std::thread::JoinHandle<Result<(), ProcessorError>>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let (thread_stop, thread_stats) = (stop.clone(), stats.clone());
    let handle = std::thread::Builder::new()
        .name("enrich".into())
        .spawn(move || run_enrich_stage(&config, &enricher, &thread_stop, &thread_stats))
        .expect("a thread can be spawned");
    (stop, stats, handle)
}
