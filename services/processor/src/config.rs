//! Configuration of the processor (`tally process --config FILE`).
use serde::{Deserialize, Serialize};
use tally_contract::config::{ServiceConfig, KAFKA_BROKERS_ENV};
use tally_contract::kafka::KafkaConfig;

use crate::ProcessorError;

/// Settings of the processor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Kafka consumer group; more processes in one group share the partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Kafka to consume from and produce to.
    #[serde(default)]
    pub kafka: KafkaConfig,
}

fn default_group_id() -> String {
    "tally-processor".to_string()
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            group_id: default_group_id(),
            kafka: KafkaConfig::default(),
        }
    }
}

impl ServiceConfig for ProcessorConfig {
    const ENV_ALIASES: &'static [(&'static str, &'static str)] =
        &[(KAFKA_BROKERS_ENV, "kafka.brokers")];
}

impl ProcessorConfig {
    /// Checks what the types cannot: every problem is named by its key.
    pub fn validate(&self) -> Result<(), ProcessorError> {
        if self.group_id.trim().is_empty() {
            return Err(ProcessorError::Config("group_id must not be empty".into()));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(ProcessorError::Config(
                "kafka.brokers must name at least one broker".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error, as it defines
mod tests {
    use super::*;
    use figment::Jail;
    use std::path::Path;
    use tally_contract::config::load;

    #[test]
    fn defaults_and_layered_overrides() {
        assert_eq!(ProcessorConfig::default().group_id, "tally-processor");
        Jail::expect_with(|jail| {
            jail.create_file(
                "p.toml",
                "group_id = \"g1\"\n[kafka]\ntopic_prefix = \"dev.\"\n",
            )?;
            jail.set_env("TALLY__GROUP_ID", "g2");
            let config: ProcessorConfig = load(Some(Path::new("p.toml"))).unwrap();
            assert_eq!(config.group_id, "g2");
            assert_eq!(config.kafka.topic_prefix, "dev.");
            Ok(())
        });
    }

    #[test]
    fn empty_group_is_refused_by_name() {
        let config = ProcessorConfig {
            group_id: " ".into(),
            ..ProcessorConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("group_id"), "{err}");
    }
}
