//! The one error type of the ingest service.

/// What stops the ingest service.
#[must_use]
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A setting is invalid; names the key and the reason.
    #[error("invalid ingest configuration: {0}")]
    Config(String),
    /// The shared contract failed (config loading, Kafka administration, encoding).
    #[error(transparent)]
    Contract(#[from] tally_contract::ContractError),
    /// The HTTP endpoints are not part of this build yet.
    #[error("the ingest service's HTTP endpoints are not built yet (the ingest issue tracks them); nothing was started")]
    NotAvailable,
}
