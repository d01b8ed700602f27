//! A table's Parquet files and its manifest: `<table>/date=<YYYY-MM-DD>/part-<from>-<to>.L<level>.parquet`,
//! listed in `<table>/_manifest.json` with the offset of the topic after the last record
//! written.
//!
//! The manifest is the table: a file it does not list does not exist for readers, and is
//! deleted when the table opens. It is written whole to a temporary file, synced and renamed
//! over the old one, so a reader (or a crash) sees the table before a flush or a merge or after
//! it, never between.
//!
//! - **Flush**: the batch's rows are split by day; each day's rows become a new level-0 file
//!   (written under a temporary name, synced, renamed); then the manifest gains them and the
//!   new committed offset in one rename. A crash before that rename leaves files no manifest
//!   lists: the next open deletes them, and the records are written again, once.
//! - **Merge**, after the commit: once a day holds [`COMPACT_AT`] files of one level, they are
//!   streamed into one file of the next level; the manifest swaps them in one rename; then the
//!   inputs are deleted. A row is rewritten once per level (log₈ of the day's flushes), and a
//!   merge only ever reads committed files.
//! - Readers take a [`super::snapshot::Snapshot`]: hard links to the files of one manifest, which
//!   a merge deleting its inputs does not pull away.
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::day_keys::DayKeys;
use super::{io, TableSpec};
use crate::EmbeddedError;

/// A day compacts the files of one level once it holds this many.
pub const COMPACT_AT: usize = 8;
const MANIFEST: &str = "_manifest.json";
/// The committed offset of stores written before the manifest.
const LEGACY_COMMITTED: &str = "_committed";

/// One part file of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Path relative to the table's directory (`date=2026-11-25/part-….parquet`).
    pub path: String,
    /// The UTC day its rows belong to, `YYYY-MM-DD`.
    pub day: String,
    /// 0 for a flush; a merge of level-n files is level n+1.
    pub level: u8,
    /// Topic offsets `[from, to)` of the records its rows came from.
    pub from: u64,
    pub to: u64,
    /// Rows in the file.
    pub rows: u64,
    /// True when no key of the file is in a file of its day written before it, nor twice in
    /// it ([`super::day_keys`]); false when one may be (a replay), or for a file written before
    /// this was recorded. A day all of whose files say true holds each of its keys once
    /// (read as stored; [`super::snapshot`]).
    #[serde(default)]
    pub unique_keys: bool,
}

/// What a table holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The offset of the topic after the last record whose rows are in `parts`.
    pub committed: u64,
    /// The table's files, in the order they were written.
    pub parts: Vec<Part>,
}

impl Manifest {
    /// The manifest of the table in `dir`: its `_manifest.json`, or for a store written before
    /// there was one, what its files and `_committed` say (see `legacy`).
    pub fn read(dir: &Path) -> Result<Manifest, EmbeddedError> {
        let path = dir.join(MANIFEST);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                EmbeddedError::Corrupt(format!("{} is not a manifest: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => legacy(dir),
            Err(e) => Err(io(format!("cannot read {}", path.display()))(e)),
        }
    }

    /// Writes the manifest atomically: a temporary file, synced, renamed over the old one,
    /// and the directory synced so the rename itself is durable.
    fn write(&self, dir: &Path) -> Result<(), EmbeddedError> {
        let path = dir.join(MANIFEST);
        let temporary = dir.join(format!("{MANIFEST}.tmp"));
        let bytes = serde_json::to_vec(self).expect("a manifest serialises");
        std::fs::write(&temporary, bytes)
            .map_err(io(format!("cannot write {}", temporary.display())))?;
        sync(&temporary)?;
        std::fs::rename(&temporary, &path)
            .map_err(io(format!("cannot rename {}", temporary.display())))?;
        sync(dir)
    }
}

fn sync(path: &Path) -> Result<(), EmbeddedError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("cannot sync {}", path.display())))
}

