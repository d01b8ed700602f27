//! Kafka connection settings and topic administration (`tally topics create`).
use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::topics::Topic;
use crate::wire::WireFormat;
use crate::{ContractError, Result};

/// The broker scripts/services.sh starts.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// The compression codecs a producer may be configured with (librdkafka's
/// `compression.type`).
pub const COMPRESSIONS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];

/// Where Kafka is and how tally names its topics there.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// How this service writes Avro records: `single_object` (the default: Avro single-object
    /// encoding, the schema's fingerprint in each record, no registry needed) or `confluent`
    /// (the Confluent wire format: the schema's id in `schema_registry_url`, registered under
    /// `<topic>-value` with compatibility BACKWARD, for Kafka Connect, Flink, ksqlDB and
    /// ClickHouse's `AvroConfluent`). Readers read both.
    #[serde(default)]
    pub wire_format: WireFormat,
    /// Base URL of a schema registry's Confluent REST API (`http://registry:8081`; Apicurio:
    /// `http://apicurio:8080/apis/ccompat/v7`). Needed with `wire_format = "confluent"`, and
    /// by any reader of Confluent-framed records, to look their schema ids up.
    #[serde(default)]
    pub schema_registry_url: Option<String>,
    /// `user:password` for the registry's basic authentication (a secret: never shown).
    #[serde(default)]
    pub schema_registry_basic_auth: Option<String>,
}

fn default_brokers() -> String {
    DEFAULT_BROKERS.to_string()
}

/// Whether a librdkafka property holds a secret (`sasl.password`, `ssl.key.password`,
/// `sasl.jaas.config`, `sasl.oauthbearer.client.secret`, `ssl.key.pem`, ...): its value is
/// never shown.
pub fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "secret", "jaas", "token", ".pem", "credentials"]
        .iter()
        .any(|marker| name.contains(marker))
}

/// Secrets among `properties` are shown as `<redacted>`: a config printed in a log or an
/// error never carries them.
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(name, value)| {
                let shown = if is_secret_property(name) {
                    "<redacted>"
                } else {
                    value.as_str()
                };
                (name.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic_prefix", &self.topic_prefix)
            .field("properties", &properties)
            .field("wire_format", &self.wire_format)
            .field("schema_registry_url", &self.schema_registry_url)
            .field(
                "schema_registry_basic_auth",
                &self
                    .schema_registry_basic_auth
                    .as_ref()
                    .map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            topic_prefix: String::new(),
            properties: BTreeMap::new(),
            wire_format: WireFormat::default(),
            schema_registry_url: None,
            schema_registry_basic_auth: None,
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

/// Number of partitions of an existing topic, from the cluster's metadata. A topic created
/// a moment ago may not be in the metadata the broker answers yet: asked again for up to 5 s.
pub fn partition_count(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Result<usize> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| kafka_error("fetch metadata", e))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len());
        match partitions {
            Some(partitions) => return Ok(partitions),
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            None => {
                return Err(ContractError::Kafka {
                    operation: "fetch metadata",
                    reason: format!("topic {topic} is not in the cluster's metadata"),
                })
            }
        }
    }
}

fn kafka_error(operation: &'static str, error: impl std::fmt::Display) -> ContractError {
    ContractError::Kafka {
        operation,
        reason: error.to_string(),
    }
}

/// A consumer context that notes every rebalance, so a consumer can drop what it holds of
/// partitions that may have moved (and never commit for them): the processor its batch, the
/// sink its unsent batches, notify its pending offsets. `consequence` says which, in the
/// log line of each rebalance.
pub struct RebalanceFlag {
    happened: std::sync::atomic::AtomicBool,
    consequence: &'static str,
}

impl RebalanceFlag {
    /// A flag whose rebalance log line ends with `consequence`.
    pub fn new(consequence: &'static str) -> RebalanceFlag {
        RebalanceFlag {
            happened: std::sync::atomic::AtomicBool::new(false),
            consequence,
        }
    }

    /// Whether a rebalance happened since the last call.
    pub fn take(&self) -> bool {
        self.happened
            .swap(false, std::sync::atomic::Ordering::SeqCst)
    }
}

impl rdkafka::ClientContext for RebalanceFlag {}

impl rdkafka::consumer::ConsumerContext for RebalanceFlag {
    fn pre_rebalance(
        &self,
        _: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        let (change, partitions) = match rebalance {
            rdkafka::consumer::Rebalance::Assign(list) => ("assign", list.count()),
            rdkafka::consumer::Rebalance::Revoke(list) => ("revoke", list.count()),
            rdkafka::consumer::Rebalance::Error(_) => ("error", 0),
        };
        tracing::info!(change, partitions, "rebalance: {}", self.consequence);
        self.happened
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_secret_property() {
        let config = KafkaConfig {
            properties: BTreeMap::from([
                ("security.protocol".to_string(), "SASL_SSL".to_string()),
                ("sasl.username".to_string(), "tally".to_string()),
                ("sasl.password".to_string(), "hunter2-kafka".to_string()),
                ("ssl.key.password".to_string(), "hunter2-key".to_string()),
                (
                    "sasl.jaas.config".to_string(),
                    "x password=\"hunter2-jaas\"".to_string(),
                ),
                (
                    "sasl.oauthbearer.client.secret".to_string(),
                    "hunter2-oauth".to_string(),
                ),
            ]),
            ..KafkaConfig::default()
        };
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("SASL_SSL") && shown.contains("\"tally\""),
            "{shown}"
        );
        assert_eq!(shown.matches("<redacted>").count(), 8, "{shown}");
    }

    #[test]
    fn secret_properties_are_known_by_name() {
        for secret in [
            "sasl.password",
            "ssl.keystore.password",
            "sasl.jaas.config",
            "ssl.key.pem",
        ] {
            assert!(is_secret_property(secret), "{secret}");
        }
        for plain in [
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "bootstrap.servers",
        ] {
            assert!(!is_secret_property(plain), "{plain}");
        }
    }
}
