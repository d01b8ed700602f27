//! `tally migrate`: the numbered SQL files of `sql/migrations/`, applied in order and recorded
//! in `tally_schema_migrations` with a checksum. Idempotent: an applied migration is skipped;
//! one whose file changed after it was applied is refused (add a new migration instead).
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::SinkError;

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The number its file name starts with (`0001_llm_calls.sql` → 1).
    pub version: u32,
    /// The file name.
    pub name: String,
    /// The SQL; statements end with `;` at the end of a line.
    pub sql: String,
}

impl Migration {
    /// The migrations built into this binary.
    pub fn embedded() -> Result<Vec<Migration>, SinkError> {
        MIGRATIONS
            .iter()
            .map(|(name, sql)| Migration::new(name, sql))
            .collect()
    }

    /// The migrations of a folder (for tests and for users who keep their own).
    pub fn from_dir(dir: &std::path::Path) -> Result<Vec<Migration>, SinkError> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| SinkError::Migration(format!("{}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("sql"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| {
                let sql = std::fs::read_to_string(path)
                    .map_err(|e| SinkError::Migration(format!("{}: {e}", path.display())))?;
                Migration::new(
                    &path.file_name().unwrap_or_default().to_string_lossy(),
                    &sql,
                )
            })
            .collect()
    }

    fn new(name: &str, sql: &str) -> Result<Migration, SinkError> {
        let version = name
            .split('_')
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                SinkError::Migration(format!(
                    "{name}: a migration's name starts with its number (0001_...)"
                ))
            })?;
        Ok(Migration {
            version,
            name: name.to_string(),
            sql: sql.to_string(),
        })
    }

    /// SHA-256 of the SQL: what "changed after it was applied" is measured by.
    pub fn checksum(&self) -> String {
        Sha256::digest(self.sql.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The statements, without comment-only pieces.
    pub fn statements(&self) -> Vec<String> {
        self.sql
            .split(";\n")
            .map(|statement| {
                statement
                    .lines()
                    .filter(|line| !line.trim_start().starts_with("--"))
                    .collect::<Vec<_>>()
                    .join("\n")
                    .trim()
                    .trim_end_matches(';')
                    .to_string()
            })
            .filter(|statement| !statement.is_empty())
            .collect()
    }
}

#[derive(Debug, Row, Serialize, Deserialize)]
struct Applied {
    version: u32,
    name: String,
    checksum: String,
}

/// Where the tables live: one server (the default), or a ClickHouse cluster named in the
/// servers' `remote_servers`, with Keeper and the `{shard}` and `{replica}` macros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// MergeTree engines, plain DDL.
    SingleNode,
    /// `tally migrate --cluster NAME`: every statement `ON CLUSTER NAME`, every MergeTree
    /// engine its Replicated one, at `/clickhouse/tables/{shard}/{database}/{table}` with
    /// replica `{replica}`.
    Cluster(String),
}

/// The statement kinds the migrations use, each followed by the object's name.
const DDL_PREFIXES: [&str; 9] = [
    "CREATE DATABASE IF NOT EXISTS ",
    "CREATE TABLE IF NOT EXISTS ",
    "CREATE MATERIALIZED VIEW IF NOT EXISTS ",
    "CREATE VIEW IF NOT EXISTS ",
    "CREATE OR REPLACE VIEW ",
    "ALTER TABLE ",
    "DROP VIEW IF EXISTS ",
    "DROP TABLE IF EXISTS ",
    "DROP VIEW ",
];

/// The MergeTree engines the migrations use, longest name first.
const ENGINES: [&str; 4] = [
    "ReplacingMergeTree",
    "SummingMergeTree",
    "AggregatingMergeTree",
    "MergeTree",
];

impl Topology {
    /// `statement` as this topology runs it. A statement of a kind it cannot place on a
    /// cluster is refused (never run on one node only).
    pub fn statement(&self, statement: &str) -> Result<String, SinkError> {
        let Topology::Cluster(cluster) = self else {
            return Ok(statement.to_string());
        };
        let statement = statement.trim();
        let prefix = DDL_PREFIXES
            .iter()
            .find(|p| statement.starts_with(*p))
            .ok_or_else(|| {
                SinkError::Migration(format!(
                    "cannot run on cluster {cluster}: not a statement kind tally migrate places on a cluster: {}",
                    statement.lines().next().unwrap_or_default()
                ))
            })?;
        let rest = &statement[prefix.len()..];
        let name_end = rest
            .find(|c: char| c.is_whitespace() || c == '(')
            .unwrap_or(rest.len());
        let (name, tail) = rest.split_at(name_end);
        let placed = format!(
            "{prefix}{name} ON CLUSTER `{}`{tail}",
            cluster.replace('`', "")
        );
        Ok(replicated(&placed))
    }
}

