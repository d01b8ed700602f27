//! Configuration of the processor (`tally process --config FILE`).
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tally_contract::config::{ServiceConfig, KAFKA_BROKERS_ENV};
use tally_contract::kafka::{KafkaConfig, COMPRESSIONS};

use crate::budgets::{BudgetConfig, RolesConfig};
use crate::dedup::DedupConfig;
use crate::detect::DetectConfig;
use crate::windows::WindowConfig;
use crate::ProcessorError;
use tally_accounting::carbon::CarbonConfig;
use tally_accounting::pricing::{Catalogue, PriceOverride, SHIPPED_CATALOGUE_VERSION};

/// Settings of the processor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Kafka consumer group; more processes in one group share the partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// This process's stable name: its transactional id is `<group_id>-<instance_id>`, so a
    /// restarted instance fences (aborts) what its previous life left open. Give every
    /// instance of a group its own name; the default is the host name.
    #[serde(default = "default_instance_id")]
    pub instance_id: String,
    /// How often a transaction commits (and so how stale the outputs may be), milliseconds.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// Most records in one transaction.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Kafka's transaction timeout, milliseconds: how long a transaction left open by a
    /// crashed process blocks readers before the broker aborts it.
    #[serde(default = "default_transaction_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// Consumer group session timeout, milliseconds.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// Compression codec of every record the stages write (enriched calls, spend windows,
    /// signals, alerts, changelogs): none, gzip, snappy, lz4 or zstd. Readers need no
    /// setting; Kafka records the codec with each batch. lz4 by default: against zstd it
    /// took about a fifth less of the processor's CPU and wrote about 1.5 times the bytes
    /// (BENCHMARKS.md, "Processor"); choose zstd where topic bytes cost more than CPU.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Address of a Prometheus `/metrics` endpoint (`127.0.0.1:9464`); none by default.
    #[serde(default)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Label sets (tenant, team, model, provider, region) of the business metrics kept per
    /// partition; calls of any further one are counted under `other`.
    #[serde(default = "default_business_metrics_max_series")]
    pub business_metrics_max_series: usize,
    /// Prices.
    #[serde(default)]
    pub pricing: PricingConfig,
    /// Energy and carbon.
    #[serde(default)]
    pub carbon: CarbonConfig,
    /// Spend windows.
    #[serde(default)]
    pub windows: WindowConfig,
    /// Team budgets.
    #[serde(default)]
    pub budgets: Vec<BudgetConfig>,
    /// Roles and their expected usage, for review alerts.
    #[serde(default)]
    pub roles: RolesConfig,
    /// Runaway-agent detection (the `detect` stage).
    #[serde(default)]
    pub detect: DetectConfig,
    /// How long and how many event ids the enrich stage remembers to drop repeats (`[dedup]`).
    #[serde(default)]
    pub dedup: DedupConfig,
    /// Kafka to consume from and produce to.
    #[serde(default)]
    pub kafka: KafkaConfig,
}

/// Where prices come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    /// A catalogue in LiteLLM's `model_prices_and_context_window.json` format, instead of the
    /// shipped snapshot.
    #[serde(default)]
    pub catalogue: Option<PathBuf>,
    /// Version recorded for that catalogue (default: its file name).
    #[serde(default)]
    pub catalogue_version: Option<String>,
    /// Negotiated or private prices, optionally effective-dated; they win over the catalogue.
    #[serde(default)]
    pub overrides: Vec<PriceOverride>,
}

fn default_group_id() -> String {
    "tally-processor".to_string()
}
fn default_instance_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "processor".to_string())
}
fn default_commit_interval_ms() -> u64 {
    500
}
fn default_max_batch() -> usize {
    20_000
}
fn default_transaction_timeout_ms() -> u64 {
    30_000
}
fn default_business_metrics_max_series() -> usize {
    1_000
}
fn default_session_timeout_ms() -> u64 {
    10_000
}
fn default_compression() -> String {
    "lz4".to_string()
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            group_id: default_group_id(),
            instance_id: default_instance_id(),
            commit_interval_ms: default_commit_interval_ms(),
            max_batch: default_max_batch(),
            transaction_timeout_ms: default_transaction_timeout_ms(),
            session_timeout_ms: default_session_timeout_ms(),
            compression: default_compression(),
            metrics_listen: None,
            business_metrics_max_series: default_business_metrics_max_series(),
            pricing: PricingConfig::default(),
            carbon: CarbonConfig::default(),
            windows: WindowConfig::default(),
            budgets: Vec::new(),
            roles: RolesConfig::default(),
            detect: DetectConfig::default(),
            dedup: DedupConfig::default(),
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
        let bad = |msg: &str| Err(ProcessorError::Config(msg.to_string()));
        if self.group_id.trim().is_empty() {
            return bad("group_id must not be empty");
        }
        if self.instance_id.trim().is_empty() {
            return bad("instance_id must not be empty");
        }
        if self.kafka.brokers.trim().is_empty() {
            return bad("kafka.brokers must name at least one broker");
        }
        if self.commit_interval_ms == 0 || self.max_batch == 0 {
            return bad("commit_interval_ms and max_batch must be at least 1");
        }
        if self.windows.sizes_secs.is_empty() || self.windows.sizes_secs.iter().any(|s| *s <= 0) {
            return bad("windows.sizes_secs must list window lengths of at least 1 second");
        }
        if self.windows.allowed_lateness_secs < 0 || self.windows.max_out_of_order_secs < 0 {
            return bad("windows.allowed_lateness_secs and windows.max_out_of_order_secs must not be negative");
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, budget) in self.budgets.iter().enumerate() {
            if !names.insert(budget.name.as_str()) {
                return Err(ProcessorError::Config(format!(
                    "budgets[{i}].name {:?} is taken by an earlier budget: budgets are known by name",
                    budget.name
                )));
            }
            if budget.amount_usd.is_negative() || budget.amount_usd.is_zero() {
                return Err(ProcessorError::Config(format!(
                    "budgets[{i}] ({}).amount_usd must be more than 0",
                    budget.name
                )));
            }
            if budget.thresholds_percent.contains(&0) {
                return Err(ProcessorError::Config(format!(
                    "budgets[{i}] ({}).thresholds_percent must be at least 1",
                    budget.name
                )));
            }
        }
        for (user, role) in &self.roles.users {
            if !self.roles.expected_tokens_per_day.contains_key(role) {
                return Err(ProcessorError::Config(format!(
                    "roles.users.{user}: role {role:?} has no roles.expected_tokens_per_day entry"
                )));
            }
        }
        if !COMPRESSIONS.contains(&self.compression.as_str()) {
            return Err(ProcessorError::Config(format!(
                "compression must be one of {}, not {:?}",
                COMPRESSIONS.join(", "),
                self.compression
            )));
        }
        self.detect.validate().map_err(ProcessorError::Config)?;
        Ok(())
    }

    /// The catalogue these settings name, with the overrides applied.
    pub fn catalogue(&self) -> Result<Catalogue, ProcessorError> {
        let catalogue = match &self.pricing.catalogue {
            None => Catalogue::shipped(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ProcessorError::Config(format!("pricing.catalogue {}: {e}", path.display()))
                })?;
                let version = self.pricing.catalogue_version.clone().unwrap_or_else(|| {
                    path.file_name()
                        .map_or(SHIPPED_CATALOGUE_VERSION.to_string(), |n| {
                            n.to_string_lossy().into_owned()
                        })
                });
                Catalogue::from_litellm_json(&text, &version).map_err(|e| {
                    ProcessorError::Config(format!("pricing.catalogue {}: {e}", path.display()))
                })?
            }
        };
        catalogue
            .with_overrides(&self.pricing.overrides)
            .map_err(ProcessorError::Config)
    }

    /// The transactional id of this instance.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.group_id, self.instance_id)
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
                r#"
