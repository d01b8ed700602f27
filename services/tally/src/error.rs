//! The one error type of the `tally` binary: whatever stopped the command, with its reason.

/// Why a `tally` command failed.
#[must_use]
#[derive(Debug, thiserror::Error)]
pub enum TallyError {
    /// Configuration, Kafka administration or encoding.
    #[error(transparent)]
    Contract(#[from] tally_contract::ContractError),
    /// The ingest service stopped.
    #[error(transparent)]
    Ingest(#[from] tally_ingest::IngestError),
    /// The processor stopped.
    #[error(transparent)]
    Processor(#[from] tally_processor::ProcessorError),
    /// The price catalogue or the carbon model could not be built.
    #[error(transparent)]
    Accounting(#[from] tally_accounting::AccountingError),
    /// The notifier stopped.
    #[error(transparent)]
    Notify(#[from] tally_notify::NotifyError),
    /// The embedded pipeline or store stopped.
    #[error(transparent)]
    Embedded(#[from] tally_embedded::EmbeddedError),
    /// The sink stopped.
    #[error(transparent)]
    Sink(#[from] tally_sink::SinkError),
    /// A report could not be made.
    #[error(transparent)]
    Report(#[from] tally_report::ReportError),
    /// A command-line value is out of range.
    #[error("{0}")]
    Usage(String),
}
