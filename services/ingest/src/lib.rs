//! The ingest service: where every LLM call, deploy and ticket enters tally.
//!
//! Reads like the data's path: HTTP in → validate and normalise → Avro single-object encode →
//! produce to Kafka, answering only after the broker acknowledged every record. The
//! endpoints arrive with the ingest issue; this crate has its configuration and error type.
mod config;
mod error;

pub use config::IngestConfig;
pub use error::IngestError;

/// Runs the ingest service until shutdown.
pub async fn run(config: IngestConfig) -> Result<(), IngestError> {
    config.validate()?;
    Err(IngestError::NotAvailable)
}
