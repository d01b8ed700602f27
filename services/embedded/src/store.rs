//! The embedded store: each of the sink's tables ([`tally_sink::tables`]) as Parquet files
//! under `<data-dir>/store/<table>/date=<YYYY-MM-DD>/part-<from>-<to>.parquet`, written from
//! the journal by the same record → row conversion as the ClickHouse sink.
//!
//! The same loop fills ClickHouse instead ([`ClickHouseTable`]) when `tally up` runs on
//! ClickHouse without Kafka.
//!
//! Exactly once: a flush writes its files (one per day it touches) under temporary names,
//! renames them, then renames `<table>/_committed` to the offset after the batch. Opening the
//! store deletes what a crash left past the committed offset, so the next flush writes it
//! again, once. Small files are compacted: once a day holds eight or more, they are merged
//! into one whose name spans their offsets; the merged inputs are deleted after the rename,
//! and files a crash left covered by a merged one are deleted when the store opens.
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use serde_arrow::schema::{SchemaLike, TracingOptions};
use tally_contract::records::DeadLetter;
use tally_contract::topics::Topic;
use tally_sink::tables::{self, SinkTable};

use crate::journal::{Journal, Record};
use crate::EmbeddedError;

/// A day directory is compacted once it holds this many files.
const COMPACT_AT: usize = 8;
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
}

/// Every table, as ClickHouse has them.
pub const TABLES: [TableSpec; 6] = [
    TableSpec {
        name: tables::LlmCalls::TABLE,
        topic: tables::LlmCalls::TOPIC,
        timestamps: &["occurred_at", "received_at", "enriched_at"],
        day_column: "occurred_at",
    },
    TableSpec {
        name: tables::Deploys::TABLE,
        topic: tables::Deploys::TOPIC,
        timestamps: &["occurred_at", "received_at"],
        day_column: "occurred_at",
    },
    TableSpec {
        name: tables::Tickets::TABLE,
        topic: tables::Tickets::TOPIC,
        timestamps: &["occurred_at", "received_at"],
        day_column: "occurred_at",
    },
    TableSpec {
        name: tables::SpendWindows::TABLE,
        topic: tables::SpendWindows::TOPIC,
        timestamps: &["window_start", "emitted_at"],
        day_column: "window_start",
    },
    TableSpec {
        name: tables::LoopSignals::TABLE,
        topic: tables::LoopSignals::TOPIC,
        timestamps: &["first_event_at", "last_event_at", "emitted_at"],
        day_column: "first_event_at",
    },
    TableSpec {
        name: tables::Alerts::TABLE,
        topic: tables::Alerts::TOPIC,
        timestamps: &["occurred_at", "emitted_at"],
        day_column: "occurred_at",
    },
];

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

/// A part file and the offsets `[from, to)` of the records in it.
pub type Part = (PathBuf, (u64, u64));

/// The Parquet files of one table.
pub struct TableFiles {
    pub spec: TableSpec,
    pub dir: PathBuf,
}

/// A part file's offsets, from its name.
fn part_range(path: &Path) -> Option<(u64, u64)> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (from, to) = stem.split_once('-')?;
    Some((from.parse().ok()?, to.parse().ok()?))
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    move |source| EmbeddedError::Io { context, source }
}

