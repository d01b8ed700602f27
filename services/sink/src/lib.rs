//! The ClickHouse sink and the SQL schema: consume enriched calls → batch → insert into
//! `llm_calls` → commit offsets only after ClickHouse acknowledged ([`sink`]); and
//! `tally migrate`, the numbered migrations of `sql/migrations/` ([`mod@migrate`]).
//!
//! What it must not do: read for people. Reports live in `tally-report`; the sink only
//! writes, and its row types ([`rows`]) are the one Rust description of each table.
mod config;
mod error;
pub mod migrate;
pub mod rows;
pub mod sink;
pub mod tables;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use config::SinkConfig;
pub use error::SinkError;

/// Runs the sink until SIGINT or SIGTERM; what it holds is flushed before it exits.
pub async fn run(config: SinkConfig) -> Result<(), SinkError> {
    config.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(sink::SinkStats::default());
    if let Some(address) = config.metrics_listen {
        let stats = stats.clone();
        tally_contract::metrics::serve(address, move || stats.render()).await?;
    }
    let worker = tokio::spawn(run_tables(config, stop.clone(), stats.clone()));
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
                lag = stats.total_lag(),
                "sink progress"
            ),
        }
    }
    stop.store(true, Ordering::SeqCst);
    worker
        .await
        .map_err(|e| SinkError::Config(format!("the sink panicked: {e}")))?
}

/// Runs the sink of every configured table, until `stop`; the first error stops them all.
pub async fn run_tables(
    config: SinkConfig,
    stop: Arc<AtomicBool>,
    stats: Arc<sink::SinkStats>,
) -> Result<(), SinkError> {
    use tables::*;
    let mut tasks = tokio::task::JoinSet::new();
    for table in &config.tables {
        let (config, stop, stats) = (config.clone(), stop.clone(), stats.clone());
        match table.as_str() {
            "llm_calls" => tasks.spawn(sink::run::<LlmCalls>(config, stop, stats)),
            "deploys" => tasks.spawn(sink::run::<Deploys>(config, stop, stats)),
            "tickets" => tasks.spawn(sink::run::<Tickets>(config, stop, stats)),
            "spend_windows" => tasks.spawn(sink::run::<SpendWindows>(config, stop, stats)),
            "loop_signals" => tasks.spawn(sink::run::<LoopSignals>(config, stop, stats)),
            "alerts" => tasks.spawn(sink::run::<Alerts>(config, stop, stats)),
            other => {
                return Err(SinkError::Config(format!(
                    "tables: unknown table {other:?}; known: {}",
                    ALL.join(", ")
                )))
            }
        };
    }
    while let Some(result) = tasks.join_next().await {
        let result =
            result.map_err(|e| SinkError::Config(format!("a table's sink panicked: {e}")))?;
        if let Err(error) = result {
            stop.store(true, Ordering::SeqCst);
            return Err(error);
        }
    }
    Ok(())
}

/// Applies the embedded migrations to the configured database.
pub async fn migrate(config: &SinkConfig) -> Result<Vec<migrate::Outcome>, SinkError> {
    migrate_on(config, &migrate::Topology::SingleNode).await
}

/// [`migrate()`] for a topology: one server, or a cluster (`tally migrate --cluster`).
pub async fn migrate_on(
    config: &SinkConfig,
    topology: &migrate::Topology,
) -> Result<Vec<migrate::Outcome>, SinkError> {
    let server = sink::client(config).with_database("default");
    migrate::migrate(
        &server,
        &config.clickhouse.database,
        &migrate::Migration::embedded()?,
        topology,
    )
    .await
}
