//! With Kafka as the transport and no ClickHouse, `tally up` copies the derived topics from
//! Kafka into its journal, and the Parquet store fills from there as in the embedded mode.
//! Exactly once: each frame carries the Kafka positions it copied up to, one per topic and
//! partition, and a restart resumes from them (reading with `read_committed`).
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tally_contract::kafka::KafkaConfig;
use tally_contract::topics::Topic;

use crate::journal::{Journal, Record};
use crate::EmbeddedError;

const PRODUCER: &str = "kafka-mirror";
/// The topics the store reads.
const TOPICS: [Topic; 7] = [
    Topic::LlmCallsEnriched,
    Topic::Deploys,
    Topic::Tickets,
    Topic::SpendWindows,
    Topic::LoopSignals,
    Topic::Alerts,
    Topic::DeadLetter,
];

fn kafka_error(operation: &str) -> impl Fn(rdkafka::error::KafkaError) -> EmbeddedError + '_ {
    move |e| EmbeddedError::Store(format!("Kafka {operation}: {e}"))
}

/// The journal's name for a Kafka partition's position.
fn position_key(topic: &str, partition: i32) -> String {
    format!("{topic}#{partition}")
}

/// Copies until `stop`.
pub fn run(journal: &Journal, kafka: &KafkaConfig, stop: &AtomicBool) -> Result<(), EmbeddedError> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", format!("{}tally-up-mirror", kafka.topic_prefix))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(kafka_error("consumer"))?;
    let mut assignment = TopicPartitionList::new();
    for topic in TOPICS.map(|t| kafka.topic(t)) {
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(kafka_error("metadata"))?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        for partition in 0..partitions as i32 {
            let next = journal.position(PRODUCER, &position_key(&topic, partition));
            assignment
                .add_partition_offset(&topic, partition, Offset::Offset(next as i64))
                .map_err(kafka_error("assign"))?;
        }
    }
    consumer
        .assign(&assignment)
        .map_err(kafka_error("assign"))?;
    while !stop.load(Ordering::SeqCst) {
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut records = Vec::new();
        let mut positions: BTreeMap<String, u64> = BTreeMap::new();
        while records.len() < 20_000 && Instant::now() < deadline {
            match consumer.poll(deadline.saturating_duration_since(Instant::now())) {
                Some(Ok(message)) => {
                    records.push(Record {
                        topic: message.topic().to_string(),
                        key: message.key().unwrap_or_default().to_vec(),
                        payload: message.payload().map(<[u8]>::to_vec),
                    });
                    positions.insert(
                        position_key(message.topic(), message.partition()),
                        message.offset() as u64 + 1,
                    );
                }
                Some(Err(error)) => tracing::warn!(%error, "mirror: consumer error"),
                None => {}
            }
        }
        if !records.is_empty() {
            let positions: Vec<(String, u64)> = positions.into_iter().collect();
            journal.append(PRODUCER, &positions, records)?;
        }
    }
    Ok(())
}
