//! `tally up`: ingest, the processor's stages (with loop detection) and the store, in one
//! process over the journal; a live one-line summary; Ctrl-C stops it after the transactions
//! in progress commit. A crash loses nothing acknowledged: the ingest answers 202 after the
//! request's frame is fsynced, and every stage and table resumes from its committed position.
use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tally_contract::clock::now_micros;

use serde::{Deserialize, Serialize};
use tally_contract::config::{ServiceConfig, CLICKHOUSE_URL_ENV, KAFKA_BROKERS_ENV};
use tally_contract::records::{EnrichedLlmCall, LoopSignal, Micros, SignalState};
use tally_contract::topics::Topic;
use tally_ingest::producer::{BoxFuture, Outgoing, Publisher};
use tally_ingest::{ApiKeyConfig, IngestConfig, Server};
use tally_processor::ProcessorConfig;
use tally_sink::SinkConfig;

use crate::journal::{Journal, Record};
use crate::store::{spawn_tables, Store, StoreStats};
use crate::EmbeddedError;

/// The API key `tally up` accepts on loopback when the configuration names none.
pub const LOCAL_KEY: &str = "tally-local";

/// The configuration file of `tally up`: each part's settings as its own service reads them.
/// One process has one Kafka: `[ingest.kafka]` (or `TALLY_KAFKA_BROKERS`) serves all parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpConfig {
    /// The team of events sent with the built-in key `tally-local` that name none (an
    /// OpenTelemetry span without `tally.team`, a call without `team`): they are counted
    /// under it, never refused. Keys of `[ingest] api_keys` keep their own team rules.
    #[serde(default = "default_team")]
    pub default_team: String,
    /// The ingest service (`[ingest]`). Without `api_keys`, the key `tally-local` (tenant
    /// `acme`, any team) is accepted, and only on a loopback address.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// The processor: prices, carbon, windows, budgets, loop detection (`[processor]`).
    #[serde(default)]
    pub processor: ProcessorConfig,
    /// The ClickHouse sink (`[sink]`), when `tally up` runs on Kafka and ClickHouse.
    #[serde(default)]
    pub sink: SinkConfig,
}

fn default_team() -> String {
    "unassigned".to_string()
}

impl Default for UpConfig {
    fn default() -> Self {
        UpConfig {
            default_team: default_team(),
            ingest: IngestConfig::default(),
            processor: ProcessorConfig::default(),
            sink: SinkConfig::default(),
        }
    }
}

impl ServiceConfig for UpConfig {
    const ENV_ALIASES: &'static [(&'static str, &'static str)] = &[
        (KAFKA_BROKERS_ENV, "ingest.kafka.brokers"),
        (CLICKHOUSE_URL_ENV, "sink.clickhouse.url"),
    ];
}

/// The journal as the ingest service's destination: a request's records are one frame,
/// durable (fsynced) before the request is answered.
struct JournalPublisher(Arc<Journal>);

impl Publisher for JournalPublisher {
    fn send_all<'a>(&'a self, messages: &'a [Outgoing]) -> BoxFuture<'a, Vec<Result<(), String>>> {
        let journal = self.0.clone();
        let records: Vec<Record> = messages
            .iter()
            .map(|m| Record {
                topic: m.topic.clone(),
                key: m.key.clone().into_bytes(),
                payload: Some(m.payload.clone()),
            })
            .collect();
        Box::pin(async move {
            let n = records.len();
            let outcome =
                tokio::task::spawn_blocking(move || journal.append("ingest", &[], records))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
            vec![outcome; n]
        })
    }

    fn in_flight(&self) -> usize {
        0
    }

    fn reachable(&self, _timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn flush(&self, _timeout: Duration) -> Result<(), String> {
        Ok(())
    }
}

/// What carries records between the parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The journal in the data directory.
    Journal,
    /// Kafka (`[ingest.kafka]`); the derived topics are copied into the journal for the store.
    Kafka,
}

/// Where the tables go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Parquet files in the data directory, for `tally query`.
    Parquet,
    /// ClickHouse (`[sink.clickhouse]`), filled from the journal.
    ClickHouse,
}

