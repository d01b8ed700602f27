//! The one error type of the processor.

/// What stops the processor.
#[must_use]
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// A setting is invalid; names the key and the reason.
    #[error("invalid processor configuration: {0}")]
    Config(String),
    /// The shared contract failed (config loading, Kafka, decoding).
    #[error(transparent)]
    Contract(#[from] tally_contract::ContractError),
    /// The operators are not part of this build yet.
    #[error("the processor's operators are not built yet (the processor issue tracks them); nothing was started")]
    NotAvailable,
}
