//! `tally up` keeps what it has through restarts once its data spans days, its files have been
//! merged and its journal has deleted segments: a workload over three days, then SIGTERM or
//! SIGKILL, a restart, and every table's counts and sums must be what they were — and what
//! `tally gen`'s ground truth says. Sizes 10,000 and 100,000 calls; a small journal segment
//! size so that retention deletes segments on the way.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_tests::free_port;

mod common;
use common::{assert_store_equals_truth, gen_from, query, start_up_with};

/// What must not change across a restart: every table's rows and sums.
const FIGURES: &str = "SELECT \
    (SELECT count(*) FROM llm_calls) AS calls, \
    (SELECT sum(input_tokens + output_tokens) FROM llm_calls) AS tokens, \
    (SELECT sum(coalesce(cost_total_nanos, 0)) FROM llm_calls) AS cost_nanos, \
    (SELECT sum(co2e_ug_central) FROM llm_calls) AS co2e_ug, \
    (SELECT count(*) FROM llm_calls_stored) AS stored_calls, \
    (SELECT count(DISTINCT date_trunc('day', occurred_at)) FROM llm_calls) AS days, \
    (SELECT count(*) FROM deploys) AS deploys, \
    (SELECT count(*) FROM tickets) AS tickets, \
    (SELECT count(*) FROM spend_windows) AS windows, \
    (SELECT sum(calls) FROM spend_windows WHERE window_seconds = 86400 AND dimension = 'model') AS day_window_calls, \
    (SELECT count(DISTINCT signal_id) FROM loop_signals) AS signals, \
    (SELECT count(DISTINCT alert_id) FROM alerts) AS alerts";

/// A small journal (segments of 1 MiB, none kept beyond what the readers still need), and
/// stages and tables that commit every 100 ms, so that the days' files merge.
const SMALL_JOURNAL: [(&str, &str); 4] = [
    ("TALLY__JOURNAL__SEGMENT_BYTES", "1048576"),
    ("TALLY__JOURNAL__RETAIN_BYTES", "0"),
    ("TALLY__STORE__FLUSH_EVERY_MS", "100"),
    ("TALLY__PROCESSOR__COMMIT_INTERVAL_MS", "100"),
];

/// The figures once they stop changing (windows close and signals resolve a little after the
/// last call).
fn settled(dir: &Path) -> Value {
    let mut last = query(dir, FIGURES).unwrap()[0].clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_secs(3));
        let now = query(dir, FIGURES).unwrap()[0].clone();
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the store does not settle: {now}"
        );
        last = now;
    }
}

fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn merged_levels(dir: &Path) -> u64 {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("store/llm_calls/_manifest.json")).unwrap())
            .unwrap();
    manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["level"].as_u64().unwrap())
        .max()
        .unwrap()
}

fn signal(child: &mut std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = child.wait();
}

