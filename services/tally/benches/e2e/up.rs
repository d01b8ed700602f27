//! `tally up` on its embedded store (journal and Parquet, no Kafka, no ClickHouse), fed by
//! `tally gen` as fast as it sends: calls/s accepted (from the first call ingest accepted to
//! gen's exit) and calls/s until every call is queryable (`tally query`, polled every 500 ms
//! once gen is done), with `tally up`'s CPU seconds per million calls over that time.
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::pipeline::Ctx;
use crate::procs::{CpuMeter, Proc};

/// `tally up`'s figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpRun {
    pub calls: u64,
    pub accepted_per_sec: f64,
    pub queryable_per_sec: f64,
    pub queryable_secs: f64,
    pub cpu_per_million: f64,
}

fn without_servers(command: &mut std::process::Command) -> &mut std::process::Command {
    command
        .env_remove("TALLY_KAFKA_BROKERS")
        .env_remove("TALLY_CLICKHOUSE_URL")
}

async fn accepted(ctx: &Ctx, url: &str) -> u64 {
    let Ok(response) = ctx.http.get(format!("{url}/metrics")).send().await else {
        return 0;
    };
    response
        .text()
        .await
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("tally_ingest_events_accepted_total{kind=\"llm_call\"} "))
        .map_or(0, |v| v.trim().parse().unwrap_or(0))
}

fn count(ctx: &Ctx, data: &str) -> Option<u64> {
    let mut command = ctx.tally(&[
        "query",
        "--data-dir",
        data,
        "--format",
        "json",
        "SELECT count(*) AS n FROM llm_calls",
    ]);
    let out = without_servers(&mut command)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
    rows.first()?["n"].as_u64()
}

/// Runs `tally up` in a folder of its own, sends `calls` calls with gen (`start`/`span` its
/// event time) and waits until they are all queryable.
pub async fn run(ctx: &Ctx, name: &str, calls: usize, start_us: i64, span: &str) -> UpRun {
    let data = ctx.dir.join(name);
    std::fs::create_dir_all(&data).expect("tally up's folder");
    let data = data.to_string_lossy().into_owned();
    let port = tally_tests::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let mut command = ctx.tally(&["up", "--data-dir", &data, "--listen", &listen]);
    without_servers(&mut command)
        .stdout(Stdio::null())
        .stderr(ctx.log(name));
    let mut up = Proc::spawn("tally up", &mut command);
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        up.check_running();
        assert!(Instant::now() < deadline, "tally up does not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pids = vec![("up".to_string(), up.pid())];
    let meter = CpuMeter::start(&pids);
    let start = tally_contract::clock::rfc3339(start_us);
    let calls_arg = calls.to_string();
    let mut command = ctx.tally(&[
        "gen",
        "--target",
        &url,
        "--api-key",
        "tally-local",
        "--calls",
        &calls_arg,
        "--rate",
        "100000000",
        "--seed",
        "7",
        "--start",
        &start,
        "--span",
        span,
    ]);
    without_servers(&mut command)
        .stdout(Stdio::null())
        .stderr(ctx.log(&format!("{name}-gen")));
    let mut gen = Proc::spawn("tally gen", &mut command);
    let mut first = None;
    while !gen.exited() {
        if first.is_none() && accepted(ctx, &url).await > 0 {
            first = Some(Instant::now());
        }
        up.check_running();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = Instant::now();
    let (_, status) = gen.wait(Duration::from_secs(5)).expect("gen exited");
    assert!(status.success(), "tally gen failed against tally up");
    let first = first.unwrap_or(sent);
    let total = accepted(ctx, &url).await;
    assert_eq!(total, calls as u64, "tally up accepted every call");
    let deadline = Instant::now() + Duration::from_secs(600);
    let queryable = loop {
        if count(ctx, &data) == Some(total) {
            break Instant::now();
        }
        up.check_running();
        assert!(
            Instant::now() < deadline,
            "tally up: not every call queryable after 600 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let cpu = meter.since(&pids).get("up").copied().unwrap_or(0.0);
    up.kill();
    let _ = std::fs::remove_dir_all(&data);
    let queryable_secs = queryable.duration_since(first).as_secs_f64();
    UpRun {
        calls: total,
        accepted_per_sec: total as f64 / sent.duration_since(first).as_secs_f64(),
        queryable_per_sec: total as f64 / queryable_secs,
        queryable_secs,
        cpu_per_million: cpu / total as f64 * 1e6,
    }
}
