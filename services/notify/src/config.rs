//! Configuration of the notifier (`tally notify --config FILE`): the consumer group, the
//! delivery rules (dedup, retries) and the destinations. URLs and tokens are secrets: they
//! come from the file or, better, from environment variables named in it, and no `Debug`,
//! log line or error message of this crate ever shows them.
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tally_contract::config::{ServiceConfig, KAFKA_BROKERS_ENV};
use tally_contract::kafka::KafkaConfig;
use tally_contract::records::{AlertKind, Severity};

use crate::retry::RetryPolicy;
use crate::NotifyError;

/// Settings of the notifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Kafka consumer group; processes in one group share the alert topic's partitions.
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Where a group without committed offsets starts reading: `earliest` (default: nothing
    /// emitted while no notifier ran is lost) or `latest`. Once the group has committed
    /// offsets it always resumes from them.
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// Alerts emitted longer ago than this, in seconds, are skipped (counted as stale), so a
    /// new group reading from the start of the topic does not page for last week. 0: no limit.
    #[serde(default = "default_max_alert_age_secs")]
    pub max_alert_age_secs: u64,
    /// A repeated `firing` of an alert already delivered to a destination is suppressed for
    /// this many seconds (unless its severity rose); after that it is delivered again as a
    /// reminder. 0 delivers every firing. Destinations may override it.
    #[serde(default = "default_renotify_interval_secs")]
    pub renotify_interval_secs: u64,
    /// Alerts each destination remembers for deduplication; past this, the oldest are
    /// forgotten first (a forgotten alert's next firing is delivered again).
    #[serde(default = "default_dedup_max_entries")]
    pub dedup_max_entries: usize,
    /// Alerts waiting per destination. When a destination's queue is full, reading from Kafka
    /// waits for it (memory stays bounded); the other destinations keep their own queues.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// How failed requests are retried.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Address of a Prometheus `/metrics` endpoint (`127.0.0.1:9466`); none by default.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Where alerts go: each alert is delivered to every destination whose filters it passes.
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
    /// Kafka to consume alerts from and to write dead letters to.
    #[serde(default)]
    pub kafka: KafkaConfig,
}

/// Where a consumer group without committed offsets starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    /// The oldest alert the topic still holds.
    #[default]
    Earliest,
    /// Only alerts written after the group first joined.
    Latest,
}

impl OffsetReset {
    /// The librdkafka `auto.offset.reset` value.
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

/// Retries of one delivery: exponential backoff with jitter on 408, 429, 5xx, timeouts and
/// connection errors; other answers are final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts per alert and destination, the first included; then it is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Backoff before the second attempt, in milliseconds; it doubles with each retry.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Longest backoff, in milliseconds (also the most a `Retry-After` header is honoured).
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Timeout of one request, connecting to reading the answer, in milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

/// What a destination speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    /// A generic JSON POST of the alert.
    Webhook,
    /// A Slack (or compatible) incoming webhook.
    Slack,
    /// Prometheus Alertmanager's v2 API; the URL is the base (`http://am:9093`).
    Alertmanager,
}

impl DestinationKind {
    /// The kind as the configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Webhook => "webhook",
            DestinationKind::Slack => "slack",
            DestinationKind::Alertmanager => "alertmanager",
        }
    }
}

/// One place alerts are delivered to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Name in logs, metrics and dead letters (letters, digits, `_`, `-`, `.`); unique.
    pub name: String,
    /// `webhook`, `slack` or `alertmanager`.
    pub kind: DestinationKind,
    /// The URL (for `alertmanager`, the base URL). A secret: prefer `url_env`. Set exactly
    /// one of `url` and `url_env`.
    #[serde(default)]
    pub url: Option<Secret>,
    /// Name of the environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// Name of the environment variable holding a bearer token, sent as
    /// `Authorization: Bearer <token>` (`webhook` and `alertmanager` only).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Only alerts at least this severe are delivered: `info` (default), `warning`,
    /// `critical`. A `resolved` alert is delivered wherever its `firing` was.
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    /// Only alerts of these kinds are delivered (all by default): `budget_threshold`,
    /// `budget_burn_rate`, `usage_review`, `loop_signal`.
    #[serde(default = "default_kinds")]
    pub kinds: Vec<AlertKind>,
    /// This destination's own re-notify interval, in seconds; the global one by default.
    #[serde(default)]
    pub renotify_interval_secs: Option<u64>,
    /// `alertmanager` only: a firing alert is sent with `endsAt` = now + this many seconds
    /// (default 86400), so Alertmanager keeps it firing until the resolve (or this long after
    /// the last reminder) instead of resolving it after its own `resolve_timeout`. Must exceed
    /// the re-notify interval, or the alert would flap resolved between reminders.
    #[serde(default)]
    pub hold_secs: Option<u64>,
}