fn restart_keeps_everything(calls: usize, rate: usize, stop_with: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut up = start_up_with(dir.path(), port, &SMALL_JOURNAL);
    // Three days of event time, from 2026-11-25.
    let out = gen_from(port, calls, rate, 21, "2026-11-25T00:00:00Z")
        .output()
        .unwrap();
    assert!(out.status.success(), "tally gen failed");
    let truth: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_store_equals_truth(dir.path(), &truth);
    let before = settled(dir.path());
    assert_eq!(before["days"], 3, "{before}");
    assert!(merged_levels(dir.path()) >= 1, "the store merged files");
    // Retention runs every ten seconds: wait until it has deleted the first segment.
    let deadline = Instant::now() + Duration::from_secs(40);
    while segments(dir.path()).first().map(String::as_str) == Some("0000000000.journal") {
        assert!(
            Instant::now() < deadline,
            "no journal segment was deleted: {:?}",
            segments(dir.path())
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    signal(&mut up.0, stop_with);
    let _up = start_up_with(dir.path(), port, &SMALL_JOURNAL);
    let after = settled(dir.path());
    assert_eq!(after, before, "{calls} calls, restarted after {stop_with}");
    assert_store_equals_truth(dir.path(), &truth);
}

#[test]
fn queries_never_fail_while_the_store_flushes_and_merges() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _up = start_up_with(dir.path(), port, &SMALL_JOURNAL);
    let mut sending = gen_from(port, 20_000, 2_000, 5, "2026-11-25T00:00:00Z")
        .spawn()
        .unwrap();
    let mut queries = 0;
    while sending.try_wait().unwrap().is_none() {
        // Each query reads one snapshot of the files: a merge deleting them meanwhile does not
        // make it fail, and no row is read twice.
        let rows = query(
            dir.path(),
            "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM llm_calls_stored",
        )
        .unwrap_or_else(|e| panic!("query {queries} failed while the store merged: {e}"));
        assert_eq!(
            rows[0]["n"], rows[0]["ids"],
            "a row read twice: {}",
            rows[0]
        );
        queries += 1;
    }
    assert!(sending.wait().unwrap().success());
    assert!(queries >= 5, "{queries} queries");
    assert!(
        merged_levels(dir.path()) >= 1,
        "the store merged files meanwhile"
    );
}

#[test]
fn ten_thousand_calls_over_three_days_survive_sigterm() {
    restart_keeps_everything(10_000, 1_000, "-TERM");
}

#[test]
fn ten_thousand_calls_over_three_days_survive_sigkill() {
    restart_keeps_everything(10_000, 1_000, "-KILL");
}

#[test]
fn a_hundred_thousand_calls_over_three_days_survive_sigterm_and_sigkill() {
    let dir_check = |stop_with| restart_keeps_everything(100_000, 50_000, stop_with);
    dir_check("-TERM");
    dir_check("-KILL");
}

#[test]
fn a_backfill_after_todays_calls_counts_in_its_own_windows() {
    // Today's calls first, then three earlier days (a backfill, a gateway's buffer, a replay
    // after an outage): every call of those days arrives after its windows closed.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _up = start_up_with(dir.path(), port, &SMALL_JOURNAL);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let today = tally_contract::clock::rfc3339(((now - 3_600) * 1_000_000) as i64);
    let mut today_gen = common::tally(&[
        "gen",
        "--target",
        &format!("http://127.0.0.1:{port}"),
        "--api-key",
        "tally-local",
        "--calls",
        "2000",
        "--rate",
        "20000",
        "--seed",
        "3",
        "--start",
        &today,
        "--span",
        "1h",
    ]);
    assert!(today_gen
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success());
    let days_ago = tally_contract::clock::rfc3339(((now / 86_400 - 4) * 86_400 * 1_000_000) as i64);
    let out = gen_from(port, 20_000, 20_000, 4, &days_ago)
        .output()
        .unwrap();
    assert!(out.status.success());
    let truth: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every closed window of those days, of every size, equals llm_calls over its range.
    let deadline = Instant::now() + Duration::from_secs(90);
    for seconds in [60, 3_600, 86_400] {
        let sql = format!(
            "SELECT (SELECT sum(calls) FROM spend_window_totals WHERE window_seconds = {seconds} \
               AND dimension = 'model' AND window_start < utc('{day}') AND window_start >= utc('{from}')) AS windowed, \
             (SELECT count(*) FROM llm_calls WHERE occurred_at < utc('{day}') AND occurred_at >= utc('{from}')) AS calls, \
             (SELECT sum(coalesce(cost_total_nanos, 0)) FROM llm_calls WHERE occurred_at < utc('{day}') AND occurred_at >= utc('{from}')) AS cost, \
             (SELECT sum(cost_nanos) FROM spend_window_totals WHERE window_seconds = {seconds} \
               AND dimension = 'user' AND window_start < utc('{day}') AND window_start >= utc('{from}')) AS windowed_cost",
            day = &tally_contract::clock::rfc3339(((now / 86_400 - 1) * 86_400 * 1_000_000) as i64)[..10],
            from = &days_ago[..10],
        );
        let row = loop {
            let rows = query(dir.path(), &sql).unwrap();
            if rows[0]["windowed"] == rows[0]["calls"] && rows[0]["calls"] == truth["calls"] {
                break rows[0].clone();
            }
            assert!(
                Instant::now() < deadline,
                "{seconds} s windows: {}",
                rows[0]
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        assert_eq!(
            row["windowed_cost"].to_string().trim_matches('"'),
            row["cost"].to_string().trim_matches('"'),
            "{seconds} s: {row}"
        );
    }
}
