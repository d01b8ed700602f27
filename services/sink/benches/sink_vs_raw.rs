//! End-to-end harness: the sink's rows/s into the real ClickHouse, next to the raw insert rate
//! of the same rows measured in the same run.
//!
//! 1. `sink`: 100,000 enriched calls produced to Kafka, then `tally sink`'s code (consume,
//!    decode, batch, insert with deduplication tokens, commit) until all are in `llm_calls`.
//! 2. `clickhouse crate`: the same rows inserted directly (RowBinary over HTTP, LZ4), one batch.
//! 3. `raw HTTP RowBinary`: the same rows as ClickHouse itself serialises them
//!    (`SELECT ... FORMAT RowBinary`), POSTed back as `INSERT ... FORMAT RowBinary`.
//!
//! Needs Kafka and ClickHouse (`scripts/services.sh start`). Run:
//! `cargo bench -p tally-sink --bench sink_vs_raw`
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use tally_contract::clickhouse::ClickHouseConfig;
use tally_contract::encode;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::records::EnrichedLlmCall;
use tally_contract::topics::Topic;
use tally_sink::migrate::{migrate, Migration};
use tally_sink::rows::LlmCallRow;
use tally_sink::sink::SinkStats;
use tally_sink::SinkConfig;

const ROWS: usize = 100_000;

fn records() -> Vec<EnrichedLlmCall> {
    let template: EnrichedLlmCall =
        serde_json::from_str(include_str!("../../../tests/golden/EnrichedLlmCall.json")).unwrap();
    (0..ROWS)
        .map(|i| {
            let mut e = template.clone();
            e.call.event_id = format!("bench-{i}");
            e.call.team = format!("team-{}", i % 20);
            e.call.occurred_at += i as i64 * 1_000;
            e
        })
        .collect()
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn rate(rows: usize, elapsed: Duration) -> String {
    format!(
        "{:>9.0} rows/s ({rows} rows in {:.2} s)",
        rows as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    )
}

#[tokio::main]
async fn main() {
    let url =
        std::env::var("TALLY_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let brokers = std::env::var("TALLY_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let run = std::process::id();
    let server = clickhouse::Client::default().with_url(&url);
    let databases = [
        format!("bench_sink_{run}"),
        format!("bench_crate_{run}"),
        format!("bench_raw_{run}"),
    ];
    for db in &databases {
        migrate(
            &server,
            db,
            &Migration::embedded().unwrap(),
            &tally_sink::migrate::Topology::SingleNode,
        )
        .await
        .expect("ClickHouse answers (scripts/services.sh start)");
    }
    let records = records();

    // 1. The sink, from Kafka.
    let kafka = KafkaConfig {
        brokers,
        topic_prefix: format!("bench-sink-{run}."),
        ..KafkaConfig::default()
    };
    create_topics(
        &kafka,
        TopicLayout {
            partitions: 6,
            replication_factor: 1,
        },
    )
    .await
    .expect("Kafka answers");
    let producer: FutureProducer = kafka
        .client_config()
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let topic = kafka.topic(Topic::LlmCallsEnriched);
    let mut deliveries = Vec::with_capacity(ROWS);
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
    let config = SinkConfig {
        group_id: format!("bench-{run}"),
        tables: vec!["llm_calls".into()],
        batch_max_bytes: std::env::var("MAXB")
            .map(|v| v.parse().unwrap())
            .unwrap_or(16 << 20),
        kafka: kafka.clone(),
        clickhouse: ClickHouseConfig {
            url: url.clone(),
            database: databases[0].clone(),
            ..ClickHouseConfig::default()
        },
        ..SinkConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(SinkStats::default());
    let started = Instant::now();
    let worker = tokio::spawn(tally_sink::run_tables(config, stop.clone(), stats.clone()));
    while stats.rows.load(Ordering::Relaxed) < ROWS as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sink_elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    worker.await.unwrap().unwrap();

    // 2. The clickhouse crate directly, the same rows.
    let rows: Vec<LlmCallRow> = records
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, r)| LlmCallRow::new(r, 0, i as i64))
        .collect();
    let client = server.clone().with_database(&databases[1]);
    let started = Instant::now();
    let mut insert = client.insert::<LlmCallRow>("llm_calls").await.unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
    let crate_elapsed = started.elapsed();

    // 3. Raw HTTP RowBinary of the same rows.
    let columns = <LlmCallRow as clickhouse::Row>::COLUMN_NAMES.join(", ");
    let http = reqwest::Client::new();
    let body = http
        .post(format!("{url}/?database={}", databases[0]))
        .body(format!("SELECT {columns} FROM llm_calls FORMAT RowBinary"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let started = Instant::now();
    let insert = percent_encode(&format!(
        "INSERT INTO llm_calls ({columns}) FORMAT RowBinary"
    ));
    let response = http
        .post(format!("{url}/?database={}&query={insert}", databases[2]))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{}",
        response.text().await.unwrap()
    );
    let raw_elapsed = started.elapsed();

    let count: u64 = server
        .clone()
        .with_database(&databases[2])
        .query("SELECT count() FROM llm_calls")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(count, ROWS as u64);
    println!(
        "sink (Kafka -> ClickHouse, batches of 100k / 1 s): {}",
        rate(ROWS, sink_elapsed)
    );
    println!(
        "clickhouse crate insert, same rows:                {}",
        rate(ROWS, crate_elapsed)
    );
    println!(
        "raw HTTP RowBinary insert ({} MB):               {}",
        body.len() / 1_000_000,
        rate(ROWS, raw_elapsed)
    );
    for db in &databases {
        server
            .query(&format!("DROP DATABASE {db}"))
            .execute()
            .await
            .unwrap();
    }
    tally_tests::delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
}