/// A URL or token: shown as `<redacted>` by `Debug`, never logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it (the request).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A destination's secrets, read from the file or the environment at start-up.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The URL requests go to (for `alertmanager`, `<base>/api/v2/alerts`).
    pub url: Secret,
    /// The bearer token, if any.
    pub token: Option<Secret>,
}

/// Default hold of a firing alert in Alertmanager: a day.
pub const DEFAULT_HOLD_SECS: u64 = 86_400;

fn default_group_id() -> String {
    "tally-notify".to_string()
}

fn default_max_alert_age_secs() -> u64 {
    86_400
}

fn default_renotify_interval_secs() -> u64 {
    4 * 3_600
}

fn default_dedup_max_entries() -> usize {
    100_000
}

fn default_queue_capacity() -> usize {
    1_024
}

fn default_max_attempts() -> u32 {
    6
}

fn default_initial_backoff_ms() -> u64 {
    500
}

fn default_max_backoff_ms() -> u64 {
    30_000
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

fn default_min_severity() -> Severity {
    Severity::Info
}

fn default_kinds() -> Vec<AlertKind> {
    AlertKind::ALL.to_vec()
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            group_id: default_group_id(),
            auto_offset_reset: OffsetReset::default(),
            max_alert_age_secs: default_max_alert_age_secs(),
            renotify_interval_secs: default_renotify_interval_secs(),
            dedup_max_entries: default_dedup_max_entries(),
            queue_capacity: default_queue_capacity(),
            retry: RetryConfig::default(),
            metrics_listen: None,
            destinations: Vec::new(),
            kafka: KafkaConfig::default(),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            request_timeout_ms: default_request_timeout_ms(),
        }
    }
}

impl ServiceConfig for NotifyConfig {
    const ENV_ALIASES: &'static [(&'static str, &'static str)] =
        &[(KAFKA_BROKERS_ENV, "kafka.brokers")];
}

impl RetryConfig {
    /// The backoff schedule these settings describe.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            initial: Duration::from_millis(self.initial_backoff_ms),
            max: Duration::from_millis(self.max_backoff_ms),
        }
    }
}

impl NotifyConfig {
    /// Checks what the types cannot, reading the environment variables the destinations
    /// name: every problem is named by its key, never by a secret's value.
    pub fn validate(&self) -> Result<(), NotifyError> {
        self.resolve().map(|_| ())
    }

    /// Validates, and returns each destination's secrets in configuration order.
    pub fn resolve(&self) -> Result<Vec<Endpoint>, NotifyError> {
        self.validate_settings()?;
        let mut names = BTreeSet::new();
        let mut endpoints = Vec::with_capacity(self.destinations.len());
        for (index, destination) in self.destinations.iter().enumerate() {
            let key = format!("destinations[{index}]");
            if !names.insert(destination.name.as_str()) {
                return Err(config_error(format!(
                    "{key}.name: `{}` is used by an earlier destination; names must be unique",
                    destination.name
                )));
            }
            endpoints.push(destination.resolve(&key, self.renotify_interval_secs)?);
        }
        Ok(endpoints)
    }

    /// The re-notify interval of a destination: its own, or the global one.
    pub fn renotify_interval(&self, destination: &DestinationConfig) -> Duration {
        Duration::from_secs(
            destination
                .renotify_interval_secs
                .unwrap_or(self.renotify_interval_secs),
        )
    }

