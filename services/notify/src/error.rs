//! The one error type of the notifier: what stops `tally notify`. A delivery that fails is not
//! an error here — it becomes a dead letter (see [`crate::worker`]).

/// What stops the notifier, or keeps it from starting.
#[must_use]
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A setting is invalid; names the key and the reason (never a URL or a token). Fix the
    /// configuration: retrying cannot help.
    #[error("invalid notify configuration: {0}")]
    Config(String),
    /// The shared contract failed (config loading, encoding).
    #[error(transparent)]
    Contract(#[from] tally_contract::ContractError),
    /// Kafka refused or failed an operation; starting again may help.
    #[error("kafka {operation} failed: {reason}")]
    Kafka {
        operation: &'static str,
        reason: String,
    },
    /// The HTTP client could not be built (TLS set-up, say).
    #[error("http client for destination `{destination}`: {reason}")]
    Http { destination: String, reason: String },
    /// An alert of a schema version this notifier does not know (a newer tally wrote it): it
    /// stops before it, committing nothing past it; upgrade tally notify.
    #[error("{topic} partition {partition} offset {offset}: {reason}")]
    NewerRecord {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    /// A task of the notifier panicked.
    #[error("{0} panicked")]
    Panicked(String),
}

impl NotifyError {
    /// Whether starting again may help (Kafka failures may; bad settings do not).
    pub fn is_retryable(&self) -> bool {
        matches!(self, NotifyError::Kafka { .. })
    }

    pub(crate) fn kafka(operation: &'static str, error: impl std::fmt::Display) -> NotifyError {
        NotifyError::Kafka {
            operation,
            reason: error.to_string(),
        }
    }
}
