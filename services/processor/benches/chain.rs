//! The whole processor chain in memory, per core: the real stages (`EnrichStage`,
//! `AggregateStage`, `DetectStage`) and their `process` as the Kafka runner calls it, on
//! batches of 500 records (a transaction), with an output sink that keeps what they produce
//! instead of a Kafka producer. So it counts everything a call costs but Kafka itself: Avro
//! decode and encode, de-duplication and its changelog, pricing and carbon, 1 min / 1 h /
//! 1 day windows × model / user / workflow, budgets, business metrics, the six detectors and
//! every changelog record.
//!
//! The workload is `tally gen`'s (seed 7, 12 teams, a day of event time, 60,000 calls),
//! spread over six partitions by the keys the ingest and enrich stage give.
//!
//! Before the timings it prints the state's memory, measured by a counting allocator: bytes
//! per open window key (the window state alone, after the workload) and per open session of
//! the detectors.
//!
//! Run: `cargo bench -p tally-processor --bench chain`
use std::alloc::{GlobalAlloc, Layout};
use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mimalloc::MiMalloc;
use rdkafka::message::{Message, OwnedHeaders, OwnedMessage, Timestamp};
use tally_accounting::enrich::Enricher;
use tally_accounting::pricing::Catalogue;
use tally_contract::records::{EnrichedLlmCall, LlmCall};
use tally_contract::topics::Topic;
use tally_contract::{decode, encode};
use tally_gen::traffic::{generate, Event, Mix, TrafficConfig};
use tally_processor::budgets::{BudgetConfig, Period};
use tally_processor::pipeline::{OutputSink, Outputs, Stage, Stats};
use tally_processor::stages::{AggregateStage, DetectStage, EnrichStage};
use tally_processor::windows::{self, WindowState};
use tally_processor::{ProcessorConfig, ProcessorError};

/// The `tally` binary's allocator (mimalloc), counting the bytes held.
struct Counting;

static HELD: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to mimalloc as it came; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes the value `make` builds holds (what was allocated while it was made and is still
/// held after everything else it made was dropped).
fn held_by<T>(make: impl FnOnce() -> T) -> (T, isize) {
    let before = HELD.load(Ordering::Relaxed);
    let value = make();
    (value, HELD.load(Ordering::Relaxed) - before)
}

const CALLS: usize = 60_000;
const PARTITIONS: u64 = 6;
const TRANSACTION: usize = 500;
const NOW: i64 = 1_796_000_000_000_000;

/// A record produced: topic, key, value (`None` is a tombstone).
type Produced = (String, Vec<u8>, Option<Vec<u8>>);

/// Keeps every record produced, as Kafka would receive it.
#[derive(Default)]
struct Kept {
    records: RefCell<Vec<Produced>>,
}

impl OutputSink for Kept {
    fn send(
        &self,
        topic: &str,
        _partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
    ) -> Result<(), ProcessorError> {
        self.records.borrow_mut().push((
            topic.to_string(),
            key.to_vec(),
            payload.map(<[u8]>::to_vec),
        ));
        Ok(())
    }
}

fn partition_of(key: &[u8]) -> i32 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % PARTITIONS) as i32
}

