//! End-to-end harness: detection latency against the real broker. Time from producing the
//! call that makes a loop (the 6th identical attempt of a session) to its `open` signal being
//! readable (`read_committed`) on `tally.loop_signals.v1`, through enrich and detect with
//! their Kafka transactions, while healthy traffic flows alongside. Reports p50/p90/p99/max
//! for the default commit interval (500 ms) and for 100 ms.
//!
//! Needs Kafka (`scripts/services.sh start-kafka`). Run:
//! `cargo bench -p tally-processor --bench detect_latency`
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use tally_accounting::enrich::Enricher;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::records::{LlmCall, LoopSignal, SignalState};
use tally_contract::topics::{llm_call_key, Topic};
use tally_contract::{decode, encode};
use tally_processor::{pipeline, ProcessorConfig};

const LOOPS: usize = 300;
/// Healthy calls produced between two loops.
const HEALTHY_PER_LOOP: usize = 20;

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

fn call(id: String, session: String, prompt: String) -> LlmCall {
    let mut call = LlmCall::new(&id, now_micros(), "acme", "bench", "openai", "gpt-4o-mini");
    call.team = format!(
        "team-{}",
        session.len() % 7 + session.bytes().last().unwrap_or(0) as usize % 5
    );
    call.received_at = call.occurred_at;
    call.session_id = Some(session);
    call.agent = Some("agent".into());
    call.input_tokens = 3_000;
    call.output_tokens = 200;
    call.prompt_fingerprint = Some(prompt);
    call
}

async fn send(producer: &FutureProducer, topic: &str, call: &LlmCall) {
    let payload = encode(call).unwrap();
    producer
        .send(
            FutureRecord::to(topic)
                .key(&llm_call_key(call))
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

async fn run(commit_interval_ms: u64) {
    let kafka = KafkaConfig {
        brokers: std::env::var("TALLY_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
        topic_prefix: format!("bench-latency-{}-{commit_interval_ms}.", std::process::id()),
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
    .unwrap();
    let config = ProcessorConfig {
        group_id: format!("{}group", kafka.topic_prefix),
        instance_id: "bench".into(),
        commit_interval_ms,
        kafka: kafka.clone(),
        ..ProcessorConfig::default()
    };
    let enricher = Enricher::new(config.catalogue().unwrap(), config.carbon.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stages = tally_processor::spawn_stages(
        config,
        enricher,
        stop.clone(),
        Arc::new(pipeline::Stats::default()),
    );

    let opened: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", format!("{}reader", kafka.topic_prefix))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&kafka.topic(Topic::LoopSignals)])
        .unwrap();
    let reader = {
        let opened = opened.clone();
        tokio::spawn(async move {
            loop {
                let message = consumer.recv().await.unwrap();
                let signal: LoopSignal = decode(message.payload().unwrap()).unwrap();
                if signal.state == SignalState::Open {
                    if let Some(session) = signal.session_id {
                        opened
                            .lock()
                            .unwrap()
                            .entry(session)
                            .or_insert_with(Instant::now);
                    }
                }
            }
        })
    };

    let producer: FutureProducer = kafka
        .client_config()
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let topic = kafka.topic(Topic::LlmCalls);
    // Let the stages join their groups before the clock starts.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut triggered: HashMap<String, Instant> = HashMap::new();
    let started = Instant::now();
    for n in 0..LOOPS {
        let session = format!("loop-{n}");
        for attempt in 0..5 {
            send(
                &producer,
                &topic,
                &call(
                    format!("{session}-{attempt}"),
                    session.clone(),
                    "same".into(),
                ),
            )
            .await;
        }
        for h in 0..HEALTHY_PER_LOOP {
            let healthy = format!("ok-{n}-{}", h % 4);
            send(
                &producer,
                &topic,
                &call(format!("{healthy}-{h}"), healthy, format!("p-{n}-{h}")),
            )
            .await;
        }
        let trigger = call(format!("{session}-5"), session.clone(), "same".into());
        triggered.insert(session, Instant::now());
        send(&producer, &topic, &trigger).await;
        if n % 50 == 49 {
            println!(
                "  {} loops produced in {:.1} s",
                n + 1,
                started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while opened.lock().unwrap().len() < LOOPS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    reader.abort();
    for stage in stages {
        stage.join().unwrap().unwrap();
    }
    let mut topics: Vec<String> = Topic::ALL.iter().map(|t| kafka.topic(*t)).collect();
    topics.extend(
        ["tally.processor_state.v1", "tally.detector_state.v1"]
            .map(|base| format!("{}{base}", kafka.topic_prefix)),
    );
    tally_tests::delete_topics(topics);
    let opened = opened.lock().unwrap();
    let mut latencies: Vec<Duration> = triggered
        .iter()
        .filter_map(|(session, at)| {
            opened
                .get(session)
                .map(|seen| seen.saturating_duration_since(*at))
        })
        .collect();
    latencies.sort();
    let calls = LOOPS * (6 + HEALTHY_PER_LOOP);
    println!(
        "commit_interval_ms = {commit_interval_ms}: {} of {LOOPS} loops detected ({calls} calls in {:.1} s); latency p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        started.elapsed().as_secs_f64(),
        percentile(&latencies, 0.5).as_millis(),
        percentile(&latencies, 0.9).as_millis(),
        percentile(&latencies, 0.99).as_millis(),
        latencies.last().unwrap().as_millis(),
    );
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no options.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "detection latency: {LOOPS} retry storms, {HEALTHY_PER_LOOP} healthy calls between two"
    );
    for interval in [500, 100] {
        runtime.block_on(run(interval));
    }
}
