//! The one error type of the accounting.

/// Why a price catalogue or a carbon model could not be built.
#[must_use]
#[derive(Debug, thiserror::Error)]
pub enum AccountingError {
    /// The carbon settings or data (energy coefficients, grid intensities) are invalid;
    /// names the setting or the row and the reason.
    #[error("invalid carbon settings: {0}")]
    Carbon(String),
}
