//! Kafka connection settings and topic administration (`tally topics create`).
use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::topics::Topic;
use crate::{ContractError, Result};

/// The broker scripts/services.sh starts.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// Where Kafka is and how tally names its topics there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma-separated `host:port`. Environment: `TALLY_KAFKA_BROKERS`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Put before every topic name, so several deployments can share a cluster
    /// (`staging.` gives `staging.tally.llm_calls.v1`). Empty by default.
    #[serde(default)]
    pub topic_prefix: String,
    /// Further librdkafka properties, passed as they are (`security.protocol`, `sasl.*`, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_brokers() -> String {
    DEFAULT_BROKERS.to_string()
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            topic_prefix: String::new(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// A librdkafka configuration with the brokers and the extra properties set.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// The full name of one of tally's topics in this deployment.
    pub fn topic(&self, topic: Topic) -> String {
        topic.name(&self.topic_prefix)
    }
}

/// How many partitions and replicas `tally topics create` gives each topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLayout {
    /// Partitions per topic: the most consumers of one group that can share a topic.
    pub partitions: i32,
    /// Copies of each partition; at most the number of brokers.
    pub replication_factor: i32,
}

impl Default for TopicLayout {
    fn default() -> Self {
        Self {
            partitions: 6,
            replication_factor: 1,
        }
    }
}

/// What `create_topics` did for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    /// The topic was created with the requested layout.
    Created,
    /// The topic was there already; it has this many partitions (left as they are).
    AlreadyExisted { partitions: usize },
}

/// Creates every tally topic that is missing; topics that exist are left alone, so running
/// it twice is harmless. Returns each topic's name and outcome, in [`Topic::ALL`] order.
pub async fn create_topics(
    config: &KafkaConfig,
    layout: TopicLayout,
) -> Result<Vec<(String, TopicOutcome)>> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(|e| kafka_error("connect", e))?;
    let names: Vec<String> = Topic::ALL.iter().map(|t| config.topic(*t)).collect();
    let new_topics: Vec<NewTopic> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                layout.partitions,
                TopicReplication::Fixed(layout.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|e| kafka_error("create topics", e))?;

    let mut outcomes = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(name) => outcomes.push((name, TopicOutcome::Created)),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                let partitions = partition_count(&admin, &name)?;
                outcomes.push((name, TopicOutcome::AlreadyExisted { partitions }));
            }
            Err((name, code)) => {
                return Err(ContractError::Kafka {
                    operation: "create topics",
                    reason: format!("topic {name}: {code}"),
                })
            }
        }
    }
    Ok(outcomes)
}

/// Number of partitions of an existing topic, from the cluster's metadata.
pub fn partition_count(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Result<usize> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| kafka_error("fetch metadata", e))?;
    metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .ok_or_else(|| ContractError::Kafka {
            operation: "fetch metadata",
            reason: format!("topic {topic} is not in the cluster's metadata"),
        })
}

fn kafka_error(operation: &'static str, error: impl std::fmt::Display) -> ContractError {
    ContractError::Kafka {
        operation,
        reason: error.to_string(),
    }
}
