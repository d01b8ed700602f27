//! A table of `tally up` in ClickHouse instead of Parquet, when it runs on ClickHouse without
//! Kafka: filled from the journal, one INSERT per flush.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tally_sink::tables::SinkTable;

use super::{io, Destination};
use crate::EmbeddedError;

/// The table in ClickHouse, filled from the journal: each flush is one INSERT with the
/// deduplication token `journal:<table>:<from>:<to>`; after ClickHouse acknowledged it, the
/// offset is recorded in `<positions>/<table>.committed`. A crash in between inserts the same
/// rows again, and the table's ReplacingMergeTree collapses them (read with FINAL), as the
/// Kafka sink does.
pub struct ClickHouseTable {
    client: ::clickhouse::Client,
    runtime: tokio::runtime::Handle,
    position: PathBuf,
}

impl ClickHouseTable {
    /// A writer of `T`'s table, its position kept under `positions`.
    pub fn new<T: SinkTable>(
        client: ::clickhouse::Client,
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

    fn write(&mut self, rows: &[T::Row], from: u64, to: u64) -> Result<(), EmbeddedError> {
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
