//! `tally process` against the real broker: 100,000 generated calls with known totals, the
//! processor killed with SIGKILL mid-stream and restarted, and two instances in one group
//! with one killed: every call is enriched exactly once, the totals are exact, the parts of
//! the spend windows add up to the same totals at every size and dimension (no part twice),
//! and each budget threshold alerts exactly once.
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use std::collections::BTreeMap;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};

use tally_accounting::carbon::CarbonConfig;
use tally_accounting::enrich::Enricher;
use tally_accounting::pricing::Catalogue;
use tally_contract::records::{
    Alert, AlertKind, CallStatus, EnrichedLlmCall, LlmCall, ServiceTier, SpendDimension,
    SpendWindow,
};
use tally_contract::topics::{llm_call_key, Topic};
use tally_contract::{decode, encode};
use tally_tests::{delete_topics, kafka_config, require_kafka, unique_name};

const MODELS: [(&str, &str); 6] = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("gcp.gemini", "gemini-2.5-pro"),
    ("openai", "o3"),
    ("acme", "mystery-model"),
];
/// 2025-11-23T10:20:00Z: the calls are 1 ms apart, so even the backlog a restart leaves
/// (read partition by partition) stays within the default 5 minutes of allowed lateness.
const BASE_MICROS: i64 = 1_763_893_200_000_000;
/// One call per team three days later moves every partition's watermark past all windows.
const TEAMS: u64 = 7;

const REGIONS: [Option<&str>; 5] = [
    Some("us-east-1"),
    Some("europe-west4"),
    Some("DE"),
    None,
    Some("mars-1"),
];

/// A deterministic stream of calls (a linear congruential generator, seeded).
fn generate(count: usize, seed: u64) -> Vec<LlmCall> {
    let template: LlmCall = tally_tests::fixture("LlmCall");
    let mut state = seed;
    let mut next = move |bound: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % bound
    };
    (0..count)
        .map(|i| {
            let mut call = template.clone();
            let (provider, model) = MODELS[next(MODELS.len() as u64) as usize];
            call.event_id = format!("gen-{seed}-{i}");
            call.occurred_at = BASE_MICROS + i as i64 * 1_000;
            call.provider = provider.into();
            call.model = model.into();
            call.response_model = None;
            call.team = format!("team-{}", next(TEAMS));
            call.session_id = Some(format!("s-{}", next(500)));
            call.region = REGIONS[next(REGIONS.len() as u64) as usize].map(String::from);
            call.service_tier = ServiceTier::ALL[next(4) as usize];
            call.input_tokens = 1 + next(300_000) as i64;
            call.cache_read_tokens = next(call.input_tokens as u64 / 2 + 1) as i64;
            call.cache_write_tokens =
                next((call.input_tokens - call.cache_read_tokens) as u64 / 4 + 1) as i64;
            call.output_tokens = next(5_000) as i64;
            call.reasoning_tokens = next(call.output_tokens as u64 / 3 + 1) as i64;
            call.status = if next(20) == 0 {
                CallStatus::Error
            } else {
                CallStatus::Ok
            };
            call
        })
        .collect()
}

/// A last call per team, three days later, so every window of the stream closes.
fn sentinels(template: &LlmCall) -> Vec<LlmCall> {
    (0..TEAMS)
        .map(|team| {
            let mut call = template.clone();
            call.event_id = format!("sentinel-{team}");
            call.team = format!("team-{team}");
            call.occurred_at = BASE_MICROS + 3 * 86_400_000_000;
            call
        })
        .collect()
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    calls: u64,
    unpriced: u64,
    cost_nanos: i128,
    input_tokens: i128,
    energy_uwh: i128,
    co2e_ug: i128,
}

impl Totals {
    fn add(&mut self, enriched: &EnrichedLlmCall) {
        self.calls += 1;
        self.unpriced += u64::from(enriched.unpriced);
        self.cost_nanos += enriched.cost_total_nanos.unwrap_or(0) as i128;
        self.input_tokens += enriched.call.input_tokens as i128;
        self.energy_uwh += enriched.energy_uwh_central as i128;
        self.co2e_ug += enriched.co2e_ug_central as i128;
    }
}

