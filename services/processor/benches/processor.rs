//! The processor's in-memory throughput per core: decode an `LlmCall`, price it, rate its
//! carbon, encode the `EnrichedLlmCall` (the enrich stage); then decode it and apply it to
//! the windows and budgets (the aggregate stage); and the detect stage on the labelled agent
//! scenarios (decode, six signals, resolve sweep and changelog records per batch of 500).
//! No Kafka: what one core can do.
//!
//! Run: `cargo bench -p tally-processor --bench processor`
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tally_accounting::carbon::CarbonConfig;
use tally_accounting::enrich::Enricher;
use tally_accounting::pricing::Catalogue;
use tally_contract::records::{EnrichedLlmCall, LlmCall, ServiceTier};
use tally_contract::{decode, encode};
use tally_processor::budgets::{self, BudgetConfig, BudgetState, Period, RolesConfig};
use tally_processor::detect::{DetectConfig, Detector};
use tally_processor::windows::{self, WindowConfig, WindowState};

const MODELS: [(&str, &str); 4] = [
    ("openai", "gpt-4o"),
    ("anthropic", "claude-sonnet-4-5"),
    ("gcp.gemini", "gemini-2.5-pro"),
    ("acme", "mystery"),
];
const BATCH: usize = 10_000;

fn calls() -> Vec<Vec<u8>> {
    let template: LlmCall =
        serde_json::from_str(include_str!("../../../tests/golden/LlmCall.json")).unwrap();
    (0..BATCH)
        .map(|i| {
            let mut call = template.clone();
            let (provider, model) = MODELS[i % MODELS.len()];
            call.event_id = format!("bench-{i}");
            call.provider = provider.into();
            call.model = model.into();
            call.response_model = None;
            call.team = format!("team-{}", i % 20);
            call.user = Some(format!("u-{}", i % 200));
            call.service_tier = ServiceTier::ALL[i % 4];
            call.occurred_at += i as i64 * 10_000; // 100 calls per second of event time
            encode(&call).unwrap()
        })
        .collect()
}

fn processor(c: &mut Criterion) {
    let enricher = Enricher::new(Catalogue::shipped(), CarbonConfig::default()).unwrap();
    let inputs = calls();
    let enriched: Vec<Vec<u8>> = inputs
        .iter()
        .map(|bytes| encode(&enricher.enrich(decode(bytes).unwrap(), 0).unwrap()).unwrap())
        .collect();
    let budgets: Vec<BudgetConfig> = (0..20)
        .map(|team| BudgetConfig {
            name: "llm".into(),
            tenant: "acme".into(),
            team: format!("team-{team}"),
            period: Period::Month,
            amount_usd: "50000".parse().unwrap(),
            thresholds_percent: vec![50, 80, 100],
            burn_rate_alert: true,
        })
        .collect();
    let roles = RolesConfig::default();
    let window_config = WindowConfig::default();

    let mut group = c.benchmark_group("processor");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("enrich_stage", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for input in &inputs {
                let call: LlmCall = decode(input).unwrap();
                bytes += encode(&enricher.enrich(call, 0).unwrap()).unwrap().len();
            }
            bytes
        })
    });
    group.bench_function("aggregate_stage", |b| {
        b.iter(|| {
            let mut state = WindowState::default();
            let mut budget_state = BudgetState::default();
            let mut emitted = 0;
            for bytes in &enriched {
                let call: EnrichedLlmCall = decode(bytes).unwrap();
                windows::apply(&window_config, &mut state, &call);
                emitted += windows::take_parts(&mut state, 0, 0, 0).len();
                emitted += budgets::apply(&budgets, &roles, &mut budget_state, &call, 0)
                    .alerts
                    .len();
            }
            emitted
        })
    });
    group.finish();

    // The detect stage on realistic sessions: the scenario set (seed 7), in event-time order.
    let set = tally_tests::scenarios::scenario_set(7);
    let mut scenario_calls: Vec<LlmCall> = set.iter().flat_map(|s| s.calls.clone()).collect();
    scenario_calls.sort_by_key(|c| c.occurred_at);
    let sessions: Vec<Vec<u8>> = scenario_calls
        .into_iter()
        .map(|c| encode(&enricher.enrich(c, 0).unwrap()).unwrap())
        .collect();
    let detect_config = DetectConfig::default();
    let mut group = c.benchmark_group("processor");
    group.throughput(Throughput::Elements(sessions.len() as u64));
    group.bench_function("detect_stage", |b| {
        b.iter(|| {
            let mut detector = Detector::default();
            let mut out = 0;
            for batch in sessions.chunks(500) {
                for bytes in batch {
                    let call: EnrichedLlmCall = decode(bytes).unwrap();
                    out += detector.observe(&detect_config, &call, 0).len();
                }
                out += detector.advance(&detect_config, 0).len();
                out += detector.take_changes().unwrap().len();
            }
            out
        })
    });
    group.finish();
}

criterion_group!(benches, processor);
criterion_main!(benches);
