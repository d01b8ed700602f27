//! The ingest service: where every LLM call, deploy and ticket enters tally.
//!
//! Reads like the data's path: HTTP in ([`server`]) → authenticate ([`auth`]) → parse
//! ([`body`], [`otlp`], [`github`]) → validate and normalise ([`llm_call`], [`usage`],
//! [`events`]) → drop duplicates ([`dedup`]) → Avro single-object encode and produce to Kafka
//! ([`producer`]), answering 202 only after the broker acknowledged every record.
pub mod auth;
pub mod body;
mod config;
mod error;
pub mod events;
pub mod fingerprint;
pub mod github;
pub mod llm_call;
pub mod record;
pub mod usage;

pub use config::{ApiKeyConfig, IngestConfig, ProducerConfig};
pub use error::IngestError;

/// Runs the ingest service until shutdown.
pub async fn run(config: IngestConfig) -> Result<(), IngestError> {
    config.validate()?;
    Err(IngestError::Config("not yet".into()))
}
