//! `tally gen` through the whole production path, as a user runs it: the generated workload
//! sent over HTTP to `tally ingest`, then `tally process` and `tally sink` into the real
//! ClickHouse (against the real Kafka broker). What ClickHouse holds equals the generator's
//! ground truth exactly: calls, tokens of every kind, cost in nano-dollars, per team too,
//! deploys and tickets; and the injected runaway agents raise loop signals.
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::topics::Topic;
use tally_tests::{
    delete_topics, free_port, kafka_config, require_kafka, unique_name, KillOnDrop, TestDatabase,
};

mod common;

use common::pipeline::{ingest_config, tally_on as tally, wait_until_ready};

const KEY: &str = "gen-pipeline-test-key";

#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct Totals {
    calls: u64,
    input_tokens: i64,
    output_tokens: i64,
    cache_read_tokens: i64,
    cache_write_tokens: i64,
    reasoning_tokens: i64,
    unpriced_calls: u64,
    cost_nanos: i64,
}

#[tokio::test(flavor = "multi_thread")]
async fn generated_traffic_lands_in_clickhouse_exactly_as_the_ground_truth_says() {
    require_kafka();
    let db = TestDatabase::create("it_gen").await;
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("gen")),
        ..kafka_config()
    };
    create_topics(
        &kafka,
        TopicLayout {
            partitions: 4,
            replication_factor: 1,
        },
    )
    .await
    .unwrap();
    let migrated = tally(&["migrate"], &kafka, Some(&db.name))
        .output()
        .unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    let port = free_port();
    let config = ingest_config(port, KEY);
    let mut ingest = KillOnDrop(
        tally(
            &["ingest", "--config", config.to_str().unwrap()],
            &kafka,
            None,
        )
        .spawn()
        .unwrap(),
    );
    let _process = KillOnDrop(
        tally(&["process"], &kafka, None)
            .env("TALLY__GROUP_ID", unique_name("gen-process"))
            .env("TALLY__INSTANCE_ID", "gen-test")
            .spawn()
            .unwrap(),
    );
    let _sink = KillOnDrop(
        tally(&["sink"], &kafka, Some(&db.name))
            .env("TALLY__GROUP_ID", unique_name("gen-sink"))
            .env("TALLY__BATCH_MAX_WAIT_MS", "200")
            .spawn()
            .unwrap(),
    );
    wait_until_ready(port, &mut ingest).await;

    let generated = tally(
        &[
            "gen",
            "--target",
            &format!("http://127.0.0.1:{port}"),
            "--calls",
            "12000",
            "--rate",
            "20000",
            "--seed",
            "11",
            "--teams",
            "6",
            "--start",
            "2026-11-02T00:00:00Z",
            "--span",
            "2d",
        ],
        &kafka,
        None,
    )
    .env("TALLY_API_KEY", KEY)
    .stderr(Stdio::inherit())
    .output()
    .unwrap();
    assert!(generated.status.success());
    let truth: Value = serde_json::from_slice(&generated.stdout).unwrap();
    assert_eq!(truth["calls"], 12_000);
    let loops: u64 = truth["loops"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(
        loops >= 8,
        "every runaway variant is injected: {}",
        truth["loops"]
    );

    let expected = Totals {
        calls: truth["calls"].as_u64().unwrap(),
        input_tokens: truth["input_tokens"].as_i64().unwrap(),
        output_tokens: truth["output_tokens"].as_i64().unwrap(),
        cache_read_tokens: truth["cache_read_tokens"].as_i64().unwrap(),
        cache_write_tokens: truth["cache_write_tokens"].as_i64().unwrap(),
        reasoning_tokens: truth["reasoning_tokens"].as_i64().unwrap(),
        unpriced_calls: truth["unpriced_calls"].as_u64().unwrap(),
        cost_nanos: truth["cost_nanos"].as_i64().unwrap(),
    };
    assert!(expected.cache_write_tokens > 0 && expected.reasoning_tokens > 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    let totals = loop {
        let totals: Totals = db
            .client
            .query(
                "SELECT count() AS calls, sum(input_tokens) AS input_tokens, \
                 sum(output_tokens) AS output_tokens, sum(cache_read_tokens) AS cache_read_tokens, \
                 sum(cache_write_tokens) AS cache_write_tokens, \
                 sum(reasoning_tokens) AS reasoning_tokens, countIf(unpriced) AS unpriced_calls, \
                 toInt64(sum(ifNull(cost_total_nanos, 0))) AS cost_nanos FROM llm_calls FINAL",
            )
            .fetch_one()
            .await
            .unwrap();
        if totals.calls >= expected.calls || Instant::now() > deadline {
            break totals;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(totals, expected);

    let by_team: Vec<(String, u64, i64)> = db
        .client
        .query(
            "SELECT team, count(), toInt64(sum(ifNull(cost_total_nanos, 0))) FROM llm_calls FINAL \
             GROUP BY team ORDER BY team",
        )
        .fetch_all()
        .await
        .unwrap();
    let truth_by_team: BTreeMap<&String, (u64, i64)> = truth["by_team"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(team, t)| {
            (
                team,
                (
                    t["calls"].as_u64().unwrap(),
                    t["cost_nanos"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    let stored: BTreeMap<&String, (u64, i64)> = by_team
        .iter()
        .map(|(team, calls, cost)| (team, (*calls, *cost)))
        .collect();
    assert_eq!(stored, truth_by_team);

    // Deploys and tickets arrive, and the injected loops were caught.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (deploys, tickets, signals): (u64, u64, u64) = db
            .client
            .query(
                "SELECT assumeNotNull((SELECT count() FROM deploys FINAL)), \
                 assumeNotNull((SELECT count() FROM tickets FINAL)), \
                 assumeNotNull((SELECT uniqExact(signal_type) FROM loop_signals FINAL))",
            )
            .fetch_one()
            .await
            .unwrap();
        let done = deploys == truth["deploys"].as_u64().unwrap()
            && tickets == truth["tickets"].as_u64().unwrap()
            && signals >= 4;
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deploys {deploys}, tickets {tickets}, signal types {signals}; truth {truth}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = std::fs::remove_file(config);
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
}