/// Where `tally up` runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub data_dir: PathBuf,
    /// Instead of `[ingest] listen`.
    pub listen: Option<SocketAddr>,
    pub config: UpConfig,
    pub transport: Transport,
    pub store: StoreKind,
}

fn sha256_hex(text: &str) -> String {
    tally_ingest::auth::hash_key(text)
}

/// The ingest settings, with the local key when none is configured.
pub fn ingest_config(options: &UpOptions) -> Result<IngestConfig, EmbeddedError> {
    let mut ingest = options.config.ingest.clone();
    if let Some(listen) = options.listen {
        ingest.listen = listen;
    }
    if ingest.api_keys.is_empty() {
        if !ingest.listen.ip().is_loopback() {
            return Err(EmbeddedError::Store(format!(
                "listening on {} needs api_keys in [ingest]: the built-in key `{LOCAL_KEY}` is only for loopback",
                ingest.listen
            )));
        }
        ingest.api_keys.push(ApiKeyConfig {
            name: "tally-up-local".into(),
            sha256: sha256_hex(LOCAL_KEY),
            tenant: "acme".into(),
            team: Some(options.config.default_team.clone()),
            any_team: true,
            rate_limit_per_sec: 1_000_000,
            github_webhook_secret: None,
        });
    }
    Ok(ingest)
}

/// Runs the pipeline until `shutdown` completes.
pub async fn run(
    options: UpOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), EmbeddedError> {
    let ingest = ingest_config(&options)?;
    let mut processor = options.config.processor.clone();
    // One process, one Kafka and one set of topic names: the ingest's.
    processor.kafka = ingest.kafka.clone();
    processor.validate()?;
    let prefix = ingest.kafka.topic_prefix.clone();
    let journal = Arc::new(Journal::open(&options.data_dir.join("journal"))?);
    let enricher =
        tally_processor::enrich::Enricher::new(processor.catalogue()?, processor.carbon.clone())?;
    let stop = Arc::new(AtomicBool::new(false));
    let stage_stats = Arc::new(tally_processor::pipeline::Stats::default());
    let store_stats = Arc::new(StoreStats::default());
    let (server, mut threads) = match options.transport {
        Transport::Journal => {
            let threads = crate::runner::spawn_stages(
                journal.clone(),
                processor,
                enricher,
                stop.clone(),
                stage_stats.clone(),
            );
            let publisher = Arc::new(JournalPublisher(journal.clone()));
            (Server::bind_with(ingest.clone(), publisher).await?, threads)
        }
        Transport::Kafka => {
            tally_contract::kafka::create_topics(&ingest.kafka, Default::default()).await?;
            let mut threads: Vec<std::thread::JoinHandle<Result<(), EmbeddedError>>> =
                tally_processor::spawn_stages(
                    processor,
                    enricher,
                    stop.clone(),
                    stage_stats.clone(),
                )
                .into_iter()
                .map(|stage| {
                    std::thread::spawn(move || {
                        stage
                            .join()
                            .map_err(|_| EmbeddedError::Store("a stage panicked".into()))?
                            .map_err(EmbeddedError::from)
                    })
                })
                .collect();
            let (journal, kafka, stop) = (journal.clone(), ingest.kafka.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                crate::mirror::run(&journal, &kafka, &stop)
            }));
            (Server::bind(ingest.clone()).await?, threads)
        }
    };
    let store = match options.store {
        StoreKind::Parquet => Store::Parquet(options.data_dir.join("store")),
        StoreKind::ClickHouse => {
            let sink = &options.config.sink;
            tally_sink::migrate(sink)
                .await
                .map_err(|e| EmbeddedError::Store(e.to_string()))?;
            Store::ClickHouse {
                client: Box::new(tally_sink::sink::client(sink)),
                runtime: tokio::runtime::Handle::current(),
                positions: options.data_dir.join("clickhouse"),
            }
        }
    };
    threads.extend(spawn_tables(
        journal.clone(),
        store,
        prefix.clone(),
        Duration::from_secs(1),
        stop.clone(),
        store_stats.clone(),
    ));
    let address = server.local_addr();
    eprintln!("tally up: listening on http://{address} (API key: {LOCAL_KEY} unless [ingest] api_keys says otherwise)");
    let transport = match options.transport {
        Transport::Journal => "the journal".to_string(),
        Transport::Kafka => format!("Kafka at {}", ingest.kafka.brokers),
    };
    let store = match options.store {
        StoreKind::Parquet => format!(
            "Parquet in {}; query it with: tally query --data-dir {} \"SELECT team, sum(cost_usd) FROM llm_calls GROUP BY team\"",
            options.data_dir.join("store").display(),
            options.data_dir.display()
        ),
        StoreKind::ClickHouse => format!(
            "ClickHouse at {} (database {})",
            options.config.sink.clickhouse.url, options.config.sink.clickhouse.database
        ),
    };
    eprintln!(
        "           records through {transport} (journal in {}); tables in {store}",
        options.data_dir.join("journal").display()
    );
    let summary = {
        let (journal, stop, prefix) = (journal.clone(), stop.clone(), prefix.clone());
        std::thread::spawn(move || summarise(&journal, &prefix, &stop))
    };
    let served = server.serve(shutdown).await;
    eprintln!("\ntally up: stopping; committing what is in progress");
    stop.store(true, Ordering::SeqCst);
    let mut first_error = served.err().map(EmbeddedError::from);
    for thread in threads {
        let outcome = tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| EmbeddedError::Store(e.to_string()))?
            .unwrap_or_else(|_| Err(EmbeddedError::Store("a thread panicked".into())));
        if let Err(error) = outcome {
            first_error.get_or_insert(error);
        }
    }
    let _ = summary.join();
    first_error.map_or(Ok(()), Err)
}

