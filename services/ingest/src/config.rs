//! Configuration of the ingest service (`tally ingest --config FILE`).
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tally_contract::config::{ServiceConfig, KAFKA_BROKERS_ENV};
use tally_contract::kafka::{KafkaConfig, COMPRESSIONS};

use crate::IngestError;

/// Settings of the ingest service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Address the HTTP server listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address of the OTLP/gRPC listener (`TraceService/Export`; 4317 is OTLP's port, so
    /// `"0.0.0.0:4317"` in a deployment). Unset: no gRPC listener, OTLP/HTTP only.
    #[serde(default)]
    pub otlp_grpc_listen: Option<SocketAddr>,
    /// Largest request body accepted, in bytes; larger requests get 413 (over gRPC, an
    /// export message larger than this, decompressed, is refused the same way).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How far in the future an `occurred_at` may be, in seconds (clock skew allowed).
    #[serde(default = "default_max_future_skew_secs")]
    pub max_future_skew_secs: u64,
    /// A second record with an `event_id` seen within this many seconds is dropped (counted).
    #[serde(default = "default_dedup_window_secs")]
    pub dedup_window_secs: u64,
    /// At most this many event ids are remembered for deduplication; the oldest go first.
    #[serde(default = "default_dedup_max_entries")]
    pub dedup_max_entries: usize,
    /// Deadline for Kafka to acknowledge a request's records, in milliseconds; past it the
    /// request gets 503 with `Retry-After`.
    #[serde(default = "default_produce_timeout_ms")]
    pub produce_timeout_ms: u64,
    /// `/readyz` reports not ready when more records than this wait for the broker.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// OTLP span or resource attribute that names the team, for keys that may set it.
    #[serde(default = "default_otlp_team_attribute")]
    pub otlp_team_attribute: String,
    /// API keys, stored as SHA-256 hashes. At least one is needed.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Producer tuning.
    #[serde(default)]
    pub producer: ProducerConfig,
    /// Size limits of one record (`[limits]`): a field above one is refused (422 naming it).
    #[serde(default)]
    pub limits: crate::limits::RecordLimits,
    /// Limits of the HTTP server (`[http]`): timeouts, concurrent requests, connections.
    #[serde(default)]
    pub http: HttpLimits,
    /// A listener of its own for `GET /metrics`, `/readyz` and `/healthz` (for example
    /// `127.0.0.1:9464`). When set, the main listener no longer serves `/metrics` or
    /// `/readyz`; when unset, it serves them to loopback clients and to holders of
    /// `metrics_key_sha256` only.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Hex SHA-256 of a bearer key that may read `/metrics` and `/readyz` on the main
    /// listener from another host (a Prometheus on the network). Unset: loopback only.
    #[serde(default)]
    pub metrics_key_sha256: Option<String>,
    /// Kafka to produce to.
    #[serde(default)]
    pub kafka: KafkaConfig,
}

/// What one client may hold of the server: answered 408 (too slow) or 503 (too many), and
/// counted in `tally_ingest_events_rejected_total` and `tally_ingest_connections_refused_total`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLimits {
    /// A connection that has not sent a request's whole headers within this many
    /// milliseconds is closed (a client trickling headers a byte a second).
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// A request not answered within this many milliseconds gets 408: the body read
    /// (however slowly it trickles), parsing and Kafka's acknowledgement all count. Must be
    /// above `produce_timeout_ms`.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Requests handled at once; one more is answered 503 with `Retry-After` at once.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// Open connections; one more is answered 503 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_header_read_timeout_ms() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_max_concurrent_requests() -> usize {
    512
}
fn default_max_connections() -> usize {
    4_096
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout_ms: default_header_read_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            max_concurrent_requests: default_max_concurrent_requests(),
            max_connections: default_max_connections(),
        }
    }
}

/// One API key: who it is and what it may do. The key itself is never stored.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for logs and metrics (never the key).
    pub name: String,
    /// Hex SHA-256 of the key: `printf %s "$KEY" | sha256sum`.
    pub sha256: String,
    /// Tenant every event sent with this key belongs to.
    pub tenant: String,
    /// Team the key's events belong to when they name none; events naming another team are
    /// refused with 403 unless `any_team` is set.
    #[serde(default)]
    pub team: Option<String>,
    /// Whether events may name any team of the tenant.
    #[serde(default)]
    pub any_team: bool,
    /// Events per second this key may send (a burst of one second's worth is allowed).
    #[serde(default = "default_rate_limit_per_sec")]
    pub rate_limit_per_sec: u32,
    /// Secret of GitHub webhooks that authenticate as this key through
    /// `X-Hub-Signature-256` instead of a bearer token.
    #[serde(default)]
    pub github_webhook_secret: Option<String>,
}

