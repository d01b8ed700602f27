//! The one error type of the processor.

/// What stops the processor (or one session of it).
#[must_use]
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    /// A setting is invalid; names the key and the reason.
    #[error("invalid processor configuration: {0}")]
    Config(String),
    /// The price catalogue or the carbon model could not be built.
    #[error(transparent)]
    Accounting(#[from] tally_accounting::AccountingError),
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
    /// A changelog record is not state this processor can read (another program wrote the
    /// topic, or the record is damaged); starting again reads it again, so it does not help.
    #[error("{changelog}: {reason}")]
    BadState { changelog: String, reason: String },
    /// A stage's state could not be serialised for its changelog (a defect).
    #[error("state does not serialise: {0}")]
    StateEncoding(String),
    /// A changelog could not be read from its store (the journal, under `tally up`).
    #[error("cannot read the changelog: {0}")]
    ChangelogRead(String),
    /// A stage's thread panicked (a defect); its uncommitted work is read again on restart.
    #[error("a stage panicked: {0}")]
    Panicked(String),
    /// The async runtime for the admin client could not start.
    #[error("cannot start a runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Kafka refused or failed an operation; the session starts again from committed offsets.
    #[error("kafka {operation} failed: {reason}")]
    Kafka {
        operation: &'static str,
        reason: String,
    },
}

impl ProcessorError {
    /// Whether starting again may help (Kafka, changelog-read and schema-registry failures may; bad
    /// settings, unreadable state and defects do not).
    pub fn is_retryable(&self) -> bool {
        match self {
            ProcessorError::Kafka { .. } | ProcessorError::ChangelogRead(_) => true,
            // The schema registry did not answer: a record is read again once it does.
            ProcessorError::Contract(error) => error.is_transient(),
            _ => false,
        }
    }
}