fn expected_totals(calls: &[LlmCall]) -> Totals {
    let enricher = Enricher::new(Catalogue::shipped(), CarbonConfig::default()).unwrap();
    let mut totals = Totals::default();
    for call in calls {
        totals.add(&enricher.enrich(call.clone(), 0).unwrap());
    }
    totals
}

async fn produce(kafka: &KafkaConfig, calls: &[LlmCall]) {
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .unwrap();
    let topic = kafka.topic(Topic::LlmCalls);
    for chunk in calls.chunks(10_000) {
        let mut deliveries = Vec::with_capacity(chunk.len());
        for call in chunk {
            let payload = encode(call).unwrap();
            let key = llm_call_key(call);
            let delivery = producer
                .send_result(FutureRecord::to(&topic).key(&key).payload(&payload))
                .unwrap_or_else(|(e, _)| panic!("enqueue: {e}"));
            deliveries.push(delivery);
        }
        for delivery in deliveries {
            delivery
                .await
                .unwrap()
                .unwrap_or_else(|(e, _)| panic!("delivery: {e}"));
        }
    }
}

/// A budget small enough that all three thresholds fire early in the stream.
const BUDGET_TOML: &str = r#"
[[budgets]]
name = "llm"
tenant = "acme"
team = "team-0"
period = "month"
amount_usd = "100"
burn_rate_alert = false
"#;

/// Where the restarted processor serves its metrics.
const METRICS: &str = "127.0.0.1:19464";

struct Processor {
    child: Child,
}

impl Processor {
    fn start(kafka: &KafkaConfig, group: &str, instance: &str) -> Processor {
        Processor::start_with_metrics(kafka, group, instance, None)
    }

