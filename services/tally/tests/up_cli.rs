//! `tally up` on its embedded store, as a newcomer runs it: no Kafka, no ClickHouse. `tally
//! gen` sends a workload over HTTP; `tally query` then gives exactly the generator's ground
//! truth (calls, tokens of every kind, cost in nano-dollars, per team). And with `tally up`
//! killed with SIGKILL while `tally gen` sends, and started again, every event that got a 202
//! is counted once.
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tally_tests::free_port;

mod common;
use common::{assert_store_equals_truth, gen, query, start_up, tally};

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
    // `/metrics` after the SIGKILL: the business totals come from the restored state, so
    // every call counts once there too, to the nano-dollar.
    let calls = truth["calls"].as_i64().unwrap() as i128;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = tally_tests::scrape_metrics(&format!("127.0.0.1:{port}"));
        let seen = tally_tests::metric_sum(&metrics, "tally_calls_total", "", 0);
        if seen == calls || std::time::Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let sum =
        |name: &str, filter: &str, scale| tally_tests::metric_sum(&metrics, name, filter, scale);
    assert_eq!(
        (
            sum("tally_calls_total", "", 0),
            sum("tally_calls_total", "priced=\"false\"", 0),
            sum("tally_cost_usd_total", "", 9),
            sum("tally_tokens_total", "kind=\"input\"", 0),
            sum("tally_tokens_total", "kind=\"reasoning\"", 0),
        ),
        (
            truth["calls"].as_i64().unwrap() as i128,
            truth["unpriced_calls"].as_i64().unwrap() as i128,
            truth["cost_nanos"].as_i64().unwrap() as i128,
            truth["input_tokens"].as_i64().unwrap() as i128,
            truth["reasoning_tokens"].as_i64().unwrap() as i128,
        ),
        "{metrics}"
    );
    tally_tests::promtool_check_metrics(&metrics);
}

#[test]
fn opentelemetry_spans_without_a_team_are_counted_under_the_default_team() {
    // The real OpenTelemetry SDK pointed at `tally up` with the built-in key, over OTLP/HTTP
    // and OTLP/gRPC: its spans name no `tally.team`. They are counted under `unassigned`, not
    // refused in a partialSuccess the SDK would not log.
    let dir = tempfile::tempdir().unwrap();
    let (port, grpc_port) = (free_port(), free_port());
    let grpc_listen = format!("127.0.0.1:{grpc_port}");
    let _up =
        common::start_up_with_args(dir.path(), port, &[], &["--otlp-grpc-listen", &grpc_listen]);
    let endpoint = format!("http://127.0.0.1:{port}/v1/traces");
    tally_tests::emit_genai_spans(&endpoint, "protobuf", "tally-local", "run-otel");
    let grpc_endpoint = format!("http://{grpc_listen}");
    tally_tests::emit_genai_spans(&grpc_endpoint, "grpc-gzip", "tally-local", "run-otel-grpc");
    let sql = "SELECT team, session_id, count(*) AS calls, min(finish_reason) AS finish_reason \
               FROM llm_calls GROUP BY team, session_id ORDER BY session_id";
    let rows = wait_for_rows(dir.path(), sql, |rows| {
        rows.len() == 2 && rows.iter().all(|r| r["calls"] == 4)
    });
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"team": "unassigned", "session_id": "run-otel", "calls": 4, "finish_reason": "stop"}),
            serde_json::json!({"team": "unassigned", "session_id": "run-otel-grpc", "calls": 4, "finish_reason": "stop"}),
        ]
    );
}