    fn validate_settings(&self) -> Result<(), NotifyError> {
        if self.group_id.trim().is_empty() {
            return Err(config_error("group_id must not be empty".into()));
        }
        let at_least_one = [
            ("dedup_max_entries", self.dedup_max_entries as u64),
            ("queue_capacity", self.queue_capacity as u64),
            ("retry.max_attempts", u64::from(self.retry.max_attempts)),
            ("retry.initial_backoff_ms", self.retry.initial_backoff_ms),
            ("retry.request_timeout_ms", self.retry.request_timeout_ms),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return Err(config_error(format!("{key} must be at least 1")));
        }
        if self.retry.max_backoff_ms < self.retry.initial_backoff_ms {
            return Err(config_error(format!(
                "retry.max_backoff_ms ({}) must be at least retry.initial_backoff_ms ({})",
                self.retry.max_backoff_ms, self.retry.initial_backoff_ms
            )));
        }
        if self.destinations.is_empty() {
            return Err(config_error(
                "destinations: none configured; add at least one [[destinations]] table".into(),
            ));
        }
        Ok(())
    }
}

impl DestinationConfig {
    /// Validates one destination (`key` is `destinations[i]`) and reads its secrets.
    fn resolve(&self, key: &str, global_renotify_secs: u64) -> Result<Endpoint, NotifyError> {
        self.validate_name(key)?;
        if self.kinds.is_empty() {
            return Err(config_error(format!(
                "{key}.kinds: empty, so nothing would be delivered; omit it for every kind"
            )));
        }
        self.validate_hold(key, global_renotify_secs)?;
        let url = self.url(key)?;
        let token = match (&self.token_env, self.kind) {
            (Some(_), DestinationKind::Slack) => {
                return Err(config_error(format!(
                "{key}.token_env: a slack incoming webhook takes no token (its URL is the secret)"
            )))
            }
            (Some(variable), _) => Some(read_env(&format!("{key}.token_env"), variable)?),
            (None, _) => None,
        };
        Ok(Endpoint { url, token })
    }

    fn validate_name(&self, key: &str) -> Result<(), NotifyError> {
        let valid = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if valid {
            Ok(())
        } else {
            Err(config_error(format!(
                "{key}.name: {:?} must be non-empty letters, digits, `_`, `-` or `.`",
                self.name
            )))
        }
    }

    fn validate_hold(&self, key: &str, global_renotify_secs: u64) -> Result<(), NotifyError> {
        if self.kind != DestinationKind::Alertmanager {
            return match self.hold_secs {
                Some(_) => Err(config_error(format!(
                    "{key}.hold_secs: only an alertmanager destination holds alerts"
                ))),
                None => Ok(()),
            };
        }
        let hold = self.hold();
        let renotify = self.renotify_interval_secs.unwrap_or(global_renotify_secs);
        if hold.as_secs() == 0 || hold.as_secs() <= renotify {
            return Err(config_error(format!(
                "{key}.hold_secs ({}) must exceed the re-notify interval ({renotify} s), or \
                 Alertmanager would resolve a firing alert between reminders",
                hold.as_secs()
            )));
        }
        Ok(())
    }

    /// How long Alertmanager keeps a firing alert without news (alertmanager only).
    pub fn hold(&self) -> Duration {
        Duration::from_secs(self.hold_secs.unwrap_or(DEFAULT_HOLD_SECS))
    }

