//! What one core prices and rates per second, with no decoding around it: the catalogue
//! lookup and the exact cost of a call (`price`), its energy and CO2e (`carbon`), and both
//! as the processor applies them (`enrich`), over calls of four models (one the catalogue
//! does not know) and every service tier. Also how long the shipped catalogue takes to load.
//!
//! Run: `cargo bench -p tally-accounting --bench accounting`
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tally_accounting::carbon::CarbonConfig;
use tally_accounting::enrich::Enricher;
use tally_accounting::pricing::Catalogue;
use tally_contract::records::{LlmCall, ServiceTier};

const MODELS: [(&str, &str); 4] = [
    ("openai", "gpt-4o"),
    ("anthropic", "claude-sonnet-4-5"),
    ("gcp.gemini", "gemini-2.5-pro"),
    ("acme", "mystery"),
];
const BATCH: usize = 10_000;

fn calls() -> Vec<LlmCall> {
    let template: LlmCall = tally_tests::fixture("LlmCall");
    (0..BATCH)
        .map(|i| {
            let mut call = template.clone();
            let (provider, model) = MODELS[i % MODELS.len()];
            call.event_id = format!("bench-{i}");
            call.provider = provider.into();
            call.model = model.into();
            call.response_model = None;
            call.service_tier = ServiceTier::ALL[i % 4];
            call.input_tokens = 1_000 + i as i64;
            call
        })
        .collect()
}

fn accounting(c: &mut Criterion) {
    let calls = calls();
    let enricher = Enricher::new(Catalogue::shipped(), CarbonConfig::default()).unwrap();
    let mut group = c.benchmark_group("accounting");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("price", |b| {
        b.iter(|| {
            calls
                .iter()
                .filter(|call| enricher.catalogue().price(call).is_ok())
                .count()
        })
    });
    group.bench_function("carbon", |b| {
        b.iter(|| {
            calls
                .iter()
                .filter(|call| enricher.carbon().estimate(call).is_ok())
                .count()
        })
    });
    group.bench_function("enrich", |b| {
        b.iter(|| {
            calls
                .iter()
                .filter(|call| enricher.enrich((*call).clone(), 0).is_ok())
                .count()
        })
    });
    group.finish();
    c.bench_function("load the shipped catalogue", |b| b.iter(Catalogue::shipped));
}

criterion_group!(benches, accounting);
criterion_main!(benches);