/// The live summary: calls per second, spend today (UTC) and open loop signals.
fn summarise(journal: &Journal, prefix: &str, stop: &AtomicBool) {
    let enriched = Topic::LlmCallsEnriched.name(prefix);
    let calls = enriched.clone();
    let signals = Topic::LoopSignals.name(prefix);
    let (mut enriched_at, mut signals_at) = (0u64, 0u64);
    let mut spend_today: i128 = 0;
    let mut unpriced_today = 0u64;
    let mut today = day(now_micros());
    let mut open: HashSet<String> = HashSet::new();
    let mut last = (Instant::now(), journal.end(&calls));
    let terminal = std::io::stderr().is_terminal();
    let mut printed = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(1));
        if day(now_micros()) != today {
            today = day(now_micros());
            spend_today = 0;
            unpriced_today = 0;
        }
        while let Ok(records) = journal.read(&enriched, enriched_at, 10_000) {
            let Some(tail) = records.last() else { break };
            enriched_at = tail.offset + 1;
            for record in records {
                let Some(call) = record
                    .payload
                    .and_then(|p| tally_contract::decode::<EnrichedLlmCall>(&p).ok())
                else {
                    continue;
                };
                if day(call.call.occurred_at) == today {
                    match call.cost_total_nanos {
                        Some(cost) => spend_today += i128::from(cost),
                        None => unpriced_today += 1,
                    }
                }
            }
        }
        while let Ok(records) = journal.read(&signals, signals_at, 10_000) {
            let Some(tail) = records.last() else { break };
            signals_at = tail.offset + 1;
            for record in records {
                if let Some(signal) = record
                    .payload
                    .and_then(|p| tally_contract::decode::<LoopSignal>(&p).ok())
                {
                    if signal.state == SignalState::Resolved {
                        open.remove(&signal.signal_id);
                    } else {
                        open.insert(signal.signal_id);
                    }
                }
            }
        }
        let end = journal.end(&calls);
        let rate = (end - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), end);
        let unpriced = match unpriced_today {
            0 => String::new(),
            n => format!(" (+{n} unpriced calls)"),
        };
        let line = format!(
            "{end} calls, {rate:.0}/s | spend today ${}.{:02}{unpriced} | open loop signals: {}",
            spend_today / 1_000_000_000,
            (spend_today % 1_000_000_000) / 10_000_000,
            open.len()
        );
        if terminal {
            eprint!("\r\x1b[K{line}");
            let _ = std::io::stderr().flush();
        } else if printed.elapsed() >= Duration::from_secs(10) {
            eprintln!("{line}");
            printed = Instant::now();
        }
    }
}

fn day(micros: Micros) -> i64 {
    micros.div_euclid(86_400_000_000)
}