/// The rows of `sql` once `ready` says they are complete (the store flushes every second).
fn wait_for_rows(dir: &std::path::Path, sql: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rows = query(dir, sql).unwrap();
        if ready(&rows) || std::time::Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
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

#[tokio::test(flavor = "multi_thread")]
async fn a_request_retried_after_a_restart_is_counted_once_in_the_spend_windows_too() {
    // 200 calls, tally up restarted, the same request sent again (a client that lost its
    // 202): ingest's memory of event ids is gone, the processor's is in its changelog.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let body: String = (0..200)
        .map(|i| {
            format!(
                "{{\"event_id\": \"retry-{i}\", \"occurred_at\": \"2026-11-20T10:{:02}:{:02}Z\", \"team\": \"payments\", \
                 \"provider\": \"openai\", \"model\": \"gpt-4o\", \"input_tokens\": 1000, \"output_tokens\": 100}}\n",
                i / 60,
                i % 60
            )
        })
        .collect();
    let post = |body: String| async move {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{port}/v1/llm-calls"))
            .bearer_auth("tally-local")
            .body(body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let mut up = start_up(dir.path(), port);
    assert_eq!(
        post(body.clone()).await,
        r#"{"accepted":200,"duplicates":0,"rejected":[]}"#
    );
    // Let the stages take it, then stop tally up (SIGTERM) and start it again.
    wait_for_rows(dir.path(), "SELECT count(*) AS n FROM llm_calls", |r| {
        r[0]["n"] == 200
    });
    let status = Command::new("kill")
        .args(["-TERM", &up.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = up.0.wait();
    let _up = start_up(dir.path(), port);
    assert_eq!(
        post(body).await,
        r#"{"accepted":200,"duplicates":0,"rejected":[]}"#
    );
    // A call two days later closes 2026-11-20's windows.
    post(r#"{"event_id": "later", "occurred_at": "2026-11-22T10:00:00Z", "team": "payments", "provider": "openai", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1}"#.into()).await;
    let windows = "SELECT sum(calls) AS calls FROM spend_windows \
                   WHERE window_seconds = 86400 AND dimension = 'model' AND window_start = utc('2026-11-20')";
    let rows = wait_for_rows(dir.path(), windows, |r| !r[0]["calls"].is_null());
    assert_eq!(
        rows[0]["calls"], 200,
        "the retried request is counted once in the windows"
    );
    let calls = query(dir.path(), "SELECT count(*) AS n FROM llm_calls_stored WHERE team = 'payments' AND event_id LIKE 'retry-%'").unwrap();
    assert_eq!(calls[0]["n"], 200, "and stored once");
}

#[tokio::test(flavor = "multi_thread")]
async fn strings_that_look_like_sql_are_stored_verbatim_in_the_parquet_store() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _up = start_up(dir.path(), port);
    let hostile = tally_tests::HOSTILE_TEXT;
    let records: Vec<Value> = hostile
        .iter()
        .enumerate()
        .map(|(i, text)| {
            serde_json::json!({"event_id": format!("sql-{i}"), "occurred_at": "2026-11-23T10:00:00Z",
                "team": text, "user": text, "workflow": text, "tags": {"note": text},
                "provider": "openai", "model": "gpt-4o", "input_tokens": 10, "output_tokens": 5})
        })
        .collect();
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/llm-calls"))
        .bearer_auth("tally-local")
        .json(&records)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let sql = "SELECT event_id, \"user\", workflow FROM llm_calls WHERE event_id LIKE 'sql-%' ORDER BY event_id";
    let rows = wait_for_rows(dir.path(), sql, |rows| rows.len() == hostile.len());
    let expected: Vec<Value> = hostile
        .iter()
        .enumerate()
        .map(|(i, text)| serde_json::json!({"event_id": format!("sql-{i}"), "user": text, "workflow": text}))
        .collect();
    assert_eq!(rows, expected);
    // The table is still there and whole.
    let count = query(dir.path(), "SELECT count(*) AS n FROM llm_calls").unwrap();
    assert_eq!(count, vec![serde_json::json!({"n": hostile.len()})]);
    // `tally report` renders them escaped in every format.
    let report = |format: &str| -> String {
        let out = tally(&[
            "report",
            "spend",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--by",
            "team,user,workflow",
            "--from",
            "2026-11-01",
            "--to",
            "2026-12-01",
            "--format",
            format,
        ])
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    tally_tests::assert_report_renders_hostile_text_safely(
        &report("html"),
        &report("csv"),
        &report("table"),
    );
}