/// Each `ENGINE = <X>MergeTree[(args)]` as `Replicated<X>MergeTree(path, replica[, args])`.
fn replicated(statement: &str) -> String {
    const ARGS: &str = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'";
    let mut out = String::new();
    let mut rest = statement;
    while let Some(at) = rest.find("ENGINE = ") {
        let after = &rest[at + "ENGINE = ".len()..];
        out.push_str(&rest[..at + "ENGINE = ".len()]);
        match ENGINES.iter().find(|e| after.starts_with(*e)) {
            Some(engine) => {
                let tail = &after[engine.len()..];
                match tail.strip_prefix('(') {
                    Some(inner) if inner.trim_start().starts_with(')') => {
                        out.push_str(&format!("Replicated{engine}({ARGS}"));
                        rest = inner;
                    }
                    Some(inner) => {
                        out.push_str(&format!("Replicated{engine}({ARGS}, "));
                        rest = inner;
                    }
                    None => {
                        out.push_str(&format!("Replicated{engine}({ARGS})"));
                        rest = tail;
                    }
                }
            }
            None => rest = after,
        }
    }
    out.push_str(rest);
    out
}

/// What `migrate` did with one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied(String),
    AlreadyApplied(String),
}

/// Creates the database if needed and applies the migrations not applied yet, in order.
pub async fn migrate(
    server: &Client,
    database: &str,
    migrations: &[Migration],
    topology: &Topology,
) -> Result<Vec<Outcome>, SinkError> {
    let ch = |e: clickhouse::error::Error| SinkError::ClickHouse(e.to_string());
    server
        .query(&topology.statement(&format!("CREATE DATABASE IF NOT EXISTS `{database}`"))?)
        .execute()
        .await
        .map_err(ch)?;
    let client = server.clone().with_database(database);
    client
        .query(&topology.statement(
            "CREATE TABLE IF NOT EXISTS tally_schema_migrations (
                version UInt32 COMMENT 'Number of the migration file',
                name String COMMENT 'File name',
                checksum String COMMENT 'SHA-256 of the file when it was applied',
                applied_at DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'When it was applied'
            ) ENGINE = MergeTree ORDER BY version
            COMMENT 'Migrations tally migrate has applied'",
        )?)
        .execute()
        .await
        .map_err(ch)?;
    let applied: Vec<Applied> = client
        .query("SELECT ?fields FROM tally_schema_migrations ORDER BY version")
        .fetch_all()
        .await
        .map_err(ch)?;
    let mut outcomes = Vec::new();
    for migration in migrations {
        if let Some(done) = applied.iter().find(|a| a.version == migration.version) {
            if done.checksum != migration.checksum() {
                return Err(SinkError::Migration(format!(
                    "migration {} was changed after it was applied as {} (checksum {} then, {} now); add a new migration instead",
                    migration.name,
                    done.name,
                    &done.checksum[..12],
                    &migration.checksum()[..12]
                )));
            }
            outcomes.push(Outcome::AlreadyApplied(migration.name.clone()));
            continue;
        }
        for statement in migration.statements() {
            client
                .query(&topology.statement(&statement)?)
                .execute()
                .await
                .map_err(|e| SinkError::Migration(format!("{}: {e}", migration.name)))?;
        }
        let mut insert = client
            .insert::<Applied>("tally_schema_migrations")
            .await
            .map_err(ch)?;
        insert
            .write(&Applied {
                version: migration.version,
                name: migration.name.clone(),
                checksum: migration.checksum(),
            })
            .await
            .map_err(ch)?;
        insert.end().await.map_err(ch)?;
        outcomes.push(Outcome::Applied(migration.name.clone()));
    }
    Ok(outcomes)
}

/// How long ClickHouse keeps rows (`tally migrate --retention`). Without the flag a
/// database keeps whatever TTLs it has (none, as migrated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// [`DEFAULT_RETENTION`].
    Default,
    /// Every row kept for good: the TTLs of [`DEFAULT_RETENTION`]'s tables removed.
    None,
}

