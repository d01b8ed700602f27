//! `tally up`: ingest, the processor's stages (with loop detection) and the store, in one
//! process over the journal; a live one-line summary; Ctrl-C stops it after the transactions
//! in progress commit. A crash loses nothing acknowledged: the ingest answers 202 after the
//! request's frame is fsynced, and every stage and table resumes from its committed position.
use std::collections::HashMap;
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

use crate::journal::{Journal, JournalConfig, Readers, Record};
use crate::store::{spawn_tables, Store, StoreConfig, StoreStats};
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
    /// The journal's segment size and how much of it is kept for replay (`[journal]`).
    #[serde(default)]
    pub journal: JournalConfig,
    /// How often the tables are written (`[store]`).
    #[serde(default)]
    pub store: StoreConfig,
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
            journal: JournalConfig::default(),
            store: StoreConfig::default(),
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
    fn destination(&self) -> &'static str {
        "the journal"
    }
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
    /// Instead of `[ingest] otlp_grpc_listen`: OTLP/gRPC's address.
    pub otlp_grpc_listen: Option<SocketAddr>,
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
    if let Some(listen) = options.otlp_grpc_listen {
        ingest.otlp_grpc_listen = Some(listen);
    }
    if ingest.api_keys.is_empty() {
        let exposed = std::iter::once(ingest.listen)
            .chain(ingest.otlp_grpc_listen)
            .find(|address| !address.ip().is_loopback());
        if let Some(address) = exposed {
            return Err(EmbeddedError::Config(format!(
                "listening on {address} needs api_keys in [ingest]: the built-in key `{LOCAL_KEY}` is only for loopback"
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
    let changelogs = [
        tally_processor::stages::STATE_TOPIC,
        tally_processor::stages::DETECT_STATE_TOPIC,
        tally_processor::stages::DEDUP_STATE_TOPIC,
    ]
    .map(|base| tally_processor::changelog::topic_name(&processor, base));
    let journal = Arc::new(Journal::open_with(
        &options.data_dir.join("journal"),
        options.config.journal.clone(),
        &changelogs,
    )?);
    let enricher =
        tally_accounting::enrich::Enricher::new(processor.catalogue()?, processor.carbon.clone())?;
    let stop = Arc::new(AtomicBool::new(false));
    let stage_stats = Arc::new(tally_processor::pipeline::Stats::default());
    let store_stats = Arc::new(StoreStats::default());
    let Running {
        server,
        mut threads,
        consumers,
    } = start_transport(
        &options,
        &ingest,
        &journal,
        processor,
        enricher,
        &stop,
        &stage_stats,
    )
    .await?;
    // `/metrics` of tally up: the ingest's, then the stages' with the business metrics.
    let server = {
        let stage_stats = stage_stats.clone();
        server.with_more_metrics(move || stage_stats.render())
    };
    let store = open_store(&options).await?;
    threads.extend(spawn_tables(
        journal.clone(),
        store,
        prefix.clone(),
        Duration::from_millis(options.config.store.flush_every_ms),
        stop.clone(),
        store_stats.clone(),
    ));
    print_banner(
        &options,
        &ingest,
        server.local_addr(),
        server.grpc_local_addr(),
    );
    let summary_file = options.data_dir.join("summary.json");
    let summary = {
        let (journal, stop, prefix, file) = (
            journal.clone(),
            stop.clone(),
            prefix.clone(),
            summary_file.clone(),
        );
        std::thread::spawn(move || summarise(&journal, &prefix, &file, &stop))
    };
    let retention = {
        let (journal, stop, stats) = (journal.clone(), stop.clone(), store_stats.clone());
        let readers = ReaderSpec {
            stages: consumers,
            tables: crate::store::TABLES
                .iter()
                .map(|t| t.topic.name(&prefix))
                .collect(),
            summary: summary_file,
            summary_topics: [
                Topic::LlmCallsEnriched.name(&prefix),
                Topic::LoopSignals.name(&prefix),
            ],
            changelogs: changelogs.to_vec(),
        };
        std::thread::spawn(move || retain(&journal, &readers, &stats, &stop))
    };
    let served = server.serve(shutdown).await;
    eprintln!("\ntally up: stopping; committing what is in progress");
    stop.store(true, Ordering::SeqCst);
    let mut first_error = served.err().map(EmbeddedError::from);
    for thread in threads {
        let outcome = tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|_| EmbeddedError::Panicked("a thread's joiner"))?
            .unwrap_or(Err(EmbeddedError::Panicked("a thread")));
        if let Err(error) = outcome {
            first_error.get_or_insert(error);
        }
    }
    let _ = summary.join();
    let _ = retention.join();
    first_error.map_or(Ok(()), Err)
}

/// The ingest server and the stage threads of one transport, and who reads which topic of
/// the journal (for its retention).
struct Running {
    server: Server,
    threads: Vec<std::thread::JoinHandle<Result<(), EmbeddedError>>>,
    /// (producer, input topic) of each stage on the journal.
    consumers: Vec<(String, String)>,
}

/// Starts the processor stages on the transport (the journal, or Kafka with the derived
/// topics mirrored into the journal) and binds the ingest server that feeds them.
async fn start_transport(
    options: &UpOptions,
    ingest: &IngestConfig,
    journal: &Arc<Journal>,
    processor: ProcessorConfig,
    enricher: tally_accounting::enrich::Enricher,
    stop: &Arc<AtomicBool>,
    stage_stats: &Arc<tally_processor::pipeline::Stats>,
) -> Result<Running, EmbeddedError> {
    match options.transport {
        Transport::Journal => {
            let stages = crate::runner::spawn_stages(
                journal.clone(),
                processor,
                enricher,
                stop.clone(),
                stage_stats.clone(),
            );
            let mut running = Running {
                server: Server::bind_with(
                    ingest.clone(),
                    Arc::new(JournalPublisher(journal.clone())),
                )
                .await?,
                threads: Vec::new(),
                consumers: Vec::new(),
            };
            for stage in stages {
                running.consumers.push((stage.producer, stage.input));
                running.threads.push(stage.thread);
            }
            Ok(running)
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
                            .map_err(|_| EmbeddedError::Panicked("a stage"))?
                            .map_err(EmbeddedError::from)
                    })
                })
                .collect();
            let (journal, kafka, stop) = (journal.clone(), ingest.kafka.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                crate::mirror::run(&journal, &kafka, &stop)
            }));
            Ok(Running {
                server: Server::bind(ingest.clone()).await?,
                threads,
                consumers: Vec::new(),
            })
        }
    }
}

