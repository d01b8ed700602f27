//! The one error type of the processor.

/// What stops the processor (or one session of it).
#[must_use]
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// A setting is invalid; names the key and the reason.
    #[error("invalid processor configuration: {0}")]
    Config(String),
    /// The shared contract failed (config loading, encoding).
    #[error(transparent)]
    Contract(#[from] tally_contract::ContractError),
    /// A record of a schema version this processor does not know (a newer tally wrote it):
    /// the stage stops before it, committing nothing past it; upgrade, and it goes on there.
    #[error("{topic} partition {partition} offset {offset}: {reason}")]
    NewerRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    /// Kafka refused or failed an operation; the session starts again from committed offsets.
    #[error("kafka {operation} failed: {reason}")]
    Kafka {
        operation: &'static str,
        reason: String,
    },
}

impl ProcessorError {
    /// Whether starting again may help (Kafka failures may; bad settings do not).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ProcessorError::Kafka { .. })
    }
}
