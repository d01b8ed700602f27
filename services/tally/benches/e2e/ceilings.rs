//! The ceilings tally's end-to-end rate is compared with, measured on the same machine in the
//! same run, with the records of that run:
//!
//! - **Kafka**: the `LlmCall` bytes tally ingest wrote (read back from the run's
//!   `tally.llm_calls.v1`), produced to a fresh topic of 6 partitions by ingest's own producer
//!   (`tally_ingest::producer::KafkaProducer`, its default settings: `acks=all`, idempotent,
//!   zstd, `linger.ms` 5, 1 MiB batches) and read by a consumer (`read_committed`, as tally's
//!   consumers), no processing: records/s from the first send to the last record read.
//! - **ClickHouse**: the `llm_calls` rows the sink wrote (`tally_sink::rows::LlmCallRow`
//!   made from the run's enriched calls, as the sink makes them), inserted with the
//!   `clickhouse` crate (RowBinary, LZ4) into a freshly migrated database in batches of
//!   100,000 rows (the sink's `batch_max_rows`), one after the other: rows/s.
//!
//! Also the reading of a topic into memory, which the backlog of the sink-versus-peer
//! comparison uses too.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use tally_contract::kafka::KafkaConfig;
use tally_contract::records::EnrichedLlmCall;
use tally_ingest::producer::{KafkaProducer, Outgoing};
use tally_ingest::IngestConfig;
use tally_sink::rows::LlmCallRow;

use crate::pipeline::Ctx;
use crate::procs::CpuMeter;

/// A record read from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

fn assign_all(consumer: &BaseConsumer, topic: &str) -> usize {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("the topic's metadata");
    let mut assignment = TopicPartitionList::new();
    let partitions = metadata.topics()[0].partitions();
    for partition in partitions {
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .expect("a partition");
    }
    consumer.assign(&assignment).expect("assigned");
    partitions.len()
}

fn consumer(ctx: &Ctx, eof: bool) -> BaseConsumer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &ctx.brokers)
        .set("group.id", "tally-e2e-bench-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", if eof { "true" } else { "false" })
        .create()
        .expect("a Kafka consumer")
}

/// Up to `max` committed records of `topic`, every partition from the start.
pub fn read_topic(ctx: &Ctx, topic: &str, max: usize) -> Vec<Record> {
    let consumer = consumer(ctx, true);
    let partitions = assign_all(&consumer, topic);
    let mut records = Vec::with_capacity(max);
    let mut at_end = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while records.len() < max && at_end.len() < partitions && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => records.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().unwrap_or_default().to_vec(),
                payload: m.payload().unwrap_or_default().to_vec(),
            }),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    records
}

async fn create_topic(ctx: &Ctx, name: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &ctx.brokers)
        .create()
        .expect("a Kafka admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for result in admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("create_topics")
    {
        result.unwrap_or_else(|(topic, code)| panic!("creating {topic}: {code}"));
    }
}

/// The Kafka pipe's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KafkaCeiling {
    pub records: usize,
    pub mean_bytes: f64,
    /// From the first send until the consumer had read the last record.
    pub records_per_sec: f64,
    /// From the first send until the last acknowledgement.
    pub produce_secs: f64,
    pub secs: f64,
    /// CPU seconds of the broker and of the harness (producer and consumer) per million.
    pub broker_cpu_per_million: Option<f64>,
    pub client_cpu_per_million: Option<f64>,
}

