//! `tally up` on its embedded store, as a newcomer runs it: no Kafka, no ClickHouse. `tally
//! gen` sends a workload over HTTP; `tally query` then gives exactly the generator's ground
//! truth (calls, tokens of every kind, cost in nano-dollars, per team). And with `tally up`
//! killed with SIGKILL while `tally gen` sends, and started again, every event that got a 202
//! is counted once.
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_tests::{free_port, wait_listening, KillOnDrop};

fn tally(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command
        .args(args)
        .env_remove("TALLY_KAFKA_BROKERS")
        .env_remove("TALLY_CLICKHOUSE_URL")
        .env("TALLY_LOG", "warn");
    command
}

fn start_up(dir: &Path, port: u16) -> KillOnDrop {
    let up = tally(&[
        "up",
        "--data-dir",
        dir.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut up = KillOnDrop(up);
    wait_listening(&mut up, port, Duration::from_secs(30));
    up
}

fn gen(port: u16, calls: usize, rate: usize, seed: u64) -> Command {
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
        "2026-11-02T00:00:00Z",
        "--span",
        "3d",
        "--api-key",
        "tally-local",
    ]);
    command.stderr(Stdio::null());
    command
}

fn query(dir: &Path, sql: &str) -> Result<Vec<Value>, String> {
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

const TOTALS: &str = "SELECT count(*) AS calls, sum(input_tokens) AS input_tokens, \
    sum(output_tokens) AS output_tokens, sum(cache_read_tokens) AS cache_read_tokens, \
    sum(cache_write_tokens) AS cache_write_tokens, sum(reasoning_tokens) AS reasoning_tokens, \
    sum(CASE WHEN unpriced THEN 1 ELSE 0 END) AS unpriced_calls, \
    sum(coalesce(cost_total_nanos, 0)) AS cost_nanos FROM llm_calls";

/// Waits until the store holds all the truth's calls, then checks every total and each team.
fn assert_store_equals_truth(dir: &Path, truth: &Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let totals = loop {
        // A query may meet a file being compacted away; it is simply asked again.
        if let Ok(rows) = query(dir, TOTALS) {
            if rows[0]["calls"] == truth["calls"] {
                break rows[0].clone();
            }
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

#[test]
fn gen_into_tally_up_gives_the_ground_truth_in_tally_query() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _up = start_up(dir.path(), port);
    let out = gen(port, 8_000, 50_000, 5).output().unwrap();
    assert!(out.status.success());
    let truth: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(truth["calls"], 8_000);
    assert_store_equals_truth(dir.path(), &truth);
    // The other tables are there too, under ClickHouse's names.
    let rows = query(
        dir.path(),
        "SELECT (SELECT count(*) FROM deploys) AS deploys, (SELECT count(*) FROM tickets) AS tickets, \
         (SELECT count(*) FROM spend_windows) AS windows, (SELECT count(DISTINCT signal_type) FROM loop_signals) AS signal_types",
    )
    .unwrap();
    assert_eq!(rows[0]["deploys"], truth["deploys"]);
    assert_eq!(rows[0]["tickets"], truth["tickets"]);
    assert!(rows[0]["windows"].as_u64().unwrap() > 0);
    assert!(
        rows[0]["signal_types"].as_u64().unwrap() >= 3,
        "{}",
        rows[0]
    );
    // ClickHouse's report views are there, over the same rows.
    let views = query(
        dir.path(),
        "SELECT (SELECT sum(calls) FROM emissions_monthly) AS calls, \
         (SELECT count(*) FROM cost_per_ticket(0.5, 120)) AS closed_tickets, \
         (SELECT count(*) FROM team_efficiency) AS team_months, \
         (SELECT count(*) FROM cost_per_deploy) AS deploys",
    )
    .unwrap();
    assert_eq!(views[0]["calls"], truth["calls"]);
    assert!(
        views[0]["closed_tickets"].as_u64().unwrap() > 0,
        "{}",
        views[0]
    );
    assert!(views[0]["team_months"].as_u64().unwrap() > 0);
    assert!(views[0]["deploys"].as_u64().unwrap() > 0);
    // Exact dollars, as in ClickHouse.
    let usd = query(dir.path(), "SELECT sum(cost_usd) AS usd FROM llm_calls").unwrap();
    let nanos = truth["cost_nanos"].as_i64().unwrap();
    assert_eq!(
        usd[0]["usd"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| usd[0]["usd"].to_string()),
        format!("{}.{:09}", nanos / 1_000_000_000, nanos % 1_000_000_000)
    );
}

#[test]
fn sigkill_while_gen_sends_then_restart_counts_every_accepted_call_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let up = start_up(dir.path(), port);
    // About eight seconds of sending; gen waits and retries while tally up is down.
    let sending = gen(port, 24_000, 3_000, 9)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2_500));
    let mut up = up;
    sigkill(&mut up.0);
    std::thread::sleep(Duration::from_millis(500));
    let _up = start_up(dir.path(), port);
    let out = sending.wait_with_output().unwrap();
    assert!(out.status.success(), "tally gen gave up");
    let truth: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_store_equals_truth(dir.path(), &truth);
}

/// SIGKILL: no chance to flush or commit anything.
fn sigkill(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = child.wait();
}
