//! `tally up` with one of Kafka and ClickHouse: on the real Kafka broker with its Parquet
//! store, and on its journal into the real ClickHouse server. Either way the store holds the
//! generator's ground truth exactly.
use std::time::{Duration, Instant};

use serde_json::Value;
use tally_contract::kafka::KafkaConfig;
use tally_contract::topics::Topic;
use tally_tests::{
    clickhouse_url, delete_topics, free_port, kafka_config, require_kafka, unique_name,
    TestDatabase,
};

mod common;
use common::{assert_store_equals_truth, gen, start_up_with};

#[test]
fn on_kafka_with_the_parquet_store() {
    require_kafka();
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("upkafka")),
        ..kafka_config()
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let group = unique_name("upkafka-process");
    let _up = start_up_with(
        dir.path(),
        port,
        &[
            ("TALLY_KAFKA_BROKERS", &kafka.brokers),
            ("TALLY__INGEST__KAFKA__TOPIC_PREFIX", &kafka.topic_prefix),
            ("TALLY__PROCESSOR__GROUP_ID", &group),
            ("TALLY__PROCESSOR__INSTANCE_ID", "up-kafka"),
            ("TALLY__PROCESSOR__COMMIT_INTERVAL_MS", "200"),
        ],
    );
    let out = gen(port, 5_000, 50_000, 31).output().unwrap();
    assert!(out.status.success());
    let truth: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_store_equals_truth(dir.path(), &truth);
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

#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct Totals {
    calls: u64,
    input_tokens: i64,
    output_tokens: i64,
    cost_nanos: i64,
}

#[tokio::test(flavor = "multi_thread")]
async fn on_the_journal_into_clickhouse() {
    let db = TestDatabase::create("it_up_clickhouse").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = clickhouse_url();
    let _up = start_up_with(
        dir.path(),
        port,
        &[
            ("TALLY_CLICKHOUSE_URL", &url),
            ("TALLY__SINK__CLICKHOUSE__DATABASE", &db.name),
        ],
    );
    let out = tokio::task::spawn_blocking(move || gen(port, 5_000, 50_000, 32).output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success());
    let truth: Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = Totals {
        calls: truth["calls"].as_u64().unwrap(),
        input_tokens: truth["input_tokens"].as_i64().unwrap(),
        output_tokens: truth["output_tokens"].as_i64().unwrap(),
        cost_nanos: truth["cost_nanos"].as_i64().unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let totals: Totals = db
            .client
            .query(
                "SELECT count() AS calls, sum(input_tokens) AS input_tokens, \
                 sum(output_tokens) AS output_tokens, \
                 toInt64(sum(ifNull(cost_total_nanos, 0))) AS cost_nanos FROM llm_calls FINAL",
            )
            .fetch_one()
            .await
            .unwrap();
        if totals == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ClickHouse has {totals:?}, the truth is {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