/// `part-<from>-<to>[.L<level>].parquet`: its offsets and level.
fn parse_name(name: &str) -> Option<(u64, u64, u8)> {
    let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (range, level) = match stem.split_once(".L") {
        Some((range, level)) => (range, level.parse().ok()?),
        None => (stem, 0),
    };
    let (from, to) = range.split_once('-')?;
    Some((from.parse().ok()?, to.parse().ok()?, level))
}

/// The files of a day directory, with what their names say.
fn files_of_day(day_dir: &Path) -> Result<Vec<(String, u64, u64, u8)>, EmbeddedError> {
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(day_dir).map_err(io(format!("cannot read {}", day_dir.display())))?
    {
        let entry = entry.map_err(io(format!("cannot read {}", day_dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((from, to, level)) = parse_name(&name) {
            files.push((name, from, to, level));
        }
    }
    Ok(files)
}

/// The day directories of a table (`date=YYYY-MM-DD`), by day.
fn day_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, EmbeddedError> {
    let mut days = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(format!("cannot read {}", dir.display())))? {
        let path = entry
            .map_err(io(format!("cannot read {}", dir.display())))?
            .path();
        let day = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("date="))
            .map(str::to_string);
        if let (Some(day), true) = (day, path.is_dir()) {
            days.push((day, path));
        }
    }
    days.sort();
    Ok(days)
}

/// A store written before manifests: every file below `_committed`, except those a merged
/// file of the same day covers (a crash between a merge's rename and the deletion of its
/// inputs). File names repeat across days (one flush writes a file per day it touches), so
/// only files of one day are compared.
fn legacy(dir: &Path) -> Result<Manifest, EmbeddedError> {
    let committed = match std::fs::read_to_string(dir.join(LEGACY_COMMITTED)) {
        Ok(text) => text.trim().parse().map_err(|_| {
            EmbeddedError::Corrupt(format!(
                "{} is not an offset",
                dir.join(LEGACY_COMMITTED).display()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io(format!("cannot read {}", dir.display()))(e)),
    };
    let mut parts = Vec::new();
    if !dir.is_dir() {
        return Ok(Manifest { committed, parts });
    }
    for (day, day_dir) in day_dirs(dir)? {
        let files = files_of_day(&day_dir)?;
        for (name, from, to, level) in &files {
            let covered = files.iter().any(|(other, f, t, _)| {
                other != name && f <= from && to <= t && (f, t) != (from, to)
            });
            if *from < committed && !covered {
                parts.push(Part {
                    path: format!("date={day}/{name}"),
                    day: day.clone(),
                    level: *level,
                    from: *from,
                    to: *to,
                    rows: 0,
                    unique_keys: false,
                });
            }
        }
    }
    parts.sort_by_key(|p| (p.from, p.day.clone()));
    Ok(Manifest { committed, parts })
}

/// The Parquet files of one table.
pub struct TableFiles {
    pub spec: TableSpec,
    pub dir: PathBuf,
    manifest: Manifest,
    keys: DayKeys,
}

impl TableFiles {
    /// The table's directory under `store`, with what a crash left behind deleted: files the
    /// manifest does not list, and temporary files.
    pub fn open(store: &Path, spec: TableSpec) -> Result<TableFiles, EmbeddedError> {
        let dir = store.join(spec.name);
        std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let manifest = Manifest::read(&dir)?;
        let listed: BTreeSet<&str> = manifest.parts.iter().map(|p| p.path.as_str()).collect();
        for (day, day_dir) in day_dirs(&dir)? {
            for entry in std::fs::read_dir(&day_dir)
                .map_err(io(format!("cannot read {}", day_dir.display())))?
            {
                let entry = entry.map_err(io(format!("cannot read {}", day_dir.display())))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !listed.contains(format!("date={day}/{name}").as_str()) {
                    tracing::debug!(table = spec.name, file = %entry.path().display(), "removing a file no manifest lists");
                    std::fs::remove_file(entry.path())
                        .map_err(io(format!("cannot remove {}", entry.path().display())))?;
                }
            }
        }
        let files = TableFiles {
            spec,
            dir,
            manifest,
            keys: DayKeys::new(spec.keys),
        };
        // A store written before manifests gets one now; its old offset file goes.
        if !files.dir.join(MANIFEST).exists() {
            files.manifest.write(&files.dir)?;
            let _ = std::fs::remove_file(files.dir.join(LEGACY_COMMITTED));
        }
        Ok(files)
    }

    /// The offset after the last record in the committed files.
    pub fn committed(&self) -> u64 {
        self.manifest.committed
    }

    /// The table's files, as its manifest lists them.
    pub fn parts(&self) -> &[Part] {
        &self.manifest.parts
    }

    /// Writes a batch of rows (records `from..to` of the topic), one file per day, commits
    /// `to` with them, then merges the days it touched where they hold enough files.
    pub fn write(&mut self, batch: &RecordBatch, from: u64, to: u64) -> Result<(), EmbeddedError> {
        let mut next = self.manifest.clone();
        let mut touched = Vec::new();
        for (day, rows) in split_by_day(batch, self.spec.day_column)? {
            let path = format!("date={day}/part-{from:012}-{to:012}.L0.parquet");
            let full = self.dir.join(&path);
            let day_dir = full.parent().expect("a day directory");
            std::fs::create_dir_all(day_dir)
                .map_err(io(format!("cannot create {}", day_dir.display())))?;
            let earlier: Vec<PathBuf> = self
                .manifest
                .parts
                .iter()
                .filter(|p| p.day == day)
                .map(|p| self.dir.join(&p.path))
                .collect();
            let earlier: Vec<&Path> = earlier.iter().map(PathBuf::as_path).collect();
            let unique_keys =
                self.spec.key_fixes_the_day() && self.keys.add(&day, &earlier, &rows)?;
            write_parquet(&full, rows.schema(), std::slice::from_ref(&rows))?;
            next.parts.push(Part {
                path,
                day: day.clone(),
                level: 0,
                from,
                to,
                rows: rows.num_rows() as u64,
                unique_keys,
            });
            touched.push(day);
        }
        next.committed = to;
        next.write(&self.dir)?;
        self.manifest = next;
        for day in touched {
            self.compact(&day)?;
        }
        Ok(())
    }

    /// Merges the files of `day`, level by level, while a level holds [`COMPACT_AT`] of them.
    fn compact(&mut self, day: &str) -> Result<(), EmbeddedError> {
        for level in 0..u8::MAX {
            let inputs: Vec<Part> = self
                .manifest
                .parts
                .iter()
                .filter(|p| p.day == day && p.level == level)
                .cloned()
                .collect();
            if inputs.len() < COMPACT_AT {
                if inputs.is_empty() {
                    return Ok(());
                }
                continue;
            }
            self.merge(day, level, inputs)?;
        }
        Ok(())
    }

    fn merge(&mut self, day: &str, level: u8, mut inputs: Vec<Part>) -> Result<(), EmbeddedError> {
        inputs.sort_by_key(|p| p.from);
        let from = inputs.first().expect("inputs").from;
        let to = inputs.iter().map(|p| p.to).max().expect("inputs");
        let path = format!("date={day}/part-{from:012}-{to:012}.L{}.parquet", level + 1);
        let paths: Vec<PathBuf> = inputs.iter().map(|p| self.dir.join(&p.path)).collect();
        let rows = merge_parquet(&paths, &self.dir.join(&path))?;
        let merged = Part {
            path,
            day: day.to_string(),
            level: level + 1,
            from,
            to,
            rows,
            // Each input's keys were new to the files of its day written before it, so the
            // merged file's keys are new to those before the first input and unique in it;
            // and a later file's claim was made against the inputs' keys, the merged file's.
            unique_keys: inputs.iter().all(|p| p.unique_keys),
        };
        let mut next = self.manifest.clone();
        let gone: BTreeSet<&str> = inputs.iter().map(|p| p.path.as_str()).collect();
        let at = next
            .parts
            .iter()
            .position(|p| gone.contains(p.path.as_str()))
            .expect("the inputs are listed");
        next.parts.retain(|p| !gone.contains(p.path.as_str()));
        next.parts.insert(at.min(next.parts.len()), merged);
        next.write(&self.dir)?;
        self.manifest = next;
        // Readers hold hard links (snapshots): the inputs can go at once.
        for input in paths {
            std::fs::remove_file(&input)
                .map_err(io(format!("cannot remove {}", input.display())))?;
        }
        Ok(())
    }
}

/// `YYYY-MM-DD` of epoch microseconds.
fn day_of(micros: i64) -> String {
    super::date_text(micros.div_euclid(86_400_000_000) as i32)
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

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build()
}

/// Writes `batches` to `path`: a temporary file, synced, renamed into place.
fn write_parquet(
    path: &Path,
    schema: SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), EmbeddedError> {
    let temporary = path.with_extension("parquet.tmp");
    let file =
        File::create(&temporary).map_err(io(format!("cannot create {}", temporary.display())))?;
    let mut writer = ArrowWriter::try_new(file, schema, Some(writer_properties()))
        .map_err(|e| EmbeddedError::Store(e.to_string()))?;
    for batch in batches {
        writer
            .write(batch)
            .map_err(|e| EmbeddedError::Store(e.to_string()))?;
    }
    finish(writer, &temporary, path)
}

fn finish(writer: ArrowWriter<File>, temporary: &Path, path: &Path) -> Result<(), EmbeddedError> {
    let file = writer
        .into_inner()
        .map_err(|e| EmbeddedError::Store(e.to_string()))?;
    file.sync_all()
        .map_err(io(format!("cannot sync {}", temporary.display())))?;
    std::fs::rename(temporary, path).map_err(io(format!("cannot rename {}", temporary.display())))
}

/// Streams the rows of `inputs`, in order, into one file at `output`; returns its row count.
/// Memory holds one batch at a time, whatever the files' sizes.
fn merge_parquet(inputs: &[PathBuf], output: &Path) -> Result<u64, EmbeddedError> {
    let temporary = output.with_extension("parquet.tmp");
    let mut writer: Option<ArrowWriter<File>> = None;
    let mut rows = 0u64;
    for path in inputs {
        let file = File::open(path).map_err(io(format!("cannot open {}", path.display())))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| EmbeddedError::Store(format!("{}: {e}", path.display())))?;
        for batch in reader {
            let batch = batch.map_err(|e| EmbeddedError::Store(e.to_string()))?;
            if writer.is_none() {
                let file = File::create(&temporary)
                    .map_err(io(format!("cannot create {}", temporary.display())))?;
                writer = Some(
                    ArrowWriter::try_new(file, batch.schema(), Some(writer_properties()))
                        .map_err(|e| EmbeddedError::Store(e.to_string()))?,
                );
            }
            rows += batch.num_rows() as u64;
            writer
                .as_mut()
                .expect("just made")
                .write(&batch)
                .map_err(|e| EmbeddedError::Store(e.to_string()))?;
        }
    }
    let writer = writer.ok_or_else(|| EmbeddedError::Store("merging files without rows".into()))?;
    finish(writer, &temporary, output)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use tally_contract::topics::Topic;

    use super::*;
    use crate::store::snapshot::Snapshot;

    const DAY: i64 = 86_400_000_000;
    /// 2026-11-25, midnight UTC.
    const START: i64 = 1_795_564_800_000_000;

    fn spec() -> TableSpec {
        TableSpec {
            name: "llm_calls",
            topic: Topic::LlmCallsEnriched,
            timestamps: &["occurred_at"],
            day_column: "occurred_at",
            wide: &[],
            keys: &["value"],
            key_day: true,
            version: "occurred_at",
        }
    }

    /// Rows `from..to` (one per record offset), spread over `days` days.
    fn batch(from: u64, to: u64, days: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "occurred_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("value", DataType::Int64, false),
        ]));
        let offsets: Vec<i64> = (from as i64..to as i64).collect();
        let times: TimestampMicrosecondArray = offsets
            .iter()
            .map(|o| Some(START + (o % days) * DAY + o))
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC");
        RecordBatch::try_new(
            schema,
            vec![Arc::new(times), Arc::new(Int64Array::from(offsets))],
        )
        .unwrap()
    }

    /// (rows, sum of values) in the files of a table directory's manifest.
    fn contents(dir: &Path, parts: &[Part]) -> (u64, i64) {
        let (mut rows, mut sum) = (0u64, 0i64);
        for part in parts {
            let file = File::open(dir.join(&part.path)).unwrap();
            for batch in ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
            {
                let batch = batch.unwrap();
                rows += batch.num_rows() as u64;
                let values = batch
                    .column(1)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                sum += values.iter().flatten().sum::<i64>();
            }
        }
        (rows, sum)
    }

    fn expected(to: u64) -> (u64, i64) {
        (to, (0..to as i64).sum())
    }

    fn files_on_disk(dir: &Path) -> usize {
        day_dirs(dir)
            .unwrap()
            .iter()
            .map(|(_, d)| std::fs::read_dir(d).unwrap().count())
            .sum()
    }

    #[test]
    fn flushes_over_several_days_with_merges_read_back_whole_after_reopening() {
        let store = tempfile::tempdir().unwrap();
        let mut table = TableFiles::open(store.path(), spec()).unwrap();
        // 70 flushes of 100 records, each touching three days: every day merges level 0 into
        // level 1 eight times, then those eight into level 2; six level-0 files remain.
        for flush in 0..70u64 {
            table
                .write(
                    &batch(flush * 100, flush * 100 + 100, 3),
                    flush * 100,
                    flush * 100 + 100,
                )
                .unwrap();
        }
        assert_eq!(table.committed(), 7_000);
        assert_eq!(contents(&table.dir, table.parts()), expected(7_000));
        let levels: BTreeSet<u8> = table.parts().iter().map(|p| p.level).collect();
        assert_eq!(levels, BTreeSet::from([0, 2]), "{:?}", table.parts());
        // 3 days x (1 L2 + 0 L1 + 6 L0): merged inputs are gone from disk too.
        assert_eq!(table.parts().len(), 21);
        assert_eq!(files_on_disk(&table.dir), 21);
        drop(table);
        // The files repeat their names across days: reopening keeps every one.
        let table = TableFiles::open(store.path(), spec()).unwrap();
        assert_eq!(table.committed(), 7_000);
        assert_eq!(contents(&table.dir, table.parts()), expected(7_000));
    }

    #[test]
    fn what_a_crash_left_unlisted_is_deleted_and_written_again_once() {
        let store = tempfile::tempdir().unwrap();
        let mut table = TableFiles::open(store.path(), spec()).unwrap();
        for flush in 0..10u64 {
            table
                .write(
                    &batch(flush * 10, flush * 10 + 10, 2),
                    flush * 10,
                    flush * 10 + 10,
                )
                .unwrap();
        }
        // A crash mid-flush: a day's file renamed into place, the manifest not yet; and a
        // half-written temporary file; and a merge whose output was written but not listed.
        let day = &table.parts()[0].day.clone();
        let day_dir = table.dir.join(format!("date={day}"));
        write_parquet(
            &day_dir.join("part-000000000100-000000000110.L0.parquet"),
            batch(100, 110, 1).schema(),
            &[batch(100, 110, 1)],
        )
        .unwrap();
        std::fs::write(
            day_dir.join("part-000000000100-000000000110.L0.parquet.tmp"),
            b"torn",
        )
        .unwrap();
        std::fs::copy(
            day_dir.join(Path::new(&table.parts()[0].path).file_name().unwrap()),
            day_dir.join("part-000000000000-000000000100.L1.parquet"),
        )
        .unwrap();
        drop(table);
        let mut table = TableFiles::open(store.path(), spec()).unwrap();
        assert_eq!(table.committed(), 100);
        assert_eq!(
            files_on_disk(&table.dir),
            table.parts().len(),
            "only listed files remain"
        );
        // The stage writes records 100..110 again.
        table.write(&batch(100, 110, 2), 100, 110).unwrap();
        assert_eq!(contents(&table.dir, table.parts()), expected(110));
    }

    #[test]
    fn a_store_from_before_manifests_keeps_each_days_files() {
        // The layout and names of the earlier store: the same part name in several days, one
        // day merged (its inputs deleted), a crash's uncommitted file, and `_committed`.
        let store = tempfile::tempdir().unwrap();
        let dir = store.path().join("llm_calls");
        let write = |day: &str, name: &str, rows: RecordBatch| {
            let day_dir = dir.join(format!("date={day}"));
            std::fs::create_dir_all(&day_dir).unwrap();
            write_parquet(&day_dir.join(name), rows.schema(), &[rows]).unwrap();
        };
        let one_day = |from: u64, to: u64, day: i64| {
            let b = batch(from, to, 1);
            let keep: Vec<u32> = (0..b.num_rows() as u32)
                .filter(|i| ((from + *i as u64) % 2) as i64 == day)
                .collect();
            let indices = UInt32Array::from(keep);
            let columns = b
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &indices, None).unwrap())
                .collect();
            RecordBatch::try_new(b.schema(), columns).unwrap()
        };
        // Day A (even offsets) was merged: 0..300 in one file. Day B (odd) was not.
        write(
            "2026-11-25",
            "part-000000000000-000000000300.parquet",
            one_day(0, 300, 0),
        );
        for (from, to) in [(0, 100), (100, 200), (200, 300)] {
            write(
                "2026-11-26",
                &format!("part-{from:012}-{to:012}.parquet"),
                one_day(from, to, 1),
            );
        }
        write(
            "2026-11-26",
            "part-000000000300-000000000400.parquet",
            one_day(300, 400, 1),
        );
        std::fs::write(dir.join("_committed"), "300").unwrap();
        let table = TableFiles::open(store.path(), spec()).unwrap();
        assert_eq!(table.committed(), 300);
        assert_eq!(contents(&table.dir, table.parts()), expected(300));
        assert!(dir.join(MANIFEST).exists() && !dir.join("_committed").exists());
    }

    #[test]
    fn a_snapshot_reads_one_manifest_while_merges_delete_its_files() {
        let store = tempfile::tempdir().unwrap();
        let mut table = TableFiles::open(store.path(), spec()).unwrap();
        for flush in 0..7u64 {
            table
                .write(
                    &batch(flush * 10, flush * 10 + 10, 1),
                    flush * 10,
                    flush * 10 + 10,
                )
                .unwrap();
        }
        let snapshot = Snapshot::take(store.path()).unwrap();
        // The eighth flush merges the day: the seven files the snapshot saw are deleted.
        table.write(&batch(70, 80, 1), 70, 80).unwrap();
        assert_eq!(table.parts().len(), 1);
        let linked: Vec<Part> = std::fs::read_dir(snapshot.table_dir("llm_calls"))
            .unwrap()
            .map(|e| Part {
                path: e.unwrap().file_name().to_string_lossy().into_owned(),
                day: String::new(),
                level: 0,
                from: 0,
                to: 0,
                rows: 0,
                unique_keys: false,
            })
            .collect();
        assert_eq!(linked.len(), 7);
        assert_eq!(
            contents(&snapshot.table_dir("llm_calls"), &linked),
            expected(70)
        );
        let later = Snapshot::take(store.path()).unwrap();
        assert_eq!(
            std::fs::read_dir(later.table_dir("llm_calls"))
                .unwrap()
                .count(),
            1
        );
        let root = store.path().join(".snapshots");
        drop((snapshot, later));
        assert_eq!(
            std::fs::read_dir(root).unwrap().count(),
            0,
            "snapshots go when dropped"
        );
    }

    /// (day, level, unique_keys) of each part, sorted.
    fn claims(table: &TableFiles) -> Vec<(String, u8, bool)> {
        let mut claims: Vec<_> = table
            .parts()
            .iter()
            .map(|p| (p.day.clone(), p.level, p.unique_keys))
            .collect();
        claims.sort();
        claims
    }

    /// Rows whose values (the key) are `values`, all on the first day.
    fn rows_of(values: &[i64]) -> RecordBatch {
        let schema = batch(0, 1, 1).schema();
        let times: TimestampMicrosecondArray = values
            .iter()
            .map(|_| Some(START))
            .collect::<TimestampMicrosecondArray>()
            .with_timezone("UTC");
        RecordBatch::try_new(
            schema,
            vec![Arc::new(times), Arc::new(Int64Array::from(values.to_vec()))],
        )
        .unwrap()
    }

    #[test]
    fn a_file_says_whether_it_repeats_a_key_of_its_day() {
        let store = tempfile::tempdir().unwrap();
        let mut table = TableFiles::open(store.path(), spec()).unwrap();
        table.write(&rows_of(&[1, 2, 3]), 0, 3).unwrap();
        table.write(&rows_of(&[4, 5]), 3, 5).unwrap();
        // 2 again (a replay), then a file with one key twice.
        table.write(&rows_of(&[6, 2]), 5, 7).unwrap();
        table.write(&rows_of(&[7, 7]), 7, 9).unwrap();
        table.write(&rows_of(&[8]), 9, 10).unwrap();
        let unique: Vec<bool> = table.parts().iter().map(|p| p.unique_keys).collect();
        assert_eq!(unique, [true, true, false, false, true]);
        // Reopened (no keys held): a repeat is found in the day's files.
        let mut table = TableFiles::open(store.path(), spec()).unwrap();
        table.write(&rows_of(&[9, 10]), 10, 12).unwrap();
        table.write(&rows_of(&[3]), 12, 13).unwrap();
        let unique: Vec<bool> = table.parts()[5..].iter().map(|p| p.unique_keys).collect();
        assert_eq!(unique, [true, false]);
        // The same key on another day is another key (ClickHouse's key holds the day).
        let other_day = batch(1, 2, 2);
        table.write(&other_day, 13, 14).unwrap();
        assert!(table.parts().last().unwrap().unique_keys);
    }

    #[test]
    fn a_merge_is_unique_when_all_its_inputs_are() {
        let store = tempfile::tempdir().unwrap();
        let mut table = TableFiles::open(store.path(), spec()).unwrap();
        // Two days; on the second (odd offsets) record 9 repeats record 1's key.
        for flush in 0..8u64 {
            let from = flush * 2;
            let mut rows = batch(from, from + 2, 2);
            if flush == 4 {
                let times = rows.column(0).clone();
                rows = RecordBatch::try_new(
                    rows.schema(),
                    vec![times, Arc::new(Int64Array::from(vec![8, 1]))],
                )
                .unwrap();
            }
            table.write(&rows, from, from + 2).unwrap();
        }
        let first = day_of(START);
        let second = day_of(START + DAY);
        assert_eq!(claims(&table), [(first, 1, true), (second, 1, false)]);
    }

    #[test]
    fn a_day_no_longer_held_is_read_back_from_its_files() {
        let store = tempfile::tempdir().unwrap();
        let mut table = TableFiles::open(store.path(), spec()).unwrap();
        // Offsets 0..4 over four days: each day one key; then each day's key again, the
        // first days long evicted (KEPT_DAYS = 2).
        assert_eq!(super::super::day_keys::KEPT_DAYS, 2);
        table.write(&batch(0, 4, 4), 0, 4).unwrap();
        let mut again = Vec::new();
        for record in 0..4u64 {
            table
                .write(&batch(record, record + 1, 4), 4 + record, 5 + record)
                .unwrap();
            again.push(table.parts().last().unwrap().unique_keys);
        }
        assert_eq!(again, [false; 4]);
        assert!(table.parts()[..4].iter().all(|p| p.unique_keys));
    }

    #[test]
    fn a_manifest_from_before_unique_keys_says_its_files_may_repeat() {
        let manifest: Manifest = serde_json::from_str(
            r#"{"committed": 3, "parts": [{"path": "date=2026-11-25/part-000000000000-000000000003.L0.parquet",
                "day": "2026-11-25", "level": 0, "from": 0, "to": 3, "rows": 3}]}"#,
        )
        .unwrap();
        assert!(!manifest.parts[0].unique_keys);
    }
}