/// Records as a consumer hands them over: partitioned by key, offsets per partition.
fn messages(topic: &str, records: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<OwnedMessage> {
    let mut offsets = [0i64; PARTITIONS as usize];
    records
        .into_iter()
        .map(|(key, payload)| {
            let partition = partition_of(&key);
            let offset = offsets[partition as usize];
            offsets[partition as usize] += 1;
            OwnedMessage::new(
                Some(payload),
                Some(key),
                topic.to_string(),
                Timestamp::NotAvailable,
                partition,
                offset,
                Some(OwnedHeaders::new()),
            )
        })
        .collect()
}

fn config(calls: &[LlmCall]) -> ProcessorConfig {
    let mut config = ProcessorConfig::default();
    let teams: std::collections::BTreeSet<&String> = calls.iter().map(|c| &c.team).collect();
    // A monthly budget per team, as a deployment would have them.
    config.budgets = teams
        .into_iter()
        .cloned()
        .map(|team| BudgetConfig {
            name: format!("{team}-llm"),
            tenant: "acme".into(),
            team,
            period: Period::Month,
            amount_usd: "50000".parse().unwrap(),
            thresholds_percent: vec![50, 80, 100],
            burn_rate_alert: true,
        })
        .collect();
    config
}

fn workload() -> Vec<LlmCall> {
    let traffic = TrafficConfig {
        seed: 7,
        tenant: "acme".into(),
        teams: 12,
        calls: CALLS,
        start: NOW - 86_400_000_000,
        span: 86_400_000_000,
        mix: Mix::Mixed,
    };
    generate(&traffic)
        .events
        .into_iter()
        .filter_map(|event| match event {
            Event::Call(call) => Some(*call),
            _ => None,
        })
        .collect()
}

/// Runs a stage over the messages in transactions of [`TRANSACTION`] records, each partition
/// in order; returns what it produced.
fn run(stage: &mut dyn Stage, config: &ProcessorConfig, input: &[OwnedMessage]) -> Kept {
    let kept = Kept::default();
    let stats = Stats::default();
    for batch in input.chunks(TRANSACTION) {
        let outputs = Outputs::new(&kept, config, NOW);
        stage.process(batch, &outputs, &stats).unwrap();
    }
    kept
}

fn chain(c: &mut Criterion) {
    let workload = workload();
    let config = config(&workload);
    let enricher = || Enricher::new(Catalogue::shipped(), config.carbon.clone()).unwrap();
    let calls: Vec<(Vec<u8>, Vec<u8>)> = workload
        .iter()
        .map(|call| {
            let key = match &call.session_id {
                Some(session) => format!("{}/{}/{session}", call.tenant, call.team),
                None => format!("{}/{}", call.tenant, call.team),
            };
            (key.into_bytes(), encode(call).unwrap())
        })
        .collect();
    let calls_topic = config.kafka.topic(Topic::LlmCalls);
    let enriched_topic = config.kafka.topic(Topic::LlmCallsEnriched);
    let input = messages(&calls_topic, calls);
    let enriched: Vec<(Vec<u8>, Vec<u8>)> = run(&mut EnrichStage::new(enricher()), &config, &input)
        .records
        .into_inner()
        .into_iter()
        .filter(|(topic, _, _)| *topic == enriched_topic)
        .map(|(_, key, payload)| (key, payload.unwrap()))
        .collect();
    assert_eq!(enriched.len(), input.len(), "every call enriched once");
    let enriched = messages(&enriched_topic, enriched);

    report_memory(&config, &enriched);
    report_output(
        "aggregate",
        &run(&mut AggregateStage::default(), &config, &enriched),
        CALLS,
    );
    report_output(
        "detect",
        &run(&mut DetectStage::default(), &config, &enriched),
        CALLS,
    );

    let mut group = c.benchmark_group("chain");
    group.sample_size(10);
    group.throughput(Throughput::Elements(input.len() as u64));
    group.bench_function("enrich", |b| {
        b.iter_batched(
            || EnrichStage::new(enricher()),
            |mut stage| run(&mut stage, &config, &input),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("aggregate", |b| {
        b.iter_batched(
            AggregateStage::default,
            |mut stage| run(&mut stage, &config, &enriched),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("detect", |b| {
        b.iter_batched(
            DetectStage::default,
            |mut stage| run(&mut stage, &config, &enriched),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Prints the bytes per open window key and per open detector session after the workload.
fn report_memory(config: &ProcessorConfig, enriched: &[OwnedMessage]) {
    let calls: Vec<EnrichedLlmCall> = enriched
        .iter()
        .map(|m| decode(m.payload().unwrap()).unwrap())
        .collect();
    let (windows, bytes) = held_by(|| {
        let mut state = WindowState::default();
        for (n, batch) in calls.chunks(TRANSACTION).enumerate() {
            for call in batch {
                windows::apply(&config.windows, &mut state, call);
            }
            drop(windows::take_parts(&mut state, 0, n as i64, NOW));
            state.clear_changes(); // as the changelog's writer does
        }
        state
    });
    let keys = windows.windows.len();
    eprintln!(
        "memory: {keys} open window keys hold {bytes} bytes: {} bytes a key ({} names)",
        bytes / keys as isize,
        windows.windows.names_held()
    );
    drop(windows);
    let (stage, bytes) = held_by(|| {
        let mut stage = DetectStage::default();
        drop(run(&mut stage, config, enriched));
        stage
    });
    let sessions: usize = stage.state.values().map(|d| d.sessions.len()).sum();
    eprintln!(
        "memory: {sessions} open detector sessions hold {bytes} bytes: {} bytes a session",
        bytes / sessions.max(1) as isize
    );
}

/// Prints what a stage produced for the workload, per topic: records and bytes (key and
/// value) per call, which the Kafka path pays for in the producer and the broker.
fn report_output(stage: &str, kept: &Kept, calls: usize) {
    let mut by_topic: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    let records = kept.records.borrow();
    for (topic, key, value) in records.iter() {
        let entry = by_topic.entry(topic).or_default();
        entry.0 += 1;
        entry.1 += key.len() + value.as_ref().map_or(0, Vec::len);
    }
    for (topic, (count, bytes)) in by_topic {
        eprintln!(
            "output of {stage}: {topic}: {:.3} records and {:.0} bytes a call ({count} records, {bytes} bytes)",
            count as f64 / calls as f64,
            bytes as f64 / calls as f64,
        );
    }
}

criterion_group!(benches, chain);
criterion_main!(benches);