/// The default retention, per table: raw calls, loop signals and alerts for 13 months;
/// 1-minute spend windows for 30 days and 1-hour ones for 13 months (1-day windows for good);
/// deploys, tickets and the hourly and daily rollups for good, so the long-run figures
/// outlive the raw calls. Rows go at ClickHouse's next merge after they expire.
pub const DEFAULT_RETENTION: [(&str, &str); 4] = [
    ("llm_calls", "toDateTime(occurred_at) + INTERVAL 13 MONTH"),
    (
        "spend_windows",
        "toDateTime(window_start) + INTERVAL 30 DAY DELETE WHERE window_seconds = 60, \
         toDateTime(window_start) + INTERVAL 13 MONTH DELETE WHERE window_seconds = 3600",
    ),
    (
        "loop_signals",
        "toDateTime(last_event_at) + INTERVAL 13 MONTH",
    ),
    ("alerts", "toDateTime(occurred_at) + INTERVAL 13 MONTH"),
];

/// Sets (or removes) the TTLs of [`DEFAULT_RETENTION`]'s tables in `database`; returns the
/// statements run.
pub async fn set_retention(
    server: &Client,
    database: &str,
    retention: Retention,
    topology: &Topology,
) -> Result<Vec<String>, SinkError> {
    let mut done = Vec::new();
    for (table, ttl) in DEFAULT_RETENTION {
        let statement = topology.statement(&match retention {
            Retention::Default => format!("ALTER TABLE `{database}`.`{table}` MODIFY TTL {ttl}"),
            Retention::None => format!("ALTER TABLE `{database}`.`{table}` REMOVE TTL"),
        })?;
        match server.query(&statement).execute().await {
            Ok(()) => done.push(statement),
            // Removing a TTL a table does not have is nothing to do.
            Err(e)
                if retention == Retention::None
                    && e.to_string().contains("doesn't have any table TTL") => {}
            Err(e) => return Err(SinkError::ClickHouse(format!("{statement}: {e}"))),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_a_cluster_every_statement_is_on_cluster_and_every_engine_replicated() {
        let cluster = Topology::Cluster("prod".into());
        let mut statements: Vec<String> = Migration::embedded()
            .unwrap()
            .iter()
            .flat_map(Migration::statements)
            .collect();
        statements.push("CREATE DATABASE IF NOT EXISTS `tally`".into());
        for statement in &statements {
            let placed = cluster.statement(statement).unwrap();
            assert!(placed.contains(" ON CLUSTER `prod`"), "{placed}");
            for engine in ENGINES {
                assert_eq!(
                    placed.matches(&format!("ENGINE = {engine}")).count(),
                    0,
                    "{placed}"
                );
            }
            assert_eq!(
                placed.matches("ENGINE = Replicated").count(),
                statement.matches("ENGINE = ").count(),
                "{placed}"
            );
            assert_eq!(
                Topology::SingleNode.statement(statement).unwrap(),
                *statement
            );
        }
        assert_eq!(
            cluster
                .statement("CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = ReplacingMergeTree(v) ORDER BY a")
                .unwrap(),
            "CREATE TABLE IF NOT EXISTS t ON CLUSTER `prod` (a UInt8) ENGINE = \
             ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', v) ORDER BY a"
        );
        assert_eq!(
            cluster
                .statement("ALTER TABLE `db`.`t` REMOVE TTL")
                .unwrap(),
            "ALTER TABLE `db`.`t` ON CLUSTER `prod` REMOVE TTL"
        );
        let refused = cluster.statement("INSERT INTO t VALUES (1)").unwrap_err();
        assert!(
            refused.to_string().contains("cannot run on cluster prod"),
            "{refused}"
        );
    }

    #[test]
    fn embedded_migrations_are_numbered_in_order_and_split_into_statements() {
        let migrations = Migration::embedded().unwrap();
        assert_eq!(migrations[0].name, "0001_llm_calls.sql");
        assert!(migrations.windows(2).all(|w| w[0].version < w[1].version));
        let statements = migrations[0].statements();
        assert_eq!(statements.len(), 1);
        assert!(statements[0].starts_with("CREATE TABLE IF NOT EXISTS llm_calls"));
        assert!(
            !statements[0].contains("-- tally's"),
            "comments are dropped"
        );
    }
}
