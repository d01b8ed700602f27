//! Layered configuration: built-in defaults, then a TOML file, then the environment.
//!
//! - `TALLY__SECTION__KEY=value` sets `section.key` (double underscores separate levels).
//! - The documented addresses `TALLY_KAFKA_BROKERS` and `TALLY_CLICKHOUSE_URL` set
//!   `kafka.brokers` and `clickhouse.url` in configs that have those sections.
//!
//! Every config struct denies unknown fields, so a typo is an error at start-up that names the
//! key and where it came from, never a silently ignored setting.
//!
//! One environment is often shared by every service (docker-compose's `x-` anchors, a
//! Kubernetes ConfigMap): a `TALLY__SECTION__…` variable whose top-level key is another
//! service's ([`SERVICE_KEYS`]) and not this one's is left to that service. A top-level key
//! that no service has is still an error.
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{de::DeserializeOwned, Serialize};

use crate::{ContractError, Result};

/// Environment variable with the Kafka bootstrap brokers.
pub const KAFKA_BROKERS_ENV: &str = "TALLY_KAFKA_BROKERS";
/// Environment variable with the ClickHouse HTTP URL.
pub const CLICKHOUSE_URL_ENV: &str = "TALLY_CLICKHOUSE_URL";
/// Prefix of the layered environment variables (`TALLY__KAFKA__TOPIC_PREFIX`).
pub const ENV_PREFIX: &str = "TALLY__";

/// The top-level keys of every tally service's configuration (ingest, processor, sink,
/// notify, topics, up). A test of the `tally` binary holds it equal to their union.
pub const SERVICE_KEYS: &[&str] = &[
    "api_keys",
    "auto_offset_reset",
    "batch_max_bytes",
    "batch_max_rows",
    "batch_max_wait_ms",
    "budgets",
    "business_metrics_max_series",
    "carbon",
    "clickhouse",
    "commit_interval_ms",
    "compression",
    "dedup_max_entries",
    "dedup",
    "dedup_window_secs",
    "default_team",
    "destinations",
    "detect",
    "group_id",
    "http",
    "ingest",
    "instance_id",
    "journal",
    "kafka",
    "limits",
    "listen",
    "max_alert_age_secs",
    "max_batch",
    "max_body_bytes",
    "max_future_skew_secs",
    "max_in_flight",
    "metrics_key_sha256",
    "metrics_listen",
    "otlp_grpc_listen",
    "otlp_team_attribute",
    "pricing",
    "processor",
    "produce_timeout_ms",
    "producer",
    "queue_capacity",
    "renotify_interval_secs",
    "retry",
    "roles",
    "session_timeout_ms",
    "sink",
    "store",
    "tables",
    "transaction_timeout_ms",
    "windows",
];

/// A service's configuration: defaults come from `Default`.
pub trait ServiceConfig: Serialize + DeserializeOwned + Default {
    /// Environment variables that set one key each, as (variable, dotted key).
    const ENV_ALIASES: &'static [(&'static str, &'static str)] = &[];
}

/// Loads `T` from its defaults, the optional TOML file and the environment, in that order.
pub fn load<T: ServiceConfig>(file: Option<&Path>) -> Result<T> {
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ContractError::Config(format!(
                "config file {} does not exist or is not a file",
                path.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let own = serde_aux::serde_introspection::serde_introspect::<T>();
    let mine = move |key: &figment::value::UncasedStr| {
        let top = key.as_str().split("__").next().unwrap_or_default();
        let known = |keys: &[&str]| keys.iter().any(|k| k.eq_ignore_ascii_case(top));
        known(own) || !known(SERVICE_KEYS)
    };
    figment = figment.merge(Env::prefixed(ENV_PREFIX).filter(mine).split("__"));
    for (variable, key) in T::ENV_ALIASES {
        let key = *key;
        figment = figment.merge(Env::raw().only(&[variable]).map(move |_| key.into()));
    }
    figment.extract().map_err(|error| {
        let messages: Vec<String> = error.into_iter().map(|e| e.to_string()).collect();
        ContractError::Config(messages.join("; "))
    })
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error, as it defines
mod tests {
    use super::*;
    use crate::kafka::KafkaConfig;
    use figment::Jail;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        kafka: KafkaConfig,
        #[serde(default)]
        batch_rows: u32,
    }

    impl ServiceConfig for Sample {
        const ENV_ALIASES: &'static [(&'static str, &'static str)] =
            &[(KAFKA_BROKERS_ENV, "kafka.brokers")];
    }

    #[test]
    fn layers_apply_in_order_defaults_file_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "tally.toml",
                "batch_rows = 10\n[kafka]\nbrokers = \"file:9092\"\ntopic_prefix = \"a.\"\n",
            )?;
            let from_file: Sample = load(Some(Path::new("tally.toml"))).unwrap();
            assert_eq!(from_file.batch_rows, 10);
            assert_eq!(from_file.kafka.brokers, "file:9092");

            jail.set_env("TALLY__KAFKA__TOPIC_PREFIX", "b.");
            jail.set_env("TALLY_KAFKA_BROKERS", "env:9092");
            let layered: Sample = load(Some(Path::new("tally.toml"))).unwrap();
            assert_eq!(layered.kafka.brokers, "env:9092");
            assert_eq!(layered.kafka.topic_prefix, "b.");
            assert_eq!(layered.batch_rows, 10);
            Ok(())
        });
    }

    #[test]
    fn defaults_apply_without_file_or_environment() {
        Jail::expect_with(|_| {
            let sample: Sample = load(None).unwrap();
            assert_eq!(sample, Sample::default());
            assert_eq!(sample.kafka.brokers, "127.0.0.1:9092");
            Ok(())
        });
    }

    #[test]
    fn shared_environment_of_other_services_is_left_to_them_and_typos_stay_errors() {
        Jail::expect_with(|jail| {
            // Another service's section (the sink's ClickHouse), as docker-compose shares it.
            jail.set_env("TALLY__CLICKHOUSE__DATABASE", "tally");
            jail.set_env("TALLY__LISTEN", "0.0.0.0:8080");
            jail.set_env("TALLY__KAFKA__TOPIC_PREFIX", "p.");
            let sample: Sample = load(None).unwrap();
            assert_eq!(
                sample.kafka.topic_prefix, "p.",
                "its own sections still apply"
            );
            // A typo inside its own section, or a key no service has, is an error naming it.
            jail.set_env("TALLY__KAFKA__BROKERZ", "x");
            let err = load::<Sample>(None).unwrap_err().to_string();
            assert!(err.contains("brokerz"), "{err}");
            jail.clear_env();
            jail.set_env("TALLY__BATCH_ROWZ", "1");
            let err = load::<Sample>(None).unwrap_err().to_string();
            assert!(err.contains("batch_rowz"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[kafka]\nbrokerz = \"x\"\n")?;
            let err = load::<Sample>(Some(Path::new("typo.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("unknown field") && err.contains("brokerz"),
                "{err}"
            );
            assert!(err.contains("typo.toml"), "the file is named: {err}");

            jail.create_file("type.toml", "batch_rows = \"many\"\n")?;
            let err = load::<Sample>(Some(Path::new("type.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("batch_rows"), "{err}");

            let err = load::<Sample>(Some(Path::new("missing.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("missing.toml") && err.contains("does not exist"),
                "{err}"
            );
            Ok(())
        });
    }
}
