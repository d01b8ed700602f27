//! A client of a schema registry's Confluent REST API (Confluent Schema Registry, Karapace,
//! Apicurio's `ccompat` API, Redpanda), and the set-up of a process's wire format
//! ([`crate::wire`]) from its Kafka settings.
//!
//! A writer with `kafka.wire_format = "confluent"` registers the current schema of every
//! topic it writes under the subject `<topic>-value` (TopicNameStrategy, what Kafka Connect,
//! Flink and ksqlDB look for), sets the subject's compatibility to BACKWARD, and frames its
//! records with the id it got. Registering is idempotent: the same schema gets the same id.
//! Any process with `kafka.schema_registry_url` set looks up the ids of the Confluent-framed
//! records it reads there, whatever it writes.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::kafka::KafkaConfig;
use crate::schema::record_schemas;
use crate::topics::Topic;
use crate::wire::{self, Framing, Resolve, WireFormat};
use crate::ContractError;

/// The media type of the Confluent REST API.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// The compatibility tally asks for on its subjects: a new schema reads what the previous
/// one wrote (tally's schemas only add fields with defaults).
pub const COMPATIBILITY: &str = "BACKWARD";
/// How long a writer keeps asking a registry that does not answer at start.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// How often a registration that lost the race to create its subject is sent again.
const RACE_RETRIES: usize = 5;

/// A schema registry, by its base URL (`http://registry:8081`,
/// `http://apicurio:8080/apis/ccompat/v7`).
pub struct SchemaRegistry {
    base: String,
    agent: ureq::Agent,
    /// The `Authorization` header, when the registry wants basic authentication.
    authorization: Option<String>,
}

/// The base URL only: the credentials are never shown.
impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("base", &self.base)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl SchemaRegistry {
    /// A client of the registry at `base`, with `user:password` for basic authentication.
    pub fn new(base: &str, basic_auth: Option<&str>) -> SchemaRegistry {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .tls_config(tls)
            .build()
            .new_agent();
        SchemaRegistry {
            base: base.trim_end_matches('/').to_string(),
            agent,
            authorization: basic_auth.map(|credentials| {
                use base64::Engine;
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(credentials)
                )
            }),
        }
    }

    /// Registers `schema` (JSON text) under `subject`; the registry's id for it. The same
    /// schema registered again gets the same id; one the subject's compatibility refuses is
    /// an error carrying the registry's reason.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, ContractError> {
        let operation = format!("register a schema under subject {subject}");
        let post = || {
            self.call(
                "POST",
                &format!("/subjects/{subject}/versions"),
                Some(json!({ "schema": schema })),
                &operation,
            )
        };
        // Two writers registering a subject the registry has not seen yet race to create it,
        // and Apicurio answers the loser 409 "already exists"; asked again, it adds the
        // version to the subject the winner created (or finds it there).
        let answer = again_after_a_race(post)?;
        id_of(&answer).ok_or_else(|| ContractError::Registry {
            operation,
            reason: format!("the answer {answer} has no numeric id"),
            transient: false,
        })
    }

    /// Sets the compatibility level of `subject` (`BACKWARD`, `FULL`, ...).
    pub fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), ContractError> {
        let operation = format!("set the compatibility of subject {subject} to {level}");
        let put = || {
            self.call(
                "PUT",
                &format!("/config/{subject}"),
                Some(json!({ "compatibility": level })),
                &operation,
            )
        };
        // Two services starting together set the same subject's level at once; Apicurio
        // answers the loser 409 "A rule named 'COMPATIBILITY' already exists", and asked
        // again it updates the rule the winner created.
        again_after_a_race(put).map(drop)
    }

    /// The compatibility level set on `subject`.
    pub fn compatibility(&self, subject: &str) -> Result<String, ContractError> {
        let operation = format!("read the compatibility of subject {subject}");
        let answer = self.call("GET", &format!("/config/{subject}"), None, &operation)?;
        answer["compatibilityLevel"]
            .as_str()
            .or_else(|| answer["compatibility"].as_str())
            .map(str::to_string)
            .ok_or_else(|| ContractError::Registry {
                operation,
                reason: format!("the answer {answer} names no compatibility level"),
                transient: false,
            })
    }

    /// The schema (JSON text) registered under `id`.
    pub fn schema_text(&self, id: u32) -> Result<String, ContractError> {
        let operation = format!("look up schema id {id}");
        let answer = self.call("GET", &format!("/schemas/ids/{id}"), None, &operation)?;
        answer["schema"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ContractError::Registry {
                operation,
                reason: format!("the answer {answer} has no schema"),
                transient: false,
            })
    }

    /// One request; a failure to connect or a 5xx is transient, any other error answer is
    /// not, and names the registry's `error_code` and message.
    fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
        operation: &str,
    ) -> Result<Value, ContractError> {
        let url = format!("{}{path}", self.base);
        let failed = |reason: String, transient: bool| ContractError::Registry {
            operation: operation.to_string(),
            reason,
            transient,
        };
        let sent = match (method, body) {
            ("GET", _) => self.with_headers(self.agent.get(&url)).call(),
            ("PUT", Some(body)) => self
                .with_headers(self.agent.put(&url))
                .header("Content-Type", CONTENT_TYPE)
                .send(body.to_string()),
            (_, body) => self
                .with_headers(self.agent.post(&url))
                .header("Content-Type", CONTENT_TYPE)
                .send(body.unwrap_or(Value::Null).to_string()),
        };
        let mut response = sent.map_err(|e| failed(format!("{url}: {e}"), true))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| failed(format!("{url}: reading the answer: {e}"), true))?;
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        match status {
            200..=299 => Ok(answer),
            _ => Err(failed(
                format!(
                    "{url} answered {status}: {}",
                    answer["message"].as_str().map_or_else(
                        || answer.to_string(),
                        |message| format!("{message} (error_code {})", answer["error_code"])
                    )
                ),
                status >= 500,
            )),
        }
    }
}

