//! The one error type of the sink.

/// What stops the sink or `tally migrate`.
#[must_use]
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A setting is invalid; names the key and the reason.
    #[error("invalid sink configuration: {0}")]
    Config(String),
    /// The shared contract failed (config loading, encoding).
    #[error(transparent)]
    Contract(#[from] tally_contract::ContractError),
    /// ClickHouse refused an operation.
    #[error("clickhouse: {0}")]
    ClickHouse(String),
    /// The table does not match the rows the sink writes; names the column.
    #[error("schema mismatch: {0}")]
    Schema(String),
    /// A migration could not be read or applied, or was changed after it was applied.
    #[error("migration: {0}")]
    Migration(String),
    /// Kafka refused or failed an operation.
    #[error("kafka: {0}")]
    Kafka(String),
    /// A record of a schema version this sink does not know (a newer tally wrote it): the
    /// table's consumer stops before it, committing nothing past it; upgrade the sink.
    #[error("{topic} partition {partition} offset {offset}: {reason}")]
    NewerRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
}
