//! The ClickHouse sink and the SQL schema: consume enriched calls → batch → insert into
//! `llm_calls` → commit offsets only after ClickHouse acknowledged ([`sink`]); and
//! `tally migrate`, the numbered migrations of `sql/migrations/` ([`migrate`]).
mod config;
mod error;
pub mod migrate;
pub mod rows;
pub mod sink;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use config::SinkConfig;
pub use error::SinkError;

/// Runs the sink until SIGINT or SIGTERM; what it holds is flushed before it exits.
pub async fn run(config: SinkConfig) -> Result<(), SinkError> {
    config.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(sink::SinkStats::default());
    let worker = tokio::spawn(sink::run(config, stop.clone(), stats.clone()));
    let mut report = tokio::time::interval(std::time::Duration::from_secs(10));
    tokio::pin!(worker);
    let shutdown = tally_contract::shutdown::signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            result = &mut worker => return result.map_err(|e| SinkError::Config(format!("the sink panicked: {e}")))?,
            _ = &mut shutdown => break,
            _ = report.tick() => tracing::info!(
                rows = stats.rows.load(Ordering::Relaxed),
                batches = stats.batches.load(Ordering::Relaxed),
                dead_letters = stats.dead_letters.load(Ordering::Relaxed),
                insert_ms = stats.insert_micros.load(Ordering::Relaxed) / 1000,
                "sink progress"
            ),
        }
    }
    stop.store(true, Ordering::SeqCst);
    worker
        .await
        .map_err(|e| SinkError::Config(format!("the sink panicked: {e}")))?
}

/// Applies the embedded migrations to the configured database.
pub async fn migrate(config: &SinkConfig) -> Result<Vec<migrate::Outcome>, SinkError> {
    let server = sink::client(config).with_database("default");
    migrate::migrate(
        &server,
        &config.clickhouse.database,
        &migrate::Migration::embedded()?,
    )
    .await
}
