//! Ingest throughput, in events per second, for 1 and 1000 events per request.
//!
//! - `ingest_cpu`: parse, validate, normalise and Avro-encode a request body, no I/O.
//! - `ingest_http_kafka`: the whole service: HTTP POST → 202 after the real Kafka broker
//!   acknowledged every record (`scripts/services.sh start`, or `TALLY_KAFKA_BROKERS`),
//!   with 32 concurrent clients.
//!
//! Run: `cargo bench -p tally-ingest --bench ingest`
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::{json, Value};
use tally_contract::encode;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_ingest::auth::{hash_key, Authenticator};
use tally_ingest::body::parse_records;
use tally_ingest::llm_call::{llm_call_from_json, Context};
use tally_ingest::{ApiKeyConfig, IngestConfig, Server};

const KEY: &str = "bench-key";
const CLIENTS: usize = 32;

fn key() -> ApiKeyConfig {
    ApiKeyConfig {
        name: "bench".into(),
        sha256: hash_key(KEY),
        tenant: "acme".into(),
        team: Some("payments".into()),
        any_team: false,
        rate_limit_per_sec: u32::MAX,
        github_webhook_secret: None,
    }
}

/// A realistic call: an agent step with cached input, a usage object and a prompt to hash.
fn call(n: u64) -> Value {
    json!({
        "event_id": format!("bench-{n}"), "occurred_at": 1_795_428_000_000u64 + n,
        "provider": "anthropic", "model": "claude-sonnet-4-5", "session_id": format!("s-{}", n % 97),
        "agent": "planner", "step": n % 50, "workflow": "refunds", "user": "u-1",
        "usage": {"input_tokens": 1200, "output_tokens": 350, "cache_read_input_tokens": 40000,
                  "cache_creation_input_tokens": 800},
        "messages": [{"role": "user", "content": "Find the order and refund it if eligible."}],
        "tool_name": "search_orders", "tags": {"interactive": "false"}
    })
}

fn body(start: u64, count: usize) -> String {
    let calls: Vec<Value> = (0..count as u64).map(|i| call(start + i)).collect();
    Value::Array(calls).to_string()
}

fn ingest_cpu(c: &mut Criterion) {
    let auth = Authenticator::new(&[key()]);
    let principal = auth.bearer(Some(&format!("Bearer {KEY}"))).unwrap();
    let limits = tally_ingest::limits::RecordLimits::default();
    let context = Context {
        principal: &principal,
        limits: &limits,
        received_at: 1_795_428_000_000_000,
        latest_occurred_at: i64::MAX,
    };
    let mut group = c.benchmark_group("ingest_cpu");
    for per_request in [1usize, 1000] {
        let request = body(0, per_request);
        group.throughput(Throughput::Elements(per_request as u64));
        group.bench_with_input(
            BenchmarkId::new("events_per_request", per_request),
            &request,
            |b, request| {
                b.iter(|| {
                    let records = parse_records(request.as_bytes()).unwrap();
                    let mut bytes = 0;
                    for record in records {
                        let call = llm_call_from_json(record, &context).unwrap();
                        bytes += encode(&call).unwrap().len();
                    }
                    bytes
                })
            },
        );
    }
    group.finish();
}

fn ingest_http_kafka(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let brokers = std::env::var("TALLY_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let prefix = format!("bench-{}.", std::process::id());
    let kafka = KafkaConfig {
        brokers,
        topic_prefix: prefix,
        ..KafkaConfig::default()
    };
    let url = runtime.block_on(async {
        create_topics(&kafka, TopicLayout::default())
            .await
            .expect("Kafka is reachable (scripts/services.sh start)");
        let config = IngestConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            api_keys: vec![key()],
            dedup_max_entries: 100_000_000,
            kafka: kafka.clone(),
            ..IngestConfig::default()
        };
        let server = Server::bind(config).await.unwrap();
        let url = format!("http://{}/v1/llm-calls", server.local_addr());
        tokio::spawn(server.serve(std::future::pending()));
        url
    });
    let client = reqwest::Client::new();
    let next_id = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let mut group = c.benchmark_group("ingest_http_kafka");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for per_request in [1usize, 1000] {
        group.throughput(Throughput::Elements(per_request as u64));
        group.bench_function(BenchmarkId::new("events_per_request", per_request), |b| {
            b.to_async(&runtime).iter_custom(|iterations| {
                let client = client.clone();
                let url = url.clone();
                let next_id = next_id.clone();
                async move {
                    // Bodies are made before the clock starts, each with fresh ids, so every
                    // event is produced (none is a duplicate) and the client's JSON work is
                    // not timed.
                    let mut bodies: Vec<Vec<String>> = vec![Vec::new(); CLIENTS];
                    for i in 0..iterations as usize {
                        let start = next_id
                            .fetch_add(per_request as u64, std::sync::atomic::Ordering::Relaxed);
                        bodies[i % CLIENTS].push(body(start, per_request));
                    }
                    let started = Instant::now();
                    let mut clients = Vec::new();
                    for share in bodies {
                        let (client, url) = (client.clone(), url.clone());
                        clients.push(tokio::spawn(async move {
                            for request in share {
                                let response = client
                                    .post(&url)
                                    .bearer_auth(KEY)
                                    .header("content-type", "application/json")
                                    .body(request)
                                    .send()
                                    .await
                                    .unwrap();
                                assert_eq!(response.status().as_u16(), 202);
                            }
                        }));
                    }
                    for client in clients {
                        client.await.unwrap();
                    }
                    started.elapsed()
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ingest_cpu, ingest_http_kafka);
criterion_main!(benches);
