//! The stream processor: consume `LlmCall`s → price and carbon-rate them → windows and
//! budgets → produce derived topics, exactly once. The operators arrive with the processor
//! issue; this crate has its configuration and error type.
pub mod carbon;
mod config;
pub mod decimal;
mod error;
pub mod pricing;

pub use config::ProcessorConfig;
pub use error::ProcessorError;

/// Runs the processor until shutdown.
pub async fn run(config: ProcessorConfig) -> Result<(), ProcessorError> {
    config.validate()?;
    Err(ProcessorError::NotAvailable)
}
