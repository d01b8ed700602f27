//! `tally migrate` and `tally sink` as a user runs them, against the real Kafka broker and the
//! real ClickHouse server: the sink is killed with SIGKILL mid-run and restarted, and the totals
//! in ClickHouse (read with FINAL) are still exact.
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use tally_contract::encode;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::records::EnrichedLlmCall;
use tally_contract::topics::Topic;
use tally_tests::{
    clickhouse_url, delete_topics, kafka_config, require_kafka, unique_name, TestDatabase,
};

const COUNT: usize = 30_000;

fn tally(args: &[&str], kafka: &KafkaConfig, database: &str, group: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
    command
        .args(args)
        .env("TALLY_KAFKA_BROKERS", &kafka.brokers)
        .env("TALLY__KAFKA__TOPIC_PREFIX", &kafka.topic_prefix)
        .env("TALLY_CLICKHOUSE_URL", clickhouse_url())
        .env("TALLY__CLICKHOUSE__DATABASE", database)
        .env("TALLY__GROUP_ID", group)
        .env("TALLY__BATCH_MAX_ROWS", "1000")
        .env("TALLY__BATCH_MAX_WAIT_MS", "200")
        .env("TALLY_LOG", "warn");
    command
}

const METRICS: &str = "127.0.0.1:19465";

struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_run_keeps_clickhouse_totals_exact() {
    require_kafka();
    let db = TestDatabase::create("it_sink_kill").await;
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("sinkkill")),
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
    let group = unique_name("sink");

    // Every migration the binary carries, applied once, then found applied.
    let names: Vec<String> = tally_sink::migrate::Migration::embedded()
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert!(names.len() >= 7, "{names:?}");
    let listed = |verb: &str| {
        names
            .iter()
            .map(|n| format!("{verb} {n}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for expected in [listed("applied"), listed("already")] {
        let out = tally(&["migrate"], &kafka, &db.name, &group)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
    }

    let template: EnrichedLlmCall = tally_tests::fixture("EnrichedLlmCall");
    let records: Vec<EnrichedLlmCall> = (0..COUNT)
        .map(|i| {
            let mut e = template.clone();
            e.call.event_id = format!("k-{i}");
            e.call.team = format!("team-{}", i % 9);
            e.cost_total_nanos = Some(777_777 + i as i64);
            e
        })
        .collect();
    let producer: FutureProducer = kafka
        .client_config()
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let topic = kafka.topic(Topic::LlmCallsEnriched);
    let mut deliveries = Vec::new();
    for record in &records {
        let key = format!("{}/{}", record.call.tenant, record.call.team);
        deliveries.push(
            producer
                .send_result(
                    FutureRecord::to(&topic)
                        .key(&key)
                        .payload(&encode(record).unwrap()),
                )
                .unwrap(),
        );
    }
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }

    let raw_count = || async {
        db.client
            .query("SELECT count() FROM llm_calls")
            .fetch_one::<u64>()
            .await
            .unwrap()
    };
    let first = Sink(
        tally(&["sink"], &kafka, &db.name, &group)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut seen = 0;
    for _ in 0..240 {
        seen = raw_count().await;
        if seen >= (COUNT / 3) as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(first); // SIGKILL
    eprintln!("[sink] SIGKILL after {seen} rows; restarting");
    assert!(seen < COUNT as u64, "killed mid-run");
    let _second = Sink(
        tally(&["sink"], &kafka, &db.name, &group)
            .env("TALLY__METRICS_LISTEN", METRICS)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let expected_cost: i64 = records.iter().filter_map(|r| r.cost_total_nanos).sum();
    let mut totals = (0u64, None::<i64>);
    for _ in 0..240 {
        totals = db
            .client
            .query("SELECT count(), sum(cost_total_nanos) FROM llm_calls FINAL")
            .fetch_one()
            .await
            .unwrap();
        if totals.0 == COUNT as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let totals_after: (u64, Option<i64>) = db
        .client
        .query("SELECT count(), sum(cost_total_nanos) FROM llm_calls FINAL")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(totals, (COUNT as u64, Some(expected_cost)));
    assert_eq!(totals_after, totals, "nothing more arrived");
    let metrics = tally_tests::fetch_metrics(METRICS).await;
    let inserted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tally_sink_rows_inserted_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no rows counter in {metrics}"));
    assert!(inserted > 0 && inserted <= COUNT as u64, "{inserted}");
    // Every insert the restarted sink made is in its latency histogram.
    let batches = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tally_sink_batches_total "))
        .unwrap_or_else(|| panic!("no batches counter in {metrics}"));
    let observed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tally_sink_insert_seconds_count "))
        .unwrap_or_else(|| panic!("no insert histogram in {metrics}"));
    assert_eq!(observed, batches, "{metrics}");
    let body = metrics
        .split_once("\r\n\r\n")
        .map_or(&*metrics, |(_, body)| body);
    tally_tests::promtool_check_metrics(body);
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
    db.drop_database().await;
}
