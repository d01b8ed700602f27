//! A row ClickHouse refuses goes to the dead-letter topic as the record it came from; once
//! the cause is fixed, `tally dead-letters replay` sends it back and it lands. Against the
//! real broker and server.
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use tally_contract::clickhouse::ClickHouseConfig;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::records::DeployEvent;
use tally_contract::topics::Topic;
use tally_sink::migrate::{migrate, Migration};
use tally_sink::sink::SinkStats;
use tally_sink::SinkConfig;
use tally_tests::{
    clickhouse_url, delete_topics, kafka_config, require_kafka, unique_name, TestDatabase,
};

fn tally(args: &[&str], kafka: &KafkaConfig) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .env("TALLY_KAFKA_BROKERS", &kafka.brokers)
        .env("TALLY__KAFKA__TOPIC_PREFIX", &kafka.topic_prefix)
        .env("TALLY_LOG", "warn")
        .output()
        .unwrap()
}

async fn services(db: &TestDatabase, deadline: Duration) -> Vec<String> {
    let until = Instant::now() + deadline;
    loop {
        let rows: Vec<String> = db
            .client
            .query("SELECT service FROM deploys FINAL ORDER BY service")
            .fetch_all()
            .await
            .unwrap();
        if rows.len() >= 3 || Instant::now() > until {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_row_is_replayed_from_its_dead_letter_once_the_cause_is_fixed() {
    require_kafka();
    let db = TestDatabase::create("it_replay").await;
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(
        &server,
        &db.name,
        &Migration::embedded().unwrap(),
        &tally_sink::migrate::Topology::SingleNode,
    )
    .await
    .unwrap();
    db.client
        .query(
            "ALTER TABLE deploys ADD CONSTRAINT no_friday_deploys CHECK service != 'friday-deploy'",
        )
        .execute()
        .await
        .unwrap();
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("replay")),
        ..kafka_config()
    };
    create_topics(
        &kafka,
        TopicLayout {
            partitions: 1,
            replication_factor: 1,
        },
    )
    .await
    .unwrap();
    let producer: FutureProducer = kafka.client_config().create().unwrap();
    let template: DeployEvent = tally_tests::fixture("DeployEvent");
    for (i, service) in ["checkout", "friday-deploy", "search"].iter().enumerate() {
        let mut deploy = template.clone();
        deploy.event_id = format!("d{i}");
        deploy.service = service.to_string();
        let bytes = tally_contract::encode(&deploy).unwrap();
        producer
            .send(
                FutureRecord::to(&kafka.topic(Topic::Deploys))
                    .key("team/k")
                    .payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let config = SinkConfig {
        group_id: unique_name("replay-sink"),
        batch_max_wait_ms: 100,
        tables: vec!["deploys".into()],
        kafka: kafka.clone(),
        clickhouse: ClickHouseConfig {
            url: clickhouse_url(),
            database: db.name.clone(),
            ..ClickHouseConfig::default()
        },
        ..SinkConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(SinkStats::default());
    let worker = tokio::spawn(tally_sink::run_tables(config, stop.clone(), stats.clone()));
    let until = Instant::now() + Duration::from_secs(60);
    while stats.dead_letters.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < until, "no dead letter");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        services(&db, Duration::from_secs(5)).await,
        ["checkout", "search"]
    );

    // The dead letter names its record and holds its bytes.
    let listed = tally(
        &["dead-letters", "list", "--topic", "tally.deploys.v1"],
        &kafka,
    );
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["offset"], 1);
    assert_eq!(lines[0]["error_kind"], "rejected_by_clickhouse");
    assert!(lines[0]["error"]
        .as_str()
        .unwrap()
        .contains("no_friday_deploys"));

    // The rule is lifted; the record goes back to its topic and the sink writes it.
    db.client
        .query("ALTER TABLE deploys DROP CONSTRAINT no_friday_deploys")
        .execute()
        .await
        .unwrap();
    let replayed = tally(
        &["dead-letters", "replay", "--topic", "tally.deploys.v1"],
        &kafka,
    );
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert!(String::from_utf8_lossy(&replayed.stdout).contains("replayed 1 of 1"));
    assert_eq!(
        services(&db, Duration::from_secs(60)).await,
        ["checkout", "friday-deploy", "search"]
    );
    stop.store(true, Ordering::SeqCst);
    worker.await.unwrap().unwrap();
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
    db.drop_database().await;
}