/// Where the tables go: Parquet under the data directory, or a migrated ClickHouse.
async fn open_store(options: &UpOptions) -> Result<Store, EmbeddedError> {
    Ok(match options.store {
        StoreKind::Parquet => Store::Parquet(options.data_dir.join("store")),
        StoreKind::ClickHouse => {
            let sink = &options.config.sink;
            tally_sink::migrate(sink).await?;
            Store::ClickHouse {
                client: Box::new(tally_sink::sink::client(sink)),
                runtime: tokio::runtime::Handle::current(),
                positions: options.data_dir.join("clickhouse"),
            }
        }
    })
}

/// What a newcomer needs to go on: where to send, where the records go and how to query.
fn print_banner(
    options: &UpOptions,
    ingest: &IngestConfig,
    address: SocketAddr,
    grpc_address: Option<SocketAddr>,
) {
    eprintln!("tally up: listening on http://{address} (API key: {LOCAL_KEY} unless [ingest] api_keys says otherwise)");
    if let Some(grpc_address) = grpc_address {
        eprintln!("           OTLP/gRPC on {grpc_address}");
    }
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
}

/// Who reads what, for the journal's retention.
struct ReaderSpec {
    /// (producer, input topic) of each stage.
    stages: Vec<(String, String)>,
    /// The topics the store's tables are filled from.
    tables: Vec<String>,
    /// The summary line's saved position, and the two topics it reads.
    summary: PathBuf,
    summary_topics: [String; 2],
    changelogs: Vec<String>,
}

impl ReaderSpec {
    /// Each topic's readers and how far each has committed; a reader that has not said yet
    /// counts as at 0, so nothing it may need is deleted.
    fn readers(&self, journal: &Journal, stats: &StoreStats) -> HashMap<String, Readers> {
        let mut readers: HashMap<String, Vec<u64>> = HashMap::new();
        for (producer, input) in &self.stages {
            readers
                .entry(input.clone())
                .or_default()
                .push(journal.position(producer, input));
        }
        let committed = stats.committed.lock().unwrap_or_else(|e| e.into_inner());
        for topic in &self.tables {
            readers
                .entry(topic.clone())
                .or_default()
                .push(committed.get(topic).copied().unwrap_or(0));
        }
        let summary = Summary::load(&self.summary);
        let [calls, signals] = &self.summary_topics;
        readers
            .entry(calls.clone())
            .or_default()
            .push(summary.enriched_at);
        readers
            .entry(signals.clone())
            .or_default()
            .push(summary.signals_at);
        let mut out: HashMap<String, Readers> = readers
            .into_iter()
            .map(|(topic, positions)| (topic, Readers::Consumers(positions)))
            .collect();
        for topic in &self.changelogs {
            out.insert(topic.clone(), Readers::Compacted);
        }
        out
    }
}

