//! Configuration of the ClickHouse sink (`tally sink --config FILE`).
use serde::{Deserialize, Serialize};
use tally_contract::clickhouse::ClickHouseConfig;
use tally_contract::config::{ServiceConfig, CLICKHOUSE_URL_ENV, KAFKA_BROKERS_ENV};
use tally_contract::kafka::KafkaConfig;

use crate::SinkError;

/// Settings of the sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Kafka consumer group; more processes in one group share the partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// A batch is inserted when it holds this many rows...
    #[serde(default = "default_batch_max_rows")]
    pub batch_max_rows: usize,
    /// ...or this many bytes...
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// ...or its first row has waited this long, in milliseconds.
    #[serde(default = "default_batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// Tables to fill, each from its topic: llm_calls, deploys, tickets, spend_windows,
    /// loop_signals, alerts (all by default).
    #[serde(default = "default_tables")]
    pub tables: Vec<String>,
    /// Address of a Prometheus `/metrics` endpoint (`127.0.0.1:9465`); none by default.
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Kafka to consume from.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// ClickHouse to insert into.
    #[serde(default)]
    pub clickhouse: ClickHouseConfig,
}

fn default_tables() -> Vec<String> {
    crate::tables::ALL.iter().map(|t| t.to_string()).collect()
}

fn default_group_id() -> String {
    "tally-sink".to_string()
}

fn default_batch_max_rows() -> usize {
    100_000
}

fn default_batch_max_bytes() -> usize {
    16 * 1024 * 1024
}

fn default_batch_max_wait_ms() -> u64 {
    1_000
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            group_id: default_group_id(),
            batch_max_rows: default_batch_max_rows(),
            batch_max_bytes: default_batch_max_bytes(),
            batch_max_wait_ms: default_batch_max_wait_ms(),
            tables: default_tables(),
            metrics_listen: None,
            kafka: KafkaConfig::default(),
            clickhouse: ClickHouseConfig::default(),
        }
    }
}

impl ServiceConfig for SinkConfig {
    const ENV_ALIASES: &'static [(&'static str, &'static str)] = &[
        (KAFKA_BROKERS_ENV, "kafka.brokers"),
        (CLICKHOUSE_URL_ENV, "clickhouse.url"),
    ];
}

impl SinkConfig {
    /// Checks what the types cannot: every problem is named by its key.
    pub fn validate(&self) -> Result<(), SinkError> {
        let positive = [
            ("batch_max_rows", self.batch_max_rows as u64),
            ("batch_max_bytes", self.batch_max_bytes as u64),
            ("batch_max_wait_ms", self.batch_max_wait_ms),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(SinkError::Config(format!("{key} must be at least 1")));
        }
        if let Some(unknown) = self
            .tables
            .iter()
            .find(|t| !crate::tables::ALL.contains(&t.as_str()))
        {
            return Err(SinkError::Config(format!(
                "tables: unknown table {unknown:?}; known: {}",
                crate::tables::ALL.join(", ")
            )));
        }
        if !self.clickhouse.url.starts_with("http://")
            && !self.clickhouse.url.starts_with("https://")
        {
            return Err(SinkError::Config(format!(
                "clickhouse.url must be an http:// or https:// URL, not {:?}",
                self.clickhouse.url
            )));
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
    fn defaults_batch_100k_rows_16_mib_1_s() {
        let config = SinkConfig::default();
        assert_eq!(
            (
                config.batch_max_rows,
                config.batch_max_bytes,
                config.batch_max_wait_ms
            ),
            (100_000, 16_777_216, 1_000)
        );
        assert_eq!(config.clickhouse.url, "http://127.0.0.1:8123");
        assert!(config.validate().is_ok());
    }

    #[test]
    fn both_service_addresses_come_from_the_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "s.toml",
                "batch_max_rows = 5\n[clickhouse]\ndatabase = \"t\"\n",
            )?;
            jail.set_env("TALLY_CLICKHOUSE_URL", "http://ch:8123");
            jail.set_env("TALLY_KAFKA_BROKERS", "k:9092");
            let config: SinkConfig = load(Some(Path::new("s.toml"))).unwrap();
            assert_eq!(config.batch_max_rows, 5);
            assert_eq!(config.clickhouse.url, "http://ch:8123");
            assert_eq!(config.clickhouse.database, "t");
            assert_eq!(config.kafka.brokers, "k:9092");
            Ok(())
        });
    }

    #[test]
    fn invalid_settings_are_named() {
        let zero = SinkConfig {
            batch_max_wait_ms: 0,
            ..SinkConfig::default()
        };
        assert!(zero
            .validate()
            .unwrap_err()
            .to_string()
            .contains("batch_max_wait_ms"));
        let mut bad_url = SinkConfig::default();
        bad_url.clickhouse.url = "127.0.0.1:8123".into();
        assert!(bad_url
            .validate()
            .unwrap_err()
            .to_string()
            .contains("clickhouse.url"));
    }
}
