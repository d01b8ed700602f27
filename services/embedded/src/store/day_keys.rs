//! Which keys each recently written day of a table holds, so a flush can say whether its file
//! repeats a key ([`super::parts::Part::unique_keys`]): a query then reads a table none of
//! whose files repeats a key as it is stored, without the de-duplicating view's work (a
//! grouping of every key of the table: most of a query's time on this store).
//!
//! A day's keys are kept as 64-bit hashes of the key columns' values. Two keys that hash alike
//! only make a file look like a repeat (the table is then read through the de-duplicating
//! view, which compares the keys themselves): a figure is never wrong for it.
//!
//! Bounded: at most [`KEPT_DAYS`] days are held (the least recently written goes; a day written
//! again is read back from its files), and a day of more than [`MOST_KEYS_A_DAY`] keys is not
//! held at all: its files are said to repeat (read correctly, more slowly).
use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::hash::BuildHasher;
use std::path::Path;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::arrow::ProjectionMask;

use super::io;
use crate::EmbeddedError;

/// Days whose keys are held at once: the day being written and the day before it (late calls).
pub const KEPT_DAYS: usize = 2;
/// A day with more keys than this is not held. A held day is a hashbrown table of `u64`s: at
/// this limit 8,388,608 buckets of 9 bytes (the hash and a control byte), 75.5 MB; a table
/// whose key holds the day keeps at most [`KEPT_DAYS`] of them.
pub const MOST_KEYS_A_DAY: usize = 4_000_000;

/// What is known of one day's keys.
enum Known {
    /// The hashes of every key in the day's files.
    Hashes(HashSet<u64, foldhash::fast::FixedState>),
    /// More than [`MOST_KEYS_A_DAY`]: not held.
    TooMany,
}

/// The keys of the days a table wrote last.
pub struct DayKeys {
    columns: &'static [&'static str],
    days: VecDeque<(String, Known)>,
    hasher: foldhash::fast::FixedState,
}

impl DayKeys {
    /// Tracks the keys made of `columns`.
    pub fn new(columns: &'static [&'static str]) -> DayKeys {
        DayKeys {
            columns,
            days: VecDeque::new(),
            hasher: foldhash::fast::FixedState::default(),
        }
    }

    /// Adds the keys of `rows`, new rows of `day`, whose earlier rows are in `files`. True
    /// when none of them was in the day before, nor is twice among them.
    pub fn add(
        &mut self,
        day: &str,
        files: &[&Path],
        rows: &RecordBatch,
    ) -> Result<bool, EmbeddedError> {
        let hashes = self.hashes(rows)?;
        let known = self.day(day, files)?;
        let Known::Hashes(set) = known else {
            return Ok(false);
        };
        let mut unique = true;
        for hash in hashes {
            unique &= set.insert(hash);
        }
        if set.len() > MOST_KEYS_A_DAY {
            *known = Known::TooMany;
        }
        Ok(unique)
    }

    /// The hash of each row's key.
    fn hashes(&self, rows: &RecordBatch) -> Result<Vec<u64>, EmbeddedError> {
        let columns: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|name| {
                rows.column_by_name(name).cloned().ok_or_else(|| {
                    EmbeddedError::Store(format!("no key column {name} in the rows"))
                })
            })
            .collect::<Result<_, _>>()?;
        let fields = columns
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields).map_err(store_error)?;
        let encoded = converter.convert_columns(&columns).map_err(store_error)?;
        Ok(encoded
            .iter()
            .map(|row| self.hasher.hash_one(row.as_ref()))
            .collect())
    }

    /// The day's entry, most recent last: held, or read back from its files.
    fn day(&mut self, day: &str, files: &[&Path]) -> Result<&mut Known, EmbeddedError> {
        if let Some(at) = self.days.iter().position(|(d, _)| d == day) {
            let entry = self.days.remove(at).expect("found");
            self.days.push_back(entry);
        } else {
            let known = self.read(files)?;
            if self.days.len() == KEPT_DAYS {
                self.days.pop_front();
            }
            self.days.push_back((day.to_string(), known));
        }
        Ok(&mut self.days.back_mut().expect("just pushed").1)
    }

    /// The keys of a day's files.
    fn read(&self, files: &[&Path]) -> Result<Known, EmbeddedError> {
        let mut set = HashSet::with_hasher(foldhash::fast::FixedState::default());
        for path in files {
            let file = File::open(path).map_err(io(format!("cannot open {}", path.display())))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| EmbeddedError::Store(format!("{}: {e}", path.display())))?;
            let rows = builder.metadata().file_metadata().num_rows();
            if set.len() + rows.max(0) as usize > MOST_KEYS_A_DAY {
                return Ok(Known::TooMany);
            }
            let mask =
                ProjectionMask::columns(builder.parquet_schema(), self.columns.iter().copied());
            let reader = builder
                .with_projection(mask)
                .build()
                .map_err(|e| EmbeddedError::Store(format!("{}: {e}", path.display())))?;
            for batch in reader {
                let batch =
                    batch.map_err(|e| EmbeddedError::Store(format!("{}: {e}", path.display())))?;
                set.extend(self.hashes(&batch)?);
            }
        }
        Ok(Known::Hashes(set))
    }
}

fn store_error(e: impl std::fmt::Display) -> EmbeddedError {
    EmbeddedError::Store(e.to_string())
}
