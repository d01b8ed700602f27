//! What the `tally up` tests share: starting it, sending a workload with `tally gen`, asking
//! `tally query`, and comparing the store with the generator's ground truth.
#![allow(dead_code)] // each test binary uses its part

pub mod pipeline;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_tests::{wait_listening, KillOnDrop};

/// A `tally` command with neither Kafka nor ClickHouse in its environment.
pub fn tally(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command
        .args(args)
        .env_remove("TALLY_KAFKA_BROKERS")
        .env_remove("TALLY_CLICKHOUSE_URL")
        .env("TALLY_LOG", "warn");
    command
}

pub fn start_up(dir: &Path, port: u16) -> KillOnDrop {
    start_up_with(dir, port, &[])
}

/// `tally up` with these environment variables too.
pub fn start_up_with(dir: &Path, port: u16, env: &[(&str, &str)]) -> KillOnDrop {
    start_up_with_args(dir, port, env, &[])
}

/// `tally up` with these environment variables and these arguments too.
pub fn start_up_with_args(
    dir: &Path,
    port: u16,
    env: &[(&str, &str)],
    args: &[&str],
) -> KillOnDrop {
    let listen = format!("127.0.0.1:{port}");
    let mut all_args = vec![
        "up",
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        &listen,
    ];
    all_args.extend_from_slice(args);
    let up = tally(&all_args)
        .envs(env.iter().copied())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut up = KillOnDrop(up);
    wait_listening(&mut up, port, Duration::from_secs(30));
    up
}

pub fn gen(port: u16, calls: usize, rate: usize, seed: u64) -> Command {
    gen_from(port, calls, rate, seed, "2026-11-02T00:00:00Z")
}

/// `tally gen` of `calls` over three days from `start`.
pub fn gen_from(port: u16, calls: usize, rate: usize, seed: u64, start: &str) -> Command {
    let mut command = tally(&[
        "gen",
        "--target",
        &format!("http://127.0.0.1:{port}"),
        "--calls",
        &calls.to_string(),
        "--rate",
        &rate.to_string(),
        "--batch",
        "200",
        "--seed",
        &seed.to_string(),
        "--teams",
        "8",
        "--start",
        start,
        "--span",
        "3d",
        "--api-key",
        "tally-local",
    ]);
    command.stderr(Stdio::null());
    command
}

pub fn query(dir: &Path, sql: &str) -> Result<Vec<Value>, String> {
    let out = tally(&[
        "query",
        "--data-dir",
        dir.to_str().unwrap(),
        "--format",
        "json",
        sql,
    ])
    .output()
    .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

pub const TOTALS: &str = "SELECT count(*) AS calls, sum(input_tokens) AS input_tokens, \
    sum(output_tokens) AS output_tokens, sum(cache_read_tokens) AS cache_read_tokens, \
    sum(cache_write_tokens) AS cache_write_tokens, sum(reasoning_tokens) AS reasoning_tokens, \
    sum(CASE WHEN unpriced THEN 1 ELSE 0 END) AS unpriced_calls, \
    sum(coalesce(cost_total_nanos, 0)) AS cost_nanos FROM llm_calls";

/// Waits until the store holds all the truth's calls, then checks every total and each team.
pub fn assert_store_equals_truth(dir: &Path, truth: &Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let totals = loop {
        // Every query sees one consistent snapshot of the files, merges or not: it never fails.
        let rows = query(dir, TOTALS).unwrap();
        if rows[0]["calls"] == truth["calls"] {
            break rows[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the store did not reach {} calls",
            truth["calls"]
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    for field in [
        "calls",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
        "unpriced_calls",
        "cost_nanos",
    ] {
        assert_eq!(
            totals[field], truth[field],
            "{field}: store {totals} truth {truth}"
        );
    }
    let teams = query(
        dir,
        "SELECT team, count(*) AS calls, sum(coalesce(cost_total_nanos, 0)) AS cost_nanos \
         FROM llm_calls GROUP BY team ORDER BY team",
    )
    .unwrap();
    let expected: Vec<Value> = truth["by_team"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(team, t)| serde_json::json!({"team": team, "calls": t["calls"], "cost_nanos": t["cost_nanos"]}))
        .collect();
    assert_eq!(teams, expected);
}
