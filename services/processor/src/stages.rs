//! The processor's two stages, each run exactly once by [`crate::pipeline`]:
//!
//! 1. `enrich`: `tally.llm_calls.v1` → `tally.llm_calls_enriched.v1` (keyed `tenant/team`, so
//!    a team's calls, and each of its sessions in order, are on one partition). Stateless.
//! 2. `aggregate`: `tally.llm_calls_enriched.v1` → `tally.spend_windows.v1` and
//!    `tally.alerts.v1`. Its state (windows, watermark, budgets) is per input partition and is
//!    written, in the same transaction as the outputs, to the compacted changelog topic
//!    `tally.processor_state.v1` (one record per partition, keyed by it); on every assignment
//!    it is read back from there before any record is processed.
use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tally_contract::decode;
use tally_contract::records::{EnrichedLlmCall, LlmCall};
use tally_contract::topics::Topic;

use crate::budgets::{self, BudgetState};
use crate::enrich::Enricher;
use crate::pipeline::{kafka, Outputs, Stage, Stats};
use crate::windows::{self, WindowState};
use crate::{ProcessorConfig, ProcessorError};

use std::sync::atomic::Ordering;

/// Base name of the aggregate stage's changelog topic (the deployment prefix goes before it).
pub const STATE_TOPIC: &str = "tally.processor_state.v1";

/// Stage 1: price and carbon-rate every call.
pub struct EnrichStage {
    pub enricher: Enricher,
}