    /// The URL requests go to, from `url` or `url_env`, checked without ever echoing it.
    fn url(&self, key: &str) -> Result<Secret, NotifyError> {
        let (source, raw) = match (&self.url, &self.url_env) {
            (Some(_), Some(_)) => {
                return Err(config_error(format!(
                    "{key}: set either url or url_env, not both"
                )))
            }
            (None, None) => {
                return Err(config_error(format!("{key}: url_env (or url) is required")))
            }
            (Some(url), None) => (format!("{key}.url"), url.clone()),
            (None, Some(variable)) => (
                format!("{key}.url_env"),
                read_env(&format!("{key}.url_env"), variable)?,
            ),
        };
        let parsed = reqwest::Url::parse(raw.expose().trim()).map_err(|_| {
            config_error(format!("{source}: the value is not a valid absolute URL"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(config_error(format!(
                "{source}: the URL must be http:// or https:// with a host"
            )));
        }
        Ok(match self.kind {
            DestinationKind::Alertmanager => Secret(format!(
                "{}/api/v2/alerts",
                parsed.as_str().trim_end_matches('/')
            )),
            DestinationKind::Webhook | DestinationKind::Slack => Secret(parsed.to_string()),
        })
    }
}

/// Reads a secret from an environment variable; `key` names the setting that names it.
fn read_env(key: &str, variable: &str) -> Result<Secret, NotifyError> {
    match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => Ok(Secret(value.trim().to_string())),
        Ok(_) => Err(config_error(format!(
            "{key}: environment variable {variable} is empty"
        ))),
        Err(_) => Err(config_error(format!(
            "{key}: environment variable {variable} is not set"
        ))),
    }
}

fn config_error(message: String) -> NotifyError {
    NotifyError::Config(message)
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail closures return figment::Error, as it defines
mod tests {
    use super::*;
    use figment::Jail;
    use std::path::Path;
    use tally_contract::config::load;

    const SECRET_URL: &str = "https://hooks.example.com/services/T000/B000/very-secret";

    fn destination(name: &str, kind: DestinationKind) -> DestinationConfig {
        DestinationConfig {
            name: name.into(),
            kind,
            url: Some(Secret::new(SECRET_URL)),
            url_env: None,
            token_env: None,
            min_severity: Severity::Info,
            kinds: default_kinds(),
            renotify_interval_secs: None,
            hold_secs: None,
        }
    }

    fn with(destinations: Vec<DestinationConfig>) -> NotifyConfig {
        NotifyConfig {
            destinations,
            ..NotifyConfig::default()
        }
    }

    fn error_of(config: &NotifyConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn a_file_with_every_kind_of_destination_loads() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "notify.toml",
                r#"
                renotify_interval_secs = 600
                [retry]
                max_attempts = 3
                [[destinations]]
                name = "ops"
                kind = "webhook"
                url_env = "OPS_URL"
                token_env = "OPS_TOKEN"
                [[destinations]]
                name = "slack"
                kind = "slack"
                url_env = "SLACK_URL"
                kinds = ["budget_threshold", "loop_signal"]
                [[destinations]]
                name = "pager"
                kind = "alertmanager"
                url = "http://am.internal:9093/"
                min_severity = "critical"
                hold_secs = 7200
                "#,
            )?;
            jail.set_env("OPS_URL", "https://ops.example.com/hook");
            jail.set_env("OPS_TOKEN", "t0ken");
            jail.set_env("SLACK_URL", SECRET_URL);
            jail.set_env("TALLY_KAFKA_BROKERS", "k:9092");
            let config: NotifyConfig = load(Some(Path::new("notify.toml"))).unwrap();
            assert_eq!(config.kafka.brokers, "k:9092");
            assert_eq!(config.retry.max_attempts, 3);
            assert_eq!(
                config.retry.max_backoff_ms, 30_000,
                "defaults fill the rest"
            );
            assert_eq!(config.destinations[1].kinds.len(), 2);
            assert_eq!(config.destinations[2].min_severity, Severity::Critical);
            let endpoints = config.resolve().unwrap();
            assert_eq!(endpoints[0].token.as_ref().unwrap().expose(), "t0ken");
            assert_eq!(endpoints[1].url.expose(), SECRET_URL);
            assert_eq!(
                endpoints[2].url.expose(),
                "http://am.internal:9093/api/v2/alerts"
            );
            Ok(())
        });
    }

    #[test]
    fn the_example_file_loads_and_states_the_defaults() {
        Jail::expect_with(|jail| {
            for variable in [
                "TALLY_OPS_WEBHOOK_URL",
                "TALLY_SLACK_WEBHOOK_URL",
                "TALLY_ALERTMANAGER_URL",
            ] {
                jail.set_env(variable, "https://example.com/x");
            }
            jail.set_env("TALLY_OPS_WEBHOOK_TOKEN", "t");
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("notify.example.toml");
            let config: NotifyConfig = load(Some(&path)).unwrap();
            assert_eq!(config.resolve().unwrap().len(), 3);
            let defaults = NotifyConfig {
                metrics_listen: config.metrics_listen,
                destinations: config.destinations.clone(),
                ..NotifyConfig::default()
            };
            assert_eq!(config, defaults, "the file shows the defaults");
            Ok(())
        });
    }

    #[test]
    fn defaults_are_earliest_four_hours_six_attempts() {
        let config = NotifyConfig::default();
        assert_eq!(config.group_id, "tally-notify");
        assert_eq!(config.auto_offset_reset, OffsetReset::Earliest);
        assert_eq!(config.renotify_interval_secs, 14_400);
        assert_eq!(config.retry, RetryConfig::default());
        assert_eq!(
            (config.retry.max_attempts, config.retry.request_timeout_ms),
            (6, 10_000)
        );
        assert!(
            error_of(&config).contains("destinations: none configured"),
            "a notifier with nowhere to deliver is a mistake"
        );
    }

