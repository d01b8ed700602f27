//! The e2e benchmark's pure arithmetic (percentiles, spreads, the verdict on a held rate, the
//! search over rates: `benches/e2e/stats.rs`), tested where `cargo test` runs; the benchmark
//! itself needs the servers and a quarter of an hour.
#[allow(dead_code)]
#[path = "../benches/e2e/stats.rs"]
mod stats;
