//! The one error type of the ingest service: what stops it from starting or serving.
//! Per-request problems are HTTP answers ([`crate::server`]), not errors of the service.

/// What stops the ingest service.
#[must_use]
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A setting is invalid; names the key and the reason.
    #[error("invalid ingest configuration: {0}")]
    Config(String),
    /// The shared contract failed (config loading, encoding).
    #[error(transparent)]
    Contract(#[from] tally_contract::ContractError),
    /// The Kafka producer could not be created.
    #[error("cannot create the Kafka producer: {0}")]
    Producer(String),
    /// The listen address could not be bound, or serving failed.
    #[error("HTTP server on {address}: {source}")]
    Serve {
        address: String,
        source: std::io::Error,
    },
}