group_id = "g1"
instance_id = "a"
[kafka]
topic_prefix = "dev."
[carbon]
wh_per_1k_tokens = "2"
grid_g_per_kwh = 480
[[pricing.overrides]]
model = "private-llm"
effective_from = "2026-01-01T00:00:00Z"
rates = { input_cost_per_token = "1e-06", output_cost_per_token = "2e-06" }
"#,
            )?;
            jail.set_env("TALLY__GROUP_ID", "g2");
            let config: ProcessorConfig = load(Some(Path::new("p.toml"))).unwrap();
            assert_eq!(config.group_id, "g2");
            assert_eq!(config.transactional_id(), "g2-a");
            assert_eq!(config.kafka.topic_prefix, "dev.");
            assert_eq!(config.carbon.wh_per_1k_tokens, Some("2".parse().unwrap()));
            assert_eq!(config.carbon.grid_g_per_kwh, Some("480".parse().unwrap()));
            let catalogue = config.catalogue().unwrap();
            assert!(catalogue.version().contains("+overrides-"));
            Ok(())
        });
    }

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("processor.example.toml");
        Jail::expect_with(|_| {
            let config: ProcessorConfig = load(Some(&path)).unwrap();
            config.validate().unwrap();
            assert_eq!(config.budgets[0].amount_usd, "50000".parse().unwrap());
            assert_eq!(config.windows, crate::windows::WindowConfig::default());
            let catalogue = config.catalogue().unwrap();
            assert!(catalogue.version().contains("+overrides-"));
            tally_accounting::carbon::CarbonModel::new(config.carbon.clone()).unwrap();
            // The [detect] blocks show the defaults; the override applies to its workflow.
            let defaults = DetectConfig::default();
            assert_eq!(config.detect.signals, defaults.signals);
            assert_eq!(config.detect.critical_cost_usd, defaults.critical_cost_usd);
            let nightly = config.detect.settings_for("research", Some("nightly-eval"));
            assert_eq!(nightly.retry_storm.max_attempts, 20);
            assert!(!nightly.usage_spike.enabled);
            Ok(())
        });
    }

    #[test]
    fn a_mistyped_detector_key_is_refused_by_name() {
        Jail::expect_with(|jail| {
            jail.create_file("p.toml", "[detect.retry_storm]\nmax_attemps = 3\n")?;
            let error = load::<ProcessorConfig>(Some(Path::new("p.toml"))).unwrap_err();
            assert!(error.to_string().contains("max_attemps"), "{error}");
            jail.create_file("q.toml", "[detect]\nquiet_period = 3\n")?;
            let error = load::<ProcessorConfig>(Some(Path::new("q.toml"))).unwrap_err();
            assert!(error.to_string().contains("quiet_period"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn invalid_settings_are_named() {
        let config = ProcessorConfig {
            group_id: " ".into(),
            ..ProcessorConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("group_id"));
        let unknown_codec = ProcessorConfig {
            compression: "brotli".into(),
            ..ProcessorConfig::default()
        };
        assert_eq!(
            unknown_codec.validate().unwrap_err().to_string(),
            ProcessorError::Config(
                "compression must be one of none, gzip, snappy, lz4, zstd, not \"brotli\"".into()
            )
            .to_string()
        );
        let missing = ProcessorConfig {
            pricing: PricingConfig {
                catalogue: Some("/nonexistent/prices.json".into()),
                ..PricingConfig::default()
            },
            ..ProcessorConfig::default()
        };
        let err = missing.catalogue().unwrap_err().to_string();
        assert!(
            err.contains("pricing.catalogue /nonexistent/prices.json"),
            "{err}"
        );
    }
}