    fn start_with_metrics(
        kafka: &KafkaConfig,
        group: &str,
        instance: &str,
        metrics: Option<&str>,
    ) -> Processor {
        let config = std::env::temp_dir().join(format!("{group}.toml"));
        std::fs::write(&config, BUDGET_TOML).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
        if let Some(address) = metrics {
            command.env("TALLY__METRICS_LISTEN", address);
        }
        let child = command
            .arg("process")
            .arg("--config")
            .arg(&config)
            .env("TALLY_KAFKA_BROKERS", &kafka.brokers)
            .env("TALLY__KAFKA__TOPIC_PREFIX", &kafka.topic_prefix)
            .env("TALLY__GROUP_ID", group)
            .env("TALLY__INSTANCE_ID", instance)
            .env("TALLY__COMMIT_INTERVAL_MS", "200")
            .env("TALLY__MAX_BATCH", "5000")
            .env("TALLY__TRANSACTION_TIMEOUT_MS", "10000")
            .env("TALLY__SESSION_TIMEOUT_MS", "6000")
            .env(
                "TALLY_LOG",
                std::env::var("TALLY_TEST_PROCESSOR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("tally process starts");
        Processor { child }
    }

    /// SIGKILL: no shutdown, no last commit.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads committed enriched calls, calling `on_progress` with the count so far, until `count`
/// arrived and nothing more arrives for `settle`.
async fn read_enriched(
    kafka: &KafkaConfig,
    count: usize,
    settle: Duration,
    mut on_progress: impl FnMut(usize),
) -> (Totals, usize) {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", unique_name("reader"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer
        .subscribe(&[&kafka.topic(Topic::LlmCallsEnriched)])
        .unwrap();
    let mut totals = Totals::default();
    let mut ids = HashSet::new();
    let mut duplicates = 0;
    let started = Instant::now();
    loop {
        let wait = if ids.len() >= count {
            settle
        } else {
            Duration::from_secs(120)
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) if ids.len() >= count => break,
            Err(_) => panic!(
                "only {} of {count} enriched calls after {:?}",
                ids.len(),
                started.elapsed()
            ),
            Ok(message) => {
                let message = message.unwrap();
                let enriched: EnrichedLlmCall = decode(message.payload().unwrap()).unwrap();
                if !ids.insert(enriched.call.event_id.clone()) {
                    duplicates += 1;
                }
                totals.add(&enriched);
                on_progress(ids.len());
            }
        }
    }
    (totals, duplicates)
}

/// Topics, the calls' expected totals and the sentinel calls; the first half of the calls is
/// produced now and the second half while the processors run, so a kill lands mid-stream.
/// The sentinels are produced once every call is enriched, so they come last on every
/// partition and close every window.
async fn setup(
    count: usize,
    seed: u64,
) -> (
    KafkaConfig,
    Totals,
    Vec<LlmCall>,
    tokio::task::JoinHandle<()>,
) {
    require_kafka();
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("eo")),
        ..kafka_config()
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
    let calls = generate(count, seed);
    let expected = expected_totals(&calls);
    let last = sentinels(&calls[0]);
    assert!(
        expected.unpriced > 0 && expected.unpriced < count as u64,
        "the stream mixes priced and unknown models"
    );
    let second_half = calls[count / 2..].to_vec();
    produce(&kafka, &calls[..count / 2]).await;
    let background = kafka.clone();
    let rest = tokio::spawn(async move {
        for chunk in second_half.chunks(5_000) {
            produce(&background, chunk).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (kafka, expected, last, rest)
}

/// Spend window parts (each window's totals are the sum of its parts) and alerts, read until the
/// daily model windows add up to `windowed` (or two minutes pass), then for a few seconds more
/// so that a duplicate or a stray revision would show.
async fn read_windows_and_alerts(
    kafka: &KafkaConfig,
    windowed: &Totals,
) -> (Vec<SpendWindow>, Vec<Alert>) {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", unique_name("window-reader"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    consumer
        .subscribe(&[
            &kafka.topic(Topic::SpendWindows),
            &kafka.topic(Topic::Alerts),
        ])
        .unwrap();
    // Each part once, by its identity (a window's key and the transaction that emitted it).
    let mut latest: BTreeMap<PartId, SpendWindow> = BTreeMap::new();
    let mut alerts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut settle_until: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let until = settle_until.unwrap_or(deadline);
        if now >= until {
            break;
        }
        let Ok(message) = tokio::time::timeout(until - now, consumer.recv()).await else {
            break;
        };
        let message = message.unwrap();
        if message.topic() == kafka.topic(Topic::Alerts) {
            alerts.push(decode::<Alert>(message.payload().unwrap()).unwrap());
            continue;
        }
        let window: SpendWindow = decode(message.payload().unwrap()).unwrap();
        let key = (
            window.window_seconds,
            window.window_start,
            window.tenant.clone(),
            window.team.clone(),
            window.dimension.to_string(),
            window.dimension_value.clone(),
            window.source_partition,
            window.source_offset,
        );
        assert!(latest.insert(key, window).is_none(), "a part emitted twice");
        if settle_until.is_none() {
            let windows: Vec<SpendWindow> = latest.values().cloned().collect();
            if &window_totals(&windows, 86_400, SpendDimension::Model) == windowed {
                settle_until = Some(Instant::now() + Duration::from_secs(5));
            }
        }
    }
    (latest.into_values().collect(), alerts)
}

/// A part's identity: its window's key and the transaction that emitted it.
type PartId = (i64, i64, String, String, String, String, i32, i64);

fn window_totals(windows: &[SpendWindow], seconds: i64, dimension: SpendDimension) -> Totals {
    let mut totals = Totals::default();
    for w in windows
        .iter()
        .filter(|w| w.window_seconds == seconds && w.dimension == dimension)
    {
        totals.calls += w.calls as u64;
        totals.unpriced += w.unpriced_calls as u64;
        totals.cost_nanos += w.cost_nanos;
        totals.input_tokens += w.input_tokens;
        totals.energy_uwh += w.energy_uwh_central;
        totals.co2e_ug += w.co2e_ug_central;
    }
    totals
}

async fn assert_windows_and_alerts(kafka: &KafkaConfig, windowed: &Totals) {
    let (windows, alerts) = read_windows_and_alerts(kafka, windowed).await;
    let mut wrong = Vec::new();
    for seconds in [60, 3_600, 86_400] {
        for dimension in SpendDimension::ALL {
            let totals = window_totals(&windows, seconds, *dimension);
            if &totals != windowed {
                wrong.push(format!(
                    "{seconds} s windows by {dimension}: {} calls",
                    totals.calls
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "window totals differ from {} calls: {wrong:#?}",
        windowed.calls
    );
    // The detect stage runs too, on a stream whose sessions repeat prompts: its alerts, each
    // (alert, state, severity) once, are another exactly-once check across the kills.
    let (loop_alerts, alerts): (Vec<&Alert>, Vec<&Alert>) =
        alerts.iter().partition(|a| a.kind == AlertKind::LoopSignal);
    let mut seen = HashSet::new();
    for alert in &loop_alerts {
        assert!(
            seen.insert((&alert.alert_id, alert.state, alert.severity)),
            "loop alert emitted twice: {} {:?} {:?}",
            alert.alert_id,
            alert.state,
            alert.severity
        );
    }
    println!("{} loop alerts, none twice", loop_alerts.len());
    let mut ids: Vec<&str> = alerts.iter().map(|a| a.alert_id.as_str()).collect();
    ids.sort_unstable();
    let thresholds: Vec<&str> = alerts
        .iter()
        .filter_map(|a| a.labels.get("threshold_percent").map(String::as_str))
        .collect();
    assert_eq!(ids.len(), 3, "each threshold alerted exactly once: {ids:?}");
    assert!(
        ids.windows(2).all(|w| w[0] != w[1]),
        "no alert twice: {ids:?}"
    );
    assert!(
        thresholds.contains(&"50") && thresholds.contains(&"80") && thresholds.contains(&"100")
    );
}

/// Waits until the restarted processor's business metrics count `whole`, then checks each.
async fn assert_business_metrics(whole: &Totals) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = tally_tests::fetch_metrics(METRICS).await;
        let calls = tally_tests::metric_sum(&metrics, "tally_calls_total", "", 0);
        if calls == whole.calls as i128 || std::time::Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let seen = Totals {
        calls: tally_tests::metric_sum(&metrics, "tally_calls_total", "", 0) as u64,
        unpriced: tally_tests::metric_sum(&metrics, "tally_calls_total", "priced=\"false\"", 0)
            as u64,
        cost_nanos: tally_tests::metric_sum(&metrics, "tally_cost_usd_total", "", 9),
        input_tokens: tally_tests::metric_sum(&metrics, "tally_tokens_total", "kind=\"input\"", 0),
        energy_uwh: tally_tests::metric_sum(&metrics, "tally_energy_wh_total", "", 6),
        co2e_ug: tally_tests::metric_sum(&metrics, "tally_co2e_grams_total", "", 6),
    };
    assert_eq!(&seen, whole, "business metrics after the restart");
    assert!(
        metrics.contains("# TYPE tally_processor_transaction_seconds histogram"),
        "{metrics}"
    );
    let body = metrics
        .split_once("\r\n\r\n")
        .map_or(&*metrics, |(_, body)| body);
    tally_tests::promtool_check_metrics(body);
}

fn cleanup(kafka: &KafkaConfig) {
    delete_topics(Topic::ALL.iter().map(|t| kafka.topic(*t)).collect());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_then_restart_counts_every_call_exactly_once() {
    const COUNT: usize = 100_000;
    let (kafka, expected, last, rest) = setup(COUNT, 7).await;
    let group = unique_name("processor");
    let mut processor = Some(Processor::start(&kafka, &group, "a"));
    let mut restarted = None;
    let (totals, duplicates) = read_enriched(&kafka, COUNT, Duration::from_secs(5), |seen| {
        // Fewer than half the calls were produced before the processor started, and the rest
        // are still arriving: the kill lands mid-stream.
        if seen >= COUNT / 3 && processor.is_some() {
            processor.take().unwrap().kill();
            eprintln!("[eo] SIGKILL after {seen} committed calls; restarting");
            restarted = Some(Processor::start_with_metrics(
                &kafka,
                &group,
                "a",
                Some(METRICS),
            ));
        }
    })
    .await;
    assert!(restarted.is_some(), "the processor was killed mid-stream");
    rest.await.unwrap();
    assert_eq!(duplicates, 0, "no call enriched twice");
    assert_eq!(totals, expected, "no call lost, totals exact");
    produce(&kafka, &last).await;
    assert_windows_and_alerts(&kafka, &expected).await;
    let metrics = tally_tests::fetch_metrics(METRICS).await;
    let unpriced: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tally_processor_unpriced_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no unpriced counter in {metrics}"));
    assert!(
        unpriced > 0 && unpriced <= expected.unpriced,
        "{unpriced} of {}",
        expected.unpriced
    );
    // The business metrics come from the restored state: after the SIGKILL and the replay,
    // every call of the stream (and the sentinels) counts once in them, to the nano-dollar.
    let mut whole = expected_totals(&last);
    for (a, b) in [
        (&mut whole.cost_nanos, expected.cost_nanos),
        (&mut whole.input_tokens, expected.input_tokens),
        (&mut whole.energy_uwh, expected.energy_uwh),
        (&mut whole.co2e_ug, expected.co2e_ug),
    ] {
        *a += b;
    }
    whole.calls += expected.calls;
    whole.unpriced += expected.unpriced;
    assert_business_metrics(&whole).await;
    drop(restarted);
    cleanup(&kafka);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_the_work_and_the_survivor_takes_over() {
    const COUNT: usize = 40_000;
    let (kafka, expected, last, rest) = setup(COUNT, 11).await;
    let group = unique_name("processor");
    let mut first = Some(Processor::start(&kafka, &group, "a"));
    let second = Processor::start(&kafka, &group, "b");
    let (totals, duplicates) = read_enriched(&kafka, COUNT, Duration::from_secs(5), |seen| {
        if seen >= COUNT / 4 && first.is_some() {
            first.take().unwrap().kill();
            eprintln!("[eo] SIGKILL instance a after {seen} committed calls; b carries on");
        }
    })
    .await;
    assert!(first.is_none(), "instance a was killed");
    rest.await.unwrap();
    assert_eq!(duplicates, 0);
    assert_eq!(totals, expected);
    produce(&kafka, &last).await;
    assert_windows_and_alerts(&kafka, &expected).await;
    drop(second);
    cleanup(&kafka);
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_that_reach_kafka_again_after_a_restart_count_once_everywhere() {
    // Retries that reached another ingest instance, or arrived after a restart: every call
    // is on the topic twice, the second time after the processor was killed and restarted.
    const COUNT: usize = 10_000;
    let (kafka, expected, last, rest) = setup(COUNT, 13).await;
    rest.await.unwrap();
    let group = unique_name("processor");
    let first = Processor::start(&kafka, &group, "a");
    let (totals, _) = read_enriched(&kafka, COUNT, Duration::from_secs(2), |_| {}).await;
    assert_eq!(totals, expected);
    first.kill();
    let again = generate(COUNT, 13);
    produce(&kafka, &again).await;
    let _restarted = Processor::start(&kafka, &group, "a");
    produce(&kafka, &last).await;
    let (totals, duplicates) =
        read_enriched(&kafka, COUNT + last.len(), Duration::from_secs(5), |_| {}).await;
    assert_eq!(duplicates, 0, "no repeat enriched");
    assert_eq!(totals.calls, (COUNT + last.len()) as u64);
    // The windows and each budget threshold count every call once.
    assert_windows_and_alerts(&kafka, &expected).await;
    cleanup(&kafka);
}
