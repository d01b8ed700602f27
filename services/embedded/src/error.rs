//! The one error type of `tally up`'s embedded pipeline and store.

/// Why the embedded pipeline or store failed.
#[must_use]
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// A file of the data directory could not be read or written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The journal holds something that is not a frame where a frame must be.
    #[error("the journal is damaged: {0}")]
    Corrupt(String),
    /// The journal could not open, append, read or retain.
    #[error(transparent)]
    Journal(#[from] tally_journal::JournalError),
    /// The price catalogue or the carbon model could not be built.
    #[error(transparent)]
    Accounting(#[from] tally_accounting::AccountingError),
    /// A processor stage failed.
    #[error(transparent)]
    Processor(#[from] tally_processor::ProcessorError),
    /// The ingest service failed.
    #[error(transparent)]
    Ingest(#[from] tally_ingest::IngestError),
    /// Records could not be decoded or rows converted.
    #[error(transparent)]
    Contract(#[from] tally_contract::ContractError),
    /// A setting is invalid for `tally up`; names it and the reason.
    #[error("invalid tally up configuration: {0}")]
    Config(String),
    /// The ClickHouse sink failed (with `--store clickhouse`).
    #[error(transparent)]
    Sink(#[from] tally_sink::SinkError),
    /// A stage or service thread panicked (a defect).
    #[error("{0} panicked")]
    Panicked(&'static str),
    /// Arrow, Parquet or DataFusion refused something.
    #[error("{0}")]
    Store(String),
    /// A query failed; the message is DataFusion's.
    #[error("query failed: {0}")]
    Query(String),
}

impl From<datafusion::error::DataFusionError> for EmbeddedError {
    fn from(error: datafusion::error::DataFusionError) -> Self {
        EmbeddedError::Query(error.to_string())
    }
}
