//! `tally sink` beside the sink a data team would write by hand (scripts/bench/peer_sink.py:
//! confluent-kafka, fastavro, clickhouse-connect), each alone on the machine, on the same
//! backlog: the run's enriched calls copied (same partitions, keys and bytes) to a topic of
//! their own, read by each from the start into a fresh database of its own, until every
//! record is a row.
//!
//! Rates: `steady` is from the first row visible to the last (start-up and consumer-group
//! join left out, the same for both), `wall` from the process's start. CPU: the process's
//! user + system seconds over its whole life, per million records.
use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::ceilings::Record;
use crate::pipeline::Ctx;
use crate::procs::Proc;

/// One sink's figures on the backlog.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkRun {
    pub records: usize,
    pub steady_per_sec: f64,
    pub wall_per_sec: f64,
    pub first_row_secs: f64,
    pub cpu_per_million: f64,
}

/// The backlog: the records in `<prefix>tally.llm_calls_enriched.v1`, every other topic of
/// the prefix created empty (`tally topics create`).
pub async fn backlog(ctx: &Ctx, prefix: &str, records: &[Record]) {
    ctx.run(
        &["topics", "create"],
        &[("TALLY__KAFKA__TOPIC_PREFIX", prefix)],
    );
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &ctx.brokers)
        .set("enable.idempotence", "true")
        .set("compression.type", "zstd")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
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

/// When rows showed, in seconds since the process started.
#[derive(Debug, Clone, Copy)]
struct Times {
    /// The first query that found rows, and how many.
    first: f64,
    first_rows: u64,
    /// The first query that found them all.
    last: f64,
}

/// Waits until `database.llm_calls` holds `n` rows.
async fn watch(ctx: &Ctx, process: &mut Proc, database: &str, n: usize, started: Instant) -> Times {
    let mut first = None;
    let deadline = started + Duration::from_secs(600);
    loop {
        let rows = ctx.count(database, "llm_calls").await;
        let t = started.elapsed().as_secs_f64();
        if rows > 0 && first.is_none() {
            first = Some((t, rows));
        }
        if rows >= n as u64 {
            let (first, first_rows) = first.expect("a first row");
            return Times {
                first,
                first_rows,
                last: t,
            };
        }
        assert!(
            Instant::now() < deadline,
            "{}: {rows} of {n} rows after 600 s",
            process.name
        );
        if process.exited() && rows < n as u64 {
            panic!("{} exited with {rows} of {n} rows", process.name);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn figures(n: usize, times: Times, cpu: f64) -> SinkRun {
    let steady = match times.last > times.first {
        true => n.saturating_sub(times.first_rows as usize) as f64 / (times.last - times.first),
        false => n as f64 / times.last.max(1e-3),
    };
    SinkRun {
        records: n,
        steady_per_sec: steady,
        wall_per_sec: n as f64 / times.last,
        first_row_secs: times.first,
        cpu_per_million: cpu / n as f64 * 1e6,
    }
}

/// `tally sink` (its defaults, every table) on the backlog of `prefix`.
pub async fn tally_sink(ctx: &Ctx, prefix: &str, database: &str, n: usize) -> SinkRun {
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
    let times = watch(ctx, &mut sink, database, n, started).await;
    let cpu = sink.kill();
    ctx.drop_database(database).await;
    figures(n, times, cpu)
}

/// The hand-written peer on the same backlog.
pub async fn python_peer(
    ctx: &Ctx,
    python: &str,
    prefix: &str,
    database: &str,
    n: usize,
) -> SinkRun {
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
            &n.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(ctx.log(&format!("{prefix}peer")))
        .stderr(ctx.log(&format!("{prefix}peer")));
    let started = Instant::now();
    let mut peer = Proc::spawn("peer_sink.py", &mut command);
    let times = watch(ctx, &mut peer, database, n, started).await;
    let (cpu, status) = peer
        .wait(Duration::from_secs(60))
        .expect("the peer exits once it has inserted every row");
    assert!(status.success(), "peer_sink.py failed ({status})");
    ctx.drop_database(database).await;
    figures(n, times, cpu)
}