impl TableFiles {
    /// The table's directory under `store`, cleaned of what a crash left behind.
    pub fn open(store: &Path, spec: TableSpec) -> Result<TableFiles, EmbeddedError> {
        let dir = store.join(spec.name);
        std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let files = TableFiles { spec, dir };
        let committed = files.committed()?;
        let parts = files.parts()?;
        for (path, (from, to)) in &parts {
            let uncommitted = *from >= committed;
            let covered = parts.iter().any(|(other, (f, t))| {
                other != path && f <= from && to <= t && (f, t) != (from, to)
            });
            if uncommitted || covered {
                std::fs::remove_file(path)
                    .map_err(io(format!("cannot remove {}", path.display())))?;
            }
        }
        for day in files.days()? {
            for entry in
                std::fs::read_dir(&day).map_err(io(format!("cannot read {}", day.display())))?
            {
                let path = entry
                    .map_err(io(format!("cannot read {}", day.display())))?
                    .path();
                if path.extension().is_some_and(|e| e == "tmp") {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        Ok(files)
    }

    fn committed_path(&self) -> PathBuf {
        self.dir.join("_committed")
    }

    /// The offset after the last record in the committed files.
    pub fn committed(&self) -> Result<u64, EmbeddedError> {
        read_offset(&self.committed_path())
    }

    fn days(&self) -> Result<Vec<PathBuf>, EmbeddedError> {
        let mut days: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(io(format!("cannot read {}", self.dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        days.sort();
        Ok(days)
    }

    /// Every part file with its offsets.
    pub fn parts(&self) -> Result<Vec<Part>, EmbeddedError> {
        let mut parts = Vec::new();
        for day in self.days()? {
            for entry in
                std::fs::read_dir(&day).map_err(io(format!("cannot read {}", day.display())))?
            {
                let path = entry
                    .map_err(io(format!("cannot read {}", day.display())))?
                    .path();
                if let Some(range) = part_range(&path) {
                    parts.push((path, range));
                }
            }
        }
        Ok(parts)
    }

    /// Writes a batch of rows (records `from..to` of the topic), one file per day, then
    /// commits `to`.
    pub fn write(&self, batch: &RecordBatch, from: u64, to: u64) -> Result<(), EmbeddedError> {
        for (day, rows) in split_by_day(batch, self.spec.day_column)? {
            let dir = self.dir.join(format!("date={day}"));
            std::fs::create_dir_all(&dir)
                .map_err(io(format!("cannot create {}", dir.display())))?;
            let path = dir.join(format!("part-{from:012}-{to:012}.parquet"));
            write_parquet(&path, &rows)?;
            if std::fs::read_dir(&dir).map_or(0, |d| d.count()) >= COMPACT_AT {
                compact(&dir)?;
            }
        }
        write_offset(&self.committed_path(), to)
    }
}

/// `YYYY-MM-DD` of epoch microseconds.
fn day_of(micros: i64) -> String {
    date_text(micros.div_euclid(86_400_000_000) as i32)
}

/// `YYYY-MM-DD` of a day counted from the epoch (Arrow's `Date32`).
pub(crate) fn date_text(days: i32) -> String {
    time::Date::from_julian_day(2_440_588 + days)
        .map(|d| d.to_string())
        .unwrap_or_else(|_| days.to_string())
}

fn split_by_day(
    batch: &RecordBatch,
    column: &str,
) -> Result<Vec<(String, RecordBatch)>, EmbeddedError> {
    let times = batch
        .column_by_name(column)
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| EmbeddedError::Store(format!("no timestamp column {column}")))?;
    let mut days: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for i in 0..times.len() {
        days.entry(day_of(times.value(i)))
            .or_default()
            .push(i as u32);
    }
    days.into_iter()
        .map(|(day, indices)| {
            let indices = UInt32Array::from(indices);
            let columns = batch
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &indices, None))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EmbeddedError::Store(e.to_string()))?;
            let rows = RecordBatch::try_new(batch.schema(), columns)
                .map_err(|e| EmbeddedError::Store(e.to_string()))?;
            Ok((day, rows))
        })
        .collect()
}

fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<(), EmbeddedError> {
    write_parquet_batches(path, batch.schema(), std::slice::from_ref(batch))
}

fn write_parquet_batches(
    path: &Path,
    schema: SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), EmbeddedError> {
    let temporary = path.with_extension("parquet.tmp");
    let file =
        File::create(&temporary).map_err(io(format!("cannot create {}", temporary.display())))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema, Some(properties))
        .map_err(|e| EmbeddedError::Store(e.to_string()))?;
    for batch in batches {
        writer
            .write(batch)
            .map_err(|e| EmbeddedError::Store(e.to_string()))?;
    }
    let file = writer
        .into_inner()
        .map_err(|e| EmbeddedError::Store(e.to_string()))?;
    file.sync_all()
        .map_err(io(format!("cannot sync {}", temporary.display())))?;
    std::fs::rename(&temporary, path).map_err(io(format!("cannot rename {}", temporary.display())))
}

/// Merges a day's part files into one spanning their offsets.
fn compact(dir: &Path) -> Result<(), EmbeddedError> {
    let mut parts: Vec<Part> = std::fs::read_dir(dir)
        .map_err(io(format!("cannot read {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| part_range(&p).map(|r| (p, r)))
        .collect();
    if parts.len() < 2 {
        return Ok(());
    }
    parts.sort_by_key(|(_, r)| *r);
    let mut batches = Vec::new();
    let mut schema = None;
    for (path, _) in &parts {
        let file = File::open(path).map_err(io(format!("cannot open {}", path.display())))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| EmbeddedError::Store(format!("{}: {e}", path.display())))?;
        for batch in reader {
            let batch = batch.map_err(|e| EmbeddedError::Store(e.to_string()))?;
            schema.get_or_insert_with(|| batch.schema());
            batches.push(batch);
        }
    }
    let Some(schema) = schema else {
        return Ok(());
    };
    let from = parts.first().expect("two or more").1 .0;
    let to = parts.iter().map(|(_, r)| r.1).max().expect("two or more");
    let merged = dir.join(format!("part-{from:012}-{to:012}.parquet"));
    write_parquet_batches(&merged, schema, &batches)?;
    for (path, _) in parts {
        if path != merged {
            std::fs::remove_file(&path).map_err(io(format!("cannot remove {}", path.display())))?;
        }
    }
    Ok(())
}

/// Counters of the store's writers.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub rows: AtomicU64,
    pub files: AtomicU64,
    pub dead_letters: AtomicU64,
}

/// Where a table's rows go: Parquet files, or ClickHouse.
pub trait Destination<T: SinkTable> {
    /// The offset of the topic after the last record written.
    fn committed(&self) -> Result<u64, EmbeddedError>;
    /// Writes the rows of records `from..to` of the topic, then records `to` as committed.
    fn write(&self, rows: &[T::Row], from: u64, to: u64) -> Result<(), EmbeddedError>;
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
        self.files.committed()
    }

    fn write(&self, rows: &[T::Row], from: u64, to: u64) -> Result<(), EmbeddedError> {
        let batch = serde_arrow::to_record_batch(&self.fields, &rows)
            .map_err(|e| EmbeddedError::Store(format!("{}: {e}", T::TABLE)))?;
        self.files.write(&batch, from, to)
    }
}

/// The table in ClickHouse, filled from the journal: each flush is one INSERT with the
/// deduplication token `journal:<table>:<from>:<to>`; after ClickHouse acknowledged it, the
/// offset is recorded in `<positions>/<table>.committed`. A crash in between inserts the same
/// rows again, and the table's ReplacingMergeTree collapses them (read with FINAL), as the
/// Kafka sink does.
pub struct ClickHouseTable {
    client: clickhouse::Client,
    runtime: tokio::runtime::Handle,
    position: PathBuf,
}

impl ClickHouseTable {
    /// A writer of `T`'s table, its position kept under `positions`.
    pub fn new<T: SinkTable>(
        client: clickhouse::Client,
        runtime: tokio::runtime::Handle,
        positions: &Path,
    ) -> Result<ClickHouseTable, EmbeddedError> {
        std::fs::create_dir_all(positions)
            .map_err(io(format!("cannot create {}", positions.display())))?;
        Ok(ClickHouseTable {
            client,
            runtime,
            position: positions.join(format!("{}.committed", T::TABLE)),
        })
    }
}

impl<T: SinkTable> Destination<T> for ClickHouseTable {
    fn committed(&self) -> Result<u64, EmbeddedError> {
        read_offset(&self.position)
    }

