//! Changelog topics: compacted topics a stateful stage writes its state to, in the same
//! transaction as its outputs, with one partition per input partition; on every assignment
//! the stage reads its partitions' records back before it processes anything.
use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::pipeline::{kafka, ApplyRecord};
use crate::{ProcessorConfig, ProcessorError};

/// The changelog topic of a base name, with the deployment's prefix.
pub fn topic_name(config: &ProcessorConfig, base: &str) -> String {
    format!("{}{base}", config.kafka.topic_prefix)
}

/// Creates the compacted changelog topic with as many partitions as the stage's input topic,
/// if missing.
pub fn ensure(config: &ProcessorConfig, name: &str, input: &str) -> Result<(), ProcessorError> {
    let admin: AdminClient<DefaultClientContext> = config
        .kafka
        .client_config()
        .create()
        .map_err(kafka("admin"))?;
    let partitions = admin
        .inner()
        .fetch_metadata(Some(input), Duration::from_secs(10))
        .map_err(kafka("metadata"))?
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len()) as i32;
    // Compacted: the latest record of each key stays; segments roll hourly so compaction can
    // reach them, and deletions (tombstones) are kept a day for readers, then purged.
    let topic = NewTopic::new(name, partitions.max(1), TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.ms", "3600000")
        .set("min.cleanable.dirty.ratio", "0.1")
        .set("delete.retention.ms", "86400000")
        .set("max.message.bytes", "67108864");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ProcessorError::Runtime)?;
    let results = runtime
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .map_err(kafka("create state topic"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(ProcessorError::Kafka {
                    operation: "create state topic",
                    reason: format!("{topic}: {code}"),
                })
            }
        }
    }
    Ok(())
}

/// Reads every committed record of these partitions of a changelog, oldest first, and hands
/// each (partition, offset, key, value) to `apply`: up to each partition's high watermark,
/// which `read_committed` reaches once no transaction on it is open (a crashed instance's is
/// aborted by its successor, or by the transaction timeout).
pub fn read(
    config: &ProcessorConfig,
    topic: &str,
    partitions: &[i32],
    apply: &mut ApplyRecord<'_>,
) -> Result<(), ProcessorError> {
    let consumer: BaseConsumer = config
        .kafka
        .client_config()
        .set("group.id", format!("{}-state-restore", config.group_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(kafka("create restore consumer"))?;
    let mut list = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for &partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(kafka("changelog watermarks"))?;
        if high > low {
            ends.insert(partition, high);
            list.add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(kafka("assign"))?;
        }
    }
    if ends.is_empty() {
        return Ok(());
    }
    consumer.assign(&list).map_err(kafka("assign"))?;
    let deadline =
        std::time::Instant::now() + Duration::from_secs(config.transaction_timeout_ms / 1000 + 60);
    loop {
        let position = consumer.position().map_err(kafka("changelog position"))?;
        let done = ends.iter().all(|(partition, high)| {
            position
                .find_partition(topic, *partition)
                .and_then(|e| e.offset().to_raw())
                .is_some_and(|offset| offset >= *high)
        });
        if done {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(ProcessorError::Kafka {
                operation: "restore state",
                reason: format!(
                    "the changelog {topic} did not reach its end (an open transaction?)"
                ),
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => apply(
                message.partition(),
                message.offset(),
                message.key().unwrap_or_default(),
                message.payload(),
            )?,
            Some(Err(error)) => return Err(kafka("restore state")(error)),
            None => {}
        }
    }
}