impl Stage for EnrichStage {
    fn name(&self) -> &'static str {
        "enrich"
    }

    fn input(&self, config: &ProcessorConfig) -> String {
        config.kafka.topic(Topic::LlmCalls)
    }

    fn process(
        &mut self,
        batch: &[OwnedMessage],
        out: &Outputs<'_>,
        stats: &Stats,
    ) -> Result<(), ProcessorError> {
        for message in batch {
            let enriched = decode::<LlmCall>(message.payload().unwrap_or_default())
                .map_err(|e| ("decode", e.to_string()))
                .and_then(|call| {
                    self.enricher
                        .enrich(call, out.now())
                        .map_err(|e| ("invalid", e.0))
                });
            match enriched {
                Ok(enriched) => {
                    let key = format!("{}/{}", enriched.call.tenant, enriched.call.team);
                    out.record(Topic::LlmCallsEnriched, &key, &enriched)?;
                    stats.enriched.fetch_add(1, Ordering::Relaxed);
                    if enriched.unpriced {
                        stats.unpriced.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err((kind, reason)) => {
                    out.dead_letter(message, kind, reason)?;
                    stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }
}

/// The aggregate stage's state of one input partition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    pub windows: WindowState,
    pub budgets: BudgetState,
}

/// Stage 2: spend windows, budgets and usage reviews.
pub struct AggregateStage {
    pub state: HashMap<i32, PartitionState>,
}

impl AggregateStage {
    fn state_topic(config: &ProcessorConfig) -> String {
        format!("{}{STATE_TOPIC}", config.kafka.topic_prefix)
    }
}

impl Stage for AggregateStage {
    fn name(&self) -> &'static str {
        "aggregate"
    }

    fn input(&self, config: &ProcessorConfig) -> String {
        config.kafka.topic(Topic::LlmCallsEnriched)
    }

    fn on_assignment(
        &mut self,
        partitions: &[i32],
        config: &ProcessorConfig,
    ) -> Result<(), ProcessorError> {
        self.state.clear();
        if partitions.is_empty() {
            return Ok(());
        }
        ensure_state_topic(config)?;
        self.state = restore(config, &Self::state_topic(config), partitions)?;
        for (partition, state) in &self.state {
            let calls: i64 = state
                .windows
                .windows
                .iter()
                .filter(|(k, _)| k.window_seconds == 86_400 && k.dimension == "model")
                .map(|(_, t)| t.calls)
                .sum();
            tracing::debug!(
                partition,
                watermark = state.windows.watermark,
                calls,
                "restored partition state"
            );
        }
        tracing::info!(
            ?partitions,
            restored = self.state.len(),
            "aggregate state restored from the changelog"
        );
        Ok(())
    }

    fn process(
        &mut self,
        batch: &[OwnedMessage],
        out: &Outputs<'_>,
        stats: &Stats,
    ) -> Result<(), ProcessorError> {
        let mut touched = Vec::new();
        for message in batch {
            let call = match decode::<EnrichedLlmCall>(message.payload().unwrap_or_default()) {
                Ok(call) => call,
                Err(e) => {
                    out.dead_letter(message, "decode", e.to_string())?;
                    stats.dead_letters.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            let partition = message.partition();
            let state = self.state.entry(partition).or_default();
            if !touched.contains(&partition) {
                touched.push(partition);
            }
            let key = format!("{}/{}", call.call.tenant, call.call.team);
            let windowed =
                windows::apply(&out.config().windows, &mut state.windows, &call, out.now());
            if windowed.late {
                stats.late_events.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(event_id = %call.call.event_id, "late for at least one window");
            }
            for window in &windowed.emitted {
                out.record(Topic::SpendWindows, &key, window)?;
            }
            stats
                .windows_emitted
                .fetch_add(windowed.emitted.len() as u64, Ordering::Relaxed);
            let config = out.config();
            for alert in budgets::apply(
                &config.budgets,
                &config.roles,
                &mut state.budgets,
                &call,
                out.now(),
            ) {
                out.record(Topic::Alerts, &key, &alert)?;
                stats.alerts.fetch_add(1, Ordering::Relaxed);
            }
        }
        let topic = Self::state_topic(out.config());
        for partition in touched {
            let snapshot = serde_json::to_vec(&self.state[&partition]).map_err(|e| {
                ProcessorError::Config(format!(
                    "state of partition {partition} does not serialise: {e}"
                ))
            })?;
            out.raw(
                &topic,
                Some(partition),
                partition.to_string().as_bytes(),
                Some(&snapshot),
            )?;
        }
        Ok(())
    }
}

/// Creates the compacted changelog topic with as many partitions as the input, if missing.
fn ensure_state_topic(config: &ProcessorConfig) -> Result<(), ProcessorError> {
    let admin: AdminClient<DefaultClientContext> = config
        .kafka
        .client_config()
        .create()
        .map_err(kafka("admin"))?;
    let input = config.kafka.topic(Topic::LlmCallsEnriched);
    let partitions = admin
        .inner()
        .fetch_metadata(Some(&input), Duration::from_secs(10))
        .map_err(kafka("metadata"))?
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len()) as i32;
    let name = format!("{}{STATE_TOPIC}", config.kafka.topic_prefix);
    let topic = NewTopic::new(&name, partitions.max(1), TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("max.message.bytes", "67108864");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ProcessorError::Config(e.to_string()))?;
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

/// Reads the latest committed snapshot of each partition from the changelog: up to each
/// partition's high watermark, which `read_committed` reaches once no transaction on it is
/// open (a crashed instance's is aborted by its successor, or by the transaction timeout).
fn restore(
    config: &ProcessorConfig,
    topic: &str,
    partitions: &[i32],
) -> Result<HashMap<i32, PartitionState>, ProcessorError> {
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
    let mut state = HashMap::new();
    if ends.is_empty() {
        return Ok(state);
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
            return Ok(state);
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
            Some(Ok(message)) => {
                let snapshot: PartitionState = match message.payload() {
                    Some(bytes) => serde_json::from_slice(bytes).map_err(|e| {
                        ProcessorError::Config(format!(
                            "changelog {topic} partition {} offset {} is not a state snapshot: {e}",
                            message.partition(),
                            message.offset()
                        ))
                    })?,
                    None => PartitionState::default(),
                };
                state.insert(message.partition(), snapshot);
            }
            Some(Err(error)) => return Err(kafka("restore state")(error)),
            None => {}
        }
    }
}
