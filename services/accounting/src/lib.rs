//! tally-accounting: where every number tally reports is made. A call's provider and model
//! are named one way ([`provider`]), priced from a catalogue in exact integer nano-dollars
//! ([`pricing`], on the [`decimal`] type), and rated for energy and CO2e, low / central /
//! high, with the grid's intensity by region and hour ([`carbon`]); [`enrich`] applies both
//! to an `LlmCall`, which is all the processor, `tally estimate`, `tally gen` and `tally up`
//! need to put a price and an emission on a call.
//!
//! What it must not do: I/O at run time or anything asynchronous. It has no tokio and no
//! Kafka client (its contract dependency is the record types only); the shipped catalogue
//! and data tables are compiled in (`data/`, with their sources in `data/README.md`), and a
//! user's own files are read by the caller and handed over as text. Its results are
//! property-tested, checked against independent oracles (LiteLLM's cost functions, the
//! `ecologits` package) and benchmarked (`benches/accounting.rs`).
pub mod carbon;
pub mod decimal;
pub mod enrich;
mod error;
pub mod pricing;
pub mod provider;

pub use error::AccountingError;
