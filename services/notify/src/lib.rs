//! Alert delivery (`tally notify`): `Alert` records from Kafka (`tally.alerts.v1`) to
//! on-call — generic webhooks, Slack incoming webhooks and Prometheus Alertmanager.
//!
//! The path of an alert: [`consumer`] reads it (consumer group, `read_committed`) and hands it
//! to every destination's own queue; each destination's [`worker`] filters it (severity,
//! kind), deduplicates it per `alert_id` ([`dedup`]), builds its body ([`payload`]) and POSTs
//! it, retrying 408/429/5xx/timeouts with exponential backoff and jitter ([`retry`],
//! [`deliver`]); an alert a destination will not take after the retry budget goes to the
//! dead-letter topic with the reason ([`dead_letter`]). A partition's offset is committed
//! only past alerts every destination has finished, so delivery is at least once; a
//! destination that is down holds back commits, never the other destinations.
//!
//! Destination URLs and tokens come from the configuration or the environment ([`config`])
//! and appear in no log line, error or dead letter.
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod dedup;
pub mod deliver;
mod error;
pub mod payload;
pub mod retry;
pub mod stats;
pub mod worker;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub use config::NotifyConfig;
pub use error::NotifyError;
pub use stats::Stats;

use crate::consumer::AlertConsumer;
use crate::dead_letter::DeadLetters;
use crate::dedup::Dedup;
use crate::deliver::Destination;
use crate::worker::Worker;

/// Runs the notifier until SIGINT or SIGTERM.
pub async fn run(config: NotifyConfig) -> Result<(), NotifyError> {
    let stats = Arc::new(Stats::new(&config));
    run_until(config, stats, tally_contract::shutdown::signal()).await
}

/// Runs the notifier until `shutdown` completes, counting into `stats` (made with
/// [`Stats::new`] from the same configuration).
///
/// Stopping: no new alert is read or started; a request under way is finished (at most the
/// request timeout), but no retry is; then what every destination finished is committed.
/// Alerts not finished are read again by the next process.
pub async fn run_until(
    config: NotifyConfig,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NotifyError> {
    let endpoints = config.resolve()?;
    if stats.destinations.len() != config.destinations.len() {
        return Err(NotifyError::Config(
            "the stats were made for another configuration".into(),
        ));
    }
    if let Some(address) = config.metrics_listen {
        let stats = stats.clone();
        tally_contract::metrics::serve(address, move || stats.render()).await?;
    }
    let (stop_sender, stop) = watch::channel(false);
    let stop = Stop(stop);
    let dead_letters = DeadLetters::new(&config.kafka)?;
    let (done_sender, done) = mpsc::unbounded_channel();
    let (mut workers, queues) = spawn_workers(
        &config,
        endpoints,
        &dead_letters,
        &stats,
        &stop,
        done_sender,
    )?;
    let mut consumer = AlertConsumer::new(&config, queues, done, dead_letters, stats.clone())?;
    let names: Vec<String> = config
        .destinations
        .iter()
        .map(|d| format!("{} ({})", d.name, d.kind.as_str()))
        .collect();
    tracing::info!(
        topic = consumer.topic(),
        group = %config.group_id,
        destinations = %names.join(", "),
        "notify running"
    );

    let progress = tokio::spawn(progress_log(stats.clone()));
    let outcome = tokio::select! {
        result = consumer.run(&stop) => result,
        _ = shutdown => Ok(()),
    };
    tracing::info!("notify stopping: finishing requests under way, then committing");
    let _ = stop_sender.send(true);
    let mut panicked = None;
    while let Some(result) = workers.join_next().await {
        if let Err(error) = result {
            panicked = Some(NotifyError::Panicked(format!(
                "a destination's worker ({error})"
            )));
        }
    }
    consumer.finish().await;
    progress.abort();
    log_progress(&stats);
    outcome?;
    panicked.map_or(Ok(()), Err)
}

/// One task per destination, each with its own queue (returned in configuration order).
/// The workers hold the only senders of `done`, so it ends when the last worker does.
fn spawn_workers(
    config: &NotifyConfig,
    endpoints: Vec<config::Endpoint>,
    dead_letters: &DeadLetters,
    stats: &Arc<Stats>,
    stop: &Stop,
    done: mpsc::UnboundedSender<consumer::Ticket>,
) -> Result<(JoinSet<()>, Vec<mpsc::Sender<worker::Job>>), NotifyError> {
    let timeout = Duration::from_millis(config.retry.request_timeout_ms);
    let mut workers = JoinSet::new();
    let mut queues = Vec::with_capacity(config.destinations.len());
    for (index, (destination, endpoint)) in config.destinations.iter().zip(endpoints).enumerate() {
        let worker = Worker {
            destination: Destination::new(destination, endpoint, timeout)?,
            dedup: Dedup::new(
                config.renotify_interval(destination),
                config.dedup_max_entries,
            ),
            policy: config.retry.policy(),
            dead_letters: dead_letters.clone(),
            stats: stats.clone(),
            index,
            stop: stop.clone(),
        };
        let (queue, jobs) = mpsc::channel(config.queue_capacity);
        queues.push(queue);
        workers.spawn(worker.run(jobs, done.clone()));
    }
    Ok((workers, queues))
}

/// The stop signal every task of the notifier watches.
#[derive(Clone)]
pub struct Stop(watch::Receiver<bool>);

/// What a task returns when it gave up because the notifier is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl Stop {
    /// Whether the notifier is stopping.
    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes once the notifier is stopping.
    pub async fn wait(&self) {
        let mut receiver = self.0.clone();
        // An error means the sender is gone: the notifier is over, which is a stop too.
        let _ = receiver.wait_for(|stopping| *stopping).await;
    }
}

async fn progress_log(stats: Arc<Stats>) {
    let mut every = tokio::time::interval(Duration::from_secs(10));
    every.tick().await;
    loop {
        every.tick().await;
        log_progress(&stats);
    }
}

fn log_progress(stats: &Stats) {
    tracing::info!(
        consumed = stats.consumed.load(Ordering::Relaxed),
        in_flight = stats.in_flight.load(Ordering::Relaxed),
        delivered = stats.total(|d| &d.delivered),
        suppressed = stats.total(|d| &d.suppressed),
        filtered = stats.total(|d| &d.filtered),
        retries = stats.total(|d| &d.retries),
        dead_letters = stats.total(|d| &d.dead_letters),
        stale = stats.stale.load(Ordering::Relaxed),
        undecodable = stats.undecodable.load(Ordering::Relaxed),
        "notify progress"
    );
}
