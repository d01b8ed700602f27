//! A consistent view of the store for a query: for each table, hard links to the files one
//! manifest lists, in a directory of the query's own (`<store>/.snapshots/<pid>-…/<table>/`).
//! A merge that deletes its inputs while the query runs takes away only the store's names for
//! them; the query's links keep the data, so it reads the whole table as of one manifest,
//! never a file that vanished, never a file twice. The directory goes when the snapshot is
//! dropped; one left by a process that died is removed by the next snapshot.
use std::path::{Path, PathBuf};

use super::parts::Manifest;
use super::{io, TABLES};
use crate::EmbeddedError;

const SNAPSHOTS: &str = ".snapshots";
/// How many times a table's manifest is read again when a file it listed was merged away
/// before it could be linked.
const ATTEMPTS: usize = 100;

/// The store as of one manifest per table. Keep it alive while the query runs.
pub struct Snapshot {
    dir: tempfile::TempDir,
    /// The tables none of whose files repeats a key ([`super::parts::Part::unique_keys`]).
    unique: Vec<&'static str>,
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
        let mut unique = Vec::new();
        for spec in TABLES {
            let manifest = link_table(&store.join(spec.name), &dir.path().join(spec.name))?;
            if manifest.parts.iter().all(|p| p.unique_keys) {
                unique.push(spec.name);
            }
        }
        Ok(Snapshot { dir, unique })
    }

    /// True when no key of `table` is stored twice in this snapshot: each row is the
    /// only version of its key, and the table reads as `FINAL` would without de-duplicating.
    pub fn keys_are_unique(&self, table: &str) -> bool {
        self.unique.contains(&table)
    }

    /// The directory of `table`'s files in this snapshot.
    pub fn table_dir(&self, table: &str) -> PathBuf {
        self.dir.path().join(table)
    }
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
            let to = target.join(part.path.replace('/', "__"));
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
