//! End-to-end harness: `tally up` on its embedded store, fed by `tally gen` over HTTP, both
//! release builds on this machine's cores. Measures the calls per second the ingest accepts
//! (each request fsynced in the journal before its 202), the time until every call is
//! queryable in the Parquet store, and a group-by over the store with `tally query`.
//!
//! Run: `cargo bench -p tally --bench up_throughput` (no servers needed).
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const CALLS: usize = 200_000;

fn tally(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command
        .args(args)
        .env_remove("TALLY_KAFKA_BROKERS")
        .env_remove("TALLY_CLICKHOUSE_URL")
        .env("TALLY_LOG", "warn");
    command
}

fn count(dir: &str) -> Option<u64> {
    let out = tally(&[
        "query",
        "--data-dir",
        dir,
        "--format",
        "json",
        "SELECT count(*) AS n FROM llm_calls",
    ])
    .output()
    .ok()?;
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
    rows.first()?["n"].as_u64()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let port = tally_tests::free_port();
    let mut up = tally_tests::KillOnDrop(
        tally(&[
            "up",
            "--data-dir",
            &data,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    tally_tests::wait_listening(&mut up, port, Duration::from_secs(60));
    let started = Instant::now();
    let out = tally(&[
        "gen",
        "--target",
        &format!("http://127.0.0.1:{port}"),
        "--api-key",
        "tally-local",
        "--calls",
        &CALLS.to_string(),
        "--rate",
        "1000000",
        "--batch",
        "1000",
        "--seed",
        "7",
        "--start",
        "2026-11-02T00:00:00Z",
        "--span",
        "7d",
    ])
    .stderr(Stdio::null())
    .output()
    .unwrap();
    let sent = started.elapsed();
    assert!(out.status.success(), "tally gen failed");
    let truth: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut queryable = None;
    while started.elapsed() < Duration::from_secs(600) {
        if count(&data) == truth["calls"].as_u64() {
            queryable = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let queryable = queryable.expect("every call reached the store");
    let query_started = Instant::now();
    let out = tally(&[
        "query",
        "--data-dir",
        &data,
        "SELECT team, model, count(*) AS calls, sum(cost_usd) AS usd FROM llm_calls GROUP BY team, model",
    ])
    .output()
    .unwrap();
    assert!(out.status.success());
    let query = query_started.elapsed();
    println!("tally up, embedded store: {CALLS} generated calls (seed 7), 1,000 per request");
    println!(
        "  ingest accepted     {:>8.0} calls/s ({:.2} s, gen's own generation and pricing included)",
        CALLS as f64 / sent.as_secs_f64(),
        sent.as_secs_f64()
    );
    println!(
        "  all queryable after {:>8.2} s  ({:.0} calls/s end to end: journal, enrich, aggregate, detect, Parquet)",
        queryable.as_secs_f64(),
        CALLS as f64 / queryable.as_secs_f64()
    );
    println!(
        "  group-by query      {:>8.2} s  (tally query, process start included)",
        query.as_secs_f64()
    );
}
