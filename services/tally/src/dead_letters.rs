//! `tally dead-letters list | replay`: the records a stage could not process, kept on
//! `tally.dead_letter.v1` with the original bytes, the topic, partition and offset they came
//! from and the reason. Once the cause is fixed (a ClickHouse constraint relaxed, a bad model
//! catalogue mended), `replay` sends each original back to its topic, with its key. Replaying
//! twice is harmless: the processor drops repeats of an event id and ClickHouse tables read
//! with `FINAL` collapse them.
use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tally_contract::config::load;
use tally_contract::records::DeadLetter;
use tally_contract::topics::Topic;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::TallyError;
use crate::topics::TopicsConfig;

#[derive(Debug, Subcommand)]
pub enum DeadLettersCommand {
    /// Print the dead letters (one JSON line each, without the original bytes).
    List(Filter),
    /// Send each dead letter's original record back to the topic it came from.
    Replay {
        #[command(flatten)]
        filter: Filter,
        /// Say what would be sent, send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which dead letters.
#[derive(Debug, clap::Args)]
pub struct Filter {
    /// Only those of this topic (its name with or without the deployment's prefix:
    /// `tally.deploys.v1`).
    #[arg(long)]
    topic: Option<String>,
    /// Only those that failed at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// TOML file with a `[kafka]` section.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl Filter {
    fn since_micros(&self) -> Result<Option<i64>, TallyError> {
        self.since
            .as_deref()
            .map(|text| {
                OffsetDateTime::parse(text, &Rfc3339)
                    .map(|t| (t.unix_timestamp_nanos() / 1_000) as i64)
                    .map_err(|e| TallyError::Usage(format!("--since {text:?}: {e}")))
            })
            .transpose()
    }

    fn matches(&self, letter: &DeadLetter, prefix: &str, since: Option<i64>) -> bool {
        let topic_ok = self
            .topic
            .as_deref()
            .is_none_or(|t| letter.topic == t || letter.topic == format!("{prefix}{t}"));
        topic_ok && since.is_none_or(|since| letter.failed_at >= since)
    }
}

/// Every dead letter on the topic now, oldest first (up to the end offsets when it starts).
fn read_all(config: &TopicsConfig) -> Result<Vec<DeadLetter>, TallyError> {
    let kafka = &config.kafka;
    // Dead letters written in the Confluent wire format are looked up in the registry.
    tally_contract::registry::install_reader(kafka);
    let topic = kafka.topic(Topic::DeadLetter);
    let consumer: BaseConsumer = kafka
        .client_config()
        .set(
            "group.id",
            format!("{}tally-dead-letters", kafka.topic_prefix),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| TallyError::Usage(format!("Kafka consumer: {e}")))?;
    let metadata = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .map_err(|e| TallyError::Usage(format!("Kafka metadata of {topic}: {e}")))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len()) as i32;
    let mut assignment = TopicPartitionList::new();
    let mut ends = Vec::new();
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(&topic, partition, Duration::from_secs(10))
            .map_err(|e| TallyError::Usage(format!("Kafka offsets of {topic}: {e}")))?;
        if high > low {
            assignment
                .add_partition_offset(&topic, partition, Offset::Offset(low))
                .map_err(|e| TallyError::Usage(e.to_string()))?;
            ends.push((partition, high));
        }
    }
    let mut letters = Vec::new();
    if ends.is_empty() {
        return Ok(letters);
    }
    consumer
        .assign(&assignment)
        .map_err(|e| TallyError::Usage(format!("Kafka assign: {e}")))?;
    let mut done: Vec<i32> = Vec::new();
    while done.len() < ends.len() {
        let Some(message) = consumer.poll(Duration::from_secs(10)) else {
            break;
        };
        let message = message.map_err(|e| TallyError::Usage(format!("Kafka: {e}")))?;
        match tally_contract::decode::<DeadLetter>(message.payload().unwrap_or_default()) {
            Ok(letter) => letters.push(letter),
            Err(error) => eprintln!(
                "{topic} partition {} offset {}: not a dead letter ({error}); skipped",
                message.partition(),
                message.offset()
            ),
        }
        let end = ends
            .iter()
            .find(|(p, _)| *p == message.partition())
            .map(|(_, e)| *e);
        if end.is_some_and(|end| message.offset() + 1 >= end) {
            done.push(message.partition());
        }
    }
    letters.sort_by_key(|l| l.failed_at);
    Ok(letters)
}

pub async fn run(command: DeadLettersCommand) -> Result<(), TallyError> {
    let (filter, replay, dry_run) = match command {
        DeadLettersCommand::List(filter) => (filter, false, false),
        DeadLettersCommand::Replay { filter, dry_run } => (filter, true, dry_run),
    };
    let config: TopicsConfig = load(filter.config.as_deref())?;
    let since = filter.since_micros()?;
    let prefix = config.kafka.topic_prefix.clone();
    let letters: Vec<DeadLetter> = {
        let config = TopicsConfig {
            kafka: config.kafka.clone(),
        };
        tokio::task::spawn_blocking(move || read_all(&config))
            .await
            .map_err(|e| TallyError::Usage(e.to_string()))??
    };
    let chosen: Vec<&DeadLetter> = letters
        .iter()
        .filter(|l| filter.matches(l, &prefix, since))
        .collect();
    if !replay || dry_run {
        for letter in &chosen {
            println!(
                "{}",
                serde_json::json!({
                    "topic": letter.topic, "partition": letter.partition, "offset": letter.offset,
                    "stage": letter.stage, "error_kind": letter.error_kind, "error": letter.error,
                    "failed_at": tally_contract::clock::rfc3339(letter.failed_at),
                    "original_bytes": letter.original.len(),
                })
            );
        }
        if dry_run {
            eprintln!(
                "would replay {} of {} dead letters",
                chosen.len(),
                letters.len()
            );
        }
        return Ok(());
    }
    let producer: FutureProducer = config
        .kafka
        .client_config()
        .set("enable.idempotence", "true")
        .create()
        .map_err(|e| TallyError::Usage(format!("Kafka producer: {e}")))?;
    let bar = ProgressBar::new(chosen.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("replaying {bar:40} {pos}/{len} dead letters")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    for letter in &chosen {
        let key = letter.key.clone().unwrap_or_default();
        producer
            .send(
                FutureRecord::to(&letter.topic)
                    .key(&key)
                    .payload(&letter.original),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| {
                TallyError::Usage(format!(
                    "{} offset {}: Kafka did not take it back: {e}",
                    letter.topic, letter.offset
                ))
            })?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "replayed {} of {} dead letters to their topics",
        chosen.len(),
        letters.len()
    );
    Ok(())
}
