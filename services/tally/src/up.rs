//! `tally up` and `tally query`: the whole pipeline in one process. With neither
//! `TALLY_KAFKA_BROKERS` nor `TALLY_CLICKHOUSE_URL` set it runs on the embedded journal and
//! Parquet store ([`tally_embedded`]); with one of them, on Kafka (then Parquet) or into
//! ClickHouse (from the journal); with both, the production services — ingest, processor and
//! sink — in one process against them.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tally_contract::config::{load, CLICKHOUSE_URL_ENV, KAFKA_BROKERS_ENV};
use tally_embedded::query::{self, Format};
use tally_embedded::up::{StoreKind, Transport, UpConfig, UpOptions};

use crate::error::TallyError;

/// Options of `tally up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where the journal and the store live.
    #[arg(long, default_value = "tally-data")]
    data_dir: PathBuf,
    /// Address of the HTTP ingest (default 127.0.0.1:8080, or `[ingest] listen`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of OTLP/gRPC (for example 127.0.0.1:4317, OTLP's port); off unless this or
    /// `[ingest] otlp_grpc_listen` sets it.
    #[arg(long)]
    otlp_grpc_listen: Option<SocketAddr>,
    /// TOML file with `[ingest]` and `[processor]` sections, as `tally ingest` and `tally
    /// process` read them.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Options of `tally query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// One SQL statement (DataFusion's dialect) over `llm_calls`, `spend_windows`,
    /// `loop_signals`, `alerts`, `deploys`, `tickets`.
    sql: String,
    /// The data directory of `tally up`.
    #[arg(long, default_value = "tally-data")]
    data_dir: PathBuf,
    /// table, csv or json.
    #[arg(long, default_value = "table")]
    format: Format,
}

fn set(variable: &str) -> bool {
    std::env::var(variable).is_ok_and(|v| !v.trim().is_empty())
}

/// Runs `tally up`.
pub async fn up(args: UpArgs) -> Result<(), TallyError> {
    let config: UpConfig = load(args.config.as_deref())?;
    let kafka = set(KAFKA_BROKERS_ENV);
    let clickhouse = set(CLICKHOUSE_URL_ENV);
    let options = UpOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        otlp_grpc_listen: args.otlp_grpc_listen,
        config,
        transport: if kafka {
            Transport::Kafka
        } else {
            Transport::Journal
        },
        store: if clickhouse {
            StoreKind::ClickHouse
        } else {
            StoreKind::Parquet
        },
    };
    if kafka && clickhouse {
        return production(options).await;
    }
    tally_embedded::up::run(options, tally_contract::shutdown::signal()).await?;
    Ok(())
}

/// Ingest, processor and sink in one process, on Kafka and ClickHouse: the production
/// services themselves, with `[ingest.kafka]` as the one Kafka of all three.
async fn production(options: UpOptions) -> Result<(), TallyError> {
    let ingest = tally_embedded::up::ingest_config(&options)?;
    let mut processor = options.config.processor;
    processor.kafka = ingest.kafka.clone();
    let mut sink = options.config.sink;
    sink.kafka = ingest.kafka.clone();
    for outcome in tally_sink::migrate(&sink).await? {
        tracing::info!(?outcome, "migration");
    }
    eprintln!(
        "tally up: on Kafka ({}) and ClickHouse ({}, database {}); ingest on http://{}{} (API key: {} unless [ingest] api_keys says otherwise)",
        ingest.kafka.brokers,
        sink.clickhouse.url,
        sink.clickhouse.database,
        ingest.listen,
        ingest
            .otlp_grpc_listen
            .map(|a| format!(", OTLP/gRPC on {a}"))
            .unwrap_or_default(),
        tally_embedded::up::LOCAL_KEY
    );
    tokio::try_join!(
        async { tally_ingest::run(ingest).await.map_err(TallyError::from) },
        async {
            tally_processor::run(processor)
                .await
                .map_err(TallyError::from)
        },
        async { tally_sink::run(sink).await.map_err(TallyError::from) },
    )?;
    Ok(())
}

/// Runs `tally query`.
pub async fn query(args: QueryArgs) -> Result<(), TallyError> {
    let store = store_dir(&args.data_dir)?;
    let (context, _snapshot) = query::context(&store).await?;
    let batches = query::run(&context, &args.sql).await?;
    print!("{}", query::render(&batches, args.format)?);
    Ok(())
}

/// `tally up`'s store in `data_dir` as a report source.
pub async fn embedded_source(
    data_dir: &Path,
) -> Result<tally_embedded::reports::EmbeddedSource, TallyError> {
    let (context, snapshot) = query::context(&store_dir(data_dir)?).await?;
    Ok(tally_embedded::reports::EmbeddedSource { context, snapshot })
}

fn store_dir(data_dir: &Path) -> Result<PathBuf, TallyError> {
    let store = data_dir.join("store");
    if !store.is_dir() {
        return Err(TallyError::Usage(format!(
            "{} holds no store: start `tally up --data-dir {}` first",
            data_dir.display(),
            data_dir.display()
        )));
    }
    Ok(store)
}
