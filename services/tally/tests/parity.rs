//! The two stores may not drift apart: the same generated workload (same seed, same start)
//! goes through `tally up` on its embedded store, and through `tally up` on the real Kafka
//! broker and ClickHouse server; `tally report spend`, `attribution` (cost per deploy, per
//! ticket, team efficiency) and `emissions` then print the same text from both, byte for byte.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::topics::Topic;
use tally_tests::{
    clickhouse_url, delete_topics, free_port, kafka_config, require_kafka, unique_name,
    wait_listening, KillOnDrop, TestDatabase,
};

fn tally(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command
        .args(args)
        .env_remove("TALLY_KAFKA_BROKERS")
        .env_remove("TALLY_CLICKHOUSE_URL")
        .env("TALLY_LOG", "warn");
    command
}

fn gen(port: u16) -> Value {
    let out = tally(&[
        "gen",
        "--target",
        &format!("http://127.0.0.1:{port}"),
        "--calls",
        "6000",
        "--rate",
        "50000",
        "--seed",
        "21",
        "--teams",
        "6",
        "--start",
        "2026-11-02T00:00:00Z",
        "--span",
        "3d",
        "--api-key",
        "tally-local",
    ])
    .stderr(Stdio::null())
    .output()
    .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn embedded_counts(dir: &Path) -> Option<Value> {
    let out = tally(&[
        "query",
        "--data-dir",
        dir.to_str().unwrap(),
        "--format",
        "json",
        "SELECT (SELECT count(*) FROM llm_calls) AS calls, (SELECT count(*) FROM deploys) AS deploys, \
         (SELECT count(*) FROM tickets) AS tickets",
    ])
    .output()
    .ok()?;
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
    rows.into_iter().next()
}

fn report(args: &[&str], store: &[(&str, &str)], dir: Option<&Path>) -> String {
    let mut command = tally(&[&["report"], args].concat());
    if let Some(dir) = dir {
        command.args(["--data-dir", dir.to_str().unwrap()]);
    }
    for (key, value) in store {
        command.env(key, value);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "tally report {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_from_the_embedded_store_equal_reports_from_clickhouse() {
    require_kafka();
    let db = TestDatabase::create("it_parity").await;
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("parity")),
        ..kafka_config()
    };
    create_topics(
        &kafka,
        TopicLayout {
            partitions: 3,
            replication_factor: 1,
        },
    )
    .await
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let embedded_port = free_port();
    let mut embedded = KillOnDrop(
        tally(&[
            "up",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{embedded_port}"),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let kafka_port = free_port();
    let mut production = KillOnDrop(
        tally(&["up", "--listen", &format!("127.0.0.1:{kafka_port}")])
            .env("TALLY_KAFKA_BROKERS", &kafka.brokers)
            .env("TALLY_CLICKHOUSE_URL", clickhouse_url())
            .env("TALLY__INGEST__KAFKA__TOPIC_PREFIX", &kafka.topic_prefix)
            .env("TALLY__SINK__CLICKHOUSE__DATABASE", &db.name)
            .env("TALLY__SINK__GROUP_ID", unique_name("parity-sink"))
            .env("TALLY__SINK__BATCH_MAX_WAIT_MS", "200")
            .env("TALLY__PROCESSOR__GROUP_ID", unique_name("parity-process"))
            .env("TALLY__PROCESSOR__INSTANCE_ID", "parity")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(&mut embedded, embedded_port, Duration::from_secs(60));
    wait_listening(&mut production, kafka_port, Duration::from_secs(60));

    let truth = gen(embedded_port);
    assert_eq!(
        gen(kafka_port),
        truth,
        "the same seed gives the same workload"
    );
    let expected = serde_json::json!({
        "calls": truth["calls"], "deploys": truth["deploys"], "tickets": truth["tickets"]
    });
    wait_until("the embedded store", || {
        embedded_counts(dir.path()).as_ref() == Some(&expected)
    });
    let client = db.client.clone();
    let mut stored = (0u64, 0u64, 0u64);
    for _ in 0..300 {
        stored = client
            .query(
                "SELECT assumeNotNull((SELECT count() FROM llm_calls FINAL)), \
                 assumeNotNull((SELECT count() FROM deploys FINAL)), \
                 assumeNotNull((SELECT count() FROM tickets FINAL))",
            )
            .fetch_one()
            .await
            .unwrap();
        if serde_json::json!({"calls": stored.0, "deploys": stored.1, "tickets": stored.2})
            == expected
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        serde_json::json!({"calls": stored.0, "deploys": stored.1, "tickets": stored.2}),
        expected,
        "ClickHouse"
    );

    let clickhouse = [
        ("TALLY_CLICKHOUSE_URL", clickhouse_url()),
        ("TALLY__CLICKHOUSE__DATABASE", db.name.clone()),
    ];
    let clickhouse: Vec<(&str, &str)> = clickhouse.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let month = ["--from", "2026-11-01", "--to", "2026-12-01"];
    let reports: Vec<Vec<&str>> = vec![
        [&["spend"][..], &month[..], &["--format", "csv"]].concat(),
        [
            &["spend"][..],
            &month[..],
            &["--by", "team,model,region", "--format", "json"],
        ]
        .concat(),
        [
            &["attribution"][..],
            &month[..],
            &[
                "--unattributed-share",
                "0.5",
                "--loaded-hourly-rate-usd",
                "120",
                "--format",
                "csv",
            ],
        ]
        .concat(),
        [
            &["emissions"][..],
            &month[..],
            &["--by", "month,team", "--format", "json"],
        ]
        .concat(),
        [&["emissions"][..], &month[..], &["--format", "table"]].concat(),
    ];
    for args in &reports {
        let from_clickhouse = report(args, &clickhouse, None);
        let from_embedded = report(args, &[], Some(dir.path()));
        assert!(
            from_clickhouse.lines().count() > 3,
            "{args:?}: {from_clickhouse}"
        );
        assert_eq!(from_embedded, from_clickhouse, "tally report {args:?}");
    }
    // The figures are the ground truth's.
    let spend = report(
        &[&["spend"][..], &month[..], &["--format", "json"]].concat(),
        &[],
        Some(dir.path()),
    );
    let spend: Value = serde_json::from_str(&spend).unwrap();
    let rows = spend["sections"][0]["rows"].as_array().unwrap();
    let total: i64 = rows
        .iter()
        .map(|r| r["cost_nanos"].as_str().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, truth["cost_nanos"].as_i64().unwrap());

    drop(production);
    delete_topics(
        Topic::ALL
            .iter()
            .map(|t| kafka.topic(*t))
            .chain(
                ["tally.processor_state.v1", "tally.detector_state.v1"]
                    .map(|b| format!("{}{b}", kafka.topic_prefix)),
            )
            .collect(),
    );
}