    #[test]
    fn a_missing_environment_variable_is_named_with_its_key() {
        Jail::expect_with(|_| {
            let mut slack = destination("slack", DestinationKind::Slack);
            slack.url = None;
            slack.url_env = Some("TALLY_SLACK_URL".into());
            let config = with(vec![destination("ops", DestinationKind::Webhook), slack]);
            assert_eq!(
                error_of(&config),
                "invalid notify configuration: destinations[1].url_env: environment variable \
                 TALLY_SLACK_URL is not set"
            );
            Ok(())
        });
    }

    #[test]
    fn invalid_settings_are_named_by_key() {
        let cases: Vec<(NotifyConfig, &str)> = vec![
            (
                NotifyConfig {
                    retry: RetryConfig {
                        max_attempts: 0,
                        ..RetryConfig::default()
                    },
                    ..with(vec![destination("a", DestinationKind::Webhook)])
                },
                "retry.max_attempts must be at least 1",
            ),
            (
                NotifyConfig {
                    retry: RetryConfig {
                        max_backoff_ms: 10,
                        ..RetryConfig::default()
                    },
                    ..with(vec![destination("a", DestinationKind::Webhook)])
                },
                "retry.max_backoff_ms (10) must be at least retry.initial_backoff_ms (500)",
            ),
            (
                with(vec![
                    destination("a", DestinationKind::Webhook),
                    destination("a", DestinationKind::Slack),
                ]),
                "destinations[1].name: `a` is used by an earlier destination",
            ),
            (
                with(vec![destination("has space", DestinationKind::Webhook)]),
                "destinations[0].name: \"has space\" must be",
            ),
            (
                with(vec![DestinationConfig {
                    url_env: Some("X".into()),
                    ..destination("a", DestinationKind::Webhook)
                }]),
                "destinations[0]: set either url or url_env, not both",
            ),
            (
                with(vec![DestinationConfig {
                    url: None,
                    ..destination("a", DestinationKind::Webhook)
                }]),
                "destinations[0]: url_env (or url) is required",
            ),
            (
                with(vec![DestinationConfig {
                    token_env: Some("X".into()),
                    ..destination("a", DestinationKind::Slack)
                }]),
                "destinations[0].token_env: a slack incoming webhook takes no token",
            ),
            (
                with(vec![DestinationConfig {
                    kinds: vec![],
                    ..destination("a", DestinationKind::Slack)
                }]),
                "destinations[0].kinds: empty",
            ),
            (
                with(vec![DestinationConfig {
                    hold_secs: Some(60),
                    ..destination("a", DestinationKind::Slack)
                }]),
                "destinations[0].hold_secs: only an alertmanager destination",
            ),
            (
                with(vec![DestinationConfig {
                    hold_secs: Some(3_600),
                    ..destination("a", DestinationKind::Alertmanager)
                }]),
                "destinations[0].hold_secs (3600) must exceed the re-notify interval (14400 s)",
            ),
        ];
        for (config, expected) in cases {
            let error = error_of(&config);
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        for bad in [
            "hooks.example.com/very-secret",
            "ftp://hooks.example.com/very-secret",
        ] {
            let config = with(vec![DestinationConfig {
                url: Some(Secret::new(bad)),
                ..destination("a", DestinationKind::Webhook)
            }]);
            let error = error_of(&config);
            assert!(error.contains("destinations[0].url: "), "{error}");
            assert!(!error.contains("very-secret"), "{error}");
        }
    }

    #[test]
    fn debug_output_redacts_urls_and_tokens() {
        Jail::expect_with(|jail| {
            jail.set_env("TOKEN_VAR", "s3cr3t-t0ken");
            let config = with(vec![DestinationConfig {
                token_env: Some("TOKEN_VAR".into()),
                ..destination("ops", DestinationKind::Webhook)
            }]);
            let endpoints = config.resolve().unwrap();
            for text in [format!("{config:?}"), format!("{endpoints:?}")] {
                assert!(!text.contains("very-secret"), "{text}");
                assert!(!text.contains("hooks.example.com"), "{text}");
                assert!(!text.contains("s3cr3t"), "{text}");
                assert!(text.contains("<redacted>"), "{text}");
            }
            Ok(())
        });
    }
}
