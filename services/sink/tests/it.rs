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
use tally_sink::migrate::{migrate, Migration, Outcome, Topology};
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
    let first = migrate(&server, &db.name, &migrations, &Topology::SingleNode)
        .await
        .unwrap();
    let names = [
        "0001_llm_calls.sql",
        "0002_events_windows_alerts.sql",
        "0003_views.sql",
        "0004_rollups.sql",
        "0005_output_fingerprint.sql",
        "0006_canonical_model.sql",
        "0007_wide_sums.sql",
        "0008_window_parts.sql",
        "0009_attribution_prefix_sums.sql",
        "0010_attribution_mark_ids.sql",
    ];
    assert_eq!(first, names.map(|n| Outcome::Applied(n.into())));
    let second = migrate(&server, &db.name, &migrations, &Topology::SingleNode)
        .await
        .unwrap();
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
            "cost_per_deploy",
            "cost_per_ticket",
            "deploys",
            "emissions_monthly",
            "llm_calls",
            "llm_calls_daily",
            "llm_calls_hourly",
            "loop_signals",
            "spend_window_totals",
            "spend_windows",
            "tally_schema_migrations",
            "team_efficiency",
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
    let err = migrate(&server, &db.name, &changed, &Topology::SingleNode)
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
    migrate(
        &server,
        &db.name,
        &Migration::embedded().unwrap(),
        &Topology::SingleNode,
    )
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
    let err = sink::check_schema::<LlmCalls>(&db.client, &db.name, &AtomicBool::new(false))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("llm_calls does not exist; run `tally migrate` first"),
        "{err}"
    );
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(
        &server,
        &db.name,
        &Migration::embedded().unwrap(),
        &Topology::SingleNode,
    )
    .await
    .unwrap();
    db.client
        .query("ALTER TABLE llm_calls DROP COLUMN kafka_offset")
        .execute()
        .await
        .unwrap();
    let err = sink::check_schema::<LlmCalls>(&db.client, &db.name, &AtomicBool::new(false))
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
    migrate(
        &server,
        &db.name,
        &Migration::embedded().unwrap(),
        &Topology::SingleNode,
    )
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
    let mut alert: Alert = tally_tests::fixture("Alert");
    // Wide sums (SpendWindow and Alert version 2) pass i64 and arrive whole.
    alert.amount_nanos = Some((1i128 << 69) + 3);
    let window: SpendWindow = tally_tests::fixture("SpendWindow");
    let mut revised = window.clone();
    revised.revision += 1;
    revised.calls += 10;
    revised.cost_nanos = (1i128 << 70) + 7;
    revised.co2e_ug_high = -((1i128 << 80) + 1);
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
    let wide: (i128, i128, Option<i128>) = db
        .client
        .query("SELECT cost_nanos, co2e_ug_high, (SELECT amount_nanos FROM alerts FINAL) FROM spend_windows FINAL")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        wide,
        (revised.cost_nanos, revised.co2e_ug_high, alert.amount_nanos)
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

/// 2026-11-DD HH:00 UTC, in epoch microseconds.
fn at(day: i64, hour: i64) -> i64 {
    1_793_491_200_000_000 + ((day - 1) * 24 + hour) * 3_600_000_000
}

/// (ticket, kind, tagged, unattributed, attributed nano-dollars, attributed dollars, human cost)
type TicketFigures = (String, String, i128, i128, i128, String, Option<f64>);
/// (team, month, tokens, cost, unpriced, deploys, features/bugs, per feature, per deploy)
type EfficiencyFigures = (
    String,
    String,
    i128,
    i128,
    u64,
    u64,
    String,
    Option<String>,
    Option<String>,
);

