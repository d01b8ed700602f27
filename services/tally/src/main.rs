//! `tally`: one binary, one subcommand per service.
//!
//! `tally up` runs the whole pipeline in one process (on an embedded store unless Kafka and
//! ClickHouse are configured) and `tally query` reads its store; `tally ingest`, `tally
//! process`, `tally sink` and `tally notify` run the pipeline's services one by one; `tally
//! topics create` prepares Kafka; `tally gen` generates traffic; `tally estimate` is a what-if
//! calculator of cost and carbon; `tally report` writes reports. Each service reads `--config
//! FILE` (TOML), then `TALLY__*` environment variables, then `TALLY_KAFKA_BROKERS` /
//! `TALLY_CLICKHOUSE_URL`.
//!
//! What it must not do: hold logic. Each subcommand parses its arguments and calls the crate
//! that owns the work.
mod dead_letters;
mod error;
mod estimate;
mod gen;
mod topics;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tally_contract::config::load;

use crate::error::TallyError;

#[derive(Debug, Parser)]
#[command(
    name = "tally",
    version,
    about = "Makes LLM token use governable: cost, runaway agents, carbon."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per run
enum Command {
    /// Run the ingest service (HTTP in, Avro on Kafka out).
    Ingest {
        /// TOML configuration file; defaults and environment variables apply without one.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the stream processor (cost, carbon, windows, budgets).
    Process {
        /// TOML configuration file; defaults and environment variables apply without one.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Apply the SQL migrations of sql/migrations to ClickHouse (idempotent).
    Migrate {
        /// TOML configuration file with a `[clickhouse]` section.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also set how long rows are kept: `default` (raw calls, signals and alerts 13
        /// months, 1-minute windows 30 days, 1-hour windows 13 months, the rest for good) or
        /// `none` (keep everything). Without it, retention is left as it is.
        #[arg(long, value_enum)]
        retention: Option<RetentionChoice>,
        /// Create the tables on this ClickHouse cluster (`remote_servers`): every statement
        /// `ON CLUSTER`, Replicated engines at `/clickhouse/tables/{shard}/{database}/{table}`
        /// (the servers need Keeper and the `shard` and `replica` macros). Without it, one
        /// server and plain MergeTree engines.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Deliver alerts to webhooks, Slack and Alertmanager.
    Notify {
        /// TOML configuration file with the `[[destinations]]` (see
        /// services/notify/notify.example.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the ClickHouse sink.
    Sink {
        /// TOML configuration file; defaults and environment variables apply without one.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Cost, energy and CO2e of a call, or of N tokens at its mix (a what-if calculator).
    Estimate(estimate::EstimateArgs),
    /// Generate realistic traffic (with runaway agents) and print its ground truth.
    Gen(gen::GenArgs),
    /// The whole pipeline in one process: ingest, processor, loop detection and a store —
    /// embedded (journal and Parquet) unless Kafka and ClickHouse are configured.
    Up(up::UpArgs),
    /// SQL over `tally up`'s embedded store.
    Query(up::QueryArgs),
    /// Reports for people, read from ClickHouse.
    Report {
        #[command(subcommand)]
        report: ReportCommand,
    },
    /// Manage tally's Kafka topics.
    Topics {
        #[command(subcommand)]
        command: topics::TopicsCommand,
    },
    /// List the dead letters, or send their records back to their topics once the cause is
    /// fixed.
    DeadLetters {
        #[command(subcommand)]
        command: dead_letters::DeadLettersCommand,
    },
}

/// `tally migrate --retention`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RetentionChoice {
    Default,
    None,
}

/// Where and how a report is written, and which store it reads.
#[derive(Debug, clap::Args)]
struct ReportOutput {
    /// table, csv, json or html.
    #[arg(long, default_value = "table")]
    format: String,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// TOML configuration file with a `[clickhouse]` section.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Read `tally up`'s embedded store in this data directory instead of ClickHouse.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The days a report covers.
#[derive(Debug, Args)]
struct Period {
    /// Start, `YYYY-MM-DD` (UTC), inclusive (emissions: months starting on or after it).
    /// Default: the first day of last month.
    #[arg(long)]
    from: Option<String>,
    /// End, `YYYY-MM-DD` (UTC), exclusive. Default: the first day of next month.
    #[arg(long)]
    to: Option<String>,
}

impl Period {
    /// `(from, to)`, the defaults filled in from today's date (UTC): last month and this one.
    fn resolve(self) -> (String, String) {
        let today = time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(tally_contract::clock::now_micros()) * 1_000,
        )
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN);
        let first = today.replace_day(1).expect("every month has a first day");
        let last_month = first
            .previous_day()
            .map_or(first, |d| d.replace_day(1).unwrap_or(d));
        let next_month = first
            .checked_add(time::Duration::days(32))
            .and_then(|d| d.replace_day(1).ok())
            .unwrap_or(first);
        (
            self.from.unwrap_or_else(|| last_month.to_string()),
            self.to.unwrap_or_else(|| next_month.to_string()),
        )
    }
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Spend (exact dollars), calls, unpriced calls and tokens, by team or other dimensions.
    Spend {
        #[command(flatten)]
        period: Period,
        /// Breakdown: comma-separated of team, model, provider, user, workflow, region, service_tier.
        #[arg(long, default_value = "team", value_delimiter = ',')]
        by: Vec<String>,
        #[command(flatten)]
        output: ReportOutput,
    },
    /// Cost per deploy, per closed ticket and team efficiency.
    Attribution {
        #[command(flatten)]
        period: Period,
        /// Share of a team's untagged spend attributed to each ticket open at the time: a
        /// decimal from 0 to 1 with at most 9 decimal places, exact.
        #[arg(long, default_value = "0")]
        unattributed_share: tally_report::Share,
        /// Loaded cost of an hour of a person's work, for the hidden-cost comparison.
        #[arg(long, default_value_t = 100.0)]
        loaded_hourly_rate_usd: f64,
        #[command(flatten)]
        output: ReportOutput,
    },
    /// Runaway-agent signals with what each burned.
    Loops {
        #[command(flatten)]
        period: Period,
        #[command(flatten)]
        output: ReportOutput,
    },
    /// Energy and CO2e, low / central / high, with methods, data versions and assumptions.
    Emissions {
        #[command(flatten)]
        period: Period,
        /// Breakdown: comma-separated of team, model, provider, region, month.
        #[arg(long, default_value = "team,model,region", value_delimiter = ',')]
        by: Vec<String>,
        /// table, csv, json or html.
        #[arg(long, default_value = "table")]
        format: String,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// TOML configuration file with a `[clickhouse]` section.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Read `tally up`'s embedded store in this data directory instead of ClickHouse.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

/// The store a report reads: ClickHouse, or `tally up`'s embedded store.
#[allow(clippy::large_enum_variant)] // one per run
enum Store {
    ClickHouse(clickhouse::Client),
    Embedded(tally_embedded::reports::EmbeddedSource),
}

async fn store_for(
    config: &Option<PathBuf>,
    data_dir: &Option<PathBuf>,
) -> Result<Store, TallyError> {
    match data_dir {
        Some(dir) => Ok(Store::Embedded(up::embedded_source(dir).await?)),
        None => {
            let config: tally_sink::SinkConfig = load(config.as_deref())?;
            Ok(Store::ClickHouse(tally_sink::sink::client(&config)))
        }
    }
}

/// Runs a tabular report on whichever store.
macro_rules! on_store {
    ($store:expr, |$source:ident| $call:expr) => {
        match &$store {
            Store::ClickHouse($source) => $call,
            Store::Embedded($source) => $call,
        }
    };
}

async fn report_command(report: ReportCommand) -> Result<(), TallyError> {
    use tally_report::{emissions, tabular};
    let (text, output) = match report {
        ReportCommand::Emissions {
            period,
            by,
            format,
            out,
            config,
            data_dir,
        } => {
            let (from, to) = period.resolve();
            let query = emissions::EmissionsQuery { from, to, by };
            let store = store_for(&config, &data_dir).await?;
            let report = on_store!(store, |source| emissions::emissions(source, &query).await?);
            let text = match format.as_str() {
                "table" => report.table(),
                "csv" => report.csv(),
                "json" => report.json(),
                "html" => report.html(),
                other => {
                    return Err(TallyError::Usage(format!(
                        "--format {other:?} is not table, csv, json or html"
                    )))
                }
            };
            (text, out)
        }
        ReportCommand::Spend { period, by, output } => {
            let (from, to) = period.resolve();
            let store = store_for(&output.config, &output.data_dir).await?;
            let report = on_store!(store, |source| tabular::spend(source, &from, &to, &by)
                .await?);
            (render(&report, &output.format)?, output.out)
        }
        ReportCommand::Attribution {
            period,
            unattributed_share,
            loaded_hourly_rate_usd,
            output,
        } => {
            let (from, to) = period.resolve();
            let store = store_for(&output.config, &output.data_dir).await?;
            let report = on_store!(store, |source| tabular::attribution(
                source,
                &from,
                &to,
                unattributed_share,
                loaded_hourly_rate_usd,
            )
            .await?);
            (render(&report, &output.format)?, output.out)
        }
        ReportCommand::Loops { period, output } => {
            let (from, to) = period.resolve();
            let store = store_for(&output.config, &output.data_dir).await?;
            let report = on_store!(store, |source| tabular::loops(source, &from, &to).await?);
            (render(&report, &output.format)?, output.out)
        }
    };
    match output {
        Some(path) => std::fs::write(&path, text)
            .map_err(|e| TallyError::Usage(format!("cannot write {}: {e}", path.display()))),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn render(report: &tally_report::tabular::Report, format: &str) -> Result<String, TallyError> {
    match format {
        "table" => Ok(report.table()),
        "csv" => Ok(report.csv()),
        "json" => Ok(report.json()),
        "html" => Ok(report.html()),
        other => Err(TallyError::Usage(format!(
            "--format {other:?} is not table, csv, json or html"
        ))),
    }
}

/// mimalloc rather than glibc's malloc: the stages allocate per call (decoded strings,
/// window keys), and in the processor's chain benchmark malloc and free were a fifth of the
/// time (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tally_contract::telemetry::init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), TallyError> {
    match command {
        Command::Ingest { config } => tally_ingest::run(load(config.as_deref())?).await?,
        Command::Process { config } => tally_processor::run(load(config.as_deref())?).await?,
        Command::Sink { config } => tally_sink::run(load(config.as_deref())?).await?,
        Command::Notify { config } => tally_notify::run(load(config.as_deref())?).await?,
        Command::Gen(args) => gen::run(args).await?,
        Command::Up(args) => up::up(args).await?,
        Command::Query(args) => up::query(args).await?,
        Command::Migrate {
            config,
            retention,
            cluster,
        } => {
            let config: tally_sink::SinkConfig = load(config.as_deref())?;
            let topology = match cluster {
                Some(name) => tally_sink::migrate::Topology::Cluster(name),
                None => tally_sink::migrate::Topology::SingleNode,
            };
            for outcome in tally_sink::migrate_on(&config, &topology).await? {
                match outcome {
                    tally_sink::migrate::Outcome::Applied(name) => println!("applied {name}"),
                    tally_sink::migrate::Outcome::AlreadyApplied(name) => {
                        println!("already {name}")
                    }
                }
            }
            if let Some(choice) = retention {
                let retention = match choice {
                    RetentionChoice::Default => tally_sink::migrate::Retention::Default,
                    RetentionChoice::None => tally_sink::migrate::Retention::None,
                };
                let server = tally_sink::sink::client(&config);
                let database = &config.clickhouse.database;
                for statement in
                    tally_sink::migrate::set_retention(&server, database, retention, &topology)
                        .await?
                {
                    println!("{statement}");
                }
            }
        }
        Command::Topics { command } => topics::run(command).await?,
        Command::DeadLetters { command } => dead_letters::run(command).await?,
        Command::Estimate(args) => estimate::run(args)?,
        Command::Report { report } => report_command(report).await?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_aux::serde_introspection::serde_introspect;
    use tally_contract::config::SERVICE_KEYS;

    #[test]
    fn the_shared_environment_knows_every_services_top_level_keys() {
        let mut keys: BTreeSet<&str> = BTreeSet::new();
        keys.extend(serde_introspect::<tally_ingest::IngestConfig>());
        keys.extend(serde_introspect::<tally_processor::ProcessorConfig>());
        keys.extend(serde_introspect::<tally_sink::SinkConfig>());
        keys.extend(serde_introspect::<tally_notify::NotifyConfig>());
        keys.extend(serde_introspect::<crate::topics::TopicsConfig>());
        keys.extend(serde_introspect::<tally_embedded::up::UpConfig>());
        let listed: BTreeSet<&str> = SERVICE_KEYS.iter().copied().collect();
        assert_eq!(listed, keys, "tally_contract::config::SERVICE_KEYS");
    }
}
