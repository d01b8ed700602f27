//! The ingest service against the real Kafka broker: every endpoint, every usage shape, the
//! records on Kafka decoded and compared field by field.
mod auth;
mod availability;
mod events;
mod harness;
mod hostile;
mod llm_calls;
mod otlp;