/// Every ten seconds, deletes the journal segments every reader is past.
fn retain(journal: &Journal, spec: &ReaderSpec, stats: &StoreStats, stop: &AtomicBool) {
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if last.elapsed() < Duration::from_secs(10) {
            continue;
        }
        last = Instant::now();
        match journal.retain(&spec.readers(journal, stats)) {
            Ok(done) if done.segments_deleted > 0 => tracing::info!(
                segments = done.segments_deleted,
                bytes = done.bytes_deleted,
                copied = done.records_copied,
                "journal retention"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "journal retention failed; it is tried again"),
        }
    }
}

/// What the live summary has counted, saved with the positions it counted up to, so a restart
/// goes on from there (the journal's retention may have deleted what came before).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
struct Summary {
    /// The UTC day (days since the epoch) `spend_today_nanos` is of.
    day: i64,
    spend_today_nanos: i128,
    unpriced_today: u64,
    enriched_at: u64,
    signals_at: u64,
    open_signals: std::collections::BTreeSet<String>,
}

impl Summary {
    fn load(path: &std::path::Path) -> Summary {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Writes it whole (a temporary file renamed over the old one).
    fn save(&self, path: &std::path::Path) {
        let temporary = path.with_extension("json.tmp");
        let written = serde_json::to_vec(self)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temporary, bytes))
            .and_then(|()| std::fs::rename(&temporary, path));
        if let Err(error) = written {
            tracing::warn!(%error, file = %path.display(), "cannot save the summary");
        }
    }

    /// Counts the enriched calls and loop signals the journal has beyond its positions.
    fn catch_up(&mut self, journal: &Journal, enriched: &str, signals: &str) {
        let today = day(now_micros());
        if today != self.day {
            self.day = today;
            self.spend_today_nanos = 0;
            self.unpriced_today = 0;
        }
        while let Ok(records) = journal.read(enriched, self.enriched_at, 10_000) {
            let Some(tail) = records.last() else { break };
            self.enriched_at = tail.offset + 1;
            for record in records {
                let Some(call) = record
                    .payload
                    .and_then(|p| tally_contract::decode::<EnrichedLlmCall>(&p).ok())
                else {
                    continue;
                };
                if day(call.call.occurred_at) == today {
                    match call.cost_total_nanos {
                        Some(cost) => self.spend_today_nanos += i128::from(cost),
                        None => self.unpriced_today += 1,
                    }
                }
            }
        }
        while let Ok(records) = journal.read(signals, self.signals_at, 10_000) {
            let Some(tail) = records.last() else { break };
            self.signals_at = tail.offset + 1;
            for record in records {
                if let Some(signal) = record
                    .payload
                    .and_then(|p| tally_contract::decode::<LoopSignal>(&p).ok())
                {
                    if signal.state == SignalState::Resolved {
                        self.open_signals.remove(&signal.signal_id);
                    } else {
                        self.open_signals.insert(signal.signal_id);
                    }
                }
            }
        }
    }
}

/// The live summary: calls per second, spend today (UTC) and open loop signals.
fn summarise(journal: &Journal, prefix: &str, file: &std::path::Path, stop: &AtomicBool) {
    let enriched = Topic::LlmCallsEnriched.name(prefix);
    let signals = Topic::LoopSignals.name(prefix);
    let mut summary = Summary::load(file);
    let mut last = (Instant::now(), journal.end(&enriched));
    let terminal = std::io::stderr().is_terminal();
    let mut printed = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(1));
        let before = summary.clone();
        summary.catch_up(journal, &enriched, &signals);
        if summary != before {
            summary.save(file);
        }
        let end = journal.end(&enriched);
        let rate = (end - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), end);
        let unpriced = match summary.unpriced_today {
            0 => String::new(),
            n => format!(" (+{n} unpriced calls)"),
        };
        let line = format!(
            "{end} calls, {rate:.0}/s | spend today {}{unpriced} | open loop signals: {}",
            tally_processor::budgets::dollars(summary.spend_today_nanos),
            summary.open_signals.len()
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