/// Produces `n` of `records` (cycled if fewer) through ingest's producer to a fresh topic
/// and consumes them.
pub async fn kafka(ctx: &Ctx, records: &[Record], n: usize) -> KafkaCeiling {
    assert!(!records.is_empty(), "no llm_calls records to produce");
    let topic = tally_tests::unique_name("tally-e2e-ceiling");
    create_topic(ctx, &topic, 6).await;
    let config = IngestConfig {
        kafka: KafkaConfig {
            brokers: ctx.brokers.clone(),
            ..KafkaConfig::default()
        },
        ..IngestConfig::default()
    };
    let producer = KafkaProducer::new(&config).expect("ingest's producer");
    let messages: Vec<Outgoing> = records
        .iter()
        .cycle()
        .take(n)
        .map(|r| Outgoing {
            topic: topic.clone(),
            key: String::from_utf8_lossy(&r.key).into_owned(),
            payload: r.payload.clone(),
        })
        .collect();
    let mean_bytes = messages.iter().map(|m| m.payload.len()).sum::<usize>() as f64 / n as f64;

    // The consumer waits, assigned, before the first record is sent.
    let read = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let consumer = consumer(ctx, false);
        assign_all(&consumer, &topic);
        let (read, stop) = (read.clone(), stop.clone());
        std::thread::spawn(move || {
            while read.load(Ordering::Relaxed) < n && !stop.load(Ordering::Relaxed) {
                if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                    read.fetch_add(1, Ordering::Relaxed);
                }
            }
            Instant::now()
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let harness = vec![("harness".to_string(), std::process::id())];
    let pids: Vec<(String, u32)> = ctx.servers.iter().cloned().chain(harness).collect();
    let meter = CpuMeter::start(&pids);
    let started = Instant::now();
    for chunk in messages.chunks(50_000) {
        for (i, result) in producer.send_all(chunk).await.into_iter().enumerate() {
            result.unwrap_or_else(|e| panic!("record {i} of a chunk was not acknowledged: {e}"));
        }
    }
    let produced = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    while read.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let done = reader.join().expect("the reader");
    assert_eq!(
        read.load(Ordering::Relaxed),
        n,
        "the consumer read every record"
    );
    let cpu = meter.since(&pids);
    tally_tests::delete_topics(vec![topic]);
    let secs = done.duration_since(started).as_secs_f64();
    KafkaCeiling {
        records: n,
        mean_bytes,
        records_per_sec: n as f64 / secs,
        produce_secs: produced.as_secs_f64(),
        secs,
        broker_cpu_per_million: cpu.get("kafka").map(|c| c / n as f64 * 1e6),
        client_cpu_per_million: cpu.get("harness").map(|c| c / n as f64 * 1e6),
    }
}

/// The ClickHouse insert's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClickHouseCeiling {
    pub rows: usize,
    pub rows_per_sec: f64,
    pub secs: f64,
    pub server_cpu_per_million: Option<f64>,
}

/// The `llm_calls` rows the sink makes of enriched records.
pub fn rows(records: &[Record]) -> Vec<LlmCallRow> {
    records
        .iter()
        .map(|r| {
            let enriched: EnrichedLlmCall =
                tally_contract::decode(&r.payload).expect("an enriched call");
            LlmCallRow::new(enriched, r.partition, r.offset)
        })
        .collect()
}

/// Inserts `rows` into a freshly migrated database, in batches of 100,000.
pub async fn clickhouse(ctx: &Ctx, rows: &[LlmCallRow], database: &str) -> ClickHouseCeiling {
    ctx.migrate(database);
    let client = ctx.server.clone().with_database(database);
    let meter = CpuMeter::start(&ctx.servers);
    let started = Instant::now();
    for batch in rows.chunks(100_000) {
        let mut insert = client
            .insert::<LlmCallRow>("llm_calls")
            .await
            .expect("an insert");
        for row in batch {
            insert.write(row).await.expect("a row written");
        }
        insert.end().await.expect("the insert");
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = meter.since(&ctx.servers);
    assert_eq!(
        ctx.count(database, "llm_calls").await,
        rows.len() as u64,
        "every row inserted"
    );
    ctx.drop_database(database).await;
    ClickHouseCeiling {
        rows: rows.len(),
        rows_per_sec: rows.len() as f64 / secs,
        secs,
        server_cpu_per_million: cpu.get("clickhouse").map(|c| c / rows.len() as f64 * 1e6),
    }
}
