//! The sink and the migrations against the real ClickHouse server and Kafka broker.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use tally_contract::clickhouse::ClickHouseConfig;
use tally_contract::encode;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::records::EnrichedLlmCall;
use tally_contract::topics::Topic;
use tally_sink::migrate::{migrate, Migration, Outcome};
use tally_sink::sink::{self, SinkStats};
use tally_sink::tables::LlmCalls;
use tally_sink::SinkConfig;
use tally_tests::{
    clickhouse_url, delete_topics, kafka_config, require_kafka, unique_name, TestDatabase,
};

#[tokio::test]
async fn migrations_apply_once_and_a_changed_one_is_refused() {
    let db = TestDatabase::create("it_migrate").await;
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    let migrations = Migration::embedded().unwrap();
    let first = migrate(&server, &db.name, &migrations).await.unwrap();
    let names = ["0001_llm_calls.sql", "0002_events_windows_alerts.sql"];
    assert_eq!(first, names.map(|n| Outcome::Applied(n.into())));
    let second = migrate(&server, &db.name, &migrations).await.unwrap();
    assert_eq!(second, names.map(|n| Outcome::AlreadyApplied(n.into())));
    let tables: Vec<String> = db
        .client
        .query("SELECT name FROM system.tables WHERE database = ? AND comment != '' ORDER BY name")
        .bind(&db.name)
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        tables,
        [
            "alerts",
            "deploys",
            "llm_calls",
            "loop_signals",
            "spend_windows",
            "tally_schema_migrations",
            "tickets"
        ]
    );
    let comment: String = db
        .client
        .query("SELECT comment FROM system.tables WHERE database = ? AND name = 'llm_calls'")
        .bind(&db.name)
        .fetch_one()
        .await
        .unwrap();
    assert!(
        comment.starts_with("One row per priced and carbon-rated LLM call"),
        "{comment}"
    );

    let mut changed = migrations.clone();
    changed[0].sql.push_str("\n-- an edit after the fact\n");
    let err = migrate(&server, &db.name, &changed)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("migration 0001_llm_calls.sql was changed after it was applied"),
        "{err}"
    );
    db.drop_database().await;
}

fn enriched(i: usize) -> EnrichedLlmCall {
    let mut e: EnrichedLlmCall = tally_tests::fixture("EnrichedLlmCall");
    e.call.event_id = format!("sink-{i}");
    e.call.team = format!("team-{}", i % 5);
    e.call.input_tokens = 1_000 + i as i64;
    if i % 7 == 0 {
        e.unpriced = true;
        e.cost_total_nanos = None;
        e.price_entry = None;
    } else {
        e.cost_total_nanos = Some(1_000_003 * i as i64);
    }
    e
}

async fn produce(kafka: &KafkaConfig, records: &[EnrichedLlmCall]) {
    let producer: FutureProducer = kafka
        .client_config()
        .set("linger.ms", "10")
        .create()
        .unwrap();
    let topic = kafka.topic(Topic::LlmCallsEnriched);
    let mut deliveries = Vec::new();
    for record in records {
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
}

#[tokio::test]
async fn enriched_calls_land_in_clickhouse_with_exact_totals() {
    require_kafka();
    let db = TestDatabase::create("it_sink").await;
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(&server, &db.name, &Migration::embedded().unwrap())
        .await
        .unwrap();
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("sink")),
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
    let records: Vec<EnrichedLlmCall> = (0..5_000).map(enriched).collect();
    produce(&kafka, &records).await;
    // A duplicate of the first 100 (as a replay would write them).
    produce(&kafka, &records[..100]).await;

    let config = SinkConfig {
        group_id: unique_name("sink-group"),
        batch_max_rows: 700,
        batch_max_wait_ms: 200,
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

    let expected_cost: i64 = records.iter().filter_map(|r| r.cost_total_nanos).sum();
    let expected_tokens: i64 = records.iter().map(|r| r.call.input_tokens).sum();
    let mut totals = (0u64, 0i64, None::<i64>, 0u64);
    for _ in 0..120 {
        totals = db
            .client
            .query("SELECT count(), sum(input_tokens), sum(cost_total_nanos), countIf(unpriced) FROM llm_calls FINAL")
            .fetch_one()
            .await
            .unwrap();
        if totals.0 >= 5_000 && stats.rows.load(Ordering::Relaxed) >= 5_100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        totals,
        (5_000, expected_tokens, Some(expected_cost), 715),
        "count, tokens, cost, unpriced (FINAL)"
    );
    // cost_usd is an exact Decimal(38, 9): its sum is the nano-dollar sum to the last digit.
    let usd: Option<String> = db
        .client
        .query("SELECT toString(sum(cost_usd)) FROM llm_calls FINAL")
        .fetch_one()
        .await
        .unwrap();
    let expected_usd = format!(
        "{}.{:09}",
        expected_cost / 1_000_000_000,
        expected_cost % 1_000_000_000
    );
    assert_eq!(
        usd.as_deref().map(|u| u.trim_end_matches('0')),
        Some(expected_usd.trim_end_matches('0'))
    );

    stop.store(true, Ordering::SeqCst);
    worker.await.unwrap().unwrap();
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
    db.drop_database().await;
}

#[tokio::test]
async fn a_missing_table_or_column_is_named_at_start() {
    let db = TestDatabase::create("it_schema").await;
    let err = sink::check_schema::<LlmCalls>(&db.client, &db.name)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("llm_calls does not exist; run `tally migrate` first"),
        "{err}"
    );
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(&server, &db.name, &Migration::embedded().unwrap())
        .await
        .unwrap();
    db.client
        .query("ALTER TABLE llm_calls DROP COLUMN kafka_offset")
        .execute()
        .await
        .unwrap();
    let err = sink::check_schema::<LlmCalls>(&db.client, &db.name)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "column {}.llm_calls.kafka_offset is missing",
            db.name
        )),
        "{err}"
    );
    db.drop_database().await;
}

