//! The `detect` stage against the real broker: the labelled scenario set (seed 7), produced
//! as raw calls in event-time order, through enrich and detect. The signals on
//! `tally.loop_signals.v1` are exactly the expected ones (every loop kind caught, no healthy
//! session flagged), each opens once per loop and resolves, and its alerts reach
//! `tally.alerts.v1` (firing, then resolved).
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use tally_accounting::enrich::Enricher;
use tally_contract::kafka::{create_topics, KafkaConfig, TopicLayout};
use tally_contract::records::{
    Alert, AlertKind, AlertState, LlmCall, LoopSignal, LoopSignalType, SignalState,
};
use tally_contract::topics::{llm_call_key, Topic};
use tally_contract::{decode, encode};
use tally_processor::{pipeline, ProcessorConfig};
use tally_tests::scenarios::{scenario_set, Scenario, DAY_ZERO};
use tally_tests::{delete_topics, kafka_config, require_kafka, unique_name};

type StageHandle = std::thread::JoinHandle<Result<(), tally_processor::ProcessorError>>;

async fn produce_in_order(kafka: &KafkaConfig, calls: &[LlmCall]) {
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "2")
        .create()
        .unwrap();
    let topic = kafka.topic(Topic::LlmCalls);
    // Small acknowledged chunks, as live traffic arrives: the processor reads them roughly
    // in event-time order across partitions.
    for chunk in calls.chunks(25) {
        let mut deliveries = Vec::new();
        for call in chunk {
            let payload = encode(call).unwrap();
            let key = llm_call_key(call);
            deliveries.push(
                producer
                    .send_result(FutureRecord::to(&topic).key(&key).payload(&payload))
                    .unwrap_or_else(|(e, _)| panic!("enqueue: {e}")),
            );
        }
        for delivery in deliveries {
            delivery.await.unwrap().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One call per team a day after the set, with no session: it moves every partition's
/// watermark past the quiet period of every loop, so all of them resolve.
fn clock_calls(set: &[Scenario]) -> Vec<LlmCall> {
    let teams: BTreeSet<&str> = set
        .iter()
        .flat_map(|s| s.calls.iter().map(|c| c.team.as_str()))
        .collect();
    teams
        .into_iter()
        .enumerate()
        .map(|(i, team)| {
            LlmCall::new(
                &format!("clock-{i}"),
                DAY_ZERO + 2 * 86_400_000_000,
                "acme",
                team,
                "openai",
                "gpt-4o-mini",
            )
        })
        .collect()
}

async fn read_until<T: tally_contract::AvroRecord + serde::de::DeserializeOwned>(
    kafka: &KafkaConfig,
    topic: Topic,
    mut done: impl FnMut(&[T]) -> bool,
    timeout: Duration,
) -> Vec<T> {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", unique_name("detect-reader"))
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    consumer.subscribe(&[&kafka.topic(topic)]).unwrap();
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    while !done(&records) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // The assertions that follow say what is missing.
            println!("timed out with {} records of {topic:?}", records.len());
            break;
        }
        if let Ok(Ok(message)) =
            tokio::time::timeout(left.min(Duration::from_secs(1)), consumer.recv()).await
        {
            records.push(decode::<T>(message.payload().unwrap()).unwrap());
        }
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scenario_stream_through_kafka_raises_exactly_the_expected_signals() {
    scenario_stream_through_kafka(None).await;
}

/// The stages stop half-way (their last transaction commits the detector state with the
/// outputs) and fresh ones take over from the changelog: loops that span the restart still
/// open once, and none is missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_stream_resumes_from_the_changelog() {
    scenario_stream_through_kafka(Some(0.5)).await;
}

fn start(config: &ProcessorConfig) -> (Arc<AtomicBool>, Arc<pipeline::Stats>, Vec<StageHandle>) {
    let enricher = Enricher::new(config.catalogue().unwrap(), config.carbon.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(pipeline::Stats::default());
    let handles =
        tally_processor::spawn_stages(config.clone(), enricher, stop.clone(), stats.clone());
    (stop, stats, handles)
}

fn stop_all(stop: &AtomicBool, handles: Vec<StageHandle>) {
    stop.store(true, Ordering::SeqCst);
    for handle in handles {
        handle.join().unwrap().unwrap();
    }
}

async fn scenario_stream_through_kafka(restart_at: Option<f64>) {
    require_kafka();
    let kafka = KafkaConfig {
        topic_prefix: format!("{}.", unique_name("detect")),
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
    let set = scenario_set(7);
    let mut calls: Vec<LlmCall> = set.iter().flat_map(|s| s.calls.clone()).collect();
    calls.sort_by(|a, b| (a.occurred_at, &a.event_id).cmp(&(b.occurred_at, &b.event_id)));
    calls.extend(clock_calls(&set));
    let expected: BTreeSet<(String, LoopSignalType)> = set
        .iter()
        .flat_map(|s| s.expected.iter().map(|t| (s.name.clone(), *t)))
        .collect();

    let config = ProcessorConfig {
        group_id: unique_name("detect-group"),
        instance_id: "detect-test".into(),
        commit_interval_ms: 200,
        kafka: kafka.clone(),
        ..ProcessorConfig::default()
    };
    let (mut stop, mut stats, mut handles) = start(&config);
    let split = restart_at.map_or(0, |share| (calls.len() as f64 * share) as usize);
    if split > 0 {
        produce_in_order(&kafka, &calls[..split]).await;
        // Let the first life read (and commit) some of it, then replace it.
        let deadline = Instant::now() + Duration::from_secs(60);
        while stats.enriched.load(Ordering::Relaxed) < split as u64 {
            assert!(
                Instant::now() < deadline,
                "the first life did not consume its half"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop_all(&stop, handles);
        (stop, stats, handles) = start(&config);
    }
    produce_in_order(&kafka, &calls[split..]).await;

    let signals: Vec<LoopSignal> = read_until(
        &kafka,
        Topic::LoopSignals,
        |records: &[LoopSignal]| {
            let opened: BTreeSet<&str> = records
                .iter()
                .filter(|r| r.state == SignalState::Open)
                .map(|r| r.signal_id.as_str())
                .collect();
            let resolved: BTreeSet<&str> = records
                .iter()
                .filter(|r| r.state == SignalState::Resolved)
                .map(|r| r.signal_id.as_str())
                .collect();
            opened.len() >= expected.len() && opened == resolved
        },
        Duration::from_secs(45),
    )
    .await;
    stop_all(&stop, handles);

    let owner = |s: &LoopSignal| {
        set.iter()
            .find(|x| x.owns(s.session_id.as_deref(), s.workflow.as_deref()))
            .unwrap_or_else(|| panic!("no scenario owns {s:?}"))
            .name
            .clone()
    };
    let fired: BTreeSet<(String, LoopSignalType)> =
        signals.iter().map(|s| (owner(s), s.signal_type)).collect();
    let missed: Vec<_> = expected.difference(&fired).collect();
    let false_positives: Vec<_> = fired.difference(&expected).collect();
    println!(
        "{} loop signal records, {} signals; expected {} (scenario, signal) pairs, missed {missed:?}, false positives {false_positives:?}",
        signals.len(),
        signals.iter().filter(|s| s.state == SignalState::Open).count(),
        expected.len()
    );
    assert!(missed.is_empty(), "missed: {missed:?}");
    assert!(
        false_positives.is_empty(),
        "false positives: {false_positives:?}"
    );

    let mut lives: BTreeMap<&str, Vec<&LoopSignal>> = BTreeMap::new();
    for s in &signals {
        lives.entry(&s.signal_id).or_default().push(s);
    }
    for (id, life) in &lives {
        assert_eq!(life.first().unwrap().state, SignalState::Open, "{id}");
        assert_eq!(life.last().unwrap().state, SignalState::Resolved, "{id}");
        assert_eq!(
            life.iter().filter(|s| s.state == SignalState::Open).count(),
            1,
            "{id}"
        );
        let last = life.last().unwrap();
        assert!(
            last.cost_nanos_burned > 0 && last.tokens_burned > 0,
            "{id}: {last:?}"
        );
        assert!(!last.explanation.is_empty());
    }

    let alerts: Vec<Alert> = read_until(
        &kafka,
        Topic::Alerts,
        |records: &[Alert]| {
            records
                .iter()
                .filter(|a| a.kind == AlertKind::LoopSignal && a.state == AlertState::Resolved)
                .count()
                >= lives.len()
        },
        Duration::from_secs(30),
    )
    .await;
    for id in lives.keys() {
        let states: Vec<AlertState> = alerts
            .iter()
            .filter(|a| a.alert_id == *id)
            .map(|a| a.state)
            .collect();
        assert_eq!(
            states.first(),
            Some(&AlertState::Firing),
            "{id}: {states:?}"
        );
        assert_eq!(
            states.last(),
            Some(&AlertState::Resolved),
            "{id}: {states:?}"
        );
    }
    assert!(stats.consumed.load(Ordering::Relaxed) > 0);
    delete_topics(
        Topic::ALL
            .iter()
            .map(|t| kafka.topic(*t))
            .chain([
                format!("{}tally.detector_state.v1", kafka.topic_prefix),
                format!("{}tally.processor_state.v1", kafka.topic_prefix),
            ])
            .collect(),
    );
}
