//! The one error type of the reports.

/// Why a report could not be made.
#[must_use]
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// An argument of the report is not one it takes (a dimension, a date); asking again
    /// the same way fails again.
    #[error("{0}")]
    InvalidArgument(String),
    /// The store did not answer the report's query, or answered something unexpected. A
    /// store that was down may answer a retry.
    #[error("{store}: {message}")]
    Query {
        /// `ClickHouse` or `the embedded store`.
        store: &'static str,
        message: String,
    },
}
