//! `tally`: one binary, one subcommand per service.
//!
//! `tally ingest`, `tally process` and `tally sink` run the pipeline's services; `tally topics
//! create` prepares Kafka; `tally estimate` is a what-if calculator of cost and carbon. Each service reads `--config FILE` (TOML), then `TALLY__*`
//! environment variables, then `TALLY_KAFKA_BROKERS` / `TALLY_CLICKHOUSE_URL`.
mod error;
mod estimate;
mod topics;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    },
    /// Run the ClickHouse sink.
    Sink {
        /// TOML configuration file; defaults and environment variables apply without one.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Cost, energy and CO2e of a call, or of N tokens at its mix (a what-if calculator).
    Estimate(estimate::EstimateArgs),
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
}

#[derive(Debug, Subcommand)]
enum ReportCommand {
    /// Energy and CO2e, low / central / high, with methods, data versions and assumptions.
    Emissions {
        /// First month, `YYYY-MM-DD` (months starting on or after it).
        #[arg(long)]
        from: String,
        /// End, `YYYY-MM-DD`, exclusive (months starting before it).
        #[arg(long)]
        to: String,
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
    },
}

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
        Command::Migrate { config } => {
            let config: tally_sink::SinkConfig = load(config.as_deref())?;
            for outcome in tally_sink::migrate(&config).await? {
                match outcome {
                    tally_sink::migrate::Outcome::Applied(name) => println!("applied {name}"),
                    tally_sink::migrate::Outcome::AlreadyApplied(name) => {
                        println!("already {name}")
                    }
                }
            }
        }
        Command::Topics { command } => topics::run(command).await?,
        Command::Estimate(args) => estimate::run(args)?,
        Command::Report {
            report:
                ReportCommand::Emissions {
                    from,
                    to,
                    by,
                    format,
                    out,
                    config,
                },
        } => {
            let config: tally_sink::SinkConfig = load(config.as_deref())?;
            let client = tally_sink::sink::client(&config);
            let query = tally_sink::report::EmissionsQuery { from, to, by };
            let report = tally_sink::report::emissions(&client, &query).await?;
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
            match out {
                Some(path) => std::fs::write(&path, text).map_err(|e| {
                    TallyError::Usage(format!("cannot write {}: {e}", path.display()))
                })?,
                None => print!("{text}"),
            }
        }
    }
    Ok(())
}
