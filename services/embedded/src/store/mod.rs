//! The embedded store: each of the sink's tables ([`tally_sink::tables`]) as Parquet files
//! ([`parts`]: by day, with a manifest, merged in levels), or in ClickHouse ([`clickhouse`]),
//! written from the journal by the same record → row conversion as the ClickHouse sink; and
//! consistent snapshots of the files for queries ([`snapshot`]).
//!
//! Exactly once: a flush writes its rows, then records the offset after its last record with
//! them (the Parquet manifest, or ClickHouse's acknowledgement then a position file); a crash in
//! between writes the same records again on restart, and nothing is counted twice (the
//! manifest never listed the first attempt's files; ClickHouse deduplicates the insert).
pub mod clickhouse;
pub mod day_keys;
pub mod parts;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use serde_arrow::schema::{SchemaLike, TracingOptions};
use tally_contract::records::DeadLetter;
use tally_contract::topics::Topic;
use tally_sink::tables::{self, SinkTable};

pub use self::clickhouse::ClickHouseTable;
use self::parts::TableFiles;
use crate::journal::{Journal, Record};
use crate::EmbeddedError;

/// How the Parquet store writes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// How often each table writes what arrived, milliseconds: a file per table and day each
    /// time (merged as they gather), and how soon a query sees a call.
    #[serde(default = "default_flush_every_ms")]
    pub flush_every_ms: u64,
}

fn default_flush_every_ms() -> u64 {
    1_000
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            flush_every_ms: default_flush_every_ms(),
        }
    }
}

/// Most records in one flush.
const FLUSH_RECORDS: usize = 100_000;

/// What the store needs to know of a table beyond the sink's description.
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    pub name: &'static str,
    pub topic: Topic,
    /// Columns holding epoch microseconds: Arrow timestamps (UTC) in the files.
    pub timestamps: &'static [&'static str],
    /// The timestamp column whose day names the partition.
    pub day_column: &'static str,
    /// Columns holding wide integers ([`tally_sink::rows::Wide`]): `Decimal128(38, 0)`.
    pub wide: &'static [&'static str],
    /// The columns of a row's identity: ClickHouse's sorting key of the table, by which
    /// `FINAL` keeps one row (the latest version) per key.
    pub keys: &'static [&'static str],
    /// Whether the identity also holds the day of `day_column` (ClickHouse's sorting key has
    /// `toDate(occurred_at)`).
    pub key_day: bool,
    /// The version column: of two rows with one key, the greater is read.
    pub version: &'static str,
}

const WINDOW_SUMS: &[&str] = &[
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_nanos",
    "energy_uwh_central",
    "co2e_ug_low",
    "co2e_ug_central",
    "co2e_ug_high",
];

/// Every table, as ClickHouse has them.
pub const TABLES: [TableSpec; 6] = [
    TableSpec {
        name: tables::LlmCalls::TABLE,
        topic: tables::LlmCalls::TOPIC,
        timestamps: &["occurred_at", "received_at", "enriched_at"],
        day_column: "occurred_at",
        wide: &[],
        keys: &["tenant", "team", "event_id"],
        key_day: true,
        version: "enriched_at",
    },
    TableSpec {
        name: tables::Deploys::TABLE,
        topic: tables::Deploys::TOPIC,
        timestamps: &["occurred_at", "received_at"],
        day_column: "occurred_at",
        wide: &[],
        keys: &[
            "tenant",
            "team",
            "service",
            "environment",
            "occurred_at",
            "event_id",
        ],
        key_day: false,
        version: "received_at",
    },
    TableSpec {
        name: tables::Tickets::TABLE,
        topic: tables::Tickets::TOPIC,
        timestamps: &["occurred_at", "received_at"],
        day_column: "occurred_at",
        wide: &[],
        keys: &["tenant", "ticket_id", "occurred_at", "event_id"],
        key_day: false,
        version: "received_at",
    },
    TableSpec {
        name: tables::SpendWindows::TABLE,
        topic: tables::SpendWindows::TOPIC,
        timestamps: &["window_start", "emitted_at"],
        day_column: "window_start",
        wide: WINDOW_SUMS,
        keys: &[
            "tenant",
            "team",
            "window_seconds",
            "window_start",
            "dimension",
            "dimension_value",
            "source_partition",
            "source_offset",
        ],
        key_day: false,
        version: "revision",
    },
    TableSpec {
        name: tables::LoopSignals::TABLE,
        topic: tables::LoopSignals::TOPIC,
        timestamps: &["first_event_at", "last_event_at", "emitted_at"],
        day_column: "first_event_at",
        wide: &[],
        keys: &["tenant", "team", "signal_id", "state", "last_event_at"],
        key_day: false,
        version: "emitted_at",
    },
    TableSpec {
        name: tables::Alerts::TABLE,
        topic: tables::Alerts::TOPIC,
        timestamps: &["occurred_at", "emitted_at"],
        day_column: "occurred_at",
        wide: &["amount_nanos", "limit_nanos"],
        keys: &["tenant", "alert_id", "state"],
        key_day: false,
        version: "emitted_at",
    },
];

