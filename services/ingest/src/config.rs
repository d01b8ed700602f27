//! Configuration of the ingest service (`tally ingest --config FILE`).
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tally_contract::config::{ServiceConfig, KAFKA_BROKERS_ENV};
use tally_contract::kafka::KafkaConfig;

use crate::IngestError;

/// Settings of the ingest service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Address the HTTP server listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger requests get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Kafka to produce to.
    #[serde(default)]
    pub kafka: KafkaConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_max_body_bytes() -> usize {
    10 * 1024 * 1024
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_body_bytes: default_max_body_bytes(),
            kafka: KafkaConfig::default(),
        }
    }
}

impl ServiceConfig for IngestConfig {
    const ENV_ALIASES: &'static [(&'static str, &'static str)] =
        &[(KAFKA_BROKERS_ENV, "kafka.brokers")];
}

impl IngestConfig {
    /// Checks what the types cannot: every problem is named by its key.
    pub fn validate(&self) -> Result<(), IngestError> {
        if self.max_body_bytes == 0 {
            return Err(IngestError::Config(
                "max_body_bytes must be at least 1".into(),
            ));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(IngestError::Config(
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
    fn defaults_listen_on_loopback_with_a_10_mib_body_limit() {
        let config = IngestConfig::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.max_body_bytes, 10_485_760);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn file_and_environment_override_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "ingest.toml",
                "listen = \"0.0.0.0:9999\"\nmax_body_bytes = 1024\n",
            )?;
            jail.set_env("TALLY_KAFKA_BROKERS", "kafka-1:9092,kafka-2:9092");
            let config: IngestConfig = load(Some(Path::new("ingest.toml"))).unwrap();
            assert_eq!(config.listen.to_string(), "0.0.0.0:9999");
            assert_eq!(config.max_body_bytes, 1024);
            assert_eq!(config.kafka.brokers, "kafka-1:9092,kafka-2:9092");
            Ok(())
        });
    }

    #[test]
    fn invalid_settings_are_named() {
        let config = IngestConfig {
            max_body_bytes: 0,
            ..IngestConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("max_body_bytes"), "{err}");
        Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "listen = \"not an address\"\n")?;
            let err = load::<IngestConfig>(Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("listen"), "{err}");
            Ok(())
        });
    }
}
