//! `tally sink` beside the sink a data team would write by hand (scripts/bench/peer_sink.py:
//! confluent-kafka, fastavro, clickhouse-connect), each alone on the machine, on the same
//! records: the run's enriched calls (same partitions, keys and bytes), into a topic prefix
//! and a fresh database of each sink's own.
//!
//! Start-up is left out the same way for both: the sink starts on its empty topic, the first
//! record is produced alone and the harness waits until it is a row (the process is up, its
//! consumer group joined, its first insert done); then the rest are produced at once (the
//! producer is an order of magnitude faster than either sink) and the rate is rows/s from
//! the first of them produced to the last row visible. CPU: the sink process's user + system
//! seconds over that time, and the ClickHouse server's, per million records.
use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::ceilings::Record;
use crate::pipeline::Ctx;
use crate::procs::{CpuMeter, Proc};

/// One sink's figures on the backlog.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkRun {
    /// Records after the first (the warm-up).
    pub records: usize,
    /// From the first of them produced to the last row visible.
    pub per_sec: f64,
    pub secs: f64,
    /// From the process's start until the first record was a row.
    pub first_row_secs: f64,
    pub cpu_per_million: f64,
    pub server_cpu_per_million: Option<f64>,
}

/// Creates the topics of `prefix` (`tally topics create`).
fn create_topics(ctx: &Ctx, prefix: &str) {
    ctx.run(
        &["topics", "create"],
        &[("TALLY__KAFKA__TOPIC_PREFIX", prefix)],
    );
}

/// Produces `records` to `<prefix>tally.llm_calls_enriched.v1`, each to its partition, and
/// waits for every acknowledgement.
async fn produce(ctx: &Ctx, prefix: &str, records: &[Record]) {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &ctx.brokers)
        .set("enable.idempotence", "true")
        .set("compression.type", "zstd")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .expect("a producer");
    let topic = format!("{prefix}tally.llm_calls_enriched.v1");
    let mut deliveries = Vec::with_capacity(records.len());
    for r in records {
        let record = FutureRecord::to(&topic)
            .partition(r.partition)
            .key(&r.key)
            .payload(&r.payload);
        deliveries.push(producer.send_result(record).expect("queued"));
    }
    for delivery in deliveries {
        delivery.await.expect("delivered").expect("acknowledged");
    }
}

/// Waits until `database.llm_calls` holds `n` rows: when it first did.
async fn wait_rows(ctx: &Ctx, process: &mut Proc, database: &str, n: usize) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let rows = ctx.count(database, "llm_calls").await;
        if rows >= n as u64 {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{}: {rows} of {n} rows after 600 s",
            process.name
        );
        if process.exited() {
            panic!(
                "{} exited with {rows} of {n} rows (its log is in the run's folder)",
                process.name
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The measurement around a started sink: warm-up record, then the rest.
async fn measure(
    ctx: &Ctx,
    sink: &mut Proc,
    started: Instant,
    prefix: &str,
    database: &str,
    records: &[Record],
) -> SinkRun {
    let (first, rest) = records.split_first().expect("records for the backlog");
    produce(ctx, prefix, std::slice::from_ref(first)).await;
    let first_row = wait_rows(ctx, sink, database, 1).await;
    let pids: Vec<(String, u32)> = ctx
        .servers
        .iter()
        .filter(|(name, _)| name == "clickhouse")
        .cloned()
        .chain([("sink".to_string(), sink.pid())])
        .collect();
    let meter = CpuMeter::start(&pids);
    let from = Instant::now();
    produce(ctx, prefix, rest).await;
    let done = wait_rows(ctx, sink, database, records.len()).await;
    let cpu = meter.since(&pids);
    let secs = done.duration_since(from).as_secs_f64();
    let n = rest.len().max(1) as f64;
    SinkRun {
        records: rest.len(),
        per_sec: n / secs,
        secs,
        first_row_secs: first_row.duration_since(started).as_secs_f64(),
        cpu_per_million: cpu.get("sink").copied().unwrap_or(f64::NAN) / n * 1e6,
        server_cpu_per_million: cpu.get("clickhouse").map(|c| c / n * 1e6),
    }
}

/// `tally sink` (its defaults, every table) on the records, under `prefix`.
pub async fn tally_sink(ctx: &Ctx, prefix: &str, database: &str, records: &[Record]) -> SinkRun {
    create_topics(ctx, prefix);
    ctx.migrate(database);
    let mut command = ctx.tally(&["sink"]);
    command
        .env("TALLY__KAFKA__TOPIC_PREFIX", prefix)
        .env("TALLY__GROUP_ID", format!("{prefix}sink"))
        .env("TALLY__CLICKHOUSE__DATABASE", database)
        .stdout(Stdio::null())
        .stderr(ctx.log(&format!("{prefix}sink")));
    let started = Instant::now();
    let mut sink = Proc::spawn("tally sink", &mut command);
    let run = measure(ctx, &mut sink, started, prefix, database, records).await;
    sink.kill();
    ctx.drop_database(database).await;
    ctx.delete_topics(prefix);
    run
}

/// The hand-written peer on the same records, under `prefix`.
pub async fn python_peer(
    ctx: &Ctx,
    python: &str,
    prefix: &str,
    database: &str,
    records: &[Record],
) -> SinkRun {
    create_topics(ctx, prefix);
    ctx.migrate(database);
    let script = ctx.repo.join("scripts/bench/peer_sink.py");
    let mut command = std::process::Command::new(python);
    command
        .arg(script)
        .args(["--brokers", &ctx.brokers, "--topic-prefix", prefix])
        .args(["--clickhouse", &ctx.clickhouse_url, "--database", database])
        .args([
            "--group",
            &format!("{prefix}peer"),
            "--expect",
            &records.len().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(ctx.log(&format!("{prefix}peer")))
        .stderr(ctx.log(&format!("{prefix}peer")));
    let started = Instant::now();
    let mut peer = Proc::spawn("peer_sink.py", &mut command);
    let run = measure(ctx, &mut peer, started, prefix, database, records).await;
    let (_, status) = peer
        .wait(Duration::from_secs(60))
        .expect("the peer exits once it has inserted every row");
    assert!(status.success(), "peer_sink.py failed ({status})");
    ctx.drop_database(database).await;
    ctx.delete_topics(prefix);
    run
}