impl TableSpec {
    /// Whether two rows with one key are always in one day's files: the identity holds the
    /// day, or the column the day is taken from. Then a day's files alone tell whether a key
    /// repeats ([`day_keys`]).
    pub fn key_fixes_the_day(&self) -> bool {
        self.key_day || self.keys.contains(&self.day_column)
    }

    /// The identity as SQL expressions over the table aliased `alias`, ClickHouse's sorting key.
    pub fn key_expressions(&self, alias: &str) -> Vec<String> {
        let mut keys: Vec<String> = self.keys.iter().map(|k| format!("{alias}.{k}")).collect();
        if self.key_day {
            // date_bin: arithmetic on the UTC timestamp, where date_trunc converts each value.
            keys.push(format!(
                "date_bin(INTERVAL '1 day', {alias}.{})",
                self.day_column
            ));
        }
        keys
    }
}

/// The Arrow schema of a table: the row type's fields, epoch-microsecond columns as UTC
/// timestamps.
pub fn schema_of<T: SinkTable>(spec: &TableSpec) -> Result<SchemaRef, EmbeddedError> {
    let options = TracingOptions::default()
        .map_as_struct(false)
        .strings_as_large_utf8(false)
        .sequence_as_large_list(false);
    let traced = Vec::<FieldRef>::from_type::<T::Row>(options)
        .map_err(|e| EmbeddedError::Store(format!("{}: {e}", spec.name)))?;
    let fields: Vec<Field> = traced
        .iter()
        .map(|f| {
            if spec.timestamps.contains(&f.name().as_str()) {
                Field::new(
                    f.name(),
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    f.is_nullable(),
                )
            } else if spec.wide.contains(&f.name().as_str()) {
                Field::new(f.name(), DataType::Decimal128(38, 0), f.is_nullable())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// The schema of a table by name.
pub fn schema(name: &str) -> Result<SchemaRef, EmbeddedError> {
    let spec = spec(name)?;
    match name {
        "llm_calls" => schema_of::<tables::LlmCalls>(spec),
        "deploys" => schema_of::<tables::Deploys>(spec),
        "tickets" => schema_of::<tables::Tickets>(spec),
        "spend_windows" => schema_of::<tables::SpendWindows>(spec),
        "loop_signals" => schema_of::<tables::LoopSignals>(spec),
        _ => schema_of::<tables::Alerts>(spec),
    }
}

fn spec(name: &str) -> Result<&'static TableSpec, EmbeddedError> {
    TABLES
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| EmbeddedError::Store(format!("no table {name}")))
}

pub(crate) fn io(context: String) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    move |source| EmbeddedError::Io { context, source }
}

/// `YYYY-MM-DD` of a day counted from the epoch (Arrow's `Date32`).
pub(crate) fn date_text(days: i32) -> String {
    time::Date::from_julian_day(2_440_588 + days)
        .map(|d| d.to_string())
        .unwrap_or_else(|_| days.to_string())
}

/// Counters of the store's writers, and where each table's writer is in its topic.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub rows: AtomicU64,
    pub files: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Topic → the offset after the last record its table committed (retention may delete
    /// the journal's records below it). A table missing here has not opened yet.
    pub committed: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl StoreStats {
    fn set_committed(&self, topic: &str, offset: u64) {
        self.committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_string(), offset);
    }
}

/// Where a table's rows go: Parquet files, or ClickHouse.
pub trait Destination<T: SinkTable> {
    /// The offset of the topic after the last record written.
    fn committed(&self) -> Result<u64, EmbeddedError>;
    /// Writes the rows of records `from..to` of the topic, then records `to` as committed.
    fn write(&mut self, rows: &[T::Row], from: u64, to: u64) -> Result<(), EmbeddedError>;
}

/// The table's Parquet files.
pub struct ParquetTable {
    files: TableFiles,
    fields: Vec<FieldRef>,
}

impl ParquetTable {
    /// Opens the table's files under `store`.
    pub fn open<T: SinkTable>(store: &Path) -> Result<ParquetTable, EmbeddedError> {
        let spec = *spec(T::TABLE)?;
        let fields = schema_of::<T>(&spec)?.fields().iter().cloned().collect();
        Ok(ParquetTable {
            files: TableFiles::open(store, spec)?,
            fields,
        })
    }
}

impl<T: SinkTable> Destination<T> for ParquetTable {
    fn committed(&self) -> Result<u64, EmbeddedError> {
        Ok(self.files.committed())
    }

    fn write(&mut self, rows: &[T::Row], from: u64, to: u64) -> Result<(), EmbeddedError> {
        // Arrow takes the wide integers as decimal text.
        let batch =
            tally_sink::rows::Wide::as_text(|| serde_arrow::to_record_batch(&self.fields, &rows))
                .map_err(|e| EmbeddedError::Store(format!("{}: {e}", T::TABLE)))?;
        self.files.write(&batch, from, to)
    }
}

/// Fills one table from its topic in the journal until `stop`: reads up to
/// `FLUSH_RECORDS` records (or what `flush_every` gathered), converts them as the ClickHouse
/// sink does, and hands them to `destination`. A record that does not decode goes to the
/// dead-letter topic with the reason.
pub fn run_table<T: SinkTable>(
    journal: &Journal,
    destination: &mut dyn Destination<T>,
    topic_prefix: &str,
    flush_every: Duration,
    stop: &AtomicBool,
    stats: &StoreStats,
) -> Result<(), EmbeddedError> {
    let topic = T::TOPIC.name(topic_prefix);
    let dead_letters = Topic::DeadLetter.name(topic_prefix);
    let mut position = destination.committed()?;
    stats.set_committed(&topic, position);
    let mut last_flush = Instant::now();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        journal.wait(&topic, position, flush_every);
        let waiting = journal.end(&topic).saturating_sub(position);
        let due = last_flush.elapsed() >= flush_every || waiting >= FLUSH_RECORDS as u64;
        if waiting == 0 || !(due || stopping) {
            if stopping {
                return Ok(());
            }
            continue;
        }
        let records = journal.read(&topic, position, FLUSH_RECORDS)?;
        let mut rows = Vec::with_capacity(records.len());
        let mut letters = Vec::new();
        for record in &records {
            let payload = record.payload.as_deref().unwrap_or_default();
            match T::row(payload, 0, record.offset as i64) {
                Ok(row) => rows.push(row),
                Err(error) => letters.push(Record {
                    topic: dead_letters.clone(),
                    key: Vec::new(),
                    payload: Some(dead_letter(
                        &topic,
                        &record.key,
                        payload,
                        record.offset,
                        &error.to_string(),
                    )?),
                }),
            }
        }
        let to = records.last().map_or(position, |r| r.offset + 1);
        if !letters.is_empty() {
            stats
                .dead_letters
                .fetch_add(letters.len() as u64, Ordering::Relaxed);
            journal.append(&format!("store-{}", T::TABLE), &[], letters)?;
        }
        destination.write(&rows, position, to)?;
        stats.set_committed(&topic, to);
        stats.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
        stats.files.fetch_add(1, Ordering::Relaxed);
        position = to;
        last_flush = Instant::now();
    }
}