impl std::fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("team", &self.team)
            .field("any_team", &self.any_team)
            .field("rate_limit_per_sec", &self.rate_limit_per_sec)
            .field(
                "github_webhook_secret",
                &self.github_webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// librdkafka producer settings; the safety settings (`enable.idempotence=true`, `acks=all`)
/// are fixed and not configurable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProducerConfig {
    /// Compression codec: none, gzip, snappy, lz4 or zstd.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// How long the producer waits to fill a batch, in milliseconds.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u32,
    /// Largest batch per partition, in bytes.
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Most records queued in the producer before sends wait.
    #[serde(default = "default_queue_max_messages")]
    pub queue_max_messages: u32,
    /// Largest record the producer sends, bytes (librdkafka's `message.max.bytes`; keep it at
    /// or below the broker's and the topic's `max.message.bytes`). `[limits]` must keep every
    /// record below it: checked at start.
    #[serde(default = "default_message_max_bytes")]
    pub message_max_bytes: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_body_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_max_future_skew_secs() -> u64 {
    300
}
fn default_dedup_window_secs() -> u64 {
    24 * 3600
}
fn default_dedup_max_entries() -> usize {
    10_000_000
}
fn default_produce_timeout_ms() -> u64 {
    10_000
}
fn default_max_in_flight() -> usize {
    500_000
}
fn default_otlp_team_attribute() -> String {
    "tally.team".to_string()
}
fn default_rate_limit_per_sec() -> u32 {
    10_000
}
fn default_compression() -> String {
    "zstd".to_string()
}
fn default_linger_ms() -> u32 {
    5
}
fn default_batch_size() -> u32 {
    1024 * 1024
}
fn default_queue_max_messages() -> u32 {
    1_000_000
}
fn default_message_max_bytes() -> usize {
    1_000_000
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            compression: default_compression(),
            linger_ms: default_linger_ms(),
            batch_size: default_batch_size(),
            queue_max_messages: default_queue_max_messages(),
            message_max_bytes: default_message_max_bytes(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            otlp_grpc_listen: None,
            max_body_bytes: default_max_body_bytes(),
            max_future_skew_secs: default_max_future_skew_secs(),
            dedup_window_secs: default_dedup_window_secs(),
            dedup_max_entries: default_dedup_max_entries(),
            produce_timeout_ms: default_produce_timeout_ms(),
            max_in_flight: default_max_in_flight(),
            otlp_team_attribute: default_otlp_team_attribute(),
            api_keys: Vec::new(),
            producer: ProducerConfig::default(),
            limits: crate::limits::RecordLimits::default(),
            http: HttpLimits::default(),
            metrics_listen: None,
            metrics_key_sha256: None,
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
        let bad = |msg: String| Err(IngestError::Config(msg));
        if self.max_body_bytes == 0 {
            return bad("max_body_bytes must be at least 1".into());
        }
        if self.produce_timeout_ms == 0 {
            return bad("produce_timeout_ms must be at least 1".into());
        }
        if self.kafka.brokers.trim().is_empty() {
            return bad("kafka.brokers must name at least one broker".into());
        }
        let http = &self.http;
        if http.header_read_timeout_ms == 0
            || http.max_concurrent_requests == 0
            || http.max_connections == 0
        {
            return bad("http.header_read_timeout_ms, http.max_concurrent_requests and http.max_connections must be at least 1".into());
        }
        if http.request_timeout_ms <= self.produce_timeout_ms {
            return bad(format!(
                "http.request_timeout_ms ({}) must be above produce_timeout_ms ({}): a request waits for Kafka within it",
                http.request_timeout_ms, self.produce_timeout_ms
            ));
        }
        if let Some(hash) = &self.metrics_key_sha256 {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(
                    "metrics_key_sha256 must be 64 hex digits (printf %s \"$KEY\" | sha256sum)"
                        .into(),
                );
            }
        }
        // The encoding adds lengths and field markers: a few bytes a field.
        let largest = self.limits.largest_record_bytes() + 16 * 1024;
        if largest > self.producer.message_max_bytes {
            return bad(format!(
                "limits allow a record of about {largest} bytes, more than producer.message_max_bytes ({}): lower [limits] or raise it (and the topic's max.message.bytes)",
                self.producer.message_max_bytes
            ));
        }
        if !COMPRESSIONS.contains(&self.producer.compression.as_str()) {
            return bad(format!(
                "producer.compression must be one of {}, not {:?}",
                COMPRESSIONS.join(", "),
                self.producer.compression
            ));
        }
        if self.api_keys.is_empty() {
            return bad("api_keys: at least one key is needed, or nobody can send events".into());
        }
        for (i, key) in self.api_keys.iter().enumerate() {
            let at = format!("api_keys[{i}] ({})", key.name);
            if key.sha256.len() != 64 || !key.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return bad(format!(
                    "{at}.sha256 must be 64 hex digits (a SHA-256 of the key)"
                ));
            }
            if key.tenant.trim().is_empty() {
                return bad(format!("{at}.tenant must not be empty"));
            }
            if key.team.is_none() && !key.any_team {
                return bad(format!("{at}: set team, or any_team = true"));
            }
            if key.rate_limit_per_sec == 0 {
                return bad(format!("{at}.rate_limit_per_sec must be at least 1"));
            }
            let earlier = self.api_keys[..i]
                .iter()
                .position(|other| other.sha256.eq_ignore_ascii_case(&key.sha256));
            if let Some(earlier) = earlier {
                return bad(format!(
                    "{at}.sha256 is the hash of api_keys[{earlier}] ({}) too: one key, one tenant and team (to rotate a key, add the new key's hash)",
                    self.api_keys[earlier].name
                ));
            }
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

    const KEY_TOML: &str = r#"
[[api_keys]]
name = "gateway"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
tenant = "acme"
team = "payments"
"#;

    #[test]
    fn defaults_listen_on_loopback_with_a_10_mib_body_limit() {
        let config = IngestConfig::default();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.max_body_bytes, 10_485_760);
        assert_eq!(config.dedup_window_secs, 86_400);
        assert_eq!(config.producer.compression, "zstd");
    }

    #[test]
    fn file_and_environment_override_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "ingest.toml",
                &format!("listen = \"0.0.0.0:9999\"\nmax_body_bytes = 1024\n{KEY_TOML}"),
            )?;
            jail.set_env("TALLY_KAFKA_BROKERS", "kafka-1:9092,kafka-2:9092");
            let config: IngestConfig = load(Some(Path::new("ingest.toml"))).unwrap();
            assert_eq!(config.listen.to_string(), "0.0.0.0:9999");
            assert_eq!(config.max_body_bytes, 1024);
            assert_eq!(config.kafka.brokers, "kafka-1:9092,kafka-2:9092");
            assert_eq!(config.api_keys[0].team.as_deref(), Some("payments"));
            assert_eq!(config.api_keys[0].rate_limit_per_sec, 10_000);
            config.validate().unwrap();
            Ok(())
        });
    }

    #[test]
    fn api_keys_come_from_the_environment_as_an_array_of_inline_tables() {
        // How docker-compose (or a Kubernetes secret) hands keys to ingest without a file.
        Jail::expect_with(|jail| {
            jail.set_env(
                "TALLY__API_KEYS",
                r#"[{name = "gateway", sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", tenant = "acme", team = "payments"}, {name = "ci", sha256 = "0000000000000000000000000000000000000000000000000000000000000000", tenant = "acme", any_team = true}]"#,
            );
            let config: IngestConfig = load(None).unwrap();
            config.validate().unwrap();
            assert_eq!(config.api_keys.len(), 2);
            assert_eq!(config.api_keys[0].team.as_deref(), Some("payments"));
            assert!(config.api_keys[1].any_team);
            Ok(())
        });
    }

    #[test]
    fn invalid_settings_are_named() {
        let no_keys = IngestConfig::default();
        assert!(no_keys
            .validate()
            .unwrap_err()
            .to_string()
            .contains("api_keys"));
        Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "listen = \"not an address\"\n")?;
            let err = load::<IngestConfig>(Some(Path::new("bad.toml")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("listen"), "{err}");

            jail.create_file("key.toml", &KEY_TOML.replace("9f86", "zz86"))?;
            let config: IngestConfig = load(Some(Path::new("key.toml"))).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("api_keys[0] (gateway).sha256"), "{err}");

            jail.create_file(
                "teamless.toml",
                &KEY_TOML.replace("team = \"payments\"", ""),
            )?;
            let config: IngestConfig = load(Some(Path::new("teamless.toml"))).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("set team, or any_team = true"), "{err}");

            let mut twice: IngestConfig = load(Some(Path::new("key.toml"))).unwrap();
            twice.api_keys[0].sha256 = crate::auth::hash_key("one-key");
            let mut copy = twice.api_keys[0].clone();
            copy.name = "copy".into();
            copy.sha256 = copy.sha256.to_uppercase();
            twice.api_keys.push(copy);
            let err = twice.validate().unwrap_err().to_string();
            assert!(
                err.contains("api_keys[1] (copy).sha256 is the hash of api_keys[0] (gateway) too"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_example_file_is_valid_and_its_key_hash_matches_its_comment() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("ingest.example.toml");
        Jail::expect_with(|_| {
            let config: IngestConfig = load(Some(&path)).unwrap();
            config.validate().unwrap();
            assert_eq!(
                config.api_keys[0].sha256,
                crate::auth::hash_key("demo-key-payments")
            );
            let defaults = IngestConfig {
                api_keys: config.api_keys.clone(),
                ..IngestConfig::default()
            };
            assert_eq!(config, defaults, "the example shows the defaults");
            Ok(())
        });
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let key = ApiKeyConfig {
            name: "gh".into(),
            sha256: "00".repeat(32),
            tenant: "acme".into(),
            team: None,
            any_team: true,
            rate_limit_per_sec: 1,
            github_webhook_secret: Some("hunter2".into()),
        };
        let debug = format!("{key:?}");
        assert!(
            !debug.contains("hunter2") && debug.contains("<redacted>"),
            "{debug}"
        );
    }
}
