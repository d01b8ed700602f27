//! Avro single-object encode and decode of the records every stage handles most.
//!
//! Run: `cargo bench -p tally-contract --bench codec`
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tally_contract::records::{EnrichedLlmCall, LlmCall};
use tally_contract::{decode, encode};

fn codec(c: &mut Criterion) {
    let call: LlmCall =
        serde_json::from_str(include_str!("../../../tests/golden/LlmCall.json")).unwrap();
    let enriched: EnrichedLlmCall =
        serde_json::from_str(include_str!("../../../tests/golden/EnrichedLlmCall.json")).unwrap();
    let call_bytes = encode(&call).unwrap();
    let enriched_bytes = encode(&enriched).unwrap();

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode/LlmCall", |b| b.iter(|| encode(&call).unwrap()));
    group.bench_function("decode/LlmCall", |b| {
        b.iter(|| decode::<LlmCall>(&call_bytes).unwrap())
    });
    group.bench_function("encode/EnrichedLlmCall", |b| {
        b.iter(|| encode(&enriched).unwrap())
    });
    group.bench_function("decode/EnrichedLlmCall", |b| {
        b.iter(|| decode::<EnrichedLlmCall>(&enriched_bytes).unwrap())
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