fn dead_letter(
    topic: &str,
    key: &[u8],
    payload: &[u8],
    offset: u64,
    reason: &str,
) -> Result<Vec<u8>, EmbeddedError> {
    let letter = DeadLetter {
        original: payload.to_vec(),
        key: Some(key.to_vec()),
        topic: topic.to_string(),
        partition: 0,
        offset: offset as i64,
        stage: "store".into(),
        error_kind: "decode".into(),
        error: reason.to_string(),
        failed_at: tally_contract::clock::now_micros(),
    };
    Ok(tally_contract::encode(&letter)?)
}

/// Where `tally up` keeps its tables.
#[derive(Clone)]
pub enum Store {
    /// Parquet files under this directory.
    Parquet(PathBuf),
    /// ClickHouse, with the writers' positions under this directory.
    ClickHouse {
        client: Box<::clickhouse::Client>,
        runtime: tokio::runtime::Handle,
        positions: PathBuf,
    },
}

fn run_into<T: SinkTable>(
    store: &Store,
    journal: &Journal,
    topic_prefix: &str,
    flush_every: Duration,
    stop: &AtomicBool,
    stats: &StoreStats,
) -> Result<(), EmbeddedError> {
    match store {
        Store::Parquet(dir) => {
            let mut table = ParquetTable::open::<T>(dir)?;
            run_table::<T>(journal, &mut table, topic_prefix, flush_every, stop, stats)
        }
        Store::ClickHouse {
            client,
            runtime,
            positions,
        } => {
            let mut table =
                ClickHouseTable::new::<T>((**client).clone(), runtime.clone(), positions)?;
            run_table::<T>(journal, &mut table, topic_prefix, flush_every, stop, stats)
        }
    }
}

/// Starts a writer thread per table.
pub fn spawn_tables(
    journal: Arc<Journal>,
    store: Store,
    topic_prefix: String,
    flush_every: Duration,
    stop: Arc<AtomicBool>,
    stats: Arc<StoreStats>,
) -> Vec<std::thread::JoinHandle<Result<(), EmbeddedError>>> {
    type Run =
        fn(&Store, &Journal, &str, Duration, &AtomicBool, &StoreStats) -> Result<(), EmbeddedError>;
    let writers: [(&str, Run); 6] = [
        ("llm_calls", run_into::<tables::LlmCalls>),
        ("deploys", run_into::<tables::Deploys>),
        ("tickets", run_into::<tables::Tickets>),
        ("spend_windows", run_into::<tables::SpendWindows>),
        ("loop_signals", run_into::<tables::LoopSignals>),
        ("alerts", run_into::<tables::Alerts>),
    ];
    writers
        .into_iter()
        .map(|(name, run)| {
            let (journal, store, prefix, stop, stats) = (
                journal.clone(),
                store.clone(),
                topic_prefix.clone(),
                stop.clone(),
                stats.clone(),
            );
            std::thread::Builder::new()
                .name(format!("store-{name}"))
                .spawn(move || run(&store, &journal, &prefix, flush_every, &stop, &stats))
                .expect("a thread can be spawned")
        })
        .collect()
}
