//! The ingest service: where every LLM call, deploy and ticket enters tally.
//!
//! Reads like the data's path: HTTP in ([`server`]; OTLP/gRPC in [`otlp_grpc`]) → authenticate ([`auth`]) → parse
//! ([`body`], [`otlp`], [`github`]) → validate and normalise ([`llm_call`], [`usage`],
//! [`events`]) → drop duplicates ([`dedup`]) → Avro single-object encode and produce to Kafka
//! ([`producer`]), answering 202 only after the broker acknowledged every record.
//!
//! What it must not do: keep raw text, or price anything. Prompt, completion, tool-argument
//! and ticket-title text is fingerprinted and dropped here; pricing and carbon happen
//! downstream, so a catalogue update never needs a re-ingest.
pub mod auth;
pub mod body;
mod config;
pub mod dedup;
mod error;
pub mod events;
pub mod fingerprint;
pub mod github;
pub mod limits;
mod listener;
pub mod llm_call;
pub mod metrics;
pub mod otlp;
pub mod otlp_grpc;
pub mod producer;
pub mod record;
pub mod server;
pub mod usage;

pub use config::{ApiKeyConfig, HttpLimits, IngestConfig, ProducerConfig};
pub use error::IngestError;
pub use server::Server;

/// Runs the ingest service until SIGINT or SIGTERM, then drains and flushes.
pub async fn run(config: IngestConfig) -> Result<(), IngestError> {
    let server = Server::bind(config).await?;
    tracing::info!(address = %server.local_addr(), "ingest listening");
    server.serve(shutdown_signal()).await?;
    tracing::info!("ingest stopped");
    Ok(())
}

async fn shutdown_signal() {
    tally_contract::shutdown::signal().await;
    tracing::info!("shutting down: no new requests; finishing the ones in flight");
}