impl SchemaRegistry {
    fn with_headers<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        let request = request.header("Accept", CONTENT_TYPE);
        match &self.authorization {
            Some(value) => request.header("Authorization", value),
            None => request,
        }
    }
}

impl Resolve for SchemaRegistry {
    fn schema(&self, id: u32) -> Result<String, ContractError> {
        self.schema_text(id)
    }
}

fn id_of(answer: &Value) -> Option<u32> {
    answer["id"].as_u64().and_then(|id| u32::try_from(id).ok())
}

/// The subject of a topic's record values (TopicNameStrategy).
pub fn subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// The registry these settings name, if any.
pub fn from_config(kafka: &KafkaConfig) -> Option<SchemaRegistry> {
    kafka
        .schema_registry_url
        .as_deref()
        .map(|url| SchemaRegistry::new(url, kafka.schema_registry_basic_auth.as_deref()))
}

/// Sets this process up to read Confluent-framed records: with a registry configured, ids it
/// has not seen are looked up there. Returns whether one is.
pub fn install_reader(kafka: &KafkaConfig) -> bool {
    match from_config(kafka) {
        Some(registry) => {
            wire::install_resolver(Arc::new(registry));
            true
        }
        None => false,
    }
}

/// Sets a writer up: installs the reader side ([`install_reader`]) and, with
/// `wire_format = "confluent"`, registers the current schema of each topic in `writes` under
/// its subject with BACKWARD compatibility; the framing to write with. A registry that does
/// not answer is asked again for 30 s before this gives up.
pub fn writer(kafka: &KafkaConfig, writes: &[Topic]) -> Result<Framing, ContractError> {
    install_reader(kafka);
    if kafka.wire_format == WireFormat::SingleObject {
        return Ok(Framing::SingleObject);
    }
    let registry = from_config(kafka).ok_or_else(|| {
        ContractError::Config(
            "kafka.wire_format = \"confluent\" needs kafka.schema_registry_url".into(),
        )
    })?;
    let began = Instant::now();
    let mut ids = HashMap::new();
    for topic in writes {
        let name = topic.record_name();
        let current = &record_schemas(name)
            .unwrap_or_else(|| panic!("no schema for record {name}"))
            .current;
        let subject = subject(&kafka.topic(*topic));
        let id = patiently(began, || {
            let id = registry.register(&subject, &current.json)?;
            registry.set_compatibility(&subject, COMPATIBILITY)?;
            Ok(id)
        })?;
        wire::learn(id, current.fingerprint);
        tracing::info!(%subject, id, record = name, version = current.version, "schema registered");
        ids.insert(name, id);
    }
    Ok(Framing::Confluent(Arc::new(ids)))
}

/// Runs `attempt` until it succeeds, fails for good, or [`START_PATIENCE`] has passed since
/// `began`.
fn patiently<T>(
    began: Instant,
    mut attempt: impl FnMut() -> Result<T, ContractError>,
) -> Result<T, ContractError> {
    let mut wait = Duration::from_millis(250);
    loop {
        match attempt() {
            Err(error) if error.is_transient() && began.elapsed() < START_PATIENCE => {
                tracing::warn!(%error, retry_in = ?wait, "schema registry unavailable");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// `request`'s answer, asked again (up to `RACE_RETRIES` times, 50 ms apart) while the registry
/// says what it was asked to create "already exists": another writer created it meanwhile.
fn again_after_a_race(
    request: impl Fn() -> Result<Value, ContractError>,
) -> Result<Value, ContractError> {
    let mut answer = request();
    for _ in 0..RACE_RETRIES {
        match &answer {
            Err(ContractError::Registry { reason, .. }) if reason.contains("already exists") => {
                std::thread::sleep(Duration::from_millis(50));
                answer = request();
            }
            _ => break,
        }
    }
    answer
}
