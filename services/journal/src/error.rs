//! The one error type of the journal.

/// Why the journal could not open, append, read or retain.
#[must_use]
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file of the journal could not be read or written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The journal holds something that is not a frame where a frame must be.
    #[error("the journal is damaged: {0}")]
    Corrupt(String),
    /// An earlier write failed in a way that leaves the end of the journal unknown, so it
    /// takes no more writes until it is opened again.
    #[error("{0}")]
    Refused(String),
}