#[tokio::test]
async fn attribution_views_on_a_hand_built_history() {
    use tally_contract::records::{
        DeployEvent, DeployStatus, TicketEvent, TicketKind, TicketStatus,
    };
    use tally_sink::rows::{DeployRow, LlmCallRow, TicketRow};
    let db = TestDatabase::create("it_views").await;
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(
        &server,
        &db.name,
        &Migration::embedded().unwrap(),
        &Topology::SingleNode,
    )
    .await
    .unwrap();

    // Calls: (id, team, time, cost in dollars x 1e-1 as nanos, ticket)
    let calls = [
        ("c1", "payments", at(0, 12), Some(100_000_000), None), // 2026-10-31 12:00
        ("c2", "payments", at(2, 9), Some(200_000_000), Some("PAY-1")),
        ("c3", "payments", at(2, 12), Some(300_000_000), None),
        ("c4", "payments", at(4, 8), Some(400_000_000), Some("PAY-2")),
        ("c5", "payments", at(4, 9), None, None), // unknown model
        (
            "c6",
            "payments",
            at(5, 11),
            Some(500_000_000),
            Some("PAY-2"),
        ),
        ("s1", "search", at(2, 12), Some(1_000_000_000), None),
    ];
    let template: EnrichedLlmCall = tally_tests::fixture("EnrichedLlmCall");
    let mut insert = db.client.insert::<LlmCallRow>("llm_calls").await.unwrap();
    for (i, (id, team, time, cost, ticket)) in calls.iter().enumerate() {
        let mut e = template.clone();
        e.call.event_id = id.to_string();
        e.call.team = team.to_string();
        e.call.occurred_at = *time;
        e.call.input_tokens = 8;
        e.call.output_tokens = 2;
        e.call.ticket_id = ticket.map(String::from);
        e.call.region = Some("us-east-1".into());
        // One model sent two ways; records before version 3 carry no canonical name.
        e.call.model = ["gpt-4o", "openai/GPT-4o"][i % 2].into();
        e.canonical_model = String::new();
        e.unpriced = cost.is_none();
        e.cost_total_nanos = *cost;
        e.energy_uwh_low = 500_000;
        e.energy_uwh_central = 1_000_000;
        e.energy_uwh_high = 2_000_000;
        e.co2e_ug_central = 400_000;
        insert
            .write(&LlmCallRow::new(e, 0, i as i64))
            .await
            .unwrap();
    }
    insert.end().await.unwrap();

    let deploy: DeployEvent = tally_tests::fixture("DeployEvent");
    let deploys = [
        (
            "d1",
            "payments",
            "checkout",
            at(1, 10),
            DeployStatus::Succeeded,
            vec![],
        ),
        (
            "d2",
            "payments",
            "checkout",
            at(3, 10),
            DeployStatus::Succeeded,
            vec!["PAY-1"],
        ),
        (
            "d3",
            "payments",
            "checkout",
            at(4, 0),
            DeployStatus::Failed,
            vec![],
        ),
        (
            "d4",
            "payments",
            "checkout",
            at(5, 10),
            DeployStatus::Succeeded,
            vec!["PAY-2"],
        ),
        (
            "s1",
            "search",
            "ranker",
            at(2, 18),
            DeployStatus::Succeeded,
            vec![],
        ),
    ];
    let mut insert = db.client.insert::<DeployRow>("deploys").await.unwrap();
    for (id, team, service, time, status, tickets) in deploys {
        let mut d = deploy.clone();
        (d.event_id, d.team, d.service, d.environment) =
            (id.into(), team.into(), service.into(), "production".into());
        d.occurred_at = time;
        d.status = status;
        d.version = Some(id.into());
        d.ticket_ids = tickets.into_iter().map(String::from).collect();
        insert.write(&DeployRow::from(d)).await.unwrap();
    }
    insert.end().await.unwrap();

    let ticket: TicketEvent = tally_tests::fixture("TicketEvent");
    let tickets = [
        (
            "PAY-1",
            TicketKind::Feature,
            TicketStatus::Opened,
            at(1, 9),
            Some(8.0),
        ),
        (
            "PAY-1",
            TicketKind::Feature,
            TicketStatus::Closed,
            at(3, 9),
            Some(8.0),
        ),
        (
            "PAY-2",
            TicketKind::Bug,
            TicketStatus::Opened,
            at(3, 12),
            Some(4.0),
        ),
        (
            "PAY-2",
            TicketKind::Bug,
            TicketStatus::Closed,
            at(5, 12),
            Some(4.0),
        ),
        (
            "PAY-3",
            TicketKind::Chore,
            TicketStatus::Opened,
            at(4, 0),
            None,
        ),
    ];
    let mut insert = db.client.insert::<TicketRow>("tickets").await.unwrap();
    for (i, (id, kind, status, time, estimate)) in tickets.into_iter().enumerate() {
        let mut t = ticket.clone();
        (t.event_id, t.ticket_id, t.team, t.kind, t.status) =
            (format!("t{i}"), id.into(), "payments".into(), kind, status);
        t.occurred_at = time;
        t.estimate_hours = estimate;
        insert.write(&TicketRow::from(t)).await.unwrap();
    }
    insert.end().await.unwrap();

    // cost_per_deploy, written out by hand: (deploy, team calls, team cost, unpriced, ticket cost)
    let per_deploy: Vec<(String, u64, i128, u64, i128)> = db
        .client
        .query("SELECT deploy_id, team_calls, team_cost_nanos, team_unpriced_calls, ticket_cost_nanos FROM cost_per_deploy ORDER BY deploy_id")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        per_deploy,
        [
            ("d1".into(), 1, 100_000_000, 0, 0), // c1: everything before the first deploy
            ("d2".into(), 2, 500_000_000, 0, 200_000_000), // c2 + c3; PAY-1 tagged: c2
            ("d4".into(), 2, 400_000_000, 1, 400_000_000), // c4 + c5 (unpriced) since d2 (d3 failed); PAY-2 up to d4: c4
            ("s1".into(), 1, 1_000_000_000, 0, 0),         // the search team's own spend only
        ]
    );

    // cost_per_ticket with half the untagged spend shared and $100 an hour
    let per_ticket: Vec<TicketFigures> = db
        .client
        .query(
            "SELECT ticket_id, kind, tagged_cost_nanos, unattributed_team_cost_nanos, attributed_cost_nanos,
                    toString(attributed_cost_usd), human_cost_usd
             FROM cost_per_ticket(unattributed_share = 0.5, loaded_hourly_rate_usd = 100) ORDER BY ticket_id",
        )
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        per_ticket,
        [
            // PAY-1: c2 tagged; c3 untagged while open (11-01 09:00 .. 11-03 09:00), half of it
            (
                "PAY-1".into(),
                "feature".into(),
                200_000_000,
                300_000_000,
                350_000_000,
                "0.35".into(),
                Some(800.0)
            ),
            // PAY-2: c4 + c6 tagged; c5 untagged but unpriced: nothing to share. PAY-3 is open: absent.
            (
                "PAY-2".into(),
                "bug".into(),
                900_000_000,
                0,
                900_000_000,
                "0.9".into(),
                Some(400.0)
            ),
        ]
    );

    // team_efficiency: (team, month, tokens, cost, unpriced, deploys, features/bugs, per feature, per deploy)
    let efficiency: Vec<EfficiencyFigures> = db
        .client
        .query(
            "SELECT team, toString(month), tokens, cost_nanos, unpriced_calls, deploys,
                    concat(toString(closed_features), '/', toString(closed_bugs)),
                    toString(cost_per_feature_usd), toString(cost_per_deploy_usd)
             FROM team_efficiency ORDER BY team, month",
        )
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        efficiency,
        [
            (
                "payments".into(),
                "2026-10-01".into(),
                10,
                100_000_000,
                0,
                0,
                "0/0".into(),
                None,
                None
            ),
            (
                "payments".into(),
                "2026-11-01".into(),
                50,
                1_400_000_000,
                1,
                3,
                "1/1".into(),
                Some("1.4".into()),
                Some("0.466666666".into())
            ),
            (
                "search".into(),
                "2026-11-01".into(),
                10,
                1_000_000_000,
                0,
                1,
                "0/0".into(),
                None,
                Some("1".into())
            ),
        ]
    );

    // emissions_monthly: 5 November calls of 1 Wh each, with their versions
    let (calls, kwh, kg, methods): (u64, String, String, String) = db
        .client
        .query(
            "SELECT calls, toString(energy_kwh_central), toString(co2e_kg_central), arrayStringConcat(carbon_method_versions, ',')
             FROM emissions_monthly WHERE team = 'payments' AND month = '2026-11-01'",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!((calls, kwh.as_str(), kg.as_str()), (5, "0.005", "0.002"));
    assert_eq!(methods, template.carbon_method_version);
    // ... under one model, with the names as sent kept on the calls.
    let reported: Vec<String> = db
        .client
        .query("SELECT DISTINCT model FROM emissions_monthly WHERE team = 'payments'")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(reported, ["gpt-4o"]);
    let sent: Vec<String> = db
        .client
        .query("SELECT DISTINCT model FROM llm_calls WHERE team = 'payments' ORDER BY model")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(sent, ["gpt-4o", "openai/GPT-4o"]);

    // The rollups, kept by materialized views, agree with llm_calls.
    let daily: (u64, i128, u64) = db
        .client
        .query("SELECT sum(calls), sum(cost_nanos), sum(unpriced_calls) FROM llm_calls_daily WHERE team = 'payments'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(daily, (6, 1_500_000_000, 1));
    let hours: Vec<(String, u64)> = db
        .client
        .query("SELECT toString(hour), sum(calls) FROM llm_calls_hourly WHERE team = 'payments' GROUP BY hour ORDER BY hour LIMIT 2")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        hours,
        [
            ("2026-10-31 12:00:00".to_string(), 1),
            ("2026-11-02 09:00:00".to_string(), 1)
        ]
    );
    db.drop_database().await;
}

