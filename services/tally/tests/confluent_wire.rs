//! `kafka.wire_format = "confluent"` through the whole production path, against the real
//! Kafka, ClickHouse and schema registry (Apicurio's Confluent API from
//! `scripts/services.sh`): calls written single-object by an earlier writer and Confluent-
//! framed by `tally ingest` are both read by `tally process`, and go through it and
//! `tally sink` (Confluent writers too) into ClickHouse, which holds both exactly; every derived topic is Confluent-framed
//! with the ids registered under `<topic>-value`, BACKWARD; and readers that are not tally
//! read them: Confluent's own Python client (its AvroDeserializer fetching the schemas from
//! the registry), and ClickHouse's Kafka engine with `FORMAT AvroConfluent`. A sink with no
//! registry stops before the first Confluent record, saying which setting is missing; one
//! whose registry does not answer holds it; neither loses or dead-letters anything.
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::pipeline::{ingest_config, tally_on, wait_until_ready};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::registry::{SchemaRegistry, COMPATIBILITY};
use tally_contract::topics::Topic;
use tally_tests::{
    confluent_python, delete_topics, free_port, kafka_config, require_kafka,
    require_schema_registry, unique_name, KillOnDrop, TestDatabase,
};

const KEY: &str = "confluent-wire-test-key";
const EARLIER_CALLS: u64 = 300;
const CALLS: u64 = 2_000;

/// The environment of a Confluent writer with this registry.
fn confluent(command: &mut std::process::Command, registry: &str) {
    command
        .env("TALLY__KAFKA__WIRE_FORMAT", "confluent")
        .env("TALLY__KAFKA__SCHEMA_REGISTRY_URL", registry);
}

/// (calls, cost in nano-dollars) of the `llm_calls` table.
async fn stored(db: &TestDatabase) -> (u64, i64) {
    db.client
        .query("SELECT count(), toInt64(sum(ifNull(cost_total_nanos, 0))) FROM llm_calls FINAL")
        .fetch_one()
        .await
        .unwrap()
}