    fn write(&self, rows: &[T::Row], from: u64, to: u64) -> Result<(), EmbeddedError> {
        let token = format!("journal:{}:{from}:{to}", T::TABLE);
        let mut wait = Duration::from_secs(1);
        // ClickHouse down: wait and insert again, reading nothing more meanwhile.
        while let Err(error) = self.runtime.block_on(tally_sink::sink::insert::<T>(
            &self.client,
            rows.iter(),
            Some(&token),
        )) {
            tracing::warn!(table = T::TABLE, %error, retry_in = ?wait, "insert failed");
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(30));
        }
        write_offset(&self.position, to)
    }
}

fn read_offset(path: &Path) -> Result<u64, EmbeddedError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| EmbeddedError::Corrupt(format!("{} is not an offset", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(format!("cannot read {}", path.display()))(e)),
    }
}

/// Writes an offset file atomically (a temporary file, synced, renamed over it).
fn write_offset(path: &Path, offset: u64) -> Result<(), EmbeddedError> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, offset.to_string())
        .map_err(io(format!("cannot write {}", temporary.display())))?;
    File::open(&temporary)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("cannot sync {}", temporary.display())))?;
    std::fs::rename(&temporary, path).map_err(io(format!("cannot write {}", path.display())))
}

/// Fills one table from its topic in the journal until `stop`: reads up to
/// [`FLUSH_RECORDS`] records (or what `flush_every` gathered), converts them as the ClickHouse
/// sink does, and hands them to `destination`. A record that does not decode goes to the
/// dead-letter topic with the reason.
pub fn run_table<T: SinkTable>(
    journal: &Journal,
    destination: &dyn Destination<T>,
    topic_prefix: &str,
    flush_every: Duration,
    stop: &AtomicBool,
    stats: &StoreStats,
) -> Result<(), EmbeddedError> {
    let topic = T::TOPIC.name(topic_prefix);
    let dead_letters = Topic::DeadLetter.name(topic_prefix);
    let mut position = destination.committed()?;
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
        failed_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64),
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
        client: Box<clickhouse::Client>,
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
            let table = ParquetTable::open::<T>(dir)?;
            run_table::<T>(journal, &table, topic_prefix, flush_every, stop, stats)
        }
        Store::ClickHouse {
            client,
            runtime,
            positions,
        } => {
            let table = ClickHouseTable::new::<T>((**client).clone(), runtime.clone(), positions)?;
            run_table::<T>(journal, &table, topic_prefix, flush_every, stop, stats)
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