/// Runs scripts/services.sh for a ClickHouse of this test's own (other ports, own data).
fn own_clickhouse(command: &str, data: &std::path::Path, http_port: u16) {
    let ports = [
        ("TALLY_CLICKHOUSE_HTTP_PORT", http_port.to_string()),
        ("TALLY_CLICKHOUSE_TCP_PORT", (http_port + 1).to_string()),
    ];
    tally_tests::services_script(command, data, "TALLY_CLICKHOUSE_URL", &ports);
}

struct StopClickHouse(std::path::PathBuf, u16);

impl Drop for StopClickHouse {
    fn drop(&mut self) {
        own_clickhouse("stop-clickhouse", &self.0, self.1);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn clickhouse_down_mid_run_holds_the_batch_and_totals_stay_exact() {
    require_kafka();
    const PORT: u16 = 18123;
    let data = std::env::temp_dir().join(unique_name("tally-own-clickhouse"));
    own_clickhouse("start-clickhouse", &data, PORT);
    let _guard = StopClickHouse(data.clone(), PORT);
    let url = format!("http://127.0.0.1:{PORT}");
    let server = clickhouse::Client::default().with_url(&url);
    migrate(
        &server,
        "tally",
        &Migration::embedded().unwrap(),
        &Topology::SingleNode,
    )
    .await
    .unwrap();
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("chdown")),
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
    let config = SinkConfig {
        group_id: unique_name("chdown"),
        batch_max_rows: 500,
        batch_max_wait_ms: 100,
        tables: vec!["llm_calls".into()],
        kafka: kafka.clone(),
        clickhouse: ClickHouseConfig {
            url: url.clone(),
            database: "tally".into(),
            ..ClickHouseConfig::default()
        },
        ..SinkConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(SinkStats::default());
    let worker = tokio::spawn(tally_sink::run_tables(config, stop.clone(), stats.clone()));

    let records: Vec<EnrichedLlmCall> = (0..6_000).map(enriched).collect();
    produce(&kafka, &records[..2_000]).await;
    let client = server.clone().with_database("tally");
    for _ in 0..120 {
        if stats.rows.load(Ordering::Relaxed) >= 2_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    own_clickhouse("stop-clickhouse", &data, PORT);
    produce(&kafka, &records[2_000..]).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the sink retries against a dead server
    let during = stats.rows.load(Ordering::Relaxed);
    own_clickhouse("start-clickhouse", &data, PORT);

    let expected_cost: i64 = records.iter().filter_map(|r| r.cost_total_nanos).sum();
    let mut totals = (0u64, None::<i64>);
    for _ in 0..240 {
        if let Ok(t) = client
            .query("SELECT count(), sum(cost_total_nanos) FROM llm_calls FINAL")
            .fetch_one()
            .await
        {
            totals = t;
            if totals.0 == 6_000 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        during < 6_000,
        "the sink could not insert while ClickHouse was down ({during} rows)"
    );
    assert_eq!(
        totals,
        (6_000, Some(expected_cost)),
        "after ClickHouse came back"
    );
    assert_eq!(
        stats.dead_letters.load(Ordering::Relaxed),
        0,
        "an outage is not a reason to dead-letter"
    );
    stop.store(true, Ordering::SeqCst);
    worker.await.unwrap().unwrap();
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
}

#[tokio::test]
async fn a_row_clickhouse_refuses_goes_to_the_dead_letter_topic_with_its_error() {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    use tally_contract::records::{DeadLetter, DeployEvent};
    require_kafka();
    let db = TestDatabase::create("it_sink_refused").await;
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(
        &server,
        &db.name,
        &Migration::embedded().unwrap(),
        &Topology::SingleNode,
    )
    .await
    .unwrap();
    // A rule of this installation that one record breaks.
    db.client
        .query(
            "ALTER TABLE deploys ADD CONSTRAINT no_friday_deploys CHECK service != 'friday-deploy'",
        )
        .execute()
        .await
        .unwrap();
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("refused")),
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
    let template: DeployEvent = tally_tests::fixture("DeployEvent");
    for (i, service) in ["checkout", "friday-deploy", "search"].iter().enumerate() {
        let mut deploy = template.clone();
        deploy.event_id = format!("d{i}");
        deploy.service = service.to_string();
        produce_one(&kafka, Topic::Deploys, "k", &deploy).await;
    }
    let config = SinkConfig {
        group_id: unique_name("refused"),
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

    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", unique_name("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&kafka.topic(Topic::DeadLetter)])
        .unwrap();
    let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .expect("a dead letter")
        .unwrap();
    let letter: DeadLetter = tally_contract::decode(message.payload().unwrap()).unwrap();
    assert_eq!(
        (
            letter.stage.as_str(),
            letter.error_kind.as_str(),
            letter.offset
        ),
        ("sink", "rejected_by_clickhouse", 1)
    );
    assert!(
        letter.error.contains("no_friday_deploys"),
        "the server's error: {}",
        letter.error
    );
    // The rows after the refused one are inserted once its letter is out.
    let mut services: Vec<String> = Vec::new();
    for _ in 0..100 {
        services = db
            .client
            .query("SELECT service FROM deploys FINAL ORDER BY service")
            .fetch_all()
            .await
            .unwrap();
        if services.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        services,
        ["checkout", "search"],
        "the other rows of the batch are in"
    );
    stop.store(true, Ordering::SeqCst);
    worker.await.unwrap().unwrap();
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
    db.drop_database().await;
}

/// Three calls of 4 × 10^18 nano-dollars, micro-watt-hours and micrograms each (4 TWh): every
/// sum passes i64 and the views, rollups and the spend report give it exactly. (ClickHouse sums
/// Int64 as Int64, which wraps: `emissions_monthly` gave -6,446,744,073.7 kWh before 0007.)
#[tokio::test]
async fn views_rollups_and_reports_sum_past_i64_exactly() {
    use tally_sink::rows::LlmCallRow;
    let db = TestDatabase::create("it_wide").await;
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(
        &server,
        &db.name,
        &Migration::embedded().unwrap(),
        &Topology::SingleNode,
    )
    .await
    .unwrap();
    let template: EnrichedLlmCall = tally_tests::fixture("EnrichedLlmCall");
    let mut insert = db.client.insert::<LlmCallRow>("llm_calls").await.unwrap();
    for i in 0..3 {
        let mut e = template.clone();
        e.call.event_id = format!("huge-{i}");
        e.call.team = "research".into();
        e.call.occurred_at = at(10, 12) + i;
        e.cost_total_nanos = Some(4_000_000_000_000_000_000);
        (e.energy_uwh_low, e.energy_uwh_central, e.energy_uwh_high) = (
            4_000_000_000_000_000_000,
            4_000_000_000_000_000_000,
            4_000_000_000_000_000_000,
        );
        (e.co2e_ug_low, e.co2e_ug_central, e.co2e_ug_high) = (
            4_000_000_000_000_000_000,
            4_000_000_000_000_000_000,
            4_000_000_000_000_000_000,
        );
        insert.write(&LlmCallRow::new(e, 0, i)).await.unwrap();
    }
    insert.end().await.unwrap();
    let text = |sql: &'static str| {
        let client = db.client.clone();
        async move { client.query(sql).fetch_one::<String>().await.unwrap() }
    };
    assert_eq!(
        text("SELECT toString(energy_kwh_central) FROM emissions_monthly WHERE team = 'research'")
            .await,
        "12000000000"
    );
    assert_eq!(
        text("SELECT toString(co2e_kg_high) FROM emissions_monthly WHERE team = 'research'").await,
        "12000000000"
    );
    assert_eq!(
        text("SELECT toString(cost_nanos) FROM team_efficiency WHERE team = 'research'").await,
        "12000000000000000000"
    );
    assert_eq!(
        text("SELECT toString(cost_usd) FROM team_efficiency WHERE team = 'research'").await,
        "12000000000"
    );
    assert_eq!(
        text("SELECT toString(sum(cost_nanos)) FROM llm_calls_daily WHERE team = 'research'").await,
        "12000000000000000000"
    );
    assert_eq!(
        text("SELECT toString(sum(co2e_ug_central)) FROM llm_calls_hourly WHERE team = 'research'")
            .await,
        "12000000000000000000"
    );
    let spend =
        tally_report::tabular::spend(&db.client, "2026-11-01", "2026-12-01", &["team".into()])
            .await
            .unwrap();
    let json = spend.json();
    assert!(
        json.contains("12000000000000000000") && json.contains("12000000000"),
        "{json}"
    );
    let emissions = tally_report::emissions::emissions(
        &db.client,
        &tally_report::emissions::EmissionsQuery {
            from: "2026-11-01".into(),
            to: "2026-12-01".into(),
            by: vec!["team".into()],
        },
    )
    .await
    .unwrap();
    assert_eq!(emissions.totals.energy_uwh, [12_000_000_000_000_000_000; 3]);
    db.drop_database().await;
}

/// An older sink meeting a record of a newer schema version stops before it, naming the
/// version, instead of dead-lettering it and committing past it: upgrading the readers
/// later loses nothing.
#[tokio::test]
async fn a_record_of_a_newer_schema_version_stops_the_sink_before_it() {
    use tally_contract::records::DeployEvent;
    require_kafka();
    let db = TestDatabase::create("it_newer").await;
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(
        &server,
        &db.name,
        &Migration::embedded().unwrap(),
        &Topology::SingleNode,
    )
    .await
    .unwrap();
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("newer")),
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
    let deploy: DeployEvent = tally_tests::fixture("DeployEvent");
    let mut later = deploy.clone();
    later.event_id = "after-the-newer-one".into();
    produce_one(&kafka, Topic::Deploys, "k", &deploy).await;
    let producer: FutureProducer = kafka.client_config().create().unwrap();
    producer
        .send(
            FutureRecord::to(&kafka.topic(Topic::Deploys))
                .key("k")
                .payload(&tally_tests::newer_version_bytes(&deploy)),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    produce_one(&kafka, Topic::Deploys, "k", &later).await;
    let config = SinkConfig {
        group_id: unique_name("sink-newer"),
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
    let stats = Arc::new(SinkStats::default());
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        tally_sink::run_tables(config, Arc::new(AtomicBool::new(false)), stats.clone()),
    )
    .await
    .expect("the sink stops by itself");
    let error = outcome.unwrap_err().to_string();
    assert!(
        error.contains("offset 1")
            && error.contains("DeployEvent 1 to 1")
            && error.contains("newer tally"),
        "{error}"
    );
    let ids: Vec<String> = db
        .client
        .query("SELECT event_id FROM deploys FINAL")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(ids, [deploy.event_id], "nothing past the newer record");
    assert_eq!(
        stats.dead_letters.load(Ordering::Relaxed),
        0,
        "no dead letter"
    );
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
    db.drop_database().await;
}

/// ClickHouse goes away while the sink inserts a refused batch row by row: the rows after
/// the refused one are held and retried, not dead-lettered, and all land once it is back.
#[tokio::test]
async fn an_outage_during_the_row_by_row_fallback_dead_letters_nothing_more() {
    use tally_contract::records::DeployEvent;
    require_kafka();
    const PORT: u16 = 18223;
    const GOOD: usize = 3_000;
    let data = std::env::temp_dir().join(unique_name("tally-own-clickhouse"));
    own_clickhouse("start-clickhouse", &data, PORT);
    let _guard = StopClickHouse(data.clone(), PORT);
    let url = format!("http://127.0.0.1:{PORT}");
    let server = clickhouse::Client::default().with_url(&url);
    migrate(
        &server,
        "tally",
        &Migration::embedded().unwrap(),
        &Topology::SingleNode,
    )
    .await
    .unwrap();
    let client = server.clone().with_database("tally");
    client
        .query(
            "ALTER TABLE deploys ADD CONSTRAINT no_friday_deploys CHECK service != 'friday-deploy'",
        )
        .execute()
        .await
        .unwrap();
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("fallback")),
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
    let template: DeployEvent = tally_tests::fixture("DeployEvent");
    let producer: FutureProducer = kafka
        .client_config()
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let payloads: Vec<Vec<u8>> = (0..=GOOD)
        .map(|i| {
            let mut deploy = template.clone();
            deploy.event_id = format!("d{i}");
            deploy.service = if i == 0 {
                "friday-deploy".into()
            } else {
                format!("s{i}")
            };
            encode(&deploy).unwrap()
        })
        .collect();
    let topic = kafka.topic(Topic::Deploys);
    let deliveries: Vec<_> = payloads
        .iter()
        .map(|p| {
            producer
                .send_result(FutureRecord::to(&topic).key("k").payload(p))
                .unwrap()
        })
        .collect();
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }
    let config = SinkConfig {
        group_id: unique_name("fallback"),
        batch_max_wait_ms: 1_000,
        tables: vec!["deploys".into()],
        kafka: kafka.clone(),
        clickhouse: ClickHouseConfig {
            url: url.clone(),
            database: "tally".into(),
            ..ClickHouseConfig::default()
        },
        ..SinkConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(SinkStats::default());
    let worker = tokio::spawn(tally_sink::run_tables(config, stop.clone(), stats.clone()));
    // The batch is refused (its first row), the fallback dead-letters that row and goes on
    // row by row; ClickHouse stops meanwhile.
    for _ in 0..600 {
        if stats.dead_letters.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.dead_letters.load(Ordering::Relaxed), 1);
    own_clickhouse("stop-clickhouse", &data, PORT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    own_clickhouse("start-clickhouse", &data, PORT);
    let mut count = 0;
    for _ in 0..600 {
        if let Ok(n) = client
            .query("SELECT count() FROM deploys FINAL")
            .fetch_one::<u64>()
            .await
        {
            count = n;
            if n as usize >= GOOD {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(count as usize, GOOD, "every good row landed");
    assert_eq!(
        stats.dead_letters.load(Ordering::Relaxed),
        1,
        "the outage dead-lettered nothing"
    );
    stop.store(true, Ordering::SeqCst);
    worker.await.unwrap().unwrap();
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
}

/// Strings that look like SQL, with quotes, backslashes, NUL and line breaks, in every kind
/// of string column: the typed insert stores them verbatim, and a query that binds one as a
/// parameter finds exactly its row.
#[tokio::test]
async fn strings_that_look_like_sql_are_stored_verbatim() {
    require_kafka();
    let db = TestDatabase::create("it_sql_text").await;
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(
        &server,
        &db.name,
        &Migration::embedded().unwrap(),
        &Topology::SingleNode,
    )
    .await
    .unwrap();
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("sqltext")),
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
    let hostile = tally_tests::HOSTILE_TEXT;
    let records: Vec<EnrichedLlmCall> = hostile
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut e = enriched(i + 1);
            e.call.team = text.to_string();
            e.call.user = Some(text.to_string());
            e.call.workflow = Some(text.to_string());
            e.call.tags = [(text.to_string(), text.to_string())].into();
            e
        })
        .collect();
    produce(&kafka, &records).await;
    let config = SinkConfig {
        group_id: unique_name("sink-group"),
        batch_max_wait_ms: 200,
        kafka: kafka.clone(),
        clickhouse: ClickHouseConfig {
            url: clickhouse_url(),
            database: db.name.clone(),
            ..ClickHouseConfig::default()
        },
        tables: vec!["llm_calls".into()],
        ..SinkConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(SinkStats::default());
    let worker = tokio::spawn(tally_sink::run_tables(config, stop.clone(), stats.clone()));
    for _ in 0..120 {
        if stats.rows.load(Ordering::Relaxed) >= hostile.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (i, text) in hostile.iter().enumerate() {
        #[derive(clickhouse::Row, serde::Deserialize, Debug, PartialEq)]
        struct Back {
            event_id: String,
            user: Option<String>,
            workflow: Option<String>,
            tag: String,
        }
        let rows: Vec<Back> = db
            .client
            .query(
                "SELECT event_id, user, workflow, tags[?] AS tag FROM llm_calls FINAL WHERE team = ?",
            )
            .bind(*text)
            .bind(*text)
            .fetch_all()
            .await
            .unwrap();
        assert_eq!(
            rows,
            [Back {
                event_id: records[i].call.event_id.clone(),
                user: Some(text.to_string()),
                workflow: Some(text.to_string()),
                tag: text.to_string(),
            }],
            "{text:?}"
        );
    }
    let tables: u64 = db
        .client
        .query("SELECT count() FROM system.tables WHERE database = ? AND name = 'llm_calls'")
        .bind(&db.name)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(tables, 1, "llm_calls is still there");
    // What came back renders escaped in every format of a report.
    let report = tally_report::tabular::spend(
        &db.client,
        "2025-11-01",
        "2025-12-01",
        &["team".into(), "user".into(), "workflow".into()],
    )
    .await
    .unwrap();
    assert_eq!(report.sections[0].rows.len(), hostile.len());
    tally_tests::assert_report_renders_hostile_text_safely(
        &report.html(),
        &report.csv(),
        &report.table(),
    );
    stop.store(true, Ordering::SeqCst);
    worker.await.unwrap().unwrap();
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
    db.drop_database().await;
}

/// A column an operator added (or a migration run before a rolling upgrade) is noted, not
/// refused: the sink starts, its rows land, and the column takes its default.
#[tokio::test]
async fn a_column_the_sink_does_not_write_takes_its_default() {
    require_kafka();
    let db = TestDatabase::create("it_extra_column").await;
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(
        &server,
        &db.name,
        &Migration::embedded().unwrap(),
        &Topology::SingleNode,
    )
    .await
    .unwrap();
    db.client
        .query("ALTER TABLE llm_calls ADD COLUMN operator_note String DEFAULT 'added by ops'")
        .execute()
        .await
        .unwrap();
    sink::check_schema::<LlmCalls>(&db.client, &db.name, &AtomicBool::new(false))
        .await
        .unwrap();
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("extracol")),
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
    let records: Vec<EnrichedLlmCall> = (1..=3).map(enriched).collect();
    produce(&kafka, &records).await;
    let config = SinkConfig {
        group_id: unique_name("sink-group"),
        batch_max_wait_ms: 200,
        kafka: kafka.clone(),
        clickhouse: ClickHouseConfig {
            url: clickhouse_url(),
            database: db.name.clone(),
            ..ClickHouseConfig::default()
        },
        tables: vec!["llm_calls".into()],
        ..SinkConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(SinkStats::default());
    let worker = tokio::spawn(tally_sink::run_tables(config, stop.clone(), stats.clone()));
    for _ in 0..120 {
        if stats.rows.load(Ordering::Relaxed) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let notes: Vec<(String, String)> = db
        .client
        .query("SELECT event_id, operator_note FROM llm_calls FINAL ORDER BY event_id")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(
        notes,
        (1..=3)
            .map(|i| (format!("sink-{i}"), "added by ops".to_string()))
            .collect::<Vec<_>>()
    );
    stop.store(true, Ordering::SeqCst);
    worker.await.unwrap().unwrap();
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
    db.drop_database().await;
}

#[tokio::test]
async fn cluster_ddl_parses_on_clickhouse_and_a_server_without_the_cluster_refuses_it() {
    // ClickHouse here is one embedded server (chdb): it has no distributed-DDL worker and no
    // replication endpoint, so `ON CLUSTER` cannot run end to end (see README, "ClickHouse
    // clusters"). What can be checked is checked against the real server: its parser
    // accepts every statement `tally migrate --cluster` sends, as ON CLUSTER DDL with
    // Replicated engines, and a server that does not know the cluster refuses the migration
    // by name instead of creating tables on one node.
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    let cluster = Topology::Cluster("tally_cluster".into());
    let mut statements: Vec<String> = Migration::embedded()
        .unwrap()
        .iter()
        .flat_map(Migration::statements)
        .collect();
    statements.push("CREATE DATABASE IF NOT EXISTS `tally`".into());
    for statement in &statements {
        let placed = cluster.statement(statement).unwrap();
        let formatted: String = server
            .query("SELECT formatQuery(?)")
            .bind(&placed)
            .fetch_one()
            .await
            .unwrap_or_else(|e| panic!("ClickHouse's parser refused {placed}: {e}"));
        assert!(
            formatted.contains("ON CLUSTER tally_cluster"),
            "{formatted}"
        );
        if statement.contains("ENGINE = ") {
            assert!(
                formatted.contains("Replicated")
                    && formatted
                        .contains("'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"),
                "{formatted}"
            );
        }
    }
    let db = TestDatabase::create("it_cluster").await;
    let refused = migrate(&server, &db.name, &Migration::embedded().unwrap(), &cluster)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("tally_cluster"), "{refused}");
    let tables: u64 = db
        .client
        .query("SELECT count() FROM system.tables WHERE database = ?")
        .bind(&db.name)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(tables, 0, "nothing was created on the one node");
    db.drop_database().await;
}

/// 0007's `cost_per_deploy` and `cost_per_ticket` (the naive formulation: every deploy or
/// ticket joined to every call of its team, the window a condition inside `sumIf`) as views
/// `naive_cost_per_deploy` and `naive_cost_per_ticket`, the oracle of the prefix-sum views.
/// Two edits, each where 0007 left the answer to the order rows happened to arrive in: deploys
/// of one service and environment at the same instant are ordered by team and event id, and a
/// ticket's team, kind and estimate are those of its latest event with the greatest event id
/// (0009 fixes both so; see its header).
fn naive_attribution_views() -> Vec<String> {
    let migration = include_str!("../../../sql/migrations/0007_wide_sums.sql");
    let replace_once = |text: &str, from: &str, to: &str| {
        assert_eq!(text.matches(from).count(), 1, "0007 has {from:?} once");
        text.replace(from, to)
    };
    migration
        .split(";\n")
        .filter(|s| s.contains("VIEW cost_per_deploy") || s.contains("VIEW cost_per_ticket"))
        .map(|statement| {
            let s = statement
                .replace("VIEW cost_per_deploy", "VIEW naive_cost_per_deploy")
                .replace("VIEW cost_per_ticket", "VIEW naive_cost_per_ticket");
            if s.contains("naive_cost_per_deploy") {
                replace_once(
                    &s,
                    "ORDER BY occurred_at ASC\n",
                    "ORDER BY occurred_at ASC, team ASC, event_id ASC\n",
                )
            } else {
                let s = replace_once(
                    &s,
                    "argMax(team, occurred_at)",
                    "argMax(team, (occurred_at, event_id))",
                );
                let s = replace_once(
                    &s,
                    "argMax(kind, occurred_at)",
                    "argMax(kind, (occurred_at, event_id))",
                );
                replace_once(
                    &s,
                    "argMax(estimate_hours, occurred_at)",
                    "argMax(estimate_hours, (occurred_at, event_id))",
                )
            }
        })
        .collect()
}

/// The rows of a query, each as ClickHouse's text of the tuple, sorted.
async fn row_texts(client: &clickhouse::Client, sql: &str) -> Vec<String> {
    client
        .query(&format!(
            "SELECT toString(tuple(*)) AS row FROM ({sql}) ORDER BY row"
        ))
        .fetch_all()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The prefix-sum views (0009) give what the naive views give, row for row, on a seeded random
/// history that meets every boundary case (`tally_tests::attribution`), with the columns and
/// types of before; and the share is exact billionths.
#[tokio::test]
async fn attribution_views_equal_the_naive_formulation_on_a_random_history() {
    use tally_sink::rows::{DeployRow, LlmCallRow, TicketRow};
    let db = TestDatabase::create("it_attribution_oracle").await;
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(
        &server,
        &db.name,
        &Migration::embedded().unwrap(),
        &Topology::SingleNode,
    )
    .await
    .unwrap();
    for view in naive_attribution_views() {
        db.client.query(&view).execute().await.unwrap();
    }
    let history = tally_tests::attribution::history(7, 3_000, 120, 40);
    // In several inserts: several parts, so only FINAL sees each record once.
    for chunk in history.calls.chunks(700) {
        let mut insert = db.client.insert::<LlmCallRow>("llm_calls").await.unwrap();
        for (i, call) in chunk.iter().enumerate() {
            insert
                .write(&LlmCallRow::new(call.clone(), 0, i as i64))
                .await
                .unwrap();
        }
        insert.end().await.unwrap();
    }
    for chunk in history.deploys.chunks(50) {
        let mut insert = db.client.insert::<DeployRow>("deploys").await.unwrap();
        for deploy in chunk {
            insert
                .write(&DeployRow::from(deploy.clone()))
                .await
                .unwrap();
        }
        insert.end().await.unwrap();
    }
    for chunk in history.tickets.chunks(30) {
        let mut insert = db.client.insert::<TicketRow>("tickets").await.unwrap();
        for ticket in chunk {
            insert
                .write(&TicketRow::from(ticket.clone()))
                .await
                .unwrap();
        }
        insert.end().await.unwrap();
    }

    // Same columns, same types.
    let describe = |sql: String| {
        let client = db.client.clone();
        async move {
            let text = client
                .query(&format!("DESCRIBE ({sql})"))
                .fetch_bytes("TSV")
                .unwrap()
                .collect()
                .await
                .unwrap();
            // name and type of each column
            String::from_utf8(text.to_vec())
                .unwrap()
                .lines()
                .map(|l| l.split('\t').take(2).collect::<Vec<_>>().join(" "))
                .collect::<Vec<_>>()
        }
    };
    let ticket_call = "cost_per_ticket(unattributed_share = 0.5, loaded_hourly_rate_usd = 120)";
    assert_eq!(
        describe("SELECT * FROM cost_per_deploy".into()).await,
        describe("SELECT * FROM naive_cost_per_deploy".into()).await
    );
    assert_eq!(
        describe(format!("SELECT * FROM {ticket_call}")).await,
        describe(format!("SELECT * FROM naive_{ticket_call}")).await
    );

    // Row for row.
    let deploys = row_texts(&db.client, "SELECT * FROM cost_per_deploy").await;
    assert_eq!(
        deploys,
        row_texts(&db.client, "SELECT * FROM naive_cost_per_deploy").await
    );
    for share in ["0", "0.1", "0.5", "0.333333333", "1"] {
        let call = format!("(unattributed_share = {share}, loaded_hourly_rate_usd = 120)");
        assert_eq!(
            row_texts(&db.client, &format!("SELECT * FROM cost_per_ticket{call}")).await,
            row_texts(
                &db.client,
                &format!("SELECT * FROM naive_cost_per_ticket{call}")
            )
            .await,
            "share {share}"
        );
    }

    // The history meets the cases it is for (so equal figures say something).
    let count = |sql: &str| {
        let client = db.client.clone();
        let sql = sql.to_string();
        async move { client.query(&sql).fetch_one::<u64>().await.unwrap() }
    };
    for (case, sql) in [
        ("deploys", "SELECT count() FROM cost_per_deploy"),
        ("a call at the very instant of its team's deploy", "SELECT count() FROM cost_per_deploy AS d, llm_calls AS c WHERE c.tenant = d.tenant AND c.team = d.team AND c.occurred_at = d.deployed_at"),
        ("a deploy at its previous deploy's instant", "SELECT countIf(previous_deploy_at = deployed_at) FROM cost_per_deploy"),
        ("a deploy whose previous deploy was another team's", "SELECT count() FROM cost_per_deploy AS d, deploys AS p WHERE p.tenant = d.tenant AND p.service = d.service AND p.environment = d.environment AND p.occurred_at = d.previous_deploy_at AND p.team != d.team AND p.status = 'succeeded'"),
        ("a deploy with unpriced calls", "SELECT countIf(team_unpriced_calls > 0) FROM cost_per_deploy"),
        ("a deploy with no calls", "SELECT countIf(team_calls = 0) FROM cost_per_deploy"),
        ("a deploy with tagged spend", "SELECT countIf(ticket_cost_nanos > 0) FROM cost_per_deploy"),
        ("a ticket with tagged and untagged spend", "SELECT countIf(tagged_cost_nanos > 0 AND unattributed_team_cost_nanos > 0) FROM cost_per_ticket(unattributed_share = 0.5, loaded_hourly_rate_usd = 1)"),
        ("a ticket closed before it opened", "SELECT countIf(closed_at < opened_at) FROM cost_per_ticket(unattributed_share = 0.5, loaded_hourly_rate_usd = 1)"),
        ("a ticket never opened", "SELECT countIf(opened_at = toDateTime64(0, 6, 'UTC')) FROM cost_per_ticket(unattributed_share = 0.5, loaded_hourly_rate_usd = 1)"),
        ("a call at a ticket's opening or closing", "SELECT count() FROM cost_per_ticket(unattributed_share = 0.5, loaded_hourly_rate_usd = 1) AS t, llm_calls AS c WHERE c.tenant = t.tenant AND c.team = t.team AND c.ticket_id IS NULL AND (c.occurred_at = t.opened_at OR c.occurred_at = t.closed_at)"),
    ] {
        assert!(count(sql).await > 0, "the history has {case}");
    }

    // The share is a decimal: 0.1 is exactly 100,000,000 billionths.
    assert_eq!(
        count(
            "SELECT countIf(attributed_cost_nanos != tagged_cost_nanos + intDiv(unattributed_team_cost_nanos * 100000000, 1000000000))
             FROM cost_per_ticket(unattributed_share = 0.1, loaded_hourly_rate_usd = 1)"
        )
        .await,
        0
    );
    db.drop_database().await;
}
