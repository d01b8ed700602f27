//! A consistent view of the store for a query: for each table, hard links to the files one
//! manifest lists, in a directory of the query's own (`<store>/.snapshots/<pid>-…/<table>/`).
//! A merge that deletes its inputs while the query runs takes away only the store's names for
//! them; the query's links keep the data, so it reads the whole table as of one manifest,
//! never a file that vanished, never a file twice. The directory goes when the snapshot is
//! dropped; one left by a process that died is removed by the next snapshot.
//!
//! It also sorts each table's files by how they are to be read ([`TableFilesToRead`]): a day
//! none of whose files repeats a key ([`super::parts::Part::unique_keys`]) as stored, the
//! other days through the de-duplicating view. The key of a table whose files say so holds the
//! day, so two rows of one key are always in one day's files, and a replay after a restart
//! costs the de-duplication of its own days only.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::parts::Manifest;
use super::{io, TableSpec, TABLES};
use crate::EmbeddedError;

const SNAPSHOTS: &str = ".snapshots";
/// How many times a table's manifest is read again when a file it listed was merged away
/// before it could be linked.
const ATTEMPTS: usize = 100;

/// The store as of one manifest per table. Keep it alive while the query runs.
pub struct Snapshot {
    dir: tempfile::TempDir,
    /// Each table's files, by how they are read.
    files: Vec<(&'static str, TableFilesToRead)>,
}

/// A table's files in a snapshot, by how a query reads them.
#[derive(Debug, Default, Clone)]
pub struct TableFilesToRead {
    /// Files of days where no key is stored twice: each row is the only version of its key.
    pub as_stored: Vec<PathBuf>,
    /// Files of days where a key may be stored twice (a replay): read de-duplicated.
    pub to_deduplicate: Vec<PathBuf>,
}

impl Snapshot {
    /// Links every table's committed files under a new snapshot directory.
    pub fn take(store: &Path) -> Result<Snapshot, EmbeddedError> {
        let root = store.join(SNAPSHOTS);
        std::fs::create_dir_all(&root).map_err(io(format!("cannot create {}", root.display())))?;
        remove_abandoned(&root);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .tempdir_in(&root)
            .map_err(io(format!(
                "cannot create a snapshot in {}",
                root.display()
            )))?;
        let mut files = Vec::new();
        for spec in TABLES {
            let target = dir.path().join(spec.name);
            let manifest = link_table(&store.join(spec.name), &target)?;
            files.push((spec.name, files_to_read(&spec, &manifest, &target)));
        }
        Ok(Snapshot { dir, files })
    }

    /// `table`'s files in this snapshot, by how they are read.
    pub fn files(&self, table: &str) -> TableFilesToRead {
        self.files
            .iter()
            .find(|(name, _)| *name == table)
            .map(|(_, files)| files.clone())
            .unwrap_or_default()
    }

    /// True when no key of `table` is stored twice in this snapshot: each row is the
    /// only version of its key, and the table reads as `FINAL` would without de-duplicating.
    pub fn keys_are_unique(&self, table: &str) -> bool {
        self.files(table).to_deduplicate.is_empty()
    }

    /// The directory of `table`'s files in this snapshot.
    pub fn table_dir(&self, table: &str) -> PathBuf {
        self.dir.path().join(table)
    }
}

/// The files of `manifest`, linked in `target`, by how they are read: a day all of whose files
/// say their keys are unique as stored, any other day de-duplicated (every day, for a table
/// whose key does not hold the day).
fn files_to_read(spec: &TableSpec, manifest: &Manifest, target: &Path) -> TableFilesToRead {
    let repeating_days: BTreeSet<&str> = manifest
        .parts
        .iter()
        .filter(|p| !p.unique_keys || !spec.key_fixes_the_day())
        .map(|p| p.day.as_str())
        .collect();
    let mut files = TableFilesToRead::default();
    for part in &manifest.parts {
        let path = target.join(linked_name(&part.path));
        if repeating_days.contains(part.day.as_str()) {
            files.to_deduplicate.push(path);
        } else {
            files.as_stored.push(path);
        }
    }
    files
}

/// The name of a store file's link in a snapshot: one directory, so `/` becomes `__`.
fn linked_name(path: &str) -> String {
    path.replace('/', "__")
}

/// Links the files of one manifest of the table in `source` into `target`; returns that
/// manifest.
fn link_table(source: &Path, target: &Path) -> Result<Manifest, EmbeddedError> {
    for _ in 0..ATTEMPTS {
        if target.exists() {
            std::fs::remove_dir_all(target)
                .map_err(io(format!("cannot clear {}", target.display())))?;
        }
        std::fs::create_dir_all(target)
            .map_err(io(format!("cannot create {}", target.display())))?;
        let manifest = Manifest::read(source)?;
        let mut whole = true;
        for part in &manifest.parts {
            let from = source.join(&part.path);
            let to = target.join(linked_name(&part.path));
            match std::fs::hard_link(&from, &to) {
                Ok(()) => {}
                // Merged away since the manifest was read: read the newer one.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    whole = false;
                    break;
                }
                // A file system without hard links: a copy is as good, only slower.
                Err(_) => {
                    std::fs::copy(&from, &to)
                        .map_err(io(format!("cannot copy {}", from.display())))?;
                }
            }
        }
        if whole {
            return Ok(manifest);
        }
    }
    Err(EmbeddedError::Store(format!(
        "{}: the files changed under {ATTEMPTS} snapshots in a row",
        source.display()
    )))
}

/// Removes the snapshot directories of processes that no longer run (a query killed): by
/// process id where `/proc` tells, else those older than a day.
fn remove_abandoned(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let proc = Path::new("/proc/self").exists();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let abandoned = if proc {
            !pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 86_400)
        };
        if abandoned {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