/// Every record of a topic as it is on the broker, up to its end now.
fn raw_records(kafka: &KafkaConfig, topic: &str) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", unique_name("raw"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    // Assigned, not subscribed: no group to join, so no wait before the first record.
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        partitions
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&partitions).unwrap();
    let mut records = Vec::new();
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(3) {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            records.push(message.unwrap().payload().unwrap_or_default().to_vec());
            quiet_since = Instant::now();
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread")]
async fn confluent_framed_topics_flow_to_clickhouse_and_other_readers_read_them() {
    require_kafka();
    let registry = require_schema_registry();
    let db = TestDatabase::create("it_confluent").await;
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("cf")),
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
    let migrated = tally_on(&["migrate"], &kafka, Some(&db.name))
        .output()
        .unwrap();
    assert!(migrated.status.success());

    // An earlier, single-object writer put calls on the topic before the switch.
    let earlier = tally_on(
        &[
            "gen",
            "--kafka",
            "--topic-prefix",
            &kafka.topic_prefix,
            "--calls",
            "300",
            "--rate",
            "100000",
            "--seed",
            "3",
            "--teams",
            "3",
            "--start",
            "2026-11-02T00:00:00Z",
            "--span",
            "1d",
        ],
        &kafka,
        None,
    )
    .stderr(Stdio::inherit())
    .output()
    .unwrap();
    assert!(earlier.status.success());
    let earlier: Value = serde_json::from_slice(&earlier.stdout).unwrap();
    assert_eq!(earlier["calls"], EARLIER_CALLS);

    // Two sinks that cannot look the processor's Confluent records up. One has no registry:
    // it stops before the first record and says why. The other's registry does not answer:
    // it holds the record and waits. Neither writes a row or a dead letter.
    let mut no_registry = tally_on(&["sink"], &kafka, Some(&db.name));
    no_registry
        .env("TALLY__GROUP_ID", unique_name("cf-sink-none"))
        .env("TALLY__BATCH_MAX_WAIT_MS", "200")
        .stderr(Stdio::piped());
    let mut no_registry = KillOnDrop(no_registry.spawn().unwrap());
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut unanswered = tally_on(&["sink"], &kafka, Some(&db.name));
    unanswered
        .env("TALLY__GROUP_ID", unique_name("cf-sink-down"))
        .env("TALLY__BATCH_MAX_WAIT_MS", "200")
        .env("TALLY__KAFKA__SCHEMA_REGISTRY_URL", &nowhere);
    let mut unanswered = KillOnDrop(unanswered.spawn().unwrap());

    let port = free_port();
    let config = ingest_config(port, KEY);
    let mut ingest = tally_on(
        &["ingest", "--config", config.to_str().unwrap()],
        &kafka,
        None,
    );
    confluent(&mut ingest, &registry);
    let mut ingest = KillOnDrop(ingest.spawn().unwrap());
    let mut process = tally_on(&["process"], &kafka, None);
    process
        .env("TALLY__GROUP_ID", unique_name("cf-process"))
        .env("TALLY__INSTANCE_ID", "cf-test");
    confluent(&mut process, &registry);
    let _process = KillOnDrop(process.spawn().unwrap());
    wait_until_ready(port, &mut ingest).await;

    let generated = tally_on(
        &[
            "gen",
            "--target",
            &format!("http://127.0.0.1:{port}"),
            "--calls",
            "2000",
            "--rate",
            "20000",
            "--seed",
            "11",
            "--teams",
            "4",
            "--start",
            "2026-11-05T00:00:00Z",
            "--span",
            "1d",
        ],
        &kafka,
        None,
    )
    .env("TALLY_API_KEY", KEY)
    .stderr(Stdio::inherit())
    .output()
    .unwrap();
    assert!(generated.status.success());
    let generated: Value = serde_json::from_slice(&generated.stdout).unwrap();
    assert_eq!(generated["calls"], CALLS);
    let cost = |truth: &Value| truth["cost_nanos"].as_i64().unwrap();
    let expected = (EARLIER_CALLS + CALLS, cost(&earlier) + cost(&generated));

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = no_registry.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the sink without a registry goes on"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut said = String::new();
    std::io::Read::read_to_string(&mut no_registry.0.stderr.take().unwrap(), &mut said).unwrap();
    assert!(!status.success());
    assert!(said.contains("kafka.schema_registry_url"), "{said}");
    assert_eq!(stored(&db).await.0, 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        unanswered.0.try_wait().unwrap().is_none(),
        "the sink whose registry does not answer waits, it does not exit"
    );
    assert_eq!(stored(&db).await.0, 0);
    drop(unanswered);

    let mut sink = tally_on(&["sink"], &kafka, Some(&db.name));
    sink.env("TALLY__GROUP_ID", unique_name("cf-sink"))
        .env("TALLY__BATCH_MAX_WAIT_MS", "200");
    confluent(&mut sink, &registry);
    let _sink = KillOnDrop(sink.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let totals = loop {
        let totals = stored(&db).await;
        if totals.0 >= expected.0 || Instant::now() > deadline {
            break totals;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        totals, expected,
        "both framings, each call once, to the nano-dollar"
    );
    assert!(
        raw_records(&kafka, &kafka.topic(Topic::DeadLetter)).is_empty(),
        "nothing was dead-lettered"
    );

    // On the broker: the calls topic holds both framings, the derived topics only Confluent
    // records with the ids of today's schemas, registered BACKWARD.
    let client = SchemaRegistry::new(&registry, None);
    let calls = raw_records(&kafka, &kafka.topic(Topic::LlmCalls));
    let framed = |records: &[Vec<u8>], first: u8| records.iter().filter(|r| r[0] == first).count();
    assert_eq!(framed(&calls, 0xC3), EARLIER_CALLS as usize);
    assert_eq!(framed(&calls, 0x00), CALLS as usize);
    for topic in [
        Topic::LlmCallsEnriched,
        Topic::SpendWindows,
        Topic::LoopSignals,
    ] {
        let name = kafka.topic(topic);
        let records = raw_records(&kafka, &name);
        assert!(!records.is_empty(), "{name} has records");
        assert_eq!(
            framed(&records, 0x00),
            records.len(),
            "{name}: all Confluent-framed"
        );
        let subject = tally_contract::registry::subject(&name);
        assert_eq!(client.compatibility(&subject).unwrap(), COMPATIBILITY);
    }

    // Confluent's Python client reads the enriched calls with the registry's schemas.
    let enriched = kafka.topic(Topic::LlmCallsEnriched);
    let read = std::process::Command::new(confluent_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/confluent/read_topic.py"
        ))
        .args([
            &kafka.brokers,
            &registry,
            &enriched,
            &expected.0.to_string(),
            "cost_total_nanos",
            "call.tenant",
            "60",
        ])
        .output()
        .unwrap();
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let read: Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(read["read"], expected.0);
    assert_eq!(read["sum"], expected.1);
    assert_eq!(read["keys"], serde_json::json!(["acme"]));
    assert_eq!(read["schema_ids"].as_array().unwrap().len(), 1, "{read}");

    // ClickHouse's own Kafka engine reads the same topic as AvroConfluent.
    let group = unique_name("cf-clickhouse");
    for statement in [
        format!(
            "CREATE TABLE kafka_enriched (cost_total_nanos Nullable(Int64), unpriced Bool) \
             ENGINE = Kafka SETTINGS kafka_broker_list = '{}', kafka_topic_list = '{enriched}', \
             kafka_group_name = '{group}', kafka_format = 'AvroConfluent', \
             format_avro_schema_registry_url = '{registry}'",
            kafka.brokers
        ),
        "CREATE TABLE enriched_by_clickhouse (cost_total_nanos Nullable(Int64), unpriced Bool) \
         ENGINE = MergeTree ORDER BY tuple()"
            .to_string(),
        "CREATE MATERIALIZED VIEW enriched_mv TO enriched_by_clickhouse AS \
         SELECT cost_total_nanos, unpriced FROM kafka_enriched"
            .to_string(),
    ] {
        db.client.query(&statement).execute().await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let by_clickhouse = loop {
        let totals: (u64, i64) = db
            .client
            .query(
                "SELECT count(), toInt64(sum(ifNull(cost_total_nanos, 0))) \
                 FROM enriched_by_clickhouse",
            )
            .fetch_one()
            .await
            .unwrap();
        if totals.0 >= expected.0 || Instant::now() > deadline {
            break totals;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(by_clickhouse, expected);
    db.client
        .query("DROP TABLE kafka_enriched")
        .execute()
        .await
        .unwrap();

    let _ = std::fs::remove_file(config);
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
}
