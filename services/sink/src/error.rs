//! The one error type of the sink.

/// What stops the sink.
#[must_use]
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A setting is invalid; names the key and the reason.
    #[error("invalid sink configuration: {0}")]
    Config(String),
    /// The shared contract failed (config loading, Kafka, decoding).
    #[error(transparent)]
    Contract(#[from] tally_contract::ContractError),
    /// The sink pipeline is not part of this build yet.
    #[error(
        "the ClickHouse sink is not built yet (the sink issue tracks it); nothing was started"
    )]
    NotAvailable,
}
