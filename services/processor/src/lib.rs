//! The stream processor: consume `LlmCall`s → price them ([`pricing`]) and rate their energy
//! and CO2e ([`carbon`]) → produce `EnrichedLlmCall`s, exactly once ([`pipeline`]).
//!
//! Pure logic ([`decimal`], [`pricing`], [`carbon`], [`enrich`]) has no I/O; the pipeline is
//! the thin Kafka layer around it.
pub mod budgets;
pub mod carbon;
mod config;
pub mod decimal;
pub mod enrich;
mod error;
pub mod pipeline;
pub mod pricing;
pub mod windows;

use std::sync::atomic::Ordering;
use std::time::Duration;

pub use config::{PricingConfig, ProcessorConfig};
pub use error::ProcessorError;

/// Runs the processor until SIGINT or SIGTERM; the transaction in progress then commits
/// before it exits.
pub async fn run(config: ProcessorConfig) -> Result<(), ProcessorError> {
    config.validate()?;
    let enricher = enrich::Enricher::new(config.catalogue()?, config.carbon.clone())?;
    tracing::info!(
        catalogue = enricher.catalogue().version(),
        models = enricher.catalogue().len(),
        "price catalogue loaded"
    );
    let (stop, stats, handle) = pipeline::spawn(config, enricher);
    let mut report = tokio::time::interval(Duration::from_secs(10));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = report.tick() => {
                if handle.is_finished() {
                    break;
                }
                tracing::info!(
                    consumed = stats.consumed.load(Ordering::Relaxed),
                    enriched = stats.enriched.load(Ordering::Relaxed),
                    unpriced = stats.unpriced.load(Ordering::Relaxed),
                    dead_letters = stats.dead_letters.load(Ordering::Relaxed),
                    transactions = stats.transactions.load(Ordering::Relaxed),
                    restarts = stats.restarts.load(Ordering::Relaxed),
                    "processor progress"
                );
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    tokio::task::spawn_blocking(move || handle.join())
        .await
        .map_err(|e| ProcessorError::Config(format!("the enrich stage panicked: {e}")))?
        .map_err(|_| ProcessorError::Config("the enrich stage panicked".into()))?
}

async fn shutdown_signal() {
    tally_contract::shutdown::signal().await;
    tracing::info!("shutting down: committing the transaction in progress");
}