async fn produce_one<T: tally_contract::AvroRecord>(
    kafka: &KafkaConfig,
    topic: Topic,
    key: &str,
    record: &T,
) {
    let producer: FutureProducer = kafka.client_config().create().unwrap();
    producer
        .send(
            FutureRecord::to(&kafka.topic(topic))
                .key(key)
                .payload(&encode(record).unwrap()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn deploys_tickets_windows_signals_and_alerts_land_in_their_tables() {
    use tally_contract::records::{Alert, DeployEvent, LoopSignal, SpendWindow, TicketEvent};
    require_kafka();
    let db = TestDatabase::create("it_sink_all").await;
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(&server, &db.name, &Migration::embedded().unwrap())
        .await
        .unwrap();
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("sinkall")),
        ..kafka_config()
    };
    create_topics(
        &kafka,
        TopicLayout {
            partitions: 2,
            replication_factor: 1,
        },
    )
    .await
    .unwrap();

    let deploy: DeployEvent = tally_tests::fixture("DeployEvent");
    let ticket: TicketEvent = tally_tests::fixture("TicketEvent");
    let signal: LoopSignal = tally_tests::fixture("LoopSignal");
    let alert: Alert = tally_tests::fixture("Alert");
    let window: SpendWindow = tally_tests::fixture("SpendWindow");
    let mut revised = window.clone();
    revised.revision += 1;
    revised.calls += 10;
    produce_one(&kafka, Topic::Deploys, "k", &deploy).await;
    produce_one(&kafka, Topic::Deploys, "k", &deploy).await; // a replay: one row after FINAL
    produce_one(&kafka, Topic::Tickets, "k", &ticket).await;
    produce_one(&kafka, Topic::LoopSignals, "k", &signal).await;
    produce_one(&kafka, Topic::Alerts, "k", &alert).await;
    produce_one(&kafka, Topic::SpendWindows, "k", &revised).await;
    produce_one(&kafka, Topic::SpendWindows, "k", &window).await; // an older revision arriving late

    let config = SinkConfig {
        group_id: unique_name("sink-all"),
        batch_max_wait_ms: 100,
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
    for _ in 0..120 {
        if stats.rows.load(Ordering::Relaxed) >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let count = |table: &'static str| {
        let client = db.client.clone();
        async move {
            client
                .query(&format!("SELECT count() FROM {table} FINAL"))
                .fetch_one::<u64>()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        (
            count("deploys").await,
            count("tickets").await,
            count("loop_signals").await,
            count("alerts").await,
            count("spend_windows").await
        ),
        (1, 1, 1, 1, 1)
    );
    let (revision, calls): (i32, i64) = db
        .client
        .query("SELECT revision, calls FROM spend_windows FINAL")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        (revision, calls),
        (revised.revision, revised.calls),
        "FINAL keeps the highest revision"
    );
    let tickets: Vec<String> = db
        .client
        .query("SELECT arrayJoin(ticket_ids) FROM deploys FINAL ORDER BY 1")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(tickets, deploy.ticket_ids);
    stop.store(true, Ordering::SeqCst);
    worker.await.unwrap().unwrap();
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
    db.drop_database().await;
}
