//! The ClickHouse sink: consume derived topics → batch → insert → commit offsets only after
//! ClickHouse acknowledged. The pipeline arrives with the sink issue; this crate has its
//! configuration and error type.
mod config;
mod error;

pub use config::SinkConfig;
pub use error::SinkError;

/// Runs the sink until shutdown.
pub async fn run(config: SinkConfig) -> Result<(), SinkError> {
    config.validate()?;
    Err(SinkError::NotAvailable)
}
