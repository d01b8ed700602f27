//! Ingest throughput, in LLM calls per second, for 1, 100 and 1000 calls per request.
//!
//! - `ingest_cpu`: parse, validate, normalise and Avro-encode a request body, no I/O, on one
//!   thread: its time per call is CPU time per call.
//! - `ingest_http_kafka`: the whole service: HTTP POST → 202 after the real Kafka broker
//!   acknowledged every record (`scripts/services.sh start`, or `TALLY_KAFKA_BROKERS`), with
//!   32 concurrent clients. Its time is wall time.
//! - `ingest_http_kafka_service_cpu`: the same requests, but the time criterion reports is
//!   the CPU time the service spent, so its throughput is calls per CPU-second of the service
//!   ("per core"). The service is everything in this process but the clients: the server's
//!   own tokio runtime (threads `ingest-server`), rdkafka's and librdkafka's threads, and any
//!   thread not named below. What is taken out is the client runtime's threads
//!   (`bench-client`: reqwest, the HTTP client side) and the main thread (criterion, making
//!   the bodies before the clock starts). The Kafka broker runs in its own process and is not
//!   counted, though it shares the cores.
//!
//! The allocator is mimalloc, as in the `tally` binary that runs the service.
//!
//! Run: `cargo bench -p tally-ingest --bench ingest`
use std::sync::atomic::{AtomicU64, Ordering};
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

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEY: &str = "bench-key";
const CLIENTS: usize = 32;
const CALLS_PER_REQUEST: [usize; 3] = [1, 100, 1000];
/// Thread name of the client runtime, whose CPU is not the service's.
const CLIENT_THREADS: &str = "bench-client";

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
    for per_request in CALLS_PER_REQUEST {
        let request = body(0, per_request);
        group.throughput(Throughput::Elements(per_request as u64));
        group.bench_with_input(
            BenchmarkId::new("calls_per_request", per_request),
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

/// CPU time of this process and of its threads, from the kernel's precise accounting.
mod cpu {
    use std::time::Duration;

    /// CPU time of the whole process, threads that have ended included.
    pub fn process() -> Duration {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec to write to.
        let status = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
        assert_eq!(status, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID)");
        Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
    }

    /// CPU time of the main thread and of the threads whose name starts with `prefix`:
    /// the first field of `/proc/self/task/<tid>/schedstat`, nanoseconds on a CPU.
    pub fn main_and_threads_named(prefix: &str) -> Duration {
        let main = std::process::id().to_string();
        let mut total = Duration::ZERO;
        for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
            let path = task.expect("a task").path();
            let is_main = path.file_name().is_some_and(|tid| *tid == *main);
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            if !is_main && !name.starts_with(prefix) {
                continue;
            }
            // A thread may end between listing and reading: it then counts as the service's.
            let Ok(schedstat) = std::fs::read_to_string(path.join("schedstat")) else {
                continue;
            };
            let nanos: u64 = schedstat
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .expect("schedstat starts with nanoseconds on a CPU");
            total += Duration::from_nanos(nanos);
        }
        total
    }

    /// CPU time of the service: the process but the clients and the main thread.
    pub fn service(client_threads: &str) -> Duration {
        // Read the part first: what the clients spend between the two reads counts against
        // the service, never for it.
        let clients = main_and_threads_named(client_threads);
        process().saturating_sub(clients)
    }
}

/// What a benchmark iteration reports as its time.
#[derive(Clone, Copy)]
enum Clock {
    Wall,
    ServiceCpu,
}

/// The ingest server on its own runtime, with fresh topics on the real broker.
fn start_server(server_runtime: &tokio::runtime::Runtime) -> String {
    let brokers = std::env::var("TALLY_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let prefix = format!("bench-{}.", std::process::id());
    let kafka = KafkaConfig {
        brokers,
        topic_prefix: prefix,
        ..KafkaConfig::default()
    };
    server_runtime.block_on(async {
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
    })
}

/// Sends `iterations` requests of `per_request` fresh calls from [`CLIENTS`] concurrent
/// clients and returns the time they took on `clock`.
async fn send_requests(
    client: reqwest::Client,
    url: String,
    next_id: Arc<AtomicU64>,
    iterations: u64,
    per_request: usize,
    clock: Clock,
) -> Duration {
    // Bodies are made before the clock starts, each with fresh ids, so every call is produced
    // (none is a duplicate) and the client's JSON work is not timed.
    let mut bodies: Vec<Vec<String>> = vec![Vec::new(); CLIENTS];
    for i in 0..iterations as usize {
        let start = next_id.fetch_add(per_request as u64, Ordering::Relaxed);
        bodies[i % CLIENTS].push(body(start, per_request));
    }
    let started = Instant::now();
    let service_cpu = cpu::service(CLIENT_THREADS);
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
    match clock {
        Clock::Wall => started.elapsed(),
        Clock::ServiceCpu => cpu::service(CLIENT_THREADS).saturating_sub(service_cpu),
    }
}

fn ingest_http_kafka(c: &mut Criterion) {
    // Two runtimes, so that the server's threads and the clients' can be told apart.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("ingest-server")
        .enable_all()
        .build()
        .unwrap();
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name(CLIENT_THREADS)
        .enable_all()
        .build()
        .unwrap();
    let url = start_server(&server_runtime);
    let client = reqwest::Client::new();
    let next_id = Arc::new(AtomicU64::new(0));

    for (group_name, clock) in [
        ("ingest_http_kafka", Clock::Wall),
        ("ingest_http_kafka_service_cpu", Clock::ServiceCpu),
    ] {
        let mut group = c.benchmark_group(group_name);
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(10));
        for per_request in CALLS_PER_REQUEST {
            group.throughput(Throughput::Elements(per_request as u64));
            group.bench_function(BenchmarkId::new("calls_per_request", per_request), |b| {
                b.to_async(&client_runtime).iter_custom(|iterations| {
                    send_requests(
                        client.clone(),
                        url.clone(),
                        next_id.clone(),
                        iterations,
                        per_request,
                        clock,
                    )
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, ingest_cpu, ingest_http_kafka);
criterion_main!(benches);
