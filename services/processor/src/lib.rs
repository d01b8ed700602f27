//! The stream processor, three stages run exactly once ([`pipeline`], [`stages`]):
//! `LlmCall`s → priced and carbon-rated `EnrichedLlmCall`s (by `tally_accounting`);
//! enriched calls → event-time spend windows ([`windows`]) and budget and usage alerts
//! ([`budgets`]); and enriched calls → runaway-agent signals and their alerts ([`detect`]).
//!
//! The state machines ([`windows`], [`budgets`], [`detect`]) have no I/O; the pipeline and
//! the [`changelog`]s are the thin Kafka layer around them.
//!
//! What it must not do: make a number of its own. Prices, costs, energy and CO2e come from
//! `tally-accounting`; this crate adds them up in windows and compares them with budgets.
pub mod aggregate_state;
pub mod budgets;
pub mod business;
pub mod changelog;
mod config;
pub mod dedup;
pub mod detect;
mod error;
pub mod pipeline;
pub mod stages;
mod state_codec;
mod state_serde;
pub mod windows;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use config::{PricingConfig, ProcessorConfig};
pub use error::ProcessorError;

/// Runs the processor until SIGINT or SIGTERM; the transaction in progress then commits
/// before it exits.
pub async fn run(config: ProcessorConfig) -> Result<(), ProcessorError> {
    config.validate()?;
    let enricher =
        tally_accounting::enrich::Enricher::new(config.catalogue()?, config.carbon.clone())?;
    tracing::info!(
        catalogue = enricher.catalogue().version(),
        models = enricher.catalogue().len(),
        "price catalogue loaded"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(pipeline::Stats::default());
    if let Some(address) = config.metrics_listen {
        let stats = stats.clone();
        tally_contract::metrics::serve(address, move || stats.render()).await?;
    }
    let handles = spawn_stages(config, enricher, stop.clone(), stats.clone());
    let mut report = tokio::time::interval(Duration::from_secs(10));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = report.tick() => {
                if handles.iter().any(|h| h.is_finished()) {
                    break;
                }
                tracing::info!(
                    consumed = stats.consumed.load(Ordering::Relaxed),
                    enriched = stats.enriched.load(Ordering::Relaxed),
                    unpriced = stats.unpriced.load(Ordering::Relaxed),
                    dead_letters = stats.dead_letters.load(Ordering::Relaxed),
                    windows_emitted = stats.windows_emitted.load(Ordering::Relaxed),
                    alerts = stats.alerts.load(Ordering::Relaxed),
                    loop_signals = stats.loop_signals.load(Ordering::Relaxed),
                    late_events = stats.late_events.load(Ordering::Relaxed),
                    transactions = stats.transactions.load(Ordering::Relaxed),
                    restarts = stats.restarts.load(Ordering::Relaxed),
                    "processor progress"
                );
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut first_error = None;
    for handle in handles {
        let result = tokio::task::spawn_blocking(move || handle.join())
            .await
            .map_err(|e| ProcessorError::Panicked(e.to_string()))?
            .unwrap_or_else(|_| {
                Err(ProcessorError::Panicked(
                    "its thread ended with a panic".into(),
                ))
            });
        if let Err(error) = result {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Starts the stages on threads of their own (enrich, aggregate, and detect unless
/// disabled); they run until `stop` is set, then commit what they hold and return.
pub fn spawn_stages(
    config: ProcessorConfig,
    enricher: tally_accounting::enrich::Enricher,
    stop: Arc<AtomicBool>,
    stats: Arc<pipeline::Stats>,
) -> Vec<std::thread::JoinHandle<Result<(), ProcessorError>>> {
    let mut stages: Vec<Box<dyn pipeline::Stage>> = vec![
        Box::new(stages::EnrichStage::new(enricher)),
        Box::new(stages::AggregateStage::default()),
    ];
    if config.detect.enabled {
        stages.push(Box::new(stages::DetectStage::default()));
    }
    stages
        .into_iter()
        .map(|stage| pipeline::spawn(config.clone(), stage, stop.clone(), stats.clone()))
        .collect()
}

async fn shutdown_signal() {
    tally_contract::shutdown::signal().await;
    tracing::info!("shutting down: committing the transaction in progress");
}
